"""Loading local Hugging Face checkpoints (any architecture) and scoring sequences with a reward model.

check_checkpoint(path, role) -> Path      clear FileNotFoundError naming the path when it is not a checkpoint
load_tokenizer(path)                      AutoTokenizer with chat template, EOS and pad guaranteed (trainer.encoding:
                                          the plain transcript template, SEP/CLS or an added token; recorded)
load_policy(path, tokenizer=...)          AutoModelForCausalLM (an encoder is refused: it cannot generate)
load_reward(path)                         AutoModelForSequenceClassification with one label (a causal LM or an
                                          encoder checkpoint gets a fresh score head: the start of reward training)
reward_scores(model, tokenizer, id_lists) one float per token-id sequence
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from trainer import progress
from trainer.data import dataset_for_trainer
from trainer.encoding import Fit, is_encoder, padded_length, prepare_tokenizer
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
    if checkpoint.is_dir() and (checkpoint / ADAPTER_CONFIG).is_file():
        base = adapter_base(checkpoint)
        check_checkpoint(base, f"base model of the {role} adapter {checkpoint}")
        return checkpoint
    if not checkpoint.is_dir() or not (checkpoint / "config.json").is_file():
        raise FileNotFoundError(
            f"{role} at {checkpoint} is not a Hugging Face checkpoint directory (no config.json in it)"
        )
    return checkpoint


ADAPTER_CONFIG = "adapter_config.json"


def is_adapter(path: str | Path) -> bool:
    """True for a LoRA adapter directory (peft's adapter_config.json, no full weights)."""
    return (Path(path) / ADAPTER_CONFIG).is_file()


def adapter_base(path: str | Path) -> Path:
    """The base checkpoint an adapter was trained on (its adapter_config's base_model_name_or_path)."""
    import json

    config = json.loads((Path(path) / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    base = config.get("base_model_name_or_path")
    if not base:
        raise FileNotFoundError(f"adapter {path} does not name its base model (base_model_name_or_path)")
    return Path(base)


def _with_adapter(model, path: Path, role: str):
    """The base model with the adapter at `path` loaded onto it (frozen, ready to generate or score)."""
    from peft import PeftModel

    try:
        return PeftModel.from_pretrained(model, str(path))
    except Exception as error:  # pragma: no cover - peft explains what does not fit
        raise ValueError(f"{role} adapter at {path} does not fit its base model ({error})") from error


def load_config(path: str | Path, role: str = "base model"):
    checkpoint = check_checkpoint(path, role)
    if is_adapter(checkpoint):
        checkpoint = adapter_base(checkpoint)
    try:
        return AutoConfig.from_pretrained(checkpoint)
    except (ValueError, OSError) as error:
        raise ValueError(f"{role} at {checkpoint}: its config.json cannot be read ({error})") from error


def load_tokenizer(path: str | Path, role: str = "base model"):
    """The checkpoint's tokenizer, made fit for training by trainer.encoding.prepare_tokenizer: a chat template
    (the plain transcript one where it has none), an EOS (SEP/CLS on encoders, else one is added) and a pad
    token (EOS on decoders); what was used is in trainer.encoding.tokenizer_setup(tokenizer)."""
    checkpoint = check_checkpoint(path, role)
    config = load_config(checkpoint, role)
    try:
        tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    except (ValueError, OSError, TypeError) as error:
        raise ValueError(f"{role} at {checkpoint} has no usable tokenizer files ({error})") from error
    prepare_tokenizer(tokenizer, str(checkpoint), encoder=is_encoder(config))
    return tokenizer


def fit_embeddings(model, tokenizer) -> None:
    """Grow the embeddings when tokens were added to the tokenizer (an added EOS or pad), set the pad id."""
    if tokenizer is None:
        return
    embeddings = model.get_input_embeddings()
    if embeddings is not None and len(tokenizer) > embeddings.num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    text_config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    text_config.pad_token_id = tokenizer.pad_token_id
    if getattr(model, "generation_config", None) is not None and not is_encoder(model.config):
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        if model.generation_config.eos_token_id is None:
            model.generation_config.eos_token_id = tokenizer.eos_token_id


def load_policy(
    path: str | Path,
    *,
    tokenizer=None,
    dtype: torch.dtype | str = torch.float32,
    role: str = "base model",
    quantize: bool = False,
):
    """A causal LM from a local checkpoint (float32 by default: the safe choice on CPU and for training).
    An encoder (BERT-style) is refused before anything is trained: it cannot generate text."""
    checkpoint = check_checkpoint(path, role)
    config = load_config(checkpoint, role)
    if is_encoder(config):
        raise ValueError(
            f"{role} at {checkpoint} is an encoder ({config.model_type}) and cannot be a policy: it has no "
            "causal language-model head to generate with. Use it as a reward model base, or pick a decoder LM."
        )
    source = adapter_base(checkpoint) if is_adapter(checkpoint) else checkpoint
    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **quantization_kwargs(quantize, role))
    fit_embeddings(model, tokenizer)
    fit_threads_to_model(model)
    if is_adapter(checkpoint):
        model = _with_adapter(model, checkpoint, role)
    return model


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
    path: str | Path,
    *,
    tokenizer=None,
    dtype: torch.dtype | str = torch.float32,
    role: str = "reward model",
    quantize: bool = False,
):
    """A one-label sequence classifier from a local checkpoint (or a LoRA adapter on one), its pad_token_id set
    (decoders read the last non-pad token; encoders their first, [CLS])."""
    checkpoint = check_checkpoint(path, role)
    source = adapter_base(checkpoint) if is_adapter(checkpoint) else checkpoint
    with _quiet_transformers():
        model = AutoModelForSequenceClassification.from_pretrained(
            source, num_labels=1, dtype=dtype, **quantization_kwargs(quantize, role)
        )
    if model.config.num_labels != 1:
        raise ValueError(f"{role} at {checkpoint} has {model.config.num_labels} labels; a reward model has 1")
    tokenizer = tokenizer or load_tokenizer(checkpoint, role)
    fit_embeddings(model, tokenizer)
    fit_threads_to_model(model)
    if is_adapter(checkpoint):
        model = _with_adapter(model, checkpoint, role)
    return model


def quantization_kwargs(quantize: bool, role: str) -> dict[str, Any]:
    """from_pretrained kwargs for QLoRA (4-bit NF4 base weights), or a clear refusal where it cannot run."""
    if not quantize:
        return {}
    if not torch.cuda.is_available():
        raise ValueError(f"load_in_4bit (QLoRA) needs a CUDA GPU; this {role} job runs on the CPU. Use use_lora.")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as error:
        raise ValueError("load_in_4bit (QLoRA) needs the bitsandbytes package: pip install bitsandbytes") from error
    from transformers import BitsAndBytesConfig

    return {"quantization_config": BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16,
        bnb_4bit_use_double_quant=True,
    )}  # fmt: skip


def lora_config(args: TrainArgs, task_type: str):
    """peft's LoraConfig for the job's lora_* params (None without use_lora / load_in_4bit).

    task_type: CAUSAL_LM for policies, SEQ_CLS for reward models (peft then trains the score head in full)."""
    if not (args.use_lora or args.load_in_4bit):
        return None
    try:
        from peft import LoraConfig
    except ImportError as error:
        raise ValueError("use_lora needs the peft package: pip install 'rankforge[train]'") from error
    if args.lora_r < 1 or args.lora_alpha < 1 or not 0 <= args.lora_dropout < 1:
        raise ValueError("LoRA needs lora_r >= 1, lora_alpha >= 1 and 0 <= lora_dropout < 1")
    return LoraConfig(
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=args.lora_target_modules or "all-linear",
        task_type=task_type,
    )


def report_fit(fit, unit: str) -> None:
    """Log how many rows were truncated (prompt start cut) and dropped (completion alone too long)."""
    from trainer import progress

    progress.log(
        f"{fit.total} {unit}: {fit.truncated} truncated at the prompt's start to fit max_length, "
        f"{fit.dropped} dropped (a completion alone longer than max_length)"
        + ("; token ids from the tokenization cache" if getattr(fit, "from_cache", False) else "")
    )


_LARGEST_MODEL = 0
"""Parameters of the largest model this process loaded (the thread count follows it)."""


def fit_threads_to_model(model) -> None:
    """After a model is loaded: torch's thread count is the process's planned count (trainer.threads), narrowed
    while every model loaded so far is tiny. load_policy and load_reward call it; so does any other loader."""
    from trainer.threads import current_plan

    global _LARGEST_MODEL
    _LARGEST_MODEL = max(_LARGEST_MODEL, sum(p.numel() for p in model.parameters()))
    threads = current_plan().for_model(_LARGEST_MODEL)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def thread_facts() -> dict[str, int]:
    """The threads and processes the job runs with, reported with its metrics: system/threads (torch's count
    in this process), system/processes (of the launch on this machine), system/cpus (its CPU budget)."""
    from trainer.threads import current_plan

    plan = current_plan()
    return {"system/threads": torch.get_num_threads(), "system/processes": plan.processes, "system/cpus": plan.cpus}


def report_phases(phases, step: int, system: dict[str, int] | None = None) -> dict[str, float]:
    """Report where the job's time went (trainer.timing: time/<phase>_s) and the threads and processes it ran
    with (system/*) as one metrics event; returns them for the job's final metrics."""
    from trainer import progress

    values = phases.metrics() | (system or {})
    progress.metrics(step, values)
    return values


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


def save_model(model, out_dir: Path, *, merge: bool = False, save=None, main: bool = True) -> None:
    """Write the model: a LoRA-wrapped model as its adapter (base_model_name_or_path names the base checkpoint),
    or merged into a full checkpoint when merge is set; anything else with save_pretrained."""
    peft_model = hasattr(model, "peft_config") and hasattr(model, "merge_and_unload")
    if peft_model and merge:
        if main:
            model.merge_and_unload().save_pretrained(str(out_dir))
        return
    if save is not None:
        save(str(out_dir))
    elif main:
        model.save_pretrained(str(out_dir))


def save_trained(
    trainer, tokenizer, out_dir: str | Path, scratch_dir: str | Path | None = None, *, merge: bool = False
) -> None:
    """Save a Trainer's model + tokenizer into out_dir as a clean save_pretrained directory.

    Drops training_args.bin (a pickle nobody needs to load) and the trainer's scratch dir. Safe under accelerate:
    every rank calls it (save_model gathers), only the main process writes.
    """
    import shutil

    out_dir = Path(out_dir)
    save_model(trainer.model, out_dir, merge=merge, save=trainer.save_model, main=trainer.accelerator.is_main_process)
    if trainer.accelerator.is_main_process:
        tokenizer.save_pretrained(str(out_dir))
        (out_dir / "training_args.bin").unlink(missing_ok=True)
        if scratch_dir is not None:
            shutil.rmtree(scratch_dir, ignore_errors=True)


def tokenize_splits(encode, train_rows: list[dict], eval_rows: list[dict], max_length: int | None, unit: str,
                    phases) -> tuple[list[dict], list[dict], Fit]:
    """The training and held-out rows encoded by `encode(rows) -> (encoded, Fit)`, what fit reported in `unit`
    ("pairs", "rows"); refused when no training row fits max_length."""
    with phases("tokenize"):
        train_encoded, fit = encode(train_rows)
        eval_encoded, _ = encode(eval_rows)
    report_fit(fit, unit)
    if not train_encoded:
        raise ValueError(f"every training {unit[:-1]} has a completion longer than max_length ({max_length}) on its own")
    return train_encoded, eval_encoded, fit


def train_pretokenized(
    trainer_class, policy, tokenizer, config, train_encoded: list[dict], eval_encoded: list[dict], args: TrainArgs,
    scratch: Path, phases,
):
    """Train a policy with `trainer_class` (a TRL preference trainer with trainer.encoding.LengthGroupedBatches)
    on rows tokenized by trainer.encoding, its progress reported from 10% to 90%. Returns the trainer, its
    progress callback (the last logged metrics), TRL's train result and the held-out dataset (None without
    held-out rows)."""
    callback = progress.JsonLinesCallback(progress_start=0.1, progress_end=0.9)
    progress.progress(
        0.02, "preparing data" + (" and reference log-probs" if args.precompute_ref_log_probs else "")
    )
    with phases("prepare"):
        train_dataset = dataset_for_trainer(train_encoded, scratch / "train", config)
        eval_dataset = dataset_for_trainer(eval_encoded, scratch / "eval", config) if eval_encoded else None
        trainer = trainer_class(model=policy, args=config, train_dataset=train_dataset, eval_dataset=eval_dataset,
                                processing_class=tokenizer, callbacks=[callback],
                                peft_config=lora_config(args, "CAUSAL_LM"))  # fmt: skip
    trainer.row_lengths = [padded_length(row) for row in train_encoded]
    with phases("train"):
        result = trainer.train()
    return trainer, callback, result, eval_dataset


def trained_metrics(callback, result, fit: Fit, unit: str, last: tuple[str, ...], extra: dict | None = None) -> dict:
    """What a TRL training run reports: its loss, what fit in `unit` (pairs, pairs_used, ...), `extra`, its steps
    and runtime, and the last logged value of each metric in `last` that was logged."""
    metrics: dict[str, Any] = {
        "loss/total": callback.last("loss/total", result.training_loss),
        "train/loss_mean": result.training_loss,
        **fit.metrics(unit),
        **(extra or {}),
        "train/steps": result.global_step,
        "train/runtime_s": result.metrics.get("train_runtime"),
    }
    for name in last:
        if (value := callback.last(name)) is not None:
            metrics[name] = value
    return metrics


def held_out_metrics(trainer, eval_dataset, eval_split: str | None, unit: str, names: tuple[str, ...], phases) -> dict:
    """The trainer's metrics in `names` on the held-out split and its size in `unit` (none without held-out rows);
    evaluating also emits them as a metrics event (the progress callback)."""
    if eval_dataset is None:
        return {}
    progress.progress(0.92, f"evaluating on the {eval_split} split")
    with phases("evaluate"):
        held_out = progress.map_metrics(trainer.evaluate())
    return {name: held_out[name] for name in names if name in held_out} | {f"eval/{unit}": len(eval_dataset)}


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
        "data_seed": seed,  # the shuffle of the rows depends on the seed alone, not on how many processes run
        "save_strategy": "no",
        "eval_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "dataloader_pin_memory": on_gpu,
        # Several processes without CUDA (torchrun / accelerate on CPU) only form a gloo group with use_cpu.
        "use_cpu": not on_gpu and int(os.environ.get("WORLD_SIZE", "1")) > 1,
    }
