"""RLVR benchmark: GRPO and RLOO on the verifier's reward alone (no reward model, no humans), through the product.

Task: small sums ("2 + 3 =", a and b from 0 to 3, 16 prompts) with a numeric reference each, imported as a
verifiable project. The tiny policy gets a short supervised warm start on right answers, stopped early (it answers
in the task's format and is right for some prompts: a model that never conditions on the prompt gives RL nothing to
amplify). Then, as the worker runs them (SQLite, a temp data dir): a `verify` job on the base version,
a `grpo` and an `rloo` job with params.rewards = [verifier], and a `verify` job on each trained version.
pass@1 and pass@k come from the verify jobs (k samples per prompt, bootstrap 95% intervals over prompts); the KL
is the trainer's eval/kl_to_reference. The prompts are the ones trained on (a tiny model memorises sums; it
does not learn addition), so this checks that the verifier reward drives learning, not generalisation.

Also: sandbox throughput (verdicts per second) on HumanEval's canonical solutions (../shared/data), or on a
synthetic code task when that folder is absent.

    .venv/bin/python bench/rlvr.py [--steps 40] [--samples 8] [--keep DIR]
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

NUMBERS = range(4)


def prompt_text(a: int, b: int) -> str:
    return f"{a} + {b} ="


def warm_start(policy_dir: Path, out_dir: Path, *, steps: int, right_share: float, seed: int = 0) -> Path:
    """Supervised warm start: replies " N" + EOS, the right sum in `right_share` of them, a random digit otherwise."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(policy_dir)
    model = AutoModelForCausalLM.from_pretrained(policy_dir)
    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        batch = []
        for _ in range(32):
            a, b = rng.choice(NUMBERS), rng.choice(NUMBERS)
            answer = a + b if rng.random() < right_share else rng.randrange(2 * len(NUMBERS) - 1)
            batch.append(f"{prompt_text(a, b)} {answer}{tokenizer.eos_token}")
        encoded = tokenizer(batch, return_tensors="pt", padding=True)
        labels = encoded.input_ids.masked_fill(encoded.attention_mask == 0, -100)
        model(**encoded, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def run_worker_until_idle() -> None:
    from app.worker import run_one

    while run_one("bench-rlvr") is not None:
        pass


def sandbox_throughput(n: int | None = None) -> dict:
    from trainer.rewards.verifier import verify

    path = (ROOT / "../shared/data/humaneval_first_82.jsonl").resolve()
    if path.is_file():
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        tasks = [(r["canonical_solution"], {"code": r["test"], "entry_point": r["entry_point"], "prefix": r["prompt"]})
                 for r in rows]  # fmt: skip
        source = f"HumanEval canonical solutions ({len(tasks)})"
    else:
        tasks = [(f"def f(x):\n    return x + {i}\n", {"code": f"assert f(1) == {i + 1}\n"}) for i in range(60)]
        source = "synthetic f(x) tests (60)"
    tasks = tasks[:n] if n else tasks
    started = time.monotonic()
    with ThreadPoolExecutor(2) as pool:
        verdicts = list(pool.map(lambda t: verify(t[0], None, t[1]), tasks))
    seconds = time.monotonic() - started
    return {"source": source, "verdicts": len(verdicts), "passed": sum(v["passed"] for v in verdicts),
            "seconds": round(seconds, 2), "verdicts_per_second": round(len(verdicts) / seconds, 2)}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200, help="GRPO / RLOO optimizer steps")
    parser.add_argument("--samples", type=int, default=8, help="answers per prompt in each verify job (k)")
    parser.add_argument("--lr", type=float, default=2e-3, help="GRPO / RLOO peak learning rate")
    parser.add_argument("--warm-steps", type=int, default=250)
    parser.add_argument("--keep", type=Path, help="keep the work directory here")
    args = parser.parse_args()

    root = args.keep or Path(tempfile.mkdtemp(prefix="rankforge-rlvr-"))
    root.mkdir(parents=True, exist_ok=True)
    os.environ["RANKFORGE_DATABASE_URL"] = f"sqlite:///{root / 'bench.db'}"
    os.environ["RANKFORGE_DATA_DIR"] = str(root / "data")
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    import torch

    torch.set_num_threads(1)
    from app.db import session_scope
    from app.imports.service import import_file
    from app.migrate import upgrade
    from app.models import Job
    from app.projects.schemas import ProjectCreate
    from app.projects.service import create_project
    from app.registry.service import register_version
    from app.training.service import create_training_job
    from app.verifiers.service import create_verify_job
    from trainer.tiny import build_tiny_policy, train_tokenizer

    upgrade(os.environ["RANKFORGE_DATABASE_URL"])
    texts = [f"{prompt_text(a, b)} {c}" for a in NUMBERS for b in NUMBERS for c in range(13)]
    tokenizer = train_tokenizer(texts, vocab_size=256)
    started = time.monotonic()
    base_dir = warm_start(build_tiny_policy(root / "random", tokenizer, seed=0), root / "base",
                          steps=args.warm_steps, right_share=1.0)  # fmt: skip
    print(f"warm start: {time.monotonic() - started:.1f} s")

    rows = [{"prompt": prompt_text(a, b), "external_id": f"{a}+{b}", "reference": {"answer": a + b, "rule": "numeric"}}
            for a in NUMBERS for b in NUMBERS]  # fmt: skip
    with session_scope(write=True) as db:
        project = create_project(db, ProjectCreate(name="Sums", slug="sums", mode="pairwise"), None)
        import_file(db, project, "\n".join(json.dumps(r) for r in rows).encode(), "native", None)
        base = register_version(db, "sums-base", str(base_dir), "policy", project=project)
        project_id, base_id = project.id, base.id

    verify_params = {"samples": args.samples, "temperature": 1.0, "max_new_tokens": 4, "workers": 2}
    group = {"max_steps": args.steps, "learning_rate": args.lr, "num_generations": 8, "per_device_train_batch_size": 32,
             "max_completion_length": 4, "temperature": 1.0, "eval_prompts": 0, "logging_steps": 10,
             "rewards": [{"name": "verifier", "weight": 1.0}]}  # fmt: skip
    results = {}

    def verify_version(version_id: int) -> dict:
        with session_scope(write=True) as db:
            from app.models import Project

            job = create_verify_job(db, db.get(Project, project_id), base_model=version_id, params=verify_params)
            job_id = job.id
        t = time.monotonic()
        run_worker_until_idle()
        with session_scope() as db:
            job = db.get(Job, job_id)
            assert job.status == "succeeded", (job.status, job.error)
            return {**job.result["pass_rates"], "verify_seconds": round(time.monotonic() - t, 1)}

    results["base"] = verify_version(base_id)
    for kind in ("grpo", "rloo"):
        with session_scope(write=True) as db:
            from app.models import Project

            job = create_training_job(db, db.get(Project, project_id), kind, base_model=base_id, params=dict(group))
            job_id = job.id
        t = time.monotonic()
        run_worker_until_idle()
        with session_scope() as db:
            job = db.get(Job, job_id)
            assert job.status == "succeeded", (job.status, job.error)
            metrics, version_id = job.result["metrics"], job.result["model_version_id"]
        train_seconds = time.monotonic() - t
        results[kind] = verify_version(version_id) | {
            "kl": metrics.get("eval/kl_to_reference"), "train_seconds": round(train_seconds, 1),
            "reward_before": metrics.get("eval/rewards/verifier_before"),
            "reward_after": metrics.get("eval/rewards/verifier_after")}  # fmt: skip

    k = args.samples
    print(f"\n{len(rows)} prompts, {k} answers each per verify job, temperature 1.0; GRPO/RLOO {args.steps} steps "
          "on the verifier reward alone\n")  # fmt: skip
    print(f"{'policy':<6} {'pass@1':>7} {'95% interval':>16} {f'pass@{k}':>7} {'95% interval':>16} {'KL':>6} {'train s':>8}")
    for name, r in results.items():
        kl = f"{r['kl']:.2f}" if r.get("kl") is not None else "–"
        print(f"{name:<6} {r['pass_at_1']:7.3f} {r['pass_at_1_ci'][0]:7.3f}–{r['pass_at_1_ci'][1]:.3f} "
              f"{r['pass_at_k']:7.3f} {r['pass_at_k_ci'][0]:7.3f}–{r['pass_at_k_ci'][1]:.3f} {kl:>6} "
              f"{r.get('train_seconds', '–'):>8}")  # fmt: skip
    ok = all(results[k2]["pass_at_1_ci"][0] > results["base"]["pass_at_1_ci"][1] for k2 in ("grpo", "rloo"))
    print(f"\npass@1 interval above the base's, for GRPO and RLOO: {'yes' if ok else 'NO'}")
    throughput = sandbox_throughput()
    print(f"sandbox: {throughput['verdicts']} verdicts ({throughput['source']}, {throughput['passed']} passed) in "
          f"{throughput['seconds']} s on 2 workers: {throughput['verdicts_per_second']} verdicts/s")  # fmt: skip
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
