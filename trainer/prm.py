"""Process reward model (kind `prm`) on a stepwise snapshot: token classification at the step separators.

The recipe of Math-Shepherd and TRL's former PRMTrainer (TRL 1.x no longer ships one, so it is written here). A row
is TRL's stepwise shape, {prompt, completions: [step, ...], labels: [bool, ...]}; it is read as

    prompt  step_1 SEP  step_2 SEP ...  step_n SEP

and a two-label token classifier (0 bad, 1 good) learns each step's label at the last token of the separator after
it, every other token being ignored (label -100). A decoder reads left to right, so step i's score sees the prompt
and steps 1..i only: the score of a prefix. An encoder reads the whole trajectory at once (its step scores may look
ahead); both train and score the same way. The separator is the job's step_separator (default a blank line: the
stepwise export's step texts hold single newlines); where it encodes to no token at all (a WordPiece tokenizer drops
whitespace) the tokenizer's SEP (else EOS) token stands in. Steps are tokenized one by one and the separator's ids
appended, so a separator never merges with a step's text. Too long: the prompt's start is cut first, then the
trajectory's last steps are dropped (their labels with them).

A step's score is P(good) at its separator. The outcome of a whole trajectory is the minimum step score (as
Math-Shepherd ranks solutions) or the last step's (params `prm_outcome` of score jobs and of GRPO/RLOO's reward_model
reward).

Model selection (PRMArgs.validation_share, default 0.1 from 100 training trajectories on): a share of the train
split's trajectories is held out (by prompt, or by trajectory when there are few prompts), the model is scored on
them after every epoch (BestEpoch), and the job keeps the weights of the best epoch (validation_metric, default
first-error accuracy), not the last: a small PRM's final epoch varies much with the training seed. Reported as
validation/<figure> of that epoch (the figures below, and validation/loss: the mean cross-entropy of the step labels),
validation/best_epoch and validation/epochs; each epoch's figures go out as metrics events while training.
With PRMArgs.restarts k > 1 (best of k) the job trains k times from the base
(training seeds seed, seed + 1, ...) and keeps the run whose best epoch is best on validation (a tie keeps the
earlier run): validation/restart (counted from 0), validation/restarts.

Metrics: loss/total while training; on the snapshot's held-out split at the end
    eval/step_accuracy          share of held-out labelled steps whose P(good) > 0.5 matches the label
    eval/first_error_accuracy   share of held-out trajectories whose predicted first error (first step scored bad, or
                                none) is the labelled one (first step labelled bad, or none)
    eval/outcome_auroc          AUROC of the minimum step score, all-good trajectories against the others (absent
                                when the split holds only one of the two)
    eval/steps, eval/trajectories, eval/bad_step_share (the share a constant "good" guess would get wrong)
Output: a two-label token-classification checkpoint + tokenizer + prm.json (the separator), registered as a "prm"
model version.
"""

from __future__ import annotations

import gc
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from trainer import progress
from trainer.data import has_split, read_rows, read_training_rows, require_format
from trainer.encoding import Fit, effective_max_length, special_frame
from trainer.models import (
    _quiet_transformers,
    _with_adapter,
    adapter_base,
    check_checkpoint,
    fit_embeddings,
    fit_threads_to_model,
    is_adapter,
    load_tokenizer,
    lora_config,
    quantization_kwargs,
    report_fit,
    report_phases,
    save_trained,
    thread_facts,
    trained_metrics,
    trainer_kwargs,
)
from trainer.params import PRM_OUTCOMES, PRMArgs
from trainer.spec import JobSpec
from trainer.timing import Phases

PRM_CONFIG = "prm.json"
"""The file in a PRM checkpoint that says it is one, and with which step separator it was trained."""
SNAPSHOT_FORMATS = ("steps",)
"""The snapshot formats a prm job trains on (the stepwise export)."""
IGNORE = -100
VALIDATION_MIN_ROWS = 100
"""A snapshot's train split holds out validation trajectories (PRMArgs.validation_share) only from this many on."""
VALIDATION_MIN_PROMPTS = 20
"""Validation trajectories are held out by prompt from this many distinct prompts on, else by trajectory."""
LABELS = {0: "bad", 1: "good"}


def is_prm(path: str | Path | None) -> bool:
    """True for a process reward model checkpoint (or an adapter of one): it holds prm.json."""
    return path is not None and str(path) != "" and (Path(path) / PRM_CONFIG).is_file()


def prm_config(path: str | Path) -> dict[str, Any]:
    return json.loads((Path(path) / PRM_CONFIG).read_text(encoding="utf-8"))


# ---- reading steps --------------------------------------------------------------------------------------------


def step_text(step: Any) -> str:
    """A step as text: a string as it is; a message (or a list of them: an action and its observations) as its
    content, tool calls as ``call: name({json arguments})`` and tool results as ``result: ...``, one a line."""
    if isinstance(step, str):
        return step
    messages = step if isinstance(step, list) else [step]
    parts = []
    for message in messages:
        if not isinstance(message, dict):
            parts.append(str(message))
            continue
        content = message.get("content") or ""
        if message.get("role") == "tool":
            parts.append(f"result: {content}")
            continue
        if message.get("reasoning"):
            parts.append(f"thought: {message['reasoning']}")
        if content:
            parts.append(str(content))
        for call in message.get("tool_calls") or []:
            function = call.get("function", call)
            arguments = function.get("arguments", {})
            if not isinstance(arguments, str):
                arguments = json.dumps(arguments, ensure_ascii=False, sort_keys=True)
            parts.append(f"call: {function.get('name', '')}({arguments})")
    return "\n".join(parts)


def split_steps(completion: Any, separator: str) -> list[str]:
    """A completion to score as steps: a message list gives one step per assistant message (tool results join the
    step before them); a string is cut at the separator (empty pieces dropped; no separator: one step)."""
    if isinstance(completion, list):
        steps: list[list[dict]] = []
        for message in completion:
            if isinstance(message, dict) and message.get("role") == "tool" and steps:
                steps[-1].append(message)
            else:
                steps.append([message])
        return [step_text(step) for step in steps]
    text = str(completion)
    pieces = [piece for piece in text.split(separator)] if separator else [text]
    return [piece for piece in pieces if piece.strip()] or [text]


def prompt_text(prompt: Any, tokenizer) -> str:
    """The history before the steps: a string as it is, a message list through the chat template (assistant turn
    opened)."""
    if isinstance(prompt, list):
        return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    return str(prompt)


# ---- encoding ---------------------------------------------------------------------------------------------------


def separator_ids(tokenizer, separator: str) -> list[int]:
    """The separator's token ids; the tokenizer's SEP (else EOS) when it encodes to nothing."""
    ids = list(tokenizer(separator, add_special_tokens=False)["input_ids"]) if separator else []
    if ids:
        return ids
    fallback = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    if fallback is None:
        raise ValueError(f"the step separator {separator!r} encodes to no token and the tokenizer has no SEP or EOS")
    return [fallback]


@dataclass
class EncodedSteps:
    input_ids: list[int]
    positions: list[int]
    """index in input_ids of each kept step's separator end (where its label sits)"""
    labels: list[int]
    """the kept steps' labels (1 good, 0 bad); empty when encoding for scoring"""
    truncated: bool


def encode_steps(prompt: Any, steps: list[Any], tokenizer, sep: list[int], max_length: int | None,
                 labels: list[bool] | None = None) -> EncodedSteps | None:  # fmt: skip
    """prompt + each step followed by the separator, the prompt's start cut (then the last steps dropped) to fit
    max_length; None when not even the first step fits."""
    before, after = special_frame(tokenizer)
    body = list(tokenizer(prompt_text(prompt, tokenizer), add_special_tokens=False)["input_ids"])
    chunks = [list(tokenizer(step_text(step), add_special_tokens=False)["input_ids"]) + sep for step in steps]
    room = (max_length if max_length else 10**9) - len(before) - len(after)
    truncated = False
    while chunks and sum(map(len, chunks)) > room:
        chunks.pop()
        truncated = True
    if not chunks:
        return None
    keep = room - sum(map(len, chunks))
    if len(body) > keep:
        body, truncated = body[len(body) - keep :] if keep > 0 else [], True
    input_ids = list(before) + body
    positions = []
    for chunk in chunks:
        input_ids += chunk
        positions.append(len(input_ids) - 1)
    input_ids += list(after)
    kept = [int(bool(label)) for label in (labels or [])[: len(chunks)]]
    return EncodedSteps(input_ids, positions, kept, truncated)


def training_rows(rows: list[dict[str, Any]], tokenizer, sep: list[int], max_length: int | None,
                  last_step_only: bool = False) -> tuple[list[dict[str, Any]], Fit]:  # fmt: skip
    """{input_ids, labels} for the token classifier (labels -100 but at each step's separator end)."""
    encoded, fit = [], Fit(total=len(rows))
    for number, row in enumerate(rows, 1):
        steps, labels = row.get("completions"), row.get("labels")
        if not isinstance(steps, list) or not isinstance(labels, list) or len(steps) != len(labels) or not steps:
            raise ValueError(f"stepwise row {number}: needs completions (a list of steps) and labels of the same "
                             f"length, got {len(steps or [])} steps and {len(labels or [])} labels")  # fmt: skip
        item = encode_steps(row["prompt"], steps, tokenizer, sep, max_length, labels)
        if item is None:
            fit.dropped += 1
            continue
        fit.truncated += item.truncated
        token_labels = [IGNORE] * len(item.input_ids)
        positions = list(zip(item.positions, item.labels, strict=True))
        for position, label in positions[-1:] if last_step_only else positions:
            token_labels[position] = label
        encoded.append({"input_ids": item.input_ids, "labels": token_labels})
    return encoded, fit


# ---- the model --------------------------------------------------------------------------------------------------


def load_prm(path: str | Path, *, tokenizer=None, dtype: torch.dtype | str = torch.float32, role: str = "base model",
             quantize: bool = False):  # fmt: skip
    """A two-label token classifier from a local checkpoint (a decoder, an encoder, a PRM, or a LoRA adapter on one);
    a checkpoint without a token-classification head gets a fresh one (the start of PRM training)."""
    from transformers import AutoModelForTokenClassification

    checkpoint = check_checkpoint(path, role)
    source = adapter_base(checkpoint) if is_adapter(checkpoint) else checkpoint
    with _quiet_transformers():
        model = AutoModelForTokenClassification.from_pretrained(
            source, num_labels=2, id2label=LABELS, label2id={v: k for k, v in LABELS.items()}, dtype=dtype,
            **quantization_kwargs(quantize, role),
        )  # fmt: skip
    tokenizer = tokenizer or load_tokenizer(checkpoint, role)
    fit_embeddings(model, tokenizer)
    fit_threads_to_model(model)
    if is_adapter(checkpoint):
        model = _with_adapter(model, checkpoint, role)
    return model


@torch.no_grad()
def step_scores(model, tokenizer, encoded: list[EncodedSteps], *, batch_size: int = 16) -> list[list[float]]:
    """P(good) of every kept step of every encoded trajectory, in the given order."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i].input_ids))
    scores: dict[int, list[float]] = {}
    for start in range(0, len(order), batch_size):
        indexes = order[start : start + batch_size]
        width = max(len(encoded[i].input_ids) for i in indexes)
        input_ids = torch.full((len(indexes), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(indexes), width), dtype=torch.long)
        for row, i in enumerate(indexes):
            ids = encoded[i].input_ids
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, : len(ids)] = 1
        logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits
        good = logits.float().softmax(-1)[..., 1].cpu()
        for row, i in enumerate(indexes):
            scores[i] = [float(good[row, p]) for p in encoded[i].positions]
    if was_training:
        model.train()
    return [scores[i] for i in range(len(encoded))]


def outcome(scores: list[float], how: str = "min") -> float:
    """One trajectory's outcome from its step scores: the minimum or the last."""
    if how not in PRM_OUTCOMES:
        raise ValueError(f"prm_outcome must be one of {', '.join(PRM_OUTCOMES)}, got {how!r}")
    return min(scores) if how == "min" else scores[-1]


def first_error(flags: list[bool]) -> int | None:
    """Index of the first False (bad step), None when every step is good."""
    return next((i for i, good in enumerate(flags) if not good), None)


def auroc(positives: list[float], negatives: list[float]) -> float | None:
    """P(a positive scores above a negative), ties half (Mann-Whitney); None without both."""
    if not positives or not negatives:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


def encode_rows(rows: list[dict[str, Any]], tokenizer, separator: str, max_length: int | None) -> list[EncodedSteps]:
    """Labelled stepwise rows encoded for scoring (those whose first step does not fit are left out)."""
    sep = separator_ids(tokenizer, separator)
    items = [encode_steps(r["prompt"], r["completions"], tokenizer, sep, max_length, r["labels"]) for r in rows]
    return [item for item in items if item is not None]


def evaluate(model, tokenizer, rows: list[dict[str, Any]], *, separator: str, max_length: int | None,
             batch_size: int = 16, items: list[EncodedSteps] | None = None) -> dict[str, Any]:  # fmt: skip
    """Held-out step accuracy, first-error accuracy, outcome AUROC and step loss (the mean cross-entropy of the
    step labels) of a PRM on stepwise rows (or on rows already encoded: items)."""
    import math

    if items is None:
        items = encode_rows(rows, tokenizer, separator, max_length)
    if not items:
        return {}
    scores = step_scores(model, tokenizer, items, batch_size=batch_size)
    steps = correct = first_right = 0
    good_outcomes, bad_outcomes = [], []
    bad = 0
    loss = 0.0
    for item, row_scores in zip(items, scores, strict=True):
        truth = [bool(label) for label in item.labels]
        predicted = [score > 0.5 for score in row_scores]
        steps += len(truth)
        bad += truth.count(False)
        loss -= sum(math.log(max(s if t else 1 - s, 1e-12)) for s, t in zip(row_scores, truth, strict=True))
        correct += sum(p == t for p, t in zip(predicted, truth, strict=True))
        first_right += first_error(predicted) == first_error(truth)
        (good_outcomes if all(truth) else bad_outcomes).append(min(row_scores))
    metrics = {
        "step_accuracy": correct / steps,
        "first_error_accuracy": first_right / len(items),
        "bad_step_share": bad / steps,
        "loss": loss / steps,
        "steps": steps,
        "trajectories": len(items),
    }
    area = auroc(good_outcomes, bad_outcomes)
    if area is not None:
        metrics["outcome_auroc"] = area
    return metrics


# ---- scoring completions with a PRM (score jobs, GRPO/RLOO rewards) ---------------------------------------------


class ProcessRewardScorer:
    """A PRM checkpoint as a scorer of (prompt, completion) pairs: the completion is cut into steps (trainer.prm.
    split_steps, the checkpoint's separator) and scored step by step; the outcome is the min or last step score."""

    def __init__(self, path: str | Path, *, device=None, outcome: str = "min", batch_size: int = 16,
                 max_length: int | None = None):  # fmt: skip
        if outcome not in PRM_OUTCOMES:
            raise ValueError(f"prm_outcome must be one of {', '.join(PRM_OUTCOMES)}, got {outcome!r}")
        self.tokenizer = load_tokenizer(path, role="process reward model")
        self.model = load_prm(path, tokenizer=self.tokenizer, role="process reward model")
        self.model.eval().requires_grad_(False)
        if device is not None:
            self.model.to(device)
        self.separator = prm_config(path).get("step_separator", "\n\n")
        self.sep = separator_ids(self.tokenizer, self.separator)
        self.outcome = outcome
        self.batch_size = batch_size
        self.max_length = effective_max_length(max_length, self.model.config, self.tokenizer)

    def step_scores(self, prompts: list[Any], completions: list[Any]) -> list[list[float]]:
        items = []
        for prompt, completion in zip(prompts, completions, strict=True):
            item = encode_steps(prompt, split_steps(completion, self.separator), self.tokenizer, self.sep,
                                self.max_length)  # fmt: skip
            if item is None:  # not even the first step fits: score its last tokens as one step
                ids = list(self.tokenizer(step_text(completion) if not isinstance(completion, str) else completion,
                                          add_special_tokens=False)["input_ids"])  # fmt: skip
                ids = (ids + self.sep)[-(self.max_length or len(ids) + len(self.sep)) :]
                item = EncodedSteps(ids, [len(ids) - 1], [], True)
            items.append(item)
        return step_scores(self.model, self.tokenizer, items, batch_size=self.batch_size)

    def __call__(self, prompts: list[Any], completions: list[Any]) -> list[float]:
        return [outcome(scores, self.outcome) for scores in self.step_scores(prompts, completions)]


# ---- the job ----------------------------------------------------------------------------------------------------


def validation_split(rows: list[dict[str, Any]], share: float, seed: int,
                     min_rows: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:  # fmt: skip
    """(training rows, validation rows): a random `share` of the rows held out, by prompt (all rows of one prompt on
    the same side) when there are at least VALIDATION_MIN_PROMPTS prompts, else by row (few prompts, e.g. one task
    asked of many trajectories: holding out whole prompts would take a large part of the task out of training); no
    validation rows when share is 0 or there are fewer than min_rows."""
    import random

    if share <= 0 or len(rows) < min_rows:
        return rows, []
    keys = [json.dumps(row["prompt"], sort_keys=True) for row in rows]
    distinct = sorted(set(keys))
    if len(distinct) < VALIDATION_MIN_PROMPTS:
        keys = [str(index) for index in range(len(rows))]
        distinct = sorted(set(keys))
    random.Random(seed).shuffle(distinct)
    held = set(distinct[: max(1, min(len(distinct) - 1, round(share * len(distinct))))])
    return ([row for row, key in zip(rows, keys, strict=True) if key not in held],
            [row for row, key in zip(rows, keys, strict=True) if key in held])  # fmt: skip


class BestEpoch:
    """Model selection on the validation rows: after every epoch the model is scored on them (trainer.prm.evaluate)
    and a CPU copy of its trainable weights is kept when `metric` is the best so far (loss: lowest; the others:
    highest; a tie keeps the later epoch); `restore` puts the best weights back. `history` holds every epoch's
    figures; `extra` (name -> encoded rows) are scored too, for the record only (never chosen on)."""

    def __init__(self, model, tokenizer, items: list[EncodedSteps], metric: str, batch_size: int,
                 extra: dict[str, list[EncodedSteps]] | None = None):  # fmt: skip
        self.model, self.tokenizer, self.items, self.metric = model, tokenizer, items, metric
        self.batch_size, self.extra = batch_size, extra or {}
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self.state: dict[str, torch.Tensor] | None = None

    def better(self, value: float) -> bool:
        if self.best is None:
            return True
        return value <= self.best[self.metric] if self.metric == "loss" else value >= self.best[self.metric]

    def on_epoch_end(self, args, state, control, **kwargs):
        figures = evaluate(self.model, self.tokenizer, [], separator="", max_length=None, items=self.items,
                           batch_size=self.batch_size)  # fmt: skip
        record = {"epoch": round(state.epoch or 0.0, 3), "step": state.global_step, **figures}
        for name, items in self.extra.items():
            record |= {f"{name}/{k}": v for k, v in evaluate(self.model, self.tokenizer, [], separator="",
                       max_length=None, items=items, batch_size=self.batch_size).items()}  # fmt: skip
        self.history.append(record)
        value = figures.get(self.metric)  # outcome_auroc is absent while the validation rows hold one class only
        if value is not None and self.better(value):
            self.best = record
            self.state = {name: p.detach().to("cpu", copy=True) for name, p in self.model.named_parameters()
                          if p.requires_grad}  # fmt: skip
        progress.metrics(state.global_step, {f"validation/{k}": v for k, v in figures.items()})
        return control

    def restore(self) -> None:
        if self.state is not None:
            _load_trainable(self.model, self.state)


def _load_trainable(model, values: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in values.items():
            params[name].copy_(value.to(params[name].device))


def _trainer_class():
    from transformers import Trainer

    class PRMTrainer(Trainer):
        """transformers' Trainer on the token classifier, its cross-entropy weighing bad steps by bad_step_weight.

        Batches are random, not of similar length (trainer.encoding.LengthGroupedBatches, as the pair trainers use):
        a stepwise row ends at its first error, so length tells rows' labels apart, and length-grouped batches would
        each hold mostly one label; the model then swings from batch to batch instead of learning the steps."""

        def __init__(self, *args, bad_step_weight: float = 1.0, **kwargs):
            super().__init__(*args, **kwargs)
            self.bad_step_weight = bad_step_weight

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            labels = inputs.pop("labels")
            outputs = model(**inputs)
            logits = outputs.logits.float()
            weight = torch.tensor([self.bad_step_weight, 1.0], device=logits.device)
            loss = torch.nn.functional.cross_entropy(logits.view(-1, 2), labels.view(-1).to(logits.device),
                                                     weight=weight, ignore_index=IGNORE)  # fmt: skip
            return (loss, outputs) if return_outputs else loss

    return PRMTrainer


def make_trainer(model, tokenizer, rows: list[dict[str, Any]], args: PRMArgs, scratch_dir: Path, seed: int,
                 callbacks: list | None = None, phases: Phases | None = None,
                 validation_rows: list[dict[str, Any]] | None = None,
                 watch: dict[str, list[dict[str, Any]]] | None = None):  # fmt: skip
    """A transformers Trainer for the token classifier on stepwise rows; `fit` says what was truncated/dropped.
    With validation_rows, `trainer.best_epoch` (a BestEpoch callback) scores them after every epoch and keeps the
    best epoch's weights (args.validation_metric; restore() after training); `watch` rows are scored alongside, for
    the record. Without, `trainer.best_epoch` is None."""
    from dataclasses import fields

    from datasets import Dataset
    from transformers import DataCollatorForTokenClassification, TrainerCallback, TrainingArguments

    phases = phases or Phases()
    kwargs = trainer_kwargs(args, str(scratch_dir), seed)
    max_length = effective_max_length(args.max_length, model.config, tokenizer)
    known = {f.name for f in fields(TrainingArguments)}
    config = TrainingArguments(**{k: v for k, v in kwargs.items() if k in known})
    with phases("tokenize"):
        encoded, fit = training_rows(rows, tokenizer, separator_ids(tokenizer, args.step_separator), max_length,
                                     args.train_on_last_step_only)  # fmt: skip
    PRMTrainer = _trainer_class()  # noqa: N806
    if not encoded:
        raise ValueError(f"every one of the {fit.total} training trajectories has a first step longer than "
                         f"max_length ({max_length} tokens); raise max_length")  # fmt: skip

    best_epoch = None
    if validation_rows:
        items = encode_rows(validation_rows, tokenizer, args.step_separator, max_length)
        extra = {name: encode_rows(r, tokenizer, args.step_separator, max_length) for name, r in (watch or {}).items()}
        if items:
            callback_class = type("BestEpochCallback", (BestEpoch, TrainerCallback), {})
            best_epoch = callback_class(model, tokenizer, items, args.validation_metric,
                                        args.per_device_eval_batch_size, extra)  # fmt: skip
    with phases("prepare"):
        trainer = PRMTrainer(bad_step_weight=args.bad_step_weight,
            model=model, args=config, train_dataset=Dataset.from_list(encoded), processing_class=tokenizer,
            data_collator=DataCollatorForTokenClassification(tokenizer, label_pad_token_id=IGNORE),
            callbacks=(callbacks or []) + ([best_epoch] if best_epoch else []),
        )  # fmt: skip
    trainer.fit = fit
    trainer.best_epoch = best_epoch
    trainer.max_length = max_length
    return trainer


def _load_model(spec: JobSpec, args: PRMArgs, tokenizer):
    """The base as a fresh token classifier (with a LoRA adapter when args.use_lora)."""
    model = load_prm(spec.base_model, tokenizer=tokenizer, quantize=args.load_in_4bit)
    peft_config = lora_config(args, "TOKEN_CLS")
    if peft_config is not None:
        from peft import get_peft_model

        model = get_peft_model(model, peft_config)
    return model


def _better_restart(value: float, kept: float | None, metric: str) -> bool:
    """A restart replaces the kept one only when strictly better on validation (loss: lower; else higher)."""
    if kept is None:
        return True
    return value < kept if metric == "loss" else value > kept


def main(spec: JobSpec, out_dir: Path) -> dict[str, Any]:
    args: PRMArgs = spec.args
    phases = Phases()
    with phases("read_snapshot"):
        require_format(spec.dataset_path, "prm", SNAPSHOT_FORMATS)
        train_rows = read_training_rows(spec.dataset_path)
    with phases("load_model"):
        tokenizer = load_tokenizer(spec.base_model)
        model = _load_model(spec, args, tokenizer)
    system = thread_facts()
    progress.log(f"prm: {len(train_rows)} training trajectories, {system['system/threads']} threads per process")

    train_rows, validation_rows = validation_split(train_rows, args.validation_share, spec.seed,
                                                   VALIDATION_MIN_ROWS)  # fmt: skip
    if validation_rows:
        progress.log(f"prm: {len(validation_rows)} trajectories held out to pick the best epoch "
                     f"({args.validation_metric})")  # fmt: skip

    scratch = out_dir / "_scratch"
    restarts = args.restarts if validation_rows else 1
    kept: dict[str, Any] | None = None  # the restart best on validation so far
    for restart in range(restarts):
        if restart:
            with phases("load_model"):
                model = _load_model(spec, args, tokenizer)
        share = 0.85 / restarts
        callback = progress.JsonLinesCallback(progress_start=0.05 + restart * share,
                                              progress_end=0.05 + (restart + 1) * share)  # fmt: skip
        trainer = make_trainer(model, tokenizer, train_rows, args, scratch, spec.seed + restart, [callback], phases,
                               validation_rows=validation_rows)  # fmt: skip
        if not restart:
            report_fit(trainer.fit, "trajectories")
        with phases("train"):
            result = trainer.train()
        best = trainer.best_epoch.best if trainer.best_epoch is not None else None
        value = best.get(args.validation_metric) if best is not None else None
        if restarts > 1:
            progress.log(f"prm: restart {restart + 1} of {restarts} (seed {spec.seed + restart}): "
                         f"{args.validation_metric} {value if value is None else round(value, 4)} on validation at "
                         f"epoch {best['epoch'] if best else None}")  # fmt: skip
        if kept is None or (value is not None and _better_restart(value, kept["value"], args.validation_metric)):
            kept = {"trainer": trainer, "result": result, "callback": callback, "value": value,
                    "restart": restart}  # fmt: skip
        del trainer, model
        gc.collect()  # a restart that was not kept: its model and optimizer state go before the next one loads
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    trainer, result, callback = kept["trainer"], kept["result"], kept["callback"]
    metrics = trained_metrics(callback, result, trainer.fit, "trajectories", ())
    if trainer.best_epoch is not None and trainer.best_epoch.best is not None:
        trainer.best_epoch.restore()
        best = trainer.best_epoch.best
        metrics |= {f"validation/{k}": v for k, v in best.items() if k not in ("epoch", "step")}
        metrics |= {"validation/best_epoch": best["epoch"], "validation/epochs": len(trainer.best_epoch.history)}
    if restarts > 1:
        metrics |= {"validation/restart": kept["restart"], "validation/restarts": restarts}

    if args.eval_split and has_split(spec.dataset_path, args.eval_split) and progress.is_main_process():
        progress.progress(0.92, f"evaluating on the {args.eval_split} split")
        with phases("evaluate"):
            held_out = evaluate(trainer.model, tokenizer, read_rows(spec.dataset_path, args.eval_split),
                                separator=args.step_separator, max_length=trainer.max_length,
                                batch_size=args.per_device_eval_batch_size)  # fmt: skip
        values = {f"eval/{name}": value for name, value in held_out.items()}
        metrics.update(values)
        progress.metrics(result.global_step, values)

    progress.progress(0.95, "saving the process reward model")
    with phases("save"):
        save_trained(trainer, tokenizer, out_dir, scratch, merge=args.merge_adapter)
        if progress.is_main_process():
            config = {"step_separator": args.step_separator, "labels": LABELS,
                      "separator_ids": separator_ids(tokenizer, args.step_separator)}  # fmt: skip
            (out_dir / PRM_CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return metrics | report_phases(phases, result.global_step, system)
