"""Rankforge: collect human feedback on model outputs and turn it into better models."""

__version__ = "0.1.0"
