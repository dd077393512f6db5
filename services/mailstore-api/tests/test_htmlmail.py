"""The frame's HTML cleaning (nh3): links and images of hostile mail, on both of its paths
(HTML without an image is cleaned by nh3 alone, HTML with one through the image rewriter)."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from mailstore_api.ui.htmlmail import _clean_with_images, clean

HREFS = [
    "https://example.org/a?b=c#d",
    "HTTP://EXAMPLE.ORG/",
    "mailto:someone@example.org",
    "#section-2",
    "javascript:alert(1)",
    " JaVaScRiPt:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "cid:part@x",
    "vbscript:msgbox(1)",
    "page.html",
    "../../ui/accounts",
    "//evil.example/x",
    "",
]


def tokens(html: str) -> list[tuple[str, object]]:
    """The document's tags (attributes in any order) and text."""
    found: list[tuple[str, object]] = []

    class Collect(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            found.append((tag, sorted(attrs, key=str)))

        def handle_endtag(self, tag: str) -> None:
            found.append(("/" + tag, None))

        def handle_data(self, data: str) -> None:
            found.append(("text", data))

    Collect().feed(html)
    return found


@pytest.mark.parametrize("href", HREFS)
def test_a_link_is_kept_or_dropped_alike_with_and_without_images(href: str) -> None:
    html = f'<p>x <a href="{href}" onclick="steal()">link</a></p>'
    assert tokens(clean(html, {}, False)) == tokens(_clean_with_images(html, {}, False))


def test_html_without_images_keeps_only_safe_links_and_nothing_active() -> None:
    html = (
        "<style>p { background: url(https://beacon.example/css) }</style>"
        '<script>fetch("https://beacon.example/js")</script>'
        '<p style="color: red; background-image: url(https://beacon.example/s)"'
        ' onmouseover="x()">Hello</p>'
        '<a href="https://example.org/">web</a> <a href="#top">top</a>'
        ' <a href="javascript:x()">js</a> <a href="other.html">relative</a>'
        '<form action="https://evil.example/"><input name="q"></form><!-- a comment -->'
    )
    cleaned = clean(html, {}, False)
    assert (
        '<a href="https://example.org/" target="_blank" rel="noopener noreferrer">web</a>'
        in cleaned
    )
    assert '<a href="#top" target="_blank" rel="noopener noreferrer">top</a>' in cleaned
    assert '<p style="color:red">Hello</p>' in cleaned
    for gone in ("<script", "<style", "url(", "onmouseover", "javascript:", "other.html",
                 "<form", "<input", "<!--", "beacon"):  # fmt: skip
        assert gone not in cleaned, gone


@pytest.mark.parametrize("tag", ["img", "IMG", "image"])
def test_any_image_takes_the_rewriting_path(tag: str) -> None:
    html = f'<p>x</p><{tag} src="https://beacon.example/p.gif"><{tag} src="cid:logo@x">'
    images = {"logo@x": "data:image/png;base64,AAAA"}
    blocked = clean(html, images, False)
    assert "beacon.example" not in blocked
    assert 'src="data:image/png;base64,AAAA"' in blocked
    assert 'src="https://beacon.example/p.gif"' in clean(html, images, True)
