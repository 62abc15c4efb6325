"""Deeply nested JSON (issue 21, point 6): an import line nested deeper than the fixed limit is refused with its
line number and the whole file with it; no JSON a client sends, however deep, gives a 500."""

from __future__ import annotations

import json

import pytest

from app.imports.parsers import MAX_JSON_DEPTH
from tests.helpers import import_lines, make_project, native_lines

DEEP = 10_000


@pytest.fixture
def admin(users):
    return users.create("root", "admin")


def test_a_line_nested_ten_thousand_deep_refuses_the_import_with_its_line(client, admin):
    project = make_project(client, admin)
    deep_line = json.dumps({"prompt": "Q?", "completions": [{"text": "a"}, {"text": "b"}]})[:-1] + \
        ', "metadata": {"x": ' + "[" * DEEP + "]" * DEEP + "}}"
    data = native_lines(2) + deep_line.encode() + b"\n" + native_lines(1, prefix="z")
    response = import_lines(client, admin, project["id"], data)
    assert response.status_code == 422, response.text
    errors = response.json()["detail"]["errors"]
    assert [e["line"] for e in errors] == [3]
    assert "nested" in errors[0]["message"] and str(MAX_JSON_DEPTH) in errors[0]["message"]
    stats = client.get(f"/api/v1/projects/{project['id']}/stats", headers=admin["headers"]).json()
    assert stats["comparisons"]["total"] == 0  # the whole file refused


def test_nesting_within_the_limit_and_brackets_inside_strings_are_fine(client, admin):
    project = make_project(client, admin)
    nested = "[" * (MAX_JSON_DEPTH - 4) + "]" * (MAX_JSON_DEPTH - 4)
    row = {"prompt": "[" * DEEP, "completions": [{"text": "{" * DEEP}, {"text": "b"}],
           "metadata": {"x": json.loads(nested)}}  # fmt: skip
    response = import_lines(client, admin, project["id"], json.dumps(row).encode())
    assert response.status_code == 200, response.text
    assert response.json()["comparisons_created"] == 1


def test_deep_json_bodies_elsewhere_are_4xx_not_500(client, admin):
    body = "[" * DEEP + "]" * DEEP
    for path in ("/api/v1/projects", "/api/v1/jobs", "/api/v1/webhooks"):
        response = client.post(path, content=body, headers=admin["headers"] | {"content-type": "application/json"})
        assert 400 <= response.status_code < 500, (path, response.status_code)
    nested_object = '{"a":' * DEEP + "1" + "}" * DEEP
    response = client.post("/api/v1/projects", content='{"name": "x", "description": ' + nested_object + "}",
                           headers=admin["headers"] | {"content-type": "application/json"})  # fmt: skip
    assert 400 <= response.status_code < 500


def test_a_deep_ranking_on_the_rating_page_is_a_clear_4xx(client, admin, users):
    rater = users.create("ann", "annotator")
    project = make_project(client, admin)
    assert import_lines(client, admin, project["id"], native_lines(1)).status_code == 200
    task = client.get(f"/api/v1/projects/{project['id']}/tasks/next", headers=rater["headers"])
    assert task.status_code == 200, task.text
    response = client.post(f"/projects/{project['id']}/annotate/{task.json()['assignment_id']}",
                           data={"ranking": "[" * DEEP + "]" * DEEP},
                           headers=rater["headers"] | {"hx-request": "true"})  # fmt: skip
    assert response.status_code == 422 and "ranking" in response.text
