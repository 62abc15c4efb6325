"""Benchmark of the quality statistics core on synthetic pairwise judgments (default: 1,000,000 judgments,
50 raters, ~333k comparisons judged 3 times each, 10 models). Prints seconds per statistic, plus how well
the planted truth is recovered.

    .venv/bin/python bench/stats_core.py [--judgments 1000000] [--bootstrap 1000] ...
"""

import argparse
import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from app.quality.stats import (  # noqa: E402
    ELO_MEAN,
    ELO_PER_NATURAL_LOG_ODDS,
    agreement_with_majority,
    bradley_terry,
    krippendorff_alpha,
    pairwise_rater_agreement,
    rater_flags,
    rater_reliability,
)


@dataclass
class Args:
    judgments: int = 1_000_000
    """Judgments to generate."""
    raters: int = 50
    """Raters; each comparison goes to `overlap` distinct raters chosen at random."""
    overlap: int = 3
    """Judgments per comparison."""
    models: int = 10
    """Models battling; each comparison pits two distinct models."""
    tie_share: float = 0.05
    """Share of comparisons whose true answer is a tie."""
    gold_share: float = 0.02
    """Share of comparisons with a known answer (gold)."""
    bootstrap: int = 1000
    """Bootstrap replicates of the leaderboard."""
    seed: int = 0
    """Seed of the synthetic data."""


def parse_args() -> Args:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    for field in dataclasses.fields(Args):
        parser.add_argument(f"--{field.name.replace('_', '-')}", type=field.type, default=field.default)
    return Args(**vars(parser.parse_args()))


def make_judgments(args: Args) -> dict[str, np.ndarray]:
    """Pairwise verdicts coded 0 = a better, 0.5 = tie, 1 = b better (an ordinal scale a < tie < b)."""
    rng = np.random.default_rng(args.seed)
    n_units = -(-args.judgments // args.overlap)
    strengths = np.linspace(-1.0, 1.0, args.models)
    model_a = rng.integers(0, args.models, n_units)
    model_b = (model_a + rng.integers(1, args.models, n_units)) % args.models
    b_wins = rng.random(n_units) < 1.0 / (1.0 + np.exp(strengths[model_a] - strengths[model_b]))
    truth = np.where(rng.random(n_units) < args.tie_share, 0.5, b_wins.astype(float))

    accuracy = np.linspace(0.95, 0.6, args.raters)
    accuracy[-1] = 1.0 / 3.0  # a random clicker
    # overlap distinct raters per unit: the first columns of a random permutation of the raters, per unit.
    raters = np.argsort(rng.random((n_units, args.raters), dtype=np.float32), axis=1)[:, : args.overlap]
    unit = np.repeat(np.arange(n_units), args.overlap)[: args.judgments]
    rater = raters.ravel()[: args.judgments]
    codes = np.array([0.0, 0.5, 1.0])
    true_code = np.searchsorted(codes, truth[unit])
    wrong_code = (true_code + rng.integers(1, 3, len(unit))) % 3
    value = codes[np.where(rng.random(len(unit)) < accuracy[rater], true_code, wrong_code)]

    fast = rater % 10 == 1
    time_ms = np.where(fast, 900.0, 20_000.0) * rng.lognormal(0.0, 0.6, len(unit))
    first_share = np.where(rater % 10 == 2, 0.8, 0.5)
    chosen_position = np.where(value == 0.5, np.nan, (rng.random(len(unit)) >= first_share).astype(float))
    longer_share = np.where(rater % 10 == 3, 0.95, 0.55)
    chose_longer = np.where(value == 0.5, np.nan, (rng.random(len(unit)) < longer_share).astype(float))

    gold_units = np.flatnonzero(rng.random(n_units) < args.gold_share)
    return {
        "unit": unit,
        "rater": rater,
        "value": value,
        "model_a": model_a[unit],
        "model_b": model_b[unit],
        "outcome": 1.0 - value,  # value 0 = a better = outcome 1
        "planted_ratings": ELO_MEAN + ELO_PER_NATURAL_LOG_ODDS * (strengths - strengths.mean()),
        "planted_accuracy": accuracy,
        "gold_units": gold_units,
        "gold_values": truth[gold_units],
        "time_ms": time_ms,
        "chosen_position": chosen_position,
        "chose_longer": chose_longer,
    }


def timed(label: str, seconds: dict[str, float], function, *arguments, **keywords):
    start = time.perf_counter()
    result = function(*arguments, **keywords)
    seconds[label] = time.perf_counter() - start
    return result


def main() -> None:
    args = parse_args()
    start = time.perf_counter()
    data = make_judgments(args)
    print(
        f"generated {len(data['unit']):,} judgments, {len(np.unique(data['unit'])):,} units, "
        f"{args.raters} raters, {args.models} models in {time.perf_counter() - start:.2f} s"
    )
    unit, rater, value = data["unit"], data["rater"], data["value"]
    seconds: dict[str, float] = {}

    nominal = timed("alpha/nominal", seconds, krippendorff_alpha, unit, rater, value, "nominal")
    ordinal = timed("alpha/ordinal", seconds, krippendorff_alpha, unit, rater, value, "ordinal")
    interval = timed("alpha/interval", seconds, krippendorff_alpha, unit, rater, value, "interval")
    pairs = timed("agreement/pairwise", seconds, pairwise_rater_agreement, unit, rater, value)
    majority = timed("agreement/majority", seconds, agreement_with_majority, unit, rater, value)
    board = timed(
        f"leaderboard/bootstrap_{args.bootstrap}",
        seconds,
        bradley_terry,
        data["model_a"],
        data["model_b"],
        data["outcome"],
        args.models,
        bootstrap=args.bootstrap,
    )
    reliability = timed(
        "reliability/one_coin_em",
        seconds,
        rater_reliability,
        unit,
        rater,
        value,
        3,
        gold=(data["gold_units"], data["gold_values"]),
    )
    flags = timed(
        "flags/all",
        seconds,
        rater_flags,
        rater,
        data["time_ms"],
        data["chosen_position"],
        np.full(len(unit), 2.0),
        data["chose_longer"],
    )

    print("\nseconds")
    for label, value_seconds in seconds.items():
        print(f"  {label:<28} {value_seconds:8.3f}")
    print(f"  {'total':<28} {sum(seconds.values()):8.3f}")

    print("\nfigures")
    print(
        f"  alpha nominal / ordinal / interval: {nominal.alpha:.4f} / {ordinal.alpha:.4f} / {interval.alpha:.4f}"
        f" over {nominal.units:,} units"
    )
    print(
        f"  rater pairs with common units: {len(pairs):,}; majority agreement of rater 0: {majority[0][0]:.3f}"
    )
    error = np.abs(board.ratings - data["planted_ratings"])
    width = board.ci_high - board.ci_low
    print(
        f"  leaderboard: max |rating - planted| {error.max():.1f} points (the win probability is diluted by"
        f" rater noise, which shrinks ratings toward 1000), CI width {width.min():.1f}..{width.max():.1f}"
    )
    estimated = np.array([reliability[r] for r in range(args.raters)])
    planted = data["planted_accuracy"]
    print(
        f"  reliability: max |estimate - planted| {np.max(np.abs(estimated - planted)):.4f}, "
        f"random clicker ranked {int(np.sum(estimated <= estimated[-1]))} of {args.raters} from the bottom"
    )
    flagged = {
        name: sorted(r for r, raised in flags.items() if name in raised)
        for name in ("too_fast", "position_bias", "length_bias")
    }
    for name, raters in flagged.items():
        print(f"  flag {name}: raters {raters}")


if __name__ == "__main__":
    main()
