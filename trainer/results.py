"""Typed job results: what a trainer job hands back, one type per output, with fixed field names.

The trainer child writes `result.json` into the job's output directory (trainer.run, from the kind's final metrics
and the kind table's `kl_metric`); the app reads it back with `read_result` and keeps `result.to_dict()` in the
job's result (`output`), where `stored_result` reads it again. Nothing reads a job's outputs any other way: the
figures have fixed names here (no reader looks among metric names), and each output file has one reader.

    read_result(output_dir) -> JobResult        ResultError (clear message) when missing or garbled
    from_dict(data) -> JobResult                 the same check on a dict (a job row's stored result)
    ModelResult (reward / policy / prm)   GenerationsResult   ScoresResult   JudgmentsResult

Torch-free and free of trainer.params, so the queue (app.jobs) can read results without knowing any kind.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

RESULT_FILE = "result.json"
"""The typed result's file in a job's output directory."""
MODEL_KINDS = ("reward", "policy", "prm")
"""The kind table's outputs that are models (the registry's model kinds; "prm": a process reward model)."""
SCORING_MODEL_KINDS = tuple(kind for kind in MODEL_KINDS if kind != "policy")
"""Model kinds a job may use as its reward model (score, GRPO/RLOO): an outcome reward model or a PRM."""


class ResultError(ValueError):
    """A job's result is missing or not what its type says (the message names the file and the problem)."""


def _number(value: Any) -> float | None:
    """A finite number as float, else None (a metric a kind did not report, or a NaN)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def read_jsonl(path: Path) -> list[dict]:
    """The JSON objects of a JSON-lines file; ResultError naming the file and line when it is missing or garbled."""
    if not path.is_file():
        raise ResultError(f"{path} is missing")
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ResultError(f"{path}, line {number}: not JSON ({error})") from error
            if not isinstance(row, dict):
                raise ResultError(f"{path}, line {number}: not a JSON object")
            rows.append(row)
    return rows


@dataclass(frozen=True, kw_only=True)
class JobResult:
    """What every trainer job hands back."""

    output: ClassVar[str] = ""
    job_kind: str
    """the job kind that made it (trainer.params.KINDS)"""
    job_id: int | None
    """the app's job id (a retried job recognises its own finished output by it)"""
    output_dir: str
    """the job's output directory (absolute)"""
    metrics: dict[str, Any] = field(default_factory=dict)
    """every final metric the kind reported, by the trainer's names (shown as they are; read no figure from here)"""

    def to_dict(self) -> dict[str, Any]:
        return {"output": self.output, **asdict(self)}

    def path(self, name: str) -> Path:
        return Path(self.output_dir) / name


@dataclass(frozen=True, kw_only=True)
class ModelResult(JobResult):
    """A trained model (its checkpoint is output_dir): a reward model or a policy."""

    output: ClassVar[str] = "model"
    model_kind: str
    """"reward", "policy" or "prm" (the registry's model kind)"""
    train_loss: float | None = None
    """the training loss the kind reports (the kind table's loss_metric: a mean over training for Trainer-based kinds)"""
    kl_to_reference: float | None = None
    """a policy's KL to the policy it was trained from, as the update measured it; None when it does not"""


@dataclass(frozen=True, kw_only=True)
class PRMResult(ModelResult):
    """A process reward model (trainer/prm.py) with its held-out figures (None when it had no held-out split)."""

    output: ClassVar[str] = "prm"
    METRICS: ClassVar[dict[str, str]] = {"step_accuracy": "eval/step_accuracy",
                                         "first_error_accuracy": "eval/first_error_accuracy",
                                         "outcome_auroc": "eval/outcome_auroc",
                                         "best_epoch": "validation/best_epoch",
                                         "validation_first_error_accuracy": "validation/first_error_accuracy",
                                         "validation_loss": "validation/loss"}  # fmt: skip
    step_accuracy: float | None = None
    """share of held-out labelled steps classified right (P(good) > 0.5 against the label)"""
    first_error_accuracy: float | None = None
    """share of held-out trajectories whose first step scored bad (or none) is the labelled first error (or none)"""
    outcome_auroc: float | None = None
    """AUROC of the minimum step score, all-good held-out trajectories against those with a bad step"""
    best_epoch: float | None = None
    """the epoch whose weights were kept, picked on the validation trajectories (PRMArgs.validation_share; None when
    none were held out and the last epoch was kept)"""
    validation_first_error_accuracy: float | None = None
    """first-error accuracy on the validation trajectories at best_epoch"""
    validation_loss: float | None = None
    """mean cross-entropy of the validation steps' labels at best_epoch"""


@dataclass(frozen=True, kw_only=True)
class GenerationsResult(JobResult):
    """Completions sampled from a policy: GENERATIONS_FILE, one {prompt_id, completions: [{text, ...}]} a line."""

    output: ClassVar[str] = "generations"
    FILE: ClassVar[str] = "generations.jsonl"
    kl_to_reference: float | None = None
    """mean log-probability ratio of the completions to the reference policy given (generate/kl_to_reference)"""

    def read_generations(self) -> list[dict]:
        return read_jsonl(self.path(self.FILE))


@dataclass(frozen=True, kw_only=True)
class ScoresResult(JobResult):
    """Reward-model scores of completions: FILE, one {prompt_id, completion_id, score} a line."""

    output: ClassVar[str] = "scores"
    FILE: ClassVar[str] = "scores.jsonl"

    def read_scores(self) -> dict[int, float]:
        """{completion id: score}: the one reader of the score file."""
        scores = {}
        for row in read_jsonl(self.path(self.FILE)):
            try:
                scores[int(row["completion_id"])] = float(row["score"])
            except (KeyError, TypeError, ValueError) as error:
                raise ResultError(f"{self.path(self.FILE)}: a row without a completion_id and score: {row}") from error
        return scores


@dataclass(frozen=True, kw_only=True)
class JudgmentsResult(JobResult):
    """AI verdicts on comparisons: FILE, one {comparison_id, ranking, confidence, ...} a line."""

    output: ClassVar[str] = "judgments"
    FILE: ClassVar[str] = "judgments.jsonl"

    def read_judgments(self) -> list[dict]:
        return read_jsonl(self.path(self.FILE))


RESULT_TYPES: dict[str, type[JobResult]] = {
    cls.output: cls for cls in (ModelResult, PRMResult, GenerationsResult, ScoresResult, JudgmentsResult)
}
"""Each output's result type, by the `output` a result records."""


def result_type(output: str) -> type[JobResult]:
    """The result type of a kind table output ("reward" and "policy" are both models; a "prm" has its own figures)."""
    if output in RESULT_TYPES:
        return RESULT_TYPES[output]
    return ModelResult if output in MODEL_KINDS else RESULT_TYPES[output]


def build_result(output: str, *, job_kind: str, job_id: int | None, output_dir: str | Path, metrics: dict,
                 kl_metric: str | None = None, loss_metric: str | None = None) -> JobResult:
    """The trainer's side: the typed result of a finished kind from its final metrics."""
    metrics = dict(metrics or {})
    common = {"job_kind": job_kind, "job_id": job_id, "output_dir": str(output_dir), "metrics": metrics}
    kl = _number(metrics.get(kl_metric)) if kl_metric else None
    loss = _number(metrics.get(loss_metric)) if loss_metric else None
    cls = result_type(output)
    if cls is PRMResult:
        figures = {name: _number(metrics.get(metric)) for name, metric in PRMResult.METRICS.items()}
        return PRMResult(**common, model_kind=output, train_loss=loss, kl_to_reference=kl, **figures)
    if cls is ModelResult:
        return ModelResult(**common, model_kind=output, train_loss=loss,
                           kl_to_reference=kl)  # fmt: skip
    if cls is GenerationsResult:
        return GenerationsResult(**common, kl_to_reference=kl)
    return cls(**common)


def from_dict(data: Any, source: str = "job result") -> JobResult:
    """A result from its dict (to_dict's shape), checked: its type known, every field there and of its type."""
    if not isinstance(data, dict):
        raise ResultError(f"{source}: not a JSON object")
    cls = RESULT_TYPES.get(data.get("output"))
    if cls is None:
        raise ResultError(f"{source}: unknown output {data.get('output')!r}; known: {', '.join(RESULT_TYPES)}")
    names = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(names) - {"output"})
    if unknown:
        raise ResultError(f"{source}: unknown field(s) {', '.join(unknown)} for a {cls.output} result")
    missing = sorted(n for n, f in names.items() if n not in data and f.default is MISSING and f.default_factory is MISSING)
    if missing:
        raise ResultError(f"{source}: missing field(s) {', '.join(missing)} of a {cls.output} result")
    values = {name: data[name] for name in names if name in data}
    for name, value in values.items():
        if not _fits(value, names[name].type):
            raise ResultError(f"{source}: field {name!r} is not {names[name].type}: {value!r}")
    return cls(**values)


_TYPES = {"str": (str,), "int": (int,), "float": (int, float), "dict[str, Any]": (dict,), "None": (type(None),)}


def _fits(value: Any, annotation: str) -> bool:
    """Whether a JSON value fits a field annotation written as a string ("float | None", "int", ...)."""
    allowed = tuple(t for part in annotation.split(" | ") for t in _TYPES[part.strip()])
    return isinstance(value, allowed) and not (isinstance(value, bool) and bool not in allowed)


def write_result(result: JobResult, out_dir: str | Path) -> Path:
    """Write result.json into out_dir (the trainer does this before it publishes the directory)."""
    path = Path(out_dir) / RESULT_FILE
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(result.to_dict(), handle, indent=2, ensure_ascii=False)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    return path


def read_result(output_dir: str | Path) -> JobResult:
    """A job's typed result from its output directory; ResultError naming the file when missing or garbled."""
    path = Path(output_dir) / RESULT_FILE
    if not path.is_file():
        raise ResultError(f"{path} is missing: the job wrote no result")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ResultError(f"{path} is not valid JSON ({error})") from error
    result = from_dict(data, str(path))
    if Path(result.output_dir) != Path(output_dir):  # written under its temp name, read where it was published
        result = type(result)(**{**asdict(result), "output_dir": str(Path(output_dir))})
    return result
