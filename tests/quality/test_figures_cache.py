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


def test_large_project_figures_come_from_the_worker(client, users, db_url, monkeypatch):
    from app.models.tally import ProjectFigures
    from app.quality import figures
    from app.worker import FIGURES_LOCK, refresh_figures

    monkeypatch.setattr(figures, "SYNC_MAX_JUDGMENTS", 5)
    admin = users.create("admin", "admin")
    raters = [users.create(f"rater{i}", "annotator") for i in range(2)]
    project = make_project(client, admin, allow_ties=True)
    import_battles(client, admin, project["id"], [("m1", "m2")] * 8)
    with session_scope(db_url) as session:
        for n, (comparison, options) in enumerate(comparisons(session, project["id"])[:6]):
            add_judgment(session, comparison, raters[n % 2]["id"], [[options[0][0]], [options[1][0]]])
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
