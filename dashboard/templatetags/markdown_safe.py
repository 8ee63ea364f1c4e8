"""Render user-written markdown (model cards, comments) as sanitized HTML.

Markdown passes raw HTML through, so its output is cleaned with nh3 (ammonia): only a fixed
set of formatting tags survives, <script>/<style> are dropped with their content, event
handler attributes and javascript: URLs are removed, links get rel="noopener noreferrer", and
images must come from this site (an external image would report every reader to its host).
"""

import markdown as markdown_lib
import nh3
from django import template
from django.utils.safestring import SafeString, mark_safe

register = template.Library()

ALLOWED_TAGS = {
    "a", "abbr", "b", "blockquote", "br", "code", "del", "div", "em", "h1", "h2", "h3", "h4", "h5", "h6",
    "hr", "i", "img", "li", "ol", "p", "pre", "span", "strong", "sub", "sup", "table", "tbody", "td",
    "th", "thead", "tr", "ul",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "abbr": {"title"},
    "img": {"src", "alt", "title"},
    "td": {"align"},
    "th": {"align"},
    "code": {"class"},
}
URL_SCHEMES = {"http", "https", "mailto"}
EXTENSIONS = ["fenced_code", "tables", "sane_lists"]


def render_markdown(text: str) -> SafeString:
    """Return `text` rendered from markdown to HTML with everything unsafe removed."""
    html = markdown_lib.markdown(text or "", extensions=EXTENSIONS, output_format="html")
    cleaned = nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        attribute_filter=_same_origin_images,
        url_schemes=URL_SCHEMES,
        link_rel="noopener noreferrer nofollow",
    )
    return mark_safe(cleaned)  # sanitized by nh3 just above


def _same_origin_images(element: str, attribute: str, value: str) -> str | None:
    """Keep only same-origin image sources: an external image is a tracking pixel."""
    if element == "img" and attribute == "src":
        same_origin = value.startswith("/") and not value.startswith("//") and "\\" not in value
        return value if same_origin else None
    return value


@register.filter(name="markdown_safe")
def markdown_safe(text: str) -> SafeString:
    """Template filter: {{ head.description|markdown_safe }}."""
    return render_markdown(text)
