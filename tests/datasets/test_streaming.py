"""A pairs export streams (issue 25): it reads the judgments a batch of comparisons at a time while its rows go out,
so its memory is one batch's, not the project's. On PostgreSQL it holds no snapshot across the export (no cursor
open on the server: a range of comparisons per statement, bounded by the newest judgment when it started), so a
minutes-long export never keeps the rating queue's dead index entries alive."""

from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from app.config import get_settings
from app.datasets import service
from app.datasets.formats import export_rows
from app.db import session_factory, session_scope
from app.models import Project
from tests.helpers import import_lines, make_project, native_lines
from tests.quality.builders import add_judgment, comparisons


def test_a_pairs_export_groups_one_batch_of_comparisons_at_a_time(client, users, monkeypatch):
    admin, rater = users.create("admin", "admin"), users.create("rita", "annotator")
    project = make_project(client, admin)
    import_lines(client, admin, project["id"], native_lines(7, k=3, ranking=True))
    monkeypatch.setattr(service, "BATCH_COMPARISONS", 2)
    postgres = session_factory()().get_bind().dialect.name == "postgresql"
    watcher = create_engine(get_settings().database_url, poolclass=NullPool) if postgres else None
    spec = service.parse_spec({"format": "pairs"})
    flushed: list[int] = []  # comparisons handed out so far, reported after each batch
    with session_scope() as db:
        judged = service.iter_judged_comparisons(db, db.get(Project, project["id"]), spec,
                                                 on_batch=flushed.append)  # fmt: skip
        pid = db.execute(text("SELECT pg_backend_pid()")).scalar() if postgres else None
        rows = export_rows(judged, "pairs")
        first = [next(rows) for _ in range(3)]  # one comparison's three pairs
        assert flushed == []  # its batch is not even finished: nothing beyond it was gathered
        if postgres:  # mid-export: no cursor open on the server (each range of comparisons is one statement)
            assert db.execute(text("SELECT count(*) FROM pg_cursors")).scalar() == 0
        with session_scope() as other:  # a judgment written during the export: past the watermark, not in it
            comparison, options = comparisons(other, project["id"])[-1]
            add_judgment(other, comparison, rater["id"], [[options[2][0]], [options[1][0]], [options[0][0]]])
        if postgres:  # a snapshot taken now, after that write
            with watcher.connect() as other:
                after_write = other.execute(text("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
                                            ).scalar()  # fmt: skip
        second = [next(rows) for _ in range(3)]
        assert flushed == []
        third = next(rows)  # the third comparison: the first batch (two comparisons) is done, the next one is open
        assert flushed == [2]
        if postgres:
            # the export's connection holds no snapshot from the export's start (a cursor held one to its end): the
            # statements that read the next range ran after the write, so its snapshot, if any, is no older than
            # that write (xmin only grows)
            with watcher.connect() as other:
                state, xmin = other.execute(text("SELECT state, backend_xmin::text::bigint FROM pg_stat_activity "
                                                 "WHERE pid = :pid"), {"pid": pid}).one()  # fmt: skip
            assert state == "idle in transaction" and (xmin is None or xmin >= after_write), (state, xmin, after_write)
        rest = list(rows)
    assert flushed == [2, 4, 6, 7]  # batches of at most two comparisons, in order
    every = [row for _, row in first + second + [third] + rest]
    assert len(every) == 7 * 3
    ids = [row["comparison_id"] for row in every]
    assert ids == sorted(ids) and len(set(ids)) == 7
    assert all(row["chosen"].startswith("answer 0") or row["rejected"].startswith("answer 2") for row in every)
    if postgres:
        watcher.dispose()


def test_a_large_projects_export_takes_rater_weights_from_current_cached_statistics(client, users, monkeypatch):
    """Fitting rater reliability holds every judgment in memory; a large project's export reads the worker's cached
    per-rater values instead, but only while they are current (computed after the last judgment)."""
    from app.models.tally import ProjectFigures
    from app.quality import figures, markers
    from app.quality.service import rater_reliability

    admin, rater = users.create("admin", "admin"), users.create("rita", "annotator")
    project = make_project(client, admin)
    import_lines(client, admin, project["id"], native_lines(4))

    def judge():
        task = client.get(f"/api/v1/projects/{project['id']}/tasks/next", headers=rater["headers"]).json()
        ids = [option["id"] for option in task["options"]]
        response = client.post(f"/api/v1/assignments/{task['assignment_id']}/judgment",
                               json={"ranking": [[ids[0]], [ids[1]]]}, headers=rater["headers"])  # fmt: skip
        assert response.status_code in (200, 201), response.text

    judge()
    monkeypatch.setattr(markers, "SYNC_MAX_JUDGMENTS", 0)  # every project is large
    with session_scope() as db:
        p = db.get(Project, project["id"])
        assert service.rater_weights(db, p) == rater_reliability(db, p)  # nothing cached yet: fitted
        figures.refresh(db, p)
        assert service.rater_weights(db, p) == rater_reliability(db, p)  # the cached values are the fitted ones
        row = db.get(ProjectFigures, (p.id, "stats"))
        row.figures = dict(row.figures) | {"raters": [{"user_id": rater["id"], "reliability": 0.123}]}
        db.flush()
        assert service.rater_weights(db, p) == {rater["id"]: 0.123}  # read from the cache
    judge()  # the cached statistics are no longer current
    with session_scope() as db:
        p = db.get(Project, project["id"])
        assert service.rater_weights(db, p) == rater_reliability(db, p) != {rater["id"]: 0.123}
