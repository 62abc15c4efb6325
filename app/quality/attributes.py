"""Per-attribute leaderboard: each model's mean human score on each of the project's attribute scales (the rubric
scores raters give on the rating page), with a normal-approximation 95% interval. Reads the counted human
judgments (app.judgments.selections): an excluded or voided judgment's scores do not count."""

from __future__ import annotations

import math
from collections import defaultdict

from sqlalchemy import Text, cast, select
from sqlalchemy.orm import Session

from app.db import json_loads
from app.judgments.selections import HUMAN, counted
from app.models import Completion, Judgment, Project, Prompt


def attribute_leaderboard(db: Session, project: Project) -> dict[str, list[dict]]:
    """{attribute: [{name, mean, ci_low, ci_high, n}] best first}; models are the completions' model names."""
    names = [a["name"] for a in project.attributes or []]
    if not names:
        return {}
    models = dict(db.execute(select(Completion.id, Completion.model_name).join(Prompt, Prompt.id == Completion.prompt_id)
                             .where(Prompt.project_id == project.id, Completion.model_name.is_not(None))).all())  # fmt: skip
    scores: dict[str, dict[str, list[float]]] = {name: defaultdict(list) for name in names}
    rows = db.execute(select(cast(Judgment.attributes, Text))
                      .where(counted(HUMAN, project_id=project.id))
                      .execution_options(yield_per=5000))  # fmt: skip
    for (text,) in rows:
        if not text or text == "{}":
            continue
        for name, by_option in json_loads(text).items():
            if name not in scores:
                continue
            for option_id, value in by_option.items():
                model = models.get(int(option_id))
                if model is not None:
                    scores[name][model].append(float(value))
    board = {}
    for name in names:
        entries = []
        for model, values in scores[name].items():
            n = len(values)
            mean = sum(values) / n
            sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
            half = 1.96 * sd / math.sqrt(n) if n > 1 else None
            entries.append({"name": model, "mean": round(mean, 3), "n": n,
                            "ci_low": round(mean - half, 3) if half is not None else None,
                            "ci_high": round(mean + half, 3) if half is not None else None})  # fmt: skip
        board[name] = sorted(entries, key=lambda e: (-e["mean"], e["name"]))
    return board
