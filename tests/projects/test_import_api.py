"""POST /api/v1/projects/{id}/import: every format, bad input refused whole with line numbers, idempotent."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from app.config import get_settings
from app.models import Comparison, Completion, Judgment, Prompt
from tests.helpers import import_lines, make_project, native_lines

TABLES = (Prompt, Completion, Comparison, Judgment)


def row_counts(db) -> dict[str, int]:
    db.rollback()  # a fresh snapshot: SQLite WAL readers otherwise keep seeing the old one
    return {t.__tablename__: db.scalar(select(func.count()).select_from(t)) for t in TABLES}


def jsonl(*rows) -> bytes:
    return ("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n").encode()


def good_row(i: int, **extra) -> dict:
    return {"prompt": f"Question {i}?", "completions": [{"text": f"yes {i}"}, {"text": f"no {i}"}]} | extra


@pytest.fixture
def admin(users):
    return users.create("alice", "admin")


@pytest.fixture
def project(client, admin):
    return make_project(client, admin)


# ---------------------------------------------------------------------------------------------------
# bad input: 4xx, errors by line, nothing written

BAD_FILES = {
    "malformed JSON": (jsonl(good_row(1), '{"prompt": "x", "completions": [', good_row(3)), [2]),
    "missing field": (jsonl(good_row(1), {"prompt": "no completions here"}), [2]),
    "fewer than 2 completions": (
        jsonl({"prompt": "p", "completions": [{"text": "only one"}]}, good_row(2)),
        [1],
    ),
    "empty file": (b"", [0]),
    "blank lines only": (b"\n\n  \n", [0]),
    "not an object": (jsonl(good_row(1), "[1, 2]"), [2]),
    "bad ranking": (jsonl(good_row(1, ranking=[[0], [5]])), [1]),
}


@pytest.mark.parametrize("name", BAD_FILES)
def test_bad_file_is_refused_with_line_numbers_and_nothing_written(client, admin, project, db, name):
    data, bad_lines = BAD_FILES[name]
    before = row_counts(db)
    response = import_lines(client, admin, project["id"], data)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert [e["line"] for e in detail["errors"]] == bad_lines
    assert all(e["message"] for e in detail["errors"])
    assert row_counts(db) == before


def test_unknown_format_is_refused(client, admin, project, db):
    response = import_lines(client, admin, project["id"], native_lines(2), fmt="csv")
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail["errors"][0]["line"] == 0 and "csv" in detail["errors"][0]["message"]
    assert row_counts(db) == dict.fromkeys(row_counts(db), 0)


def test_many_bad_lines_report_the_first_hundred(client, admin, project, db):
    rows = []
    for i in range(250):
        rows.append(good_row(i) if i % 2 else {"prompt": f"lonely {i}", "completions": [{"text": "one"}]})
    response = import_lines(client, admin, project["id"], jsonl(*rows))
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail["total_errors"] == 125
    assert [e["line"] for e in detail["errors"]] == list(range(1, 200, 2))
    assert "2 completions" in detail["errors"][0]["message"]
    assert row_counts(db) == dict.fromkeys(row_counts(db), 0)


@pytest.mark.parametrize("how", ["body", "multipart"])
def test_oversize_file_is_refused(client, admin, project, db, monkeypatch, how):
    monkeypatch.setenv("RANKFORGE_MAX_IMPORT_BYTES", "300")
    get_settings.cache_clear()
    try:
        data = native_lines(20)
        assert len(data) > 300
        if how == "body":
            response = import_lines(client, admin, project["id"], data)
        else:
            response = client.post(f"/api/v1/projects/{project['id']}/import", params={"format": "native"},
                                   files={"file": ("big.jsonl", data)}, headers=admin["headers"])  # fmt: skip
        assert response.status_code == 413, response.text
        assert "300" in json.dumps(response.json()["detail"])
        assert row_counts(db) == dict.fromkeys(row_counts(db), 0)
        # Under the limit the same endpoint still works.
        assert import_lines(client, admin, project["id"], native_lines(1)).status_code == 200
    finally:
        monkeypatch.delenv("RANKFORGE_MAX_IMPORT_BYTES")
        get_settings.cache_clear()


def test_multipart_without_file_field_is_refused(client, admin, project, db):
    response = client.post(f"/api/v1/projects/{project['id']}/import", data={"other": "x"},
                           files={"wrong": ("a.jsonl", native_lines(1))}, headers=admin["headers"])  # fmt: skip
    assert response.status_code == 400
    assert row_counts(db)["prompt"] == 0


def test_annotator_and_engineer_cannot_import(client, users, project, db):
    for role in ("annotator", "engineer"):
        someone = users.create(f"someone-{role}", role)
        response = import_lines(client, someone, project["id"], native_lines(2))
        assert response.status_code == 403, role
    assert row_counts(db)["prompt"] == 0


def test_import_into_missing_project_is_404(client, admin):
    assert import_lines(client, admin, 999999, native_lines(1)).status_code == 404


# ---------------------------------------------------------------------------------------------------
# idempotence


@pytest.mark.parametrize("with_ids", [True, False], ids=["external_id", "no_external_id"])
def test_reimporting_the_same_file_creates_nothing(client, admin, project, db, with_ids):
    data = native_lines(5) if with_ids else jsonl(*(good_row(i) for i in range(5)))
    first = import_lines(client, admin, project["id"], data)
    assert first.status_code == 200 and first.json()["prompts_created"] == 5
    after_first = row_counts(db)
    again = import_lines(client, admin, project["id"], data)
    assert again.status_code == 200
    body = again.json()
    assert (body["prompts_created"], body["comparisons_created"], body["skipped_existing"]) == (0, 0, 5)
    assert row_counts(db) == after_first


def test_reimport_adds_only_new_rows(client, admin, project, db):
    import_lines(client, admin, project["id"], jsonl(*(good_row(i) for i in range(3))))
    response = import_lines(client, admin, project["id"], jsonl(*(good_row(i) for i in range(5))))
    assert (response.json()["prompts_created"], response.json()["skipped_existing"]) == (2, 3)
    assert row_counts(db)["comparison"] == 5


# ---------------------------------------------------------------------------------------------------
# the four formats


NATIVE = jsonl(
    {"prompt": "Capital of France?", "external_id": "n1", "ranking": [[1], [0, 2]],
     "completions": [{"text": "Lyon", "model": "m-a"}, {"text": "Paris", "model": "m-b"}, {"text": "Nice"}]},
    {"prompt": [{"role": "user", "content": "Hi"}], "completions": [{"text": "Hello!"}, {"text": "Go away."}]},
)  # fmt: skip
TRL = jsonl(
    {"prompt": "2+2?", "chosen": "4", "rejected": "5"},
    {"prompt": [{"role": "user", "content": "Name a color"}], "chosen": [{"role": "assistant", "content": "Blue"}],
     "rejected": [{"role": "assistant", "content": "Seven"}]},
    {"chosen": [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "Hi!"}],
     "rejected": [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "No."}]},
)  # fmt: skip
HH = jsonl(
    {"chosen": "\n\nHuman: How do I boil an egg?\n\nAssistant: Simmer it for nine minutes.",
     "rejected": "\n\nHuman: How do I boil an egg?\n\nAssistant: Eggs are overrated."},
    {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: Joke?\n\nAssistant: Why did the chicken cross?",
     "rejected": "\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: Joke?\n\nAssistant: No."},
)  # fmt: skip
OASST = jsonl(
    {"message_tree_id": "t1", "tree_state": "ready_for_export", "prompt": {
        "message_id": "q1", "role": "prompter", "text": "Explain rain.", "lang": "en", "replies": [
            {"message_id": "a1", "role": "assistant", "text": "Water condenses and falls.", "rank": 0},
            {"message_id": "a2", "role": "assistant", "text": "Clouds cry.", "rank": 1},
            {"message_id": "a3", "role": "assistant", "text": "Deleted one.", "rank": 2, "deleted": True},
        ]}},
)  # fmt: skip
FORMATS = {
    # format: (file, prompts, completions, imported judgments)
    "native": (NATIVE, 2, 5, 1),
    "trl": (TRL, 3, 6, 3),
    "hh-rlhf": (HH, 2, 4, 2),
    "oasst": (OASST, 1, 2, 1),
}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("how", ["body", "multipart"])
def test_each_format_imports_through_the_api(client, admin, project, db, fmt, how):
    data, prompts, completions, judgments = FORMATS[fmt]
    url = f"/api/v1/projects/{project['id']}/import"
    if how == "body":
        response = import_lines(client, admin, project["id"], data, fmt=fmt)
    else:
        response = client.post(url, params={"format": fmt}, files={"file": (f"data.{fmt}.jsonl", data)},
                               headers=admin["headers"])  # fmt: skip
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["format"] == fmt
    assert (body["prompts_created"], body["completions_created"], body["judgments_created"]) == (
        prompts, completions, judgments)  # fmt: skip
    assert row_counts(db) == {"prompt": prompts, "completion": completions, "comparison": prompts,
                              "judgment": judgments}  # fmt: skip
    sources = db.scalars(select(Judgment.source)).all()
    assert sources == ["imported"] * judgments
    assert db.scalar(select(func.count()).select_from(Judgment).where(Judgment.rater_id.is_not(None))) == 0
    # Imported preferences keep their order: the best completion heads the ranking.
    for judgment in db.scalars(select(Judgment)):
        best = db.get(Completion, judgment.ranking[0][0]).text
        assert best in {"Paris", "4", "Blue", "Hi!", "Simmer it for nine minutes.", "Why did the chicken cross?",
                        "Water condenses and falls."}  # fmt: skip
    again = import_lines(client, admin, project["id"], data, fmt=fmt)
    assert again.status_code == 200 and again.json()["skipped_existing"] == prompts
    assert row_counts(db)["judgment"] == judgments


def test_imported_judgments_take_no_rater_slot(client, admin, users, project, db):
    rater = users.create("rita", "annotator")
    import_lines(client, admin, project["id"], NATIVE)
    comparison = db.scalar(select(Comparison).join(Judgment, Judgment.comparison_id == Comparison.id))
    assert comparison.n_judgments == 0
    seen = set()
    while (
        task := client.get(f"/api/v1/projects/{project['id']}/tasks/next", headers=rater["headers"])
    ).status_code == 200:
        body = task.json()
        seen.add(body["comparison_id"])
        ids = [o["id"] for o in body["options"]]
        client.post(f"/api/v1/assignments/{body['assignment_id']}/judgment",
                    json={"ranking": [[i] for i in ids]}, headers=rater["headers"])  # fmt: skip
    assert comparison.id in seen


def test_gold_flag_makes_gold_items_not_judgments(client, admin, project, db):
    response = import_lines(client, admin, project["id"], NATIVE, gold="true")
    assert response.status_code == 200 and response.json()["judgments_created"] == 0
    gold = db.scalars(select(Comparison).where(Comparison.is_gold)).all()
    assert len(gold) == 1 and gold[0].gold_ranking
    assert row_counts(db)["judgment"] == 0
