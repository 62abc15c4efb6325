"""One definition of a pairs row (issue 25): the export's fast path (app.datasets.service.iter_pair_rows, a single
decisive vote made into its row directly) writes exactly the rows, bytes and files the general path
(iter_judged_comparisons -> JudgedComparison -> pair_rows) writes, on SQLite and PostgreSQL, for a project that mixes
single votes with everything the general path must handle: several votes that agree and disagree, ties, rankings of
three options, rater weights (a zero weight too), gold items, AI and imported votes, labelled raters, edits, a
continuation, categories, voided and unsafe judgments, and batch boundaries anywhere."""

from datetime import UTC, datetime, timedelta

import pytest

from app.datasets import service
from app.datasets.formats import export_rows, split_for_prompt, split_test_below
from app.datasets.snapshot_files import canonical_json_line
from app.models import Comparison, Completion, DatasetSnapshot, Judgment, Project, Prompt, User
from app.projects.schemas import ProjectCreate
from app.projects.service import create_project

START = datetime(2026, 11, 1, 9, 30, tzinfo=UTC)


def _seed(db) -> tuple[Project, dict[int, float]]:
    """A pairwise project of 40 comparisons (the last five of three options); returns it and rater weights."""
    raters = [User(username=f"fast{i}", password_hash="x", role="annotator",
                   labels={"locale": "fr"} if i == 3 else None) for i in range(6)]  # fmt: skip
    db.add_all(raters)
    project = create_project(db, ProjectCreate(name="Fast path", overlap=3, allow_ties=True), None)
    db.flush()
    for g in range(40):
        chat = g % 7 == 3
        prompt = Prompt(project_id=project.id, external_id=f"q{g}", is_chat=chat,
                        messages=[{"role": "user", "content": f"Question {g}: ünïcode \"quoted\"?"}],
                        meta={"category": "maths"} if g % 5 == 0 else {})  # fmt: skip
        db.add(prompt)
        db.flush()
        options = 3 if g >= 35 else 2
        completions = [Completion(prompt_id=prompt.id, text=f"answer {j} to {g}" + "\n" * (j == 1),
                                  model_name=f"model-{(g + j) % 4}" if g % 9 else None,
                                  meta={"continuation": [{"role": "assistant", "content": "tool says hi"}]}
                                  if g == 17 and j == 0 else {})
                       for j in range(options)]  # fmt: skip
        db.add_all(completions)
        db.flush()
        ids = [c.id for c in completions]
        comparison = Comparison(project_id=project.id, prompt_id=prompt.id, completion_ids=ids, is_gold=g % 8 == 0,
                                required=3)  # fmt: skip
        db.add(comparison)
        db.flush()
        for k, ranking in enumerate(_rankings(g, ids)):
            rater = raters[(g + 2 * k) % len(raters)]
            source = "ai" if g % 11 == 4 else "imported" if g % 13 == 6 else "human"
            judgment = Judgment(comparison_id=comparison.id, project_id=project.id, rater_id=rater.id,
                                ranking=ranking, flags=["unsafe"] if g == 21 else [], source=source,
                                guideline_version=1 + g % 3 if g % 4 else None,
                                created_at=START + timedelta(days=g % 6, hours=k),
                                voided_at=START if g == 30 and k == 0 else None)  # fmt: skip
            db.add(judgment)
            db.flush()
            if g in (9, 36) and k == 0:  # an edit of the best option, and a new answer
                db.add(Completion(prompt_id=prompt.id, text=f"edited {g}", source="human_edit",
                                  parent_id=ranking[0][0] if g == 9 else None, author_id=rater.id,
                                  judgment_id=judgment.id))  # fmt: skip
    db.flush()
    weights = {raters[0].id: 0.75, raters[1].id: 0.0, raters[5].id: 0.0, raters[4].id: 1 / 3}
    return project, weights


def _rankings(g: int, ids: list[int]) -> list[list[list[int]]]:
    a, b = ids[0], ids[1]
    if len(ids) == 3:
        c = ids[2]
        return [[[c], [a], [b]], [[a, c], [b]]] if g % 2 else [[[b], [c, a]]]
    if g % 6 == 1:
        return [[[a], [b]], [[b], [a]]]  # disagree: equal weights give no row
    if g % 6 == 2:
        return [[[a], [b]], [[a], [b]], [[b], [a]]]
    if g % 10 == 7:
        return [[[a, b]]]  # a tie: no pair
    return [[[b], [a]]] if g % 2 else [[[a], [b]]]


def _general(db, project, spec, weights) -> list[tuple[str, bytes]]:
    filters = spec.filters
    rows = export_rows(service.iter_judged_comparisons(db, project, spec, weights), "pairs", conversational=False,
                       min_agreement=filters.min_agreement, min_votes=filters.min_votes, seed=spec.split.seed,
                       test_fraction=spec.split.test_fraction)  # fmt: skip
    return [(split, canonical_json_line(row)) for split, row in rows]


def _fast(db, project, spec, weights, seen: list) -> list[tuple[str, bytes]]:
    rows = list(service.iter_pair_rows(db, project, spec, weights,
                                       on_comparison=lambda versions, latest: seen.append((sorted(versions), latest))))
    for _, row in rows:  # what lets the snapshot write them without sorting (SnapshotWriter.write(keys_sorted=True))
        assert list(row) == sorted(row) and not any(isinstance(value, dict) for value in row.values())
    return [(split, canonical_json_line(row)) for split, row in rows]


@pytest.mark.parametrize("batch", [1, 3, 10_000])
@pytest.mark.parametrize("spec", [
    {},
    {"split": {"test_fraction": 0.5, "seed": 7}},
    {"filters": {"min_agreement": 0.6, "sources": ["human", "ai", "imported"]}},
    {"filters": {"min_votes": 2, "exclude_unsafe": True, "include_edits": False}},
    {"filters": {"exclude_gold": True, "sources": ["ai", "human"]}},
])  # fmt: skip
def test_the_fast_path_writes_the_general_paths_rows_byte_for_byte(db, monkeypatch, batch, spec):
    project, weights = _seed(db)
    monkeypatch.setattr(service, "PAIR_BATCH_COMPARISONS", batch)
    monkeypatch.setattr(service, "BATCH_COMPARISONS", batch)
    built = []
    real = service.single_vote_pair_row
    monkeypatch.setattr(service, "single_vote_pair_row", lambda *a: built.append(r := real(*a)) or r)
    parsed = service.parse_spec({"format": "pairs", **spec})
    for rater_weights in (weights, {}):
        seen: list = []
        general = _general(db, project, parsed, rater_weights)
        assert general, "the spec keeps some rows"
        assert _fast(db, project, parsed, rater_weights, seen) == general
        assert len(seen) == len(list(service.iter_judged_comparisons(db, project, parsed, rater_weights)))
    assert any(isinstance(row, dict) for row in built)  # the fast path made rows itself
    assert any(row is None for row in built)  # a zero weight: no row (weights given)
    assert any(row is service.NOT_SIMPLE for row in built)  # and handed some single votes to pair_rows


def test_a_snapshot_is_the_same_files_with_and_without_the_fast_path(db, monkeypatch):
    project, _ = _seed(db)
    monkeypatch.setattr(service, "PAIR_BATCH_COMPARISONS", 4)
    manifests, files = [], []
    for fast in (True, False):
        monkeypatch.setattr(service, "PAIRS_FAST_PATH", fast)
        snapshot = service.request_snapshot(db, project, {"format": "pairs", "split": {"test_fraction": 0.3}}, None)
        db.flush()
        service.build_snapshot(db, snapshot, formats=("jsonl", "parquet"))
        snapshot = db.get(DatasetSnapshot, snapshot.id)
        directory = service.snapshot_dir(snapshot)
        files.append({name: (directory / name).read_bytes() for name in snapshot.files})
        manifests.append({k: v for k, v in snapshot.manifest.items() if k not in ("id", "created_at", "spec")})
    assert set(files[0]) >= {"train.jsonl", "test.jsonl", "train.parquet", "test.parquet"}
    assert files[0] == files[1]
    assert manifests[0] == manifests[1]
    assert manifests[0]["guideline_versions"] == [1, 2, 3] and len(manifests[0]["rows_per_day"]) >= 5


def test_an_export_stopped_part_way_stops_its_reader_before_the_session_goes_on(db, monkeypatch):
    """A cancelled job raises from the progress callback in the middle of the rows: the reader thread (PostgreSQL)
    has stopped by the time the error leaves iter_pair_rows, so the session is the caller's alone again."""
    import threading

    from sqlalchemy import text

    project, weights = _seed(db)
    monkeypatch.setattr(service, "PAIR_BATCH_COMPARISONS", 2)

    class Cancelled(Exception):
        pass

    def on_batch(done: int) -> None:
        if done >= 6:
            raise Cancelled

    rows = service.iter_pair_rows(db, project, service.parse_spec({"format": "pairs"}), weights, on_batch=on_batch)
    taken = []
    with pytest.raises(Cancelled):
        for row in rows:
            taken.append(row)
    assert taken and not any(t.name == "export-reader" for t in threading.enumerate())
    assert db.execute(text("SELECT count(*) FROM judgment")).scalar() > 40  # the connection answers
    # and a whole export after it gives every row
    assert len(_fast(db, project, service.parse_spec({"format": "pairs"}), weights, [])) > len(taken)


@pytest.mark.parametrize("test_fraction", [0.0, 1e-300, 0.1, 1 / 3, 0.5, 0.999999, 1.0])
def test_the_split_as_one_integer_comparison_is_the_split(test_fraction):
    """split_test_below's boundary, at and beside it: n / 2**64 < test_fraction exactly when n is below it (the
    quotient is a rounded float, so it is not test_fraction * 2**64: at 0.5 it is 2**63 - 512)."""
    below = split_test_below(test_fraction)
    for n in (below - 2, below - 1, below, below + 1, 0, 2**64 - 1):
        if 0 <= n < 2**64:
            assert (n / 2**64 < test_fraction) == (n < below), (test_fraction, n)
    assert split_test_below(0.5) == 2**63 - 512


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # the split is hashed by the database there
@pytest.mark.parametrize(("seed", "test_fraction"), [(0, 0.1), (7, 0.5), (3, 1 / 3), (1, 0.0), (2, 1.0), (5, 0.97)])
def test_the_databases_split_is_split_for_prompt(db, seed, test_fraction):
    """The PostgreSQL export decides a prompt's side in SQL (service._split_is_test); over 3,000 prompt ids, ids past
    32 bits included, it says "test" exactly where split_for_prompt does."""
    from sqlalchemy import func, select

    ids = list(range(1, 2001)) + [2**31 + 7 * k for k in range(500)] + [10**12 + 13 * k for k in range(500)]
    table = select(func.unnest(ids).label("unit")).subquery()
    rows = db.execute(select(table.c.unit, service._split_is_test(table.c.unit, seed, test_fraction))).all()
    assert len(rows) == len(ids)
    said = {prompt_id: "test" if is_test else "train" for prompt_id, is_test in rows}
    expected = {prompt_id: split_for_prompt(prompt_id, seed=seed, test_fraction=test_fraction) for prompt_id in ids}
    assert said == expected
    if 0 < test_fraction < 1:
        assert 0 < sum(side == "test" for side in said.values()) < len(ids)
