"""Overhead of the job system on a DPO run: the same DPO run through Rankforge (API service -> queue -> worker ->
`python -m trainer.run` child -> model registry) and as a bare TRL script, on the same snapshot and tiny model.

    .venv/bin/python bench/train_overhead.py [--pairs 256] [--epochs 2] [--repeats 2]

Prints both wall times, each side's process start-up (interpreter + imports: for the bare script measured inside
it; for the job system a child importing what `python -m trainer.run` imports for DPO), and the ratio with
start-up excluded (aim: at most 1.10):

    ratio = (job wall - job start-up) / (bare wall - bare start-up)

Both run with OMP_NUM_THREADS=1, the same DPO settings (no held-out evaluation), the same seed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BARE_SCRIPT = r"""
import json, sys, time
started = time.perf_counter()
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DPOConfig, DPOTrainer
imported = time.perf_counter()
cfg = json.loads(sys.argv[1])
rows = [json.loads(line) for line in open(cfg["train_file"], encoding="utf-8")]
dataset = Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows])
tokenizer = AutoTokenizer.from_pretrained(cfg["model"])
model = AutoModelForCausalLM.from_pretrained(cfg["model"])
p = cfg["params"]
config = DPOConfig(output_dir=cfg["out"] + "/_scratch", learning_rate=p["learning_rate"],
                   num_train_epochs=p["num_train_epochs"], per_device_train_batch_size=p["per_device_train_batch_size"],
                   max_length=p["max_length"], logging_steps=p["logging_steps"], beta=p["beta"],
                   precompute_ref_log_probs=True, save_strategy="no", eval_strategy="no", report_to="none",
                   disable_tqdm=True, seed=0, bf16=False, activation_checkpointing=False, gradient_checkpointing=None,
                   dataloader_num_workers=0, dataloader_pin_memory=False)
trainer = DPOTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer)
result = trainer.train()
trainer.model.save_pretrained(cfg["out"])
tokenizer.save_pretrained(cfg["out"])
done = time.perf_counter()
print(json.dumps({"import_s": imported - started, "train_s": done - imported, "loss": result.training_loss}))
"""


def setup(root: Path, pairs: int) -> dict:
    """A SQLite database, a project with `pairs` judged comparisons, a tiny policy, a ready pairs snapshot."""
    os.environ["RANKFORGE_DATABASE_URL"] = f"sqlite:///{root / 'bench.db'}"
    os.environ["RANKFORGE_DATA_DIR"] = str(root / "data")
    from app.config import get_settings

    get_settings.cache_clear()
    from app.datasets.service import request_snapshot
    from app.db import session_scope
    from app.imports.parsers import parse_import
    from app.imports.service import import_records
    from app.migrate import upgrade
    from app.projects.schemas import ProjectCreate
    from app.projects.service import create_project
    from app.registry.service import register_version
    from app.worker import run_one
    from trainer.tiny import build_tiny_policy, keyword_pairs, keyword_texts, train_tokenizer

    upgrade()
    rows = keyword_pairs(pairs, seed=1)
    lines = [json.dumps({"prompt": r["prompt"].strip(), "external_id": str(i), "ranking": [[0], [1]],
                         "completions": [{"text": r["chosen"]}, {"text": r["rejected"]}]}) for i, r in enumerate(rows)]  # fmt: skip
    tokenizer = train_tokenizer(keyword_texts(rows), vocab_size=512)
    policy = build_tiny_policy(root / "policy", tokenizer, seed=0)
    with session_scope() as db:
        project = create_project(db, ProjectCreate(name="Bench", slug="bench", mode="pairwise"), actor=None)
        import_records(db, project, parse_import(("\n".join(lines) + "\n").encode(), "native"))
        register_version(db, "bench-policy", policy, "policy", project=project)
        snapshot = request_snapshot(db, project, {"format": "pairs", "split": {"test_fraction": 0.0}}, None)
        project_id, snapshot_id = project.id, snapshot.id
    run_one("bench")
    with session_scope() as db:
        from app.models import DatasetSnapshot

        snapshot = db.get(DatasetSnapshot, snapshot_id)
        assert snapshot.status == "ready", snapshot.error
        return {"project_id": project_id, "snapshot_id": snapshot_id, "snapshot_path": snapshot.path,
                "policy": str(policy)}  # fmt: skip


def run_job_system(world: dict, params: dict) -> float:
    from app.db import session_scope
    from app.jobs.service import get_job
    from app.models import Project
    from app.training.service import create_training_job
    from app.worker import run_one

    with session_scope() as db:
        job = create_training_job(db, db.get(Project, world["project_id"]), "dpo", dataset_id=world["snapshot_id"],
                                  params=params)  # fmt: skip
        job_id = job.id
    started = time.perf_counter()
    assert run_one("bench") == job_id
    wall = time.perf_counter() - started
    with session_scope() as db:
        job = get_job(db, job_id)
        assert job.status == "succeeded", job.error
    return wall


def run_bare(world: dict, params: dict, out: Path) -> tuple[float, dict]:
    config = {"train_file": str(Path(world["snapshot_path"]) / "train.jsonl"), "model": world["policy"],
              "out": str(out), "params": params}  # fmt: skip
    env = os.environ | {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    started = time.perf_counter()
    completed = subprocess.run([sys.executable, "-c", BARE_SCRIPT, json.dumps(config)], env=env, capture_output=True,
                               text=True, check=False)  # fmt: skip
    wall = time.perf_counter() - started
    if completed.returncode != 0:
        raise SystemExit(completed.stderr[-3000:])
    return wall, json.loads(completed.stdout.strip().splitlines()[-1])


def trainer_startup() -> float:
    """Wall time of a child that starts Python and imports what the trainer child imports for a DPO job."""
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import trainer.run, trainer.progress, trainer.models, trainer.dpo"],
                   cwd=ROOT, env=env, check=True)  # fmt: skip
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=256)
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    params = {"learning_rate": 5e-4, "num_train_epochs": args.epochs, "per_device_train_batch_size": 8,
              "max_length": 128, "logging_steps": 5, "beta": 0.1, "eval_split": ""}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="rankforge-bench-") as tmp:
        root = Path(tmp)
        world = setup(root, args.pairs)
        job_walls, bare_walls, bare_startups, job_startups = [], [], [], []
        for repeat in range(args.repeats):  # alternate, so drift in machine load hits both alike
            wall, inner = run_bare(world, params, root / f"bare-{repeat}")
            bare_walls.append(wall)
            bare_startups.append(wall - inner["train_s"])
            job_walls.append(run_job_system(world, params))
            job_startups.append(trainer_startup())
    job_startup, bare_startup = statistics.median(job_startups), statistics.median(bare_startups)
    job, bare = statistics.median(job_walls), statistics.median(bare_walls)
    ratio = (job - job_startup) / (bare - bare_startup)
    print(
        f"DPO, {args.pairs} pairs x {args.epochs:g} epochs, tiny Llama, OMP_NUM_THREADS=1, {args.repeats} repeats"
    )
    print(f"  job system wall : {job:7.2f} s   (runs: {', '.join(f'{w:.2f}' for w in job_walls)})")
    print(f"  bare TRL wall   : {bare:7.2f} s   (runs: {', '.join(f'{w:.2f}' for w in bare_walls)})")
    print(f"  job start-up    : {job_startup:7.2f} s   (python + trainer.run/trainer.dpo imports)")
    print(f"  bare start-up   : {bare_startup:7.2f} s   (python + datasets/transformers/trl imports)")
    print(
        f"  job minus start-up  : {job - job_startup:6.2f} s   bare minus start-up: {bare - bare_startup:6.2f} s"
    )
    print(f"  ratio, start-up excluded: {ratio:.3f}   (aim <= 1.10)   with start-up: {job / bare:.3f}")


if __name__ == "__main__":
    main()
