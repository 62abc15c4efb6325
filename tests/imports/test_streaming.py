"""Issue 25: an import is read line by line and written in batches (app.imports.service.import_stream), and a bad
file is still refused whole, by line number, with nothing written."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from app.imports.parsers import ImportReader
from app.imports.service import import_stream
from app.models import Comparison, Completion, Judgment, Prompt
from tests.helpers import import_lines, make_project, native_lines

BATCH = 500
LINES = BATCH * 2 + 17  # three batches, the last one partial


@pytest.fixture(autouse=True)
def small_batches(monkeypatch):
    """Batches of 500 instead of the service's thousands: the same paths, with files a few thousand lines long."""
    monkeypatch.setattr("app.imports.service.BATCH", BATCH)


class CountedLines:
    """A file's lines handed out one at a time, counting how many were asked for; it refuses to be asked for its
    length (materialising it with list() or len() would fail)."""

    def __init__(self, data: bytes, on_line=None):
        self.lines = data.split(b"\n")
        self.read = 0
        self.on_line = on_line

    def __iter__(self):
        for line in self.lines:
            self.read += 1
            if self.on_line is not None:
                self.on_line(self.read)
            yield line

    def __len__(self):
        raise AssertionError("the import asked for the whole file")


def count(db, model) -> int:
    return db.scalar(select(func.count()).select_from(model))


def test_the_reader_yields_a_record_before_it_has_read_past_its_line():
    lines = CountedLines(native_lines(50))
    records = iter(ImportReader(lines, "native"))
    first = next(records)
    assert (first.external_id, lines.read) == ("p0", 1)
    assert next(records).external_id == "p1" and lines.read == 2


def test_a_file_larger_than_a_batch_is_written_while_it_is_read_fully_and_once(db):
    from app.projects.schemas import ProjectCreate
    from app.projects.service import create_project

    project = create_project(db, ProjectCreate(name="streamed"), actor=None)
    stored_when_read: dict[int, int] = {}

    def look(line: int) -> None:  # the prompts already in the transaction when a line is handed out
        if line in (BATCH, BATCH + 2, LINES):
            stored_when_read[line] = count(db, Prompt)

    result = import_stream(db, project, CountedLines(native_lines(LINES, ranking=True), look), "native", None)
    assert (result.records, result.prompts_created, result.skipped_existing) == (LINES, LINES, 0)
    # the first batch was in the database before the file's later lines were read
    assert stored_when_read == {BATCH: 0, BATCH + 2: BATCH, LINES: 2 * BATCH}
    assert (count(db, Prompt), count(db, Completion), count(db, Comparison), count(db, Judgment)) == (
        LINES, 2 * LINES, LINES, LINES)  # fmt: skip
    assert db.scalars(select(Prompt.external_id).order_by(Prompt.id)).all() == [f"p{i}" for i in range(LINES)]
    # each comparison holds its own prompt's two completions, and its judgment ranks them
    prompt_of = dict(db.execute(select(Completion.id, Completion.prompt_id)).all())
    for prompt_id, completion_ids in db.execute(select(Comparison.prompt_id, Comparison.completion_ids)):
        assert len(completion_ids) == 2 and {prompt_of[c] for c in completion_ids} == {prompt_id}
    rankings = db.execute(select(Judgment.ranking, Comparison.completion_ids).join(Comparison)).all()
    assert all(ranking == [[ids[0]], [ids[1]]] for ranking, ids in rankings)

    again = import_stream(db, project, CountedLines(native_lines(LINES, ranking=True)), "native", None)
    assert (again.prompts_created, again.skipped_existing) == (0, LINES)  # exactly once
    assert count(db, Prompt) == LINES


def test_the_same_content_twice_in_one_batch_is_stored_once(db):
    from app.projects.schemas import ProjectCreate
    from app.projects.service import create_project

    project = create_project(db, ProjectCreate(name="dupes"), actor=None)
    row = {"prompt": "Same?", "completions": [{"text": "a"}, {"text": "b"}]}
    data = "\n".join(json.dumps(row) for _ in range(3)).encode()
    result = import_stream(db, project, CountedLines(data), "native", None)
    assert (result.prompts_created, result.skipped_existing) == (1, 2)


def _with_bad_lines(lines: int, bad: dict[int, str]) -> bytes:
    rows = native_lines(lines).split(b"\n")
    for line, text in bad.items():
        rows[line - 1] = text.encode()
    return b"\n".join(rows)


@pytest.mark.parametrize("multipart", [False, True])
def test_a_bad_line_deep_in_a_long_file_is_named_and_nothing_is_written(users, client, db, multipart):
    admin = users.create("alice", "admin")
    project = make_project(client, admin)
    bad_line = 2_400  # after four whole batches were written (then rolled back)
    data = _with_bad_lines(3_000, {bad_line: '{"prompt": "x", "completions": [{"text": "a"}]'})
    if multipart:
        response = client.post(f"/api/v1/projects/{project['id']}/import", headers=admin["headers"],
                               files={"file": ("big.jsonl", data, "application/x-ndjson")})  # fmt: skip
    else:
        response = import_lines(client, admin, project["id"], data)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert [error["line"] for error in detail["errors"]] == [bad_line]
    assert "malformed JSON" in detail["errors"][0]["message"]
    db.rollback()
    assert (count(db, Prompt), count(db, Completion), count(db, Comparison)) == (0, 0, 0)

    good = import_lines(client, admin, project["id"], native_lines(LINES))
    assert good.status_code == 200, good.text
    assert good.json()["prompts_created"] == LINES


def test_many_bad_lines_report_the_first_ones_and_count_all(users, client, db):
    admin = users.create("alice", "admin")
    project = make_project(client, admin)
    bad = {line: "[]" for line in range(10, 2000, 13)}  # 154 lines that are not objects
    response = import_lines(client, admin, project["id"], _with_bad_lines(2_000, bad))
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    reported = [error["line"] for error in detail["errors"]]
    assert reported == sorted(bad)[: len(reported)] and 0 < len(reported) < len(bad)
    assert detail["total_errors"] == len(bad)
    db.rollback()
    assert count(db, Prompt) == 0


def test_an_upload_over_the_limit_is_refused_before_anything_is_written(users, client, db, monkeypatch):
    from app.config import get_settings

    admin = users.create("alice", "admin")
    project = make_project(client, admin)
    data = native_lines(200)
    monkeypatch.setenv("RANKFORGE_MAX_IMPORT_BYTES", str(len(data) - 1))
    get_settings.cache_clear()
    try:
        response = import_lines(client, admin, project["id"], data)
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    assert response.status_code == 413, response.text
    db.rollback()
    assert count(db, Prompt) == 0
