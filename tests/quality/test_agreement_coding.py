"""Agreement figures with simulated raters: random raters give alpha near 0 (within a bound computed from the
sample size), perfectly agreeing raters give 1, and raters following a planted truth with noise give what the
`krippendorff` package gives on the same data coded independently here (the winner's position in the stored
order, a tie its own value; scaled midranks for rank positions).

The pure tests drive the statistics core through the service's codings; the database tests go through
`project_stats` on both databases (they failed before the coding fix: random raters scored about 0.5)."""

from __future__ import annotations

import krippendorff
import numpy as np
import pytest

from app.db import session_scope
from app.quality import stats
from tests.helpers import import_lines, make_project, native_lines
from tests.quality.builders import add_judgment, comparisons

Z = 4.0
"""Standard errors allowed between a random raters' alpha and 0 (a false alarm about once in 16,000 runs)."""


def random_alpha_bound(n_independent_units: int, expected_disagreement: float, value_range: float = 1.0) -> float:
    """Z standard errors of alpha for raters without any agreement: alpha = 1 - D_o / D_e, and D_o is a mean over
    independent units of a per-unit disagreement within [0, value_range], whose standard deviation is at most
    value_range / 2 (Popoviciu), so SE(alpha) <= value_range / (2 D_e sqrt(n))."""
    return Z * value_range / (2.0 * expected_disagreement * np.sqrt(n_independent_units))


def simulate_pairwise(rng, n_units: int, n_raters: int, per_unit: int, *, accuracy: float | None, tie_share=0.1):
    """Comparisons of two completions with ids unique to each comparison; each unit gets `per_unit` distinct
    raters. accuracy None: raters pick A, B or tie at random; otherwise a planted truth (position or tie) that
    each rater gives with probability `accuracy`, else another answer at random. Returns long arrays and the
    stored option ids per judgment, plus the independent coding (position, -1 for a tie)."""
    ids = rng.permutation(10 * n_units * 2)[: 2 * n_units].reshape(n_units, 2) + 1000  # arbitrary, unique ids
    truth = np.where(rng.random(n_units) < tie_share, -1, rng.integers(0, 2, n_units))
    unit, rater, position = [], [], []
    for u in range(n_units):
        for r in rng.choice(n_raters, per_unit, replace=False):
            if accuracy is None:
                answer = int(rng.integers(-1, 2))
            elif rng.random() < accuracy:
                answer = int(truth[u])
            else:
                answer = int(rng.choice([a for a in (-1, 0, 1) if a != truth[u]]))
            unit.append(u)
            rater.append(int(r))
            position.append(answer)
    unit, rater, position = np.array(unit), np.array(rater), np.array(position, dtype=float)
    top = np.where(position < 0, np.nan, ids[unit, np.maximum(position, 0).astype(int)])
    return unit, rater, top, ids[unit].astype(float), position


def package_alpha(unit, rater, value, level="nominal") -> float:
    units, u = np.unique(unit, return_inverse=True)
    raters, r = np.unique(rater, return_inverse=True)
    matrix = np.full((len(raters), len(units)), np.nan)
    matrix[r, u] = value
    return krippendorff.alpha(reliability_data=matrix, level_of_measurement=level)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_pairwise_raters_score_alpha_near_zero(seed):
    rng = np.random.default_rng(seed)
    n_units = 6000
    unit, rater, top, options, _ = simulate_pairwise(rng, n_units, 30, 3, accuracy=None)
    by_id = stats.krippendorff_alpha(unit, rater, np.where(np.isnan(top), -1, top)).alpha
    alpha = stats.krippendorff_alpha(unit, rater, stats.top_choice_codes(top, options)).alpha
    bound = random_alpha_bound(n_units, expected_disagreement=2 / 3)
    assert abs(alpha) < bound, (alpha, bound)
    assert by_id > 0.2  # the old coding by completion id: inflated whatever the raters do (0.5 without ties)


def test_perfectly_agreeing_raters_score_one():
    rng = np.random.default_rng(5)
    unit, rater, top, options, _ = simulate_pairwise(rng, 500, 10, 4, accuracy=1.0)
    assert stats.krippendorff_alpha(unit, rater, stats.top_choice_codes(top, options)).alpha == pytest.approx(1.0)


@pytest.mark.parametrize("accuracy", [0.5, 0.7, 0.9])
def test_planted_truth_with_noise_matches_the_package_on_position_coding(accuracy):
    rng = np.random.default_rng(int(accuracy * 10))
    unit, rater, top, options, position = simulate_pairwise(rng, 400, 12, 3, accuracy=accuracy)
    missing = rng.random(len(unit)) < 0.05  # some judgments missing
    unit, rater, top, options, position = unit[~missing], rater[~missing], top[~missing], options[~missing], position[~missing]
    code = stats.top_choice_codes(top, options)
    assert np.array_equal(code, position)
    ours = stats.krippendorff_alpha(unit, rater, code).alpha
    assert ours == pytest.approx(package_alpha(unit, rater, position), abs=1e-10)


def test_top_choice_codes_and_scaled_midranks_on_small_cases():
    options = np.array([[7, 9, np.nan], [7, 9, np.nan], [4, 5, 6], [4, 5, 6]])
    assert stats.top_choice_codes([9, np.nan, 6, 8], options).tolist()[:3] == [1.0, -1.0, 2.0]
    assert np.isnan(stats.top_choice_codes([9, np.nan, 6, 8], options)[3])  # not an option
    # one judgment [[a], [b], [c]], one [[a, b], [c]], one [[a], [b, c, d]]
    judgment = np.array([1, 1, 1, 2, 2, 2, 3, 3, 3, 3])
    group = np.array([0, 1, 2, 0, 0, 1, 0, 1, 1, 1])
    assert stats.scaled_midranks(judgment, group) == pytest.approx([0, 0.5, 1, 0.25, 0.25, 1, 0, 2 / 3, 2 / 3, 2 / 3])


def random_rankings(rng, n_comparisons: int, per_unit: int, n_raters: int, sizes=(3, 4), tie_share=0.2):
    """Random rankings (with some ties) of comparisons with 3 or 4 options: long arrays per ranked element."""
    judgment, unit, rater, group = [], [], [], []
    j = 0
    for c in range(n_comparisons):
        k = int(rng.choice(sizes))
        for r in rng.choice(n_raters, per_unit, replace=False):
            order = rng.permutation(k)
            groups = np.cumsum(np.concatenate(([0], rng.random(k - 1) >= tie_share)))
            for place, option in enumerate(order):
                judgment.append(j)
                unit.append(c * 10 + option)
                rater.append(int(r))
                group.append(int(groups[place]))
            j += 1
    return np.array(judgment), np.array(unit), np.array(rater), np.array(group)


def test_random_rankers_score_rank_position_alpha_near_zero_with_mixed_sizes_and_ties():
    rng = np.random.default_rng(7)
    n = 3000
    judgment, unit, rater, group = random_rankings(rng, n, 3, 20)
    alpha = stats.krippendorff_alpha(unit, rater, stats.scaled_midranks(judgment, group), "interval").alpha
    # D_e of uniform ranks on [0, 1] is 2 var >= 2 * (1/6 of 3 options... at least 0.3); one comparison's
    # units are dependent, so count comparisons, not units, as independent.
    bound = random_alpha_bound(n, expected_disagreement=0.3)
    assert abs(alpha) < bound, (alpha, bound)
    by_group = stats.krippendorff_alpha(unit, rater, group.astype(float), "ordinal").alpha
    assert by_group > alpha  # the old coding: tie-group index, ordinal


# ---------------------------------------------------------------------------------------------------------------
# through the service and a real database
# ---------------------------------------------------------------------------------------------------------------


def _pairwise_project_with(client, users, db_url, n_items, answer, *, n_raters=3, seed=0):
    """A pairwise project with n_items comparisons, each judged by every rater; answer(rng, truth, rater) gives
    the position chosen (0, 1, or -1 for a tie). Returns the figures and the independent position coding."""
    from app.models import Project
    from app.quality.service import project_stats

    admin = users.create("admin", "admin")
    raters = [users.create(f"r{i}", "annotator") for i in range(n_raters)]
    project = make_project(client, admin, overlap=n_raters, allow_ties=True)
    assert import_lines(client, admin, project["id"], native_lines(n_items)).status_code == 200
    rng = np.random.default_rng(seed)
    coded: dict[tuple[int, int], int] = {}
    with session_scope(db_url) as session:
        for comparison, options in comparisons(session, project["id"]):
            ids = [cid for cid, _, _ in options]
            truth = int(rng.integers(-1, 2))
            for r, rater in enumerate(raters):
                position = answer(rng, truth, r)
                ranking = [ids] if position < 0 else [[ids[position]], [ids[1 - position]]]
                add_judgment(session, comparison, rater["id"], ranking)
                coded[(comparison.id, r)] = position
    with session_scope(db_url) as session:
        figures = project_stats(session, session.get(Project, project["id"]))
    return figures, coded


def test_service_alpha_of_random_raters_is_near_zero(client, users, db_url):
    n_items = 200
    # A or B at random (no ties: the id coding treated a tie as one shared value, which hid half the inflation)
    figures, _ = _pairwise_project_with(client, users, db_url, n_items, lambda rng, truth, r: int(rng.integers(0, 2)))
    agreement = figures["agreement"]
    assert agreement["units"] == n_items
    bound = random_alpha_bound(n_items, expected_disagreement=1 / 2)
    assert abs(agreement["krippendorff_alpha"]) < bound, (agreement["krippendorff_alpha"], bound)
    assert "position" in agreement["coding"]


def test_service_alpha_of_perfect_raters_is_one(client, users, db_url):
    figures, _ = _pairwise_project_with(client, users, db_url, 30, lambda rng, truth, r: truth)
    assert figures["agreement"]["krippendorff_alpha"] == pytest.approx(1.0)


def test_service_alpha_of_noisy_raters_matches_the_package(client, users, db_url):
    def answer(rng, truth, r):
        return truth if rng.random() < 0.7 else int(rng.choice([a for a in (-1, 0, 1) if a != truth]))

    figures, coded = _pairwise_project_with(client, users, db_url, 60, answer, seed=4)
    unit = np.array([u for u, _ in coded])
    rater = np.array([r for _, r in coded])
    value = np.array(list(coded.values()), dtype=float)
    assert figures["agreement"]["krippendorff_alpha"] == pytest.approx(package_alpha(unit, rater, value), abs=1e-9)


def test_service_rank_position_alpha_of_random_rankers_is_near_zero(client, users, db_url):
    from app.models import Project
    from app.quality.service import project_stats

    admin = users.create("admin", "admin")
    raters = [users.create(f"r{i}", "annotator") for i in range(3)]
    project = make_project(client, admin, mode="rank", overlap=3)
    n_each = 60
    for k, prefix in ((3, "a"), (4, "b")):
        assert import_lines(client, admin, project["id"], native_lines(n_each, k=k, prefix=prefix)).status_code == 200
    rng = np.random.default_rng(9)
    with session_scope(db_url) as session:
        for comparison, options in comparisons(session, project["id"]):
            ids = [cid for cid, _, _ in options]
            for rater in raters:
                order = [ids[i] for i in rng.permutation(len(ids))]
                ranking = [[order[0], order[1]], order[2:]] if rng.random() < 0.2 else [[c] for c in order]
                add_judgment(session, comparison, rater["id"], ranking)
    with session_scope(db_url) as session:
        agreement = project_stats(session, session.get(Project, project["id"]))["agreement"]
    rank = agreement["rank_positions"]
    assert rank["units"] == n_each * 7
    bound = random_alpha_bound(2 * n_each, expected_disagreement=0.3)
    assert abs(rank["krippendorff_alpha"]) < bound, (rank, bound)
    assert abs(agreement["krippendorff_alpha"]) < random_alpha_bound(2 * n_each, expected_disagreement=0.6)
