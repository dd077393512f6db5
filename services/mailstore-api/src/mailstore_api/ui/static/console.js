// The console's one script (served by the app; the CSP allows no other): ask before a form
// marked data-confirm is sent.
"use strict";
document.addEventListener("submit", (event) => {
  const form = event.target;
  if (form instanceof HTMLFormElement && form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
    event.preventDefault();
  }
});

// A live message list (the newest page): on each delivery, fetch the page again and put its
// rows and count in place, without reloading the document.
const live = document.querySelector("[data-live]");
if (live) {
  const refresh = async () => {
    const response = await fetch(window.location.href, { credentials: "same-origin" });
    if (!response.ok) return;
    const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
    for (const id of ["message-rows", "message-count"]) {
      const now = document.getElementById(id);
      const next = fresh.getElementById(id);
      if (now && next) now.replaceWith(next);
    }
  };
  new EventSource(live.dataset.live).addEventListener("delivered", refresh);
}

// Copy buttons (the DNS page): the record's zone-file line to the clipboard.
document.addEventListener("click", (event) => {
  const button = event.target instanceof Element ? event.target.closest("[data-copy]") : null;
  if (button) {
    navigator.clipboard.writeText(button.dataset.copy).then(() => { button.textContent = "Copied"; });
  }
});
