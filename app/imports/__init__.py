"""Importing prompts, completions and preferences from files (native JSONL, TRL, HH-RLHF, OpenAssistant)."""
