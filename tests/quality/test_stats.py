"""Tests of the quality statistics core against independent references: the `krippendorff` package,
brute-force loops, a direct per-battle maximum-likelihood fit, planted rater behaviours, and real
OpenAssistant rankings."""

import json
import math
from itertools import combinations

import krippendorff
import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import expit, log_expit

from app.quality.stats import (
    ELO_MEAN,
    ELO_PER_NATURAL_LOG_ODDS,
    FLAG_LENGTH_BIAS,
    FLAG_POSITION_BIAS,
    FLAG_TOO_FAST,
    LEVELS,
    FlagThresholds,
    ReliabilityArgs,
    agreement_with_majority,
    bradley_terry,
    krippendorff_alpha,
    pairwise_rater_agreement,
    rater_flags,
    rater_reliability,
)
from tests.conftest import SHARED_DATA

OASST_TREES = SHARED_DATA / "oasst_en_100_trees.jsonl"


# ---------------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------------


def matrix_to_long(reliability_data: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(raters x units) matrix with NaN = missing, as the krippendorff package takes it, to long arrays
    (shuffled, with unit and rater ids that are neither contiguous nor zero-based)."""
    rater, unit = np.nonzero(~np.isnan(reliability_data))
    value = reliability_data[rater, unit]
    order = np.random.default_rng(1).permutation(len(value))
    return unit[order] * 7 + 1000, rater[order] * 3 + 5, value[order]


def random_reliability_data(seed: int, raters: int, units: int, values: int, missing: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, values, units)
    noisy = np.where(rng.random((raters, units)) < 0.6, truth, rng.integers(0, values, (raters, units)))
    data = noisy.astype(float) * 1.5 - 2.0  # values need not be 0..k-1
    data[rng.random((raters, units)) < missing] = np.nan
    return data


def direct_bradley_terry(a, b, outcome, n_models, prior_ties=0.0) -> np.ndarray:
    """Reference maximum likelihood on the raw per-battle log-likelihood (no aggregation), as Elo ratings."""
    pin_first = prior_ties == 0.0  # without the prior the likelihood is invariant to a shift: fix model 0

    def negative_log_likelihood(free):
        theta = np.concatenate(([0.0], free)) if pin_first else free
        difference = theta[a] - theta[b]
        log_likelihood = np.sum(outcome * log_expit(difference) + (1 - outcome) * log_expit(-difference))
        residual = outcome - expit(difference)
        gradient = np.zeros(n_models)
        np.add.at(gradient, a, residual)
        np.add.at(gradient, b, -residual)
        log_likelihood += prior_ties * np.sum(0.5 * log_expit(theta) + 0.5 * log_expit(-theta))
        gradient += prior_ties * (0.5 - expit(theta))
        return -log_likelihood, -(gradient[1:] if pin_first else gradient)

    start = np.zeros(n_models - 1 if pin_first else n_models)
    result = minimize(
        negative_log_likelihood,
        start,
        jac=True,
        method="L-BFGS-B",
        options={"gtol": 1e-10, "ftol": 1e-15, "maxiter": 10_000},
    )
    theta = np.concatenate(([0.0], result.x)) if pin_first else result.x
    return ELO_MEAN + ELO_PER_NATURAL_LOG_ODDS * (theta - theta.mean())


def simulate_battles(seed: int, strengths: np.ndarray, n_battles: int, tie_share: float = 0.0):
    rng = np.random.default_rng(seed)
    n = len(strengths)
    a = rng.integers(0, n, n_battles)
    b = (a + rng.integers(1, n, n_battles)) % n
    outcome = (rng.random(n_battles) < expit(strengths[a] - strengths[b])).astype(float)
    outcome[rng.random(n_battles) < tie_share] = 0.5
    return a, b, outcome


def load_oasst_sibling_groups() -> list[list[dict]]:
    """Groups of >= 2 ranked assistant replies to the same message, each group in message-id order (the file
    lists replies best first, so message ids give an order unrelated to the ranking)."""
    if not OASST_TREES.exists():
        pytest.skip(
            f"reference data absent: {OASST_TREES} (set RANKFORGE_SHARED_DATA to the shared data folder)"
        )
    groups = []

    def walk(message):
        ranked = [
            r for r in message.get("replies", []) if r["role"] == "assistant" and r.get("rank") is not None
        ]
        if len(ranked) >= 2:
            groups.append(sorted(ranked, key=lambda reply: reply["message_id"]))
        for reply in message.get("replies", []):
            walk(reply)

    with OASST_TREES.open() as lines:
        for line in lines:
            walk(json.loads(line)["prompt"])
    return groups


# ---------------------------------------------------------------------------------------------------------------
# 1. agreement
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize(("seed", "missing"), [(0, 0.0), (1, 0.3), (2, 0.6)])
def test_alpha_matches_krippendorff_package_on_random_data(level, seed, missing):
    data = random_reliability_data(seed, raters=7, units=300, values=5, missing=missing)
    result = krippendorff_alpha(*matrix_to_long(data), level=level)
    assert result.units == int(np.sum(np.sum(~np.isnan(data), axis=0) >= 2))
    assert result.alpha == pytest.approx(krippendorff.alpha(data, level_of_measurement=level), abs=1e-10)


@pytest.mark.parametrize("level", LEVELS)
def test_alpha_matches_package_on_continuous_values_with_single_value_units(level):
    rng = np.random.default_rng(5)
    truth = rng.normal(size=200)
    data = truth + rng.normal(scale=0.7, size=(4, 200))
    data = np.round(data, 1)  # ties between raters, many distinct values
    data[:, :20] = np.nan
    data[0, :20] = 1.0  # 20 units with a single value: not pairable, must not count
    result = krippendorff_alpha(*matrix_to_long(data), level=level)
    assert result.units == 180
    assert result.alpha == pytest.approx(krippendorff.alpha(data, level_of_measurement=level), abs=1e-10)


def test_alpha_is_one_for_perfect_agreement_and_none_when_undefined():
    unit = np.array([1, 1, 2, 2, 3, 3])
    rater = np.array([1, 2, 1, 2, 1, 2])
    assert krippendorff_alpha(unit, rater, np.array([0, 0, 1, 1, 2, 2.0]), "ordinal").alpha == pytest.approx(
        1.0
    )
    assert krippendorff_alpha(unit, rater, np.ones(6)).alpha is None  # no variation at all
    lonely = krippendorff_alpha(np.array([1, 2]), np.array([1, 1]), np.array([0.0, 1.0]))
    assert (lonely.alpha, lonely.units) == (None, 0)
    empty = krippendorff_alpha(np.array([], int), np.array([], int), np.array([]))
    assert (empty.alpha, empty.units) == (None, 0)


def test_alpha_rejects_bad_input():
    with pytest.raises(ValueError, match="more than one value"):
        krippendorff_alpha(np.array([1, 1]), np.array([4, 4]), np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="level"):
        krippendorff_alpha(np.array([1]), np.array([1]), np.array([1.0]), level="ratio")
    with pytest.raises(ValueError, match="same length"):
        krippendorff_alpha(np.array([1, 2]), np.array([1]), np.array([1.0]))


def test_pairwise_rater_agreement_matches_brute_force():
    data = random_reliability_data(3, raters=6, units=200, values=3, missing=0.4)
    unit, rater, value = matrix_to_long(data)
    expected = {}
    for r1, r2 in combinations(range(data.shape[0]), 2):
        both = ~np.isnan(data[r1]) & ~np.isnan(data[r2])
        if both.any():
            expected[(r1 * 3 + 5, r2 * 3 + 5)] = (np.mean(data[r1, both] == data[r2, both]), int(both.sum()))
    result = pairwise_rater_agreement(unit, rater, value)
    assert result.keys() == expected.keys()
    for pair, (share, n_common) in expected.items():
        assert result[pair][1] == n_common
        assert result[pair][0] == pytest.approx(share)


def test_agreement_with_majority_matches_brute_force_with_split_credit_for_tied_modes():
    data = random_reliability_data(4, raters=5, units=300, values=3, missing=0.5)
    unit, rater, value = matrix_to_long(data)
    credit: dict[int, list[float]] = {}
    for column in data.T:
        present = np.flatnonzero(~np.isnan(column))
        if len(present) < 2:
            continue
        values, counts = np.unique(column[present], return_counts=True)
        modes = set(values[counts == counts.max()])
        for r in present:
            credit.setdefault(int(r) * 3 + 5, []).append(1.0 / len(modes) if column[r] in modes else 0.0)
    result = agreement_with_majority(unit, rater, value)
    assert result.keys() == credit.keys()
    for rater_id, scores in credit.items():
        assert result[rater_id][1] == len(scores)
        assert result[rater_id][0] == pytest.approx(np.mean(scores))


def test_agreement_with_majority_rule_on_small_cases():
    # unit 1: 2-1 majority; unit 2: two raters disagree (tied modes); unit 3: a single judgment (not counted).
    unit = np.array([1, 1, 1, 2, 2, 3])
    rater = np.array([10, 11, 12, 10, 11, 12])
    value = np.array([0, 0, 1, 0, 1, 1.0])
    result = agreement_with_majority(unit, rater, value)
    assert result == {10: (pytest.approx(0.75), 2), 11: (pytest.approx(0.75), 2), 12: (0.0, 1)}


# ---------------------------------------------------------------------------------------------------------------
# 2. leaderboard
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tie_share", [0.0, 0.2])
def test_bradley_terry_matches_direct_per_battle_maximum_likelihood(tie_share):
    strengths = np.array([-1.2, -0.4, 0.0, 0.3, 0.9, 1.6])
    a, b, outcome = simulate_battles(0, strengths, 4000, tie_share)
    board = bradley_terry(a, b, outcome, len(strengths), bootstrap=0)
    assert board.prior_ties == 0.0
    np.testing.assert_allclose(board.ratings, direct_bradley_terry(a, b, outcome, len(strengths)), atol=1.0)
    assert np.mean(board.ratings) == pytest.approx(ELO_MEAN)
    assert np.all(np.isnan(board.ci_low)) and np.all(np.isnan(board.ci_high))
    assert np.array_equal(board.battles, np.bincount(a, minlength=6) + np.bincount(b, minlength=6))


def test_bradley_terry_recovers_planted_ratings_with_bootstrap_intervals():
    strengths = np.linspace(-1.5, 1.5, 10)
    planted = ELO_MEAN + ELO_PER_NATURAL_LOG_ODDS * strengths
    a, b, outcome = simulate_battles(1, strengths, 50_000)
    board = bradley_terry(a, b, outcome, 10, bootstrap=300, seed=3)
    assert np.all(board.ci_low < board.ratings) and np.all(board.ratings < board.ci_high)
    assert np.all(np.abs(board.ratings - planted) < 3 * (board.ci_high - board.ci_low) / 3.92 + 1.0)
    assert np.all(np.diff(board.ratings) > 0)
    small = bradley_terry(a[:2000], b[:2000], outcome[:2000], 10, bootstrap=300, seed=3)
    assert np.all(small.ci_high - small.ci_low > board.ci_high - board.ci_low)  # less data, wider intervals
    # The seed fixes the bootstrap, however the replicates are batched.
    again = bradley_terry(a, b, outcome, 10, bootstrap=300, seed=3, max_cells_per_chunk=7 * 100)
    np.testing.assert_allclose(again.ci_low, board.ci_low, atol=1e-6)
    np.testing.assert_allclose(again.ci_high, board.ci_high, atol=1e-6)


def test_bradley_terry_win_rates_count_ties_half():
    a = np.array([0, 0, 1, 0, 2])
    b = np.array([1, 1, 0, 2, 1])
    outcome = np.array([1.0, 0.5, 1.0, 0.0, 0.5])
    board = bradley_terry(a, b, outcome, 4, bootstrap=20)
    # model 0 vs 1: a win, a tie and a loss.
    assert board.win_rates[0, 1] == pytest.approx(0.5) and board.win_rates[1, 0] == pytest.approx(0.5)
    assert board.win_rates[0, 2] == 0.0 and board.win_rates[2, 0] == 1.0
    assert board.win_rates[2, 1] == pytest.approx(0.5)
    assert np.isnan(board.win_rates[0, 3]) and np.isnan(board.ratings[3]) and board.battles[3] == 0
    assert np.nanmean(board.ratings) == pytest.approx(ELO_MEAN)


def test_bradley_terry_uses_the_prior_only_for_an_undefeated_model_and_matches_penalized_direct_fit():
    strengths = np.array([-0.5, 0.0, 0.5, 1.0])
    a, b, outcome = simulate_battles(2, strengths, 600)
    # Model 4 wins every one of its 30 battles: no finite maximum likelihood estimate without a prior.
    rng = np.random.default_rng(4)
    a = np.concatenate((a, np.full(30, 4)))
    b = np.concatenate((b, rng.integers(0, 4, 30)))
    outcome = np.concatenate((outcome, np.ones(30)))
    board = bradley_terry(a, b, outcome, 5, bootstrap=100)
    assert board.prior_ties == 1.0
    assert np.all(np.isfinite(board.ratings)) and np.argmax(board.ratings) == 4
    np.testing.assert_allclose(
        board.ratings, direct_bradley_terry(a, b, outcome, 5, prior_ties=1.0), atol=1.0
    )
    assert np.all(board.ci_low <= board.ratings) and np.all(board.ratings <= board.ci_high)


def test_bradley_terry_rejects_bad_input():
    with pytest.raises(ValueError, match="two different models"):
        bradley_terry(np.array([1]), np.array([1]), np.array([1.0]), 3)
    with pytest.raises(ValueError, match="outcome"):
        bradley_terry(np.array([0]), np.array([1]), np.array([0.7]), 3)
    with pytest.raises(ValueError, match="model indexes"):
        bradley_terry(np.array([0]), np.array([3]), np.array([1.0]), 3)
    empty = bradley_terry(np.array([], int), np.array([], int), np.array([]), 3)
    assert np.all(np.isnan(empty.ratings)) and np.all(empty.battles == 0)


# ---------------------------------------------------------------------------------------------------------------
# 3. rater reliability
# ---------------------------------------------------------------------------------------------------------------


def simulate_one_coin(seed, accuracies, n_units, overlap, n_categories, gold_share):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, n_categories, n_units)
    raters = np.argsort(rng.random((n_units, len(accuracies))), axis=1)[:, :overlap]
    unit = np.repeat(np.arange(n_units), overlap)
    rater = raters.ravel()
    correct = rng.random(len(unit)) < np.asarray(accuracies)[rater]
    wrong = (truth[unit] + rng.integers(1, n_categories, len(unit))) % n_categories  # uniform other category
    value = np.where(correct, truth[unit], wrong).astype(float)
    gold_units = np.flatnonzero(rng.random(n_units) < gold_share)
    return unit, rater, value, (gold_units, truth[gold_units].astype(float))


@pytest.mark.parametrize("n_categories", [2, 3])
def test_reliability_recovers_planted_accuracies_and_ranks_random_clicker_last(n_categories):
    chance = 1.0 / n_categories
    planted = np.array([0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, chance])
    unit, rater, value, gold = simulate_one_coin(0, planted, 6000, 3, n_categories, gold_share=0.05)
    reliability = rater_reliability(unit, rater, value, n_categories, gold=gold)
    estimated = np.array([reliability[r] for r in range(len(planted))])
    assert np.argmin(estimated) == len(planted) - 1
    np.testing.assert_allclose(estimated, planted, atol=0.035)
    assert np.all(np.diff(estimated[:-1]) < 0)  # the planted order is recovered


def test_reliability_without_gold_and_with_per_judgment_category_counts():
    planted = np.array([0.9, 0.8, 0.7, 0.5])
    unit, rater, value, _ = simulate_one_coin(1, planted, 4000, 3, 2, gold_share=0.0)
    reliability = rater_reliability(unit, rater, value, np.full(len(unit), 2))
    np.testing.assert_allclose([reliability[r] for r in range(4)], planted, atol=0.04)


def test_gold_units_clamp_the_truth():
    # Every unit is gold: the posterior is the gold answer, so reliability is the smoothed gold accuracy.
    planted = np.array([0.9, 0.6, 0.5])
    unit, rater, value, (gold_units, gold_values) = simulate_one_coin(2, planted, 300, 2, 3, gold_share=1.0)
    truth = dict(zip(gold_units.tolist(), gold_values.tolist(), strict=True))
    reliability = rater_reliability(unit, rater, value, 3, gold=truth)
    for r in range(3):
        mine = rater == r
        correct = sum(value[i] == truth[unit[i]] for i in np.flatnonzero(mine))
        assert reliability[r] == pytest.approx((correct + 1) / (mine.sum() + 2))


def test_gold_outweighs_a_wrong_majority():
    # Two sloppy raters agree with each other on a gold unit against the truth; the third rater is right.
    # Gold makes the lone dissenter the reliable one.
    unit = np.array([1, 1, 1, 2, 2, 2, 3, 3, 3])
    rater = np.array([7, 8, 9, 7, 8, 9, 7, 8, 9])
    value = np.array([0, 0, 1, 1, 1, 0, 0, 0, 1.0])
    without_gold = rater_reliability(unit, rater, value, 2)
    with_gold = rater_reliability(unit, rater, value, 2, gold={1: 1.0, 2: 0.0, 3: 1.0})
    assert without_gold[9] < without_gold[7]
    assert with_gold[9] > with_gold[7] and with_gold[9] > with_gold[8]


def _one_coin_by_enumeration(unit, rater, value, k, gold, args=ReliabilityArgs()):
    """The one-coin Dawid-Skene EM written out unit by unit, every truth enumerated: the model itself, none of
    rater_reliability's coding (cells, closed forms for gold and single votes, blocks)."""
    raters = sorted(set(rater.tolist()))
    votes = {u: [(r, v) for uu, r, v in zip(unit.tolist(), rater.tolist(), value.tolist(), strict=True) if uu == u]
             for u in sorted(set(unit.tolist()))}  # fmt: skip
    accuracy = dict.fromkeys(raters, args.initial_accuracy)
    for _ in range(args.max_iterations):
        correct, judged = dict.fromkeys(raters, 0.0), dict.fromkeys(raters, 0)
        for u, unit_votes in votes.items():
            if u in gold:
                posterior = [float(c == gold[u]) for c in range(k)]
            else:
                likelihood = [math.prod(accuracy[r] if v == c else (1 - accuracy[r]) / (k - 1) for r, v in unit_votes)
                              for c in range(k)]  # fmt: skip
                posterior = [x / sum(likelihood) for x in likelihood]
            for r, v in unit_votes:
                correct[r] += posterior[int(v)]
                judged[r] += 1
        updated = {r: (correct[r] + args.prior_correct) / (judged[r] + args.prior_correct + args.prior_wrong)
                   for r in raters}  # fmt: skip
        change = max(abs(updated[r] - accuracy[r]) for r in raters)
        accuracy = updated
        if change < args.tolerance:
            break
    return accuracy


@pytest.mark.parametrize("block_judgments", [1 << 20, 7, 1])
def test_reliability_is_the_one_coin_em_whatever_the_blocks(monkeypatch, block_judgments):
    """Units of one vote, several votes and gold, fitted in blocks of any size (each unit whole in one block), give
    the numbers of the EM written out unit by unit."""
    from app.quality import stats

    monkeypatch.setattr(stats, "BLOCK_JUDGMENTS", block_judgments)
    rng = np.random.default_rng(5)
    k, accuracies = 3, np.array([0.9, 0.75, 0.6, 0.4, 0.33])
    truth = rng.integers(0, k, 60)
    unit, rater, value = [], [], []
    for u in range(60):
        for r in rng.choice(len(accuracies), size=rng.integers(1, 5), replace=False):
            right = rng.random() < accuracies[r]
            unit.append(1000 - 7 * u)  # unsorted, sparse ids
            rater.append(10 + 3 * r)
            value.append(float(truth[u] if right else (truth[u] + rng.integers(1, k)) % k))
    unit, rater, value = np.array(unit), np.array(rater), np.array(value)
    gold = {1000 - 7 * u: float(truth[u]) for u in range(0, 60, 9)}
    assert 0 < np.sum(np.bincount(1000 - unit) == 1) < 60  # single votes as well as several
    fitted = rater_reliability(unit, rater, value, k, gold=gold)
    expected = _one_coin_by_enumeration(unit, rater, value, k, gold)
    assert fitted.keys() == expected.keys()
    for r in expected:
        assert fitted[r] == pytest.approx(expected[r], abs=1e-9)
    assert fitted[10] > fitted[13] > fitted[16] > fitted[19]


def test_reliability_rejects_inconsistent_categories():
    with pytest.raises(ValueError, match="more distinct values"):
        rater_reliability(np.array([1, 1, 1]), np.array([1, 2, 3]), np.array([0, 1, 2.0]), 2)
    with pytest.raises(ValueError, match="same for every judgment"):
        rater_reliability(np.array([1, 1]), np.array([1, 2]), np.array([0, 1.0]), np.array([2, 3]))
    with pytest.raises(ValueError, match="gold value"):
        rater_reliability(np.array([1, 1]), np.array([1, 2]), np.array([0, 1.0]), 2, gold={1: 5.0})


# ---------------------------------------------------------------------------------------------------------------
# 4. rater flags
# ---------------------------------------------------------------------------------------------------------------


def test_flags_find_planted_behaviours_and_spare_honest_raters():
    rng = np.random.default_rng(0)
    columns = {"rater": [], "time_ms": [], "chosen_position": [], "n_options": [], "chose_longer": []}

    def add(rater_id, n, median_ms, first_share, longer_share, n_options=2, tie_share=0.1):
        tie = rng.random(n) < tie_share
        first = rng.random(n) < first_share
        position = np.where(first, 0, rng.integers(1, n_options, n)).astype(float)
        longer = (rng.random(n) < longer_share).astype(float)
        position[tie], longer[tie] = np.nan, np.nan
        columns["rater"].append(np.full(n, rater_id))
        columns["time_ms"].append(median_ms * rng.lognormal(0.0, 0.5, n))
        columns["chosen_position"].append(position)
        columns["n_options"].append(np.full(n, n_options))
        columns["chose_longer"].append(longer)

    for honest in range(10, 20):
        add(honest, 200, 25_000, 0.5, 0.6)
    add(1, 200, 900, 0.5, 0.6)  # too fast
    add(2, 200, 25_000, 0.8, 0.6)  # clicks the first option
    add(3, 200, 25_000, 0.5, 0.97)  # always the longer answer
    add(4, 120, 1_500, 0.0, 0.99, n_options=4)  # never the first of four (always another), fast, long
    add(5, 8, 500, 1.0, 1.0)  # extreme but too few judgments to judge
    add(6, 6000, 25_000, 0.54, 0.6)  # a significant but slight first-position preference: not worth a flag
    arrays = {name: np.concatenate(parts) for name, parts in columns.items()}
    arrays["time_ms"][arrays["rater"] == 12] = np.nan  # untimed judgments are ignored

    flags = rater_flags(**arrays)
    assert flags[1] == [FLAG_TOO_FAST]
    assert flags[2] == [FLAG_POSITION_BIAS]
    assert flags[3] == [FLAG_LENGTH_BIAS]
    assert sorted(flags[4]) == sorted([FLAG_TOO_FAST, FLAG_POSITION_BIAS, FLAG_LENGTH_BIAS])
    assert flags[5] == [] and flags[6] == []
    assert all(flags[honest] == [] for honest in range(10, 20))

    strict = rater_flags(**arrays, thresholds=FlagThresholds(min_median_time_ms=30_000, length_share=0.99))
    assert all(FLAG_TOO_FAST in strict[honest] for honest in range(10, 20) if honest != 12)
    assert FLAG_LENGTH_BIAS not in strict[3]


# ---------------------------------------------------------------------------------------------------------------
# 5. real data: OpenAssistant sibling rankings
# ---------------------------------------------------------------------------------------------------------------


def oasst_pairs(groups):
    """One unit per pair of sibling replies; three "raters" judge whether the first reply of the pair beats the
    second (1, 0, or 0.5 for equal): the human ranking, the crowd's net thumbs (+1 minus -1, missing when
    neither reply got any), and length (longer wins)."""

    def beats(x, y):
        return 1.0 if x > y else 0.0 if x < y else 0.5

    rows = []
    pairs = (pair for group in groups for pair in combinations(group, 2))
    for number, (first, second) in enumerate(pairs):
        rows.append((number, 0, beats(-first["rank"], -second["rank"])))
        thumbs = [reply.get("emojis", {}) for reply in (first, second)]
        if any("+1" in e or "-1" in e for e in thumbs):
            rows.append((number, 1, beats(*(e.get("+1", 0) - e.get("-1", 0) for e in thumbs))))
        rows.append((number, 2, beats(len(first["text"]), len(second["text"]))))
    unit, rater, value = (np.array(column) for column in zip(*rows, strict=True))
    return np.array(unit), np.array(rater), np.array(value)


def test_alpha_on_real_oasst_rankings_matches_package_and_thumbs_agree_with_ranking():
    unit, rater, value = oasst_pairs(load_oasst_sibling_groups())
    matrix = np.full((3, unit.max() + 1), np.nan)
    matrix[rater, unit] = value
    for level in LEVELS:
        result = krippendorff_alpha(unit, rater, value, level)
        assert result.units == unit.max() + 1
        assert result.alpha == pytest.approx(
            krippendorff.alpha(matrix, level_of_measurement=level), abs=1e-10
        )
    # Different people gave the ranking and the thumbs: they should agree beyond chance.
    human_and_thumbs = np.isin(rater, [0, 1])
    alpha = krippendorff_alpha(
        unit[human_and_thumbs], rater[human_and_thumbs], value[human_and_thumbs], "ordinal"
    )
    assert alpha.alpha > 0.0


def test_bradley_terry_on_real_oasst_rankings_keeps_each_ranking_and_matches_direct_fit():
    # Every reply is a "model"; each sibling group's ranking gives its pairwise battles. The groups never meet
    # and every group's best reply is undefeated: the case the prior exists for.
    groups = load_oasst_sibling_groups()
    index = {reply["message_id"]: i for i, reply in enumerate(r for g in groups for r in g)}
    battles = [
        (
            index[first["message_id"]],
            index[second["message_id"]],
            float(np.sign(second["rank"] - first["rank"]) + 1) / 2,
        )
        for group in groups
        for first, second in combinations(group, 2)
    ]
    a, b, outcome = (np.array(column) for column in zip(*battles, strict=True))
    board = bradley_terry(a, b, outcome, len(index), bootstrap=0)
    assert board.prior_ties == 1.0
    assert np.all(np.isfinite(board.ratings))
    for group in groups:
        by_rank = sorted(group, key=lambda reply: reply["rank"])
        ratings = [board.ratings[index[reply["message_id"]]] for reply in by_rank]
        assert np.all(np.diff(ratings) < 0)
    direct = direct_bradley_terry(a, b, outcome, len(index), prior_ties=1.0)
    np.testing.assert_allclose(board.ratings, direct, atol=1.0)


def test_dense_codes_number_values_within_each_unit_in_value_order():
    from app.quality.service import _dense_codes

    rng = np.random.default_rng(3)
    unit = rng.integers(0, 50, size=2000)
    value = rng.choice([-1.0, 10.0, 11.0, 57.5], size=2000)
    codes = _dense_codes(unit, value)
    for u in np.unique(unit):
        mine = unit == u
        expected = {v: i for i, v in enumerate(sorted(set(value[mine].tolist())))}
        assert codes[mine].tolist() == [expected[v] for v in value[mine].tolist()]
