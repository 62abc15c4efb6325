"""Snapshot directories: determinism, atomic publishing, tamper detection, safe serving, memory, TRL loading."""

import hashlib
import json
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from app.datasets.formats import JudgedComparison, JudgmentVote, export_rows
from app.datasets.snapshot_files import (
    MANIFEST_NAME,
    SnapshotFileNotFoundError,
    SnapshotTamperedError,
    SnapshotWriter,
    UnsafeSnapshotPathError,
    safe_snapshot_file,
    verify_snapshot,
)
from app.imports.parsers import parse_import
from tests.conftest import SHARED_DATA

PROJECT_ROOT = Path(__file__).resolve().parents[2]
HH_FILE = SHARED_DATA / "hh_rlhf_harmless_test_2000.jsonl"


def pair_row(i, model="m1"):
    return {
        "prompt": [{"role": "user", "content": f"question {i} é ✓"}],
        "chosen": [{"role": "assistant", "content": f"good answer {i}"}],
        "rejected": [{"role": "assistant", "content": f"bad answer {i}"}],
        "comparison_id": i,
        "prompt_id": i // 2,
        "chosen_id": 2 * i,
        "rejected_id": 2 * i + 1,
        "chosen_model": model,
        "rejected_model": None,
        "margin": 1.0,
        "agreement": 2 / 3,
        "n_votes": 3,
        "weight": 0.75,
    }


def write_snapshot(final_dir, rows, **writer_options):
    with SnapshotWriter(final_dir, **writer_options) as writer:
        for i, row in enumerate(rows):
            writer.write("test" if i % 5 == 0 else "train", row)
        return writer.finish({"id": 1, "format": "pairs", "spec": {"conversational": True}})


def file_bytes(directory):
    return {
        p.relative_to(directory).as_posix(): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


# ----------------------------------------------------------------------------------------------------
# determinism and content


def test_same_rows_give_byte_identical_files_and_hash(tmp_path):
    rows = [pair_row(i) for i in range(250)]
    first = write_snapshot(tmp_path / "one", rows, parquet_batch_rows=64, hf_datasets=True)
    second = write_snapshot(tmp_path / "two", rows, parquet_batch_rows=64, hf_datasets=True)

    assert first == second
    assert file_bytes(tmp_path / "one") == file_bytes(tmp_path / "two")
    assert {"train.jsonl", "test.jsonl", "train.parquet", "test.parquet", "hf/train/state.json"} <= set(
        first["files"]
    )
    assert first["rows"] == {"train": 200, "test": 50}

    with_extra_row = write_snapshot(tmp_path / "three", [*rows, pair_row(250)], parquet_batch_rows=64)
    assert with_extra_row["sha256"] != first["sha256"]


def test_jsonl_is_canonical_and_parquet_holds_the_same_rows(tmp_path):
    # The model column is null in the whole first Parquet batch and set later: the schema must cover it.
    rows = [pair_row(i, model=None if i < 40 else "m2") for i in range(100)]
    manifest = write_snapshot(tmp_path / "snap", rows, parquet_batch_rows=16)
    directory = tmp_path / "snap"

    lines = (directory / "train.jsonl").read_bytes().splitlines()
    train_rows = [row for i, row in enumerate(rows) if i % 5]
    assert lines == [
        json.dumps(row, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()
        for row in train_rows
    ]
    assert "é ✓" in lines[0].decode("utf-8")
    assert pq.read_table(directory / "train.parquet").to_pylist() == [json.loads(line) for line in lines]
    assert pq.read_schema(directory / "train.parquet") == pq.read_schema(directory / "test.parquet")
    for name, entry in manifest["files"].items():
        data = (directory / name).read_bytes()
        assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    on_disk = json.loads((directory / MANIFEST_NAME).read_text())
    assert on_disk == manifest
    assert (on_disk["id"], on_disk["format"], on_disk["spec"]) == (1, "pairs", {"conversational": True})


def test_parquet_only_snapshot_lists_no_jsonl(tmp_path):
    manifest = write_snapshot(tmp_path / "snap", [pair_row(i) for i in range(10)], formats=("parquet",))
    assert sorted(manifest["files"]) == ["test.parquet", "train.parquet"]
    assert sorted(p.name for p in (tmp_path / "snap").iterdir()) == [
        MANIFEST_NAME,
        "test.parquet",
        "train.parquet",
    ]


def test_empty_splits_still_get_files(tmp_path):
    manifest = write_snapshot(tmp_path / "snap", [])
    assert manifest["rows"] == {"train": 0, "test": 0}
    assert (tmp_path / "snap" / "test.jsonl").read_bytes() == b""
    assert pq.read_table(tmp_path / "snap" / "test.parquet").num_rows == 0


# ----------------------------------------------------------------------------------------------------
# atomic publishing


def test_an_exception_mid_write_leaves_nothing_behind(tmp_path):
    def rows_then_crash():
        for i in range(1000):
            if i == 700:
                raise RuntimeError("database went away")
            yield pair_row(i)

    with pytest.raises(RuntimeError, match="database went away"):
        write_snapshot(tmp_path / "snap", rows_then_crash())
    assert list(tmp_path.iterdir()) == []  # neither the final dir nor a half-written temp dir


def test_a_failure_while_finishing_leaves_nothing_behind(tmp_path):
    rows = [pair_row(1), {**pair_row(2), "prompt": "a string where other rows have messages"}]
    with pytest.raises(ValueError, match="disagree on a column's type"):
        write_snapshot(tmp_path / "snap", rows)
    assert list(tmp_path.iterdir()) == []


def test_the_writer_refuses_to_replace_an_existing_snapshot(tmp_path):
    write_snapshot(tmp_path / "snap", [pair_row(1)])
    with pytest.raises(FileExistsError):
        SnapshotWriter(tmp_path / "snap")


def test_manifest_keys_are_protected_and_a_finished_writer_is_closed(tmp_path):
    writer = SnapshotWriter(tmp_path / "snap")
    writer.write("train", pair_row(1))
    with pytest.raises(ValueError, match="sha256"):
        writer.finish({"sha256": "mine"})
    assert not (tmp_path / "snap").exists()
    assert writer.finish({"format": "pairs"})["rows"] == {"train": 1, "test": 0}  # nothing was lost
    with pytest.raises(RuntimeError, match="finished"):
        writer.write("train", pair_row(2))
    with pytest.raises(ValueError, match="unknown split"), SnapshotWriter(tmp_path / "other") as other:
        other.write("validation", pair_row(3))


# ----------------------------------------------------------------------------------------------------
# verification and serving


@pytest.fixture
def snapshot(tmp_path):
    write_snapshot(tmp_path / "snap", [pair_row(i) for i in range(20)])
    return tmp_path / "snap"


def test_verify_accepts_an_untouched_snapshot(snapshot):
    assert verify_snapshot(snapshot)["rows"] == {"train": 16, "test": 4}


def test_verify_names_a_changed_file(snapshot):
    path = snapshot / "train.parquet"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different content
    path.write_bytes(bytes(data))
    with pytest.raises(SnapshotTamperedError, match="train.parquet") as caught:
        verify_snapshot(snapshot)
    assert caught.value.name == "train.parquet"


def test_verify_names_a_missing_or_added_file(snapshot):
    (snapshot / "extra.jsonl").write_text("{}\n")
    with pytest.raises(SnapshotTamperedError, match="extra.jsonl"):
        verify_snapshot(snapshot)
    (snapshot / "extra.jsonl").unlink()
    (snapshot / "test.jsonl").unlink()
    with pytest.raises(SnapshotTamperedError, match="test.jsonl"):
        verify_snapshot(snapshot)


def test_verify_catches_an_edited_manifest(snapshot):
    manifest = json.loads((snapshot / MANIFEST_NAME).read_text())
    manifest["files"]["train.jsonl"]["sha256"] = "0" * 64
    (snapshot / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(SnapshotTamperedError, match="train.jsonl"):
        verify_snapshot(snapshot)
    (snapshot / MANIFEST_NAME).unlink()
    with pytest.raises(SnapshotTamperedError, match=MANIFEST_NAME):
        verify_snapshot(snapshot)


def test_safe_snapshot_file_serves_listed_files_only(snapshot, tmp_path):
    assert safe_snapshot_file(snapshot, "train.jsonl") == (snapshot / "train.jsonl").resolve()
    assert safe_snapshot_file(snapshot, MANIFEST_NAME) == (snapshot / MANIFEST_NAME).resolve()
    (tmp_path / "secret.txt").write_text("secret")
    for name in [
        "../secret.txt",
        "/etc/passwd",
        "train.jsonl/../../secret.txt",
        "./train.jsonl",
        "a\\b",
        "",
        "x\0y",
    ]:
        with pytest.raises(UnsafeSnapshotPathError):
            safe_snapshot_file(snapshot, name)
    (snapshot / "unlisted.txt").write_text("not in the manifest")
    with pytest.raises(SnapshotFileNotFoundError):
        safe_snapshot_file(snapshot, "unlisted.txt")


def test_safe_snapshot_file_refuses_a_listed_name_that_became_a_symlink_out(snapshot, tmp_path):
    (tmp_path / "secret.txt").write_text("secret")
    (snapshot / "test.jsonl").unlink()
    (snapshot / "test.jsonl").symlink_to(tmp_path / "secret.txt")
    with pytest.raises(UnsafeSnapshotPathError):
        safe_snapshot_file(snapshot, "test.jsonl")


# ----------------------------------------------------------------------------------------------------
# memory: rows stream through, they are not held


def test_writing_200k_rows_keeps_python_memory_flat(tmp_path):
    def rows():
        for i in range(200_000):
            yield {"prompt": f"question {i}", "chosen": f"yes {i}", "rejected": f"no {i}", "comparison_id": i}

    # pyarrow allocates ~30 MB of Python objects once, on its first Parquet write: do that before measuring.
    write_snapshot(tmp_path / "warm-up", [pair_row(1)])
    tracemalloc.start()
    try:
        manifest = write_snapshot(tmp_path / "big", rows())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert manifest["rows"] == {"train": 160_000, "test": 40_000}
    jsonl_bytes = manifest["files"]["train.jsonl"]["bytes"] + manifest["files"]["test.jsonl"]["bytes"]
    # Holding the rows would take far more than their JSON text; the writer peaks at a batch or so.
    assert jsonl_bytes > 10_000_000
    assert peak < jsonl_bytes / 4


# ----------------------------------------------------------------------------------------------------
# consumers: datasets / TRL


def test_pairs_load_with_datasets_load_dataset(tmp_path):
    datasets = pytest.importorskip("datasets")
    comparisons = [
        JudgedComparison(
            comparison_id=i,
            prompt_id=i,
            prompt=f"prompt {i}",
            completions={10 * i: ("first", "m1"), 10 * i + 1: ("second", None), 10 * i + 2: ("third", "m3")},
            judgments=[
                JudgmentVote(1, [[10 * i], [10 * i + 1, 10 * i + 2]]),
                JudgmentVote(2, [[10 * i + 2], [10 * i]]),
            ],
        )
        for i in range(60)
    ]
    for conversational in (False, True):
        final_dir = tmp_path / f"pairs-{conversational}"
        with SnapshotWriter(final_dir) as writer:
            for split, row in export_rows(
                comparisons, "pairs", conversational=conversational, test_fraction=0.25
            ):
                writer.write(split, row)
            manifest = writer.finish({"format": "pairs"})
        loaded = datasets.load_dataset(
            "json",
            data_files={split: str(final_dir / f"{split}.jsonl") for split in ("train", "test")},
            cache_dir=str(tmp_path / "hf-cache"),
        )
        assert {split: loaded[split].num_rows for split in loaded} == manifest["rows"]
        assert {
            "prompt",
            "chosen",
            "rejected",
            "comparison_id",
            "margin",
            "agreement",
            "n_votes",
            "weight",
        } <= set(loaded["train"].column_names)
        row = loaded["train"][0]
        if conversational:
            assert row["prompt"][0]["role"] == "user"
            assert row["chosen"][0]["role"] == "assistant"
        else:
            assert isinstance(row["prompt"], str) and isinstance(row["chosen"], str)
        from_parquet = datasets.load_dataset(
            "parquet", data_files=str(final_dir / "train.parquet"), cache_dir=str(tmp_path / "hf-cache")
        )["train"]
        assert from_parquet.to_list() == loaded["train"].to_list()


def test_trl_recognises_the_row_shapes(tmp_path):
    data_utils = pytest.importorskip("trl.data_utils")
    comparison = JudgedComparison(
        1, 1, "Hi", {1: ("hello", "m"), 2: ("go away", "m")}, judgments=[JudgmentVote(1, [[1], [2]])]
    )
    standard = next(export_rows([comparison], "pairs", conversational=False))[1]
    conversational = next(export_rows([comparison], "pairs", conversational=True))[1]
    kto = next(export_rows([comparison], "kto", conversational=True))[1]
    assert not data_utils.is_conversational(standard)
    assert data_utils.is_conversational(conversational)
    assert data_utils.is_conversational(kto)
    assert data_utils.maybe_extract_prompt(conversational)["prompt"] == conversational["prompt"]


def test_hf_datasets_directory_loads_back(tmp_path):
    datasets = pytest.importorskip("datasets")
    manifest = write_snapshot(tmp_path / "snap", [pair_row(i) for i in range(30)], hf_datasets=True)
    loaded = datasets.load_from_disk(str(tmp_path / "snap" / "hf"))
    assert {split: loaded[split].num_rows for split in loaded} == manifest["rows"]
    assert loaded["train"][0]["chosen"] == [{"content": "good answer 1", "role": "assistant"}]
    verify_snapshot(tmp_path / "snap")


def test_app_modules_never_import_torch(tmp_path):
    """The web process must not pull torch in, even when it builds an hf/ directory."""
    script = f"""
import sys
from app.imports import parsers
from app.datasets import formats, snapshot_files
writer = snapshot_files.SnapshotWriter({str(tmp_path / "snap")!r}, hf_datasets=True)
writer.write("train", {{"prompt": "p", "chosen": "a", "rejected": "b"}})
writer.finish({{}})
assert "torch" not in sys.modules, "torch was imported"
"""
    subprocess.run([sys.executable, "-c", script], cwd=PROJECT_ROOT, check=True, timeout=120)


@pytest.mark.skipif(not HH_FILE.is_file(), reason=f"reference data not found at {HH_FILE}")
def test_real_hh_import_exports_to_a_verified_snapshot(tmp_path):
    records = parse_import(HH_FILE.read_bytes(), "hh-rlhf")
    comparisons = (
        JudgedComparison(
            comparison_id=record.line,
            prompt_id=record.line,
            prompt=record.prompt,
            completions={(record.line, i): (c["text"], c["model"]) for i, c in enumerate(record.completions)},
            judgments=[
                JudgmentVote(
                    "hh", [[(record.line, i) for i in group] for group in record.ranking], source="imported"
                )
            ],
        )
        for record in records
    )
    with SnapshotWriter(tmp_path / "hh") as writer:
        for split, row in export_rows(comparisons, "pairs", conversational=True, test_fraction=0.1, seed=7):
            writer.write(split, row)
        manifest = writer.finish({"format": "pairs"})
    assert sum(manifest["rows"].values()) == 2000
    assert 100 < manifest["rows"]["test"] < 300
    assert verify_snapshot(tmp_path / "hh") == manifest
