"""Statistics and dashboard of large projects from the worker's figures cache (app.quality.figures).

The size threshold is lowered so a small project counts as large: before the first computation the API says the
figures are being computed (503), an idle worker tick computes them (one worker at a time), the API then answers
with `as_of`, a new judgment is not seen until the next tick (the request never recomputes), and a tick with
nothing changed recomputes nothing."""

from __future__ import annotations

from sqlalchemy import text

from app.db import session_scope
from tests.helpers import make_project
from tests.quality.builders import add_judgment, comparisons, import_battles


def _large_project(client, users, db_url):
    """(admin, project, raters): 8 battles of m1 against m2, 6 of them judged by two raters (large once the caller sets
    SYNC_MAX_JUDGMENTS to 5)."""
    admin = users.create("admin", "admin")
    raters = [users.create(f"rater{i}", "annotator") for i in range(2)]
    project = make_project(client, admin, allow_ties=True)
    import_battles(client, admin, project["id"], [("m1", "m2")] * 8)
    with session_scope(db_url) as session:
        for n, (comparison, options) in enumerate(comparisons(session, project["id"])[:6]):
            add_judgment(session, comparison, raters[n % 2]["id"], [[options[0][0]], [options[1][0]]])
    return admin, project, raters


def test_large_project_figures_come_from_the_worker(client, users, db_url, monkeypatch):
    from app.models.tally import ProjectFigures
    from app.quality import markers
    from app.worker import FIGURES_LOCK, refresh_figures

    monkeypatch.setattr(markers, "SYNC_MAX_JUDGMENTS", 5)
    admin, project, raters = _large_project(client, users, db_url)
    url = f"/api/v1/projects/{project['id']}"

    for name in ("stats", "dashboard"):
        response = client.get(f"{url}/{name}", headers=admin["headers"])
        assert response.status_code == 503, response.text
        assert "being computed" in response.json()["detail"]
    page = client.get(f"/projects/{project['slug']}/dashboard", headers=admin["headers"])
    assert "being computed" in page.text
    board = client.get(f"{url}/leaderboard", headers=admin["headers"]).json()  # ratings from the tallies already
    assert board["battles"] == 6 and [m["name"] for m in board["models"]] == ["m1", "m2"]
    assert board["style_controlled"] == [] and board["as_of"] is None

    if db_url.startswith("postgresql"):  # another worker's tick holds the advisory lock: this one does nothing
        with session_scope(db_url) as other:
            from app.training.scheduler import run_alone

            assert run_alone(other, FIGURES_LOCK)
            assert refresh_figures("worker-a") == []  # (its lease is free; the advisory lock is not)
    assert refresh_figures("worker-a") == [project["id"]]
    stats = client.get(f"{url}/stats", headers=admin["headers"]).json()
    assert stats["judgments"] == 6 and stats["as_of"]
    dashboard = client.get(f"{url}/dashboard", headers=admin["headers"]).json()
    assert sum(dashboard["judgments_per_hour"]) == 6 and dashboard["as_of"]
    page = client.get(f"/projects/{project['slug']}/dashboard", headers=admin["headers"])
    assert page.status_code == 200 and 'id="figures-as-of"' in page.text
    board = client.get(f"{url}/leaderboard", headers=admin["headers"]).json()
    assert [m["name"] for m in board["style_controlled"]] == ["m1", "m2"] and board["as_of"]
    assert client.get(f"/projects/{project['slug']}/leaderboard", headers=admin["headers"]).status_code == 200

    assert refresh_figures("worker-a") == []  # nothing changed: nothing recomputed
    with session_scope(db_url) as session:
        comparison, options = comparisons(session, project["id"])[6]
        add_judgment(session, comparison, raters[0]["id"], [[options[1][0]], [options[0][0]]])
    assert client.get(f"{url}/stats", headers=admin["headers"]).json()["judgments"] == 6  # cached, as of before
    assert refresh_figures("worker-a") == [project["id"]]
    again = client.get(f"{url}/stats", headers=admin["headers"]).json()
    assert again["judgments"] == 7 and again["as_of"] > stats["as_of"]
    with session_scope(db_url) as session:
        rows = session.execute(text("SELECT name FROM project_figures WHERE project_id = :p ORDER BY name"),
                               {"p": project["id"]}).scalars().all()  # fmt: skip
        assert rows == ["dashboard", "leaderboard", "stats"]
        assert session.get(ProjectFigures, (project["id"], "stats")).figures["judgments"] == 7


def test_small_project_figures_are_computed_per_request(client, users, db_url):
    admin = users.create("admin", "admin")
    rater = users.create("rater", "annotator")
    project = make_project(client, admin, allow_ties=True)
    import_battles(client, admin, project["id"], [("m1", "m2")] * 3)
    with session_scope(db_url) as session:
        comparison, options = comparisons(session, project["id"])[0]
        add_judgment(session, comparison, rater["id"], [[options[0][0]], [options[1][0]]])
    stats = client.get(f"/api/v1/projects/{project['id']}/stats", headers=admin["headers"]).json()
    assert stats["judgments"] == 1 and stats["as_of"]
    with session_scope(db_url) as session:
        assert session.execute(text("SELECT count(*) FROM project_figures")).scalar() == 0


def test_cached_figures_equal_the_per_request_ones(client, users, db_url, monkeypatch):
    """What the worker stores for a large project is what a request computes for a small one: the statistics, the
    dashboard (per-rater hourly and daily counts) and the leaderboard's every-battle rankings (style features read
    from the completion texts in one streamed pass, the style fit a block of battles at a time)."""
    import json

    from app.models import Project, utcnow
    from app.models.tally import ProjectFigures
    from app.quality import figures, service

    admin = users.create("admin", "admin")
    raters = [users.create(f"rater{i}", "annotator") for i in range(3)]
    project = make_project(client, admin, allow_ties=True)
    texts = [(f"# Plan\n- a\n- b\n**{i}** answer", f"short {i}") if i % 3 else (f"plain {i}", f"1. x\n2. y {i}")
             for i in range(12)]  # fmt: skip
    import_battles(client, admin, project["id"], [("m1", "m2"), ("m2", "m3"), ("m3", "m1")] * 4, texts=texts)
    with session_scope(db_url) as session:
        for n, (comparison, options) in enumerate(comparisons(session, project["id"])):
            for k, rater in enumerate(raters[: 1 + n % 3]):
                first, second = options[(n + k) % 2][0], options[(n + k + 1) % 2][0]
                ranking = [sorted([first, second])] if (n + k) % 5 == 0 else [[first], [second]]
                add_judgment(session, comparison, rater["id"], ranking)
    now = utcnow()
    monkeypatch.setattr(service, "utcnow", lambda: now)  # the dashboard's hours, the same for both computations
    with session_scope(db_url) as session:
        row = session.get(Project, project["id"])
        per_request = {name: figures._plain(figures._COMPUTE[name](session, row)) for name in figures.NAMES}
        assert per_request["stats"]["judgments"] == 24
        by_rater = per_request["dashboard"]["judgments_per_hour_by_rater"]
        assert {name: sum(counts) for name, counts in by_rater.items()} == {"rater0": 12, "rater1": 8, "rater2": 4}
        assert len(per_request["leaderboard"]["style_controlled"]) == 3
        assert figures.refresh(session, row, now=now) == list(figures.NAMES)
    with session_scope(db_url) as session:
        for name in figures.NAMES:
            cached = session.get(ProjectFigures, (project["id"], name)).figures
            assert cached == json.loads(json.dumps(per_request[name])), name


def test_recompute_holds_no_transaction_while_it_computes(client, users, db_url, monkeypatch):
    """The worker's recompute reads a figure's inputs in one short transaction (REPEATABLE READ on PostgreSQL),
    ends it, computes with no transaction open (pg_stat_activity: the recompute's connection and the advisory lock's
    are idle, not "idle in transaction": no snapshot held for minutes at ten million judgments), then stores. A
    judgment that arrives during a computation is not in that figure, whose row keeps the marker of its read, so the
    next tick recomputes it (and only it)."""
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    from app.models.tally import ProjectFigures
    from app.quality import figures, markers
    from app.worker import refresh_figures

    monkeypatch.setattr(markers, "SYNC_MAX_JUDGMENTS", 5)
    postgres = db_url.startswith("postgresql")
    admin, project, raters = _large_project(client, users, db_url)

    reads, computations, arrived = [], [], []
    watching = create_engine(db_url, poolclass=NullPool, isolation_level="AUTOCOMMIT") if postgres else None
    read, compute = dict(figures._READ), dict(figures._FROM)

    def watched_read(name):
        def run(db, row):
            if postgres:
                isolation = db.execute(text("SHOW transaction_isolation")).scalar()
                reads.append((name, isolation, db.execute(text("SELECT pg_backend_pid()")).scalar()))
            else:
                reads.append((name, None, None))
            return read[name](db, row)
        return run

    def watched_compute(name):
        def run(inputs):
            if postgres:
                with watching.connect() as watcher:  # a connection of its own, not one from the app's pool
                    open_transactions = watcher.execute(text(
                        "SELECT pid, state FROM pg_stat_activity WHERE datname = current_database() "
                        "AND pid <> pg_backend_pid() AND xact_start IS NOT NULL")).all()  # fmt: skip
                    reader = watcher.execute(text("SELECT state, xact_start FROM pg_stat_activity WHERE pid = :pid"),
                                             {"pid": reads[-1][2]}).one()  # fmt: skip
                    lock_holders = watcher.execute(text(
                        "SELECT a.state, a.xact_start FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                        "WHERE l.locktype = 'advisory' AND l.granted")).all()  # fmt: skip
                computations.append((name, open_transactions, tuple(reader), [tuple(r) for r in lock_holders]))
            else:
                computations.append((name, [], ("idle", None), [("idle", None)]))
            if name == "stats" and not arrived:  # a judgment arrives while the statistics are computed
                arrived.append(True)
                with session_scope(db_url) as session:
                    comparison, options = comparisons(session, project["id"])[6]
                    add_judgment(session, comparison, raters[0]["id"], [[options[1][0]], [options[0][0]]])
            return compute[name](inputs)
        return run

    monkeypatch.setattr(figures, "_READ", {name: watched_read(name) for name in figures.NAMES})
    monkeypatch.setattr(figures, "_FROM", {name: watched_compute(name) for name in figures.NAMES})
    assert refresh_figures("worker-a") == [project["id"]]
    assert [name for name, *_ in computations] == list(figures.NAMES)
    if postgres:
        assert {isolation for _, isolation, _ in reads} == {"repeatable read"}
    for name, open_transactions, reader, lock_holders in computations:
        assert open_transactions == [], name  # no backend of this database is in a transaction
        assert reader == ("idle", None), name  # the connection that read the inputs: idle, no transaction
        assert lock_holders == [("idle", None)], name  # the advisory lock is held, by an idle connection

    with session_scope(db_url) as session:
        stored = {name: session.get(ProjectFigures, (project["id"], name)) for name in figures.NAMES}
        assert stored["stats"].figures["judgments"] == 6  # read before the seventh judgment arrived
        current = figures.change_marker(session, project["id"])
        assert stored["stats"].marker != current  # the marker of its read, not of the write
        assert stored["dashboard"].marker == stored["leaderboard"].marker == current  # read after it
        assert sum(stored["dashboard"].figures["judgments_per_hour"]) == 7
    computations.clear()
    assert refresh_figures("worker-a") == [project["id"]]
    assert [name for name, *_ in computations] == ["stats"]
    with session_scope(db_url) as session:
        row = session.get(ProjectFigures, (project["id"], "stats"))
        assert row.figures["judgments"] == 7 and row.marker == figures.change_marker(session, project["id"])
    assert refresh_figures("worker-a") == []
