"""AI judges against simulated humans on a planted-property task, through the product (API, worker, jobs).

Task (trainer.tiny.keyword_pairs): the better answer of each pair says "please" where its twin says a filler word.
Three simulated raters per comparison follow the property with probability --noise-free-share (default 0.85).
A reward model trained (a `reward` job) on the first 20% of comparisons' human judgments becomes a `reward` judge
that labels the other 80% (a `judge` job); its verdicts are measured against the human majority exactly as the
judges page shows them. A tiny untrained generative judge runs on the same comparisons for its time per 1,000
(and, as a check, its accuracy: about chance).

    .venv/bin/python bench/judge.py [--comparisons 1000] [--follow 0.85] [--keep DIR]

Prints: accuracy vs the human majority, Cohen's kappa, ECE, the share auto-labeled at the lowest threshold whose
auto-labeled share is at least 95% accurate, position bias, and seconds per 1,000 judgments for each judge (CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comparisons", type=int, default=1000)
    parser.add_argument("--follow", type=float, default=0.85, help="share of rater verdicts that follow the property")
    parser.add_argument("--raters", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, default=None, help="keep the database and artifacts here")
    args = parser.parse_args()

    root = args.keep or Path(tempfile.mkdtemp(prefix="rankforge-judge-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    os.environ["RANKFORGE_DATABASE_URL"] = f"sqlite:///{root / 'bench.db'}"
    os.environ["RANKFORGE_DATA_DIR"] = str(root / "data")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        return run(args, root)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


def run(args, root: Path) -> int:
    from fastapi.testclient import TestClient
    from sqlalchemy import select

    from app.auth.service import create_api_token
    from app.db import session_scope
    from app.main import create_app
    from app.migrate import upgrade
    from app.models import Comparison, Completion, Judgment, Project
    from app.registry.service import init_tiny
    from app.users.service import create_user
    from app.worker import run_one
    from trainer.tiny import keyword_pairs

    upgrade(os.environ["RANKFORGE_DATABASE_URL"])
    with session_scope(write=True) as db:
        admin = create_user(db, "bench-admin", "admin", "bench-admin-pass", actor=None)
        headers = {"Authorization": f"Bearer {create_api_token(db, admin, 'bench')}"}
        raters = [create_user(db, f"sim-{i}", "annotator", "bench-rater-pass", actor=None).id
                  for i in range(args.raters)]  # fmt: skip
    client = TestClient(create_app(), base_url="http://testserver")
    n_seed = args.comparisons // 5
    rng = random.Random(args.seed)
    rows = keyword_pairs(args.comparisons, seed=args.seed + 11)
    lines = []
    for i, row in enumerate(rows):
        completions = [{"text": row["chosen"], "model": "m", "metadata": {"planted": "better"}},
                       {"text": row["rejected"], "model": "m"}]  # fmt: skip
        rng.shuffle(completions)
        lines.append(json.dumps({"prompt": row["prompt"], "completions": completions, "external_id": f"c{i}",
                                 "metadata": {"batch": "seed" if i < n_seed else "rest"}}))  # fmt: skip
    response = client.post("/api/v1/projects", json={"name": "Judge bench", "slug": "judge-bench", "mode": "pairwise",
                                                     "overlap": args.raters, "allow_ties": False}, headers=headers)  # fmt: skip
    pid = response.json()["id"]
    imported = client.post(f"/api/v1/projects/{pid}/import", params={"format": "native"},
                           content=("\n".join(lines) + "\n").encode(),
                           headers=headers | {"Content-Type": "application/x-ndjson"})  # fmt: skip
    assert imported.status_code == 200, imported.text

    # simulated humans: each follows the planted property with probability args.follow
    with session_scope(write=True) as db:
        comparisons = list(db.scalars(select(Comparison).where(Comparison.project_id == pid).order_by(Comparison.id)))
        texts = dict(db.execute(select(Completion.id, Completion.text).where(
            Completion.id.in_([c for comp in comparisons for c in comp.completion_ids]))).all())  # fmt: skip
        for comparison in comparisons:
            better = next(c for c in comparison.completion_ids if "please" in texts[c].split())
            worse = next(c for c in comparison.completion_ids if c != better)
            for rater in raters:
                top, bottom = (better, worse) if rng.random() < args.follow else (worse, better)
                db.add(Judgment(comparison_id=comparison.id, project_id=pid, rater_id=rater, ranking=[[top], [bottom]],
                                source="human", top_completion_id=top,
                                chosen_position=comparison.completion_ids.index(top)))  # fmt: skip
            comparison.n_judgments = args.raters
        tiny = {v.kind: v for v in init_tiny(db, db.get(Project, pid))}
        policy_id = tiny["policy"].id

    def job(body: dict) -> tuple[dict, float]:
        created = client.post("/api/v1/jobs", json={"project_id": pid} | body, headers=headers)
        assert created.status_code == 202, created.text
        started = time.monotonic()
        run_one("bench")
        result = client.get(f"/api/v1/jobs/{created.json()['id']}", headers=headers).json()
        assert result["status"] == "succeeded", result
        return result, time.monotonic() - started

    reward, reward_wall = job({"kind": "reward", "base_model": policy_id,
                               "params": {"snapshot": {"filters": {"batches": ["seed"]}, "split": {"test_fraction": 0.1}},
                                          "num_train_epochs": 8, "learning_rate": 2e-3}})  # fmt: skip
    print(f"reward job on the first {n_seed} comparisons ({args.raters} simulated raters each, following the "
          f"property {args.follow:.0%} of the time): {reward_wall:.1f} s, held-out metrics "
          f"{ {k: round(v, 3) for k, v in reward['result']['metrics'].items() if 'accuracy' in k} }")
    version_id = reward["result"]["model_version_id"]
    for name, method, model in (("reward-judge", "reward", version_id), ("tiny-generative", "generative", policy_id)):
        made = client.post(f"/api/v1/projects/{pid}/judges", json={"name": name, "method": method, "model": model},
                           headers=headers)  # fmt: skip
        assert made.status_code == 201, made.text
        result, wall = job({"kind": "judge", "params": {"judge": name, "scope": "judged", "batch": "rest"}})
        metrics = result["result"]["metrics"]
        print(f"{name}: judged {metrics['judge/comparisons']} comparisons in {wall:.1f} s (job), "
              f"{metrics['judge/seconds_per_1000']:.1f} s per 1,000 judgments inside the trainer (CPU)")

    figures = client.get(f"/api/v1/projects/{pid}/judges", headers=headers).json()
    print()
    print(f"{'judge':<16} {'compared':>8} {'accuracy':>9} {'kappa':>7} {'alpha':>7} {'alpha(h)':>8} {'ECE':>6} "
          f"{'pos.bias':>8}  auto-labeled at >=95% accuracy")  # fmt: skip
    for judge in figures["judges"]:
        for f in judge["agreement"]:
            t = f["threshold_for_95"] or {}
            auto = (f"{t['share']:.1%} (t >= {t['threshold']:.3f}, accuracy {t['accuracy']:.3f})"
                    if t.get("threshold") is not None else "none")  # fmt: skip
            fmt = lambda v, w=7: f"{v:>{w}.3f}" if v is not None else f"{'-':>{w}}"  # noqa: E731
            print(f"{f['judge']:<16} {f['compared']:>8} {fmt(f['accuracy'], 9)} {fmt(f['kappa'])} {fmt(f['alpha'])} "
                  f"{fmt(f['alpha_humans'], 8)} {fmt(f['ece'], 6)} {fmt(f['position_bias'], 8)}  {auto}")  # fmt: skip
    p = args.follow
    majority_right = sum(__import__("math").comb(args.raters, k) * p**k * (1 - p) ** (args.raters - k)
                         for k in range(args.raters // 2 + 1, args.raters + 1))  # fmt: skip
    print(f"\n(the human majority itself follows the property {majority_right:.1%} of the time in expectation; "
          "a judge that had learned the property exactly would score about that accuracy against it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
