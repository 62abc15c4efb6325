"""Templates and the HTML helpers shared by every domain's pages."""

from __future__ import annotations

import json
import re
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


LABELS = "ABCDEFGHI"
"""Answer letters, in display order (rating page) or stored order (staff pages)."""
CLIP_CHARS = 20_000
"""Texts longer than this show their beginning and a "show all" that fetches the rest as plain text: a 1 MiB
completion of one character rendered whole kept Chromium from ever finishing the page."""


LONG_WORD = re.compile(r"\S{1000,}")
"""A run this long with no space is shown as plain monospace text (see .plain-text in static/app.css: Chromium
lays such a run out in quadratic time in the proportional font)."""


def clipped_markdown(text: str, limit: int = CLIP_CHARS) -> dict:
    """{html, clipped, length, shown}: the text as sanitized markdown, or only its first `limit` characters (cut
    at a line end when one is in the second half) when it is longer; plain text when it has a very long word."""
    head = text
    if len(text) > limit:
        head = text[:limit]
        line_end = head.rfind("\n", limit // 2)
        if line_end > 0:
            head = head[:line_end]
    if LONG_WORD.search(head):
        html = Markup('<pre class="plain-text">') + head + Markup("</pre>")  # escaped by Markup's +
    else:
        html = render_markdown(head)
    return {"html": html, "clipped": len(head) < len(text), "length": len(text), "shown": len(head)}


UNPRINTABLE_CATEGORIES = {"Cc", "Cf", "Cn", "Co", "Cs"}
"""Unicode categories that show as nothing or as boxes: control, format, unassigned, private use, surrogates."""


GARBLED_SHARE = 0.03
"""Share of a text's non-space characters that are unprintable or U+FFFD above which it counts as garbled: a real
answer has none at all, while a broken or tiny policy's decoded byte soup has a few in every line."""


def garbled(text: str, share: float = GARBLED_SHARE) -> bool:
    """Whether a text would show raters garbage: over `share` of its non-space characters are unprintable
    (control, format, unassigned, private use) or U+FFFD (what undecodable bytes become)."""
    import unicodedata

    visible = [c for c in text if not c.isspace()]
    if not visible:
        return False
    bad = sum(1 for c in visible if c == "\ufffd" or unicodedata.category(c) in UNPRINTABLE_CATEGORIES)
    return bad / len(visible) > share


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


# Every page of a project, in the order the project navigation shows them, with the roles that may open it
# (the same roles the page's route requires).
_STAFF, _EVERYONE = ("admin", "engineer"), ("admin", "engineer", "annotator")
PROJECT_PAGES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("Overview", "", _STAFF),
    ("Rate", "/annotate", _EVERYONE),
    ("Steps", "/steps", _EVERYONE),
    ("Battle", "/battle", _EVERYONE),
    ("Dashboard", "/dashboard", _STAFF),
    ("Leaderboard", "/leaderboard", _STAFF),
    ("Rounds", "/rounds", _STAFF),
    ("Train", "/train", _STAFF),
    ("Judges", "/judges", _STAFF),
    ("AI review", "/ai-review", _EVERYONE),
    ("Verifier", "/verifier", _EVERYONE),
    ("Edits", "/edits", _STAFF),
    ("Practice", "/practice", _STAFF),
    ("Pay", "/pay", _STAFF),
    ("Members", "/members", ("admin",)),
)


def project_nav(user, project, path: str) -> list[dict]:
    """The project navigation for `user`: label, href (by slug) and whether it is the page at `path`
    (which may name the project by id or by slug)."""
    if isinstance(project, dict):  # the rating page passes the few fields it shows
        project_id, slug = project.get("id"), project.get("slug")
    else:
        project_id, slug = getattr(project, "id", None), getattr(project, "slug", None)
    if user is None or not slug:
        return []
    role = str(getattr(user.role, "value", user.role))
    section = None  # a page outside the project's URLs (a job of the project) marks no link
    for ref in (str(project_id), slug):
        prefix = f"/projects/{ref}"
        if path == prefix or path.startswith(prefix + "/"):
            section = path[len(prefix):]
    links = []
    for label, suffix, roles in PROJECT_PAGES:
        if role not in roles:
            continue
        current = section is not None and (section == suffix or (suffix != "" and section.startswith(suffix + "/")))
        links.append({"label": label, "href": f"/projects/{slug}{suffix}", "current": current})
    return links


templates.env.globals["project_nav"] = project_nav
