"""Multi-objective reward model (HelpSteer2 / ArmoRM style) on a `ratings` snapshot.

One backbone, K + 1 linear heads on its pooled last token: one regression head per attribute (helpful, verbose,
...) and one Bradley-Terry preference head. Per training step, on a batch of rated completions and a batch of
preference pairs:

    loss = regression_coefficient * mean over observed scores of (head_k(x) - z_k)^2
           + mean over pairs of -log sigmoid(pref(x_chosen) - pref(x_rejected))

where z_k = (score - center_k) / half_range_k is the attribute score scaled to about [-1, 1] (center and half
range from the scores seen in training) and unscored attributes are masked out. Preference pairs come from the
ratings rows themselves: within a comparison, a completion of a better aggregate `rank` beats one of a worse.

The heads combine into the one scalar every consumer of a reward model reads (ppo, grpo/rloo's reward_model,
score, judges): r(x) = preference_weight * pref(x) + sum_k w_k * head_k(x), w_k the project's attribute weights.
All heads being linear on the same features, the combination is itself one linear head, so the output directory
is an ordinary one-label sequence classifier (`load_reward` reads it); the K + 1 heads are kept beside it in
heads/ with heads.json (attributes, centers, half ranges, weights), for per-attribute scores.

Metrics: per attribute, held-out RMSE (in the scale's units) and Pearson correlation of the head with the mean
rating (eval/<attribute>/rmse, eval/<attribute>/correlation), eval/preference_accuracy on held-out pairs, and
train/loss_* while training.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trainer import progress
from trainer.audit import reward_audit, write_audit
from trainer.data import has_split, read_rows, read_training_rows, require_format
from trainer.encoding import effective_max_length, encode_sequence
from trainer.models import (
    check_checkpoint,
    default_device,
    fit_embeddings,
    fit_threads_to_model,
    load_tokenizer,
)
from trainer.params import MultiRewardArgs
from trainer.spec import JobSpec

RATINGS_COLUMNS = frozenset({"prompt", "completion", "comparison_id", "prompt_id", "completion_id", "model",
                             "agreement", "n_votes", "weight", "is_gold", "rank", "edited"})  # fmt: skip
"""The ratings format's own columns; every other column is an attribute."""


def attribute_names(rows: list[dict[str, Any]]) -> list[str]:
    names = sorted({key for row in rows for key in row if key not in RATINGS_COLUMNS})
    if not names:
        raise ValueError("the snapshot has no attribute columns: export the project's ratings (format ratings)")
    return names


def scales(rows: list[dict[str, Any]], names: list[str]) -> tuple[list[float], list[float]]:
    """(center, half range) per attribute from the scores seen; half range at least 0.5."""
    centers, halves = [], []
    for name in names:
        values = [float(row[name]) for row in rows if row.get(name) is not None]
        if not values:
            raise ValueError(f"attribute {name!r} has no scores in the training split")
        low, high = min(values), max(values)
        centers.append((low + high) / 2)
        halves.append(max((high - low) / 2, 0.5))
    return centers, halves


def preference_pairs(rows: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """(better, worse) row indexes: same comparison, a better (lower) aggregate rank."""
    by_comparison: dict[Any, list[int]] = {}
    for index, row in enumerate(rows):
        if row.get("rank") is not None:
            by_comparison.setdefault(row.get("comparison_id"), []).append(index)
    pairs = []
    for indexes in by_comparison.values():
        for i in indexes:
            for j in indexes:
                if rows[i]["rank"] < rows[j]["rank"]:
                    pairs.append((i, j))
    return pairs


def load_multi_head(path: str | Path, tokenizer, n_outputs: int):
    """The checkpoint with a fresh n_outputs-label head (a one-label reward checkpoint's head is replaced)."""
    from transformers import AutoModelForSequenceClassification

    checkpoint = check_checkpoint(path, "base model")
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint, num_labels=n_outputs,
                                                               ignore_mismatched_sizes=True)  # fmt: skip
    model.config.problem_type = "regression"
    fit_embeddings(model, tokenizer)
    fit_threads_to_model(model)
    return model


def forward(model, sequences: list[list[int]], pad_id: int, device) -> torch.Tensor:
    """Head outputs for token-id sequences (right padded: the classifier reads the last non-pad token)."""
    width = max(len(ids) for ids in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, ids in enumerate(sequences):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention[row, : len(ids)] = 1
    return model(input_ids=input_ids.to(device), attention_mask=attention.to(device)).logits.float()


def predict(model, sequences: list[list[int]], pad_id: int, device, batch_size: int) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        out = [forward(model, sequences[i : i + batch_size], pad_id, device).cpu()
               for i in range(0, len(sequences), batch_size)]  # fmt: skip
    model.train()
    return torch.cat(out) if out else torch.zeros((0, 0))


def pearson(xs: list[float], ys: list[float]) -> float | None:
    if len(xs) < 2:
        return None
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    if sxx == 0 or syy == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / math.sqrt(sxx * syy)


def audit_pairs(rows, outputs, coefficients: list[float], split: str) -> dict[str, Any]:
    """The reward-model audit (trainer.audit) of the folded scalar every consumer reads, sum_k coefficient_k *
    head_k, on the preference pairs of `rows` (the prompt's category where rows carry one)."""
    scalar = [sum(c * float(outputs[i, k]) for k, c in enumerate(coefficients)) for i in range(len(rows))]
    pairs = preference_pairs(rows)
    pair_rows = [{"chosen": rows[i]["completion"], "rejected": rows[j]["completion"], "category": rows[i].get("category")}
                 for i, j in pairs]  # fmt: skip
    return reward_audit(pair_rows, [scalar[i] for i, _ in pairs], [scalar[j] for _, j in pairs], split=split)


def evaluate(model, tokenizer, rows, names, centers, halves, *, batch_size, max_length, device,
             coefficients: list[float] | None = None, out_dir: Path | None = None, split: str = "test",
             ) -> dict[str, Any]:  # fmt: skip
    """Held-out RMSE and correlation per attribute, and preference accuracy of the preference head; with
    `coefficients` and `out_dir`, the audit of the folded scalar written there (trainer.audit)."""
    sequences = [encode_sequence(r["prompt"], r["completion"], tokenizer, max_length) for r in rows]
    outputs = predict(model, sequences, tokenizer.pad_token_id, device, batch_size)
    if coefficients is not None and out_dir is not None:
        write_audit(audit_pairs(rows, outputs, coefficients, split), out_dir)
    metrics: dict[str, Any] = {"eval/rows": len(rows)}
    for k, name in enumerate(names):
        seen = [(centers[k] + halves[k] * float(outputs[i, k]), float(r[name]))
                for i, r in enumerate(rows) if r.get(name) is not None]  # fmt: skip
        if seen:
            metrics[f"eval/{name}/rmse"] = math.sqrt(sum((p - t) ** 2 for p, t in seen) / len(seen))
            metrics[f"eval/{name}/correlation"] = pearson([p for p, _ in seen], [t for _, t in seen])
    pairs = preference_pairs(rows)
    if pairs:
        k = len(names)
        metrics["eval/preference_accuracy"] = sum(float(outputs[i, k]) > float(outputs[j, k]) for i, j in pairs) / len(pairs)
        metrics["eval/pairs"] = len(pairs)
    return metrics


def combined_weights(names: list[str], args: MultiRewardArgs) -> list[float]:
    """The coefficient of each head (attributes in order, then the preference head) in the scalar reward."""
    unknown = sorted(set(args.attribute_weights) - set(names))
    if unknown:
        raise ValueError(f"attribute_weights names {unknown}, which the snapshot lacks; it has {names}")
    return [float(args.attribute_weights.get(name, 1.0)) for name in names] + [args.preference_weight]


def fold_heads(model, coefficients: list[float]) -> None:
    """Replace the K + 1-output head by the one linear head sum_i coefficients[i] * head_i (in place)."""
    n = len(coefficients)
    parent, attribute, head = None, None, None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and module.out_features == n:
            owner_name, _, attribute = name.rpartition(".")
            parent, head = (model.get_submodule(owner_name) if owner_name else model), module
    if head is None:
        raise ValueError(f"no linear head with {n} outputs found in {type(model).__name__}")
    c = torch.tensor(coefficients, dtype=head.weight.dtype, device=head.weight.device)
    folded = nn.Linear(head.in_features, 1, bias=head.bias is not None).to(head.weight.device, head.weight.dtype)
    with torch.no_grad():
        folded.weight.copy_((c[:, None] * head.weight).sum(0, keepdim=True))
        if head.bias is not None:
            folded.bias.copy_((c * head.bias).sum().reshape(1))
    setattr(parent, attribute, folded)
    model.config.num_labels = 1
    model.config.id2label, model.config.label2id = {0: "LABEL_0"}, {"LABEL_0": 0}
    model.config.problem_type = None
    model.num_labels = 1


def main(spec: JobSpec, out_dir: Path) -> dict[str, Any]:
    args: MultiRewardArgs = spec.args
    dataset_path = spec.dataset_path
    require_format(dataset_path, "reward_multi", ("ratings",))
    rows = read_training_rows(dataset_path)
    names = attribute_names(rows)
    centers, halves = scales(rows, names)
    coefficients = combined_weights(names, args)
    tokenizer = load_tokenizer(spec.base_model)
    model = load_multi_head(spec.base_model, tokenizer, len(names) + 1)
    device = default_device()
    model.to(device)
    model.train()
    max_length = effective_max_length(args.max_length, model.config, tokenizer) or args.max_length
    sequences = [encode_sequence(r["prompt"], r["completion"], tokenizer, max_length) for r in rows]
    targets = torch.tensor([[float("nan") if r.get(n) is None else (float(r[n]) - centers[k]) / halves[k]
                             for k, n in enumerate(names)] for r in rows])  # fmt: skip
    pairs = preference_pairs(rows)
    progress.log(f"reward_multi: {len(rows)} rated completions, {len(pairs)} preference pairs, attributes {names}")

    batch = args.per_device_train_batch_size
    steps = args.max_steps if args.max_steps > 0 else max(1, math.ceil(args.num_train_epochs * len(rows) / batch))
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1 - step / steps))
    rng = random.Random(spec.seed)
    torch.manual_seed(spec.seed)
    pad = tokenizer.pad_token_id
    K = len(names)
    order: list[int] = []
    last: dict[str, float] = {}
    for step in range(1, steps + 1):
        if progress.cancel_requested():
            raise KeyboardInterrupt
        if len(order) < batch:
            order += rng.sample(range(len(rows)), len(rows))
        chosen_rows, order = order[:batch], order[batch:]
        picked_pairs = rng.sample(pairs, min(batch, len(pairs))) if pairs else []
        ids = chosen_rows + [i for pair in picked_pairs for i in pair]
        out = forward(model, [sequences[i] for i in ids], pad, device)
        reg_out, target = out[: len(chosen_rows), :K], targets[chosen_rows].to(device)
        mask = ~torch.isnan(target)
        loss_reg = ((reg_out - torch.nan_to_num(target)) ** 2)[mask].mean() if mask.any() else out.sum() * 0
        if picked_pairs:
            pref = out[len(chosen_rows) :, K].view(-1, 2)
            loss_pref = -F.logsigmoid(pref[:, 0] - pref[:, 1]).mean()
        else:
            loss_pref = out.sum() * 0
        loss = args.regression_coefficient * loss_reg + loss_pref
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        optimizer.step()
        scheduler.step()
        last = {"loss/total": loss.item(), "train/loss_regression": loss_reg.item(),
                "train/loss_preference": loss_pref.item()}  # fmt: skip
        if step % args.logging_steps == 0 or step == steps:
            progress.metrics(step, last)
            progress.progress(0.05 + 0.85 * step / steps, f"step {step} of {steps}")

    metrics: dict[str, Any] = {**last, "train/steps": steps, "train/rows": len(rows), "train/pairs": len(pairs),
                               **{f"weight/{name}": coefficients[k] for k, name in enumerate(names)},
                               "weight/preference": coefficients[K]}  # fmt: skip
    if args.eval_split and has_split(dataset_path, args.eval_split):
        progress.progress(0.92, f"evaluating on the {args.eval_split} split")
        metrics.update(evaluate(model, tokenizer, read_rows(dataset_path, args.eval_split), names, centers, halves,
                                batch_size=args.per_device_eval_batch_size, max_length=max_length, device=device,
                                coefficients=coefficients, out_dir=out_dir, split=args.eval_split))  # fmt: skip
        progress.metrics(steps, {k: v for k, v in metrics.items() if k.startswith("eval/") and v is not None})
    else:  # no held-out split: the audit reads the training rows (and says so)
        sequences = [encode_sequence(r["prompt"], r["completion"], tokenizer, max_length) for r in rows]
        outputs = predict(model, sequences, tokenizer.pad_token_id, device, args.per_device_eval_batch_size)
        write_audit(audit_pairs(rows, outputs, coefficients, "train"), out_dir)

    progress.progress(0.95, "saving the reward model")
    model.to("cpu")
    heads_dir = out_dir / "heads"
    model.save_pretrained(str(heads_dir))
    (heads_dir / "heads.json").write_text(json.dumps({
        "attributes": names, "centers": centers, "half_ranges": halves, "outputs": [*names, "preference"],
        "attribute_weights": coefficients[:K], "preference_weight": coefficients[K],
        "note": "head k predicts (score - center) / half_range; the folded scalar is sum of weight * head",
    }, indent=2) + "\n")  # fmt: skip
    fold_heads(model, coefficients)
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    return metrics
