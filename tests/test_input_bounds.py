"""No input makes the server answer 500 (issue 10, point 2): the cases a fuzz run and a hand search found.

Every one must come back as a 4xx naming what is wrong, and write nothing. Run on SQLite and PostgreSQL;
most of these were 500s on PostgreSQL only (integer out of range, NUL in text, varchar overflow).
"""

from __future__ import annotations

import json
import re

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.models import Comparison, Completion, Judgment, Prompt
from tests.helpers import import_lines, make_project

BIG = 2**31  # one past PostgreSQL's int4
HUGE = 2**40


@pytest.fixture
def api(app):
    """A client that reports server errors as 500 responses instead of raising them."""
    with TestClient(app, base_url="http://testserver", raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def admin(users):
    return users.create("alice", "admin")


@pytest.fixture
def project(api, admin):
    return make_project(api, admin, attributes=[{"name": "helpful", "min": 1, "max": 7}])


def row(i: int = 1, **extra) -> dict:
    return {"prompt": f"Question {i}?", "completions": [{"text": f"yes {i}"}, {"text": f"no {i}"}]} | extra


def jsonl(*rows) -> bytes:
    return ("\n".join(json.dumps(r) for r in rows) + "\n").encode()


def counts(db) -> tuple[int, ...]:
    db.rollback()
    return tuple(db.scalar(select(func.count()).select_from(t)) for t in (Prompt, Completion, Comparison, Judgment))


def assert_4xx(response, *, status=422, mentions: str | None = None):
    assert response.status_code == status, (response.status_code, response.text[:500])
    if mentions:
        assert mentions in response.text, response.text[:500]


# ---------------------------------------------------------------------------------------------------
# integers out of range and negative limits


@pytest.mark.parametrize(
    "path",
    [
        f"/api/v1/jobs/{BIG}",
        f"/api/v1/jobs/{BIG}/metrics",
        f"/api/v1/datasets/{BIG}",
        f"/api/v1/models/{BIG}",
        f"/api/v1/users/{BIG}",
        f"/api/v1/projects/{BIG}",
        f"/api/v1/projects/{BIG}/leaderboard",
        f"/api/v1/jobs?project_id={BIG}",
        f"/api/v1/datasets?project_id={BIG}",
        f"/api/v1/models?project_id={BIG}",
        "/api/v1/jobs?limit=-1",
        f"/api/v1/jobs?offset={2**63}",
        f"/api/v1/datasets?offset={2**63}",
        f"/api/v1/projects?offset={2**70}",
        f"/api/v1/jobs?limit={HUGE}",
    ],
)
def test_out_of_range_integers_in_paths_and_queries_are_not_500(api, admin, path):
    response = api.get(path, headers=admin["headers"])
    assert response.status_code in (404, 422), (response.status_code, response.text[:300])


def test_negative_limit_is_refused_and_a_big_one_capped(api, admin):
    assert_4xx(api.get("/api/v1/jobs?limit=-1", headers=admin["headers"]), mentions="limit")


@pytest.mark.parametrize("ref", ["²", "٣", "1²", "a%00b", "x" * 300])
def test_project_refs_are_parsed_strictly(api, admin, ref):
    response = api.get(f"/api/v1/projects/{ref}", headers=admin["headers"])
    assert response.status_code in (404, 422), (response.status_code, response.text[:300])


def test_daily_cap_above_int4_is_refused(api, admin, project):
    assert_4xx(api.patch(f"/api/v1/projects/{project['id']}", json={"daily_cap": 3_000_000_000},
                         headers=admin["headers"]), mentions="daily_cap")  # fmt: skip
    assert_4xx(api.post("/api/v1/projects", json={"name": "x", "daily_cap": 3_000_000_000},
                        headers=admin["headers"]), mentions="daily_cap")  # fmt: skip


def test_job_ids_in_bodies_are_bounded(api, admin, project):
    body = {"kind": "reward", "project_id": project["id"], "dataset_id": HUGE}
    assert_4xx(api.post("/api/v1/jobs", json=body, headers=admin["headers"]), mentions="dataset_id")
    body = {"kind": "reward", "project_id": HUGE}
    response = api.post("/api/v1/jobs", json=body, headers=admin["headers"])
    assert response.status_code in (404, 422), response.text


def claim(api, admin, project) -> dict:
    assert import_lines(api, admin, project["id"], jsonl(row(1))).status_code == 200
    task = api.get(f"/api/v1/projects/{project['id']}/tasks/next", headers=admin["headers"])
    assert task.status_code == 200, task.text
    return task.json()


def test_time_spent_above_int4_is_refused(api, admin, project):
    task = claim(api, admin, project)
    ranking = [[o["id"]] for o in task["options"]]
    response = api.post(f"/api/v1/assignments/{task['assignment_id']}/judgment",
                        json={"ranking": ranking, "time_spent_ms": HUGE}, headers=admin["headers"])  # fmt: skip
    assert_4xx(response, mentions="time_spent_ms")


def test_assignment_ids_are_bounded(api, admin):
    response = api.post(f"/api/v1/assignments/{BIG}/judgment", json={"ranking": [[1], [2]]}, headers=admin["headers"])
    assert response.status_code in (404, 422), response.text


# ---------------------------------------------------------------------------------------------------
# judgments: NUL in the rationale, attribute scores keyed by a non-option


def test_nul_in_rationale_is_refused(api, admin, project, db):
    task = claim(api, admin, project)
    ranking = [[o["id"]] for o in task["options"]]
    response = api.post(f"/api/v1/assignments/{task['assignment_id']}/judgment",
                        json={"ranking": ranking, "rationale": "because\x00"}, headers=admin["headers"])  # fmt: skip
    assert_4xx(response, mentions="rationale")
    assert counts(db)[3] == 0


@pytest.mark.parametrize("key", ["not-an-option", "²", "99999999999999999999"])
def test_attribute_score_keyed_by_a_non_option_is_refused(api, admin, project, key):
    task = claim(api, admin, project)
    ranking = [[o["id"]] for o in task["options"]]
    body = {"ranking": ranking, "attributes": {"helpful": {key: 3}}}
    response = api.post(f"/api/v1/assignments/{task['assignment_id']}/judgment", json=body, headers=admin["headers"])
    assert_4xx(response, mentions="helpful")


def test_nul_in_skip_reason_is_refused(api, admin, project):
    task = claim(api, admin, project)
    response = api.post(f"/api/v1/assignments/{task['assignment_id']}/skip", json={"reason": "\x00"},
                        headers=admin["headers"])  # fmt: skip
    assert_4xx(response, mentions="reason")


# ---------------------------------------------------------------------------------------------------
# imports: every problem is a 422 naming the line and the field, nothing written

BAD_IMPORTS = {
    "NUL in a completion": (row(completions=[{"text": "a\x00"}, {"text": "b"}]), "completions[0].text"),
    "NUL in the prompt": (row(prompt="what\x00"), "prompt"),
    "NUL in metadata": (row(metadata={"note": "x\x00"}), "metadata"),
    "NUL in a metadata key": (row(metadata={"k\x00": 1}), "metadata"),
    "NUL in completion metadata": (row(completions=[{"text": "a", "metadata": {"x": "\x00"}}, {"text": "b"}]),
                                   "completions[0].metadata"),
    "lone surrogate": (row(prompt="x\ud800"), "prompt"),
    "priority not an integer": (row(metadata={"priority": "high"}), "priority"),
    "priority out of range": (row(metadata={"priority": HUGE}), "priority"),
    "batch too long": (row(metadata={"batch": "b" * 101}), "batch"),
    "batch not a string": (row(metadata={"batch": {"a": 1}}), "batch"),
    "external_id too long": (row(external_id="e" * 201), "external_id"),
    "model name too long": (row(completions=[{"text": "a", "model": "m" * 201}, {"text": "b"}]),
                            "completions[0].model"),
}  # fmt: skip


@pytest.mark.parametrize("name", BAD_IMPORTS)
def test_bad_import_values_are_422_with_line_and_field(api, admin, project, db, name):
    bad, field = BAD_IMPORTS[name]
    before = counts(db)
    data = json.dumps(row(1)) + "\n" + json.dumps(bad, ensure_ascii=True) + "\n"
    response = import_lines(api, admin, project["id"], data.encode())
    assert response.status_code == 422, (response.status_code, response.text[:500])
    errors = response.json()["detail"]["errors"]
    assert [e["line"] for e in errors] == [2], errors
    assert field in errors[0]["message"], errors
    assert counts(db) == before


def test_trl_and_oasst_ids_and_texts_are_checked_too(api, admin, project):
    trl = {"prompt": "p", "chosen": "a\x00", "rejected": "b"}
    response = import_lines(api, admin, project["id"], jsonl(trl), fmt="trl")
    assert_4xx(response, mentions="chosen")
    tree = {"prompt": {"message_id": "m" * 201, "role": "prompter", "text": "q", "replies": [
        {"message_id": "r1", "role": "assistant", "text": "a", "rank": 0},
        {"message_id": "r2", "role": "assistant", "text": "b", "rank": 1}]}}  # fmt: skip
    assert_4xx(import_lines(api, admin, project["id"], jsonl(tree), fmt="oasst"), mentions="external_id")


# ---------------------------------------------------------------------------------------------------
# strings checked against the columns' lengths, NUL refused, in the JSON API


@pytest.mark.parametrize(
    "body, field",
    [
        ({"name": "n\x00"}, "name"),
        ({"name": "ok", "guidelines": "g\x00"}, "guidelines"),
        ({"name": "ok", "description": "\x00"}, "description"),
        ({"name": "ok", "attributes": [{"name": "helpful", "label": "\x00"}]}, "label"),
    ],
)
def test_project_text_with_nul_is_refused(api, admin, body, field):
    assert_4xx(api.post("/api/v1/projects", json=body, headers=admin["headers"]), mentions=field)


def test_model_names_and_paths_are_length_checked(api, admin, tmp_path):
    for body, field in [({"name": "m" * 201, "path": str(tmp_path), "kind": "policy"}, "name"),
                        ({"name": "m", "path": "/" + "p" * 600, "kind": "policy"}, "path"),
                        ({"name": "m\x00", "path": str(tmp_path), "kind": "policy"}, "name")]:  # fmt: skip
        assert_4xx(api.post("/api/v1/models", json=body, headers=admin["headers"]), mentions=field)
    assert api.get("/api/v1/models?kind=%00", headers=admin["headers"]).status_code in (200, 422)


def test_batch_priority_and_review_inputs_are_bounded(api, admin, project):
    pid = project["id"]
    for body, field in [({"batch": "x\x00", "priority": 1}, "batch"), ({"batch": None, "priority": HUGE}, "priority")]:
        assert_4xx(api.post(f"/api/v1/projects/{pid}/batches/priority", json=body, headers=admin["headers"]),
                   mentions=field)  # fmt: skip
    response = api.post(f"/api/v1/judgments/{BIG}/review", json={"resolution": "confirmed"}, headers=admin["headers"])
    assert response.status_code in (404, 422)
    response = api.post("/api/v1/judgments/1/review", json={"resolution": "confirmed", "note": "\x00"},
                        headers=admin["headers"])  # fmt: skip
    assert_4xx(response, mentions="note")


def test_user_api_inputs_are_checked(api, admin):
    response = api.post("/api/v1/users", json={"username": "u" * 65, "role": "annotator", "password": "long-enough"},
                        headers=admin["headers"])  # fmt: skip
    assert response.status_code == 422
    response = api.post("/api/v1/users", json={"username": "bob", "role": "annotator", "password": "x\x00" * 8},
                        headers=admin["headers"])  # fmt: skip
    assert response.status_code in (201, 422)


def test_dataset_request_values_are_bounded(api, admin, project):
    body = {"format": "pairs", "split": {"seed": HUGE * HUGE}, "filters": {"include_raters": ["a\x00"]}}
    response = api.post(f"/api/v1/projects/{project['id']}/datasets", json=body, headers=admin["headers"])
    assert response.status_code == 422, response.text


# ---------------------------------------------------------------------------------------------------
# forms: login, members, settings


CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


def test_login_with_an_overlong_or_nul_username_is_a_plain_failure(api, users):
    page = api.get("/login")
    csrf = CSRF_FIELD.search(page.text).group(1)
    for username in ("u" * 65, "u" * 10_000, "a\x00b"):
        response = api.post("/login", data={"username": username, "password": "whatever-pass", "csrf_token": csrf},
                            follow_redirects=False)  # fmt: skip
        assert response.status_code == 401, (username[:10], response.status_code, response.text[:300])


def test_members_form_with_an_unknown_user_is_refused(api, admin, project, db):
    response = api.post(f"/projects/{project['id']}/members", data={"user_id": [str(BIG), "999999"]},
                        headers=admin["headers"], follow_redirects=False)  # fmt: skip
    assert response.status_code == 422, (response.status_code, response.text[:300])


def test_settings_form_values_out_of_range_are_refused(api, admin, project):
    form = {"name": "ok", "overlap": "1", "max_overlap": "1", "daily_cap": str(3_000_000_000), "lease_seconds": "600"}
    response = api.post(f"/projects/{project['id']}/settings", data=form, headers=admin["headers"],
                        follow_redirects=False)  # fmt: skip
    assert response.status_code == 422, (response.status_code, response.text[:300])
    form |= {"daily_cap": "", "guidelines": "g\x00"}
    response = api.post(f"/projects/{project['id']}/settings", data=form, headers=admin["headers"],
                        follow_redirects=False)  # fmt: skip
    assert response.status_code == 422, (response.status_code, response.text[:300])


def test_rating_form_with_odd_values_is_not_500(api, admin, project):
    task = claim(api, admin, project)
    ranking = json.dumps([[o["id"]] for o in task["options"]])
    option = task["options"][0]["id"]
    for form in ({"ranking": ranking, f"attr__helpful__{option}": "²"},
                 {"ranking": ranking, "attr__helpful__x": "3"},
                 {"ranking": ranking, "time_spent_ms": str(HUGE)},
                 {"ranking": '[["a"]]'},
                 {"ranking": ranking, "rationale": "\x00"}):  # fmt: skip
        response = api.post(f"/projects/{project['id']}/annotate/{task['assignment_id']}", data=form,
                            headers=admin["headers"])  # fmt: skip
        assert response.status_code < 500, (form, response.status_code, response.text[:300])
    response = api.post(f"/projects/{project['id']}/annotate/{BIG}", data={"ranking": ranking}, headers=admin["headers"])
    assert response.status_code < 500


def test_a_form_value_the_database_refuses_is_422_not_500(api, admin, project):
    """The safety net behind the schemas (app.limits.register): a form field no schema checked."""
    url = f"/projects/{project['id']}/batch-priority"
    response = api.post(url, data={"batch": "x\x00", "priority": "1"}, headers=admin["headers"], follow_redirects=False)
    assert response.status_code in (404, 422), (response.status_code, response.text[:300])
    response = api.post(url, data={"batch": "b", "priority": str(HUGE)}, headers=admin["headers"], follow_redirects=False)
    assert_4xx(response, mentions="priority")
    response = api.post(url, data={"batch": "x\x00", "priority": "1"}, headers=admin["headers"] | {"Accept": "text/html"},
                        follow_redirects=False)  # fmt: skip
    assert response.status_code in (404, 422)
    if response.status_code == 422:
        assert "cannot be stored" in response.text


def test_pay_rate_form_with_an_unknown_unit_is_refused(api, admin, project):
    response = api.post(f"/projects/{project['id']}/pay-rate", data={"pay_unit": "fortnight", "rate": "1"},
                        headers=admin["headers"], follow_redirects=False)  # fmt: skip
    assert_4xx(response, mentions="pay_unit")
