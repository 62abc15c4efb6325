"""Direct Preference Optimization of a policy on a pairs snapshot (TRL DPOTrainer).

The policy pi starts as the base model, which also serves as the frozen reference pi_ref. Each pair's implicit
reward margin is

    m = beta * [(log pi(chosen|x) - log pi_ref(chosen|x)) - (log pi(rejected|x) - log pi_ref(rejected|x))]

and the sigmoid loss is -log sigmoid(m). With precompute_ref_log_probs (default) the reference log-probs of the
train and test splits are computed once before training, so no second model is kept in memory.

Metrics while training: loss/total, rewards/{chosen,rejected,accuracies,margins}, logps/*; at the end on the
snapshot's test split: eval/rewards/accuracies (held-out implicit-reward accuracy: share of pairs with m > 0,
averaged over eval batches), eval/rewards/margins, eval/loss. Output: the trained policy ("policy" kind).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trl import DPOConfig, DPOTrainer

from trainer import progress
from trainer.data import has_split, read_rows, read_training_rows, require_format
from trainer.encoding import Fit, LengthGroupedBatches, effective_max_length, encode_rows, padded_length
from trainer.models import (
    held_out_metrics,
    load_policy,
    load_tokenizer,
    report_phases,
    save_trained,
    thread_facts,
    tokenize_splits,
    train_pretokenized,
    trained_metrics,
    trainer_kwargs,
)
from trainer.params import DPOArgs
from trainer.spec import JobSpec
from trainer.timing import Phases

PAIR_COLUMNS = ("prompt", "chosen", "rejected")


def pair_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Only prompt/chosen/rejected (standard strings or conversational message lists)."""
    return [{column: row[column] for column in PAIR_COLUMNS} for row in rows]


def encoded_pairs(rows: list[dict[str, Any]], tokenizer, max_length: int | None) -> tuple[list[dict], Fit]:
    """{prompt_ids, chosen_ids, rejected_ids} per pair by trainer.encoding: the prompt's start is cut so that
    prompt + the longer completion fits max_length (TRL would cut the completions' ends instead). Longest first:
    TRL computes the reference log-probs and evaluates in the dataset's order, so neighbours share a width."""
    encoded, fit = encode_rows(pair_rows(rows), tokenizer, max_length, ("chosen", "rejected"))
    return sorted(encoded, key=padded_length, reverse=True), fit


class PreTokenizedDPOTrainer(LengthGroupedBatches, DPOTrainer):
    """DPOTrainer on rows already tokenized by trainer.encoding (prompt_ids, chosen_ids, rejected_ids), training
    on batches of pairs of similar length (trainer.encoding.LengthGroupedBatches)."""

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        if "prompt_ids" in dataset.column_names:
            return dataset
        return super()._prepare_dataset(dataset, processing_class, args, dataset_name)


def main(spec: JobSpec, out_dir: Path) -> dict[str, Any]:
    args: DPOArgs = spec.args
    dataset_path = spec.dataset_path
    phases = Phases()
    with phases("read_snapshot"):
        require_format(dataset_path, "dpo", ("pairs",))
        train_rows = read_training_rows(dataset_path)
        eval_rows = []
        if args.eval_split and has_split(dataset_path, args.eval_split):
            eval_rows = read_rows(dataset_path, args.eval_split)
    with phases("load_model"):
        tokenizer = load_tokenizer(spec.base_model)
        policy = load_policy(spec.base_model, tokenizer=tokenizer, quantize=args.load_in_4bit)
    system = thread_facts()
    progress.log(f"dpo: {len(train_rows)} training pairs, {len(eval_rows)} held-out pairs, "
                 f"{system['system/threads']} threads per process")  # fmt: skip

    scratch = out_dir / "_scratch"
    kwargs = trainer_kwargs(args, str(scratch), spec.seed)
    kwargs["max_length"] = max_length = effective_max_length(args.max_length, policy.config, tokenizer)
    train_encoded, eval_encoded, fit = tokenize_splits(
        lambda rows: encoded_pairs(rows, tokenizer, max_length), train_rows, eval_rows, max_length, "pairs", phases
    )
    config = DPOConfig(
        **kwargs,
        beta=args.beta,
        loss_type=args.loss_type,
        label_smoothing=args.label_smoothing,
        precompute_ref_log_probs=args.precompute_ref_log_probs,
    )
    trainer, callback, result, eval_dataset = train_pretokenized(
        PreTokenizedDPOTrainer, policy, tokenizer, config, train_encoded, eval_encoded, args, scratch, phases
    )

    metrics = trained_metrics(
        callback, result, fit, "pairs", ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins")
    )
    metrics |= held_out_metrics(trainer, eval_dataset, args.eval_split, "pairs", (
        "eval/loss", "eval/rewards/accuracies", "eval/rewards/margins", "eval/rewards/chosen", "eval/rewards/rejected",
    ), phases)  # fmt: skip

    progress.progress(0.95, "saving the policy")
    with phases("save"):
        save_trained(trainer, tokenizer, out_dir, scratch, merge=args.merge_adapter)
    return metrics | report_phases(phases, result.global_step, system)
