"""Loading local Hugging Face checkpoints (any architecture) and scoring sequences with a reward model.

check_checkpoint(path, role) -> Path      clear FileNotFoundError naming the path when it is not a checkpoint
load_tokenizer(path)                      AutoTokenizer with a pad token guaranteed
load_policy(path)                         AutoModelForCausalLM
load_reward(path)                         AutoModelForSequenceClassification with one label (a causal LM
                                          checkpoint gets a fresh score head: the start of reward training)
reward_scores(model, tokenizer, id_lists) one float per token-id sequence
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from trainer.params import TrainArgs


def default_device() -> torch.device:
    """The accelerator when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def check_checkpoint(path: str | Path | None, role: str = "base model") -> Path:
    """The checkpoint directory as a Path, or a FileNotFoundError that names the role and the path."""
    if path is None or str(path) == "":
        raise FileNotFoundError(f"{role} not given: the job spec needs a local checkpoint directory")
    checkpoint = Path(path)
    if not checkpoint.exists():
        raise FileNotFoundError(f"{role} not found: {checkpoint} does not exist")
    if not checkpoint.is_dir() or not (checkpoint / "config.json").is_file():
        raise FileNotFoundError(
            f"{role} at {checkpoint} is not a Hugging Face checkpoint directory (no config.json in it)"
        )
    return checkpoint


def load_tokenizer(path: str | Path, role: str = "base model"):
    """The checkpoint's tokenizer; when it has no pad token, EOS doubles as padding (attention masks tell them apart)."""
    checkpoint = check_checkpoint(path, role)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_policy(path: str | Path, *, dtype: torch.dtype | str = torch.float32, role: str = "base model"):
    """A causal LM from a local checkpoint (float32 by default: the safe choice on CPU and for training)."""
    checkpoint = check_checkpoint(path, role)
    return AutoModelForCausalLM.from_pretrained(checkpoint, dtype=dtype)


@contextlib.contextmanager
def _quiet_transformers():
    """Hide the expected 'newly initialized score head' warning when a causal LM becomes a reward model."""
    logger = logging.getLogger("transformers.modeling_utils")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def load_reward(
    path: str | Path, *, tokenizer=None, dtype: torch.dtype | str = torch.float32, role: str = "reward model"
):
    """A one-label sequence classifier from a local checkpoint, its pad_token_id set (it finds the last token)."""
    checkpoint = check_checkpoint(path, role)
    with _quiet_transformers():
        model = AutoModelForSequenceClassification.from_pretrained(checkpoint, num_labels=1, dtype=dtype)
    if model.config.num_labels != 1:
        raise ValueError(f"{role} at {checkpoint} has {model.config.num_labels} labels; a reward model has 1")
    if model.config.pad_token_id is None:
        tokenizer = tokenizer or load_tokenizer(checkpoint, role)
        model.config.pad_token_id = tokenizer.pad_token_id
    return model


@torch.no_grad()
def reward_scores(
    model, tokenizer, id_lists: list[list[int]], *, batch_size: int = 16, max_length: int | None = None
) -> list[float]:
    """Reward of each token-id sequence (longer than max_length: its last max_length tokens are scored)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id
    scores: list[float] = []
    # Longest first so batches hold similar lengths; results go back to the caller's order.
    order = sorted(range(len(id_lists)), key=lambda i: -len(id_lists[i]))
    by_index: dict[int, float] = {}
    for start in range(0, len(order), batch_size):
        indexes = order[start : start + batch_size]
        batch = [id_lists[i][-max_length:] if max_length else id_lists[i] for i in indexes]
        width = max(len(ids) for ids in batch)
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, ids in enumerate(batch):  # right padding: the classifier reads the last non-pad token
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, : len(ids)] = 1
        logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits
        for i, value in zip(indexes, logits[:, 0].float().cpu().tolist(), strict=True):
            by_index[i] = value
    scores = [by_index[i] for i in range(len(id_lists))]
    if was_training:
        model.train()
    return scores


def save_trained(trainer, tokenizer, out_dir: str | Path, scratch_dir: str | Path | None = None) -> None:
    """Save a Trainer's model + tokenizer into out_dir as a clean save_pretrained directory.

    Drops training_args.bin (a pickle nobody needs to load) and the trainer's scratch dir. Safe under accelerate:
    every rank calls it (save_model gathers), only the main process writes.
    """
    import shutil

    out_dir = Path(out_dir)
    trainer.save_model(str(out_dir))
    if trainer.accelerator.is_main_process:
        tokenizer.save_pretrained(str(out_dir))
        (out_dir / "training_args.bin").unlink(missing_ok=True)
        if scratch_dir is not None:
            shutil.rmtree(scratch_dir, ignore_errors=True)


def trainer_kwargs(args: TrainArgs, scratch_dir: str, seed: int) -> dict[str, Any]:
    """Keyword arguments shared by every TRL config (RewardConfig, DPOConfig, ...) built from TrainArgs.

    Nothing is saved during training (the job saves the final model itself) and nothing is reported to
    outside services; scratch_dir only receives what transformers insists on writing.
    """
    on_gpu = torch.cuda.is_available()
    bf16 = args.bf16 if args.bf16 is not None else bool(on_gpu and torch.cuda.is_bf16_supported())
    return {
        "output_dir": scratch_dir,
        "learning_rate": args.learning_rate,
        "num_train_epochs": args.num_train_epochs,
        "max_steps": args.max_steps,
        "per_device_train_batch_size": args.per_device_train_batch_size,
        "per_device_eval_batch_size": args.per_device_eval_batch_size,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "lr_scheduler_type": args.lr_scheduler_type,
        "warmup_steps": args.warmup_steps,
        "weight_decay": args.weight_decay,
        "max_grad_norm": args.max_grad_norm,
        "max_length": args.max_length,
        "logging_steps": args.logging_steps,
        "bf16": bf16,
        "activation_checkpointing": args.activation_checkpointing,
        "gradient_checkpointing": None,  # deprecated alias in transformers 5; TRL configs default it to True
        "seed": seed,
        "save_strategy": "no",
        "eval_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "dataloader_pin_memory": on_gpu,
        # Several processes without CUDA (torchrun / accelerate on CPU) only form a gloo group with use_cpu.
        "use_cpu": not on_gpu and int(os.environ.get("WORLD_SIZE", "1")) > 1,
    }
