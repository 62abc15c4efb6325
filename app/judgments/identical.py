"""Comparisons of identical answers: never sent to raters, a tie by construction, counted apart.

A generate job whose new policy has barely moved can answer an evaluation prompt with the very text the previous
version wrote. Votes between two copies of one text are noise that would count as wins and losses, so such a
comparison is recorded (flagged IDENTICAL in its meta) with `required` 0: no queue, judge or route serves it.
A round reports these pairs as `identical_pairs`, beside its win rate, not in it (app.quality.rounds)."""

from __future__ import annotations

IDENTICAL = "identical"
"""Comparison meta flag: its answers are one text."""


def identical_answers(texts: list[str]) -> bool:
    """The answers are one text (leading and trailing white space aside)."""
    return len({text.strip() for text in texts}) == 1
