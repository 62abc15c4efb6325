"""Judgments: a rater's verdict on a comparison, submitted against an assignment."""

from app.judgments import tallies  # noqa: E402,F401  (registers the battle tallies' mapper events)
