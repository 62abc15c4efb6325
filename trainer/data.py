"""Reading dataset snapshots and prompt files, and turning rows into model text.

A snapshot directory (written by the app) holds manifest.json and one file per split, train.jsonl / test.jsonl
(or .parquet). Rows follow TRL's dataset formats: pairs {prompt, chosen, rejected}, unpaired
{prompt, completion, label}, each either standard (strings) or conversational (lists of {role, content}),
plus metadata columns (comparison_id, prompt_id, margin, weight, ...).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.encoding import encode_sequence  # noqa: F401  (the one encoding; re-exported for callers)
from trainer.spec import JobSpec

if TYPE_CHECKING:  # HF datasets costs a second of import; the jobs that only read prompts never need it
    from datasets import Dataset


def read_manifest(dataset_path: str | Path) -> dict[str, Any]:
    """The snapshot's manifest.json, with a clear error when the snapshot is missing or broken."""
    if dataset_path is None:
        raise FileNotFoundError("dataset snapshot not given: the job spec needs dataset_path")
    root = Path(dataset_path)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset snapshot not found: {root} is not a directory")
    manifest_path = root / "manifest.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"dataset snapshot {root} has no manifest.json")
    try:
        return json.loads(manifest_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"dataset snapshot {root}: manifest.json is not valid JSON ({error})") from error


def read_rows(dataset_path: str | Path, split: str) -> list[dict[str, Any]]:
    """The rows of one split as dicts ({split}.jsonl preferred, else {split}.parquet)."""
    root = Path(dataset_path)
    jsonl, parquet = root / f"{split}.jsonl", root / f"{split}.parquet"
    if jsonl.is_file():
        rows = []
        for number, line in enumerate(jsonl.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(f"{jsonl} line {number} is not valid JSON ({error})") from error
        return rows
    if parquet.is_file():
        import pyarrow.parquet as pq

        return pq.read_table(parquet).to_pylist()
    raise FileNotFoundError(f"dataset snapshot {root} has no {split} split ({jsonl.name} or {parquet.name})")


def read_snapshot(dataset_path: str | Path, split: str) -> Dataset:
    """One split of a snapshot as a datasets.Dataset (checks the manifest first)."""
    read_manifest(dataset_path)
    rows = read_rows(dataset_path, split)
    if not rows:
        raise ValueError(f"dataset snapshot {dataset_path}: the {split} split is empty")
    from datasets import Dataset

    return Dataset.from_list(rows)


def read_training_rows(dataset_path: str | Path) -> list[dict[str, Any]]:
    """The train split's rows as plain dicts (no Arrow round trip), or a clear error when there are none."""
    read_manifest(dataset_path)
    rows = read_rows(dataset_path, "train")
    if not rows:
        raise ValueError(f"dataset snapshot {dataset_path}: the train split is empty")
    return rows


def snapshot_format(dataset_path: str | Path) -> str:
    """ "pairs", "kto", "rankings" or "sft" from the manifest (guessed from the train rows when it says nothing)."""
    declared = read_manifest(dataset_path).get("format")
    if declared:
        return declared
    first = read_rows(dataset_path, "train")[:1]
    keys = set(first[0]) if first else set()
    if {"chosen", "rejected"} <= keys:
        return "pairs"
    if {"completion", "label"} <= keys:
        return "kto"
    if "completions" in keys:
        return "rankings"
    return "sft"


def require_format(dataset_path: str | Path, kind: str, allowed: tuple[str, ...]) -> str:
    """The snapshot format, or a clear error when a job kind cannot train on it."""
    found = snapshot_format(dataset_path)
    if found not in allowed:
        raise ValueError(
            f"a {kind} job needs a {' or '.join(allowed)} snapshot; {dataset_path} is format {found!r}"
        )
    return found


def has_split(dataset_path: str | Path, split: str) -> bool:
    """True when the snapshot holds a non-empty file for this split."""
    root = Path(dataset_path)
    return any((root / f"{split}{suffix}").is_file() for suffix in (".jsonl", ".parquet")) and bool(
        read_rows(root, split)
    )


def is_conversational(value: Any) -> bool:
    """True for a list of {role, content} messages."""
    return isinstance(value, list) and all(isinstance(m, dict) and "role" in m for m in value) and bool(value)


def to_prompt_text(prompt: str | list[dict[str, str]], tokenizer, tools: list[dict] | None = None) -> str:
    """Model input for a prompt: message lists go through the chat template with the assistant turn opened; the
    tools the conversation offers (OpenAI's [{"type": "function", "function": {...}}]) go to the template too, which
    shows them to the model as it was trained to see them (a template that knows no tools ignores them)."""
    if is_conversational(prompt):
        if tools:
            return tokenizer.apply_chat_template(prompt, tools=tools, add_generation_prompt=True, tokenize=False)
        return tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    if not isinstance(prompt, str):
        raise ValueError(f"a prompt must be a string or a list of messages, got {type(prompt).__name__}")
    return prompt


def as_messages(completion: str | list[dict[str, str]]) -> list[dict[str, str]]:
    """A completion as a one-message assistant turn."""
    if is_conversational(completion):
        return completion
    return [{"role": "assistant", "content": completion}]


def read_prompts_file(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a prompts JSONL file; each needs prompt_id and prompt (other keys, e.g. completions, are kept)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompts file not found: {path}")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} line {number} is not valid JSON ({error})") from error
        if "prompt_id" not in row or "prompt" not in row:
            raise ValueError(f"{path} line {number}: each line needs prompt_id and prompt")
        rows.append(row)
    return rows


def read_prompts(spec: JobSpec) -> list[dict[str, Any]]:
    """[{prompt_id, prompt, tools?}] from spec.prompts_path, else the unique prompts of the snapshot's train split."""
    if spec.prompts_path:
        return [
            {"prompt_id": r["prompt_id"], "prompt": r["prompt"]} | ({"tools": r["tools"]} if r.get("tools") else {})
            for r in read_prompts_file(spec.prompts_path)
        ]
    if not spec.dataset_path:
        raise ValueError("the job spec needs prompts_path or dataset_path to know which prompts to use")
    read_manifest(spec.dataset_path)
    prompts: list[dict[str, Any]] = []
    seen: set[str] = set()
    for index, row in enumerate(read_rows(spec.dataset_path, "train")):
        key = json.dumps(row["prompt"], sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        prompts.append({"prompt_id": row.get("prompt_id", index), "prompt": row["prompt"]})
    return prompts


def unpair(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pairs rows -> unpaired KTO rows: chosen is desirable (label true), rejected undesirable."""
    unpaired = []
    for row in rows:
        meta = {k: row[k] for k in ("comparison_id", "prompt_id", "weight") if k in row}
        unpaired.append({"prompt": row["prompt"], "completion": row["chosen"], "label": True, **meta})
        unpaired.append({"prompt": row["prompt"], "completion": row["rejected"], "label": False, **meta})
    return unpaired


def shuffled(rows: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """A seeded shuffle (a new list): sequential samplers then see mixed labels in every batch."""
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    return rows


def dataset_for_trainer(rows: list[dict[str, Any]], directory: str | Path, training_args) -> Dataset:
    """rows as a Dataset backed by files under directory that every process of a launch shares.

    A single process could use an in-memory Dataset, but under torchrun/accelerate TRL caches its maps (e.g.
    precomputed reference log-probs) next to the dataset's files, written by the main process and read by
    the others: in-memory datasets would put them in per-process temp dirs. The main process writes first.
    """
    from datasets import Dataset

    directory = Path(directory)
    with training_args.main_process_first(local=False, desc=f"writing {directory.name}"):
        if training_args.process_index == 0:
            Dataset.from_list(rows).save_to_disk(str(directory))
        return Dataset.load_from_disk(str(directory))
