"""The interactive API docs at /docs, served from our own static files.

FastAPI's default page loads Swagger UI from a CDN, which leaves it blank on an offline machine;
static/swagger/ holds the vendored swagger-ui-dist (see its VERSION file). ReDoc is not offered.
The document declares a bearer scheme (app.openapi): the Authorize button takes an API token, which "Try it out"
then sends, and which the page keeps across reloads (persistAuthorization).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.openapi.docs import get_swagger_ui_html

from app.auth.deps import public

SWAGGER_STATIC = "/static/swagger"
DOCS_URL = "/docs"

router = APIRouter(tags=["docs"], include_in_schema=False)


@router.get(DOCS_URL, dependencies=[Depends(public)])
def swagger_ui(request: Request):
    return get_swagger_ui_html(
        openapi_url=request.app.openapi_url,
        title=f"{request.app.title} API",
        swagger_js_url=f"{SWAGGER_STATIC}/swagger-ui-bundle.js",
        swagger_css_url=f"{SWAGGER_STATIC}/swagger-ui.css",
        swagger_favicon_url=f"{SWAGGER_STATIC}/favicon-32x32.png",
        swagger_ui_parameters={"persistAuthorization": True},
    )
