"""Every route of the app declares who may call it, and the declaration is enforced.

The walk reads the live route table of `create_app()`, so routers added later are covered without
touching this test.
"""

from __future__ import annotations

import re

from fastapi import routing
from fastapi.routing import APIRoute

from app.auth import deps
from app.models import Role
from tests.auth.test_auth import login, session_csrf

API_PREFIX = "/api/"
"""JSON API: refuses anonymous callers with 401; everything else is a page that redirects to /login."""


def _route_contexts(app):
    """(path, methods, dependant) for every APIRoute, router prefixes and router dependencies included."""
    if hasattr(routing, "iter_route_contexts"):  # FastAPI >= 0.16x includes routers lazily
        for context in routing.iter_route_contexts(app.routes):
            if isinstance(context.original_route, APIRoute):
                yield context.path_format, set(context.methods), context.dependant
    else:
        for route in app.routes:
            if isinstance(route, APIRoute):
                yield route.path_format, set(route.methods), route.dependant


def _declarations(dependant) -> list:
    """The `require(...)` / `public` dependencies anywhere in a route's dependency tree."""
    found = []
    for sub in dependant.dependencies:
        if sub.call is not None and hasattr(sub.call, "allowed_roles"):
            found.append(sub.call)
        found += _declarations(sub)
    return found


def _fill(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


def test_every_route_declares_and_enforces_who_may_call_it(client, users):
    annotator = users.create("anna", "annotator")
    assert login(client, "anna", "secret-pass-1").status_code == 303
    browser_headers = {"Accept": "text/html", "X-CSRF-Token": session_csrf(client)}
    browser_cookies = dict(client.cookies)
    client.cookies.clear()
    undeclared, late_checks, not_refused_anonymous = [], [], []
    checked = 0
    for path, methods, dependant in _route_contexts(client.app):
        declarations = _declarations(dependant)
        if not declarations:
            undeclared.append(f"{sorted(methods)} {path}")
            continue
        if any(d.allowed_roles is None for d in declarations):
            continue  # public
        allowed = set.intersection(*(set(d.allowed_roles) for d in declarations))
        url = _fill(path)
        for method in sorted(methods - {"HEAD", "OPTIONS"}):
            checked += 1
            is_api = url.startswith(API_PREFIX)
            anonymous = client.request(method, url, headers={"Accept": "application/json" if is_api else "text/html"},
                                       follow_redirects=False)  # fmt: skip
            if is_api:
                if anonymous.status_code != 401:
                    not_refused_anonymous.append(f"{method} {path}: {anonymous.status_code}")
            elif anonymous.status_code != 303 or not anonymous.headers.get("location", "").startswith(
                "/login"
            ):
                not_refused_anonymous.append(f"{method} {path}: {anonymous.status_code}")
            if Role.annotator in allowed:
                continue
            as_annotator = client.request(method, url, headers=annotator["headers"] | {"Accept": "application/json"},
                                          follow_redirects=False)  # fmt: skip
            if as_annotator.status_code != 403:
                late_checks.append(f"{method} {path}: {as_annotator.status_code} {as_annotator.text[:120]}")
            if not is_api:  # the same refusal as an HTML error page for a logged-in browser
                client.cookies.update(browser_cookies)
                in_browser = client.request(method, url, headers=browser_headers, follow_redirects=False)
                client.cookies.clear()
                if in_browser.status_code != 403:
                    late_checks.append(f"{method} {path} (browser): {in_browser.status_code}")
    assert not undeclared, "routes without require(...) or public: " + "; ".join(undeclared)
    assert not not_refused_anonymous, "anonymous callers not refused: " + "; ".join(not_refused_anonymous)
    assert not late_checks, "annotator not refused with 403 (check too late or missing): " + "; ".join(
        late_checks
    )
    assert checked > 10, "the route walk found suspiciously few protected routes"
    assert deps.public.allowed_roles is None
