"""GRPO and RLOO (job kinds "grpo" and "rloo") on TRL 1.16's GRPOTrainer / RLOOTrainer, with weighted rewards.

Both sample num_generations completions per prompt and push up the ones that score above their group: GRPO
normalises each reward by its group's mean (and std), RLOO uses the mean of the other completions as baseline.
The reward is the weighted sum of params["rewards"] (see trainer/rewards): a reward model from the registry
(spec.reward_model) and verifiable rules (exact answer, number within tolerance, regex, JSON schema, length
penalty) that may read extra fields of the prompt rows (e.g. "answer"). TRL logs each one under
rewards/<label>/mean and applies the weights.

Prompts come from spec.prompts_path (every field of a row kept) or the snapshot's unique prompts; eval_prompts
of them are held out. Before and after training, fresh samples of the held-out prompts are scored with the same
weighted reward, and the trained policy's KL to the base policy is measured on them.

    main_grpo(spec, out_dir) -> final metrics      main_rloo(spec, out_dir) -> final metrics

Both save the policy (save_pretrained, with its tokenizer) into out_dir.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from trainer import progress
from trainer.models import (
    check_checkpoint,
    default_device,
    load_policy,
    load_tokenizer,
    lora_config,
    save_model,
    trainer_kwargs,
)
from trainer.params import GRPOArgs, RLOOArgs
from trainer.rewards import MultiObjectiveReward, WeightedReward, build_rewards
from trainer.rollout import (
    encode_prompt,
    forward_logits,
    generate_responses,
    left_pad,
    response_logprobs,
    sampling_config,
    score_change,
    split_prompts,
)
from trainer.spec import JobSpec

EVAL_SAMPLES_PER_PROMPT = 4  # fresh samples per held-out prompt: the before/after means are less noisy


def prompt_dataset(rows: list[dict[str, Any]], tokenizer, max_prompt_length: int):
    """A datasets.Dataset of the prompt rows (extra fields become columns the rewards read); prompts longer than
    max_prompt_length tokens are dropped, since TRL would feed them whole and overrun max_length."""
    from datasets import Dataset

    kept = [r for r in rows if len(encode_prompt(r["prompt"], tokenizer, 10**9)) <= max_prompt_length]
    if len(kept) < len(rows):
        progress.log(f"dropped {len(rows) - len(kept)} prompts longer than {max_prompt_length} tokens")
    if not kept:
        raise ValueError(
            f"every prompt is longer than {max_prompt_length} tokens (max_length - max_completion_length)"
        )
    columns = sorted({key for row in kept for key in row})
    try:
        return Dataset.from_list([{key: row.get(key) for key in columns} for row in kept])
    except Exception as error:  # pyarrow's message alone does not say which field is inconsistent
        raise ValueError(f"prompt rows have a field with mixed value types ({error})") from error


@torch.no_grad()
def sample_and_score(
    policy,
    reference,
    tokenizer,
    rows: list[dict[str, Any]],
    reward: MultiObjectiveReward,
    args: GRPOArgs | RLOOArgs,
    device: torch.device,
) -> dict[str, float]:
    """Fresh samples of `policy` for `rows`: mean weighted reward, mean of each reward, KL to `reference`
    (summed over the completion's tokens), and the share of completions that ended with EOS."""
    policy.eval()
    config = sampling_config(
        tokenizer, max_new_tokens=args.max_completion_length, temperature=args.temperature
    )
    batch = max(1, args.per_device_eval_batch_size)
    repeated = [row for row in rows for _ in range(EVAL_SAMPLES_PER_PROMPT)]
    totals: list[float] = []
    components: dict[str, list[float]] = {}
    kls: list[float] = []
    ended: list[float] = []
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    for start in range(0, len(repeated), batch):
        chunk = repeated[start : start + batch]
        query_lists = [encode_prompt(r["prompt"], tokenizer, 10**9) for r in chunk]
        queries, query_mask = left_pad(query_lists, pad_id, device)
        responses, response_mask = generate_responses(
            policy, queries, query_mask, config, tokenizer.eos_token_id
        )
        ids, mask = torch.cat([queries, responses], 1), torch.cat([query_mask, response_mask], 1)
        context = queries.shape[1]
        logprobs = response_logprobs(
            forward_logits(policy, ids, mask)[:, context - 1 : -1], responses, args.temperature
        )
        ref_logprobs = response_logprobs(
            forward_logits(reference, ids, mask)[:, context - 1 : -1], responses, args.temperature
        )
        kls += ((logprobs - ref_logprobs) * response_mask).sum(1).tolist()
        ended += (responses == tokenizer.eos_token_id).any(1).float().tolist()
        completion_ids = [resp[m.bool()].tolist() for resp, m in zip(responses, response_mask, strict=True)]
        texts = tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
        prompts = [r["prompt"] for r in chunk]
        # the same shapes TRL hands reward functions: message lists for conversational prompts
        completions = [
            [{"role": "assistant", "content": text}] if isinstance(p, list) else text
            for p, text in zip(prompts, texts, strict=True)
        ]
        columns = {key: [r.get(key) for r in chunk] for key in {k for r in chunk for k in r} - {"prompt"}}
        scores = reward(prompts=prompts, completions=completions, completion_ids=completion_ids, **columns)
        totals += [s for s in scores if s is not None]
        for label, values in reward.last_components.items():
            components.setdefault(label, []).extend(v for v in values if v is not None)
    result = {
        "score": sum(totals) / max(1, len(totals)),
        "kl": sum(kls) / max(1, len(kls)),
        "eos_fraction": sum(ended) / max(1, len(ended)),
    }
    for label, values in components.items():
        result[f"rewards/{label}"] = sum(values) / max(1, len(values))
    return result


def trl_config(
    kind: str, args: GRPOArgs | RLOOArgs, reward_weights: list[float], scratch_dir: str, seed: int
):
    """The TRL config for our Args: the same names where TRL has them; no checkpoints, no external loggers."""
    from trl import GRPOConfig, RLOOConfig

    common = trainer_kwargs(args, scratch_dir, seed)
    common.pop("max_length")  # not a GRPO/RLOO config field: prompt_dataset enforces it
    common.update(
        disable_dropout=True,
        num_generations=args.num_generations,
        max_completion_length=args.max_completion_length,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        beta=args.beta,
        epsilon=args.epsilon,
        num_iterations=args.num_iterations,
        mask_truncated_completions=args.mask_truncated_completions,
        reward_weights=reward_weights,
    )
    if sampling_backend(args) == "vllm":  # TRL samples with a vLLM engine colocated with training
        common.update(use_vllm=True, vllm_mode="colocate", vllm_gpu_memory_utilization=0.3)
    if isinstance(args, GRPOArgs):  # the Args type is the kind: no kind names compared
        return GRPOConfig(
            **common,
            loss_type=args.loss_type,
            scale_rewards=args.scale_rewards,
            multi_objective_aggregation=args.multi_objective_aggregation,
        )
    return RLOOConfig(**common, normalize_advantages=args.normalize_advantages)


def sampling_backend(args: GRPOArgs | RLOOArgs) -> str:
    """"vllm" or "transformers" for the use_vllm param (auto: vLLM when installed and a GPU is present)."""
    from trainer.generate import vllm_usable

    if args.use_vllm not in ("auto", "on", "off"):
        raise ValueError(f"param 'use_vllm' must be auto, on or off, got {args.use_vllm!r}")
    if args.use_vllm == "on" and not vllm_usable():
        raise ValueError("use_vllm on needs the vllm package and a CUDA GPU (pip install 'rankforge[vllm]')")
    return "vllm" if args.use_vllm == "on" or (args.use_vllm == "auto" and vllm_usable()) else "transformers"


def train(kind: str, spec: JobSpec, out_dir: Path) -> dict[str, Any]:
    """Run GRPO or RLOO for a job spec; saves the policy into out_dir and returns final metrics."""
    from trl import GRPOTrainer, RLOOTrainer

    args: GRPOArgs | RLOOArgs = spec.args
    progress.install_sigterm_handler()
    seed = spec.seed
    if args.num_generations < 2:
        raise ValueError(f"{kind} needs num_generations >= 2 to compare completions of a prompt")
    per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps
    if per_step % args.num_generations:
        raise ValueError(
            f"per_device_train_batch_size x gradient_accumulation_steps ({per_step}) must be a multiple of "
            f"num_generations ({args.num_generations}): each step holds whole groups of completions"
        )
    if args.max_completion_length >= args.max_length:
        raise ValueError(
            f"max_completion_length ({args.max_completion_length}) must be below max_length ({args.max_length})"
        )
    device = default_device()

    # --- policy, tokenizer, rewards
    base_path = check_checkpoint(spec.base_model, "base model")
    progress.progress(0.01, "loading models")
    tokenizer = load_tokenizer(base_path)
    if tokenizer.eos_token_id is None:
        raise ValueError(f"the policy tokenizer at {base_path} has no EOS token; completions could never end")
    policy = load_policy(base_path, tokenizer=tokenizer, quantize=args.load_in_4bit)
    if not args.load_in_4bit:
        policy = policy.to(device)
    reference = load_policy(base_path, tokenizer=tokenizer).to(device).eval().requires_grad_(False)
    rewards: list[WeightedReward] = build_rewards(
        args.rewards,
        reward_model_path=spec.reward_model,
        device=device,
        policy_eos_token_id=tokenizer.eos_token_id,
    )
    combined = MultiObjectiveReward(rewards)

    # --- prompts: held-out rows for before/after, the rest for training
    train_rows, eval_rows, held_out = split_prompts(
        spec, eval_prompts=args.eval_prompts, eval_split=args.eval_split, seed=seed
    )
    dataset = prompt_dataset(train_rows, tokenizer, args.max_length - args.max_completion_length)
    progress.log(
        f"{kind}: {len(dataset)} train prompts, {len(eval_rows)} evaluation prompts "
        f"({'held out' if held_out else 'from training'}), rewards "
        + ", ".join(f"{r.label} x {r.weight:g}" for r in rewards)
    )

    progress.progress(0.03, "scoring samples of the base policy")
    before = sample_and_score(policy, reference, tokenizer, eval_rows, combined, args, device)
    progress.metrics(0, {"eval/score": before["score"]})

    # --- training with TRL: its own scratch dir (logs only, no checkpoints), removed afterwards
    scratch = tempfile.mkdtemp(prefix=f"rankforge-{kind}-")
    try:
        config = trl_config(kind, args, [r.weight for r in rewards], scratch, seed)
        callback = progress.JsonLinesCallback(progress_start=0.08, progress_end=0.9)
        trainer_class = GRPOTrainer if isinstance(args, GRPOArgs) else RLOOTrainer
        trainer = trainer_class(
            model=policy,
            reward_funcs=[r.func for r in rewards],
            args=config,
            train_dataset=dataset,
            processing_class=tokenizer,
            callbacks=[callback],
            peft_config=lora_config(args, "CAUSAL_LM"),
        )
        started = time.monotonic()
        trainer.train()
        train_seconds = time.monotonic() - started
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    policy = trainer.model

    # --- evaluation on held-out prompts, then the policy is saved
    progress.progress(0.9, "scoring samples of the trained policy")
    after = sample_and_score(policy, reference, tokenizer, eval_rows, combined, args, device)
    final: dict[str, Any] = {
        **score_change(before, after),
        "eval/prompts": len(eval_rows),
        "eval/held_out": held_out,
    }
    for key, value in before.items():
        if key.startswith("rewards/"):
            final[f"eval/{key}_before"] = value
            final[f"eval/{key}_after"] = after[key]
    for entry in callback.history:  # the last logged value of every training metric
        final.update({k: v for k, v in entry["metrics"].items() if not k.startswith("eval/")})
    final["train/steps"] = trainer.state.global_step
    final["train/generation_backend"] = sampling_backend(args)
    final["train/runtime_s"] = round(train_seconds, 2)
    progress.metrics(trainer.state.global_step, {k: v for k, v in final.items() if k.startswith("eval/")})
    progress.progress(0.95, "saving the policy")
    policy.eval()
    save_model(policy, out_dir, merge=args.merge_adapter)
    tokenizer.save_pretrained(out_dir)
    return final


def main_grpo(spec: JobSpec, out_dir: Path) -> dict[str, Any]:
    """Job kind "grpo": Group Relative Policy Optimization."""
    return train("grpo", spec, out_dir)


def main_rloo(spec: JobSpec, out_dir: Path) -> dict[str, Any]:
    """Job kind "rloo": REINFORCE Leave-One-Out."""
    return train("rloo", spec, out_dir)
