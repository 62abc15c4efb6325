"""The step vocabulary, in one place (pure: no database).

- A **trajectory** is a completion whose continuation (``meta[CONTINUATION_KEY]``, app.imports.messages) is a list of
  messages after the last user turn: assistant turns that may call tools, the tools' results, a final answer. A
  completion without a continuation is a trajectory of one step (its text).
- A **step** is one assistant message (its reasoning, its content, its tool calls: the action) with the tool
  results that follow it up to the next assistant message (the observation). Step i is the i-th assistant message.
- A **step label** is one rater's ``good`` / ``bad`` / ``neutral`` on one step, plus any of the project's **failure
  tags** (``Project.step_tags``; None means `DEFAULT_STEP_TAGS`).
- **First error**: the step a rater marks "first error here" (or, unmarked, the first step they labelled bad). It is
  labelled bad. Steps after it are **after error**: as in PRM800K, a rater need not label them (a label given is
  kept but nothing counts it); agreement skips them and the stepwise export ends the trajectory at the first error,
  so a process reward model learns "the first mistake" and nothing about steps whose premise is already wrong.
- A **branch**: a rater rewrites step k; the new completion (``source: human_edit``, ``parent_id`` the original)
  keeps steps 0..k-1 as they were, step k replaced, and nothing after it (``meta.branch`` says from where).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from app.imports.messages import CONTINUATION_KEY, Message

GOOD, BAD, NEUTRAL = "good", "bad", "neutral"
STEP_LABELS = (GOOD, BAD, NEUTRAL)
"""In key order: 1 good, 2 bad, 3 neutral."""
DEFAULT_STEP_TAGS = ("wrong tool", "wrong arguments", "made-up result", "unsafe action")
MAX_TAGS = 20
MAX_TAG_CHARS = 60
MAX_STEPS = 500
"""Most steps one trajectory may have for labelling (a continuation holds at most 1,000 messages)."""


@dataclass(frozen=True)
class Step:
    """One step: an assistant message and the tool results that answer it."""

    index: int
    message: Message
    observations: list[Message] = field(default_factory=list)

    @property
    def reasoning(self) -> str:
        return self.message.get("reasoning") or ""

    @property
    def content(self) -> str:
        return self.message.get("content") or ""

    @property
    def tool_calls(self) -> list[dict]:
        return self.message.get("tool_calls") or []


def trajectory_messages(text: str, meta: dict | None) -> list[Message]:
    """A completion's continuation: its stored messages, else one plain assistant message with its text."""
    messages = (meta or {}).get(CONTINUATION_KEY)
    if isinstance(messages, list) and messages:
        return messages
    return [{"role": "assistant", "content": text}]


def steps_of(messages: list[Message]) -> list[Step]:
    """The steps of a continuation. A tool message before any assistant message (not a valid continuation) is
    ignored; assistant messages start steps, tool messages join the step before them."""
    steps: list[Step] = []
    for message in messages:
        if message.get("role") == "assistant":
            steps.append(Step(index=len(steps), message=message))
        elif message.get("role") == "tool" and steps:
            steps[-1].observations.append(message)
    return steps


def step_messages(step: Step) -> list[Message]:
    return [step.message, *step.observations]


def call_text(call: dict) -> str:
    """``name({json arguments})``, arguments as sorted compact-ish JSON (a JSON string is parsed first)."""
    function = call.get("function", call)
    arguments = function.get("arguments", {})
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return f"{function.get('name', '')}({arguments})"
    return f"{function.get('name', '')}({json.dumps(arguments, ensure_ascii=False, sort_keys=True)})"


def step_text(step: Step) -> str:
    """A step as one string, the text a process reward model reads (the stepwise export's `completions` items):
    reasoning, the answer text, each tool call as ``call: name({json arguments})``, each result as ``result:``."""
    parts = []
    if step.reasoning:
        parts.append(f"thought: {step.reasoning}")
    if step.content:
        parts.append(step.content)
    parts.extend(f"call: {call_text(call)}" for call in step.tool_calls)
    parts.extend(f"result: {obs.get('content', '')}" for obs in step.observations)
    return "\n".join(parts)


def prompt_text(prompt: str | list[Message]) -> str:
    """The history as one string (the stepwise export's `prompt`): a plain prompt as it is; a chat of one user
    message is its content; a longer chat is ``role: content`` blocks."""
    if isinstance(prompt, str):
        return prompt
    if len(prompt) == 1 and prompt[0].get("role") == "user":
        return prompt[0].get("content") or ""
    blocks = []
    for message in prompt:
        text = message.get("content") or ""
        text += "".join(f"\ncall: {call_text(call)}" for call in message.get("tool_calls") or [])
        blocks.append(f"{message.get('role')}: {text}")
    return "\n\n".join(blocks)


def project_tags(step_tags: list | None) -> list[str]:
    return list(DEFAULT_STEP_TAGS if step_tags is None else step_tags)


def first_error_of(labels: list[dict], first_error: int | None) -> int | None:
    """The first error: the marked step, else the first step labelled bad; None when neither."""
    if first_error is not None:
        return first_error
    return next((i for i, entry in enumerate(labels) if (entry or {}).get("label") == BAD), None)


def counted_labels(labels: list[dict], first_error: int | None) -> list[str]:
    """The labels that count (agreement, export): every step up to and including the first error; none after it."""
    end = first_error_of(labels, first_error)
    kept = labels if end is None else labels[: end + 1]
    return [(entry or {}).get("label") for entry in kept]


class StepLabelError(ValueError):
    """Labels that do not fit the trajectory or the project's tags; the text says which step and why."""


def check_labels(labels: Any, first_error: Any, n_steps: int, tags: list[str]) -> tuple[list[dict], int | None]:
    """Normalised (labels, first_error) for a trajectory of `n_steps`: one entry per step; every step up to the
    first error labelled; the first error's label is bad; tags among the project's, no repeats."""
    if not isinstance(labels, list) or len(labels) != n_steps:
        raise StepLabelError(f"labels must be a list of {n_steps} entries, one per step")
    if first_error is not None and (isinstance(first_error, bool) or not isinstance(first_error, int)
                                    or not 0 <= first_error < n_steps):  # fmt: skip
        raise StepLabelError(f"first_error must be a step index from 0 to {n_steps - 1}, or null")
    out: list[dict] = []
    for i, entry in enumerate(labels):
        entry = {"label": entry} if entry is None or isinstance(entry, str) else entry
        if not isinstance(entry, dict):
            raise StepLabelError(f"step {i + 1}: a label must be an object {{label, tags}}")
        label = entry.get("label")
        if label is not None and label not in STEP_LABELS:
            raise StepLabelError(f"step {i + 1}: label must be one of {', '.join(STEP_LABELS)}")
        step_tags = entry.get("tags") or []
        if not isinstance(step_tags, list) or len(step_tags) > MAX_TAGS:
            raise StepLabelError(f"step {i + 1}: tags must be a list of at most {MAX_TAGS} tags")
        unknown = [t for t in step_tags if t not in tags]
        if unknown:
            shown = ", ".join(repr(str(t)[:MAX_TAG_CHARS]) for t in unknown[:3])
            raise StepLabelError(f"step {i + 1}: unknown tag(s) {shown}; this project's tags: {', '.join(tags)}")
        out.append({"label": label, "tags": list(dict.fromkeys(step_tags))})
    if first_error is not None:
        if out[first_error]["label"] not in (None, BAD):
            raise StepLabelError(f"step {first_error + 1} is the first error, so its label is bad")
        out[first_error]["label"] = BAD
        earlier_bad = [i for i in range(first_error) if out[i]["label"] == BAD]
        if earlier_bad:
            raise StepLabelError(f"step {earlier_bad[0] + 1} is labelled bad before the first error "
                                 f"(step {first_error + 1}): mark it as the first error instead")  # fmt: skip
    end = first_error_of(out, first_error)
    missing = [i for i in range(n_steps if end is None else end + 1) if out[i]["label"] is None]
    if missing:
        raise StepLabelError(f"step {missing[0] + 1} has no label (every step up to the first error needs one)")
    return out, end
