"""HTML mail for the console's frame. Mail is written by attackers, so three defences, each
meant to hold alone: the frame is sandboxed (no scripts, an opaque origin: no cookie, no DOM of
the console), its response carries a CSP that loads nothing but ``data:`` images (remote images
and fonts only when the viewer asks), and the HTML is cleaned first by nh3 (scripts, event
handlers, forms, ``javascript:`` links, ``<style>``, CSS that can fetch, all dropped; links open
a new context with ``noopener noreferrer``; ``cid:`` images become ``data:`` URLs)."""

from __future__ import annotations

import base64
import re
from email.message import EmailMessage
from typing import Any

import nh3

from mailstore_api.messages import payload

#: What the frame's document may do. ``sandbox`` here too, for the frame's URL opened alone.
_CSP = (
    "default-src 'none'; img-src {images}; font-src {images}; style-src 'unsafe-inline';"
    " form-action 'none'; frame-ancestors 'self'; base-uri 'none';"
    " sandbox allow-popups allow-popups-to-escape-sandbox"
)
#: The iframe's own ``sandbox``: links may open (a new, unsandboxed context); nothing else.
FRAME_SANDBOX = "allow-popups allow-popups-to-escape-sandbox"
_LAYOUT = {"align", "bgcolor", "border", "cellpadding", "cellspacing", "color", "dir",
           "height", "valign", "width", "face", "size", "lang", "title"}  # fmt: skip
_ATTRIBUTES = {tag: set(names) for tag, names in nh3.ALLOWED_ATTRIBUTES.items()} | {
    "*": _LAYOUT | {"style"}
}
_TAGS = nh3.ALLOWED_TAGS | {"font"}
#: CSS properties kept in ``style`` attributes: none can name a URL (background, list-style,
#: content, cursor, border-image and friends can, and go).
_STYLE = {
    "color", "background-color", "font", "font-family", "font-size", "font-style",
    "font-weight", "line-height", "letter-spacing", "text-align", "text-decoration",
    "text-indent", "text-transform", "vertical-align", "white-space", "word-break",
    "margin", "margin-top", "margin-right", "margin-bottom", "margin-left",
    "padding", "padding-top", "padding-right", "padding-bottom", "padding-left",
    "border", "border-top", "border-right", "border-bottom", "border-left",
    "border-color", "border-style", "border-width", "border-collapse", "border-spacing",
    "border-radius", "width", "height", "max-width", "min-width", "max-height",
    "min-height", "display", "float", "clear", "overflow", "table-layout",
}  # fmt: skip
_LINK_SCHEMES = ("http:", "https:", "mailto:")
_REMOTE_SCHEMES = ("http:", "https:")
#: What every cleaning applies.
_RULES: dict[str, Any] = {
    "tags": _TAGS,
    "attributes": _ATTRIBUTES,
    "filter_style_properties": _STYLE,
    "set_tag_attribute_values": {"a": {"target": "_blank"}},
    "link_rel": "noopener noreferrer",
    "strip_comments": True,
}


def frame_csp(remote: bool) -> str:
    return _CSP.format(images="data: https: http:" if remote else "data:")


def html_body(message: EmailMessage) -> str | None:
    """The message's HTML body (the preferred text/html part), or None when it has none."""
    body = message.get_body(preferencelist=("html",))
    if body is None:
        return None
    content = body.get_content()
    return content if isinstance(content, str) else None


def inline_images(message: EmailMessage) -> dict[str, str]:
    """``data:`` URLs of the image parts by Content-ID (without its angle brackets)."""
    found: dict[str, str] = {}
    for part in message.walk():
        cid = part.get("content-id")
        if cid and part.get_content_maintype() == "image":
            data = base64.b64encode(payload(part)).decode()
            found[str(cid).strip().strip("<>")] = f"data:{part.get_content_type()};base64,{data}"
    return found


#: Where an image may start (HTML parsers read ``<image>`` as ``<img>``).
_IMAGE_TAG = re.compile(r"<\s*im", re.IGNORECASE)


def clean(html: str, images: dict[str, str], remote: bool) -> str:
    """The message's HTML as the frame shows it.

    Without an image there is no ``src`` to rewrite, and nh3 alone keeps the links as
    :func:`_clean_with_images` does (http, https, mailto, ``#`` fragments), with no call back
    into Python per attribute: 367 → 290 ms for the 5 MB newsletter of bench/console_bench.py."""
    if _IMAGE_TAG.search(html) is None:
        return nh3.clean(
            html,
            url_schemes={scheme.rstrip(":") for scheme in _LINK_SCHEMES},
            url_relative=_fragment_only,
            **_RULES,
        )
    return _clean_with_images(html, images, remote)


def _fragment_only(url: str) -> str | None:
    """A relative URL is kept only as a link within the message (``#...``)."""
    return url if url.startswith("#") else None


def _clean_with_images(html: str, images: dict[str, str], remote: bool) -> str:
    """:func:`clean` for HTML that may hold images: ``cid:`` ones become ``data:`` URLs, remote
    ones go unless ``remote``."""

    def attribute(tag: str, name: str, value: str) -> str | None:
        lowered = value.strip().lower()
        if tag == "img" and name == "src":
            if lowered.startswith("cid:"):
                return images.get(value.strip()[4:].strip("<>"))
            if lowered.startswith("data:image/"):
                return value
            return value if remote and lowered.startswith(_REMOTE_SCHEMES) else None
        if name == "href":
            return value if lowered.startswith(_LINK_SCHEMES) or lowered.startswith("#") else None
        return value

    return nh3.clean(
        html,
        attribute_filter=attribute,
        url_schemes={"http", "https", "mailto", "cid", "data"},
        **_RULES,
    )


def frame_document(message: EmailMessage, remote: bool) -> str:
    """The whole document of the frame (an empty one when the message has no HTML)."""
    html = html_body(message) or ""
    body = clean(html, inline_images(message), remote) if html else ""
    return (
        '<!doctype html><html><head><meta charset="utf-8">'
        '<meta name="referrer" content="no-referrer"></head>'
        f"<body>{body}</body></html>"
    )
