"""PPO for RLHF (job kind "ppo"), InstructGPT style, written to be read top to bottom (cleanrl style).

TRL removed its PPO trainer, so this is our own, following "The N Implementation Details of RLHF with PPO"
(Huang et al., 2023) and TRL's former PPOTrainer:

* four models: the policy (trained), a frozen reference copy of it, the reward model (frozen, seq-cls from the
  registry) and a value model initialised from the reward model (trained). The reward model must share the
  policy's tokenizer: it and the value head read the policy's tokens directly.
* rollouts: sample responses with temperature (top-k/top-p off, so the sampling distribution is the one whose
  log-probs we compute); logits are divided by the temperature wherever log-probs are taken.
* sequences are tracked by masks, never by comparing with the pad id, so the real EOS is never mistaken for
  padding (the tiny tokenizers also keep <pad> separate from EOS).
* reward per token = -kl_coef * (log pi - log pi_ref); the reward model's score is added on the last token
  (EOS); a response that hit max_new_tokens without EOS has missing_eos_penalty subtracted from its score.
* adaptive KL controller (Ziegler et al., 2019) steers the KL per response towards target_kl.
* GAE (gamma 1, lambda 0.95) over response tokens, whitened advantages, clipped surrogate policy loss, clipped
  value loss, AdamW with eps 1e-5, dropout off in every model.

Prompts come from spec.prompts_path or the snapshot's unique prompts; eval_prompts of them are held out to
score fresh samples before and after training. `main(spec, out_dir)` saves the policy (save_pretrained) into
out_dir and returns final metrics: eval/score_before, eval/score_after, eval/kl_to_reference, ...
Metrics are grouped: objective/*, policy/*, loss/*, val/*, rollout/*, train/*, eval/*.
"""

from __future__ import annotations

import math
import os
import random
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import get_scheduler

from trainer import progress
from trainer.models import (
    check_checkpoint,
    default_device,
    load_policy,
    load_reward,
    load_tokenizer,
    lora_config,
    save_model,
)
from trainer.params import PPOArgs
from trainer.rollout import (
    encode_prompt,
    forward_logits,
    generate_responses,
    left_pad,
    position_ids_for,
    response_logprobs,
    sampling_config,
    score_change,
    split_prompts,
)
from trainer.spec import JobSpec

EVAL_SAMPLES_PER_PROMPT = 4  # fresh samples per evaluation prompt: the before/after means are less noisy

# ---------------------------------------------------------------------------------------------------------------
# tensor helpers
# ---------------------------------------------------------------------------------------------------------------


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    mask = mask.to(values.dtype)
    if dim is None:
        return (values * mask).sum() / mask.sum().clamp(min=1)
    return (values * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """Standardise the unmasked entries (mean 0 unless shift_mean is False, variance 1)."""
    mean = masked_mean(values, mask)
    variance = masked_mean((values - mean) ** 2, mask)
    whitened = (values - mean) * torch.rsqrt(variance + 1e-8)
    return whitened if shift_mean else whitened + mean


def disable_dropout(model: nn.Module) -> None:
    """Dropout off everywhere (modules and attention-probability dropout): rollout and update log-probs of the
    same tokens must agree, or the PPO ratio is noise."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        for name in ("attention_dropout", "dropout", "attn_dropout"):
            if isinstance(getattr(module, name, None), float):
                setattr(module, name, 0.0)


def token_values(seq_cls_model: nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The seq-cls head applied at every position, (batch, length): per-token values of the value model, and
    the reward model's score wherever a sequence ends."""
    backbone = getattr(seq_cls_model, seq_cls_model.base_model_prefix)
    hidden = backbone(
        input_ids=ids, attention_mask=mask, position_ids=position_ids_for(mask), use_cache=False
    )[0]
    return seq_cls_model.score(hidden).squeeze(-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    probs = F.softmax(logits.float(), dim=-1)
    return torch.logsumexp(logits.float(), dim=-1) - (probs * logits.float()).sum(-1)


class AdaptiveKLController:
    """kl_coef *= 1 + clip(KL / target - 1, -0.2, 0.2) * n / horizon (Ziegler et al., 2019)."""

    def __init__(self, init_kl_coef: float, target: float, horizon: int):
        self.value = init_kl_coef
        self.target = target
        self.horizon = horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        proportional_error = max(-0.2, min(0.2, current_kl / self.target - 1))
        self.value *= 1 + proportional_error * n_steps / self.horizon


class FixedKLController:
    def __init__(self, kl_coef: float):
        self.value = kl_coef

    def update(self, current_kl: float, n_steps: int) -> None:
        pass


# ---------------------------------------------------------------------------------------------------------------
# PPO
# ---------------------------------------------------------------------------------------------------------------


def main(spec: JobSpec, out_dir: Path) -> dict[str, Any]:
    args: PPOArgs = spec.args
    progress.install_sigterm_handler()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("ppo runs in a single process; use launcher 'python' (one GPU)")
    if args.max_new_tokens >= args.max_length:
        raise ValueError(
            f"max_new_tokens ({args.max_new_tokens}) must be below max_length ({args.max_length})"
        )
    seed = spec.seed
    torch.manual_seed(seed)
    device = default_device()
    use_bf16 = (
        args.bf16 if args.bf16 is not None else (device.type == "cuda" and torch.cuda.is_bf16_supported())
    )
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if use_bf16 else nullcontext
    start_time = time.time()

    # --- models: policy (trained), reference (frozen), reward (frozen), value (trained, from the reward model)
    base_path = check_checkpoint(spec.base_model, "base model")
    reward_path = check_checkpoint(spec.reward_model, "reward model")
    progress.progress(0.01, "loading models")
    tokenizer = load_tokenizer(base_path)
    reward_tokenizer = load_tokenizer(reward_path, role="reward model")
    if reward_tokenizer.get_vocab() != tokenizer.get_vocab():
        raise ValueError(
            f"ppo needs a reward model that shares the policy's tokenizer (the value model starts from it and "
            f"reads the policy's tokens): {reward_path} and {base_path} have different vocabularies"
        )
    if tokenizer.eos_token_id is None:
        raise ValueError(f"the policy tokenizer at {base_path} has no EOS token; responses could never end")
    policy = load_policy(base_path, tokenizer=tokenizer).to(device)
    ref_policy = load_policy(base_path, tokenizer=tokenizer).to(device).eval().requires_grad_(False)
    reward_model = load_reward(reward_path, tokenizer=tokenizer).to(device).eval().requires_grad_(False)
    value_model = load_reward(reward_path, tokenizer=tokenizer).to(device)
    if not isinstance(getattr(reward_model, "score", None), nn.Module):
        raise ValueError(
            f"reward model {reward_path} has no `score` head; ppo needs a *ForSequenceClassification"
        )
    if (peft_config := lora_config(args, "CAUSAL_LM")) is not None:  # the policy trains a LoRA adapter
        from peft import get_peft_model

        policy = get_peft_model(policy, peft_config)
    for model in (policy, ref_policy, reward_model, value_model):
        disable_dropout(model)
    if args.activation_checkpointing:
        policy.activation_checkpointing_enable()
        value_model.activation_checkpointing_enable()

    # --- prompts
    train_rows, eval_rows, held_out = split_prompts(
        spec, eval_prompts=args.eval_prompts, eval_split=args.eval_split, seed=seed
    )
    max_prompt_tokens = args.max_length - args.max_new_tokens
    train_queries = [encode_prompt(r["prompt"], tokenizer, max_prompt_tokens) for r in train_rows]
    eval_queries = [encode_prompt(r["prompt"], tokenizer, max_prompt_tokens) for r in eval_rows]
    gen_config = sampling_config(tokenizer, max_new_tokens=args.max_new_tokens, temperature=args.temperature)

    mini_batch_size = args.per_device_train_batch_size * args.gradient_accumulation_steps
    batch_size = mini_batch_size * args.num_mini_batches  # responses per rollout
    if args.max_steps > 0:
        num_updates = args.max_steps
    else:
        num_updates = max(1, math.ceil(args.num_train_epochs * len(train_queries) / batch_size))
    progress.log(
        f"ppo: {len(train_queries)} train prompts, {len(eval_queries)} evaluation prompts "
        f"({'held out' if held_out else 'from training'}), {num_updates} updates "
        f"of {batch_size} responses, device {device}"
    )

    pad_id, eos_id = tokenizer.pad_token_id, tokenizer.eos_token_id
    if pad_id is None:
        pad_id = eos_id  # only fills unused slots: masks, not the pad id, decide what is real

    @torch.no_grad()
    def score_samples(model: nn.Module, queries: list[list[int]], repeats: int) -> dict[str, float]:
        """Fresh samples from `model`: mean reward-model score, KL to the reference, EOS share, length."""
        model.eval()
        scores, kls, eos, lengths = [], [], [], []
        all_queries = [q for q in queries for _ in range(repeats)]
        for start in range(0, len(all_queries), args.per_device_eval_batch_size):
            q_ids, q_mask = left_pad(
                all_queries[start : start + args.per_device_eval_batch_size], pad_id, device
            )
            with autocast():
                responses, r_mask = generate_responses(model, q_ids, q_mask, gen_config, eos_id)
                ids, mask = torch.cat([q_ids, responses], 1), torch.cat([q_mask, r_mask], 1)
                context = q_ids.shape[1]
                logits = forward_logits(model, ids, mask)[:, context - 1 : -1]
                ref_logits = forward_logits(ref_policy, ids, mask)[:, context - 1 : -1]
                logprobs = response_logprobs(logits, responses, args.temperature)
                ref_logprobs = response_logprobs(ref_logits, responses, args.temperature)
                lengths_here = r_mask.sum(1)
                last = context + lengths_here - 1
                batch_scores = token_values(reward_model, ids, mask)[
                    torch.arange(len(ids), device=device), last
                ]
            scores += batch_scores.float().tolist()
            kls += ((logprobs - ref_logprobs) * r_mask).sum(1).tolist()
            eos += (responses == eos_id).any(1).float().tolist()
            lengths += lengths_here.float().tolist()
        n = max(1, len(scores))
        return {
            "score": sum(scores) / n,
            "kl": sum(kls) / n,
            "eos_fraction": sum(eos) / n,
            "length": sum(lengths) / n,
        }

    progress.progress(0.03, "scoring samples of the base policy")
    before = score_samples(policy, eval_queries, EVAL_SAMPLES_PER_PROMPT)
    progress.metrics(0, {"eval/score": before["score"], "eval/kl_to_reference": before["kl"]})

    optimizer = torch.optim.AdamW(
        [p for m in (policy, value_model) for p in m.parameters() if p.requires_grad],
        lr=args.learning_rate,
        eps=1e-5,
        weight_decay=args.weight_decay,
    )
    total_optimizer_steps = num_updates * args.num_ppo_epochs * args.num_mini_batches
    warmup = (
        int(args.warmup_steps * total_optimizer_steps)
        if 0 < args.warmup_steps < 1
        else int(args.warmup_steps)
    )
    scheduler = get_scheduler(
        args.lr_scheduler_type, optimizer, num_warmup_steps=warmup, num_training_steps=total_optimizer_steps
    )
    kl_controller = (
        AdaptiveKLController(args.kl_coef, args.target_kl, args.kl_horizon)
        if args.adaptive_kl
        else FixedKLController(args.kl_coef)
    )
    prompt_order = random.Random(seed + 1)

    def prompt_batches():
        """Endless shuffled passes over the training prompts."""
        while True:
            order = list(range(len(train_queries)))
            prompt_order.shuffle(order)
            yield from order

    prompt_stream = prompt_batches()
    history: list[dict[str, float]] = []
    episode = 0

    for update in range(1, num_updates + 1):
        if progress.cancel_requested():
            raise progress.Cancelled("cancelled (SIGTERM)")

        # --- 1. rollout: sample responses, then log-probs, values and scores without gradients
        policy.eval()
        value_model.eval()
        batch_queries = [train_queries[next(prompt_stream)] for _ in range(batch_size)]
        chunks = []
        with torch.no_grad():
            for start in range(0, batch_size, args.per_device_eval_batch_size):
                q_ids, q_mask = left_pad(
                    batch_queries[start : start + args.per_device_eval_batch_size], pad_id, device
                )
                with autocast():
                    responses, r_mask = generate_responses(policy, q_ids, q_mask, gen_config, eos_id)
                chunks.append((q_ids, q_mask, responses, r_mask))
        # one tensor for the whole batch: left-pad queries and right-pad responses to common widths
        query_width = max(c[0].shape[1] for c in chunks)
        response_width = max(c[2].shape[1] for c in chunks)
        queries = torch.cat([F.pad(c[0], (query_width - c[0].shape[1], 0), value=pad_id) for c in chunks])
        query_mask = torch.cat([F.pad(c[1], (query_width - c[1].shape[1], 0), value=0) for c in chunks])
        responses = torch.cat(
            [F.pad(c[2], (0, response_width - c[2].shape[1]), value=pad_id) for c in chunks]
        )
        response_mask = torch.cat([F.pad(c[3], (0, response_width - c[3].shape[1]), value=0) for c in chunks])
        query_responses = torch.cat([queries, responses], 1)
        attention_mask = torch.cat([query_mask, response_mask], 1)
        context = query_width
        sequence_lengths = response_mask.sum(1)  # real response tokens, EOS included
        rows = torch.arange(batch_size, device=device)

        logprobs, ref_logprobs, values, scores = [], [], [], []
        with torch.no_grad():
            for start in range(0, batch_size, args.per_device_eval_batch_size):
                part = slice(start, start + args.per_device_eval_batch_size)
                ids, mask, resp = query_responses[part], attention_mask[part], responses[part]
                with autocast():
                    logits = forward_logits(policy, ids, mask)[:, context - 1 : -1]
                    logprobs.append(response_logprobs(logits, resp, args.temperature))
                    ref_logits = forward_logits(ref_policy, ids, mask)[:, context - 1 : -1]
                    ref_logprobs.append(response_logprobs(ref_logits, resp, args.temperature))
                    values.append(token_values(value_model, ids, mask)[:, context - 1 : -1].float())
                    last = context + sequence_lengths[part] - 1
                    scores.append(
                        token_values(reward_model, ids, mask)[
                            torch.arange(len(ids), device=device), last
                        ].float()
                    )
        logprobs, ref_logprobs = torch.cat(logprobs), torch.cat(ref_logprobs)
        values, scores = torch.cat(values), torch.cat(scores)
        del logits, ref_logits

        # --- 2. rewards: per-token KL penalty, the score on the last token, a penalty for a missing EOS
        contains_eos = (responses == eos_id).any(1)
        raw_scores = scores.clone()
        if args.missing_eos_penalty:
            scores = scores - args.missing_eos_penalty * (~contains_eos).float()
        mask = response_mask.bool()
        logprobs = logprobs.masked_fill(~mask, 0.0)
        ref_logprobs = ref_logprobs.masked_fill(~mask, 0.0)
        values = values.masked_fill(~mask, 0.0)
        kl = logprobs - ref_logprobs
        non_score_reward = -kl_controller.value * kl
        rewards = non_score_reward.clone()
        rewards[rows, sequence_lengths - 1] += scores
        if args.whiten_rewards:
            rewards = masked_whiten(rewards, mask, shift_mean=False).masked_fill(~mask, 0.0)

        # --- 3. advantages: GAE over the response tokens; past the end, rewards and values are 0
        last_gae = torch.zeros(batch_size, device=device)
        advantages_reversed = []
        for t in reversed(range(response_width)):
            next_values = values[:, t + 1] if t < response_width - 1 else torch.zeros_like(last_gae)
            delta = rewards[:, t] + args.gamma * next_values - values[:, t]
            last_gae = delta + args.gamma * args.lam * last_gae
            advantages_reversed.append(last_gae)
        advantages = torch.stack(advantages_reversed[::-1], 1)
        returns = advantages + values
        advantages = masked_whiten(advantages, mask).masked_fill(~mask, 0.0)

        # --- 4. PPO epochs: clipped surrogate for the policy, clipped value loss, over shuffled mini-batches
        policy.train()
        value_model.train()
        stats: dict[str, list[float]] = {
            k: [] for k in ("approxkl", "clipfrac", "pg_loss", "vf_loss", "vf_clipfrac", "entropy", "ratio")
        }
        for _epoch in range(args.num_ppo_epochs):
            permutation = torch.randperm(batch_size, device=device)
            for mb_start in range(0, batch_size, mini_batch_size):
                mini_batch = permutation[mb_start : mb_start + mini_batch_size]
                for micro_start in range(0, mini_batch_size, args.per_device_train_batch_size):
                    idx = mini_batch[micro_start : micro_start + args.per_device_train_batch_size]
                    ids, att, resp, m = query_responses[idx], attention_mask[idx], responses[idx], mask[idx]
                    with autocast():
                        logits = forward_logits(policy, ids, att)[:, context - 1 : -1]
                        vpred = token_values(value_model, ids, att)[:, context - 1 : -1].float()
                    new_logprobs = response_logprobs(logits, resp, args.temperature)
                    vpred_clipped = values[idx] + torch.clamp(
                        vpred - values[idx], -args.cliprange_value, args.cliprange_value
                    )
                    vf_losses1 = (vpred - returns[idx]) ** 2
                    vf_losses2 = (vpred_clipped - returns[idx]) ** 2
                    vf_loss = 0.5 * masked_mean(torch.max(vf_losses1, vf_losses2), m)
                    log_ratio = (new_logprobs - logprobs[idx]).masked_fill(~m, 0.0)
                    ratio = torch.exp(log_ratio)
                    pg_losses1 = -advantages[idx] * ratio
                    pg_losses2 = -advantages[idx] * torch.clamp(ratio, 1 - args.cliprange, 1 + args.cliprange)
                    pg_loss = masked_mean(torch.max(pg_losses1, pg_losses2), m)
                    loss = pg_loss + args.vf_coef * vf_loss
                    (loss / args.gradient_accumulation_steps).backward()
                    with torch.no_grad():
                        stats["approxkl"].append(float(0.5 * masked_mean(log_ratio**2, m)))
                        stats["clipfrac"].append(float(masked_mean((pg_losses2 > pg_losses1).float(), m)))
                        stats["pg_loss"].append(float(pg_loss))
                        stats["vf_loss"].append(float(vf_loss))
                        stats["vf_clipfrac"].append(float(masked_mean((vf_losses2 > vf_losses1).float(), m)))
                        stats["entropy"].append(float(masked_mean(entropy_from_logits(logits), m)))
                        stats["ratio"].append(float(masked_mean(ratio, m)))
                nn.utils.clip_grad_norm_(
                    [p for m_ in (policy, value_model) for p in m_.parameters() if p.requires_grad],
                    args.max_grad_norm,
                )
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)

        # --- 5. bookkeeping: KL controller, metrics, progress
        episode += batch_size
        mean_kl = float(kl.sum(1).mean())
        kl_coef_used = kl_controller.value
        kl_controller.update(mean_kl, batch_size)

        mean = {name: sum(v) / max(1, len(v)) for name, v in stats.items()}
        values_now = {
            "objective/scores": float(scores.mean()),
            "objective/raw_scores": float(raw_scores.mean()),
            "objective/kl": mean_kl,
            "objective/kl_coef": kl_coef_used,
            "objective/entropy": float((-logprobs).sum(1).mean()),
            "objective/non_score_reward": float(non_score_reward.sum(1).mean()),
            "objective/rlhf_reward": float(scores.mean() + non_score_reward.sum(1).mean()),
            "policy/approxkl": mean["approxkl"],
            "policy/clipfrac": mean["clipfrac"],
            "policy/entropy": mean["entropy"],
            "loss/policy": mean["pg_loss"],
            "loss/value": mean["vf_loss"],
            "loss/total": mean["pg_loss"] + args.vf_coef * mean["vf_loss"],
            "val/clipfrac": mean["vf_clipfrac"],
            "val/ratio": mean["ratio"],
            "val/mean": float(masked_mean(values, mask)),
            "rollout/eos_fraction": float(contains_eos.float().mean()),
            "rollout/response_length": float(sequence_lengths.float().mean()),
            "train/learning_rate": scheduler.get_last_lr()[0],
            "train/episode": episode,
        }
        history.append(values_now)
        if update % args.logging_steps == 0 or update == num_updates:
            progress.metrics(update, values_now)
        progress.progress(0.05 + 0.85 * update / num_updates, f"update {update}/{num_updates}")

    # --- evaluation on held-out prompts, then the policy is saved
    progress.progress(0.9, "scoring samples of the trained policy")
    after = score_samples(policy, eval_queries, EVAL_SAMPLES_PER_PROMPT)
    final = {
        **score_change(before, after),
        "eval/response_length_before": before["length"],
        "eval/response_length_after": after["length"],
        "eval/prompts": len(eval_queries),
        "eval/held_out": held_out,
        **{k: v for k, v in history[-1].items() if not k.startswith("train/")},
        "train/updates": num_updates,
        "train/episodes": episode,
        "train/runtime_s": round(time.time() - start_time, 2),
        "train/final_kl_coef": kl_controller.value,
    }
    progress.metrics(num_updates, {k: v for k, v in final.items() if k.startswith("eval/")})
    progress.progress(0.95, "saving the policy")
    policy.eval()
    policy.generation_config.pad_token_id = tokenizer.pad_token_id
    save_model(policy, out_dir, merge=args.merge_adapter)
    tokenizer.save_pretrained(out_dir)
    return final
