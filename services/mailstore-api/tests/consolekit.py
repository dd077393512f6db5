"""A browser-like HTTP client of the web console for the tests: cookies, the CSRF token of the
last page, form posts."""

from __future__ import annotations

import html
import re
from typing import Any

import httpx

CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')


class ConsoleClient:
    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=30, follow_redirects=False)
        self.csrf = ""

    def __enter__(self) -> ConsoleClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.http.close()

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        r = self.http.get(path, **kwargs)
        found = (
            CSRF_RE.search(r.text)
            if r.headers.get("content-type", "").startswith("text/html")
            else None
        )
        if found:
            self.csrf = html.unescape(found.group(1))
        return r

    def post(
        self, path: str, data: dict[str, str] | None = None, csrf: bool = True
    ) -> httpx.Response:
        fields = dict(data or {})
        if csrf:
            fields["csrf"] = self.csrf
        return self.http.post(path, data=fields)

    def sign_in(self, secret: str) -> httpx.Response:
        r = self.http.post("/ui/signin", data={"password": secret})
        assert r.status_code == 303, r.text
        self.get("/ui/domains")
        return r
