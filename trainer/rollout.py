"""What PPO and GRPO/RLOO share: the prompts a run trains and evaluates on, and sampling responses with the
log-probs of exactly the distribution sampled from (temperature-scaled, no top-k/top-p).

    split_prompts(spec, ...) -> (train rows, evaluation rows, held out?)
    encode_prompt / left_pad -> query tensors      sampling_config / generate_responses -> responses + mask
    forward_logits / response_logprobs -> log pi(response tokens)
"""

from __future__ import annotations

import json
import random
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationConfig

from trainer import progress
from trainer.data import has_split, is_conversational, read_manifest, read_prompts_file, read_rows
from trainer.spec import JobSpec

UNHELD_EVAL_PROMPTS = 16  # training prompts scored before/after when none are held out


def load_prompt_rows(spec: JobSpec, split: str = "train") -> list[dict[str, Any]]:
    """Prompt rows with every field kept (prompt_id, prompt, and extras such as "answer").

    From spec.prompts_path when given, else the unique prompts of the snapshot's `split`.
    """
    if spec.prompts_path:
        rows = read_prompts_file(spec.prompts_path)
    elif spec.dataset_path:
        read_manifest(spec.dataset_path)
        rows, seen = [], set()
        for index, row in enumerate(read_rows(spec.dataset_path, split)):
            key = json.dumps(row["prompt"], sort_keys=True)
            if key not in seen:
                seen.add(key)
                # snapshot rows carry chosen/rejected/...: only the prompt (and its id) defines a prompt row
                rows.append({"prompt_id": row.get("prompt_id", index), "prompt": row["prompt"]})
    else:
        raise ValueError("the job spec needs prompts_path or dataset_path to know which prompts to use")
    if not rows:
        raise ValueError("no prompts: the prompts file or snapshot split is empty")
    for row in rows:
        if not (isinstance(row["prompt"], str) or is_conversational(row["prompt"])):
            raise ValueError(f"prompt {row.get('prompt_id')!r} must be a string or a list of messages")
    return rows


def split_prompts(
    spec: JobSpec, *, eval_prompts: int, eval_split: str, seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], bool]:
    """(train rows, evaluation rows, whether the evaluation rows are held out of training).

    Held out: up to eval_prompts rows of the snapshot's eval_split when it has one, else eval_prompts rows set
    aside after a seeded shuffle. With eval_prompts 0, or too few prompts to spare any, the evaluation uses up
    to UNHELD_EVAL_PROMPTS (or eval_prompts) training rows instead.
    """
    rows = load_prompt_rows(spec, "train")
    random.Random(seed).shuffle(rows)
    if eval_prompts <= 0:
        return rows, rows[:UNHELD_EVAL_PROMPTS], False
    if not spec.prompts_path and eval_split and has_split(spec.dataset_path, eval_split):
        return rows, load_prompt_rows(spec, eval_split)[:eval_prompts], True
    if len(rows) < 2 * eval_prompts:
        progress.log(
            f"only {len(rows)} prompts: evaluating on training prompts instead of {eval_prompts} held out"
        )
        return rows, rows[:eval_prompts], False
    return rows[eval_prompts:], rows[:eval_prompts], True


def encode_prompt(prompt: str | list[dict[str, str]], tokenizer, max_tokens: int) -> list[int]:
    """Token ids of a prompt (message lists through the chat template, assistant turn opened), keeping the
    last max_tokens tokens: the end of a prompt is what the response must follow."""
    if is_conversational(prompt):
        ids = tokenizer.apply_chat_template(
            prompt, add_generation_prompt=True, tokenize=True, return_dict=True
        )["input_ids"]
    else:
        ids = tokenizer(text=prompt)["input_ids"]
    ids = list(ids)[-max_tokens:]
    if not ids:
        raise ValueError("a prompt encodes to no tokens")
    return ids


def left_pad(
    id_lists: list[list[int]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask), left-padded: generation continues from the right edge of every row."""
    width = max(len(ids) for ids in id_lists)
    ids = torch.full((len(id_lists), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(id_lists), width), dtype=torch.long)
    for row, seq in enumerate(id_lists):
        ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
        mask[row, width - len(seq) :] = 1
    return ids.to(device), mask.to(device)


def position_ids_for(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted from each row's first real token (left padding must not shift positions)."""
    return (attention_mask.cumsum(1) - 1).clamp(min=0)


def forward_logits(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    out = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_for(mask), use_cache=False)
    return out.logits


def response_logprobs(logits: torch.Tensor, responses: torch.Tensor, temperature: float) -> torch.Tensor:
    """log pi(token) of each response token under temperature-scaled logits, (batch, response length).
    `logits` are the logits predicting the response tokens (already sliced)."""
    logprobs = F.log_softmax(logits.float() / (temperature + 1e-7), dim=-1)
    return torch.gather(logprobs, 2, responses.unsqueeze(-1)).squeeze(-1)


def sampling_config(tokenizer, *, max_new_tokens: int, temperature: float) -> GenerationConfig:
    """Plain sampling at `temperature`: no top-k / top-p, so samples follow the distribution we take log-probs of."""
    return GenerationConfig(
        max_new_tokens=max_new_tokens,
        min_new_tokens=1,
        do_sample=True,
        temperature=temperature + 1e-7,
        top_k=0,
        top_p=1.0,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


@torch.no_grad()
def generate_responses(
    model: nn.Module, queries: torch.Tensor, query_mask: torch.Tensor, config: GenerationConfig, eos_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(responses, response mask): sampled continuations, masked after their first EOS (EOS itself kept)."""
    output = model.generate(input_ids=queries, attention_mask=query_mask, generation_config=config)
    responses = output[:, queries.shape[1] :]
    is_eos = responses == eos_id
    positions = torch.arange(responses.shape[1], device=responses.device).expand_as(responses)
    first_eos = torch.where(is_eos.any(1), is_eos.int().argmax(1), responses.shape[1] - 1)
    response_mask = (positions <= first_eos.unsqueeze(1)).long()
    responses = responses.masked_fill(response_mask == 0, config.pad_token_id)
    return responses, response_mask


def score_change(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """The held-out evaluation metrics an RL job (PPO, GRPO, RLOO) reports: the policy's reward before and after
    training, its KL to the reference after, and how often it ended its answers (EOS) before and after."""
    return {
        "eval/score_before": before["score"],
        "eval/score_after": after["score"],
        "eval/score_gain": after["score"] - before["score"],
        "eval/kl_to_reference": after["kl"],
        "eval/eos_fraction_before": before["eos_fraction"],
        "eval/eos_fraction_after": after["eos_fraction"],
    }
