"""Step-label agreement (app.quality.step_agreement): nominal alpha over steps against the `krippendorff` package,
random raters near 0, planted agreement recovered, reliability orders raters by accuracy; property tests."""

import krippendorff
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from app.quality import stats
from app.quality.step_agreement import step_label_arrays
from app.steps.labels import STEP_LABELS


def simulate(seed: int, trajectories: int, steps: int, accuracies: list[float]):
    """Rows (completion, step, rater, label): each step has a true label; rater r gives it with probability
    accuracies[r], else one of the other two labels at random."""
    rng = np.random.default_rng(seed)
    rows = []
    for t in range(trajectories):
        for s in range(steps):
            truth = int(rng.integers(3))
            for r, accuracy in enumerate(accuracies):
                label = truth if rng.random() < accuracy else int((truth + rng.integers(1, 3)) % 3)
                rows.append((t, s, r + 1, STEP_LABELS[label]))
    return rows


def reference_alpha(unit, rater, value) -> float:
    raters, units = np.unique(rater), np.unique(unit)
    matrix = np.full((len(raters), len(units)), np.nan)
    matrix[np.searchsorted(raters, rater), np.searchsorted(units, unit)] = value
    return krippendorff.alpha(reliability_data=matrix, level_of_measurement="nominal")


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n_raters=st.integers(2, 4), drop=st.floats(0.0, 0.4))
def test_step_alpha_matches_the_krippendorff_package(seed, n_raters, drop):
    rows = simulate(seed, 8, 4, [0.7] * n_raters)
    keep = np.random.default_rng(seed + 1).random(len(rows)) >= drop  # raters stop at their first error: gaps
    unit, rater, value = step_label_arrays([row for row, k in zip(rows, keep, strict=True) if k])
    ours = stats.krippendorff_alpha(unit, rater, value, "nominal")
    if ours.alpha is None:
        return
    assert abs(ours.alpha - reference_alpha(unit, rater, value)) < 1e-9


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_random_raters_give_alpha_near_zero(seed):
    unit, rater, value = step_label_arrays(simulate(seed, 100, 4, [1 / 3] * 3))
    assert abs(stats.krippendorff_alpha(unit, rater, value, "nominal").alpha) < 0.08


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), accuracy=st.floats(0.6, 0.95))
def test_planted_agreement_is_recovered(seed, accuracy):
    # Three raters right with probability a, wrong labels uniform over the other two, truth uniform over three:
    # two raters agree with probability P = a^2 + (1 - a)^2 / 2; by chance 1/3; alpha ~ (P - 1/3) / (2/3).
    unit, rater, value = step_label_arrays(simulate(seed, 150, 4, [accuracy] * 3))
    agree = accuracy**2 + (1 - accuracy) ** 2 / 2
    expected = (agree - 1 / 3) / (2 / 3)
    assert abs(stats.krippendorff_alpha(unit, rater, value, "nominal").alpha - expected) < 0.07


def test_reliability_orders_raters_by_accuracy():
    unit, rater, value = step_label_arrays(simulate(3, 150, 4, [0.95, 0.85, 0.85, 1 / 3]))
    reliability = stats.rater_reliability(unit, rater, value, 3)
    assert reliability[1] > 0.85 and reliability[4] < 0.5
    assert reliability[1] > reliability[2] > reliability[4] and reliability[1] > reliability[3] > reliability[4]
    majority = stats.agreement_with_majority(unit, rater, value)
    assert majority[1][0] > majority[4][0]
