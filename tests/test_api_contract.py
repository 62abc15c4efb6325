"""The JSON API's contract, read from its own OpenAPI document (issue 22, point 4).

- Request bodies refuse unknown fields: a 422 that names the field (a typo in a setting must not silently do
  nothing).
- Every list route pages the same way (app.api): `limit` / `offset`, and the total (`X-Total-Count` on an array,
  `total` / `limit` / `offset` beside the items of an object). List routes are found in the document, so a new one
  without paging fails here.
- Every JSON route declares its response model; the document has a bearer security scheme and no HTML route.
- The Python client's typed results (rankforge.types) name fields of the server's response models with types that
  accept whatever the server may send.
"""

from __future__ import annotations

import json
import types
import typing
from datetime import datetime

import pytest

from tests.helpers import import_lines, make_project

API = "/api/v1"
NOT_LISTS = {
    f"{API}/projects/{{project_ref}}/tasks/next": "one task; its options are part of it",
    f"{API}/projects/{{project_ref}}/stats": "figures of the whole project, one row per rater",
    f"{API}/projects/{{project_ref}}/leaderboard": "one row per model",
    f"{API}/projects/{{project_ref}}/dashboard": "per hour and per day figures of a fixed window",
    f"{API}/projects/{{project_ref}}/verifier": "one row per verify job, with pass rates",
    f"{API}/projects/{{project_ref}}/judges": "one row per judge of the project, with its agreement figures",
    f"{API}/projects/{{project_ref}}/steps/next": "one trajectory; its steps are part of it",
    f"{API}/projects/{{project_ref}}/trajectories/{{completion_id}}": "one trajectory with its steps and labels",
    f"{API}/projects/{{project_ref}}/step-agreement": "figures of the whole project, one row per rater",
}
"""GET routes whose answer holds lists that are not a list of records (figures, a record's parts): not paged, on
purpose."""


@pytest.fixture
def schema(app):
    return app.openapi()


def _resolve(schema: dict, node: dict) -> dict:
    while "$ref" in node:
        node = schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
    return node


def _ok_json_schema(operation: dict) -> dict | None:
    for status, response in operation.get("responses", {}).items():
        if status.startswith("2") and "application/json" in response.get("content", {}):
            return response["content"]["application/json"].get("schema")
    return None


def _operations(schema: dict):
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            yield path, method, operation


def _is_array_of_objects(schema: dict, node: dict) -> bool:
    node = _resolve(schema, node)
    return node.get("type") == "array" and "$ref" in node.get("items", {})


def list_routes(schema: dict) -> dict[str, str]:
    """{path: "array" | "object"} of the GET routes that answer a list of records: an array, or an object with an
    array of objects among its fields (NOT_LISTS excepted)."""
    found = {}
    for path, method, operation in _operations(schema):
        body = _ok_json_schema(operation)
        if method != "get" or not path.startswith(API) or path in NOT_LISTS or not body:
            continue
        body = _resolve(schema, body)
        if body.get("type") == "array":
            found[path] = "array"
        elif any(_is_array_of_objects(schema, field) for field in body.get("properties", {}).values()):
            found[path] = "object"
    return found


# --------------------------------------------------------------------------------------------------------------
# unknown fields
# --------------------------------------------------------------------------------------------------------------


def _refused_naming(response, field: str) -> None:
    assert response.status_code == 422, (response.status_code, response.text[:300])
    assert field in response.text, response.text[:300]


def test_unknown_fields_are_refused_with_a_422_naming_them(client, users):
    admin = users.create("alice", "admin")
    project = make_project(client, admin)
    base = f"{API}/projects/{project['id']}"

    _refused_naming(client.patch(base, json={"overlapp": 3}, headers=admin["headers"]), "overlapp")
    _refused_naming(client.put(f"{base}/ai-policy", json={"polcy": "shadow"}, headers=admin["headers"]), "polcy")
    _refused_naming(client.post(API + "/projects", json={"name": "x", "guideline": "typo"}, headers=admin["headers"]),
                    "guideline")  # fmt: skip
    _refused_naming(client.post(f"{base}/datasets", json={"format": "pairs", "filter": {}}, headers=admin["headers"]),
                    "filter")  # fmt: skip
    _refused_naming(client.put(f"{base}/rounds/recipe", json={"prompts_per_rnd": 3}, headers=admin["headers"]),
                    "prompts_per_rnd")  # fmt: skip
    # nothing was changed by the refused requests
    again = client.get(base, headers=admin["headers"]).json()
    assert again["overlap"] == project["overlap"]
    assert client.get(f"{base}/judges", headers=admin["headers"]).json()["policy"] == "off"


def test_every_request_body_model_forbids_unknown_fields(schema):
    """Statically: every JSON request body of the API is a model that refuses extra fields."""
    loose = []
    for path, method, operation in _operations(schema):
        body = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
        if body is None or not path.startswith(API):
            continue
        if _resolve(schema, body).get("additionalProperties", True) is not False:
            loose.append(f"{method.upper()} {path}")
    assert not loose, f"request bodies that accept unknown fields: {loose}"


# --------------------------------------------------------------------------------------------------------------
# paging
# --------------------------------------------------------------------------------------------------------------


def test_every_list_route_declares_limit_offset_and_a_total(schema):
    routes = list_routes(schema)
    assert len(routes) >= 12, f"the document names only these list routes: {sorted(routes)}"
    problems = []
    for path, shape in routes.items():
        operation = schema["paths"][path]["get"]
        params = {p["name"] for p in operation.get("parameters", []) if p["in"] == "query"}
        if not {"limit", "offset"} <= params:
            problems.append(f"{path}: no limit/offset query parameters")
        if shape == "array" and "X-Total-Count" not in operation["responses"]["200"].get("headers", {}):
            problems.append(f"{path}: no X-Total-Count header")
        if shape == "object":
            fields = _resolve(schema, _ok_json_schema(operation)).get("properties", {})
            if not {"total", "limit", "offset"} <= set(fields):
                problems.append(f"{path}: no total/limit/offset beside the items")
    assert not problems, "\n".join(problems)


def _max_limit(operation: dict) -> int:
    limit = next(p for p in operation["parameters"] if p["name"] == "limit")["schema"]
    return max(node["maximum"] for node in limit.get("anyOf", [limit]) if "maximum" in node)


def _plant(client, db, users) -> tuple[dict, dict]:
    """Two of everything the project-level and global list routes show."""
    from app.models import Completion, Prompt, Verdict

    admin = users.create("alice", "admin")
    rater = users.create("rita", "annotator")
    projects = [make_project(client, admin, name=f"Paged {i}") for i in range(2)]
    project = projects[0]
    rows = [{"prompt": f"q{i}", "completions": [{"text": f"a{i}", "model": "m1"}, {"text": f"b{i}", "model": "m2"}],
             "metadata": {"batch": f"b{i % 3}"}} for i in range(6)]  # fmt: skip
    body = "\n".join(map(json.dumps, rows)).encode()
    assert import_lines(client, admin, project["id"], body).status_code == 200
    for _ in range(3):  # three flagged judgments: the review queue
        task = client.get(f"{API}/projects/{project['id']}/tasks/next", headers=rater["headers"]).json()
        ranking = [[task["options"][0]["id"]], [task["options"][1]["id"]]]
        answer = client.post(f"{API}/assignments/{task['assignment_id']}/judgment",
                             json={"ranking": ranking, "flags": ["unsafe"]}, headers=rater["headers"])  # fmt: skip
        assert answer.status_code == 201, answer.text
    db.rollback()
    for completion in db.query(Completion).join(Prompt).where(Prompt.project_id == project["id"]).limit(3):
        db.add(Verdict(project_id=project["id"], prompt_id=completion.prompt_id, completion_id=completion.id,
                       passed=True, reason="correct", audit_status="pending"))  # fmt: skip
    db.commit()
    return admin, project


def test_list_routes_page_with_limit_offset_and_total(client, db, users, schema):
    admin, project = _plant(client, db, users)
    checked = []
    for path, shape in list_routes(schema).items():
        if "{" in path.replace("{project_ref}", ""):
            continue  # routes under another resource (a job's metrics, a webhook's deliveries): checked statically
        url = path.replace("{project_ref}", str(project["id"]))
        whole = client.get(url, params={"limit": _max_limit(schema["paths"][path]["get"])}, headers=admin["headers"])
        assert whole.status_code == 200, (url, whole.text[:300])
        pages = [client.get(url, params={"limit": 1, "offset": offset}, headers=admin["headers"]) for offset in (0, 1)]
        if shape == "array":
            items = whole.json()
            totals = [int(page.headers["X-Total-Count"]) for page in pages]
            firsts = [page.json() for page in pages]
        else:
            key = next(k for k, v in whole.json().items() if isinstance(v, list))
            items = whole.json()[key]
            totals = [page.json()["total"] for page in pages]
            firsts = [page.json()[key] for page in pages]
            assert [(p.json()["limit"], p.json()["offset"]) for p in pages] == [(1, 0), (1, 1)], url
        assert totals == [len(items)] * 2, (url, totals, len(items))
        assert firsts == [items[:1], items[1:2]], url
        checked.append((url, len(items)))
    paged = [url for url, n in checked if n >= 2]
    assert len(checked) >= 10 and len(paged) >= 6, checked  # the planted data makes real pages on most of them
    verdicts = client.get(f"{API}/projects/{project['id']}/verdicts", params={"limit": 2, "offset": 2},
                          headers=admin["headers"]).json()  # fmt: skip
    assert verdicts["total"] == 3 and len(verdicts["verdicts"]) == 1  # past the first page (no offset before)


# --------------------------------------------------------------------------------------------------------------
# the document
# --------------------------------------------------------------------------------------------------------------


def test_every_json_route_declares_its_response_model(schema):
    missing = []
    for path, method, operation in _operations(schema):
        for status, response in operation.get("responses", {}).items():
            content = response.get("content", {}).get("application/json")
            if status.startswith("2") and content is not None and not content.get("schema"):
                missing.append(f"{method.upper()} {path} {status}")
    assert not missing, f"JSON answers without a response model: {missing}"


def test_the_document_has_a_bearer_scheme_and_only_the_json_api(schema):
    schemes = schema["components"]["securitySchemes"]
    (name, scheme), = schemes.items()
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    pages = [path for path in schema["paths"] if not path.startswith((API + "/", "/healthz", "/metrics"))]
    assert not pages, f"HTML routes in the document: {pages}"
    unsecured = [f"{m} {p}" for p, m, op in _operations(schema)
                 if p.startswith(API) and op.get("security") != [{name: []}]]  # fmt: skip
    assert not unsecured, unsecured
    html = [f"{m} {p}" for p, m, op in _operations(schema)
            if any("text/html" in r.get("content", {}) for r in op["responses"].values())]  # fmt: skip
    assert not html, html


def test_docs_page_lets_a_token_be_sent(client):
    page = client.get("/docs")
    assert page.status_code == 200 and '"persistAuthorization": true' in page.text


# --------------------------------------------------------------------------------------------------------------
# the client's types
# --------------------------------------------------------------------------------------------------------------


def _json_types(annotation) -> set[str]:
    """The JSON types a Python annotation accepts."""
    if annotation is typing.Any:
        return {"string", "integer", "number", "boolean", "array", "object", "null"}
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return set().union(*(_json_types(arg) for arg in typing.get_args(annotation)))
    base = origin or annotation
    if base is type(None):
        return {"null"}
    if base is bool:
        return {"boolean"}
    if base is int:
        return {"integer"}
    if base is float:
        return {"number", "integer"}
    if base in (str, datetime):
        return {"string"}
    if base in (list, tuple):
        return {"array"}
    if base is dict or isinstance(base, type):
        return {"object"}
    raise AssertionError(f"no JSON type for {annotation!r}")


def _schema_types(schema: dict, node: dict) -> set[str]:
    """The JSON types a schema node allows (an empty schema allows anything)."""
    if "$ref" in node:
        return {"object"}
    if "anyOf" in node or "oneOf" in node:
        return set().union(*(_schema_types(schema, n) for n in node.get("anyOf", node.get("oneOf", []))))
    if "type" in node:
        return {node["type"]} if isinstance(node["type"], str) else set(node["type"])
    return {"string", "integer", "number", "boolean", "array", "object", "null"}


def test_the_client_types_match_the_server_schema(schema):
    from rankforge.types import SERVER_SCHEMAS

    components = schema["components"]["schemas"]
    problems = []
    for model, component in SERVER_SCHEMAS.items():
        server = components.get(component)
        if server is None:
            problems.append(f"{model.__name__}: no {component} in the document")
            continue
        properties, required = server.get("properties", {}), set(server.get("required", []))
        for name, field in model.model_fields.items():
            if name not in properties:
                problems.append(f"{model.__name__}.{name}: not a field of {component}")
                continue
            sent, accepted = _schema_types(schema, properties[name]), _json_types(field.annotation)
            if not sent <= accepted:
                problems.append(f"{model.__name__}.{name}: the server may send {sorted(sent - accepted)}")
            if field.is_required() and name not in required:
                problems.append(f"{model.__name__}.{name}: required by the client, optional in {component}")
    assert not problems, "\n".join(problems)
    assert {"ProjectOut", "TaskOut", "JudgmentOut", "DatasetOut", "JobOut", "ModelVersionOut",
            "Leaderboard"} <= set(SERVER_SCHEMAS.values())  # fmt: skip


# --------------------------------------------------------------------------------------------------------------
# one rule for characters the database refuses: refused in what people send, stripped from what models write
# --------------------------------------------------------------------------------------------------------------


def test_nul_is_refused_in_input_and_stripped_from_model_output(client, users):
    from app.limits import clean_model_output

    admin = users.create("alice", "admin")
    project = make_project(client, admin)
    refused = client.patch(f"{API}/projects/{project['id']}", json={"name": "a\x00b"}, headers=admin["headers"])
    assert refused.status_code == 422 and "name" in refused.text and "NUL" in refused.text
    output = {"text": "a\x00b\ud800c", "tests": ["x\x00"], "k\x00": 1, "n": 2}
    assert clean_model_output(output) == {"text": "abc", "tests": ["x"], "k": 1, "n": 2}
