"""Reward-model audit: does a reward model score what people preferred, or the length of the answer?

Computed by the reward job right after training (trainer.reward, in the trainer child: the web process never
loads the model) on the snapshot's held-out split (the train split when there is none), stored in the version's
manifest as `audit` (so with the registered version), shown on the model's page and in its model card.

    reward_audit(rows, chosen_scores, rejected_scores, split) -> dict

The figures (ties of score count half as right):
  accuracy              share of pairs whose chosen answer scores higher
  length_balanced       accuracy with the pairs whose chosen answer is longer and those whose chosen answer is
                        shorter weighted equally (0.5 each): what the accuracy would be on a set where length
                        says nothing about preference; beside it accuracy_chosen_longer / _shorter and their
                        pair counts (pairs of equal length count in `accuracy` only)
  score_length_correlation
                        Pearson correlation of score with answer length at equal preference: lengths and scores
                        are centred within the chosen answers and within the rejected answers, then correlated
                        (so the preference itself does not make the correlation)
  by_group              {key=value: {pairs, accuracy}}: per rater group, the share of the pairs that group's raters
                        voted on where the model agrees with the group's own majority (row columns group_chosen /
                        group_rejected: the groups whose votes favour the chosen / the rejected answer); only when
                        the rows carry them
  by_category           {category: {pairs, accuracy}} by the row's prompt `category`; only when rows carry one
  length_bias           True when accuracy_chosen_longer exceeds accuracy_chosen_shorter by more than
                        LENGTH_GAP_LIMIT, or |score_length_correlation| exceeds CORRELATION_LIMIT (and both
                        length classes hold at least MIN_CLASS pairs); `findings` says which, in words

Length is the answer's characters (a conversational answer: its messages' contents). Torch-free.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

LENGTH_GAP_LIMIT = 0.2
"""accuracy(chosen longer) - accuracy(chosen shorter) above this: the model rewards length."""
CORRELATION_LIMIT = 0.3
"""|correlation of score with length at equal preference| above this: the model rewards length."""
MIN_CLASS = 5
"""Fewest pairs on each side of the length split for the length figures to judge anything."""


def answer_length(value: Any) -> int:
    """Characters of an answer: a string's, or the summed contents of a message list."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(len(str(m.get("content") or "")) for m in value if isinstance(m, dict))
    return 0


def _right(gap: float) -> float:
    return 1.0 if gap > 0 else 0.5 if gap == 0 else 0.0


def _share(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _pearson(xs: list[float], ys: list[float]) -> float | None:
    n = len(xs)
    if n < 3:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    if sxx <= 0 or syy <= 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / math.sqrt(sxx * syy)


def _centred(values: list[float]) -> list[float]:
    mean = sum(values) / len(values) if values else 0.0
    return [v - mean for v in values]


def reward_audit(
    rows: list[dict[str, Any]], chosen_scores: list[float], rejected_scores: list[float], split: str
) -> dict[str, Any]:
    """The audit of a reward model's scores on `rows` (pairs rows of `split`), as module doc says."""
    if not (len(rows) == len(chosen_scores) == len(rejected_scores)):
        raise ValueError("reward_audit: one chosen and one rejected score per row")
    gaps = [c - r for c, r in zip(chosen_scores, rejected_scores, strict=True)]
    right = [_right(gap) for gap in gaps]
    chosen_len = [answer_length(row["chosen"]) for row in rows]
    rejected_len = [answer_length(row["rejected"]) for row in rows]
    longer = [ok for ok, c, r in zip(right, chosen_len, rejected_len, strict=True) if c > r]
    shorter = [ok for ok, c, r in zip(right, chosen_len, rejected_len, strict=True) if c < r]
    acc_longer, acc_shorter = _share(longer), _share(shorter)
    balanced = (acc_longer + acc_shorter) / 2 if acc_longer is not None and acc_shorter is not None else None
    correlation = _pearson(
        _centred([float(n) for n in chosen_len]) + _centred([float(n) for n in rejected_len]),
        _centred(list(chosen_scores)) + _centred(list(rejected_scores)),
    )
    audit: dict[str, Any] = {
        "split": split,
        "pairs": len(rows),
        "accuracy": _share(right),
        "length_balanced": balanced,
        "accuracy_chosen_longer": acc_longer,
        "accuracy_chosen_shorter": acc_shorter,
        "pairs_chosen_longer": len(longer),
        "pairs_chosen_shorter": len(shorter),
        "score_length_correlation": correlation,
    }
    groups: dict[str, list[float]] = defaultdict(list)
    categories: dict[str, list[float]] = defaultdict(list)
    for row, ok in zip(rows, right, strict=True):
        for group in row.get("group_chosen") or []:
            groups[str(group)].append(ok)
        for group in row.get("group_rejected") or []:
            groups[str(group)].append(1.0 - ok)
        if row.get("category") not in (None, ""):
            categories[str(row["category"])].append(ok)
    if groups:
        audit["by_group"] = {g: {"pairs": len(v), "accuracy": _share(v)} for g, v in sorted(groups.items())}
    if categories:
        audit["by_category"] = {c: {"pairs": len(v), "accuracy": _share(v)} for c, v in sorted(categories.items())}
    findings = []
    judged = len(longer) >= MIN_CLASS and len(shorter) >= MIN_CLASS
    if judged and acc_longer - acc_shorter > LENGTH_GAP_LIMIT:
        findings.append(f"accuracy {acc_longer:.2f} when the chosen answer is longer but {acc_shorter:.2f} when it "
                        f"is shorter (length-balanced {balanced:.2f} vs {audit['accuracy']:.2f} on all pairs)")  # fmt: skip
    if judged and correlation is not None and abs(correlation) > CORRELATION_LIMIT:
        findings.append(f"score correlates with answer length at equal preference (r = {correlation:.2f})")
    if not judged:
        findings.append(f"too few pairs on one side of the length split ({len(longer)} with the chosen answer "
                        f"longer, {len(shorter)} shorter; {MIN_CLASS} each needed) to judge length bias")  # fmt: skip
    audit["length_bias"] = bool(judged and len(findings) > 0)
    audit["findings"] = findings
    return audit


AUDIT_FILE = "audit.json"
"""The audit's file in a reward model's directory; trainer.run copies it into manifest.json as `audit`."""


def write_audit(audit: dict[str, Any], out_dir: str | Path) -> Path:
    path = Path(out_dir) / AUDIT_FILE
    path.write_text(json.dumps(audit, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def read_audit(out_dir: str | Path) -> dict[str, Any] | None:
    """The audit a reward job wrote into out_dir, or None (other kinds, or a reward model from elsewhere)."""
    path = Path(out_dir) / AUDIT_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def audit_lines(audit: dict[str, Any]) -> list[str]:
    """The audit as Markdown lines (the model card's section)."""

    def fig(value: Any) -> str:
        return "n/a" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)

    lines = [f"Measured on the `{audit.get('split')}` split ({audit.get('pairs')} pairs) right after training.", "",
             "| figure | value |", "| --- | --- |",
             f"| accuracy, all pairs | {fig(audit.get('accuracy'))} |",
             f"| accuracy, length-balanced | {fig(audit.get('length_balanced'))} |",
             f"| accuracy when the chosen answer is longer ({audit.get('pairs_chosen_longer')} pairs) | "
             f"{fig(audit.get('accuracy_chosen_longer'))} |",
             f"| accuracy when the chosen answer is shorter ({audit.get('pairs_chosen_shorter')} pairs) | "
             f"{fig(audit.get('accuracy_chosen_shorter'))} |",
             f"| correlation of score with length at equal preference | {fig(audit.get('score_length_correlation'))} |",
             f"| length bias | {'yes' if audit.get('length_bias') else 'no'} |"]  # fmt: skip
    for title, key in (("rater group", "by_group"), ("prompt category", "by_category")):
        if audit.get(key):
            lines += ["", f"| {title} | pairs | accuracy |", "| --- | --- | --- |"]
            lines += [f"| {name.replace('|', '/')} | {v['pairs']} | {fig(v['accuracy'])} |"
                      for name, v in audit[key].items()]  # fmt: skip
    if audit.get("findings"):
        lines += ["", *[f"- {finding}" for finding in audit["findings"]]]
    return lines
