"""The web console in a real browser (Debian's Chromium, driven by Selenium through
chromium-driver), one browser for the module.

A hostile message: a "remote" web server on another loopback port stands for the attacker's
host: no script, event handler, style, refresh or form in the message may reach it, until the
viewer asks for remote images (which then, and only then, arrive: the check can see requests).

A walk through the console as an operator does it: sign in, create a domain, an account and an
alias, see mail to the alias (sent over SMTP to a real smtp-in) appear in the open list without a reload, search, open a message,
download its attachment (byte-exact), be refused (423) while a POP3 session holds the lock, then
delete. With ``CONSOLE_SCREENSHOTS=<dir>`` it saves a screenshot of each page there (how
``docs/ui/`` is made: ``CONSOLE_SCREENSHOTS=docs/ui uv run pytest -q
services/mailstore-api/tests/test_console_browser.py -k walk``)."""

from __future__ import annotations

import json
import os
import smtplib
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from mailstack.ports import free_port, greets, wait_until
from mailstack.processes import stop_process
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait
from test_admin import deliver
from test_console_messages import ATTACHMENT, PNG, hostile_message

pytestmark = pytest.mark.timeout(120)


class Beacon:
    """An HTTP server that records every path asked of it and answers a 1x1 PNG."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        hits = self.hits

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hits.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(PNG)))
                self.end_headers()
                self.wfile.write(PNG)

            do_POST = do_GET

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def beacon_html(url: str) -> str:
    return (
        f'<html><head><meta http-equiv="refresh" content="0; url={url}/refresh">'
        f'<link rel="stylesheet" href="{url}/link.css">'
        f"<style>body {{ background: url({url}/style-tag) }} @import url({url}/import);"
        f"@font-face {{ font-family: x; src: url({url}/font) }}</style>"
        f"<script>new Image().src = '{url}/script'; parent.document.title = 'pwned'</script>"
        "</head><body>"
        f'<p style="background-image: url({url}/style-attr); font-family: x">Hello</p>'
        f'<img src="{url}/pixel.png">'
        f'<img src="nope:" onerror="fetch(\'{url}/onerror\')">'
        f"<a href=\"javascript:fetch('{url}/javascript')\">js link</a>"
        f'<form action="{url}/form" method="post"><input name="q"><button>go</button></form>'
        f"<svg><script>fetch('{url}/svg')</script><image href=\"{url}/svg-image\"/></svg>"
        f'<iframe src="{url}/iframe"></iframe><object data="{url}/object"></object>'
        '<img src="cid:logo@test">'
        "</body></html>"
    )


@pytest.fixture
def beacon() -> Iterator[Beacon]:
    server = Beacon()
    yield server
    server.server.shutdown()
    server.server.server_close()


@pytest.fixture(scope="module")
def downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(downloads: Path) -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    options.add_argument("--window-size=1280,900")
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    driver.set_page_load_timeout(30)
    driver.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    yield driver
    driver.quit()


def sign_in(browser: webdriver.Chrome, url: str, secret: str, screenshot: str = "") -> None:
    """A fresh session: no cookie from an earlier test, the logs emptied."""
    browser.delete_all_cookies()
    browser.get(f"{url}/ui/signin")
    browser.find_element(By.NAME, "password").send_keys(secret)
    if screenshot:
        save_screenshot(browser, screenshot)
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    wait_until(lambda: browser.current_url.endswith("/ui/domains"), 10, "the domains page")
    for kind in ("performance", "browser"):
        browser.get_log(kind)


def save_screenshot(browser: webdriver.Chrome, name: str) -> None:
    """``<name>.png`` in ``$CONSOLE_SCREENSHOTS`` when it is set, the whole page's height."""
    folder = os.environ.get("CONSOLE_SCREENSHOTS")
    if not folder:
        return
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1280, max(600, min(int(height), 2000)))
    browser.save_screenshot(str(Path(folder) / f"{name}.png"))
    browser.set_window_size(1280, 900)


def submit(browser: webdriver.Chrome, action: str, **fields: str) -> None:
    """Fill the form posting to ``action`` (the end of its URL) and send it."""
    form = browser.find_element(By.CSS_SELECTOR, f"form[action$='{action}']")
    for name, value in fields.items():
        form.find_element(By.NAME, name).send_keys(value)
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()


def confirm(browser: webdriver.Chrome) -> None:
    """Accept the page's ``data-confirm`` question."""
    WebDriverWait(browser, 20).until(expected_conditions.alert_is_present())  # a loaded machine
    browser.switch_to.alert.accept()


def text_of(browser: webdriver.Chrome, selector: str) -> str:
    """The text of the element ``selector`` finds now ("" when none), read in the page: the
    live list may replace it, or the page be left, at any moment (no stale reference)."""
    return str(
        browser.execute_script(
            "const e = document.querySelector(arguments[0]); return e ? e.innerText : ''",
            selector,
        )
    )


def download(browser: webdriver.Chrome, link_text: str, saved: Path) -> None:
    """Click the link once the page has loaded, until ``saved`` is there. Under load a click
    made while the message's frame was still loading started no download (1 run in about 10):
    the click is made again, at most twice; the file is then compared byte for byte."""
    wait_until(
        lambda: browser.execute_script("return document.readyState") == "complete", 30, "the page"
    )
    for attempt in range(3):
        clickable = expected_conditions.element_to_be_clickable((By.LINK_TEXT, link_text))
        WebDriverWait(browser, 10).until(clickable).click()
        try:
            wait_until(saved.exists, 15, "the download")
            return
        except TimeoutError:
            if attempt == 2:
                raise


def flash(browser: webdriver.Chrome) -> str:
    """The message of the page a form was just sent from (waited for: a click returns before
    the browser has the next page, and the pages the walk sends forms from show none)."""
    located = expected_conditions.presence_of_element_located((By.CSS_SELECTOR, ".flash"))
    return str(WebDriverWait(browser, 20).until(located).text)


def event_stream_open(browser: webdriver.Chrome) -> bool:
    return any(
        e["message"]["method"] == "Network.responseReceived"
        and e["message"]["params"]["response"]["url"].endswith("/events")
        for e in (json.loads(x["message"]) for x in browser.get_log("performance"))
    )


def requested_urls(driver: webdriver.Chrome) -> list[str]:
    """Every URL the browser sent a request for since the last call (DevTools' network log)."""
    urls = []
    for entry in driver.get_log("performance"):
        event = json.loads(entry["message"])["message"]
        if event["method"] == "Network.requestWillBeSent":
            urls.append(event["params"]["request"]["url"])
    return urls


def test_a_hostile_message_runs_nothing_and_reaches_no_remote_host(
    browser, beacon, mailstore, new_user, internal
):
    user, _ = new_user()
    mid = deliver(internal, user, hostile_message("in a browser", beacon_html(beacon.url)))

    sign_in(browser, mailstore.url, mailstore.admin_token)
    # HttpOnly: the console's own scripts cannot read the session cookie either
    assert browser.execute_script("return document.cookie") == ""
    requested_urls(browser)

    browser.get(f"{mailstore.url}/ui/accounts/{user}/messages/{mid}")
    frame = browser.find_element(By.CSS_SELECTOR, "iframe.mail")
    browser.switch_to.frame(frame)
    wait_until(
        lambda: browser.execute_script("return document.readyState") == "complete", 10, "the frame"
    )
    assert "Hello" in browser.find_element(By.TAG_NAME, "body").text
    # the frame is an opaque origin: no cookie, no parent DOM
    assert browser.execute_script("return window.origin") == "null"
    denied = browser.execute_script(
        "try { return document.cookie } catch (e) { return 'denied:' + e.name }"
    )
    assert denied == "denied:SecurityError"
    assert (
        browser.execute_script(
            "try { return parent.document.title } catch (e) { return 'denied:' + e.name }"
        )
        == "denied:SecurityError"
    )
    # the cid: image is there, from a data: URL, and loaded
    assert (
        browser.execute_script(
            "const i = document.querySelector('img[src^=\"data:image/png\"]');"
            " return i !== null && i.complete && i.naturalWidth"
        )
        == 1
    )
    browser.find_element(By.LINK_TEXT, "js link").click()  # its javascript: href is gone
    browser.switch_to.default_content()
    assert browser.title != "pwned"

    urls = requested_urls(browser)
    assert urls, "the network log recorded nothing"
    assert all(u.startswith((mailstore.url + "/", "data:")) for u in urls), urls
    assert beacon.hits == []
    # no console error or warning: not a CSP violation, not a blocked script, not a 404
    assert [e for e in browser.get_log("browser") if e["level"] in {"SEVERE", "WARNING"}] == []

    # the positive control: asked for, the remote image (and only it) is fetched
    browser.get(f"{mailstore.url}/ui/accounts/{user}/messages/{mid}?remote=true")
    wait_until(lambda: beacon.hits, 10, "the remote image")
    assert beacon.hits == ["/pixel.png"]


@pytest.fixture(scope="module")
def smtp_in(mailstore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """smtp-in in front of the test mailstore (its SMTP port): the walk's mail comes in by SMTP."""
    port = free_port()
    env = {
        **mailstore.env(),
        "MAILSTORE_URL": mailstore.url,
        "MAILSTORE_API_URL": mailstore.url,
        "SMTP_BIND_HOST": "127.0.0.1",
        "SMTP_BIND_PORT": str(port),
        "METRICS_PORT": "0",
        "AUTH_CHECKS": "false",  # no sender domain of the walk is in DNS
    }
    log = tmp_path_factory.mktemp("smtp-in") / "smtp-in.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "smtp_in"], env=env, stdout=out, stderr=out)
    try:
        wait_until(lambda: greets("127.0.0.1", port), 20, "smtp-in")
        yield port
    finally:
        stop_process(proc)


def send(port: int, subject: str) -> None:
    """A message with an attachment to the walk's alias, as SMTP carries it: lines of at most
    1000 octets (a short HTML part), each ending in CRLF."""
    message = hostile_message(subject, "<p>See the attachment.</p>")
    message = message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")  # base64 lines end in LF
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.sendmail("alice@example.org", ["team@walk.example"], message)


def test_an_operator_walks_through_the_console(
    browser, downloads, mailstore, smtp_in, redis_server
):
    ui = f"{mailstore.url}/ui"
    sign_in(browser, mailstore.url, mailstore.admin_token, screenshot="signin")

    submit(browser, "/domains", name="walk.example")
    assert flash(browser) == "Domain walk.example added."
    assert "walk.example" in browser.find_element(By.TAG_NAME, "table").text
    save_screenshot(browser, "domains")
    if os.environ.get("CONSOLE_SCREENSHOTS"):  # the DNS page asks the host's DNS: only then
        browser.get(f"{ui}/domains/walk.example/dns")
        save_screenshot(browser, "dns")

    browser.get(f"{ui}/accounts")
    submit(browser, "/accounts", username="ada@walk.example", password="a long passphrase")
    assert "ada@walk.example" in flash(browser)
    browser.get(f"{ui}/aliases")
    submit(browser, "/aliases", address="team@walk.example", targets="ada@walk.example")
    assert "team@walk.example" in flash(browser)
    assert "ada@walk.example" in browser.find_element(By.TAG_NAME, "table").text
    save_screenshot(browser, "aliases")

    # mail to the alias, over SMTP, appears in the open list
    send(smtp_in, "Minutes of the board")
    browser.get(f"{ui}/accounts/ada@walk.example/messages")
    assert "Minutes of the board" in text_of(browser, "#message-rows")
    browser.execute_script("window.notReloaded = true")
    wait_until(lambda: event_stream_open(browser), 10, "the event stream")
    for subject in ("Invoice 2026-117 attached", "Lunch on Friday?"):
        send(smtp_in, subject)
    wait_until(lambda: text_of(browser, "#message-count") == "3", 10, "live rows")
    assert "Lunch on Friday?" in text_of(browser, "#message-rows")
    assert browser.execute_script("return window.notReloaded") is True
    save_screenshot(browser, "messages")

    browser.find_element(By.NAME, "q").send_keys("invoice")
    browser.find_element(By.CSS_SELECTOR, "form.search button[type=submit]").click()
    wait_until(lambda: "found" in text_of(browser, "main"), 10, "the results")
    rows = text_of(browser, "#message-rows")
    assert "Invoice 2026-117 attached" in rows and "Lunch" not in rows and "Minutes" not in rows
    assert text_of(browser, "#message-count") == "1"

    browser.find_element(By.LINK_TEXT, "Invoice 2026-117 attached").click()
    wait_until(lambda: text_of(browser, "h1").startswith("Invoice"), 10, "the message")
    message_url = browser.current_url
    save_screenshot(browser, "message")
    saved = downloads / "data.bin"
    download(browser, "data.bin", saved)
    assert saved.read_bytes() == ATTACHMENT

    lease = redis_server.acquire("ada@walk.example")
    try:
        browser.get(f"{ui}/accounts/ada@walk.example")
        assert "a session holds the lock" in browser.find_element(By.TAG_NAME, "main").text
        save_screenshot(browser, "account")
        browser.get(message_url)
        browser.find_element(By.CSS_SELECTOR, "form[action$='/delete'] button").click()
        confirm(browser)
        wait_until(lambda: text_of(browser, "h1") == "Error 423", 10, "the refusal")
        assert "POP3" in browser.find_element(By.CSS_SELECTOR, ".error").text
    finally:
        redis_server.release(lease)
    browser.get(message_url)
    browser.find_element(By.CSS_SELECTOR, "form[action$='/delete'] button").click()
    confirm(browser)
    wait_until(lambda: browser.current_url.endswith("/messages"), 10, "the list again")
    assert flash(browser) == "Message deleted."
    assert text_of(browser, "#message-count") == "2"
    assert "Invoice" not in text_of(browser, "#message-rows")
    browser.get(f"{ui}/accounts")
    save_screenshot(browser, "accounts")


def test_a_5_mb_hostile_html_body_opens_and_runs_nothing(browser, beacon, make_mailstore):
    """The issue's hostile set ends with a 5 MB HTML body: the beacons at its start and end,
    paragraphs between, opened in the browser like the small one (its own mailstore: the shared
    one takes 300 KB at most)."""
    store = make_mailstore(MAX_MESSAGE_SIZE=str(8 * 1024 * 1024))
    store.start()
    filler = "<p>Dear reader, <b>this</b> is <a href='https://example.org/x'>a link</a>.</p>\n"
    html = beacon_html(beacon.url) + filler * (5_000_000 // len(filler)) + beacon_html(beacon.url)
    with store.admin() as admin, store.internal() as internal:
        assert admin.post("/users", json={"username": "big", "password": "pw"}).status_code == 201
        mid = deliver(internal, "big", hostile_message("five megabytes", html))
    sign_in(browser, store.url, store.admin_token)
    requested_urls(browser)
    browser.get(f"{store.url}/ui/accounts/big/messages/{mid}")
    browser.switch_to.frame(browser.find_element(By.CSS_SELECTOR, "iframe.mail"))
    wait_until(
        lambda: browser.execute_script("return document.readyState") == "complete", 30, "the frame"
    )
    links = browser.execute_script("return document.querySelectorAll('a[href]').length")
    assert links >= 5_000_000 // len(filler)  # the whole body is there
    assert browser.execute_script("return window.origin") == "null"
    browser.switch_to.default_content()
    assert browser.title != "pwned"
    urls = requested_urls(browser)
    assert all(u.startswith((store.url + "/", "data:")) for u in urls), urls
    assert beacon.hits == []
    assert [e for e in browser.get_log("browser") if e["level"] in {"SEVERE", "WARNING"}] == []
