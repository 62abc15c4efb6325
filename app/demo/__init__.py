"""Demo data and `rankforge demo`."""

from pathlib import Path

DATA_FILE = Path(__file__).with_name("demo_prompts.jsonl")
"""The demo projects' prompts and answers (native JSONL), written by us."""
