"""Vote-rigging checks: 3 planted accounts among 40 simulated raters always vote for one model when they recognise
it (80% of its battles); each is flagged, and fewer than 1 of 40 honest raters is flagged across 20 seeds. Then the
same through the database: the flagged votes land in the review queue, and excluding them there takes them off the
leaderboard. (The burst-of-near-identical-prompts check for live battles is tested in tests/endpoints/test_battles.py.)"""

from __future__ import annotations

import numpy as np

from app.db import session_scope
from tests.helpers import make_project
from tests.quality.builders import add_judgment, comparisons, import_battles

STRENGTH = np.array([0.8, 0.4, 0.0, -0.2, -0.5, -0.8])
TARGET = 4
"""The model the planted accounts push (a weak one)."""
RIGGERS = (0, 1, 2)


def simulate(seed: int, n_raters: int = 40, votes: int = 150, recognise: float = 0.8):
    """Battles (a, b, outcome for a, rater): honest Bradley-Terry votes, except that a planted account that
    recognises TARGET in a battle votes for it."""
    rng = np.random.default_rng(seed)
    rater = np.repeat(np.arange(n_raters), votes)
    n = len(rater)
    a = rng.integers(0, len(STRENGTH), n)
    b = (a + rng.integers(1, len(STRENGTH), n)) % len(STRENGTH)
    honest = (rng.random(n) < 1 / (1 + np.exp(-(STRENGTH[a] - STRENGTH[b])))).astype(float)
    rigged = np.isin(rater, RIGGERS) & ((a == TARGET) | (b == TARGET)) & (rng.random(n) < recognise)
    return a, b, np.where(rigged, (a == TARGET).astype(float), honest), rater


def test_planted_accounts_are_flagged_and_honest_ones_are_not_across_20_seeds():
    from app.quality.rigging import favour_tests, influence

    honest_flagged = 0
    for seed in range(20):
        a, b, outcome, rater = simulate(seed)
        flagged = {
            (x["rater"], x["model"])
            for x in favour_tests(a, b, outcome, rater, len(STRENGTH))
            if x["flagged"]
        }
        moved = {
            (x["rater"], x["model"]) for x in influence(a, b, outcome, rater, len(STRENGTH)) if x["flagged"]
        }
        for rigger in RIGGERS:
            assert (rigger, TARGET) in flagged, (seed, rigger)
            assert (rigger, TARGET) in moved, (seed, rigger)
        honest_flagged += len({r for r, _ in flagged | moved} - set(RIGGERS))
    assert honest_flagged / 20 < 1  # fewer than 1 of the 37 honest raters per seed
    # Without riggers nobody is flagged by the favour test in these seeds' worth of honest votes either.
    a, b, outcome, rater = simulate(99, recognise=0.0)
    assert not any(x["flagged"] for x in favour_tests(a, b, outcome, rater, len(STRENGTH)))


def test_holm_rejects_step_down():
    from app.quality.rigging import _holm

    p = np.array([0.001, 0.03, 0.012, 0.5])
    # alpha 0.05: 0.001 <= 0.05/4; 0.012 <= 0.05/3; 0.03 > 0.05/2 stops there.
    assert list(_holm(p, 0.05)) == [True, False, True, False]


def test_flagged_votes_go_to_the_review_queue_and_excluding_them_restores_the_board(client, users, db_url):
    admin = users.create("admin", "admin")
    names = [f"m{i}" for i in range(len(STRENGTH))]
    n_raters, votes = 12, 60
    raters = [users.create(f"rater{i}", "annotator") for i in range(n_raters)]
    project = make_project(client, admin)
    a, b, outcome, rater = simulate(5, n_raters=n_raters, votes=votes, recognise=1.0)
    import_battles(client, admin, project["id"], [(names[a[i]], names[b[i]]) for i in range(len(a))])
    with session_scope(db_url) as session:
        for i, (comparison, options) in enumerate(comparisons(session, project["id"])):
            (first, _, _), (second, _, _) = options
            ranking = [[first], [second]] if outcome[i] else [[second], [first]]
            add_judgment(session, comparison, raters[rater[i]]["id"], ranking)
    headers = admin["headers"]
    before = {m["name"]: m["rating"] for m in
              client.get(f"/api/v1/projects/{project['id']}/leaderboard", headers=headers).json()["models"]}  # fmt: skip

    assert (
        client.post(
            f"/api/v1/projects/{project['id']}/rigging-check", headers=raters[0]["headers"]
        ).status_code
        == 403
    )
    report = client.post(f"/api/v1/projects/{project['id']}/rigging-check", headers=headers)
    assert report.status_code == 200, report.text
    flagged = {(f["username"], f["model"]) for f in report.json()["flagged"]}
    assert {(f"rater{r}", names[TARGET]) for r in RIGGERS} <= flagged
    assert {u for u, _ in flagged} <= {f"rater{r}" for r in RIGGERS}
    pushed = sum(1 for i in range(len(a)) if rater[i] in RIGGERS and ((a[i] == TARGET) == bool(outcome[i]))
                 and TARGET in (a[i], b[i]))  # fmt: skip
    assert report.json()["judgments_flagged"] == pushed
    again = client.post(f"/api/v1/projects/{project['id']}/rigging-check", headers=headers).json()
    assert again["judgments_flagged"] == 0  # flagged once

    queue = client.get(f"/api/v1/projects/{project['id']}/reviews?limit=1000", headers=headers)
    assert queue.status_code == 200, queue.text
    rigging = [item for item in queue.json() if "rigging" in item["flags"]]
    assert len(rigging) == pushed and {item["rater"] for item in rigging} == {f"rater{r}" for r in RIGGERS}
    for item in rigging:
        resolved = client.post(f"/api/v1/judgments/{item['judgment_id']}/review",
                               json={"resolution": "excluded", "note": "rigged"}, headers=headers)  # fmt: skip
        assert resolved.status_code == 201, resolved.text
    after = {m["name"]: m["rating"] for m in
             client.get(f"/api/v1/projects/{project['id']}/leaderboard", headers=headers).json()["models"]}  # fmt: skip
    assert (
        after[names[TARGET]] < before[names[TARGET]] - 20
    )  # the pushed model falls back once the votes are out
