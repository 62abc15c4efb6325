"""Style control recovers a planted truth, and equals an independent fit (statsmodels' logistic regression).

Simulated voters prefer the longer answer by a known margin; the planted best model writes the shortest answers
and the worst the longest. The raw Bradley-Terry ranking comes out wrong, the style-controlled one orders the
models by planted quality, and its coefficients and ratings match statsmodels' GLM (binomial, logit link) on
features computed here from the planted counts, not through app.quality.style."""

from __future__ import annotations

import numpy as np
import pytest

from app.db import session_scope
from tests.helpers import make_project
from tests.quality.builders import add_judgment, comparisons, import_battles

sm = pytest.importorskip("statsmodels.api", reason="statsmodels is in the dev extra")

NAMES = ["alpha", "beta", "gamma", "delta"]
QUALITY = np.array([1.2, 0.4, -0.4, -1.2])
"""Planted log-strengths, best first."""
MEAN_LENGTH = np.array([120.0, 250.0, 500.0, 1000.0])
"""The best model writes the shortest answers."""
LENGTH_EFFECT = 6.0
"""Votes' log-odds per unit of relative length difference (a - b) / (a + b)."""
ELO = 400 / np.log(10)


def independent_features(counts_a: np.ndarray, counts_b: np.ndarray) -> np.ndarray:
    total = counts_a + counts_b
    relative = np.divide(counts_a - counts_b, total, out=np.zeros_like(total), where=total > 0)
    return (relative - relative.mean(axis=0)) / relative.std(axis=0)


def statsmodels_fit(a, b, outcome, features):
    """(ratings on the Elo scale centred at 1000, feature coefficients, their standard errors)."""
    n = len(a)
    x = np.zeros((n, len(NAMES) - 1 + features.shape[1]))
    rows = np.arange(n)
    x[rows[a > 0], a[a > 0] - 1] = 1.0
    x[rows[b > 0], b[b > 0] - 1] = -1.0
    x[:, len(NAMES) - 1 :] = features
    fit = sm.GLM(outcome, x, family=sm.families.Binomial()).fit(tol=1e-13, maxiter=200)
    theta = np.concatenate(([0.0], fit.params[: len(NAMES) - 1]))
    return 1000 + ELO * (theta - theta.mean()), fit.params[len(NAMES) - 1 :], fit.bse[len(NAMES) - 1 :]


def planted_battles(n: int, seed: int):
    """Model pairs, style counts per side (characters, headers, list items, bold) and voters' outcomes
    (including ties: a coin flip near even odds)."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 4, n)
    b = (a + rng.integers(1, 4, n)) % 4
    counts = []
    for side in (a, b):
        length = np.round(np.exp(np.log(MEAN_LENGTH[side]) + rng.normal(0, 0.7, n))) + 40
        markdown = rng.integers(0, 4, (n, 3)).astype(float)  # headers, lists, bold: no effect on votes
        counts.append(np.column_stack((length, markdown)))
    relative_length = (counts[0][:, 0] - counts[1][:, 0]) / (counts[0][:, 0] + counts[1][:, 0])
    p = 1 / (1 + np.exp(-(QUALITY[a] - QUALITY[b] + LENGTH_EFFECT * relative_length)))
    u = rng.random(n)
    outcome = np.where(np.abs(u - p) < 0.03, 0.5, (u < p).astype(float))
    return a, b, counts[0], counts[1], outcome


def order(ratings) -> list[str]:
    return [NAMES[i] for i in np.argsort(-np.asarray(ratings))]


def test_style_control_recovers_planted_quality_and_matches_statsmodels():
    from app.quality.stats import bradley_terry
    from app.quality.style import style_controlled_bradley_terry, style_differences

    a, b, counts_a, counts_b, outcome = planted_battles(3000, seed=3)
    raw = bradley_terry(a, b, outcome, 4, bootstrap=0)
    assert order(raw.ratings) != NAMES, "the planted length bias must fool the raw ranking"
    assert order(raw.ratings)[0] == "delta"

    features = style_differences(counts_a, counts_b)
    np.testing.assert_allclose(features, independent_features(counts_a, counts_b), atol=1e-12)
    controlled = style_controlled_bradley_terry(a, b, outcome, features, 4)
    assert order(controlled.ratings) == NAMES
    ratings, coefficients, standard_errors = statsmodels_fit(a, b, outcome, features)
    np.testing.assert_allclose(controlled.coefficients, coefficients, atol=1e-3)
    np.testing.assert_allclose(controlled.ratings, ratings, atol=1e-3)
    np.testing.assert_allclose((controlled.coefficient_ci_high - controlled.coefficient_ci_low) / (2 * 1.959964),
                               standard_errors, rtol=1e-3)  # fmt: skip
    # Length is the planted cause: its coefficient is clearly positive, the markdown ones' intervals hold 0.
    assert controlled.coefficient_ci_low[0] > 0.5
    assert all(controlled.coefficient_ci_low[k] < 0 < controlled.coefficient_ci_high[k] for k in (1, 2, 3))
    assert np.all(controlled.ci_low < controlled.ratings) and np.all(controlled.ratings < controlled.ci_high)


def test_a_feature_that_never_varies_has_no_coefficient():
    from app.quality.style import style_controlled_bradley_terry, style_differences

    a, b, counts_a, counts_b, outcome = planted_battles(400, seed=5)
    counts_a[:, 1:], counts_b[:, 1:] = 0.0, 0.0  # no markdown anywhere
    controlled = style_controlled_bradley_terry(a, b, outcome, style_differences(counts_a, counts_b), 4)
    assert np.isfinite(controlled.coefficients[0]) and np.all(np.isnan(controlled.coefficients[1:]))
    assert order(controlled.ratings) == NAMES


def test_style_counts_reads_markdown():
    from app.quality.style import style_counts

    text = "# Title\n\nIntro with **bold** and __more__.\n\n## Part\n- one\n* two\n  + three\n1. first\n10. tenth\n#no"
    assert style_counts(text) == (float(len(text)), 2.0, 5.0, 2.0)
    assert style_counts("") == (0.0, 0.0, 0.0, 0.0)


def planted_text(length: float, headers: float, lists: float, bold: float, tag: str) -> str:
    body = "".join(["# Head\n"] * int(headers) + ["- item\n"] * int(lists) + ["**b** "] * int(bold)) + tag
    return body + "x" * max(0, int(length) - len(body))


def test_leaderboard_shows_the_style_controlled_ranking_beside_the_raw_one(client, users, db_url):
    admin = users.create("admin", "admin")
    engineer = users.create("eng", "engineer")
    rater = users.create("rater", "annotator")
    project = make_project(client, admin)
    a, b, counts_a, counts_b, outcome = planted_battles(400, seed=11)
    texts = [(planted_text(*counts_a[i], tag=f"q{i}a"), planted_text(*counts_b[i], tag=f"q{i}b"))
             for i in range(len(a))]  # fmt: skip
    import_battles(
        client, admin, project["id"], [(NAMES[a[i]], NAMES[b[i]]) for i in range(len(a))], texts=texts
    )
    lengths = {}
    with session_scope(db_url) as session:
        for i, (comparison, options) in enumerate(comparisons(session, project["id"])):
            (first, _, first_text), (second, _, second_text) = options
            lengths[i] = (len(first_text), len(second_text))
            ranking = (
                [[first, second]]
                if outcome[i] == 0.5
                else [[first], [second]]
                if outcome[i]
                else [[second], [first]]
            )
            add_judgment(session, comparison, rater["id"], ranking)
    # The stored texts are the planted ones (the import keeps them), so the features computed here are the app's.
    counts_a[:, 0] = [lengths[i][0] for i in range(len(a))]
    counts_b[:, 0] = [lengths[i][1] for i in range(len(a))]

    response = client.get(f"/api/v1/projects/{project['id']}/leaderboard", headers=engineer["headers"])
    assert response.status_code == 200, response.text
    board = response.json()
    raw = [m["name"] for m in board["models"]]
    controlled = [m["name"] for m in board["style_controlled"]]
    assert raw != NAMES and controlled == NAMES
    ratings, coefficients, standard_errors = statsmodels_fit(
        a, b, outcome, independent_features(counts_a, counts_b)
    )
    got = {c["feature"]: c for c in board["style_coefficients"]}
    assert list(got) == ["length", "headers", "lists", "bold"]
    for k, feature in enumerate(got):
        assert abs(got[feature]["coefficient"] - coefficients[k]) < 1e-3, (
            feature,
            got[feature],
            coefficients[k],
        )
        assert (
            abs((got[feature]["ci_high"] - got[feature]["ci_low"]) / (2 * 1.959964) - standard_errors[k])
            < 1e-3
        )
    for m in board["style_controlled"]:
        assert abs(m["rating"] - ratings[NAMES.index(m["name"])]) < 0.01
        assert m["ci_low"] < m["rating"] < m["ci_high"] and m["battles"] == next(
            r["battles"] for r in board["models"] if r["name"] == m["name"]
        )

    page = client.get(
        f"/projects/{project['id']}/leaderboard", headers=engineer["headers"] | {"Accept": "text/html"}
    )
    assert page.status_code == 200
    assert 'id="leaderboard-style-controlled"' in page.text and 'id="style-coefficients"' in page.text
