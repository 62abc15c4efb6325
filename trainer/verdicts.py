"""The verdict arithmetic of AI judges, torch-free: both the trainer's judge (trainer/judge.py, on a local model) and
the app's endpoint judge (app/judges/endpoint_judge.py, over HTTP) fill the same template, combine the two orders
the same way and turn pairwise probabilities into the same ranking and confidence (see trainer/judge.py)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from itertools import combinations
from typing import Any

TIE_EPS = 1e-9


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def combine_orders(p_first_ab: float, p_first_ba: float) -> float:
    """P(a over b) from the two orders: asked (a, b) the judge preferred the first with p_first_ab; asked (b, a)
    with p_first_ba (which is its P(b over a)). The average cancels a constant preference for a position."""
    return (p_first_ab + (1.0 - p_first_ba)) / 2.0


def bradley_terry(ids: list[int], pairs: list[tuple[int, int, float]], steps: int = 200, prior: float = 0.01) -> dict:
    """Log-strengths maximising sum p log s(ti - tj) + (1 - p) log s(tj - ti) - prior/2 |t|^2 (Newton on a small K)."""
    index = {c: i for i, c in enumerate(ids)}
    theta = [0.0] * len(ids)
    if len(ids) == 2 and len(pairs) == 1:  # the exact answer: the difference is logit(p) (clipped)
        a, b, p = pairs[0]
        p = min(max(p, 1e-6), 1 - 1e-6)
        half = math.log(p / (1 - p)) / 2
        return {a: half, b: -half}
    for _ in range(steps):
        grad = [-prior * t for t in theta]
        hess = [prior] * len(ids)
        for a, b, p in pairs:
            i, j = index[a], index[b]
            s = _sigmoid(theta[i] - theta[j])
            grad[i] += p - s
            grad[j] -= p - s
            w = s * (1 - s)
            hess[i] += w
            hess[j] += w
        move = max(abs(g / h) for g, h in zip(grad, hess, strict=True))
        theta = [t + g / h for t, g, h in zip(theta, grad, hess, strict=True)]  # diagonal Newton step
        if move < 1e-10:
            break
    mean = sum(theta) / len(theta)
    return {c: theta[index[c]] - mean for c in ids}


def ranking_from_strengths(strengths: dict[int, float], prob) -> tuple[list[list[int]], float]:
    """Tie groups best first (neighbours with P(a over b) within TIE_EPS of 0.5 share a group) and the confidence."""
    order = sorted(strengths, key=lambda c: (-strengths[c], c))
    groups: list[list[int]] = [[order[0]]]
    confidence = 1.0
    for higher, lower in zip(order, order[1:], strict=False):
        p = prob(higher, lower)
        if abs(p - 0.5) <= TIE_EPS:
            groups[-1].append(lower)
            confidence = 0.5
        else:
            groups.append([lower])
            confidence = min(confidence, max(p, 1 - p))
    return groups, confidence


def verdict_from_pairs(ids: list[int], pairs: list[tuple[int, int, float]]) -> dict[str, Any]:
    strengths = bradley_terry(ids, pairs)
    direct = {(a, b): p for a, b, p in pairs} | {(b, a): 1 - p for a, b, p in pairs}
    ranking, confidence = ranking_from_strengths(
        strengths, lambda a, b: direct.get((a, b), _sigmoid(strengths[a] - strengths[b]))
    )
    return {"ranking": ranking, "confidence": confidence, "strengths": strengths,
            "pairs": [[a, b, p] for a, b, p in pairs]}  # fmt: skip


def verdict_from_strengths(strengths: dict[int, float], prefer: Callable[[int, int], float]) -> dict[str, Any]:
    """The verdict of a judge that gives every response a strength: ranking and confidence (ranking_from_strengths),
    the strengths, and P(a over b) = prefer(a, b) for every pair."""
    pairs = [(a, b, prefer(a, b)) for a, b in combinations(sorted(strengths), 2)]
    ranking, confidence = ranking_from_strengths(strengths, prefer)
    return {"ranking": ranking, "confidence": confidence, "strengths": dict(strengths),
            "pairs": [[a, b, p] for a, b, p in pairs]}  # fmt: skip


def verdict_from_scores(scores: dict[int, float]) -> dict[str, Any]:
    return verdict_from_strengths(scores, lambda a, b: _sigmoid(scores[a] - scores[b]))


def outcome_preference(a: float, b: float, tie_margin: float = 0.0) -> float:
    """P(a over b) from two PRM outcomes (each read as the probability that its response is good): the chance that a
    is good and b bad plus half the chance both are alike, (1 + a - b) / 2; outcomes within tie_margin are a tie."""
    if abs(a - b) <= tie_margin:
        return 0.5
    return min(max((1.0 + a - b) / 2.0, 0.0), 1.0)


def verdict_from_outcomes(outcomes: dict[int, float], tie_margin: float = 0.0) -> dict[str, Any]:
    """A process reward model judge's verdict: the responses sorted by outcome (best first), neighbours within
    tie_margin of each other in one tie group; P(a over b) as `outcome_preference`."""
    return verdict_from_strengths(outcomes, lambda a, b: outcome_preference(outcomes[a], outcomes[b], tie_margin))


def fill_template(template: str, *, guidelines: str, prompt: str, response_a: str, response_b: str,
                  attribute: str | None = None) -> str:  # fmt: skip
    """Plain replacement of the four fields, and {attribute} for a rubric question (texts may hold braces of their
    own)."""
    values = {"{guidelines}": guidelines, "{prompt}": prompt, "{response_a}": response_a, "{response_b}": response_b}
    if attribute is not None:
        values["{attribute}"] = attribute
    out, i = [], 0
    while i < len(template):
        for key, value in values.items():
            if template.startswith(key, i):
                out.append(value)
                i += len(key)
                break
        else:
            out.append(template[i])
            i += 1
    return "".join(out)


def conversation_text(messages: list[dict]) -> str:
    """A conversation as a judge reads it, one message a line ``role: content``: an assistant's tool calls as
    ``(calls name {json arguments})``, a tool result as ``tool (name): result`` under the name of the call it answers.
    Reasoning is left out: the judge compares what the user would see and what the model did."""
    names: dict[str, str] = {}
    lines = []
    for m in messages:
        role, content = m.get("role", "user"), str(m.get("content") or "")
        calls = []
        for call in m.get("tool_calls") or []:
            function = call.get("function", {})
            names[call.get("id", "")] = function.get("name", "")
            arguments = function.get("arguments", {})
            arguments = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False, sort_keys=True)
            calls.append(f"(calls {function.get('name', '')} {arguments})")
        if role == "tool":
            name = m.get("name") or names.get(m.get("tool_call_id", ""), "")
            role = f"tool ({name})" if name else "tool"
        lines.append(f"{role}: " + " ".join(part for part in [content, *calls] if part))
    return "\n".join(lines)


def response_text(text: str, messages: list[dict] | None = None) -> str:
    """A response as a judge reads it: its text, or, for a continuation with tool calls and results (the judge
    inputs' ``messages``), the whole continuation as `conversation_text`."""
    plain = not messages or (len(messages) == 1 and set(messages[0]) <= {"role", "content"})
    return text if plain else conversation_text(messages)


def _prompt_text(prompt: Any) -> str:
    if isinstance(prompt, list):
        return conversation_text(prompt)
    return str(prompt)


def verdicts_from_orders(rows: list[dict], asks: list[tuple[int, int, int]], probs: list[float]) -> list[dict]:
    """Rows' verdicts from P(first shown wins) of each (row, first, second) asked."""
    seen: dict[tuple[int, int, int], float] = {}
    p_first: dict[int, list[float]] = {}
    for (r, first, second), p in zip(asks, probs, strict=True):
        seen[(r, first, second)] = p
        p_first.setdefault(r, []).append(p)
    verdicts = []
    for r, row in enumerate(rows):
        ids = sorted(c["completion_id"] for c in row["completions"])
        pairs = []
        for a, b in combinations(ids, 2):
            ab, ba = seen.get((r, a, b)), seen.get((r, b, a))
            p = combine_orders(ab, ba) if ab is not None and ba is not None else ab
            pairs.append((a, b, p))
        verdict = verdict_from_pairs(ids, pairs)
        verdict["p_first"] = p_first.get(r, [])
        verdicts.append({"comparison_id": row["comparison_id"], **verdict})
    return verdicts
