"""The web console in a real browser (Debian's Chromium, driven by Selenium through
chromium-driver): sign in, open a hostile message, and watch what the browser does. A "remote"
web server on another loopback port stands for the attacker's host: no script, event handler,
style, refresh or form in the message may reach it, until the viewer asks for remote images
(which then, and only then, arrive: the check can see requests)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from mailstack.ports import free_port, wait_until
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from test_admin import deliver
from test_console_messages import PNG, hostile_message

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


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


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

    browser.get(f"{mailstore.url}/ui/signin")
    browser.find_element(By.NAME, "password").send_keys(mailstore.admin_token)
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    wait_until(lambda: browser.current_url.endswith("/ui/domains"), 10, "the domains page")
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


def test_a_new_message_appears_in_the_open_list_without_a_reload(
    browser, mailstore, new_user, internal
):
    user, _ = new_user()
    deliver(internal, user, hostile_message("the first"))
    browser.get(f"{mailstore.url}/ui/signin")
    browser.find_element(By.NAME, "password").send_keys(mailstore.admin_token)
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    wait_until(lambda: browser.current_url.endswith("/ui/domains"), 10, "the domains page")
    browser.get(f"{mailstore.url}/ui/accounts/{user}/messages")
    assert "the first" in browser.find_element(By.ID, "message-rows").text
    browser.execute_script("window.notReloaded = true")
    wait_until(
        lambda: any(
            e["message"]["method"] == "Network.responseReceived"
            and e["message"]["params"]["response"]["url"].endswith("/events")
            for e in (json.loads(x["message"]) for x in browser.get_log("performance"))
        ),
        10,
        "the event stream",
    )
    deliver(internal, user, hostile_message("the second"))
    wait_until(
        lambda: "the second" in browser.find_element(By.ID, "message-rows").text, 10, "the new row"
    )
    assert browser.execute_script("return window.notReloaded") is True
    assert browser.find_element(By.ID, "message-count").text == "2"
