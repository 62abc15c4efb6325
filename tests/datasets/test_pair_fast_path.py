"""One definition of a pairs row (issue 25): the export's fast path (app.datasets.service.iter_pair_rows, a single
decisive vote made into its row directly) writes exactly the rows, bytes and files the general path
(iter_judged_comparisons -> JudgedComparison -> pair_rows) writes, on SQLite and PostgreSQL, for a project that mixes
single votes with everything the general path must handle: several votes that agree and disagree, ties, rankings of
three options, rater weights (a zero weight too), gold items, AI and imported votes, labelled raters, edits, a
continuation, categories, voided and unsafe judgments, and batch boundaries anywhere."""

from datetime import UTC, datetime, timedelta

import pytest

from app.datasets import service
from app.datasets.export_parts import RowTally
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
    for _, row in rows:  # what lets the export write them without sorting (service.pair_chunks)
        assert list(row) == sorted(row) and not any(isinstance(value, dict) for value in row.values())
    return [(split, canonical_json_line(row)) for split, row in rows]


SPECS = [
    {},
    {"split": {"test_fraction": 0.5, "seed": 7}},
    {"filters": {"min_agreement": 0.6, "sources": ["human", "ai", "imported"]}},
    {"filters": {"min_votes": 2, "exclude_unsafe": True, "include_edits": False}},
    {"filters": {"exclude_gold": True, "exclude_unsafe": True, "sources": ["ai", "human"]}},
]  # fmt: skip
"""Export specs both byte tests run: splits, filters of votes and sources, unsafe flags, edits on and off."""


@pytest.mark.parametrize("batch", [2, 10_000])  # 2: a batch boundary inside every shape of the seed
@pytest.mark.parametrize("spec", SPECS)
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


# -- the database's lines (PostgreSQL: app.datasets.pair_lines, service.iter_pair_lines)

ODD_TEXTS = ["plain", "tab\there", "nul-free \x01\x1f\x7f controls", 'back\\slash "quotes" /slash', "ünï ∑ 😀 \u2028\u2029",
             "</script><b>html</b>", "", " " * 3, "line\r\nbreak"]  # fmt: skip


def _seed_odd(db) -> tuple[Project, dict[int, float]]:
    """A project of single votes in every shape the database's line must either write exactly or leave to Python:
    escapes, non-ASCII and empty texts, missing and odd categories and model names, rankings that are not two
    small integers, options of another prompt, JSON null and real continuations, AI votes with and without a
    confidence, labelled raters and odd weights, an unsafe flag on a voided vote, an edit."""
    from app.models import AIVerdict, Judge

    raters = [User(username=f"odd{i}", password_hash="x", role="annotator",
                   labels={"team": "b"} if i == 2 else None) for i in range(5)]  # fmt: skip
    db.add_all(raters)
    project = create_project(db, ProjectCreate(name="Odd lines", overlap=1), None)
    db.flush()
    judge = Judge(project_id=project.id, name="judge", method="reward", params={})
    db.add(judge)
    db.flush()
    categories = [None, "", "maths", 5, ["x"], "ünï\n", {"a": 1}]
    for g in range(42):
        text = ODD_TEXTS[g % len(ODD_TEXTS)]
        meta = {} if categories[g % 7] is None else {"category": categories[g % 7]}
        messages = [{"role": "user", "content": f"{text} {g}"}]
        prompt = Prompt(project_id=project.id, external_id=f"o{g}", is_chat=g % 9 == 4, messages=messages, meta=meta)
        db.add(prompt)
        db.flush()
        options = 3 if g % 10 == 9 else 2
        completions = [Completion(prompt_id=prompt.id, text=ODD_TEXTS[(g + j) % len(ODD_TEXTS)] + str(j),
                                  model_name=None if (g + j) % 4 == 0 else ODD_TEXTS[(g * j) % len(ODD_TEXTS)][:20],
                                  meta={"messages": None} if g == 11 and j == 1 else
                                  {"messages": [{"role": "assistant", "content": "hi"}]} if g == 13 and j == 0 else {})
                       for j in range(options)]  # fmt: skip
        db.add_all(completions)
        db.flush()
        ids = [c.id for c in completions]
        stored_ids = [float(i) for i in ids] if g == 15 else ids  # [1.0, 2.0]: equal ids, not their canonical text
        comparison = Comparison(project_id=project.id, prompt_id=prompt.id, completion_ids=stored_ids,
                                is_gold=g % 6 == 0)  # fmt: skip
        db.add(comparison)
        db.flush()
        a, b = ids[0], ids[1]
        ranking = [[b], [a]] if g % 2 else [[a], [b]]
        if g == 17:
            ranking = [[float(a)], [b]]  # a float id: pair_rows' business
        if g == 19:
            ranking = [[a], [b], []]
        if g % 10 == 9:
            ranking = [[ids[2]], [a]]  # two of three options
        source = "ai" if g % 8 == 3 else "human"
        judgment = Judgment(comparison_id=comparison.id, project_id=project.id, rater_id=raters[g % 5].id,
                            ranking=ranking, flags=["unsafe"] if g == 23 else [], source=source,
                            guideline_version=g % 3 or None,
                            created_at=START + timedelta(days=g % 4, minutes=g))  # fmt: skip
        db.add(judgment)
        db.flush()
        if source == "ai" and g % 16 == 3:
            db.add(AIVerdict(judgment_id=judgment.id, comparison_id=comparison.id, project_id=project.id,
                             judge_id=judge.id, method="reward", confidence=0.875))  # fmt: skip
        if g == 23:  # an unsafe flag on a voided second vote: the comparison leaves the export under exclude_unsafe
            db.add(Judgment(comparison_id=comparison.id, project_id=project.id, rater_id=raters[0].id,
                            ranking=ranking, flags=["unsafe"], source="human", voided_at=START))  # fmt: skip
        if g == 29:
            db.add(Completion(prompt_id=prompt.id, text="an edit", source="human_edit", parent_id=ranking[0][0],
                              author_id=raters[1].id, judgment_id=judgment.id))  # fmt: skip
    db.flush()
    return project, {raters[0].id: 0.8333333333333334, raters[1].id: 0.0, raters[3].id: 1e-7}


def _lines(db, project, spec, weights, chunks=None) -> tuple[dict[str, bytes], RowTally]:
    tally = RowTally()
    out: dict[str, list[bytes]] = {"train": [], "test": []}
    for chunk in (chunks or service.iter_pair_lines)(db, project, spec, weights, tally):
        for split, (data, count) in chunk.items():
            assert data.count(b"\n") == count
            out[split].append(data)
    return {split: b"".join(parts) for split, parts in out.items()}, tally


def _by_split(lines: list[tuple[str, bytes]]) -> dict[str, bytes]:
    return {split: b"".join(line for side, line in lines if side == split) for split in ("train", "test")}


def _general_tally(db, project, spec, weights) -> RowTally:
    tally = RowTally()
    for jc in service.iter_judged_comparisons(db, project, spec, weights):
        tally.on_comparison((v.guideline_version for v in jc.judgments if v.guideline_version),
                            max((v.created_at for v in jc.judgments if v.created_at), default=None))
        for _ in export_rows((jc,), "pairs", conversational=False, min_agreement=spec.filters.min_agreement,
                             min_votes=spec.filters.min_votes, seed=spec.split.seed,
                             test_fraction=spec.split.test_fraction):  # fmt: skip
            tally.count()
    return tally


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # the database writes lines there only
@pytest.mark.parametrize(("seed_project", "batch"), [(_seed, 3), (_seed_odd, 2), (_seed_odd, 10_000)])
@pytest.mark.parametrize("spec", SPECS)
def test_the_databases_lines_are_the_general_paths_lines(db, monkeypatch, seed_project, batch, spec):
    """iter_pair_lines (the database writes a single decisive vote's line) gives each split the general path's
    bytes, and the manifest's tally the same guideline versions and rows per day; some comparisons take the Python
    path (each odd shape of _seed_odd), most do not."""
    from app.datasets import pair_lines

    project, weights = seed_project(db)
    monkeypatch.setattr(service, "PAIR_BATCH_COMPARISONS", batch)
    monkeypatch.setattr(service, "BATCH_COMPARISONS", batch)
    assert pair_lines.usable(db.connection())
    python_path = []
    real = service._comparison_pair_rows
    monkeypatch.setattr(service, "_comparison_pair_rows", lambda stream, cid, *a: python_path.append(cid) or
                        real(stream, cid, *a))  # fmt: skip
    parsed = service.parse_spec({"format": "pairs", **spec})
    for rater_weights in (weights, {}):
        python_path.clear()
        general = _by_split(_general(db, project, parsed, rater_weights))
        assert general["train"] or parsed.filters.min_votes > 1, "the spec keeps some rows"  # _seed_odd: single votes
        lines, tally = _lines(db, project, parsed, rater_weights)
        assert lines == general
        expected = _general_tally(db, project, parsed, rater_weights)
        assert (tally.guideline_versions, tally.rows_per_day) == (expected.guideline_versions, expected.rows_per_day)
        comparisons = len(list(service.iter_judged_comparisons(db, project, parsed, rater_weights)))
        assert 0 < len(python_path) < comparisons


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_each_odd_shape_takes_the_python_path(db):
    """The database writes no line where single_vote_pair_row would not, or would write another: one comparison of
    each odd shape, checked by its own line column."""

    from app.datasets import pair_lines

    project, _ = _seed_odd(db)
    spec = service.parse_spec({"format": "pairs", "filters": {"exclude_unsafe": True}})
    line = pair_lines.pair_line_column(exclude_unsafe=True, edits=True)
    rows = db.execute(service._judgment_query(project, spec, Prompt.external_id, line, with_prompt=True)).all()
    written = {external_id for external_id, text in rows if text is not None}
    for g, why in [(4, "a chat prompt"), (11, "a JSON null continuation"),
                   (13, "a continuation"), (15, "ids stored as 1.0, 2.0"), (17, "a float id"), (19, "three groups"),
                   (9, "three options"), (23, "unsafe"), (29, "an edit"), (3, "an AI vote's confidence")]:  # fmt: skip
        assert f"o{g}" not in written, why
    for g in (0, 1, 2, 5, 6, 7, 8, 10, 12, 14, 16):
        assert f"o{g}" in written, g


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_project_of_several_votes_a_comparison_is_exported_without_lines(db, monkeypatch):
    """pair_chunks asks the database for lines only where most comparisons have one vote (the others all take the
    Python path): a project of pairs judged twice each is written by iter_pair_rows, the same bytes."""
    raters = [User(username=f"twice{i}", password_hash="x", role="annotator") for i in range(2)]
    db.add_all(raters)
    project = create_project(db, ProjectCreate(name="Twice", overlap=2), None)
    db.flush()
    for g in range(12):
        prompt = Prompt(project_id=project.id, external_id=f"t{g}", messages=[{"role": "user", "content": f"q{g}"}])
        db.add(prompt)
        db.flush()
        completions = [Completion(prompt_id=prompt.id, text=f"a{j}") for j in range(2)]
        db.add_all(completions)
        db.flush()
        ids = [c.id for c in completions]
        comparison = Comparison(project_id=project.id, prompt_id=prompt.id, completion_ids=ids, n_judgments=2)
        db.add(comparison)
        db.flush()
        for k, rater in enumerate(raters):
            db.add(Judgment(comparison_id=comparison.id, project_id=project.id, rater_id=rater.id,
                            ranking=[[ids[0]], [ids[1]]] if k == 0 or g % 3 else [[ids[1]], [ids[0]]],
                            created_at=START))  # fmt: skip
    db.flush()
    spec = service.parse_spec({"format": "pairs"})
    assert not service._mostly_single_votes(db, project)
    monkeypatch.setattr(service, "iter_pair_lines", lambda *a, **k: pytest.fail("lines for a project of pairs of votes"))
    general = _by_split(_general(db, project, spec, {}))
    assert general["train"] and _lines(db, project, spec, {}, service.pair_chunks)[0] == general
    odd, _ = _seed_odd(db)
    assert service._mostly_single_votes(db, odd)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_postgresqls_json_strings_are_orjsons(db):
    """The line's escaping (`to_json(text)`) writes every ASCII character, and non-ASCII ones, as orjson does."""
    import orjson
    from sqlalchemy import text

    samples = [chr(c) for c in range(1, 0x80)] + ["é", "\u2028", "\u2029", "\ufeff", "\U0001f600", "\u00a0", "\uffff"]
    samples.append("".join(samples))
    got = db.execute(text("SELECT to_json(s)::text FROM unnest(CAST(:samples AS text[])) AS s"),
                     {"samples": samples}).scalars().all()  # fmt: skip
    assert got == [orjson.dumps(sample).decode() for sample in samples]
