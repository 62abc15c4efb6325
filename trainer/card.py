"""The Hugging Face model card (README.md) every trained model directory carries, built from its manifest.

    model_card(manifest) -> str     YAML front matter (library, base model, tags) + base, lineage, data,
                                    hyperparameters, metrics, template and special tokens

The directory can then be pushed to a hub as it is. Torch-free: it reads the manifest dict alone.
"""

from __future__ import annotations

import json
from typing import Any

from trainer.audit import audit_lines
from trainer.encoding import PLAIN_CHAT_TEMPLATE, PLAIN_TEMPLATE_NAME
from trainer.params import KIND_INFO


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value
    return text.replace("|", "\\|").replace("\n", " ")


def _table(values: dict[str, Any], header: tuple[str, str]) -> list[str]:
    lines = [f"| {header[0]} | {header[1]} |", "| --- | --- |"]
    lines += [f"| `{key}` | {_value(value)} |" for key, value in values.items()]
    return lines


def model_card(manifest: dict[str, Any]) -> str:
    job_kind = manifest.get("job_kind") or "model"
    adapter = bool(manifest.get("adapter"))
    base = manifest.get("base_model") or "(none)"
    tokenizer = manifest.get("tokenizer") or {}
    tags = ["rankforge", "rlhf", job_kind, "reward-model" if manifest.get("kind") == "reward" else "policy"]
    if adapter:
        tags.append("lora")
    front = ["---", f"library_name: {'peft' if adapter else 'transformers'}", f"base_model: {json.dumps(str(base))}",
             "tags:", *[f"- {tag}" for tag in tags], "---", ""]  # fmt: skip
    title = KIND_INFO[job_kind].title if job_kind in KIND_INFO else job_kind
    lines = [f"# Rankforge {title}{' (LoRA adapter)' if adapter else ''}", ""]
    lines += [
        f"Trained by Rankforge's `{job_kind}` job"
        + (f" {manifest['job_id']}" if manifest.get("job_id") is not None else "")
        + f" on {manifest.get('created_at', '')} (trainer {manifest.get('trainer_version', '')}).",
        "",
        "## Base and lineage",
        "",
        f"- base model: `{base}`"
        + (
            " (this directory holds a LoRA adapter on it; load the base, then the "
            "adapter with `peft.PeftModel.from_pretrained`)"
            if adapter
            else ""
        ),  # fmt: skip
    ]
    if manifest.get("merged_adapter"):
        lines.append("- a LoRA adapter merged into the base weights (a full checkpoint)")
    if manifest.get("reward_model"):
        lines.append(f"- reward model: `{manifest['reward_model']}`")
    if manifest.get("dataset_path"):
        lines.append(
            f"- dataset snapshot: `{manifest['dataset_path']}`, sha256 `{manifest.get('dataset_sha256')}`"
        )
    if manifest.get("prompts_path"):
        lines.append(f"- prompts: `{manifest['prompts_path']}`")
    lines.append(f"- seed: {manifest.get('seed')}")
    lines += ["", "## Template and special tokens", ""]
    template = tokenizer.get("chat_template", "own")
    if template == PLAIN_TEMPLATE_NAME:
        lines += [f"The base tokenizer has no chat template; message lists were rendered with `{PLAIN_TEMPLATE_NAME}`"
                  " (saved with this tokenizer, so scoring and generation use it too):", "", "```jinja",
                  PLAIN_CHAT_TEMPLATE, "```"]  # fmt: skip
    else:
        lines.append("Message lists were rendered with the base tokenizer's own chat template.")
    for token in ("eos", "pad"):
        if tokenizer.get(f"{token}_token") is not None:
            lines.append(
                f"- {token.upper()}: `{tokenizer[f'{token}_token']}` ({tokenizer.get(f'{token}_source')})"
            )
    if tokenizer.get("added_tokens"):
        lines.append(
            f"- tokens added to the vocabulary: {', '.join(f'`{t}`' for t in tokenizer['added_tokens'])}"
        )
    lines += ["", "## Hyperparameters", "", *_table(manifest.get("params") or {}, ("param", "value"))]
    metrics = {
        k: v for k, v in (manifest.get("metrics") or {}).items() if isinstance(v, (int, float, str, bool))
    }
    lines += ["", "## Metrics", "", *_table(metrics, ("metric", "value")), ""]
    if manifest.get("audit"):
        lines += ["## Reward-model audit", "", *audit_lines(manifest["audit"]), ""]
    return "\n".join(front + lines)
