"""Judgments: a rater's verdict on a comparison, submitted against an assignment."""
