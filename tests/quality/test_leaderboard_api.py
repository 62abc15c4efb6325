"""The leaderboard API against a direct maximum-likelihood Bradley-Terry fit written here, independently of
app.quality.stats: per-battle log-likelihood minimized by scipy's BFGS."""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize

from app.db import session_scope
from tests.helpers import make_project
from tests.quality.builders import add_judgment, comparisons, import_battles

STRENGTH = {"alpha": 1.2, "beta": 0.4, "gamma": 0.0, "delta": -0.9}
"""Planted log-strengths."""


def direct_mle(battles: list[tuple[str, str, float]]) -> dict[str, float]:
    """Elo-scale ratings (mean 1000) maximizing sum over battles of s log p + (1 - s) log(1 - p),
    p = sigmoid(theta_a - theta_b), s = 1 / 0.5 / 0 for win / tie / loss."""
    names = sorted({b[0] for b in battles} | {b[1] for b in battles})
    index = {n: i for i, n in enumerate(names)}
    a = np.array([index[b[0]] for b in battles])
    b = np.array([index[b[1]] for b in battles])
    s = np.array([b_[2] for b_ in battles])

    def negative_log_likelihood(theta):
        d = theta[a] - theta[b]
        return float(np.sum(s * np.logaddexp(0, -d) + (1 - s) * np.logaddexp(0, d))) + np.sum(theta) ** 2

    theta = minimize(negative_log_likelihood, np.zeros(len(names)), method="BFGS", options={"gtol": 1e-10}).x
    elo = 400 / np.log(10) * (theta - theta.mean()) + 1000
    return dict(zip(names, elo, strict=True))


def test_leaderboard_matches_a_direct_maximum_likelihood_fit(client, users, db_url):
    admin = users.create("admin", "admin")
    engineer = users.create("eng", "engineer")
    raters = [users.create(f"rater{i}", "annotator") for i in range(3)]
    project = make_project(client, admin, mode="rank", allow_ties=True)
    rng = np.random.default_rng(7)
    names = sorted(STRENGTH)
    pairs = [tuple(rng.choice(names, size=2, replace=False)) for _ in range(240)]
    pairs += [tuple(rng.choice(names, size=3, replace=False)) for _ in range(40)]  # K-way rankings expand to pairs
    import_battles(client, admin, project["id"], pairs)

    expected_battles = []
    with session_scope(db_url) as session:
        for n, (comparison, options) in enumerate(comparisons(session, project["id"])):
            noisy = {cid: STRENGTH[model] + rng.gumbel() for cid, model, _ in options}
            order = sorted(noisy, key=noisy.get, reverse=True)
            if len(order) == 2 and abs(noisy[order[0]] - noisy[order[1]]) < 0.25:
                ranking = [order]  # a tie
            else:
                ranking = [[cid] for cid in order]
            add_judgment(session, comparison, raters[n % 3]["id"], ranking)
            model = {cid: m for cid, m, _ in options}
            group = {cid: g for g, members in enumerate(ranking) for cid in members}
            for i, x in enumerate(order):
                for y in order[i + 1:]:
                    outcome = 1.0 if group[x] < group[y] else 0.5
                    expected_battles.append((model[x], model[y], outcome))

    response = client.get(f"/api/v1/projects/{project['id']}/leaderboard", headers=engineer["headers"])
    assert response.status_code == 200, response.text
    board = response.json()
    expected = direct_mle(expected_battles)
    got = {m["name"]: m for m in board["models"]}
    assert set(got) == set(STRENGTH)
    for name, rating in expected.items():
        assert abs(got[name]["rating"] - rating) < 1.0, (name, got[name]["rating"], rating)
        assert got[name]["ci_low"] < got[name]["rating"] < got[name]["ci_high"]
    assert [m["name"] for m in board["models"]] == sorted(STRENGTH, key=STRENGTH.get, reverse=True)
    assert abs(np.mean([m["rating"] for m in board["models"]]) - 1000) < 1e-6
    for name in names:
        assert got[name]["battles"] == sum(1 for b in expected_battles if name in b[:2])
    # Win rates: a's points against b over their battles, ties half, and the two directions sum to one.
    points = sum(o for x, y, o in expected_battles if (x, y) == ("alpha", "delta"))
    points += sum(1 - o for x, y, o in expected_battles if (x, y) == ("delta", "alpha"))
    met = sum(1 for x, y, _ in expected_battles if {x, y} == {"alpha", "delta"})
    assert abs(board["win_rates"]["alpha"]["delta"] - points / met) < 1e-9
    assert abs(board["win_rates"]["alpha"]["delta"] + board["win_rates"]["delta"]["alpha"] - 1) < 1e-9

    page = client.get(f"/projects/{project['id']}/leaderboard", headers=engineer["headers"] | {"Accept": "text/html"})
    assert page.status_code == 200 and 'id="win-rates"' in page.text and "alpha" in page.text
    annotator = client.get(f"/api/v1/projects/{project['id']}/leaderboard", headers=raters[0]["headers"])
    assert annotator.status_code == 403


def test_empty_leaderboard(client, users):
    admin = users.create("admin", "admin")
    project = make_project(client, admin)
    response = client.get(f"/api/v1/projects/{project['id']}/leaderboard", headers=admin["headers"])
    assert response.status_code == 200
    assert response.json()["models"] == [] and response.json()["win_rates"] == {}


def test_model_names_with_sql_characters_are_counted(client, users, db_url):
    """Names are bound as parameters: a percent sign or a quote in a model name changes nothing."""
    admin = users.create("admin", "admin")
    rater = users.create("rater", "annotator")
    project = make_project(client, admin)
    odd, plain = "50%-mix 'v2'", "base"
    import_battles(client, admin, project["id"], [(odd, plain)] * 6)
    with session_scope(db_url) as session:
        for n, (comparison, options) in enumerate(comparisons(session, project["id"])):
            winner = next(cid for cid, model, _ in options if model == (odd if n < 5 else plain))
            loser = next(cid for cid, _, _ in options if cid != winner)
            add_judgment(session, comparison, rater["id"], [[winner], [loser]])
    board = client.get(f"/api/v1/projects/{project['id']}/leaderboard", headers=admin["headers"]).json()
    assert {m["name"]: m["battles"] for m in board["models"]} == {odd: 6, plain: 6}
    assert board["win_rates"][odd][plain] == 5 / 6
