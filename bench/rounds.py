"""Does the loop learn? Three rounds through the real API and worker, with simulated raters who prefer a planted
property the policy is never told about: the reply says "please".

A tiny Llama policy (built from a config, no download) is warm-started to reply in the task's format with
"please" in a quarter of its training replies (about a third of its samples at temperature 0.7). The pool is 180 prompts ("Write a short reply about X."), imported
with two neutral seed replies each (neither says "please", so the raters tie them and they teach nothing).
A real `rankforge serve` and `rankforge worker` run on a fresh SQLite database; the round recipe is DPO with a
retrained reward model, 40 prompts a round x 4 samples, 40 held-out evaluation prompts, and the trigger "start the
next round when one finishes". Round 1 is started through `POST /api/v1/projects/{id}/rounds`; then the raters
(API clients) rate whatever the queue gives them: the reply that says "please" wins, a tie otherwise.

Printed per round: the human win rate of the new policy over the previous one on the evaluation prompts, with its
95% interval; the share of the policy's samples that have the property (in the round's own samples, and measured
by sampling 256 replies on the evaluation prompts from each version); reward-model accuracy on judgments it never
trained on; KL; the wall time of every step. At the end: the round-3 policy against the base policy.

    .venv/bin/python bench/rounds.py [--rounds 3] [--dpo-lr 5e-4] [--dpo-epochs 3] [--keep DIR]

Last run (2-core machine shared with other work; 921 s in all): measured share of replies with the property
0.344 (base) -> 0.574 -> 0.820 -> 0.969; win rate of each new policy over the previous one 0.637 [0.483, 0.768],
0.675 [0.520, 0.799], 0.550 [0.398, 0.693] (40 battles each); round-3 policy vs base 0.863 [0.724, 0.938];
reward accuracy 0.878, 0.900, 1.000; KL to the previous policy 0.72, 8.58, 3.21. With --dpo-lr 1e-3
--dpo-epochs 4 the first update overshoots (KL 18.8, share 0.934) and round 2 slips back (0.906) before round 3
reaches 0.992. The policies end up repeating the keyword ("please please please"): the raters reward nothing else.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

KEYWORD = "please"
TEMPERATURE = 0.7
MAX_NEW_TOKENS = 20


def has_property(text: str) -> bool:
    return KEYWORD in text.lower().replace(".", " ").replace(",", " ").split()


def topics() -> list[str]:
    from trainer.tiny import _WORDS

    seen, out = set(), []
    for word in _WORDS:
        if word != KEYWORD and len(word) > 2 and word not in seen:
            seen.add(word)
            out.append(word)
    return out


def prompt_text(topic: str) -> str:
    return f"Write a short reply about {topic}.\n"


def pool_topics(n: int, seed: int = 5) -> list[str]:
    """n distinct topics "X and Y" from the tiny corpus's words."""
    words, rng, out = topics(), random.Random(seed), []
    while len(out) < n:
        topic = " and ".join(rng.sample(words, 2))
        if topic not in out:
            out.append(topic)
    return out


def build_models(root: Path, all_topics: list[str]) -> tuple[Path, Path]:
    """Tiny policy and reward model sharing a tokenizer; the policy warm-started on the reply format."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainer.tiny import (
        build_tiny_policy,
        build_tiny_reward,
        keyword_pairs,
        keyword_texts,
        train_tokenizer,
    )

    rows = keyword_pairs(1024, seed=7)
    texts = keyword_texts(rows) + [prompt_text(t) for t in all_topics]
    tokenizer = train_tokenizer(texts, vocab_size=1024)
    policy = build_tiny_policy(root / "random-policy", tokenizer, seed=0)
    reward = build_tiny_reward(root / "reward", tokenizer, seed=0)
    tokenizer = AutoTokenizer.from_pretrained(policy)
    model = AutoModelForCausalLM.from_pretrained(policy)
    rng = random.Random(7)
    torch.manual_seed(7)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(200):
        batch = [prompt_text(rng.choice(all_topics)) + (row["chosen"] if rng.random() < 0.25 else row["rejected"])
                 + tokenizer.eos_token for row in rng.sample(rows, 32)]  # fmt: skip
        encoded = tokenizer(batch, return_tensors="pt", padding=True)
        labels = encoded.input_ids.masked_fill(encoded.attention_mask == 0, -100)
        model(**encoded, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    base = root / "base-policy"
    model.save_pretrained(base)
    tokenizer.save_pretrained(base)
    return base, reward


def measured_share(path: str, prompts: list[str], samples: int = 256) -> float:
    """Share of `samples` fresh replies (sampled as the rounds sample) on these prompts that say "please"."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    torch.manual_seed(1)
    batch = [prompts[i % len(prompts)] for i in range(samples)]
    encoded = tokenizer(batch, return_tensors="pt", padding=True)
    with torch.no_grad():
        output = model.generate(**encoded, do_sample=True, temperature=TEMPERATURE, top_k=0, top_p=1.0,
                                max_new_tokens=MAX_NEW_TOKENS, pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    replies = tokenizer.batch_decode(output[:, encoded.input_ids.shape[1] :], skip_special_tokens=True)
    return sum(has_property(r) for r in replies) / len(replies)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cli(env: dict, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, check=False)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"rankforge {' '.join(args)}: {done.stderr[-2000:]}")
    return done.stdout.strip()


class Rater:
    def __init__(self, http: httpx.Client, token: str, project_id: int):
        self.http, self.headers, self.project_id = http, {"Authorization": f"Bearer {token}"}, project_id

    def rate_some(self, limit: int = 50) -> int:
        done = 0
        while done < limit:
            task = self.http.get(f"/api/v1/projects/{self.project_id}/tasks/next", headers=self.headers)
            if task.status_code == 204:
                break
            task.raise_for_status()
            task = task.json()
            good = [o["id"] for o in task["options"] if has_property(o["text"])]
            bad = [o["id"] for o in task["options"] if not has_property(o["text"])]
            ranking = [good, bad] if good and bad else [good or bad]
            response = self.http.post(f"/api/v1/assignments/{task['assignment_id']}/judgment",
                                      json={"ranking": ranking}, headers=self.headers)  # fmt: skip
            response.raise_for_status()
            done += 1
        return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prompts-per-round", type=int, default=40)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--pool", type=int, default=180, help="prompts in the pool (evaluation prompts included)")
    parser.add_argument("--eval-prompts", type=int, default=40)
    parser.add_argument("--dpo-lr", type=float, default=5e-4, help="the DPO update's learning rate")
    parser.add_argument("--dpo-epochs", type=float, default=3.0, help="the DPO update's epochs over the snapshot")
    parser.add_argument("--keep", type=Path, help="work in this directory and keep it (default: a temp dir)")
    parser.add_argument("--timeout", type=float, default=3600, help="give up after this many seconds")
    args = parser.parse_args(argv)
    root = args.keep or Path(tempfile.mkdtemp(prefix="rankforge-rounds-"))
    if args.keep:
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT), RANKFORGE_DATA_DIR=str(root / "data"),
               RANKFORGE_DATABASE_URL=f"sqlite:///{root / 'rankforge.db'}", RANKFORGE_LOG_LEVEL="warning")  # fmt: skip
    os.environ.update({k: env[k] for k in ("RANKFORGE_DATA_DIR", "RANKFORGE_DATABASE_URL")})
    processes: list[subprocess.Popen] = []
    started = time.monotonic()
    try:
        all_topics = pool_topics(args.pool)
        t0 = time.monotonic()
        base, reward = build_models(root / "models", all_topics)
        print(f"tiny models built and the policy warm-started in {time.monotonic() - t0:.0f} s")
        cli(env, "db", "upgrade")
        for name, role in [("admin", "admin"), ("eng", "engineer"), ("ann1", "annotator"), ("ann2", "annotator")]:
            cli(env, "user", "create", name, "--role", role, "--password", "bench-password-1")
        tokens = {name: cli(env, "token", "create", name).splitlines()[-1] for name in ("admin", "eng", "ann1", "ann2")}
        port = free_port()
        log = open(root / "processes.log", "w")  # noqa: SIM115 - closed with the processes
        processes.append(subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--port", str(port)], cwd=ROOT,
                                          env=env, stdout=log, stderr=subprocess.STDOUT))  # fmt: skip
        processes.append(subprocess.Popen([sys.executable, "-m", "app.cli", "worker", "--poll", "0.5"], cwd=ROOT,
                                          env=env, stdout=log, stderr=subprocess.STDOUT))  # fmt: skip
        http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
        for _ in range(200):
            try:
                if http.get("/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        admin = {"Authorization": f"Bearer {tokens['admin']}"}
        eng = {"Authorization": f"Bearer {tokens['eng']}"}
        project = http.post("/api/v1/projects", headers=admin, json={"name": "Please loop", "slug": "please",
                            "mode": "pairwise", "overlap": 1, "allow_ties": True}).raise_for_status().json()  # fmt: skip
        pid = project["id"]
        rng = random.Random(3)
        from trainer.tiny import _FILLERS

        lines = []
        for i, topic in enumerate(all_topics):
            seeds = [" ".join(rng.choice(_FILLERS) for _ in range(5)) for _ in range(2)]
            lines.append(json.dumps({"prompt": prompt_text(topic), "external_id": f"topic-{i}",
                                     "completions": [{"text": s, "model": "seed"} for s in seeds]}))  # fmt: skip
        http.post(f"/api/v1/projects/{pid}/import", params={"format": "native"}, headers=admin
                  | {"Content-Type": "application/x-ndjson"}, content="\n".join(lines) + "\n").raise_for_status()  # fmt: skip
        for kind, path in (("policy", base), ("reward", reward)):
            http.post("/api/v1/models", headers=eng, json={"name": f"base-{kind}", "path": str(path), "kind": kind,
                                                           "project_id": pid}).raise_for_status()  # fmt: skip
        recipe = {
            "prompts_per_round": args.prompts_per_round, "samples_per_prompt": args.samples,
            "temperature": TEMPERATURE, "max_new_tokens": MAX_NEW_TOKENS, "policy_update": "dpo",
            "update_params": {"num_train_epochs": args.dpo_epochs, "learning_rate": args.dpo_lr, "per_device_train_batch_size": 8,
                              "max_length": 128, "beta": 0.1},
            "reward_params": {"num_train_epochs": 6, "per_device_train_batch_size": 8, "max_length": 128},
            "eval_fraction": round(args.eval_prompts / args.pool, 4), "eval_min_prompts": args.eval_prompts,
            "auto_after_previous": True,
        }  # fmt: skip
        http.put(f"/api/v1/projects/{pid}/rounds/recipe", headers=eng, json=recipe).raise_for_status()
        raters = [Rater(http, tokens[n], pid) for n in ("ann1", "ann2")]
        first = http.post(f"/api/v1/projects/{pid}/rounds", headers=eng).raise_for_status().json()
        print(f"round 1 started: {len(first['prompt_ids'])} prompts x {args.samples} samples; recipe {recipe}")
        seen: dict[int, str] = {}
        while True:
            if time.monotonic() - started > args.timeout:
                raise RuntimeError("timed out")
            judged = sum(r.rate_some() for r in raters)
            state = http.get(f"/api/v1/projects/{pid}/rounds", headers=eng).raise_for_status().json()["rounds"]
            for r in state:
                if seen.get(r["number"]) != r["status"]:
                    seen[r["number"]] = r["status"]
                    print(f"  [{time.monotonic() - started:6.0f} s] round {r['number']}: {r['status']}"
                          f"{' - ' + r['error'] if r['error'] else ''}", flush=True)  # fmt: skip
            if any(r["status"] == "failed" for r in state):
                raise RuntimeError(f"a round failed: {[r['error'] for r in state if r['error']]}")
            finished = [r for r in state if r["status"] == "done"]
            if len(finished) >= args.rounds:
                for r in state:
                    if r["status"] not in ("done", "failed", "cancelled"):
                        http.post(f"/api/v1/projects/{pid}/rounds/{r['number']}/cancel", headers=eng)
                break
            if not judged:
                time.sleep(1.0)
        report(http, eng, pid, finished[: args.rounds], recipe)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(f"total {time.monotonic() - started:.0f} s")
    return 0


def report(http: httpx.Client, headers: dict, pid: int, rounds: list[dict], recipe: dict) -> None:
    from sqlalchemy import select

    from app.db import session_scope
    from app.models import Completion, ModelVersion, Prompt, Round
    from app.quality.rounds import head_to_head

    eval_ids = http.get(f"/api/v1/projects/{pid}/rounds/recipe", headers=headers).json()["eval_prompt_ids"]
    with session_scope() as db:
        eval_prompts = [p.messages[0]["content"] for p in db.scalars(select(Prompt).where(Prompt.id.in_(eval_ids)))]
        paths = {v.id: v.path for v in db.scalars(select(ModelVersion))}

        def sample_share(version_id: int, prompt_ids: list[int]) -> tuple[float, int]:
            texts = list(db.scalars(select(Completion.text).where(Completion.model_version_id == version_id,
                                                                  Completion.prompt_id.in_(prompt_ids))))  # fmt: skip
            return (sum(map(has_property, texts)) / len(texts) if texts else float("nan")), len(texts)

        base_id = rounds[0]["policy_version_id"]
        print()
        print(f"planted property: the reply says {KEYWORD!r}; {len(eval_ids)} evaluation prompts (never trained on)")
        print(f"base policy: measured share {measured_share(paths[base_id], eval_prompts):.3f} "
              f"(256 samples on the evaluation prompts)")
        for r in rounds:
            m = r["metrics"]
            own, n_own = sample_share(r["policy_version_id"], r["prompt_ids"])
            new_eval, n_eval = sample_share(r["new_policy_version_id"], eval_ids)
            ci = m["win_rate_ci"] or [float("nan")] * 2
            jobs = {step: http.get(f"/api/v1/jobs/{job_id}", headers=headers).json() for step, job_id in r["jobs"].items()}
            times = ", ".join(f"{step} {_seconds(job):.0f} s" for step, job in jobs.items())
            print(f"round {r['number']}: win rate new vs previous {m['win_rate']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}] "
                  f"over {m['battles']} battles; property share: round's samples (previous policy) {own:.3f} "
                  f"(n={n_own}), new policy on eval prompts {new_eval:.3f} (n={n_eval}), measured "
                  f"{measured_share(paths[r['new_policy_version_id']], eval_prompts):.3f}; reward accuracy "
                  f"{_fmt(m['reward_accuracy'])} (n={m['reward_verdicts']}); KL {_fmt(m['kl'])}; score mean "
                  f"{_fmt(m['score_mean'])}; {m['judgments']} judgments, {m['pairs_trained']} pairs trained")  # fmt: skip
            print(f"    step wall times: {times}; stages: "
                  + ", ".join(f"{k} {v:.0f} s" for k, v in r["step_times"].items()))
        last = db.scalar(select(Round).where(Round.project_id == pid, Round.number == rounds[-1]["number"]))
        versus = head_to_head(db, last.eval_comparison_ids, last.new_policy_version_id, base_id)
        ci = versus["win_rate_ci"] or [float("nan")] * 2
        print(f"round-{last.number} policy vs base policy (human verdicts on the evaluation prompts): win rate "
              f"{_fmt(versus['win_rate'])} [{ci[0]:.3f}, {ci[1]:.3f}] over {versus['battles']} battles")


def _seconds(job: dict) -> float:
    from datetime import datetime

    if not job.get("started_at") or not job.get("finished_at"):
        return float("nan")
    return (datetime.fromisoformat(job["finished_at"]) - datetime.fromisoformat(job["started_at"])).total_seconds()


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    sys.exit(main())
