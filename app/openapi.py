"""The OpenAPI document, made to say what the app really answers.

FastAPI documents only the success status and a 422 whose `detail` is a list of validation errors. The app
also answers 4xx errors from its own checks (`app.errors`: `{"detail": "a sentence"}`), import rejections
(`{"detail": {"message", "errors": [{line, message}], "total_errors"}}`) and 413 from the body limit; and the
HTML pages answer HTML or redirects. This module rewrites each operation's responses accordingly; the
schemathesis run in the test suite (tests/test_openapi_fuzz.py) checks that responses keep to it.

`/openapi.json` (and the docs page drawn from it) describes the JSON API only, with its bearer-token security
scheme; `full_schema` adds the HTML pages (forms, redirects), for the fuzz test that exercises every route.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

ERROR_STATUSES = {
    "400": "Bad request.",
    "401": "Not logged in, or an invalid API token.",
    "403": "Not allowed (role, membership, CSRF token).",
    "404": "No such resource.",
    "409": "Conflict with the current state.",
    "413": "The request body is larger than this route's limit.",
    "422": "Invalid input: `detail` is a sentence naming the field, a list of validation errors, or (imports) "
    "the file's errors by line.",
    "429": "Too many attempts; try again later.",
    "503": "The database is unavailable; retry after `Retry-After` seconds.",
}
NOT_PAGES = ("/api/", "/healthz", "/metrics", "/openapi.json", "/docs")

ERROR_SCHEMAS: dict[str, Any] = {
    "ErrorBody": {
        "title": "ErrorBody",
        "type": "object",
        "required": ["detail"],
        "properties": {
            "detail": {
                "anyOf": [
                    {"type": "string"},
                    {"type": "array", "items": {"$ref": "#/components/schemas/ValidationError"}},
                    {"$ref": "#/components/schemas/ImportRejection"},
                    {"type": "object"},
                ]
            }
        },
    },
    "ImportRejection": {
        "title": "ImportRejection",
        "type": "object",
        "required": ["message", "errors", "total_errors"],
        "properties": {
            "message": {"type": "string"},
            "errors": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["line", "message"],
                    "properties": {
                        "line": {"type": "integer", "description": "1-based; 0 means the whole file"},
                        "message": {"type": "string"},
                    },
                },
            },
            "total_errors": {"type": "integer"},
        },
    },
}


def _error_response(description: str, page: bool) -> dict:
    content: dict[str, Any] = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    if page:
        content["text/html"] = {"schema": {"type": "string"}}
    return {"description": description, "content": content}


def describe_errors(schema: dict) -> dict:
    """Rewrite the operations of a FastAPI OpenAPI document in place (see the module docstring)."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.update(ERROR_SCHEMAS)
    components.setdefault("ValidationError", {
        "title": "ValidationError", "type": "object", "required": ["loc", "msg", "type"],
        "properties": {"loc": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
                       "msg": {"type": "string"}, "type": {"type": "string"}},
    })  # fmt: skip
    components.pop("HTTPValidationError", None)
    for path, operations in schema.get("paths", {}).items():
        page = not path.startswith(NOT_PAGES)
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            if page:
                for status, response in responses.items():
                    if status.startswith("2"):
                        response["content"] = {"text/html": {"schema": {"type": "string"}}}
                responses.setdefault("303", {"description": "Redirect: after a form is saved, or to the login page."})
            for status, description in ERROR_STATUSES.items():
                responses[status] = _error_response(description, page)
    return schema


LAST_TAGS = {"pages": "HTML pages (Jinja2 + HTMX) for people in a browser: session cookie and CSRF token.",
             "ops": "Health and Prometheus metrics."}  # fmt: skip


def api_first(schema: dict) -> dict:
    """Tags in the order the docs should show them: the JSON API's domains as they first appear, then the HTML
    pages and ops (the docs page draws tags in this order; the API is what its readers came for)."""
    names: list[str] = []
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            names += [tag for tag in operation.get("tags", []) if tag not in names]
    ordered = [n for n in names if n not in LAST_TAGS] + [n for n in LAST_TAGS if n in names]
    schema["tags"] = [{"name": n, **({"description": LAST_TAGS[n]} if n in LAST_TAGS else {})} for n in ordered]
    return schema


BEARER = "bearerAuth"
SECURITY_SCHEMES = {BEARER: {
    "type": "http", "scheme": "bearer",
    "description": "An API token (`rankforge token create NAME`, or the token page): `Authorization: Bearer TOKEN`.",
}}  # fmt: skip
PUBLIC_PATHS = ("/healthz",)
TOTAL_HEADER_DOC = {"description": "Items matching the filters, all pages together (app.api).",
                    "schema": {"type": "integer"}}  # fmt: skip


def is_api_path(path: str) -> bool:
    return path.startswith(NOT_PAGES)


def secure_and_count(schema: dict) -> dict:
    """The bearer scheme on every JSON operation but the public ones (the docs page's Authorize button and "Try it
    out" send the token); the `X-Total-Count` header on every answer that is a JSON array (a list route)."""
    schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
    for path, operations in schema.get("paths", {}).items():
        if not is_api_path(path):
            continue
        for operation in operations.values():
            operation["security"] = [] if path in PUBLIC_PATHS else [{BEARER: []}]
            ok = operation.get("responses", {}).get("200", {})
            if ok.get("content", {}).get("application/json", {}).get("schema", {}).get("type") == "array":
                ok.setdefault("headers", {})["X-Total-Count"] = TOTAL_HEADER_DOC
    return schema


def _document(app: FastAPI, routes) -> dict:
    return api_first(secure_and_count(describe_errors(
        get_openapi(title=app.title, version=app.version, description=app.description, routes=routes)
    )))  # fmt: skip


def full_schema(app: FastAPI) -> dict:
    """The document with the HTML pages too (for tests that exercise every route)."""
    return _document(app, app.routes)


def install(app: FastAPI) -> None:
    """Serve the JSON API's document at /openapi.json (built once, on first use); HTML routes are left out."""

    def openapi() -> dict:
        if app.openapi_schema is None:
            document = _document(app, app.routes)
            document["paths"] = {path: ops for path, ops in document["paths"].items() if is_api_path(path)}
            document["tags"] = [tag for tag in document["tags"] if tag["name"] != "pages"]
            app.openapi_schema = _prune_components(document)
        return app.openapi_schema

    app.openapi = openapi


def _prune_components(document: dict) -> dict:
    """Drop the schemas only HTML routes used (form bodies), so the document names nothing it does not use."""
    import json

    schemas = document.get("components", {}).get("schemas", {})
    used: set[str] = set()
    pending = [json.dumps(document["paths"])]
    while pending:
        text = pending.pop()
        for name in schemas:
            if name not in used and f'"#/components/schemas/{name}"' in text:
                used.add(name)
                pending.append(json.dumps(schemas[name]))
    document["components"]["schemas"] = {name: body for name, body in schemas.items() if name in used}
    return document
