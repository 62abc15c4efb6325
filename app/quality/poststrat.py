"""Post-stratified leaderboard: the ranking a project's target mix of rater groups would give (numpy + the groups'
format; no fit of its own).

Votes come from whoever rated, not from the population a team cares about: if 80% of the votes come from one
group (locale=de) and the project wants both locales to count equally, the plain ranking is the first group's.
A project sets group weights, `{"locale=de": 0.5, "locale=fr": 0.5}` (Project.group_weights, one label key, each
weight > 0; normalised to sum 1). Each battle then weighs target share of its rater's group / that group's battles,
so every group's battles together weigh its target share, and a Bradley-Terry fit on the weighted battles
(app.quality.style.style_controlled_bradley_terry with no style columns; sandwich intervals for survey weights)
gives the post-stratified ratings. Battles by raters outside the weighted groups are left out; a weighted group
without battles is reported as such and the others are renormalised.
"""

from __future__ import annotations

import numpy as np

from app.errors import Unprocessable
from app.groups import parse_group

MAX_GROUP_WEIGHTS = 50


def parse_group_weights(value: dict | str | None) -> dict[str, float]:
    """Group weights checked and normalised: `{key=value: weight}` (or the admin form's text, one `key=value: weight`
    a line or comma-separated); one label key; weights finite and > 0. Empty: no post-stratification."""
    if value is None:
        return {}
    if isinstance(value, str):
        pairs = {}
        for part in value.replace("\n", ",").split(","):
            if not part.strip():
                continue
            group, sep, weight = part.rpartition(":")
            if not sep:
                raise Unprocessable(f"A group weight is 'key=value: weight'; got {part.strip()[:60]!r}.")
            try:
                pairs[group.strip()] = float(weight)
            except ValueError:
                raise Unprocessable(f"The weight of {group.strip()[:60]!r} is not a number.") from None
        value = pairs
    if not isinstance(value, dict) or len(value) > MAX_GROUP_WEIGHTS:
        raise Unprocessable(f"Group weights are an object of at most {MAX_GROUP_WEIGHTS} 'key=value': weight entries.")
    parsed: dict[str, float] = {}
    for group, weight in value.items():
        key, label = parse_group(str(group))
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not np.isfinite(weight) or weight <= 0:
            raise Unprocessable(f"The weight of {group!r} must be a number above 0.")
        parsed[f"{key}={label}"] = float(weight)
    keys = {group.partition("=")[0] for group in parsed}
    if len(keys) > 1:
        raise Unprocessable(f"Group weights stratify by one label key; got {', '.join(sorted(keys))}.")
    total = sum(parsed.values())
    return {group: weight / total for group, weight in sorted(parsed.items())}


def battle_weights(raters: np.ndarray, labels: dict[int, dict], weights: dict[str, float]) -> tuple[np.ndarray, list[dict]]:
    """Per battle its post-stratification weight (0: the rater is in no weighted group), and per weighted group
    {group, target_share, battles, share} (share: its weight after renormalising over the groups with battles)."""
    key = next(iter(weights)).partition("=")[0]
    stratum = np.array([f"{key}={labels.get(int(r), {}).get(key)}" if labels.get(int(r), {}).get(key) is not None
                        else "" for r in raters], dtype=object)  # fmt: skip
    counts = {group: int(np.sum(stratum == group)) for group in weights}
    present = sum(share for group, share in weights.items() if counts[group])
    out = np.zeros(len(raters))
    strata = []
    for group, share in weights.items():
        used = share / present if counts[group] else 0.0
        if counts[group]:
            # Scaled so the weights sum to the number of weighted battles (the fit's scale is then a count).
            out[stratum == group] = used / counts[group]
        strata.append({"group": group, "target_share": round(share, 6), "battles": counts[group],
                       "share": round(used, 6)})  # fmt: skip
    n_weighted = int(np.sum(out > 0))
    return out * n_weighted, strata
