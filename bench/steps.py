"""Process reward model on agent trajectories with a planted bad step, through the product (API, worker, jobs).

Task (trainer.tiny_steps): a user asks for a trip plan to one city; the agent calls 3 to 6 tools with that city as
argument, each answered by a result, then answers. Half the trajectories have one planted bad step: a tool call
at a random position whose argument is another city. Trajectories come in pairs sharing a request (the conversation
importers make the continuations of one history the options of one comparison; each is a trajectory).

The product's default path: import (openai-chat JSONL with tool calls) -> simulated raters label every trajectory's
steps through the step-label API (each step's label right with probability --rater-accuracy, 0.85; --raters of them
per trajectory; a rater's first bad label is their first error) -> a `prm` job on the tiny base model, which takes
its `steps` snapshot itself (the raters' labels aggregated per step: app/datasets/stepwise.py) -> the registered prm version is evaluated on
--held-out fresh trajectories (never imported) against the truth:

    first-error accuracy   the first step scored bad (P(good) <= 0.5), or none, is the planted one, or none
    AUROC                  the minimum step score (prm_outcome min) separates good from bad trajectories

    .venv/bin/python bench/steps.py [--train 400] [--held-out 200] [--raters 3] [--keep DIR]

Prints the figures, the wall time of each phase and the machine load (uptime). The prm job trains on all labelled
trajectories (its snapshot has no test split: a split by prompt would hold whole cities out, see the README). Aims: first-error accuracy >= 0.8, AUROC >= 0.9
(met with --rater-accuracy 1.0, not yet at 0.85: the README's prm section).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RECIPE = {"num_train_epochs": 60, "learning_rate": 1e-3, "warmup_steps": 0.05, "per_device_train_batch_size": 8,
          "bad_step_weight": 1.0, "weight_decay": 2.0}  # fmt: skip
"""The prm job's params: those of the figures in the README's bench table. Weight decay is what makes the tiny
model learn the rule (compare each call's city with the request's) from 400 trajectories: without it (lr 1e-3 or
3e-3, any width or depth tried) it memorises the training rows (train first-error 1.0) and stays at chance on
fresh ones (0.44-0.47, AUROC 0.33-0.47); with 10x the trajectories it generalises without decay (README,
prm section)."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=400, help="trajectories imported and labelled (even)")
    parser.add_argument("--held-out", type=int, default=200, help="fresh trajectories the PRM is evaluated on")
    parser.add_argument("--raters", type=int, default=3, help="simulated raters per trajectory")
    parser.add_argument("--rater-accuracy", type=float, default=0.85, help="share of step labels a rater gets right")
    parser.add_argument("--epochs", type=float, default=RECIPE["num_train_epochs"])
    parser.add_argument("--base", choices=("trajectories", "init-tiny"), default="trajectories",
                        help="the base model: a tiny Llama with a tokenizer trained on the trajectories, or "
                             "`models init-tiny`'s (its tokenizer sees prompts and final answers only)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, default=None, help="keep the database and artifacts here")
    args = parser.parse_args()

    root = args.keep or Path(tempfile.mkdtemp(prefix="rankforge-steps-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    os.environ["RANKFORGE_DATABASE_URL"] = f"sqlite:///{root / 'bench.db'}"
    os.environ["RANKFORGE_DATA_DIR"] = str(root / "data")
    try:
        return run(args, root)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


def trajectories(n: int, rng: random.Random, first_plan: int) -> list[dict]:
    """n trajectories in pairs sharing a request (same city), exactly half of them with a planted bad step."""
    from trainer.tiny_steps import CITIES, trajectory

    flags = [i % 2 == 1 for i in range(n)]
    rng.shuffle(flags)
    out = []
    for pair in range(n // 2):
        city = rng.choice(CITIES)
        for k in range(2):
            out.append(trajectory(rng, flags[2 * pair + k], city=city, plan=first_plan + 2 * pair + k))
    return out


def run(args, root: Path) -> int:
    from fastapi.testclient import TestClient

    from app.auth.service import create_api_token
    from app.db import session_scope
    from app.main import create_app
    from app.migrate import upgrade
    from app.models import Project
    from app.registry.service import init_tiny
    from app.users.service import create_user
    from app.worker import run_one
    from trainer.tiny_steps import openai_line

    started = time.monotonic()
    rng = random.Random(args.seed)
    train = trajectories(args.train, rng, 0)
    held_out = trajectories(args.held_out, rng, 10**6)
    truth = {f"(plan {i})": traj for i, traj in enumerate(train)}

    upgrade(os.environ["RANKFORGE_DATABASE_URL"])
    with session_scope(write=True) as db:
        admin = create_user(db, "bench-admin", "admin", "bench-admin-pass", actor=None)
        headers = {"Authorization": f"Bearer {create_api_token(db, admin, 'bench')}"}
        raters = []
        for i in range(args.raters):
            user = create_user(db, f"sim-{i}", "annotator", "bench-rater-pass", actor=None)
            raters.append({"Authorization": f"Bearer {create_api_token(db, user, 'bench')}"})
    client = TestClient(create_app(), base_url="http://testserver")
    made = client.post("/api/v1/projects", json={"name": "Steps bench", "slug": "steps-bench", "mode": "pairwise",
                                                 "overlap": args.raters}, headers=headers)  # fmt: skip
    assert made.status_code in (200, 201), made.text
    pid = made.json()["id"]
    body = "".join(openai_line(traj) + "\n" for traj in train).encode()
    imported = client.post(f"/api/v1/projects/{pid}/import", params={"format": "openai-chat"}, content=body,
                           headers=headers | {"Content-Type": "application/x-ndjson"})  # fmt: skip
    assert imported.status_code == 200, imported.text
    t_import = time.monotonic()

    # simulated raters: every step's true label, right with probability rater_accuracy; labels stop at their first bad
    labelled = right = 0
    for rater in raters:
        while True:
            task = client.get(f"/api/v1/projects/{pid}/steps/next", headers=rater)
            if task.status_code == 204:
                break
            assert task.status_code == 200, task.text
            task = task.json()
            final = task["steps"][-1]["content"]
            traj = next(t for key, t in truth.items() if final.endswith(key + "."))
            votes, first_error = [], None
            for index in range(len(task["steps"])):
                good = index != traj["bad_step"]
                said = good if rng.random() < args.rater_accuracy else not good
                right += said == good
                votes.append({"label": "good" if said else "bad"})
                if not said:
                    first_error = index
                    votes += [{"label": None}] * (len(task["steps"]) - index - 1)
                    break
            answer = client.post(f"/api/v1/projects/{pid}/trajectories/{task['completion_id']}/step-labels",
                                 json={"labels": votes, "first_error": first_error}, headers=rater)  # fmt: skip
            assert answer.status_code in (200, 201), answer.text
            labelled += 1
    t_label = time.monotonic()
    print(f"imported {args.train} trajectories ({sum(t['bad_step'] is not None for t in train)} with a planted bad "
          f"step); {labelled} step judgments by {args.raters} simulated raters ({right} labels given, right with "
          f"p={args.rater_accuracy})")  # fmt: skip

    if args.base == "init-tiny":  # the product's tiny models: a tokenizer trained on prompts and final answers only
        with session_scope(write=True) as db:
            policy_id = next(v.id for v in init_tiny(db, db.get(Project, pid)) if v.kind == "policy")
    else:  # a tiny Llama whose tokenizer was trained on the trajectories' text (tool calls, results), registered
        from trainer.tiny import build_tiny_policy, default_texts, train_tokenizer
        from trainer.tiny_steps import stepwise_row, texts

        tokenizer = train_tokenizer(texts([stepwise_row(t) for t in train]) + default_texts(100), vocab_size=512)
        path = build_tiny_policy(root / "base-policy", tokenizer, seed=args.seed)
        added = client.post("/api/v1/models", json={"name": "steps-base", "path": str(path.resolve()),
                                                    "kind": "policy", "project_id": pid}, headers=headers)  # fmt: skip
        assert added.status_code == 201, added.text
        policy_id = added.json()["id"]
    params = RECIPE | {"num_train_epochs": args.epochs, "snapshot": {"split": {"test_fraction": 0.0}}}  # all 400 train
    created = client.post("/api/v1/jobs", json={"project_id": pid, "kind": "prm", "base_model": policy_id,
                                                "params": params}, headers=headers)  # fmt: skip
    assert created.status_code == 202, created.text
    run_one("bench")
    job = client.get(f"/api/v1/jobs/{created.json()['id']}", headers=headers).json()
    assert job["status"] == "succeeded", job
    t_train = time.monotonic()
    metrics = job["result"]["metrics"]
    version = client.get("/api/v1/models", headers=headers).json()
    versions = version["items"] if isinstance(version, dict) and "items" in version else version
    path = next(v["path"] for v in versions if v["id"] == job["result"]["model_version_id"])
    print(f"prm job: {metrics.get('train/trajectories')} training trajectories, {metrics.get('train/steps')} steps, "
          f"{metrics.get('train/runtime_s', 0):.1f} s training (every labelled trajectory trains: no held-out split "
          f"of its own)")  # fmt: skip

    first_error_accuracy, area = evaluate(path, held_out)
    t_eval = time.monotonic()
    print()
    print(f"held-out {args.held_out} fresh trajectories ({sum(t['bad_step'] is not None for t in held_out)} bad):")
    print(f"  first bad step found:  {first_error_accuracy:.3f}   (aim >= 0.8)")
    print(f"  AUROC good vs bad:     {area:.3f}   (aim >= 0.9; outcome = min step score)")
    print(f"time: import {t_import - started:.0f} s, labelling {t_label - t_import:.0f} s, prm job "
          f"{t_train - t_label:.0f} s, evaluation {t_eval - t_train:.0f} s, total {t_eval - started:.0f} s")
    print("load:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    return 0


def evaluate(path: str, held_out: list[dict]) -> tuple[float, float]:
    """First-error accuracy and AUROC of the registered PRM on trajectories it never saw, against the truth."""
    from trainer.prm import ProcessRewardScorer, auroc, first_error, outcome, step_text
    from trainer.tiny_steps import steps_of

    scorer = ProcessRewardScorer(path, outcome="min")
    prompts = [traj["prompt"][0]["content"] for traj in held_out]
    steps = [scorer.separator.join(step_text(step) for step in steps_of(traj)) for traj in held_out]
    scores = scorer.step_scores(prompts, steps)
    found = sum(first_error([s > 0.5 for s in row]) == traj["bad_step"] for row, traj in zip(scores, held_out, strict=True))
    good = [outcome(row) for row, traj in zip(scores, held_out, strict=True) if traj["bad_step"] is None]
    bad = [outcome(row) for row, traj in zip(scores, held_out, strict=True) if traj["bad_step"] is not None]
    return found / len(held_out), auroc(good, bad)


if __name__ == "__main__":
    raise SystemExit(main())
