"""Sampling completions from a policy (`generate`) and scoring completions with a reward model (`score`).

generate: for every prompt (prompts_path, or the snapshot's unique prompts) the policy samples
num_completions completions and out_dir/generations.jsonl gets one line per prompt:
    {"prompt_id", "completions": [{"text", "params": {...}, "finish_reason": "eos" | "length"}]}
With reference_model, each completion also carries "log_ratio" (log policy - log reference, summed over its
tokens) and the metrics their mean, generate/kl_to_reference: a sample estimate of KL(policy || reference).

score: prompts_path lines carry {"prompt_id", "prompt", "completions": [{"completion_id", "text"}]}; the reward
model scores each (prompt, completion) exactly as reward training saw it (chat template for message prompts,
else prompt + completion + EOS) and out_dir/scores.jsonl gets one line per completion:
    {"prompt_id", "completion_id", "score"}

Both run on one process (under a multi-process launch the other ranks do nothing).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from trainer import progress
from trainer.data import is_conversational, read_prompts, read_prompts_file, to_prompt_text
from trainer.encoding import effective_max_length, encode_sequence
from trainer.models import (
    default_device,
    load_policy,
    load_reward,
    load_tokenizer,
    report_phases,
    reward_scores,
    thread_facts,
)
from trainer.params import GenerateArgs, ScoreArgs
from trainer.prm import is_prm
from trainer.spec import JobSpec
from trainer.timing import Phases


def _stop_token_ids(model, tokenizer) -> set[int]:
    """Every token id that ends a completion (generation configs may list several, e.g. end-of-turn and EOS)."""
    configured = model.generation_config.eos_token_id
    ids = set(configured if isinstance(configured, list) else [configured] if configured is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def _sampling_kwargs(args: GenerateArgs) -> dict[str, Any]:
    if args.temperature <= 0:
        return {"do_sample": False}
    return {
        "do_sample": True,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "top_k": args.top_k or None,
    }


@torch.no_grad()
def generate_completions(
    model, tokenizer, prompts: list[Any], args: GenerateArgs, tools: list[list[dict] | None] | None = None
) -> list[list[dict[str, Any]]]:
    """num_completions completions for each prompt: [[{"text", "finish_reason", "new_tokens"}...]...]. `tools`: per
    prompt, the tools its conversation offers (None: none)."""
    device = next(model.parameters()).device
    greedy = args.temperature <= 0
    stop_ids = _stop_token_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else next(iter(stop_ids))
    encoded = []
    for prompt, offered in zip(prompts, tools or [None] * len(prompts), strict=True):
        # A chat template writes its own special tokens; a plain prompt is tokenized as TRL trainers do.
        ids = tokenizer(to_prompt_text(prompt, tokenizer, offered), add_special_tokens=not is_conversational(prompt))[
            "input_ids"
        ]
        encoded.append(ids[-args.max_prompt_length :])
    width = max(len(ids) for ids in encoded)
    input_ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, ids in enumerate(encoded):  # left padding: every prompt ends where generation starts
        input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, width - len(ids) :] = 1
    output = model.generate(
        input_ids=input_ids.to(device),
        attention_mask=attention_mask.to(device),
        max_new_tokens=args.max_new_tokens,
        num_return_sequences=1 if greedy else args.num_completions,
        pad_token_id=pad_id,
        eos_token_id=sorted(stop_ids) or None,
        **_sampling_kwargs(args),
    )
    new_tokens = output[:, width:].cpu().tolist()
    if greedy:  # transformers refuses several greedy sequences: they would all be the same anyway
        new_tokens = [tokens for tokens in new_tokens for _ in range(args.num_completions)]
    results: list[list[dict[str, Any]]] = []
    for index in range(len(prompts)):
        completions = []
        for tokens in new_tokens[index * args.num_completions : (index + 1) * args.num_completions]:
            stop_at = next((i for i, token in enumerate(tokens) if token in stop_ids), None)
            kept = tokens if stop_at is None else tokens[:stop_at]
            completions.append(
                {
                    "text": tokenizer.decode(kept, skip_special_tokens=True),
                    "finish_reason": "length" if stop_at is None else "eos",
                    "new_tokens": len(kept),
                    "prompt_ids": encoded[index],
                    "token_ids": kept,
                }
            )
        results.append(completions)
    return results


@torch.no_grad()
def completion_logprob(model, prompt_ids: list[int], token_ids: list[int]) -> float:
    """log p(completion | prompt) under `model`: the sum over the completion's tokens."""
    if not token_ids:
        return 0.0
    device = next(model.parameters()).device
    ids = torch.tensor([prompt_ids + token_ids], dtype=torch.long, device=device)
    logits = model(input_ids=ids).logits[0, len(prompt_ids) - 1 : -1].float()
    targets = torch.tensor(token_ids, dtype=torch.long, device=device)[:, None]
    return float(torch.log_softmax(logits, dim=-1).gather(-1, targets).sum())


def vllm_usable() -> bool:
    """vLLM is installed and a CUDA GPU is present (CPU and no vLLM stay the tested default)."""
    import importlib.util

    return importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()


def generation_backend(requested: str) -> str:
    """"vllm" or "transformers" for a requested backend (auto: vLLM where usable); a clear error otherwise."""
    if requested not in ("auto", "transformers", "vllm"):
        raise ValueError(f"param 'backend' must be auto, transformers or vllm, got {requested!r}")
    if requested == "vllm" and not vllm_usable():
        raise ValueError("backend vllm needs the vllm package and a CUDA GPU (pip install 'rankforge[vllm]')")
    if requested == "auto":
        return "vllm" if vllm_usable() else "transformers"
    return requested


def generate_with_vllm(spec: JobSpec, tokenizer, prompts: list[Any], args: GenerateArgs,
                       tools: list[list[dict] | None] | None = None) -> list[list[dict]]:
    """num_completions completions per prompt from vLLM (a LoRA adapter through its LoRARequest); the same
    shape as generate_completions."""
    from vllm import LLM, SamplingParams

    from trainer.models import adapter_base, is_adapter

    adapter = is_adapter(spec.base_model)
    llm = LLM(model=str(adapter_base(spec.base_model) if adapter else spec.base_model),
              tokenizer=str(spec.base_model), seed=spec.seed, enable_lora=adapter, dtype="auto")  # fmt: skip
    lora = None
    if adapter:
        from vllm.lora.request import LoRARequest

        lora = LoRARequest("adapter", 1, str(spec.base_model))
    sampling = SamplingParams(
        n=args.num_completions, temperature=max(args.temperature, 0.0), top_p=args.top_p, top_k=args.top_k or -1,
        max_tokens=args.max_new_tokens, seed=spec.seed,
    )  # fmt: skip
    token_prompts = []
    for prompt, offered in zip(prompts, tools or [None] * len(prompts), strict=True):
        ids = tokenizer(to_prompt_text(prompt, tokenizer, offered),
                        add_special_tokens=not is_conversational(prompt))["input_ids"]
        token_prompts.append({"prompt_token_ids": list(ids)[-args.max_prompt_length :]})
    results = []
    for output in llm.generate(token_prompts, sampling, lora_request=lora):
        results.append([{"text": c.text, "finish_reason": "eos" if c.finish_reason == "stop" else "length",
                         "new_tokens": len(c.token_ids), "prompt_ids": list(output.prompt_token_ids),
                         "token_ids": list(c.token_ids)} for c in output.outputs])  # fmt: skip
    return results


def main(spec: JobSpec, out_dir: Path) -> dict[str, Any]:
    args: GenerateArgs = spec.args
    if args.num_completions < 1 or args.max_new_tokens < 1 or args.batch_size < 1:
        raise ValueError("generate needs num_completions, max_new_tokens and batch_size >= 1")
    if not progress.is_main_process():
        return {}
    backend = generation_backend(args.backend)
    phases = Phases()
    with phases("load_model"):
        tokenizer = load_tokenizer(spec.base_model)
        model = None if backend == "vllm" else load_policy(spec.base_model, tokenizer=tokenizer).to(default_device()).eval()
    system = thread_facts()
    with phases("read_prompts"):
        prompts = read_prompts(spec)
    if not prompts:
        raise ValueError("no prompts to generate for")
    # Batches of prompts of similar length (longest first), so little of each batch is padding; the file keeps
    # the prompts' order.
    for position, item in enumerate(prompts):
        item["_position"] = position
    prompts.sort(key=lambda p: -len(json.dumps(p["prompt"], ensure_ascii=False)))
    rows_by_position: dict[int, str] = {}
    with phases("load_model"):
        if backend == "vllm" and args.reference_model:
            model = load_policy(spec.base_model, tokenizer=tokenizer).to(default_device()).eval()  # for log-ratios
        reference = load_policy(args.reference_model).to(default_device()).eval() if args.reference_model else None
    log_ratios: list[float] = []
    params = {
        "model": spec.base_model,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "top_k": args.top_k,
        "max_new_tokens": args.max_new_tokens,
        "seed": spec.seed,
        "backend": backend,
    }
    started = time.monotonic()
    finished_by_eos = new_tokens = count = 0
    batch_size = len(prompts) if backend == "vllm" else args.batch_size  # vLLM schedules its own batches
    with phases("generate"), open(out_dir / "generations.jsonl", "w", encoding="utf-8") as handle:
        for start in range(0, len(prompts), batch_size):
            batch = prompts[start : start + batch_size]
            texts, offered = [p["prompt"] for p in batch], [p.get("tools") for p in batch]
            generated = (generate_with_vllm(spec, tokenizer, texts, args, offered) if backend == "vllm"
                         else generate_completions(model, tokenizer, texts, args, offered))  # fmt: skip
            for item, completions in zip(batch, generated, strict=True):
                row = {
                    "prompt_id": item["prompt_id"],
                    "completions": [
                        {"text": c["text"], "params": params, "finish_reason": c["finish_reason"]}
                        for c in completions
                    ],
                }
                if reference is not None:  # log pi(y|x) - log ref(y|x) of each sample: its mean estimates the KL
                    for out, c in zip(row["completions"], completions, strict=True):
                        out["log_ratio"] = completion_logprob(model, c["prompt_ids"], c["token_ids"]) - \
                            completion_logprob(reference, c["prompt_ids"], c["token_ids"])
                        log_ratios.append(out["log_ratio"])
                rows_by_position[item["_position"]] = json.dumps(row, ensure_ascii=False) + "\n"
                finished_by_eos += sum(c["finish_reason"] == "eos" for c in completions)
                new_tokens += sum(c["new_tokens"] for c in completions)
                count += len(completions)
            done = min(len(prompts), start + batch_size)
            progress.progress(
                0.05 + 0.9 * done / len(prompts), f"generated for {done}/{len(prompts)} prompts"
            )
        handle.writelines(rows_by_position[position] for position in range(len(prompts)))
    metrics = {
        "generate/prompts": len(prompts),
        "generate/completions": count,
        "generate/eos_share": finished_by_eos / count,
        "generate/mean_new_tokens": new_tokens / count,
        "generate/runtime_s": round(time.monotonic() - started, 3),
        "generate/tokens_per_s": round(new_tokens / max(time.monotonic() - started, 1e-9), 1),
        "generate/backend": backend,
    }
    if log_ratios:
        metrics["generate/kl_to_reference"] = sum(log_ratios) / len(log_ratios)
    return metrics | report_phases(phases, 0, system)


def main_score(spec: JobSpec, out_dir: Path) -> dict[str, Any]:
    args: ScoreArgs = spec.args
    if not progress.is_main_process():
        return {}
    if not spec.prompts_path:
        raise ValueError("a score job needs prompts_path: lines of {prompt_id, prompt, completions: [...]}")
    rows = read_prompts_file(spec.prompts_path)
    if is_prm(spec.reward_model):
        return _score_with_prm(spec, args, rows, out_dir)
    tokenizer = load_tokenizer(spec.reward_model, role="reward model")
    model = load_reward(spec.reward_model, tokenizer=tokenizer).to(default_device()).eval()
    max_length = effective_max_length(args.max_length, model.config, tokenizer)

    items = _score_items(spec, rows)
    keys = [(prompt_id, completion_id) for prompt_id, completion_id, _ in items]
    sequences = [encode_sequence(prompt, text, tokenizer, max_length) for _, _, (prompt, text) in items]

    scores: list[float] = []
    chunk = max(args.batch_size * 8, 1)  # report progress every few batches
    for start in range(0, len(sequences), chunk):
        scores += reward_scores(
            model,
            tokenizer,
            sequences[start : start + chunk],
            batch_size=args.batch_size,
            max_length=max_length,
        )
        done = min(len(sequences), start + chunk)
        progress.progress(0.05 + 0.9 * done / len(sequences), f"scored {done}/{len(sequences)} completions")
    return _write_scores(out_dir, keys, scores)


def _score_items(spec: JobSpec, rows: list[dict], steps: bool = False) -> list[tuple[Any, Any, Any]]:
    """(prompt_id, completion_id, (prompt, text)) of every completion in a score job's prompts file; `steps`: a
    completion's `messages` (a continuation: tool calls, a trajectory) instead of its text, for a PRM."""
    items = []
    for number, row in enumerate(rows, start=1):
        for completion in row.get("completions") or []:
            if "completion_id" not in completion or "text" not in completion:
                raise ValueError(f"{spec.prompts_path} line {number}: each completion needs completion_id and text")
            answer = (completion.get("messages") if steps else None) or completion["text"]
            items.append((row["prompt_id"], completion["completion_id"], (row["prompt"], answer)))
    if not items:
        raise ValueError(f"{spec.prompts_path} holds no completions to score")
    return items


def _score_with_prm(spec: JobSpec, args: ScoreArgs, rows: list[dict], out_dir: Path) -> dict[str, Any]:
    """A score job whose reward model is a process reward model: each completion cut into steps (a continuation's
    messages one step per assistant message, a text at the PRM's separator) and scored step by step; its score is the min or last step score (args.prm_outcome)."""
    from trainer.prm import ProcessRewardScorer

    items = _score_items(spec, rows, steps=True)
    scorer = ProcessRewardScorer(spec.reward_model, device=default_device(), outcome=args.prm_outcome,
                                 batch_size=args.batch_size, max_length=args.max_length)  # fmt: skip
    scores: list[float] = []
    chunk = max(args.batch_size * 8, 1)
    for start in range(0, len(items), chunk):
        part = items[start : start + chunk]
        scores += scorer([pair[0] for _, _, pair in part], [pair[1] for _, _, pair in part])
        done = start + len(part)
        progress.progress(0.05 + 0.9 * done / len(items), f"scored {done}/{len(items)} completions")
    metrics = _write_scores(out_dir, [(p, c) for p, c, _ in items], scores)
    return metrics | {"scores/prm_outcome": args.prm_outcome}


def _write_scores(out_dir: Path, keys: list[tuple[Any, Any]], scores: list[float]) -> dict[str, Any]:
    """scores.jsonl (one {prompt_id, completion_id, score} a line) and the scores' summary metrics."""
    with open(out_dir / "scores.jsonl", "w", encoding="utf-8") as handle:
        for (prompt_id, completion_id), score in zip(keys, scores, strict=True):
            handle.write(
                json.dumps({"prompt_id": prompt_id, "completion_id": completion_id, "score": score}) + "\n"
            )
    mean = sum(scores) / len(scores)
    return {
        "scores/count": len(scores),
        "scores/mean": mean,
        "scores/std": math.sqrt(sum((s - mean) ** 2 for s in scores) / len(scores)),
        "scores/min": min(scores),
        "scores/max": max(scores),
    }
