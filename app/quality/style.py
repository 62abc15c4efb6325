"""Style control for the leaderboard: Bradley-Terry with answer style as covariates (numpy only, no database).

Longer, better-formatted answers win votes whatever their substance. As lmarena's ranking code does
(`lmarena/arena-rank`, FastChat's `elo_analysis.py`), the style-controlled leaderboard fits one logistic
regression over the battles: P(a beats b) = sigmoid(theta_a - theta_b + sum_k beta_k x_k), where x_k is the
normalised difference of style feature k between a's and b's answers. The model strengths theta are then what
the votes say about the models with style held equal, and beta says how much each style feature sways votes.

Features (one definition, `style_counts`): the answer's length in characters, and its markdown headers, list
items and bold spans. Normalisation as arena-rank's: per battle the relative difference (a - b) / (a + b)
(0 when both are 0), then each feature standardised over the battles (mean 0, standard deviation 1; a feature
that never varies stays 0 and has no coefficient).

Ties count half a win each way (the outcome 0.5), as in the raw leaderboard (app.quality.stats.bradley_terry).
Intervals are Wald intervals from the observed information (estimate +- 1.96 standard errors), for the
ratings (centred, so their covariance is the centred one) and for the coefficients; the raw leaderboard's
bootstrap would refit the regression per replicate, on every battle, a thousand times.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from scipy.special import expit

from app.quality.stats import ELO_MEAN, ELO_PER_NATURAL_LOG_ODDS, _strongly_connected

STYLE_FEATURES = ("length", "headers", "lists", "bold")
"""The style covariates, in column order."""
Z_95 = 1.959963984540054
DESIGN_BLOCK = 262_144
"""Battles per block of the fit's design matrix (about 20 MB each): the fit's memory does not grow with the battles
beyond their own columns."""
MAX_LOG_ODDS = 50.0
"""A fitted parameter beyond this many log-odds means the maximum-likelihood estimate does not exist (separation)."""

_HEADER = re.compile(r"^#{1,6}\s", re.MULTILINE)
_LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d+\.)\s", re.MULTILINE)
_BOLD = re.compile(r"\*\*[^*\n]+\*\*|__[^_\n]+__")


def style_counts(text: str) -> tuple[float, float, float, float]:
    """An answer's style features, in STYLE_FEATURES order: characters, markdown headers, list items, bold spans."""
    return (float(len(text)), float(len(_HEADER.findall(text))), float(len(_LIST_ITEM.findall(text))),
            float(len(_BOLD.findall(text))))  # fmt: skip


def style_differences(counts_a: np.ndarray, counts_b: np.ndarray) -> np.ndarray:
    """Battles x features: (a - b) / (a + b) per feature (0 where both are 0), standardised over the battles.

    Built one feature column at a time, in place: at ten million battles a battles x features temporary is 320 MB,
    and the formula above as written holds several at once."""
    counts_a = np.asarray(counts_a, dtype=np.float64)
    counts_b = np.asarray(counts_b, dtype=np.float64)
    out = np.empty(np.broadcast_shapes(counts_a.shape, counts_b.shape), dtype=np.float64)
    if len(out) == 0:
        return out
    for k in range(out.shape[1]):
        column = out[:, k]
        total = counts_a[:, k] + counts_b[:, k]
        np.subtract(counts_a[:, k], counts_b[:, k], out=column)
        with np.errstate(invalid="ignore", divide="ignore"):
            np.divide(column, total, out=column)
        column[~(total > 0)] = 0.0
        mean, spread = column.mean(), column.std()
        if spread > 0:
            column -= mean
            column /= spread
        else:
            column[:] = 0.0
    return out


@dataclass(frozen=True)
class StyleControlled:
    ratings: np.ndarray
    """Per model, Elo scale, mean 1000 over the models with battles (NaN without battles), style held equal."""
    ci_low: np.ndarray
    """Wald 95% interval of each rating."""
    ci_high: np.ndarray
    coefficients: np.ndarray
    """Per feature, the change in log-odds of winning per standard deviation of the normalised difference
    (NaN for a feature that never varies)."""
    coefficient_ci_low: np.ndarray
    coefficient_ci_high: np.ndarray
    prior_ties: float
    """Virtual ties per model against an average one, added only when the battles leave the fit undetermined
    (the win graph is not strongly connected), as in the raw leaderboard; 0 otherwise."""


def _design(model_a, model_b, features, played: np.ndarray) -> np.ndarray:
    """Columns: +1/-1 for models a/b (the first played model is the reference, left out), then the features."""
    column = np.full(int(played.max()) + 1 if played.size else 0, -1)
    column[played] = np.arange(len(played)) - 1
    rows = np.arange(len(model_a))
    x = np.zeros((len(model_a), len(played) - 1 + features.shape[1]))
    for side, sign in ((model_a, 1.0), (model_b, -1.0)):
        col = column[side]
        keep = col >= 0
        x[rows[keep], col[keep]] = sign
    x[:, len(played) - 1 :] = features
    return x


def style_controlled_bradley_terry(model_a, model_b, outcome, features, n_models: int, *, prior_ties: float = 1.0,
                                   max_iterations: int = 100, tolerance: float = 1e-10,
                                   weights=None) -> StyleControlled:  # fmt: skip
    """Maximum-likelihood fit of P(a wins) = sigmoid(theta_a - theta_b + features . beta) by Newton's method.

    One row per battle: model indexes a and b, outcome 1 (a wins), 0.5 (tie), 0 (b wins), and the battle's
    features (from `style_differences`; zero columns: a plain Bradley-Terry fit). Returns Elo-scale ratings and
    the coefficients with Wald intervals.

    `weights` (one per battle, >= 0; the post-stratified leaderboard's, app.quality.poststrat): a weighted
    (pseudo-)likelihood; the intervals then use the sandwich covariance H^-1 (sum w^2 (y - p)^2 x x') H^-1, as
    survey weights call for, instead of the inverse information."""
    model_a = np.asarray(model_a, dtype=np.int64)
    model_b = np.asarray(model_b, dtype=np.int64)
    outcome = np.asarray(outcome, dtype=np.float64)
    features = np.asarray(features, dtype=np.float64).reshape(len(model_a), -1)
    n_features = features.shape[1]
    nan_models, nan_features = np.full(n_models, np.nan), np.full(n_features, np.nan)
    weight = np.ones(len(model_a)) if weights is None else np.asarray(weights, dtype=np.float64)
    keep = weight > 0
    if not np.all(keep):
        model_a, model_b, outcome, features, weight = (v[keep] for v in (model_a, model_b, outcome, features, weight))
    battles = np.bincount(model_a, minlength=n_models) + np.bincount(model_b, minlength=n_models)
    played = np.flatnonzero(battles > 0)
    if played.size < 2:
        ratings = nan_models.copy()
        ratings[played] = ELO_MEAN
        return StyleControlled(ratings, ratings.copy(), ratings.copy(), nan_features, nan_features.copy(),
                               nan_features.copy(), 0.0)  # fmt: skip
    wins = np.zeros((n_models, n_models))
    np.add.at(wins, (model_a, model_b), outcome)
    np.add.at(wins, (model_b, model_a), 1.0 - outcome)
    used_prior = 0.0 if _strongly_connected(wins[np.ix_(played, played)]) else float(prior_ties)
    # A feature that never varies says nothing (its column is 0): left out of the fit, its coefficient NaN.
    varies = np.any(features != 0.0, axis=0)
    n_strengths = len(played) - 1
    n_columns = n_strengths + int(varies.sum())

    def designs():
        """The design matrix a block of battles at a time (DESIGN_BLOCK rows: its memory stays bounded)."""
        for start in range(0, len(model_a), DESIGN_BLOCK):
            part = slice(start, start + DESIGN_BLOCK)
            yield _design(model_a[part], model_b[part], features[part][:, varies], played), part

    # The prior, as in the raw fit: prior_ties virtual ties of each model against a fixed average one (strength
    # 0), i.e. a penalty -prior/2 * sum log(sigmoid(t) sigmoid(-t)) on every played model's strength; the
    # reference model's strength is 0 here, so its term is constant.
    beta = np.zeros(n_columns)
    for _ in range(max_iterations):
        gradient, hessian = np.zeros(n_columns), np.zeros((n_columns, n_columns))
        for x, part in designs():
            p = expit(x @ beta)
            gradient += x.T @ (weight[part] * (outcome[part] - p))
            hessian += (x * (weight[part] * p * (1.0 - p))[:, None]).T @ x
        if used_prior:
            t = beta[:n_strengths]
            q = expit(t)
            gradient[:n_strengths] += used_prior * (0.5 - q)
            hessian[:n_strengths, :n_strengths] += np.diag(used_prior * q * (1.0 - q))
        step = np.linalg.lstsq(hessian, gradient, rcond=None)[0]
        beta = beta + step
        if not np.all(np.isfinite(beta)) or float(np.max(np.abs(step))) < tolerance:
            break
    if not np.all(np.isfinite(beta)) or np.max(np.abs(beta)) > MAX_LOG_ODDS:
        # A style feature (or a model) separates the outcomes: no finite estimate; nothing is reported.
        return StyleControlled(nan_models.copy(), nan_models.copy(), nan_models.copy(), nan_features.copy(),
                               nan_features.copy(), nan_features.copy(), used_prior)  # fmt: skip
    covariance = np.linalg.pinv(hessian)
    if weights is not None:
        meat = np.zeros((n_columns, n_columns))
        for x, part in designs():
            residual = weight[part] * (outcome[part] - expit(x @ beta))
            meat += (x * (residual**2)[:, None]).T @ x
        covariance = covariance @ meat @ covariance
    # Strengths of every played model (reference = 0), centred: theta_c = C E b, cov = C E S E' C'.
    embed = np.vstack((np.zeros(n_strengths), np.eye(n_strengths)))
    centre = np.eye(len(played)) - 1.0 / len(played)
    to_centred = centre @ embed
    theta = to_centred @ beta[:n_strengths]
    theta_sd = np.sqrt(
        np.maximum(np.diag(to_centred @ covariance[:n_strengths, :n_strengths] @ to_centred.T), 0.0)
    )
    ratings, ci_low, ci_high = nan_models.copy(), nan_models.copy(), nan_models.copy()
    ratings[played] = ELO_MEAN + ELO_PER_NATURAL_LOG_ODDS * theta
    ci_low[played] = ratings[played] - Z_95 * ELO_PER_NATURAL_LOG_ODDS * theta_sd
    ci_high[played] = ratings[played] + Z_95 * ELO_PER_NATURAL_LOG_ODDS * theta_sd
    coefficients, coefficient_sd = nan_features.copy(), nan_features.copy()
    coefficients[varies] = beta[n_strengths:]
    coefficient_sd[varies] = np.sqrt(np.maximum(np.diag(covariance)[n_strengths:], 0.0))
    return StyleControlled(ratings, ci_low, ci_high, coefficients, coefficients - Z_95 * coefficient_sd,
                           coefficients + Z_95 * coefficient_sd, used_prior)  # fmt: skip
