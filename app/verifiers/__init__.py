"""Verifiable projects: prompts with a reference or tests, verify jobs, verdicts, pass rates, verifier audits."""
