"""Confidence intervals of shares, one definition for every domain (quality's round win rates, the verifiers'
error rates). Pure math: imports nothing of the app, so any layer may use it."""

from __future__ import annotations

import math

Z95 = 1.959963984540054
"""The standard normal quantile of a two-sided 95% interval."""


def wilson_interval(successes: float, n: int, z: float = Z95) -> tuple[float | None, float | None]:
    """Wilson score interval of the share successes / n (95% by default); successes may hold halves (a tie
    counting half a win). (None, None) when there is nothing to estimate (n = 0)."""
    if n <= 0:
        return None, None
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(max(0.0, p * (1 - p)) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)
