"""Rater groups: admins label raters key=value (API and admin page); the leaderboard reads one group's votes.
Planted: experts prefer model "careful", the others prefer "chatty"; each group's board says so."""

from __future__ import annotations

from app.db import session_scope
from tests.helpers import make_project
from tests.quality.builders import add_judgment, comparisons, import_battles


def test_groups_are_set_by_admins_and_split_the_leaderboard(client, users, db_url):
    admin = users.create("admin", "admin")
    experts = [users.create(f"expert{i}", "annotator") for i in range(2)]
    others = [users.create(f"other{i}", "annotator") for i in range(2)]
    for rater in experts:
        response = client.patch(f"/api/v1/users/{rater['id']}", json={"labels": {"expertise": "medicine"}},
                                headers=admin["headers"])  # fmt: skip
        assert response.status_code == 200 and response.json()["labels"] == {"expertise": "medicine"}, (
            response.text
        )
    bad = client.patch(
        f"/api/v1/users/{others[0]['id']}", json={"labels": {"bad key": "x"}}, headers=admin["headers"]
    )
    assert bad.status_code == 422
    assert client.patch(f"/api/v1/users/{others[0]['id']}", json={"labels": {"a": "b"}},
                        headers=experts[0]["headers"]).status_code == 403  # fmt: skip
    # The admin page's field: comma-separated key=value.
    page = client.post(f"/admin/users/{others[0]['id']}/labels", data={"labels": "expertise=none, locale=fr"},
                       headers=admin["headers"] | {"Accept": "text/html"}, follow_redirects=False)  # fmt: skip
    assert page.status_code in (302, 303), page.text
    assert client.get(f"/api/v1/users/{others[0]['id']}", headers=admin["headers"]).json()["labels"] == {
        "expertise": "none", "locale": "fr"}  # fmt: skip
    listing = client.get("/admin/users", headers=admin["headers"] | {"Accept": "text/html"})
    assert "expertise=none, locale=fr" in listing.text

    project = make_project(client, admin)
    import_battles(client, admin, project["id"], [("careful", "chatty")] * 40)
    with session_scope(db_url) as session:
        for n, (comparison, options) in enumerate(comparisons(session, project["id"])):
            by_model = {model: cid for cid, model, _ in options}
            expert = n % 2 == 0
            rater = (experts if expert else others)[n // 2 % 2]
            # experts pick careful 9 times in 10, the others chatty 9 times in 10
            favourite = (
                ("careful" if expert else "chatty")
                if n % 20 not in (0, 1)
                else ("chatty" if expert else "careful")
            )
            loser = "chatty" if favourite == "careful" else "careful"
            add_judgment(session, comparison, rater["id"], [[by_model[favourite]], [by_model[loser]]])

    url = f"/api/v1/projects/{project['id']}/leaderboard"
    medicine = client.get(url, params={"group": "expertise=medicine"}, headers=admin["headers"]).json()
    assert [m["name"] for m in medicine["models"]] == ["careful", "chatty"] and medicine["battles"] == 20
    assert medicine["win_rates"]["careful"]["chatty"] == 0.9
    lay = client.get(url, params={"group": "expertise=none"}, headers=admin["headers"]).json()
    assert [m["name"] for m in lay["models"]] == ["chatty", "careful"] and lay[
        "battles"
    ] == 10  # other0's half
    everyone = client.get(url, headers=admin["headers"]).json()
    assert everyone["battles"] == 40
    nobody = client.get(url, params={"group": "locale=de"}, headers=admin["headers"]).json()
    assert nobody["models"] == [] and nobody["battles"] == 0
    assert client.get(url, params={"group": "no-equals-sign"}, headers=admin["headers"]).status_code == 422

    html = client.get(f"/projects/{project['id']}/leaderboard", params={"group": "expertise=medicine"},
                      headers=admin["headers"] | {"Accept": "text/html"})  # fmt: skip
    assert (
        html.status_code == 200
        and 'id="group-filter"' in html.text
        and "raters expertise=medicine" in html.text
    )
