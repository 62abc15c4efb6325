"""The judge gate: a judge may prelabel or route only while its latest human-checked sample passes.

A project's AI policy may carry a gate (ai_policy.gate): `max_flip_rate`, `min_accuracy`, `min_sample`. The sample
is the judge's verdicts under its newest template version on comparisons the humans judged (counted human
judgments, app.judgments.selections, with a majority). It passes when it holds at least `min_sample` verdicts,
its order-swap flip rate is at most `max_flip_rate` and its tie-aware accuracy at least `min_accuracy` (a limit
left None is not checked).

- order-swap flip: a pairwise verdict asked in both orders flipped when the judge preferred the same position
  both times (first both times, or second both times): its choice followed the order, not the answers. A 2026
  benchmark of 27 judges found the median judge flipping 45% of swapped pairs.
- tie-aware accuracy: per verdict 1 when it equals the human majority (a tie included), 1/2 when exactly one of
  the two is a tie, 0 when they pick opposite answers.

Where it is enforced (app.judges.service): setting prelabel or route refuses a judge whose sample fails (422 with
the figures); each judge job stores its verdicts first, re-checks the gate with them in the sample, and only then
lets the policy act on them. A failing check switches the policy to shadow, records the trip (shown on the
judges page) and emits the `judge.gate_failed` webhook event: votes after the switch are shadow only.
"""

from __future__ import annotations

from datetime import UTC, datetime

from app.quality.stats import TIE_CODE

GATE_FAILED_EVENT = "judge.gate_failed"
DEFAULT_MIN_SAMPLE = 20


def flipped(p_first: list | None) -> bool | None:
    """Whether a pairwise verdict asked in both orders flipped with the order; None when it was not asked in both
    orders or one answer was undecided (exactly 0.5)."""
    if not p_first or len(p_first) != 2:
        return None
    first, second = (float(p) for p in p_first)
    if first == 0.5 or second == 0.5:
        return None
    return (first > 0.5) == (second > 0.5)


def tie_aware_score(judge_code: float, majority_code: float) -> float:
    """1 for the majority's verdict (a tie included), 1/2 when exactly one of the two is a tie, 0 otherwise."""
    if judge_code == majority_code:
        return 1.0
    return 0.5 if TIE_CODE in (judge_code, majority_code) else 0.0


def normalized(gate: dict | None) -> dict | None:
    """The stored gate's limits (None: no gate): max_flip_rate, min_accuracy (None: not checked), min_sample."""
    if not gate or (gate.get("max_flip_rate") is None and gate.get("min_accuracy") is None):
        return None
    return {"max_flip_rate": gate.get("max_flip_rate"), "min_accuracy": gate.get("min_accuracy"),
            "min_sample": int(gate.get("min_sample") or DEFAULT_MIN_SAMPLE)}  # fmt: skip


def latest_sample(figures: list[dict], judge_id: int) -> dict | None:
    """The judge's figures (app.judges.service.judge_agreement) under its newest template version."""
    mine = [f for f in figures if f["judge_id"] == judge_id]
    return max(mine, key=lambda f: f["template_version"]) if mine else None


def failures(gate: dict, sample: dict | None) -> list[str]:
    """Why the sample fails the gate (empty: it passes)."""
    compared = sample["compared"] if sample else 0
    if compared < gate["min_sample"]:
        return [f"only {compared} verdicts checked against the humans (the gate needs {gate['min_sample']})"]
    reasons = []
    flip_rate, accuracy = sample.get("flip_rate"), sample.get("tie_aware_accuracy")
    if gate["max_flip_rate"] is not None and (flip_rate is None or flip_rate > gate["max_flip_rate"]):
        shown = "unknown (not asked in both orders)" if flip_rate is None else f"{flip_rate:.3f}"
        reasons.append(f"order-swap flip rate {shown} above the limit {gate['max_flip_rate']:.3f}")
    if gate["min_accuracy"] is not None and accuracy < gate["min_accuracy"]:
        reasons.append(f"tie-aware accuracy {accuracy:.3f} below the floor {gate['min_accuracy']:.3f}")
    return reasons


def trip_record(judge_id: int, judge_name: str, sample: dict | None, reasons: list[str]) -> dict:
    """What the policy keeps of a trip (shown on the judges page) and the webhook event's payload."""
    return {"at": datetime.now(UTC).isoformat(), "judge_id": judge_id, "judge": judge_name, "reasons": reasons,
            "compared": sample["compared"] if sample else 0,
            "flip_rate": sample.get("flip_rate") if sample else None,
            "tie_aware_accuracy": sample.get("tie_aware_accuracy") if sample else None,
            "template_version": sample["template_version"] if sample else None}  # fmt: skip
