"""The console's message pages over real HTTP: the list with verdicts, a message's parts, the
HTML frame's sandbox and CSP, attachments byte-exact, the raw source, delete and its 423."""

from __future__ import annotations

import base64
import html
import re
import secrets

import pytest
from consolekit import ConsoleClient
from test_admin import deliver

pytestmark = pytest.mark.timeout(90)

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)
ATTACHMENT = bytes(range(256)) * 3
HOSTILE_HTML = (
    "<html><head><style>body { background: url(https://beacon.example/css) }</style>"
    '<meta http-equiv="refresh" content="0; url=https://evil.example/">'
    "<script>document.title = 'pwned'</script></head><body>"
    '<p style="color: red; background-image: url(https://beacon.example/style)">Hello</p>'
    '<img src="https://beacon.example/pixel.gif" onerror="alert(1)">'
    '<img src="cid:logo@test">'
    '<a href="javascript:alert(2)">js link</a>'
    '<a href="https://example.org/page">a link</a>'
    '<form action="https://evil.example/post"><input name="q"></form>'
    "<svg><script>alert(3)</script></svg>"
    "</body></html>"
)


def hostile_message(subject: str, html: str = HOSTILE_HTML) -> bytes:
    attachment = base64.encodebytes(ATTACHMENT).decode()
    png = base64.encodebytes(PNG).decode()
    return (
        "Authentication-Results: mx.test.example; spf=pass smtp.mailfrom=alice@example.org;"
        " dmarc=fail header.from=example.org\r\n"
        "From: Alice <alice@example.org>\r\n"
        "To: bob@test.example\r\n"
        f"Subject: {subject}\r\n"
        "Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="OUT"\r\n'
        "\r\n"
        "--OUT\r\n"
        'Content-Type: multipart/related; boundary="REL"\r\n'
        "\r\n"
        "--REL\r\n"
        'Content-Type: multipart/alternative; boundary="ALT"\r\n'
        "\r\n"
        "--ALT\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
        "The text part <b>not bold</b>\r\n"
        "--ALT\r\n"
        "Content-Type: text/html; charset=utf-8\r\n"
        "\r\n"
        f"{html}\r\n"
        "--ALT--\r\n"
        "--REL\r\n"
        "Content-Type: image/png\r\n"
        "Content-ID: <logo@test>\r\n"
        "Content-Transfer-Encoding: base64\r\n"
        "\r\n"
        f"{png}"
        "--REL--\r\n"
        "--OUT\r\n"
        "Content-Type: application/octet-stream\r\n"
        'Content-Disposition: attachment; filename="data.bin"\r\n'
        "Content-Transfer-Encoding: base64\r\n"
        "\r\n"
        f"{attachment}"
        "--OUT--\r\n"
    ).encode()


def directives(csp: str) -> dict[str, list[str]]:
    return {d.split()[0]: d.split()[1:] for d in csp.split(";") if d.strip()}


@pytest.fixture
def signed_in(mailstore):
    with ConsoleClient(mailstore.url) as ui:
        ui.sign_in(mailstore.admin_token)
        yield ui


def test_the_list_shows_newest_first_with_verdicts(signed_in, new_user, internal, mailstore):
    user, _ = new_user()
    for n in range(3):
        deliver(internal, user, hostile_message(f"number {n}"))
    page = signed_in.get(f"/ui/accounts/{user}/messages")
    assert page.status_code == 200
    text = page.text
    assert text.index("number 2") < text.index("number 1") < text.index("number 0")
    assert "spf pass" in text and "dmarc fail" in text
    assert "Alice &lt;alice@example.org&gt;" in text  # escaped, as every value
    assert signed_in.get(f"/ui/accounts/{user}/messages?page=-1").status_code == 422
    assert signed_in.get("/ui/accounts/nobody-here/messages").status_code == 404


def test_a_hostile_html_part_is_framed_sandboxed_under_a_strict_csp(signed_in, new_user, internal):
    user, _ = new_user()
    mid = deliver(internal, user, hostile_message("hostile"))
    page = signed_in.get(f"/ui/accounts/{user}/messages/{mid}")
    assert page.status_code == 200
    frames = re.findall(r"<iframe[^>]*>", page.text)
    assert len(frames) == 1
    sandbox = re.search(r'sandbox="([^"]*)"', frames[0])
    assert sandbox is not None
    assert "allow-scripts" not in sandbox.group(1) and "allow-same-origin" not in sandbox.group(1)
    src = re.search(r'src="([^"]*)"', frames[0])
    assert src is not None and src.group(1).endswith("/frame")
    assert "The text part &lt;b&gt;not bold&lt;/b&gt;" in page.text

    frame = signed_in.get(html.unescape(src.group(1)))
    assert frame.status_code == 200
    csp = directives(frame.headers["content-security-policy"])
    assert csp["default-src"] == ["'none'"]
    assert csp["img-src"] == ["data:"] and csp["font-src"] == ["data:"]
    assert "script-src" not in csp  # default-src 'none': no script at all
    assert csp["form-action"] == ["'none'"]
    assert csp["base-uri"] == ["'none'"]
    assert "sandbox" in csp and "allow-scripts" not in csp["sandbox"]
    assert frame.headers["x-frame-options"] == "SAMEORIGIN"
    body = frame.text.lower()
    for gone in (
        "<script",
        "onerror",
        "javascript:",
        "<form",
        "<meta http-equiv",
        "url(",
        "beacon",
    ):
        assert gone not in body, gone
    assert (
        '<a href="https://example.org/page" target="_blank" rel="noopener noreferrer">'
        in frame.text
    )
    assert f'src="data:image/png;base64,{base64.b64encode(PNG).decode()}"' in frame.text

    remote = signed_in.get(f"/ui/accounts/{user}/messages/{mid}/frame?remote=true")
    assert directives(remote.headers["content-security-policy"])["img-src"] == [
        "data:",
        "https:",
        "http:",
    ]
    assert 'src="https://beacon.example/pixel.gif"' in remote.text
    assert "onerror" not in remote.text


def test_attachments_download_byte_exact_and_the_raw_source_as_text(
    signed_in, new_user, internal, admin
):
    user, _ = new_user()
    mid = deliver(internal, user, hostile_message("with attachment"))
    base = f"/ui/accounts/{user}/messages/{mid}"
    page = signed_in.get(base).text
    index = re.search(r'href="[^"]*/parts/(\d+)" download>data.bin', page)
    assert index is not None
    r = signed_in.get(f"{base}/parts/{index.group(1)}")
    assert r.status_code == 200 and r.content == ATTACHMENT
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers["content-disposition"] == "attachment; filename*=UTF-8''data.bin"
    assert signed_in.get(f"{base}/parts/999").status_code == 404

    raw = signed_in.get(f"{base}/raw")
    assert raw.headers["content-type"] == "text/plain; charset=utf-8"
    assert raw.content == admin.get(f"/users/{user}/messages/{mid}/raw").content
    assert "attachment" in signed_in.get(f"{base}/raw?download=true").headers["content-disposition"]


def test_message_routes_need_a_session(mailstore, new_user, internal):
    user, _ = new_user()
    mid = deliver(internal, user, hostile_message("private"))
    with ConsoleClient(mailstore.url) as anonymous:
        for tail in ("", "/frame", "/raw", "/parts/1"):
            r = anonymous.get(f"/ui/accounts/{user}/messages/{mid}{tail}")
            assert r.status_code == 303 and "/ui/signin" in r.headers["location"]


def test_delete_waits_for_the_pop3_lock_as_the_rest_api_does(
    signed_in, new_user, internal, admin, redis_server
):
    user, _ = new_user()
    mid = deliver(internal, user, hostile_message(f"doomed {secrets.token_hex(3)}"))
    lease = redis_server.acquire(f"{user}@test.example")
    try:
        assert (
            "a POP3 session holds the lock" in signed_in.get(f"/ui/accounts/{user}/messages").text
        )
        r = signed_in.post(f"/ui/accounts/{user}/messages/{mid}/delete")
        assert r.status_code == 423
        assert admin.get(f"/users/{user}/messages/{mid}").status_code == 200
    finally:
        redis_server.release(lease)
    assert (
        signed_in.post(f"/ui/accounts/{user}/messages/{mid}/delete", csrf=False).status_code == 403
    )
    r = signed_in.post(f"/ui/accounts/{user}/messages/{mid}/delete")
    assert r.status_code == 303
    assert admin.get(f"/users/{user}/messages/{mid}").status_code == 404


def test_an_open_list_hears_of_each_delivery(signed_in, new_user, internal):
    user, _ = new_user()
    with signed_in.http.stream("GET", f"/ui/accounts/{user}/events") as events:
        assert events.status_code == 200
        assert events.headers["content-type"].startswith("text/event-stream")
        lines = events.iter_lines()
        assert next(lines) == "retry: 1000"  # subscribed
        mid = deliver(internal, user, hostile_message("live"))
        received = []
        for line in lines:
            received.append(line)
            if line.startswith("data:"):
                break
        assert received[-2:] == ["event: delivered", f"data: {mid}"]
    with ConsoleClient(signed_in.http.base_url) as anonymous:
        assert anonymous.get(f"/ui/accounts/{user}/events").status_code == 303
