"""create_app(): middleware, routers, static files, error handlers."""

from __future__ import annotations

import time
from http.cookies import SimpleCookie

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from app import __version__, metrics
from app.auth.deps import ANON_CSRF_COOKIE, LoginRequired
from app.errors import RankforgeError
from app.web import ROOT, render

SECURITY_HEADERS = [
    (b"content-security-policy",
     b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
     b"object-src 'none'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]  # fmt: skip
DOCS_HEADERS = [header for header in SECURITY_HEADERS if header[0] != b"content-security-policy"]


class EdgeMiddleware:
    """Pure ASGI: request metrics, security headers (on every response: it wraps Starlette's error middleware, so
    500s get them too), Cache-Control: no-store outside /static, and the pre-login CSRF cookie."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status_holder = {"status": 500}

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                headers = list(message.get("headers", []))
                path = scope.get("path", "")
                # Swagger UI at /docs starts from an inline script: it gets every header but the CSP.
                headers += DOCS_HEADERS if path.startswith("/docs") else SECURITY_HEADERS
                # Pages and API answers carry one user's data: never stored by browsers or proxies.
                if not path.startswith("/static") and not any(name == b"cache-control" for name, _ in headers):
                    headers.append((b"cache-control", b"no-store"))
                token = scope.get("state", {}).get("set_anon_csrf")
                if token:
                    cookie = SimpleCookie()
                    cookie[ANON_CSRF_COOKIE] = token
                    cookie[ANON_CSRF_COOKIE].update({"httponly": True, "samesite": "Lax", "path": "/"})
                    headers.append((b"set-cookie", cookie.output(header="").strip().encode()))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            route_path = getattr(route, "path", None) or ("/static" if scope["path"].startswith("/static") else "other")
            metrics.observe_request(scope["method"], route_path, status_holder["status"], time.perf_counter() - started)


def _wants_html(request: Request) -> bool:
    return not request.url.path.startswith("/api/") and "text/html" in request.headers.get("accept", "")


def create_app() -> FastAPI:
    app = FastAPI(
        title="Rankforge",
        version=__version__,
        description="Collect human feedback on model outputs and turn it into better models.",
        docs_url=None,  # served by app.docs from vendored files (works offline)
        redoc_url=None,
    )

    @app.exception_handler(RankforgeError)
    async def rankforge_error(request: Request, error: RankforgeError):
        if _wants_html(request) or request.headers.get("hx-request"):
            if isinstance(error, LoginRequired):
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                if request.headers.get("hx-request"):
                    return JSONResponse({"detail": error.detail}, status_code=401, headers={"HX-Redirect": "/login"})
                return RedirectResponse(f"/login?next={target}", status_code=303)
            return render(request, "error.html", {"status": error.status_code, "message": error.detail},
                          status_code=error.status_code)  # fmt: skip
        headers = {"WWW-Authenticate": "Bearer"} if error.status_code == 401 else None
        return JSONResponse({"detail": error.detail}, status_code=error.status_code, headers=headers)

    from app import outage

    outage.register(app)  # database down: 503 with Retry-After
    from app import limits

    limits.register(app)  # a value the database refuses: 422, never 500

    from app.errors import ImportValidationError

    @app.exception_handler(ImportValidationError)
    async def import_error(request: Request, error: ImportValidationError):
        errors = [{"line": e.line, "message": e.message} for e in error.errors]
        detail = {"message": str(error).splitlines()[0], "errors": errors,
                  "total_errors": getattr(error, "total", len(errors))}  # fmt: skip
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError):
        return JSONResponse({"detail": _jsonable_errors(error.errors())}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException):
        if _wants_html(request):
            return render(request, "error.html", {"status": error.status_code, "message": error.detail},
                          status_code=error.status_code)  # fmt: skip
        return JSONResponse({"detail": error.detail}, status_code=error.status_code, headers=error.headers)

    from app.auth.pages import router as auth_pages
    from app.datasets.pages import router as dataset_pages
    from app.datasets.router import router as datasets_api
    from app.docs import router as docs_router
    from app.imports.pages import router as import_pages
    from app.imports.router import router as imports_api
    from app.jobs.pages import router as job_pages
    from app.jobs.router import router as jobs_api
    from app.ops import router as ops_router
    from app.projects.pages import router as project_pages
    from app.projects.router import router as projects_api
    from app.quality.pages import router as quality_pages
    from app.quality.router import router as quality_api
    from app.quality.step_routes import router as step_agreement_routes
    from app.registry.pages import router as model_pages
    from app.registry.router import router as models_api
    from app.steps.pages import router as step_pages
    from app.steps.router import router as steps_api
    from app.tasks.pages import router as task_pages
    from app.tasks.router import router as tasks_api
    from app.training.pages import router as training_pages
    from app.training.router import rounds_router as rounds_api
    from app.training.router import router as training_api
    from app.users.pages import router as user_pages
    from app.users.router import router as users_api

    for router in (ops_router, auth_pages, projects_api, imports_api, tasks_api, project_pages, import_pages,
                   task_pages, datasets_api, training_api, jobs_api, models_api, quality_api, quality_pages, users_api, user_pages):
        app.include_router(router)
    app.include_router(dataset_pages)
    app.include_router(job_pages)
    app.include_router(training_pages)
    app.include_router(rounds_api)
    from app.training.round_pages import router as round_pages

    app.include_router(round_pages)
    app.include_router(model_pages)
    from app.registry.endpoint_pages import router as endpoint_pages
    from app.registry.endpoint_router import router as endpoints_api

    app.include_router(endpoints_api)
    app.include_router(endpoint_pages)
    from app.webhooks.pages import router as webhook_pages
    from app.webhooks.router import router as webhooks_api

    app.include_router(webhooks_api)
    app.include_router(webhook_pages)
    from app.verifiers.pages import router as verifier_pages
    from app.verifiers.router import router as verifiers_api

    app.include_router(verifiers_api)
    app.include_router(verifier_pages)
    from app.judges.pages import router as judge_pages
    from app.judges.router import router as judges_api

    app.include_router(judges_api)
    app.include_router(judge_pages)
    from app.battles.pages import router as battle_pages
    from app.battles.router import router as battles_api

    app.include_router(battles_api)
    app.include_router(battle_pages)
    app.include_router(steps_api)
    app.include_router(step_pages)
    app.include_router(step_agreement_routes)
    app.include_router(docs_router)

    from app.imports.parsers import FORMATS as IMPORT_FORMATS
    from app.web import templates

    templates.env.globals["import_formats"] = IMPORT_FORMATS  # the import form on a project's admin page
    from app.openapi import install as install_openapi

    install_openapi(app)  # /openapi.json describes the errors and HTML answers the app really gives
    from app.bodylimit import BodyLimitMiddleware

    app.add_middleware(BodyLimitMiddleware)  # bodies bounded, and anonymous ones refused, before anything reads them
    app.mount("/static", StaticFiles(directory=str(ROOT / "static")), name="static")
    # Outermost, outside Starlette's ServerErrorMiddleware, so a 500 gets the security headers too; the client
    # address is resolved (app.proxies) before anything reads it.
    from app.proxies import ClientAddressMiddleware

    build_middleware_stack = app.build_middleware_stack
    app.build_middleware_stack = lambda: ClientAddressMiddleware(EdgeMiddleware(build_middleware_stack()))
    return app


def _jsonable_errors(errors):
    clean = []
    for error in errors:
        item = {k: v for k, v in error.items() if k in ("loc", "msg", "type")}
        if item.get("type") == "extra_forbidden" and item.get("loc"):  # the sentence names the field too
            item["msg"] = f"Unknown field {item['loc'][-1]!r}: not a field of this request."
        clean.append(item)
    return clean
