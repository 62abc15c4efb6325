"""Templates and the HTML helpers shared by every domain's pages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nh3
from fastapi import Request
from fastapi.templating import Jinja2Templates
from markdown_it import MarkdownIt
from markupsafe import Markup

ROOT = Path(__file__).resolve().parent.parent
templates = Jinja2Templates(directory=str(ROOT / "templates"))

# Model text is untrusted: raw HTML in markdown is escaped (html=False) and the output is sanitized
# again with an allow-list, so neither markdown tricks nor a parser bug can inject markup.
_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")
_ALLOWED_TAGS = {
    "p", "br", "pre", "code", "em", "strong", "ul", "ol", "li", "blockquote", "h1", "h2", "h3", "h4",
    "h5", "h6", "hr", "table", "thead", "tbody", "tr", "th", "td", "a", "del", "span",
}  # fmt: skip


def render_markdown(text: str) -> Markup:
    html = _markdown.render(text or "")
    clean = nh3.clean(
        html,
        tags=_ALLOWED_TAGS,
        attributes={"a": {"href", "title"}, "code": {"class"}, "th": {"align"}, "td": {"align"}},
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
    )
    return Markup(clean)


templates.env.filters["markdown"] = render_markdown
templates.env.filters["tojson_compact"] = lambda value: json.dumps(value, separators=(",", ":"))


def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def render(request: Request, name: str, context: dict[str, Any] | None = None, status_code: int = 200):
    from app.auth.deps import anon_csrf_token

    principal = getattr(request.state, "principal", None)
    ctx: dict[str, Any] = {
        "user": principal.user if principal else None,
        "csrf_token": principal.csrf_token if principal and principal.auth_session else anon_csrf_token(request),
        "flash": None,
        "error": None,
    }
    ctx.update(context or {})
    return templates.TemplateResponse(request, name, ctx, status_code=status_code)
