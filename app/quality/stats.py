"""Statistics core of the quality domain: pure numpy/scipy, no database, no torch.

Every function takes long-format arrays, one row per judgment, as the database layer pulls them
from SQL (`unit` = comparison id, `rater` = user id, `value` = the rater's verdict coded as a number).
Everything is vectorized: costs grow as O(N log N) in the number of judgments, with Python loops
only over raters, rater pairs, bootstrap chunks or solver iterations, never over judgments.

Contents, top to bottom:
1. agreement: `krippendorff_alpha`, `pairwise_rater_agreement`, `agreement_with_majority`, and the codings that
   make verdicts comparable across comparisons: `top_choice_codes`, `scaled_midranks`
2. leaderboard: `bradley_terry` (maximum likelihood on aggregated counts, Newton, multinomial bootstrap)
3. rater reliability: `rater_reliability` (one-coin Dawid-Skene EM, gold items clamp the truth)
4. rater flags: `rater_flags` (too fast, position bias, length bias)
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import sparse, stats
from scipy.sparse.csgraph import connected_components
from scipy.special import expit

Level = Literal["nominal", "ordinal", "interval"]
LEVELS: tuple[str, ...] = ("nominal", "ordinal", "interval")
ELO_PER_NATURAL_LOG_ODDS = 400.0 / np.log(10.0)
"""400 rating points per factor 10 in the odds of winning."""
ELO_MEAN = 1000.0

FLAG_TOO_FAST = "too_fast"
FLAG_POSITION_BIAS = "position_bias"
FLAG_LENGTH_BIAS = "length_bias"


# ---------------------------------------------------------------------------------------------------------------
# input handling shared by the agreement and reliability functions
# ---------------------------------------------------------------------------------------------------------------


def _vector(name: str, array, dtype) -> np.ndarray:
    result = np.asarray(array)
    if result.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got shape {result.shape}")
    fractional = result.dtype.kind == "f" and not np.all(np.isfinite(result) & (result == np.round(result)))
    if dtype is np.int64 and fractional:
        raise ValueError(f"{name} must hold integers")
    return result.astype(dtype, copy=False)


def _same_length(**arrays: np.ndarray) -> int:
    lengths = {name: len(array) for name, array in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"arrays must have the same length, got {lengths}")
    return next(iter(lengths.values()))


@dataclass(frozen=True)
class _ByUnit:
    """Judgments with a value, sorted by (unit, rater)."""

    unit: np.ndarray
    rater: np.ndarray
    value: np.ndarray
    source: np.ndarray
    """Row of each sorted judgment in the caller's arrays."""
    unit_index: np.ndarray
    """Compact unit number (0..n_units-1) of each sorted judgment."""
    starts: np.ndarray
    """First sorted row of each unit."""
    sizes: np.ndarray
    """Judgments per unit."""


def _group_by_unit(unit, rater, value) -> _ByUnit:
    unit = _vector("unit", unit, np.int64)
    rater = _vector("rater", rater, np.int64)
    value = _vector("value", value, np.float64)
    _same_length(unit=unit, rater=rater, value=value)
    source = np.flatnonzero(~np.isnan(value))  # NaN = no verdict on this variable, as in Krippendorff's data
    order = np.lexsort((rater[source], unit[source]))
    source = source[order]
    unit, rater, value = unit[source], rater[source], value[source]
    same_unit = unit[1:] == unit[:-1]
    duplicate = same_unit & (rater[1:] == rater[:-1])
    if duplicate.any():
        row = int(np.argmax(duplicate))
        raise ValueError(f"rater {rater[row]} has more than one value for unit {unit[row]}")
    unit_begins = np.concatenate(([True], ~same_unit)) if len(unit) else np.zeros(0, dtype=bool)
    starts = np.flatnonzero(unit_begins)
    return _ByUnit(
        unit=unit,
        rater=rater,
        value=value,
        source=source,
        unit_index=np.cumsum(unit_begins) - 1,
        starts=starts,
        sizes=np.diff(np.append(starts, len(unit))),
    )


# ---------------------------------------------------------------------------------------------------------------
# 1. agreement
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AlphaResult:
    alpha: float | None
    """Krippendorff's alpha; None when undefined (no pairable unit, or no variation among the values)."""
    units: int
    """Pairable units: units with at least two values."""


def krippendorff_alpha(unit, rater, value, level: Level = "nominal") -> AlphaResult:
    """Krippendorff's alpha for long-format data; NaN values count as missing.

    alpha = 1 - (n - 1) * sum_ck o_ck d_ck / sum_ck n_c n_k d_ck over the pairable values (Krippendorff 2011),
    computed without the coincidence matrix:
    - nominal: sum_{c!=k} o_ck = sum_u (m_u^2 - sum_c n_uc^2) / (m_u - 1), sum_{c!=k} n_c n_k = n^2 - sum_c n_c^2;
    - interval: sum_ck o_ck (c-k)^2 = sum_u 2 m_u var_u / (m_u - 1) (var_u: sum of squared deviations in u);
    - ordinal: Krippendorff's ordinal distance between values c <= k is (sum_{g=c..k} n_g - (n_c + n_k)/2)^2,
      which equals (t_k - t_c)^2 with the midrank t_c = sum_{g<=c} n_g - n_c/2 over the pairable values'
      distribution, so ordinal alpha is interval alpha on midranks.

    A value must mean the same thing in every unit (the expected disagreement pools all units): code verdicts
    with `top_choice_codes` or `scaled_midranks`, never by completion ids, which differ in every comparison.
    """
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    by_unit = _group_by_unit(unit, rater, value)
    pairable_unit = by_unit.sizes >= 2
    units = int(pairable_unit.sum())
    if units == 0:
        return AlphaResult(alpha=None, units=0)
    pairable = pairable_unit[by_unit.unit_index]
    unit_index = (np.cumsum(pairable_unit) - 1)[by_unit.unit_index[pairable]]
    values = by_unit.value[pairable]
    m = by_unit.sizes[pairable_unit].astype(np.float64)
    n = float(len(values))

    if level == "nominal":
        _, category, category_count = np.unique(values, return_inverse=True, return_counts=True)
        n_categories = len(category_count)
        cell, cell_count = np.unique(unit_index * n_categories + category, return_counts=True)
        squares_per_unit = np.bincount(cell // n_categories, weights=cell_count.astype(np.float64) ** 2)
        observed = float(np.sum((m**2 - squares_per_unit) / (m - 1)))
        expected = n * n - float(np.sum(category_count.astype(np.float64) ** 2))
    else:
        if level == "ordinal":
            _, category, category_count = np.unique(values, return_inverse=True, return_counts=True)
            values = (np.cumsum(category_count) - category_count / 2.0)[category]
        unit_mean = np.bincount(unit_index, weights=values) / m
        squared_deviation = np.bincount(unit_index, weights=(values - unit_mean[unit_index]) ** 2)
        observed = float(np.sum(2.0 * m * squared_deviation / (m - 1)))
        expected = 2.0 * n * float(np.sum((values - values.mean()) ** 2))
    if expected <= 0.0:
        return AlphaResult(alpha=None, units=units)
    return AlphaResult(alpha=1.0 - (n - 1.0) * observed / expected, units=units)


TIE_CODE = -1.0
"""Top-choice code of a judgment with no single best option (a tie for first)."""


def top_choice_codes(top, options) -> np.ndarray:
    """Code each judgment's top choice as the winner's position in its comparison's stored option order.

    top: per judgment, the completion id ranked best alone, NaN when several tie for first. options: per
    judgment, its comparison's completion ids in stored order (rows padded with NaN). Returns 0, 1, ... (the
    winner's position), TIE_CODE for a tie, NaN when the winner is none of the options.

    Why: Krippendorff's alpha compares the disagreement observed within units with the disagreement expected
    from the pooled values of all units, so a value must mean the same thing in every unit. Completion ids are
    different in every comparison: coded by id, any two values from different comparisons differ, the expected
    disagreement is about 1 whatever the raters do, and raters who click at random score about 0.5. The stored
    order is the same for every rater of a comparison (display order is shuffled per assignment, the stored one
    is not), so "first stored option won" means the same in every comparison, and random raters score about 0.
    A tie is a verdict of its own, so it is a category of its own (nominal level). In rank mode, comparisons
    with different numbers of options offer different categories (a 4th option can win only where there is one),
    which still biases the top-choice alpha up slightly when the numbers of options are mixed: prefer the rank
    position alpha (`scaled_midranks`) there.

    Within a comparison this coding is a one-to-one relabelling of the winner's id, so figures that only test
    equality within a comparison (pairwise rater agreement, agreement with the majority, gold accuracy, the
    Dawid-Skene reliability) are the same under either coding.
    """
    top = _vector("top", top, np.float64)
    options = np.asarray(options, dtype=np.float64)
    if options.ndim != 2 or options.shape[0] != len(top):
        raise ValueError(f"options must be (judgments, max options), got shape {options.shape}")
    match = options == top[:, None]
    position = np.where(match.any(axis=1), np.argmax(match, axis=1).astype(np.float64), np.nan)
    return np.where(np.isnan(top), TIE_CODE, position)


def scaled_midranks(judgment, group) -> np.ndarray:
    """Per ranked element (one row per completion of a judgment's ranking; group = its tie group, 0 = best): its
    rank scaled to 0 (best) .. 1 (worst), tied completions sharing their mean rank; NaN when the ranking has one
    completion.

    Why: the tie-group index is not comparable across raters or comparisons: after a tie for first the next
    completion is group 1, the same as a plain second place, although it is third of three; and position 2 means
    "worst" of three but "second worst" of four. Midranks fix the first (a completion below a two-way tie is 3rd
    of 3 either way), scaling by the number of ranked completions fixes the second, so random rankings give an
    alpha of about 0 even when comparisons have different numbers of options. Use the interval level: the
    scaled ranks of different-sized rankings interleave (1/3 of four lies between 0 and 1/2 of three), which the
    ordinal metric would count as categories standing between them.
    """
    judgment = _vector("judgment", judgment, np.int64)
    group = _vector("group", group, np.int64)
    _same_length(judgment=judgment, group=group)
    if len(judgment) == 0:
        return np.zeros(0)
    cells, cell_of_row, cell_size = np.unique(
        np.stack([judgment, group], axis=1), axis=0, return_inverse=True, return_counts=True
    )
    cell_of_row = cell_of_row.ravel()
    new_judgment = np.concatenate(([True], cells[1:, 0] != cells[:-1, 0]))
    offset = np.cumsum(cell_size) - cell_size
    before = offset - np.maximum.accumulate(np.where(new_judgment, offset, 0))
    judgment_index = np.cumsum(new_judgment) - 1
    total = np.bincount(judgment_index, weights=cell_size)[judgment_index]
    midrank = before + (cell_size + 1) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        scaled = np.where(total > 1, (midrank - 1.0) / (total - 1.0), np.nan)
    return scaled[cell_of_row]


def pairwise_rater_agreement(unit, rater, value) -> dict[tuple[int, int], tuple[float, int]]:
    """For each pair of raters (r1 < r2) who judged common units: (share of those units with equal values, n_common).

    Values are compared for exact equality (categorical verdicts); NaN values are left out.
    """
    by_unit = _group_by_unit(unit, rater, value)
    position_in_unit = np.arange(len(by_unit.unit)) - by_unit.starts[by_unit.unit_index]
    later_in_unit = by_unit.sizes[by_unit.unit_index] - 1 - position_in_unit
    # Pair each judgment with the one `offset` rows further down the same unit, for offset = 1, 2, ...; the
    # candidate set shrinks every round, so the total work is the number of pairs.
    firsts, seconds = [], []
    candidates = np.flatnonzero(later_in_unit >= 1)
    offset = 1
    while candidates.size:
        firsts.append(candidates)
        seconds.append(candidates + offset)
        offset += 1
        candidates = candidates[later_in_unit[candidates] >= offset]
    if not firsts:
        return {}
    first, second = np.concatenate(firsts), np.concatenate(seconds)
    rater_ids, rater_code = np.unique(by_unit.rater, return_inverse=True)
    n_raters = len(rater_ids)
    # Rows are sorted by rater within a unit, so rater_code[first] < rater_code[second].
    pair_keys, pair_index = np.unique(rater_code[first] * n_raters + rater_code[second], return_inverse=True)
    n_common = np.bincount(pair_index)
    agreements = np.bincount(pair_index, weights=by_unit.value[first] == by_unit.value[second])
    return {
        (int(rater_ids[key // n_raters]), int(rater_ids[key % n_raters])): (float(agree / count), int(count))
        for key, agree, count in zip(pair_keys, agreements, n_common, strict=True)
    }


def agreement_with_majority(unit, rater, value) -> dict[int, tuple[float, int]]:
    """Per rater: (mean agreement with the unit's modal value, number of judgments counted).

    The majority includes the rater's own vote ("excluding nothing"). Only units with at least two judgments
    count. When k values tie for the mode, a judgment holding one of them scores 1/k (the chance that it matches
    a majority drawn at random among the tied modes) and any other value scores 0: two raters who disagree on a
    unit of two get 0.5 each, rather than 1 (every value is modal) or being dropped.
    """
    by_unit = _group_by_unit(unit, rater, value)
    if len(by_unit.unit) == 0:
        return {}
    _, category = np.unique(by_unit.value, return_inverse=True)
    n_categories = int(category.max()) + 1
    cells, cell_of_judgment, cell_count = np.unique(
        by_unit.unit_index * n_categories + category, return_inverse=True, return_counts=True
    )
    cell_unit = cells // n_categories  # sorted, and every unit has at least one cell
    cell_starts = np.flatnonzero(np.concatenate(([True], cell_unit[1:] != cell_unit[:-1])))
    top = np.maximum.reduceat(cell_count, cell_starts)
    modal = cell_count == top[cell_unit]
    n_modes = np.bincount(cell_unit, weights=modal)
    credit = np.where(modal, 1.0 / n_modes[cell_unit], 0.0)[cell_of_judgment]
    counted = by_unit.sizes[by_unit.unit_index] >= 2
    rater_ids, rater_code = np.unique(by_unit.rater[counted], return_inverse=True)
    n_judgments = np.bincount(rater_code, minlength=len(rater_ids))
    agreement = np.bincount(rater_code, weights=credit[counted], minlength=len(rater_ids))
    return {
        int(rater_id): (float(agree / count), int(count))
        for rater_id, agree, count in zip(rater_ids, agreement, n_judgments, strict=True)
    }


# ---------------------------------------------------------------------------------------------------------------
# 2. leaderboard: Bradley-Terry
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Leaderboard:
    ratings: np.ndarray
    """Per model, Elo scale (400 points per factor 10 in the odds), mean 1000 over the models that have battles;
    NaN for a model without battles."""
    ci_low: np.ndarray
    """Bootstrap 2.5th percentile of the rating (NaN without bootstrap or without battles)."""
    ci_high: np.ndarray
    """Bootstrap 97.5th percentile of the rating."""
    battles: np.ndarray
    """Battles each model took part in."""
    win_rates: np.ndarray
    """win_rates[a, b]: share of a's battles against b that a won, ties counting half; NaN when they never met."""
    prior_ties: float
    """Virtual ties per model against an average model added to the likelihood; 0.0 when the plain maximum
    likelihood estimate exists (every model beats, and is beaten by, the others through some chain)."""


@dataclass(frozen=True)
class _NewtonArgs:
    max_iterations: int = 100
    """Newton steps; Bradley-Terry's log-likelihood is concave, so 10 to 20 steps reach machine precision."""
    step_tolerance: float = 1e-9
    """Stop when no log-strength moves more than this (1e-9 natural-log units is ~2e-7 rating points)."""
    max_halvings: int = 60
    """Backtracking line search: halve the step until the penalized log-likelihood increases."""


def _strongly_connected(wins: np.ndarray) -> bool:
    """The maximum likelihood estimate is finite and unique iff the 'gained points against' graph is strongly
    connected (Zermelo 1929, Ford 1957)."""
    n_components, _ = connected_components(sparse.csr_matrix(wins > 0), directed=True, connection="strong")
    return n_components == 1


def _bt_log_likelihood(theta: np.ndarray, wins: np.ndarray, prior_ties: np.ndarray) -> np.ndarray:
    """Per replicate: sum_ij wins_ij log sigmoid(theta_i - theta_j), plus prior_ties virtual ties of each model
    against a fixed average model (theta = 0)."""
    difference = theta[:, :, None] - theta[:, None, :]
    data = -np.sum(wins * np.logaddexp(0.0, -difference), axis=(1, 2))
    prior = -0.5 * prior_ties * np.sum(np.logaddexp(0.0, -theta) + np.logaddexp(0.0, theta), axis=1)
    return data + prior


def _fit_bradley_terry(
    wins: np.ndarray, prior_ties: np.ndarray, args: _NewtonArgs = _NewtonArgs()
) -> np.ndarray:
    """Maximize the (penalized) Bradley-Terry log-likelihood for a batch of win matrices at once.

    wins: (B, n, n), wins[b, i, j] = points i gained against j (a tie gives half a point to each);
    prior_ties: (B,). Returns log-strengths theta (B, n). Damped Newton on the aggregated counts: the cost per
    step is O(B n^3), independent of the number of battles.
    """
    batch, n, _ = wins.shape
    games = wins + wins.transpose(0, 2, 1)
    theta = np.zeros((batch, n))
    objective = _bt_log_likelihood(theta, wins, prior_ties)
    active = np.arange(batch)
    eye = np.eye(n)
    for _ in range(args.max_iterations):
        if active.size == 0:
            break
        th, w, g, ties = theta[active], wins[active], games[active], prior_ties[active]
        p = expit(th[:, :, None] - th[:, None, :])
        s = expit(th)
        gradient = np.sum(w - g * p, axis=2) + ties[:, None] * (0.5 - s)
        weight = g * p * (1.0 - p)
        curvature = np.sum(weight, axis=2) + ties[:, None] * s * (1.0 - s)
        information = curvature[:, :, None] * eye - weight  # minus the Hessian
        # Without the prior, the likelihood is flat along theta + c: adding the all-ones direction pins the step
        # to sum(step) = 0, which is the exact Newton step there because the gradient sums to zero.
        gauge = np.where(ties == 0.0, np.mean(curvature, axis=1), 0.0)
        information = information + gauge[:, None, None]
        step = np.linalg.solve(information, gradient[:, :, None])[:, :, 0]
        slope = np.sum(gradient * step, axis=1)
        size = np.ones(active.size)
        start = objective[active]
        candidate, value = th + step, _bt_log_likelihood(th + step, w, ties)
        for _ in range(args.max_halvings):
            improved = value >= start + 1e-4 * size * slope
            if improved.all():
                break
            size = np.where(improved, size, size / 2)
            retry = ~improved
            candidate[retry] = th[retry] + size[retry, None] * step[retry]
            value[retry] = _bt_log_likelihood(candidate[retry], w[retry], ties[retry])
        improved = value >= start + 1e-4 * size * slope
        moved = np.where(improved[:, None], candidate, th)  # no increase at all: rounding floor, keep th
        theta[active] = moved
        objective[active] = np.where(improved, value, start)
        still_moving = improved & (np.max(np.abs(size[:, None] * step), axis=1) > args.step_tolerance)
        active = active[still_moving]
    return theta


def _to_elo(theta: np.ndarray) -> np.ndarray:
    return ELO_MEAN + ELO_PER_NATURAL_LOG_ODDS * (theta - theta.mean(axis=-1, keepdims=True))


def bradley_terry(
    model_a,
    model_b,
    outcome,
    n_models: int,
    *,
    bootstrap: int = 1000,
    seed: int = 0,
    prior_ties: float = 1.0,
    max_cells_per_chunk: int = 4_000_000,
    counts=None,
) -> Leaderboard:
    """Bradley-Terry leaderboard from battles: outcome 1 = a wins, 0 = b wins, 0.5 = tie (half a win each).

    The battles are aggregated into an n_models x n_models matrix of points first (battles are many, models
    few), then fitted by maximum likelihood with damped Newton steps. Only when the plain estimate does not
    exist (a model never lost or never won, or the comparison graph falls apart) is a weak prior added:
    `prior_ties` virtual ties of every model against an average model, a log-concave prior on each
    log-strength with curvature prior_ties/4 (sd about 350 rating points for one tie). It keeps ratings finite
    while barely moving models with many battles.

    Confidence intervals: `bootstrap` replicates resample the battles with multinomial counts over the
    (a, b, outcome) cells of the aggregated table (identical to resampling battles with replacement), each
    refitted the same way (with the prior if the point fit used it, or if the replicate itself lost strong
    connectivity); 2.5th and 97.5th percentiles of the centered ratings. `max_cells_per_chunk` bounds the
    memory of the batched fits (replicates x models^2 per chunk).

    `counts`: battles per row (non-negative integers), for input that is already tallied (app.judgments.tallies);
    the fit and the bootstrap are those of the same battles given one row each (the same cells, the same draws).
    """
    model_a = _vector("model_a", model_a, np.int64)
    model_b = _vector("model_b", model_b, np.int64)
    outcome = _vector("outcome", outcome, np.float64)
    _same_length(model_a=model_a, model_b=model_b, outcome=outcome)
    weight = np.ones(len(model_a), dtype=np.int64) if counts is None else _vector("counts", counts, np.int64)
    _same_length(model_a=model_a, counts=weight)
    if np.any(weight < 0):
        raise ValueError("counts must be non-negative")
    n_battles = int(weight.sum())
    if n_models < 1:
        raise ValueError("n_models must be at least 1")
    if n_battles and (min(model_a.min(), model_b.min()) < 0 or max(model_a.max(), model_b.max()) >= n_models):
        raise ValueError(f"model indexes must lie in [0, {n_models})")
    if np.any(model_a == model_b):
        raise ValueError("a battle needs two different models")
    outcome_kind = np.round(outcome * 2.0)
    if np.any(outcome_kind != outcome * 2.0) or np.any((outcome_kind < 0) | (outcome_kind > 2)):
        raise ValueError("outcome must be 1 (a wins), 0 (b wins) or 0.5 (tie)")
    if bootstrap < 0 or prior_ties <= 0:
        raise ValueError("bootstrap must be >= 0 and prior_ties > 0")

    battles = (np.bincount(model_a, weights=weight, minlength=n_models)
               + np.bincount(model_b, weights=weight, minlength=n_models)).astype(np.int64)  # fmt: skip
    # One cell per (a, b, outcome) with its battle count: the sufficient statistics, and the bootstrap's urn.
    cell_counts = np.bincount(
        (model_a * n_models + model_b) * 3 + outcome_kind.astype(np.int64), weights=weight,
        minlength=3 * n_models * n_models,
    ).astype(np.int64)
    cells = np.flatnonzero(cell_counts)
    cell_counts = cell_counts[cells]
    cell_a, cell_b = divmod(cells // 3, n_models)
    cell_share_a = (cells % 3) / 2.0
    # points[cell, a*n + b]: points each battle of the cell gives a against b, and b against a.
    points = sparse.csr_matrix(
        (
            np.concatenate((cell_share_a, 1.0 - cell_share_a)),
            (
                np.tile(np.arange(len(cells)), 2),
                np.concatenate((cell_a * n_models + cell_b, cell_b * n_models + cell_a)),
            ),
        ),
        shape=(len(cells), n_models * n_models),
    )
    wins = np.asarray(points.T @ cell_counts.astype(np.float64)).reshape(n_models, n_models)
    games = wins + wins.T
    with np.errstate(invalid="ignore", divide="ignore"):
        win_rates = np.where(games > 0, wins / games, np.nan)

    nan = np.full(n_models, np.nan)
    played = np.flatnonzero(battles > 0)
    if played.size == 0:
        return Leaderboard(nan, nan.copy(), nan.copy(), battles, win_rates, prior_ties=0.0)
    submatrix = np.ix_(played, played)
    used_prior = 0.0 if _strongly_connected(wins[submatrix]) else float(prior_ties)
    theta = _fit_bradley_terry(wins[submatrix][None], np.array([used_prior]))[0]
    ratings = nan.copy()
    ratings[played] = _to_elo(theta)

    ci_low, ci_high = nan.copy(), nan.copy()
    if bootstrap > 0:
        rng = np.random.default_rng(seed)
        probabilities = cell_counts / cell_counts.sum()
        chunk = max(1, max_cells_per_chunk // (n_models * n_models))
        replicate_ratings = []
        for begin in range(0, bootstrap, chunk):
            counts = rng.multinomial(n_battles, probabilities, size=min(chunk, bootstrap - begin))
            replicate_wins = np.asarray((points.T @ counts.T.astype(np.float64)).T)
            replicate_wins = replicate_wins.reshape(-1, n_models, n_models)[:, played][:, :, played]
            replicate_prior = np.array(
                [used_prior or (0.0 if _strongly_connected(w) else float(prior_ties)) for w in replicate_wins]
            )
            replicate_ratings.append(_to_elo(_fit_bradley_terry(replicate_wins, replicate_prior)))
        low, high = np.percentile(np.concatenate(replicate_ratings), [2.5, 97.5], axis=0)
        ci_low[played], ci_high[played] = low, high
    return Leaderboard(ratings, ci_low, ci_high, battles, win_rates, prior_ties=used_prior)


# ---------------------------------------------------------------------------------------------------------------
# 3. rater reliability: one-coin Dawid-Skene
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReliabilityArgs:
    max_iterations: int = 200
    """EM iterations at most."""
    tolerance: float = 1e-7
    """Stop when no rater's accuracy moves more than this between iterations."""
    initial_accuracy: float = 0.7
    """Every rater's accuracy before the first E-step: better than chance, so the first posterior is a
    (gold-clamped) majority vote."""
    prior_correct: float = 1.0
    """Pseudo-counts added to each rater's correct answers (Beta prior): keeps accuracies off 0 and 1 and pulls
    raters with few judgments toward 1/2."""
    prior_wrong: float = 1.0
    """Pseudo-counts added to each rater's wrong answers."""


BLOCK_JUDGMENTS = 1 << 20
"""rater_reliability fits this many judgments (whole units) at a time: the EM loop's temporaries are a few float64
arrays of one block, not of every judgment."""


@dataclass(frozen=True)
class VoteBlock:
    """The judgments of a set of whole units in the compact form the EM fit reads (`vote_block` builds it).

    Two kinds of unit need no per-judgment arrays because their E-step has a closed form: a gold unit's posterior is
    clamped to its gold answer (a judgment of it is correct exactly when it matches), and a non-gold unit with one
    vote has posterior p_r on that vote (p_r against (1 - p_r) for the k - 1 others together). They are counts per
    rater. The units with several votes ("open") keep per-judgment int32 rater codes and cells: about 8 bytes a
    judgment, 12 a cell and 8 an open unit, against the 56 a judgment of the sorted float64/int64 columns."""

    raters: np.ndarray
    """Sorted rater ids of the block."""
    judgments: np.ndarray
    """Per rater: judgments in the block."""
    gold_correct: np.ndarray
    """Per rater: judgments of gold units that give the gold answer."""
    single: np.ndarray
    """Per rater: votes that are their non-gold unit's only vote."""
    rater_code: np.ndarray
    """Per judgment of an open unit: its rater, an index into `raters` (int32)."""
    cell: np.ndarray
    """Per judgment of an open unit: its cell, one (unit, value) pair (int32)."""
    cell_bonus: np.ndarray
    """Per cell: its votes times log(k - 1), the part of the cell's score that does not depend on the raters."""
    cell_unit: np.ndarray
    """Per cell: its open unit (int32; non-decreasing)."""
    cell_starts: np.ndarray
    """Per open unit: its first cell (int32)."""
    unobserved: np.ndarray
    """Per open unit: categories nobody chose (int32; they share the score 0)."""

    def expected_correct(self, log_odds: np.ndarray) -> np.ndarray:
        """Per rater of the block (log_odds: log(p / (1 - p)) of each, indexed like `raters`): the expected number of
        correct answers on the open units, the E-step's posterior summed per rater.

        The log-likelihood of "truth = c" is base_u + sum over votes for c of log(p / ((1 - p) / (k - 1))), with
        base_u the log-likelihood that every vote is wrong; base_u cancels in the posterior."""
        if len(self.cell_unit) == 0:
            return np.zeros(len(self.raters))
        score = np.bincount(self.cell, weights=log_odds[self.rater_code], minlength=len(self.cell_unit))
        score += self.cell_bonus
        top = np.maximum.reduceat(score, self.cell_starts)
        top = np.where(self.unobserved > 0, np.maximum(top, 0.0), top)
        likelihood = np.exp(score - top[self.cell_unit])
        del score
        normalizer = np.bincount(self.cell_unit, weights=likelihood, minlength=len(top)) + self.unobserved * np.exp(-top)
        likelihood /= normalizer[self.cell_unit]  # now the posterior of each cell
        return np.bincount(self.rater_code, weights=likelihood[self.cell], minlength=len(self.raters))


def _gold_arrays(gold: Mapping[int, float] | tuple[np.ndarray, np.ndarray] | None) -> tuple[np.ndarray, np.ndarray]:
    if gold is None:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    if isinstance(gold, Mapping):
        return np.fromiter(gold.keys(), np.int64, len(gold)), np.fromiter(gold.values(), np.float64, len(gold))
    return _vector("gold units", gold[0], np.int64), _vector("gold values", gold[1], np.float64)


def vote_block(unit, rater, value, n_categories, gold=None) -> VoteBlock:
    """The judgments of whole units (every judgment of each unit here: no unit may continue in another block) as a
    VoteBlock; arguments as `rater_reliability`'s. Checks what rater_reliability promises to reject."""
    unit = _vector("unit", unit, np.int64)
    n_categories = np.broadcast_to(np.asarray(n_categories, dtype=np.float64), (len(unit),))
    by_unit = _group_by_unit(unit, rater, value)
    categories_per_judgment = n_categories[by_unit.source]
    if len(by_unit.unit) == 0:
        nothing, no_ints = np.zeros(0), np.zeros(0, dtype=np.int32)
        return VoteBlock(np.zeros(0, dtype=np.int64), nothing, nothing, nothing, no_ints, no_ints, nothing, no_ints,
                         no_ints, no_ints)  # fmt: skip
    k = np.minimum.reduceat(categories_per_judgment, by_unit.starts)
    if np.any(k != np.maximum.reduceat(categories_per_judgment, by_unit.starts)):
        raise ValueError("n_categories must be the same for every judgment of a unit")
    if np.any(k < 2) or np.any(k != np.round(k)):
        raise ValueError("n_categories must be an integer >= 2")
    del categories_per_judgment
    categories, category = np.unique(by_unit.value, return_inverse=True)
    n_codes = len(categories)
    cells, cell_of_judgment = np.unique(by_unit.unit_index * n_codes + category, return_inverse=True)
    del category
    cell_unit, cell_value = cells // n_codes, categories[cells % n_codes]
    del cells
    unobserved = k - np.bincount(cell_unit, minlength=len(k))
    if np.any(unobserved < 0):
        raise ValueError("a unit has more distinct values than n_categories")

    is_gold = np.zeros(len(k), dtype=bool)
    gold_units, gold_values = _gold_arrays(gold)
    cell_matches_gold = np.zeros(len(cell_unit))
    if len(gold_units):
        unit_ids = by_unit.unit[by_unit.starts]
        position = np.clip(np.searchsorted(unit_ids, gold_units), 0, len(unit_ids) - 1)
        judged = unit_ids[position] == gold_units
        gold_value = np.full(len(unit_ids), np.nan)
        gold_value[position[judged]] = gold_values[judged]
        is_gold = ~np.isnan(gold_value)
        cell_matches_gold = (cell_value == gold_value[cell_unit]).astype(np.float64)
        gold_unobserved = is_gold & (np.bincount(cell_unit, weights=cell_matches_gold, minlength=len(k)) == 0)
        if np.any(gold_unobserved & (unobserved == 0)):
            raise ValueError("a gold value is none of its unit's n_categories")

    raters, rater_code = np.unique(by_unit.rater, return_inverse=True)
    n_raters = len(raters)
    judgment_unit = by_unit.unit_index
    del by_unit
    on_gold = is_gold[judgment_unit]
    gold_correct = np.bincount(rater_code[on_gold], weights=cell_matches_gold[cell_of_judgment[on_gold]],
                               minlength=n_raters)  # fmt: skip
    votes = np.bincount(judgment_unit, minlength=len(k))
    single = np.bincount(rater_code[((votes == 1) & ~is_gold)[judgment_unit]], minlength=n_raters).astype(np.float64)
    open_unit = (votes > 1) & ~is_gold
    open_judgment, open_cell = open_unit[judgment_unit], open_unit[cell_unit]
    cell_votes = np.bincount(cell_of_judgment, minlength=len(cell_unit))[open_cell]
    new_cell = np.cumsum(open_cell) - 1
    block_cell_unit = (np.cumsum(open_unit) - 1)[cell_unit[open_cell]]
    return VoteBlock(
        raters=raters,
        judgments=np.bincount(rater_code, minlength=n_raters).astype(np.float64),
        gold_correct=gold_correct,
        single=single,
        rater_code=rater_code[open_judgment].astype(np.int32),
        cell=new_cell[cell_of_judgment[open_judgment]].astype(np.int32),
        cell_bonus=cell_votes * np.log(k[cell_unit[open_cell]] - 1.0),
        cell_unit=block_cell_unit.astype(np.int32),
        cell_starts=np.flatnonzero(np.concatenate(([True], block_cell_unit[1:] != block_cell_unit[:-1]))).astype(np.int32)
        if len(block_cell_unit) else np.zeros(0, dtype=np.int32),
        unobserved=unobserved[open_unit].astype(np.int32),
    )


def fit_reliability(blocks: Iterable[VoteBlock], args: ReliabilityArgs = ReliabilityArgs()) -> dict[int, float]:
    """Per rater: the one-coin Dawid-Skene accuracy (`rater_reliability`) from the judgments of these blocks (each
    unit in one block). Each iteration runs the E-step a block at a time and sums its expected correct answers per
    rater (M-step)."""
    blocks = [block for block in blocks if len(block.raters)]
    if not blocks:
        return {}
    rater_ids = np.unique(np.concatenate([block.raters for block in blocks]))
    where = [np.searchsorted(rater_ids, block.raters) for block in blocks]  # a block's raters are distinct
    judgments, gold_correct, single = (np.zeros(len(rater_ids)) for _ in range(3))
    for block, rows in zip(blocks, where, strict=True):
        judgments[rows] += block.judgments
        gold_correct[rows] += block.gold_correct
        single[rows] += block.single
    accuracy = np.full(len(rater_ids), args.initial_accuracy)
    for _ in range(args.max_iterations):
        log_odds = np.log(accuracy / (1.0 - accuracy))
        correct = gold_correct + single * accuracy  # E-step of the gold and single-vote units, in closed form
        for block, rows in zip(blocks, where, strict=True):
            correct[rows] += block.expected_correct(log_odds[rows])
        updated = (correct + args.prior_correct) / (judgments + args.prior_correct + args.prior_wrong)  # M-step
        change = float(np.max(np.abs(updated - accuracy)))
        accuracy = updated
        if change < args.tolerance:
            break
    return {int(rater_id): float(p) for rater_id, p in zip(rater_ids, accuracy, strict=True)}


def rater_reliability(
    unit,
    rater,
    value,
    n_categories,
    gold: Mapping[int, float] | tuple[np.ndarray, np.ndarray] | None = None,
    args: ReliabilityArgs = ReliabilityArgs(),
) -> dict[int, float]:
    """Per rater: the estimated probability that the rater gives the true answer (one-coin Dawid-Skene).

    Model: each unit u has one true category among n_categories[u] (uniform prior); rater r answers it with
    probability p_r, and otherwise picks one of the other categories uniformly. EM alternates the posterior of
    each unit's truth given all votes (E) and p_r = (expected correct + prior_correct) / (judgments + prior
    pseudo-counts) (M). Gold units (known truth) are clamped: their posterior is the gold answer, so gold
    accuracy anchors every rater and through them the non-gold units. Chance level is 1 / n_categories
    (0.5 for a pairwise choice without ties).

    value: categorical codes (e.g. the chosen option's index, or a code for "tie"); NaN = no answer.
    n_categories: an int, or one per judgment (constant within a unit). gold: {unit: value} or (units, values).
    The fit runs on BLOCK_JUDGMENTS judgments at a time (`vote_block`, `fit_reliability`); a caller that reads its
    judgments a range of units at a time builds the blocks itself (app.quality.service.rater_reliability).
    """
    unit = _vector("unit", unit, np.int64)
    n_categories = np.broadcast_to(np.asarray(n_categories, dtype=np.float64), (len(unit),))
    gold = _gold_arrays(gold)
    order = np.argsort(unit, kind="stable")
    sorted_unit = unit[order]
    # Cut every BLOCK_JUDGMENTS judgments, moved back to where that unit begins: each unit in one block.
    cuts = np.unique(np.searchsorted(sorted_unit, sorted_unit[BLOCK_JUDGMENTS::BLOCK_JUDGMENTS], side="left"))
    rater, value = np.asarray(rater), np.asarray(value)
    blocks = [vote_block(unit[rows], rater[rows], value[rows], n_categories[rows], gold)
              for rows in np.split(order, cuts[cuts > 0])]  # fmt: skip
    return fit_reliability(blocks, args)


# ---------------------------------------------------------------------------------------------------------------
# 4. rater flags
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FlagThresholds:
    min_median_time_ms: float = 3000.0
    """too_fast: the rater's median time per judgment is below this."""
    min_timed_judgments: int = 10
    """too_fast: judge speed only from at least this many timed judgments."""
    position_p_value: float = 1e-3
    """position_bias: two-sided binomial test that the first displayed option is picked at chance rate
    (1 / options) rejects below this p-value, in any group of the rater's judgments with the same number of
    options (display order is shuffled per assignment, so an unbiased rater picks positions at chance)."""
    position_min_judgments: int = 30
    """position_bias: test only groups with at least this many judgments."""
    position_min_deviation: float = 0.1
    """position_bias: and the first-position share differs from chance by at least this much (with thousands of
    judgments, significance alone would flag biases too small to matter, and chance ones among many raters)."""
    length_share: float = 0.9
    """length_bias: the rater picked the longer answer in at least this share of decisive pairwise judgments."""
    length_min_judgments: int = 20
    """length_bias: decide only from at least this many decisive pairwise judgments between unequal lengths."""


def rater_flags(
    rater,
    time_ms,
    chosen_position,
    n_options,
    chose_longer,
    thresholds: FlagThresholds = FlagThresholds(),
) -> dict[int, list[str]]:
    """Per rater (every rater in `rater`): the behaviour flags raised, among "too_fast", "position_bias",
    "length_bias"; an empty list when none.

    One row per judgment. time_ms: time spent (NaN = unknown). chosen_position: display position (0-based) of
    the option ranked best, NaN or negative when not applicable (e.g. a tie for best). n_options: options shown.
    chose_longer: 1 = picked the longer answer, 0 = the shorter, anything else (NaN, -1) = not a decisive
    pairwise judgment between answers of different lengths.
    """
    rater = _vector("rater", rater, np.int64)
    time_ms = _vector("time_ms", time_ms, np.float64)
    chosen_position = _vector("chosen_position", chosen_position, np.float64)
    n_options = _vector("n_options", n_options, np.float64)
    chose_longer = _vector("chose_longer", chose_longer, np.float64)
    _same_length(
        rater=rater,
        time_ms=time_ms,
        chosen_position=chosen_position,
        n_options=n_options,
        chose_longer=chose_longer,
    )
    rater_ids, rater_code = np.unique(rater, return_inverse=True)
    n_raters = len(rater_ids)
    flags: dict[int, list[str]] = {int(rater_id): [] for rater_id in rater_ids}

    # too fast: per-rater median from one sort by (rater, time).
    timed = np.flatnonzero(np.isfinite(time_ms))
    order = timed[np.lexsort((time_ms[timed], rater_code[timed]))]
    timed_count = np.bincount(rater_code[order], minlength=n_raters)
    begin = np.concatenate(([0], np.cumsum(timed_count)[:-1]))
    has_times = timed_count > 0
    sorted_times = time_ms[order]
    lower = sorted_times[(begin + (timed_count - 1) // 2)[has_times]]
    upper = sorted_times[(begin + timed_count // 2)[has_times]]
    median = np.full(n_raters, np.nan)
    median[has_times] = (lower + upper) / 2.0
    too_fast = (timed_count >= thresholds.min_timed_judgments) & (median < thresholds.min_median_time_ms)

    # position bias: first-position picks per (rater, number of options) against chance 1 / options.
    decided = (
        np.isfinite(chosen_position)
        & (chosen_position >= 0)
        & (chosen_position < n_options)
        & (n_options >= 2)
    )
    max_options = int(n_options[decided].max()) + 1 if decided.any() else 1
    groups, group_index = np.unique(
        rater_code[decided] * max_options + n_options[decided].astype(np.int64), return_inverse=True
    )
    group_size = np.bincount(group_index, minlength=len(groups))
    first_picks = np.bincount(group_index, weights=chosen_position[decided] == 0, minlength=len(groups))
    chance = 1.0 / (groups % max_options)
    # Two-sided p-value as twice the smaller tail (capped at 1).
    p_value = np.minimum(
        1.0,
        2.0
        * np.minimum(
            stats.binom.cdf(first_picks, group_size, chance),
            stats.binom.sf(first_picks - 1, group_size, chance),
        ),
    )
    deviation = np.abs(first_picks / np.maximum(group_size, 1) - chance)
    biased_group = (
        (group_size >= thresholds.position_min_judgments)
        & (p_value < thresholds.position_p_value)
        & (deviation >= thresholds.position_min_deviation)
    )
    position_bias = np.bincount(groups[biased_group] // max_options, minlength=n_raters) > 0

    # length bias: share of decisive pairwise judgments that went to the longer answer.
    decisive = (chose_longer == 0) | (chose_longer == 1)
    decisive_count = np.bincount(rater_code[decisive], minlength=n_raters)
    longer_count = np.bincount(rater_code[decisive], weights=chose_longer[decisive], minlength=n_raters)
    with np.errstate(invalid="ignore", divide="ignore"):
        longer_share = longer_count / decisive_count
    length_bias = (decisive_count >= thresholds.length_min_judgments) & (
        longer_share >= thresholds.length_share
    )

    for name, raised in (
        (FLAG_TOO_FAST, too_fast),
        (FLAG_POSITION_BIAS, position_bias),
        (FLAG_LENGTH_BIAS, length_bias),
    ):
        for code in np.flatnonzero(raised):
            flags[int(rater_ids[code])].append(name)
    return flags
