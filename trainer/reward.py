"""Bradley-Terry reward model on a pairs snapshot.

A sequence classifier with one output r(prompt, completion) learns to score the chosen completion above the
rejected one:

    loss = sum_i w_i * -log sigmoid(r(x_i, chosen_i) - r(x_i, rejected_i) - margin_coefficient * margin_i) / sum_i w_i

w_i is the pair's snapshot weight (vote agreement x rater reliability; 1 when absent or use_weights is off),
margin_i its rank distance (>= 1). TRL's RewardTrainer tokenizes and batches the pairs (and runs under
accelerate); this subclass adds the per-pair weights and the scaled margin to its loss.

Metrics: loss/total, rewards/{chosen,rejected,accuracies,margins} while training; eval/accuracy (share of
held-out pairs where chosen scores higher) and eval/margin on the snapshot's test split at the end.
Output: a one-label sequence-classification checkpoint + tokenizer ("reward" kind).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from trl import RewardConfig, RewardTrainer
from trl.trainer.reward_trainer import DataCollatorForPreference

from trainer import progress
from trainer.audit import reward_audit, write_audit
from trainer.data import has_split, read_rows, read_training_rows, require_format
from trainer.encoding import (
    Fit,
    LengthGroupedBatches,
    effective_max_length,
    encode_rows,
    encode_sequence,
    padded_length,
)
from trainer.models import (
    load_reward,
    load_tokenizer,
    lora_config,
    report_fit,
    report_phases,
    reward_scores,
    save_trained,
    thread_facts,
    trained_metrics,
    trainer_kwargs,
)
from trainer.params import RewardArgs
from trainer.spec import JobSpec
from trainer.timing import Phases


@dataclass
class WeightedPreferenceCollator(DataCollatorForPreference):
    """TRL's preference collator (chosen rows first, then rejected) plus a per-pair `weight` tensor."""

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = super().torch_call(examples)
        if "weight" in examples[0]:
            batch["weight"] = torch.tensor([float(example["weight"]) for example in examples])
        return batch


class WeightedRewardTrainer(LengthGroupedBatches, RewardTrainer):
    """RewardTrainer whose loss weighs each pair and subtracts its (already scaled) margin; batches hold pairs of
    similar length (trainer.encoding.LengthGroupedBatches)."""

    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            self._signature_columns = ["chosen_ids", "rejected_ids", "margin", "weight"]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        weight = inputs.pop("weight", None)
        margin = inputs.pop("margin", None)
        outputs = model(
            input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False
        )
        rewards_chosen, rewards_rejected = torch.chunk(outputs.logits.squeeze(-1), chunks=2)

        difference = rewards_chosen - rewards_rejected
        pair_losses = -F.logsigmoid(difference - margin if margin is not None else difference)
        if weight is None:
            loss = pair_losses.mean()
        else:
            loss = (weight * pair_losses).sum() / weight.sum().clamp_min(1e-8)
        if self.args.center_rewards_coefficient:
            loss = loss + self.args.center_rewards_coefficient * torch.mean(
                (rewards_chosen + rewards_rejected) ** 2
            )

        with torch.no_grad():
            gather = self.accelerator.gather_for_metrics
            self._metrics[mode]["rewards/chosen"].append(gather(rewards_chosen).mean().item())
            self._metrics[mode]["rewards/rejected"].append(gather(rewards_rejected).mean().item())
            self._metrics[mode]["rewards/accuracies"].append(gather((difference > 0).float()).mean().item())
            self._metrics[mode]["rewards/margins"].append(gather(difference).mean().item())
        return (loss, outputs) if return_outputs else loss


def _training_rows(
    rows: list[dict[str, Any]], args: RewardArgs, tokenizer, max_length: int | None
) -> tuple[list[dict[str, Any]], Fit]:
    """Token ids of prompt + chosen and prompt + rejected (trainer.encoding: the prompt's start is cut to fit
    max_length), plus margin and weight: TRL takes pre-tokenized rows as they are. Other metadata columns are
    left out (mixed types would trouble Arrow)."""
    prepared = []
    for row in rows:
        item = {"prompt": row["prompt"], "chosen": row["chosen"], "rejected": row["rejected"]}
        if args.margin_coefficient:
            item["margin"] = args.margin_coefficient * float(row.get("margin") or 1)
        if args.use_weights:
            weight = row.get("weight")
            item["weight"] = 1.0 if weight is None else float(weight)
        prepared.append(item)
    encoded, fit = encode_rows(prepared, tokenizer, max_length, ("chosen", "rejected"))
    for item in encoded:
        prompt_ids = item.pop("prompt_ids")
        item["chosen_ids"] = prompt_ids + item["chosen_ids"]
        item["rejected_ids"] = prompt_ids + item["rejected_ids"]
    return encoded, fit


def pair_scores(
    model, tokenizer, rows: list[dict[str, Any]], *, batch_size: int, max_length: int
) -> tuple[list[float], list[float]]:
    """The model's scores of each row's chosen and of its rejected completion."""
    chosen = [encode_sequence(r["prompt"], r["chosen"], tokenizer, max_length) for r in rows]
    rejected = [encode_sequence(r["prompt"], r["rejected"], tokenizer, max_length) for r in rows]
    scores = reward_scores(model, tokenizer, chosen + rejected, batch_size=batch_size, max_length=max_length)
    return scores[: len(rows)], scores[len(rows) :]


def pairwise_accuracy(
    model, tokenizer, rows: list[dict[str, Any]], *, batch_size: int, max_length: int,
    scores: tuple[list[float], list[float]] | None = None,
) -> dict:  # fmt: skip
    """Share of pairs whose chosen completion the model scores higher (a tie counts half, as in the audit and
    bench/parity.py), and the mean score gap (`scores`: pair_scores' answer when already computed)."""
    chosen, rejected = scores or pair_scores(model, tokenizer, rows, batch_size=batch_size, max_length=max_length)
    gaps = [c - r for c, r in zip(chosen, rejected, strict=True)]
    return {
        "accuracy": sum(1.0 if gap > 0 else 0.5 if gap == 0 else 0.0 for gap in gaps) / len(gaps),
        "margin": sum(gaps) / len(gaps),
        "pairs": len(gaps),
    }


def make_trainer(model, tokenizer, rows: list[dict[str, Any]], args: RewardArgs, scratch_dir: Path, seed: int,
                 callbacks: list | None = None, peft_config=None, phases: Phases | None = None,
                 ) -> WeightedRewardTrainer:  # fmt: skip
    """The configured trainer for pairs rows (weights and scaled margins taken from the rows per args).
    Its `fit` attribute says how many pairs were truncated (prompt start cut) and dropped; `phases` times the
    tokenization and the trainer's set-up."""
    from datasets import Dataset

    phases = phases or Phases()
    kwargs = trainer_kwargs(args, str(scratch_dir), seed)
    kwargs["max_length"] = effective_max_length(args.max_length, model.config, tokenizer)
    config = RewardConfig(**kwargs, center_rewards_coefficient=args.center_rewards_coefficient or None)
    with phases("tokenize"):
        encoded, fit = _training_rows(rows, args, tokenizer, kwargs["max_length"])
    if not encoded:
        raise ValueError(
            f"every one of the {fit.total} training pairs has a completion longer than max_length "
            f"({kwargs['max_length']} tokens) on its own; raise max_length"
        )
    with phases("prepare"):
        trainer = WeightedRewardTrainer(
            model=model,
            args=config,
            data_collator=WeightedPreferenceCollator(pad_token_id=tokenizer.pad_token_id),
            train_dataset=Dataset.from_list(encoded),
            processing_class=tokenizer,
            callbacks=callbacks,
            peft_config=peft_config,
        )
    if args.group_by_length:
        trainer.row_lengths = [padded_length(row) for row in encoded]
    trainer.fit = fit
    return trainer


def main(spec: JobSpec, out_dir: Path) -> dict[str, Any]:
    args: RewardArgs = spec.args
    dataset_path = spec.dataset_path
    phases = Phases()
    with phases("read_snapshot"):
        require_format(dataset_path, "reward", ("pairs",))
        train_rows = read_training_rows(dataset_path)
    with phases("load_model"):
        tokenizer = load_tokenizer(spec.base_model)
        model = load_reward(spec.base_model, tokenizer=tokenizer, role="base model", quantize=args.load_in_4bit)
    system = thread_facts()
    progress.log(f"reward: {len(train_rows)} training pairs, {system['system/threads']} threads per process")

    scratch = out_dir / "_scratch"
    callback = progress.JsonLinesCallback(progress_start=0.05, progress_end=0.9)
    trainer = make_trainer(model, tokenizer, train_rows, args, scratch, spec.seed, [callback],
                           lora_config(args, "SEQ_CLS"), phases)  # fmt: skip
    report_fit(trainer.fit, "pairs")
    with phases("train"):
        result = trainer.train()

    metrics = trained_metrics(callback, result, trainer.fit, "pairs", ("rewards/accuracies", "rewards/margins"))
    if progress.is_main_process():
        held_out_split = bool(args.eval_split and has_split(dataset_path, args.eval_split))
        split = args.eval_split if held_out_split else "train"
        rows = read_rows(dataset_path, split) if held_out_split else train_rows
        progress.progress(0.92, f"evaluating and auditing on the {split} split")
        with phases("evaluate"):
            scores = pair_scores(trainer.model, tokenizer, rows, batch_size=args.per_device_eval_batch_size,
                                 max_length=trainer.args.max_length)  # fmt: skip
            audit = reward_audit(rows, *scores, split=split)
        write_audit(audit, out_dir)
        if held_out_split:
            held_out = pairwise_accuracy(trainer.model, tokenizer, rows, batch_size=args.per_device_eval_batch_size,
                                         max_length=trainer.args.max_length, scores=scores)  # fmt: skip
            metrics.update({f"eval/{name}": value for name, value in held_out.items()})
            progress.metrics(
                result.global_step, {"eval/accuracy": held_out["accuracy"], "eval/margin": held_out["margin"]}
            )

    progress.progress(0.95, "saving the reward model")
    with phases("save"):
        save_trained(trainer, tokenizer, out_dir, scratch, merge=args.merge_adapter)
    return metrics | report_phases(phases, result.global_step, system)
