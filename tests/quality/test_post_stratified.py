"""Rater groups (issue 26): the post-stratified leaderboard with per-project group weights, and agreement by group.

Planted: 30 battles of X against Y by raters labelled locale=de, who pick X 24 times (0.8); 10 by raters labelled
locale=fr, who pick Y 8 times (X 0.2). Raw: X wins 26 of 40, first. With weights de 1, fr 3 (shares 1/4, 3/4),
X's weighted share of wins is 1/4 * 0.8 + 3/4 * 0.2 = 0.35, so Y is first and, with two models, the weighted
Bradley-Terry fit gives theta_X - theta_Y = logit(0.35): X = 1000 + 173.72 * logit(0.35) / 2 = 946.23,
Y = 1053.77 (Elo scale: 400 / ln 10 points per natural log-odds). Equal weights: 0.5 * 0.8 + 0.5 * 0.2 = 0.5,
a dead heat at 1000 each."""

from __future__ import annotations

import math

import pytest

from app.db import session_scope
from app.quality.poststrat import parse_group_weights
from tests.helpers import make_project
from tests.quality.builders import add_judgment, comparisons, import_battles

HTML = {"Accept": "text/html"}
ELO = 400 / math.log(10)


def _label(client, admin, user, labels):
    response = client.patch(f"/api/v1/users/{user['id']}", json={"labels": labels}, headers=admin["headers"])
    assert response.status_code == 200, response.text


def test_group_weights_shift_the_ranking_as_computed_by_hand(client, users, db_url):
    admin = users.create("admin", "admin")
    engineer = users.create("eng", "engineer")
    de = [users.create(f"de{i}", "annotator") for i in range(2)]
    fr = [users.create(f"fr{i}", "annotator") for i in range(2)]
    for rater in de:
        _label(client, admin, rater, {"locale": "de"})
    for rater in fr:
        _label(client, admin, rater, {"locale": "fr", "expertise": "law"})
    project = make_project(client, admin)
    import_battles(client, admin, project["id"], [("X", "Y")] * 40)
    with session_scope(db_url) as session:
        for n, (comparison, options) in enumerate(comparisons(session, project["id"])):
            by_model = {model: cid for cid, model, _ in options}
            if n < 30:  # de: X 24 of 30
                rater, winner = de[n % 2], "X" if n < 24 else "Y"
            else:  # fr: X 2 of 10
                rater, winner = fr[n % 2], "X" if n < 32 else "Y"
            loser = "Y" if winner == "X" else "X"
            add_judgment(session, comparison, rater["id"], [[by_model[winner]], [by_model[loser]]])

    url = f"/api/v1/projects/{project['id']}/leaderboard"
    raw = client.get(url, headers=admin["headers"]).json()
    assert [m["name"] for m in raw["models"]] == ["X", "Y"] and raw["post_stratified"] is None

    weights_url = f"/api/v1/projects/{project['id']}/group-weights"
    assert client.put(weights_url, json={"weights": {"locale=de": 1}}, headers=engineer["headers"]).status_code == 403
    bad = client.put(weights_url, json={"weights": {"locale=de": 1, "expertise=law": 1}}, headers=admin["headers"])
    assert bad.status_code == 422 and "one label key" in bad.json()["detail"]
    assert client.put(weights_url, json={"weights": {"locale=de": 0}}, headers=admin["headers"]).status_code == 422
    saved = client.put(weights_url, json={"weights": {"locale=de": 1, "locale=fr": 3}}, headers=admin["headers"])
    assert saved.status_code == 200 and saved.json()["weights"] == {"locale=de": 0.25, "locale=fr": 0.75}

    board = client.get(url, headers=admin["headers"]).json()
    assert [m["name"] for m in board["models"]] == ["X", "Y"]  # the raw ranking is unchanged
    post = board["post_stratified"]
    assert post["battles"] == 40
    assert post["strata"] == [{"group": "locale=de", "target_share": 0.25, "battles": 30, "share": 0.25},
                              {"group": "locale=fr", "target_share": 0.75, "battles": 10, "share": 0.75}]  # fmt: skip
    ratings = {m["name"]: m["rating"] for m in post["models"]}
    half_gap = ELO * math.log(0.35 / 0.65) / 2
    assert [m["name"] for m in post["models"]] == ["Y", "X"]
    assert ratings["X"] == pytest.approx(1000 + half_gap, abs=0.01)  # 946.23
    assert ratings["Y"] == pytest.approx(1000 - half_gap, abs=0.01)  # 1053.77
    for m in post["models"]:
        assert m["ci_low"] < m["rating"] < m["ci_high"]
    # A group filter shows that group's votes alone, not a post-stratified ranking.
    assert client.get(url, params={"group": "locale=fr"}, headers=admin["headers"]).json()["post_stratified"] is None

    # The admin form on the leaderboard page: equal weights make a dead heat.
    page = client.post(f"/projects/{project['id']}/group-weights", data={"weights": "locale=de: 1\nlocale=fr: 1"},
                       headers=admin["headers"] | HTML, follow_redirects=False)  # fmt: skip
    assert page.status_code == 303, page.text
    even = client.get(url, headers=admin["headers"]).json()["post_stratified"]
    assert [m["rating"] for m in even["models"]] == [pytest.approx(1000, abs=0.01)] * 2
    html = client.get(f"/projects/{project['id']}/leaderboard", headers=admin["headers"] | HTML).text
    assert 'id="leaderboard-post-stratified"' in html and 'id="group-weights"' in html and "locale=fr: 0.5" in html
    assert 'id="group-weights"' not in client.get(f"/projects/{project['id']}/leaderboard",
                                                  headers=engineer["headers"] | HTML).text  # fmt: skip
    # Clearing the weights switches the ranking off.
    client.post(f"/projects/{project['id']}/group-weights", data={"weights": ""}, headers=admin["headers"] | HTML)
    assert client.get(url, headers=admin["headers"]).json()["post_stratified"] is None


def test_agreement_by_group(client, users, db_url):
    """de's two raters agree on all 10 comparisons; fr's two disagree on half: alpha 1 for de, and fr's mean
    agreement with its own majority is (5 * 1 + 5 * 0.5) / 10 = 0.75."""
    admin = users.create("admin", "admin")
    de = [users.create(f"de{i}", "annotator") for i in range(2)]
    fr = [users.create(f"fr{i}", "annotator") for i in range(2)]
    for rater in de:
        _label(client, admin, rater, {"locale": "de"})
    for rater in fr:
        _label(client, admin, rater, {"locale": "fr"})
    project = make_project(client, admin, overlap=4)
    import_battles(client, admin, project["id"], [("X", "Y")] * 10)
    with session_scope(db_url) as session:
        for n, (comparison, options) in enumerate(comparisons(session, project["id"])):
            x, y = (cid for cid, _, _ in options)
            first, second = ([[x], [y]], [[y], [x]]) if n % 2 else ([[y], [x]], [[x], [y]])
            for rater in de:
                add_judgment(session, comparison, rater["id"], first)
            add_judgment(session, comparison, fr[0]["id"], first)
            add_judgment(session, comparison, fr[1]["id"], first if n < 5 else second)
    groups = {g["group"]: g for g in client.get(f"/api/v1/projects/{project['id']}/stats",
                                                headers=admin["headers"]).json()["groups"]}  # fmt: skip
    assert groups["locale=de"]["krippendorff_alpha"] == pytest.approx(1.0)
    assert groups["locale=de"]["agreement_with_majority"] == pytest.approx(1.0)
    assert groups["locale=fr"]["agreement_with_majority"] == pytest.approx(0.75)
    assert groups["locale=fr"]["raters"] == 2 and groups["locale=fr"]["judgments"] == 20
    assert groups["locale=fr"]["krippendorff_alpha"] < groups["locale=de"]["krippendorff_alpha"]
    html = client.get(f"/projects/{project['id']}/dashboard", headers=admin["headers"] | HTML).text
    assert 'id="group-agreement"' in html and "locale=fr" in html


def test_group_weights_format():
    assert parse_group_weights("locale=de: 2, locale=fr: 2") == {"locale=de": 0.5, "locale=fr": 0.5}
    assert parse_group_weights("") == {} and parse_group_weights(None) == {}
