"""A pairs export streams (issue 25): it reads the judgments a batch of comparisons at a time while its rows go out,
through a server-side cursor on PostgreSQL, so its memory is one batch's, not the project's."""

from sqlalchemy import text

from app.datasets import service
from app.datasets.formats import export_rows
from app.db import session_scope
from app.models import Project
from tests.helpers import import_lines, make_project, native_lines


def test_a_pairs_export_groups_one_batch_of_comparisons_at_a_time(client, users, monkeypatch):
    admin = users.create("admin", "admin")
    project = make_project(client, admin)
    import_lines(client, admin, project["id"], native_lines(7, k=3, ranking=True))
    monkeypatch.setattr(service, "BATCH_COMPARISONS", 2)
    spec = service.parse_spec({"format": "pairs"})
    flushed: list[int] = []  # comparisons handed out so far, reported after each batch
    with session_scope() as db:
        comparisons = service.iter_judged_comparisons(db, db.get(Project, project["id"]), spec,
                                                      on_batch=flushed.append)  # fmt: skip
        rows = export_rows(comparisons, "pairs")
        first = [next(rows) for _ in range(3)]  # one comparison's three pairs
        assert flushed == []  # its batch is not even finished: nothing beyond it was gathered
        if db.get_bind().dialect.name == "postgresql":
            # the judgments come through a cursor held open on the server, fetched as the export goes on
            assert db.execute(text("SELECT count(*) FROM pg_cursors WHERE NOT is_holdable")).scalar() == 1
        second = [next(rows) for _ in range(3)]
        assert flushed == []
        third = next(rows)  # the third comparison: the first batch (two comparisons) is done, the next one is open
        assert flushed == [2]
        rest = list(rows)
        if db.get_bind().dialect.name == "postgresql":
            assert db.execute(text("SELECT count(*) FROM pg_cursors WHERE NOT is_holdable")).scalar() == 0
    assert flushed == [2, 4, 6, 7]  # batches of at most two comparisons, in order
    every = [row for _, row in first + second + [third] + rest]
    assert len(every) == 7 * 3
    ids = [row["comparison_id"] for row in every]
    assert ids == sorted(ids) and len(set(ids)) == 7
    assert all(row["chosen"].startswith("answer 0") or row["rejected"].startswith("answer 2") for row in every)


def test_a_large_projects_export_takes_rater_weights_from_current_cached_statistics(client, users, monkeypatch):
    """Fitting rater reliability holds every judgment in memory; a large project's export reads the worker's cached
    per-rater values instead, but only while they are current (computed after the last judgment)."""
    from app.models.tally import ProjectFigures
    from app.quality import figures
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
    monkeypatch.setattr(figures, "SYNC_MAX_JUDGMENTS", 0)  # every project is large
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
