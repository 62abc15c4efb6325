"""Quality service through real databases: adaptive overlap, gold mixing, reliability, agreement per attribute
and on rank positions (checked against the `krippendorff` package), rater flags, review queue, queue control."""

from __future__ import annotations

import json

import krippendorff
import numpy as np
import pytest
from scipy import stats as scipy_stats
from sqlalchemy import select

from app.db import session_scope
from tests.helpers import import_lines, make_project, native_lines
from tests.quality.builders import add_judgment, comparisons, import_battles


def next_task(client, rater, project_id):
    return client.get(f"/api/v1/projects/{project_id}/tasks/next", headers=rater["headers"])


def judge(client, rater, task, top_index: int):
    ids = sorted(o["id"] for o in task["options"])
    ranking = [[ids[top_index]], [ids[1 - top_index]]]
    response = client.post(f"/api/v1/assignments/{task['assignment_id']}/judgment", json={"ranking": ranking},
                           headers=rater["headers"])  # fmt: skip
    assert response.status_code == 201, response.text


def test_adaptive_overlap_adds_a_third_rater_only_on_disagreement(client, users):
    admin = users.create("admin", "admin")
    r1, r2, r3 = (users.create(f"r{i}", "annotator") for i in range(3))
    project = make_project(client, admin, overlap=2, max_overlap=3, allow_ties=False)
    assert import_lines(client, admin, project["id"], native_lines(1, prefix="agree")).status_code == 200
    task1, task2 = next_task(client, r1, project["id"]).json(), next_task(client, r2, project["id"]).json()
    judge(client, r1, task1, 0)
    judge(client, r2, task2, 0)
    assert next_task(client, r3, project["id"]).status_code == 204  # they agree: two raters are enough

    assert import_lines(client, admin, project["id"], native_lines(1, prefix="split")).status_code == 200
    task1, task2 = next_task(client, r1, project["id"]).json(), next_task(client, r2, project["id"]).json()
    assert task1["comparison_id"] == task2["comparison_id"]
    judge(client, r1, task1, 0)
    judge(client, r2, task2, 1)
    third = next_task(client, r3, project["id"])
    assert third.status_code == 200 and third.json()["comparison_id"] == task1["comparison_id"]
    judge(client, r3, third.json(), 0)
    assert next_task(client, users.create("r4", "annotator"), project["id"]).status_code == 204  # max_overlap 3


def test_gold_items_are_mixed_in_at_the_gold_rate(client, users, db_url):
    from app.judgments.service import skip
    from app.models import Comparison, Project, User
    from app.tasks.service import claim_next

    admin = users.create("admin", "admin")
    rater = users.create("rater", "annotator")
    gold_rate, claims = 0.2, 400
    project = make_project(client, admin, gold_rate=gold_rate)
    assert import_lines(client, admin, project["id"], native_lines(claims, prefix="regular")).status_code == 200
    gold = native_lines(claims, prefix="gold", ranking=True)
    assert import_lines(client, admin, project["id"], gold, gold=True).status_code == 200
    gold_claims = 0
    with session_scope(db_url) as session:
        p, user = session.get(Project, project["id"]), session.get(User, rater["id"])
        for _ in range(claims):
            assignment = claim_next(session, p, user)
            gold_claims += session.get(Comparison, assignment.comparison_id).is_gold
            skip(session, assignment.id, user, "counting")
    # Each claim is gold with probability gold_rate (both pools never run dry): a two-sided binomial bound that
    # a correct implementation leaves with probability 1e-6.
    low, high = scipy_stats.binom.ppf(5e-7, claims, gold_rate), scipy_stats.binom.isf(5e-7, claims, gold_rate)
    assert low <= gold_claims <= high, (gold_claims, low, high)


def test_reliability_ranks_a_random_clicking_rater_last(client, users, db_url):
    from app.models import Project
    from app.quality.service import project_stats

    admin = users.create("admin", "admin")
    careful = [users.create(f"careful{i}", "annotator") for i in range(4)]
    clicker = users.create("clicker", "annotator")
    project = make_project(client, admin, overlap=5, allow_ties=False)
    n_items, n_gold = 80, 20
    assert import_lines(client, admin, project["id"], native_lines(n_items)).status_code == 200
    gold_lines = native_lines(n_gold, prefix="g", ranking=True)
    assert import_lines(client, admin, project["id"], gold_lines, gold=True).status_code == 200
    rng = np.random.default_rng(3)
    with session_scope(db_url) as session:
        for comparison, options in comparisons(session, project["id"]):
            ids = [cid for cid, _, _ in options]
            truth = comparison.gold_ranking[0][0] if comparison.is_gold else ids[int(rng.integers(2))]
            for rater in careful:
                top = truth if rng.random() < 0.9 else next(i for i in ids if i != truth)
                add_judgment(session, comparison, rater["id"], [[top], [i for i in ids if i != top]])
            top = ids[int(rng.integers(2))]
            add_judgment(session, comparison, clicker["id"], [[top], [i for i in ids if i != top]])
    with session_scope(db_url) as session:
        figures = project_stats(session, session.get(Project, project["id"]))
    raters = {r["username"]: r for r in figures["raters"]}
    ranked = sorted(raters, key=lambda name: raters[name]["reliability"])
    assert ranked[0] == "clicker", [(n, raters[n]["reliability"]) for n in ranked]
    assert raters["clicker"]["reliability"] < 0.7 < min(raters[r["username"]]["reliability"] for r in careful)
    assert all(raters[name]["gold_judgments"] == n_gold for name in raters)
    assert raters["clicker"]["gold_accuracy"] < min(raters[r["username"]]["gold_accuracy"] for r in careful)
    assert figures["agreement"]["units"] == n_items
    assert len(figures["pairwise_agreement"]) == 10  # every pair of the 5 raters met

    # The export weights read the same reliability.
    from app.datasets.service import rater_weights

    with session_scope(db_url) as session:
        weights = rater_weights(session, session.get(Project, project["id"]))
    assert weights[clicker["id"]] == pytest.approx(raters["clicker"]["reliability"])


def test_agreement_per_attribute_and_on_rank_positions_match_the_krippendorff_package(client, users, db_url):
    from app.models import Project
    from app.quality.service import project_stats

    admin = users.create("admin", "admin")
    raters = [users.create(f"r{i}", "annotator") for i in range(3)]
    project = make_project(client, admin, mode="rank", overlap=3, attributes=[
        {"name": "helpful", "min": 1, "max": 7}, {"name": "harmless", "min": 1, "max": 5}])  # fmt: skip
    assert import_lines(client, admin, project["id"], native_lines(12, k=3)).status_code == 200
    rng = np.random.default_rng(11)
    reliability_data = {"helpful": {}, "harmless": {}, "rank": {}}  # unit -> {rater: value}
    with session_scope(db_url) as session:
        for comparison, options in comparisons(session, project["id"]):
            ids = [cid for cid, _, _ in options]
            base = rng.permutation(3)
            for r, rater in enumerate(raters):
                if r == 2 and comparison.id % 4 == 0:
                    continue  # missing values
                noisy = base + rng.normal(0, 0.8, 3)
                order = [ids[i] for i in np.argsort(noisy)]
                ranking = [[order[0]], order[1:]] if r == 1 else [[c] for c in order]
                scores = {"helpful": {str(c): int(rng.integers(1, 8)) for c in ids},
                          "harmless": {str(c): int(rng.integers(1, 6)) for c in ids[:2]}}  # fmt: skip
                add_judgment(session, comparison, rater["id"], ranking, attributes=scores)
                for name, by_option in scores.items():
                    for option, score in by_option.items():
                        reliability_data[name].setdefault((comparison.id, option), {})[r] = score
                place = 0  # scaled midrank: tied completions share their mean rank, 0 = best .. 1 = worst
                for members in ranking:
                    for c in members:
                        midrank = place + (len(members) - 1) / 2
                        reliability_data["rank"].setdefault((comparison.id, c), {})[r] = midrank / (len(ids) - 1)
                    place += len(members)
    with session_scope(db_url) as session:
        agreement = project_stats(session, session.get(Project, project["id"]))["agreement"]

    def package_alpha(table: dict, level: str = "ordinal") -> float:
        units = sorted(table)
        matrix = np.array([[table[u].get(r, np.nan) for u in units] for r in range(3)], dtype=float)
        return krippendorff.alpha(reliability_data=matrix, level_of_measurement=level)

    for name in ("helpful", "harmless"):
        assert agreement["attributes"][name]["krippendorff_alpha"] == pytest.approx(
            package_alpha(reliability_data[name]), abs=1e-9)  # fmt: skip
        assert agreement["attributes"][name]["units"] == len(reliability_data[name])
    assert agreement["rank_positions"]["krippendorff_alpha"] == pytest.approx(
        package_alpha(reliability_data["rank"], "interval"), abs=1e-9)  # fmt: skip


def test_flags_too_fast_position_and_length_bias(client, users, db_url):
    from app.models import Project
    from app.quality.service import project_stats

    admin = users.create("admin", "admin")
    steady, hasty, longer = (users.create(n, "annotator") for n in ("steady", "hasty", "longer"))
    project = make_project(client, admin, overlap=3, allow_ties=False)
    texts = [("short", "a much longer answer " * (1 + i % 3)) if i % 2 else ("a long long answer " * 3, "tiny")
             for i in range(60)]  # fmt: skip
    import_battles(client, admin, project["id"], [("m1", "m2")] * 60, texts=texts)
    rng = np.random.default_rng(5)
    with session_scope(db_url) as session:
        for comparison, options in comparisons(session, project["id"]):
            ids = [cid for cid, _, _ in options]
            lengths = {cid: len(text) for cid, _, text in options}
            long_id = max(ids, key=lengths.get)
            for rater, time_ms in ((steady, 9000), (hasty, 900), (longer, 7000)):
                order = list(rng.permutation(ids))
                if rater is longer:
                    top = long_id
                elif rater is hasty:
                    top = order[0]  # always the first displayed option
                else:
                    top = ids[int(rng.integers(2))]
                ranking = [[int(top)], [int(i) for i in ids if i != top]]
                add_judgment(session, comparison, rater["id"], ranking, display_order=[int(i) for i in order],
                             time_spent_ms=time_ms)  # fmt: skip
    with session_scope(db_url) as session:
        raters = {r["username"]: r for r in project_stats(session, session.get(Project, project["id"]))["raters"]}
    assert raters["steady"]["flags"] == []
    assert set(raters["hasty"]["flags"]) == {"too_fast", "position_bias"}
    assert raters["longer"]["flags"] == ["length_bias"]


def test_review_queue_resolution_is_audited_and_excluded_judgments_leave_the_statistics(client, users, db_url):
    from app.models import AuditLog, Project

    admin = users.create("admin", "admin")
    engineer = users.create("eng", "engineer")
    r1, r2 = users.create("r1", "annotator"), users.create("r2", "annotator")
    project = make_project(client, admin, overlap=2)
    import_battles(client, admin, project["id"], [("m1", "m2"), ("m1", "m2")])
    with session_scope(db_url) as session:
        (c1, o1), (c2, _) = comparisons(session, project["id"])
        ids = [cid for cid, _, _ in o1]
        add_judgment(session, c1, r1["id"], [[ids[0]], [ids[1]]], flags=["unsafe"], rationale="<b>bad</b>")
        add_judgment(session, c1, r2["id"], [[ids[0]], [ids[1]]])
        add_judgment(session, c2, r1["id"], [[c2.completion_ids[0]], [c2.completion_ids[1]]], flags=["wrong"])
    queue = client.get(f"/api/v1/projects/{project['id']}/reviews", headers=admin["headers"]).json()
    assert [(r["comparison_id"], r["flags"]) for r in queue] == [(c1.id, ["unsafe"]), (c2.id, ["wrong"])]
    assert client.get(f"/api/v1/projects/{project['id']}/reviews", headers=engineer["headers"]).status_code == 403
    board = client.get(f"/api/v1/projects/{project['id']}/leaderboard", headers=admin["headers"]).json()
    assert board["models"][0]["battles"] == 3

    first = queue[0]["judgment_id"]
    response = client.post(f"/api/v1/judgments/{first}/review", json={"resolution": "excluded", "note": "spam"},
                           headers=admin["headers"])  # fmt: skip
    assert response.status_code == 201, response.text
    again = client.post(f"/api/v1/judgments/{first}/review", json={"resolution": "dismissed"}, headers=admin["headers"])
    assert again.status_code == 409
    bad = client.post(f"/api/v1/judgments/{queue[1]['judgment_id']}/review", json={"resolution": "maybe"},
                      headers=admin["headers"])  # fmt: skip
    assert bad.status_code == 422
    remaining = client.get(f"/api/v1/projects/{project['id']}/reviews", headers=admin["headers"]).json()
    assert [r["judgment_id"] for r in remaining] == [queue[1]["judgment_id"]]
    board = client.get(f"/api/v1/projects/{project['id']}/leaderboard", headers=admin["headers"]).json()
    assert board["models"][0]["battles"] == 2  # the excluded judgment no longer counts
    with session_scope(db_url) as session:
        entry = session.scalar(select(AuditLog).where(AuditLog.action == "judgment.review"))
        assert (entry.actor_id, entry.target_id, entry.details) == (admin["id"], first, {"resolution": "excluded"})
        from app.quality.service import project_stats

        stats = project_stats(session, session.get(Project, project["id"]))
        assert {r["username"]: r["judgments"] for r in stats["raters"]} == {"r1": 1, "r2": 1}


def test_batch_priority_and_pause_control_the_queue(client, users, db_url):
    admin = users.create("admin", "admin")
    rater = users.create("rater", "annotator")
    project = make_project(client, admin)
    for batch in ("early", "late"):
        lines = [json.dumps({"prompt": f"{batch} {i}", "completions": [{"text": "a"}, {"text": "b"}],
                             "metadata": {}, "external_id": f"{batch}{i}"}) for i in range(3)]  # fmt: skip
        response = import_lines(client, admin, project["id"], ("\n".join(lines) + "\n").encode())
        assert response.status_code == 200
    from app.models import Comparison

    with session_scope(db_url) as session:  # batches are set at import by other means; name them here
        for comparison in session.scalars(select(Comparison).where(Comparison.project_id == project["id"])):
            comparison.batch = "early" if comparison.id <= 3 else "late"
    response = client.post(f"/api/v1/projects/{project['id']}/batches/priority", json={"batch": "late", "priority": 5},
                           headers=admin["headers"])  # fmt: skip
    assert response.status_code == 200 and response.json()["comparisons"] == 3
    batches = client.get(f"/api/v1/projects/{project['id']}/batches", headers=admin["headers"]).json()
    assert {b["batch"]: b["priority"] for b in batches} == {"early": 0, "late": 5}
    task = next_task(client, rater, project["id"]).json()
    assert task["comparison_id"] > 3  # the late batch jumps the queue
    missing = client.post(f"/api/v1/projects/{project['id']}/batches/priority", json={"batch": "nope", "priority": 1},
                          headers=admin["headers"])  # fmt: skip
    assert missing.status_code == 404

    from app.models import Project
    from app.quality.service import dashboard, set_status

    with session_scope(db_url) as session:
        set_status(session, session.get(Project, project["id"]), "paused", None)
    other = users.create("other", "annotator")
    assert next_task(client, other, project["id"]).status_code in (204, 409)
    with session_scope(db_url) as session:
        figures = dashboard(session, session.get(Project, project["id"]))
    assert figures["queue_depth"] == 6 and figures["eta_hours"] is None
    assert len(figures["judgments_per_hour"]) == 48
