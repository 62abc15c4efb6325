"""Checks of accelerate config files (imports accelerate, and deepspeed when installed): tests and `rankforge`
users validate the shipped configs (trainer/accelerate/) and their own with validate_accelerate_config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

_DISTRIBUTED_TYPES = {"NO", "MULTI_CPU", "MULTI_GPU", "MULTI_XPU", "MULTI_NPU", "MULTI_MLU", "MULTI_SDAA",
                      "MULTI_MUSA", "MULTI_HPU", "FSDP", "DEEPSPEED", "XLA", "MEGATRON_LM"}  # fmt: skip


def validate_accelerate_config(path: str | Path) -> dict[str, Any]:
    """Parse a config file with accelerate's own loader and check what a launch needs; returns the raw dict."""
    import yaml

    path = Path(path)
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: an accelerate config is a YAML mapping")
    distributed = raw.get("distributed_type")
    if distributed not in _DISTRIBUTED_TYPES:
        raise ValueError(f"{path}: unknown distributed_type {distributed!r}")
    if not isinstance(raw.get("num_processes"), int) or raw["num_processes"] < 1:
        raise ValueError(f"{path}: num_processes must be a positive integer")
    from accelerate.commands.config.config_args import ClusterConfig

    ClusterConfig.from_yaml_file(str(path))  # accelerate's own parsing and enum checks
    if distributed == "DEEPSPEED":
        _check_deepspeed(path, raw.get("deepspeed_config") or {})
    if distributed == "FSDP":
        fsdp = raw.get("fsdp_config") or {}
        if fsdp.get("fsdp_version", 1) not in (1, 2):
            raise ValueError(f"{path}: fsdp_version must be 1 or 2")
    return raw


def _check_deepspeed(path: Path, config: dict[str, Any]) -> None:
    """ZeRO settings checked without deepspeed (an optional extra); with it installed, its own config class too."""
    stage = config.get("zero_stage")
    if stage not in (0, 1, 2, 3):
        raise ValueError(f"{path}: deepspeed_config.zero_stage must be 0, 1, 2 or 3")
    for key in ("offload_optimizer_device", "offload_param_device"):
        if config.get(key, "none") not in ("none", "cpu", "nvme"):
            raise ValueError(f"{path}: deepspeed_config.{key} must be none, cpu or nvme")
    if config.get("zero3_init_flag") and stage != 3:
        raise ValueError(f"{path}: zero3_init_flag needs zero_stage 3")
    try:
        from deepspeed.runtime.zero.config import DeepSpeedZeroConfig
    except ImportError:
        return
    DeepSpeedZeroConfig(stage=stage)
