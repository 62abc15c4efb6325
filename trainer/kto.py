"""Kahneman-Tversky Optimization of a policy on unpaired feedback (TRL KTOTrainer).

Rows are {prompt, completion, label}: label true marks a desirable completion, false an undesirable one (the
app's kto export; a pairs snapshot is unpaired here: chosen -> true, rejected -> false). With the implicit
reward r = beta * (log pi(y|x) - log pi_ref(y|x)) and z_ref an estimate of KL(pi || pi_ref) from mismatched
(prompt, completion) pairs in the same batch, KTO minimises

    desirable_weight * (1 - sigmoid(r - z_ref))  for desirable rows
    undesirable_weight * (1 - sigmoid(z_ref - r))  for undesirable rows

The KL pairs are built ahead of time within runs of batch-size rows in the dataset's order, so the rows are
shuffled with the job's seed first: an export lists a comparison's rows next to each other, and unshuffled runs
would pair a prompt with its own other completion. Training batches then hold rows of similar length.

Metrics: loss/total, rewards/{chosen,rejected,margins}, train/kl; eval/* on the snapshot's test split.
Output: the trained policy ("policy" kind).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trl import KTOConfig, KTOTrainer

from trainer import progress
from trainer.data import has_split, read_rows, require_format, shuffled, unpair
from trainer.encoding import LengthGroupedBatches, effective_max_length, encode_rows
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
from trainer.params import KTOArgs
from trainer.spec import JobSpec
from trainer.timing import Phases

KTO_COLUMNS = ("prompt", "completion", "label")


class PreTokenizedKTOTrainer(LengthGroupedBatches, KTOTrainer):
    """KTOTrainer on rows already tokenized by trainer.encoding (prompt_ids, completion_ids, label): only the
    mismatched KL completions are added, as TRL does (rotated by one within each batch of the shuffled rows).
    Training batches hold rows of similar length (trainer.encoding.LengthGroupedBatches)."""

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        if "prompt_ids" not in dataset.column_names:
            return super()._prepare_dataset(dataset, processing_class, args, dataset_name)
        if not self.calculate_KL:
            return dataset

        def add_kl_completion_ids(examples):
            examples["KL_completion_ids"] = [examples["completion_ids"][-1]] + examples["completion_ids"][:-1]
            return examples

        with args.main_process_first(local=False, desc=f"KL completions of {dataset_name}"):
            return dataset.map(add_kl_completion_ids, batched=True, batch_size=args.per_device_train_batch_size)


def kto_rows(dataset_path: str | Path, split: str, fmt: str, seed: int) -> list[dict[str, Any]]:
    """Unpaired rows of a split (pairs snapshots unpaired), shuffled, with only the columns TRL needs."""
    rows = read_rows(dataset_path, split)
    if fmt == "pairs":
        rows = unpair(rows)
    return shuffled([{column: row[column] for column in KTO_COLUMNS} for row in rows], seed)


def main(spec: JobSpec, out_dir: Path) -> dict[str, Any]:
    args: KTOArgs = spec.args
    seed = spec.seed
    dataset_path = spec.dataset_path
    phases = Phases()
    with phases("read_snapshot"):
        fmt = require_format(dataset_path, "kto", ("kto", "pairs"))
        train_rows = kto_rows(dataset_path, "train", fmt, seed)
        eval_rows = []
        if args.eval_split and has_split(dataset_path, args.eval_split):
            eval_rows = kto_rows(dataset_path, args.eval_split, fmt, seed)
    if not train_rows:
        raise ValueError(f"dataset snapshot {dataset_path}: the train split is empty")
    if args.per_device_train_batch_size < 2:
        raise ValueError(
            "kto needs per_device_train_batch_size >= 2 (the KL estimate pairs rows within a batch)"
        )
    with phases("load_model"):
        tokenizer = load_tokenizer(spec.base_model)
        policy = load_policy(spec.base_model, tokenizer=tokenizer, quantize=args.load_in_4bit)
    system = thread_facts()
    desirable = sum(bool(row["label"]) for row in train_rows)
    progress.log(f"kto: {len(train_rows)} training rows ({desirable} desirable), {len(eval_rows)} held-out, "
                 f"{system['system/threads']} threads per process")  # fmt: skip

    scratch = out_dir / "_scratch"
    kwargs = trainer_kwargs(args, str(scratch), seed)
    kwargs["max_length"] = max_length = effective_max_length(args.max_length, policy.config, tokenizer)
    train_encoded, eval_encoded, fit = tokenize_splits(
        lambda rows: encode_rows(rows, tokenizer, max_length, ("completion",)), train_rows, eval_rows, max_length,
        "rows", phases,
    )
    config = KTOConfig(
        **kwargs,
        beta=args.beta,
        desirable_weight=args.desirable_weight,
        undesirable_weight=args.undesirable_weight,
        precompute_ref_log_probs=args.precompute_ref_log_probs,
    )
    trainer, callback, result, eval_dataset = train_pretokenized(
        PreTokenizedKTOTrainer, policy, tokenizer, config, train_encoded, eval_encoded, args, scratch, phases
    )

    metrics = trained_metrics(callback, result, fit, "rows", ("rewards/chosen", "rewards/rejected", "rewards/margins",
                              "train/kl"), {"train/desirable_rows": desirable})  # fmt: skip
    metrics |= held_out_metrics(trainer, eval_dataset, args.eval_split, "rows", (
        "eval/loss", "eval/rewards/chosen", "eval/rewards/rejected", "eval/rewards/margins", "eval/kl",
    ), phases)  # fmt: skip

    progress.progress(0.95, "saving the policy")
    with phases("save"):
        save_trained(trainer, tokenizer, out_dir, scratch, merge=args.merge_adapter)
    return metrics | report_phases(phases, result.global_step, system)
