"""A pairs export in several processes (app.datasets.export_parts, issue 25): the same files as one process, byte for
byte; a child that fails or dies fails the export and leaves nothing visible; a cancelled export ends its children."""

import multiprocessing
from datetime import UTC, datetime, timedelta, timezone

import pytest

from app.datasets import service
from app.datasets.export_parts import PartFailed, PartRunner, RowTally, plan_parts
from app.models import DatasetSnapshot
from tests.datasets.test_pair_fast_path import _seed

on_postgresql = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # parts: PostgreSQL only

SPEC = {"format": "pairs", "split": {"test_fraction": 0.3}}


def _parallel(monkeypatch, processes: int) -> None:
    monkeypatch.setattr(service, "PARALLEL_MIN_COMPARISONS", 0)
    monkeypatch.setattr(service, "export_processes", lambda: processes)


def _build(db, project, spec=SPEC, progress=None) -> DatasetSnapshot:
    snapshot = service.request_snapshot(db, project, spec, None)
    db.commit()  # the children read through connections of their own
    service.build_snapshot(db, snapshot, formats=("jsonl", "parquet"), progress=progress)
    return db.get(DatasetSnapshot, snapshot.id)


def _files(snapshot) -> dict[str, bytes]:
    directory = service.snapshot_dir(snapshot)
    return {name: (directory / name).read_bytes() for name in snapshot.files}


@on_postgresql
def test_three_processes_write_what_one_writes(db, monkeypatch):
    project, _ = _seed(db)
    db.commit()
    monkeypatch.setattr(service, "PAIR_BATCH_COMPARISONS", 4)  # this process's part: several batches too
    results = []
    for processes in (1, 3):
        _parallel(monkeypatch, processes)
        calls = []
        snapshot = _build(db, project, progress=lambda share, text, calls=calls: calls.append(share))
        manifest = {k: v for k, v in snapshot.manifest.items() if k not in ("id", "created_at", "spec")}
        results.append((_files(snapshot), manifest, snapshot.rows_train, snapshot.rows_test, calls))
        datasets = service.snapshot_dir(snapshot).parent
    (one, one_manifest, *one_rows, _), (three, three_manifest, *three_rows, calls) = results
    assert set(one) >= {"train.jsonl", "test.jsonl", "train.parquet", "test.parquet"}
    assert three == one and three_manifest == one_manifest and three_rows == one_rows
    assert one_rows[0] > 0 and one_rows[1] > 0
    assert one_manifest["guideline_versions"] == [1, 2, 3] and len(one_manifest["rows_per_day"]) >= 5
    assert calls and max(calls) <= 0.95
    assert not [path for path in datasets.iterdir() if path.name.startswith(".")]  # no temp directory, no part left


class _BrokenRunner(PartRunner):
    """Children that cannot reach their database."""

    def __init__(self, target, database_url, *args):
        super().__init__(target, "postgresql+psycopg://postgres@127.0.0.1:5432/rankforge_no_such_database", *args)


class _KilledRunner(PartRunner):
    """A child killed (as by the OOM killer) as soon as it starts."""

    def __enter__(self):
        super().__enter__()
        self.processes[0].kill()
        return self


@on_postgresql
@pytest.mark.parametrize(("runner", "message"), [(_BrokenRunner, "rankforge_no_such_database"),
                                                 (_KilledRunner, "ended without a result")])  # fmt: skip
def test_a_failed_or_dead_child_fails_the_export_and_leaves_nothing(db, monkeypatch, runner, message):
    project, _ = _seed(db)
    db.commit()
    _parallel(monkeypatch, 3)
    monkeypatch.setattr(service, "PartRunner", runner)
    snapshot = service.request_snapshot(db, project, SPEC, None)
    db.commit()
    with pytest.raises(PartFailed, match=message):
        service.build_snapshot(db, snapshot)
    directory = service.snapshot_dir(snapshot)
    assert not directory.exists() and not list(directory.parent.glob(f".{directory.name}*"))
    assert not multiprocessing.active_children()


@on_postgresql
def test_a_cancelled_export_ends_its_children(db, monkeypatch):
    project, _ = _seed(db)
    db.commit()
    _parallel(monkeypatch, 3)
    monkeypatch.setattr(service, "PAIR_BATCH_COMPARISONS", 2)
    started = []

    class Watched(PartRunner):
        def __enter__(self):
            started.extend(super().__enter__().processes)
            return self

    monkeypatch.setattr(service, "PartRunner", Watched)

    def cancel(share, text):
        raise RuntimeError("job cancelled")

    snapshot = service.request_snapshot(db, project, SPEC, None)
    db.commit()
    with pytest.raises(RuntimeError, match="job cancelled"):
        service.build_snapshot(db, snapshot, progress=cancel)
    assert len(started) == 2 and not any(process.is_alive() for process in started)
    assert not service.snapshot_dir(snapshot).exists()


@pytest.mark.parametrize(("low", "high", "processes"), [(1, 10, 3), (5, 5, 4), (1, 2, 4), (100, 10**7, 4), (1, 7, 1)])
def test_the_parts_cover_the_range_once(low, high, processes):
    parts = plan_parts(low, high, 99, processes)
    assert parts[0].low == low and parts[-1].high == high and all(p.watermark == 99 for p in parts)
    assert all(a.high + 1 == b.low for a, b in zip(parts, parts[1:], strict=False))
    assert all(p.low <= p.high for p in parts) and len(parts) == min(processes, high - low + 1)
    widths = [p.high - p.low + 1 for p in parts]
    assert max(widths) - min(widths) <= 1


def test_a_days_name_is_its_date_in_the_judgments_zone():
    tally = RowTally()
    paris = timezone(timedelta(hours=1))
    moments = [datetime(2026, 12, 6, 23, 30, tzinfo=UTC), datetime(2026, 12, 6, 23, 30, tzinfo=paris),
               datetime(2026, 12, 7, 0, 30, tzinfo=paris), None, datetime(2026, 12, 6, 1, 0, tzinfo=UTC)]  # fmt: skip
    for moment in moments:
        tally.on_comparison((3,) if moment else (), moment)
        tally.count()
    assert tally.rows_per_day == {"2026-12-06": 3, "2026-12-07": 1, "unknown": 1}
    assert tally.guideline_versions == {3}
    tally.add([5], {"2026-12-07": 2})
    assert tally.rows_per_day["2026-12-07"] == 3 and tally.guideline_versions == {3, 5}
