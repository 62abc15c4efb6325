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

    .venv/bin/python bench/steps.py [--train 400] [--held-out 200] [--raters 3] [--base pretrained] [--seed N]
                                    [--cache DIR] [--keep DIR]

--cache DIR keeps the base model (for --base pretrained: after its pretraining, about 500 s of the run) under a key
of --base, --seed, --train, --corpus, --pretrain, --pretrain-epochs and --pretrain-lr, and later runs with the same
key start from it (the rater draws do not depend on it).

Prints the figures, the wall time of each phase and the machine load (uptime). The prm job's snapshot has no test
split (a split by prompt would hold whole cities out, see the README); the job itself holds 10% of the labelled
trajectories out as validation (PRMArgs.validation_share; by trajectory here: 12 prompts) and keeps the epoch best on
their first-error accuracy, which the bench prints. The 200 fresh trajectories are never seen by the job. Aims:
first-error accuracy >= 0.8, AUROC >= 0.9.

The base (--base pretrained, the default): a tiny Llama (hidden 64, 2 layers) first pretrained as a plain causal LM,
no labels, on --pretrain 4,000 logs of a self-correcting agent of another seed (trainer.tiny_steps.trajectory with
correcting=True: half hold a wrong call, and the agent's next step says "wrong city, retry" and repeats the call with
the request's city), 3,000 steps at lr 6e-3; saved as a normal checkpoint and registered as the prm job's base, as a
user brings a pretrained model. Predicting that the agent will correct itself makes the base compare each call's
city with the request's, as a pretrained LM knows a mismatch; the bench prints how often it expects the correction
after the wrong calls of fresh trajectories (read plainly, without corrections). The prm job then runs with the
product's defaults (--recipe product: 3 epochs, no weight decay, the job's model selection) on the raters' labels:
from its step labels it learns which of the base's features marks a bad step.

Without such a base the aims are not met (README, prm section): trained from scratch (--base trajectories, with
--recipe bench: RECIPE, 60 epochs with weight decay) 0.400 / 0.545 first-error accuracy (seeds 0 / 1) with 3 raters
at 85%, 0.83-0.90 with raters always right; pretrained on good trajectories only (--corpus good, then 1,000 steps at lr
1e-2 and the bench RECIPE: it learns to copy the request's city, not to notice another one) 0.575-0.885 across seeds
and reruns, the aims met on one seed in three.
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


BASE = "pretrained"
"""The bench's default --base: a tiny Llama pretrained on a self-correcting agent's logs (see the docstring)."""

PRETRAIN_EPOCHS, PRETRAIN_LR = 24.0, 6e-3
"""3,000 steps of 32 trajectories for the default 4,000. Learning to expect the agent's correction after a wrong
call is a phase change (the check goes from none to nearly all of the wrong calls noticed within a few hundred
steps): at lr 3e-3 it came between steps 1,000 and 2,000 on seeds 0 and 1 but only 34 of 100 by step 3,000 on seed 3,
which noticed 98 at lr 6e-3 (and 100 after 5,000 steps at 3e-3); at 1,000 steps and lr 1e-2 (session 8, with the
agent's "Wrong city" in the text) no call was noticed."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=400, help="trajectories imported and labelled (even)")
    parser.add_argument("--held-out", type=int, default=200, help="fresh trajectories the PRM is evaluated on")
    parser.add_argument("--raters", type=int, default=3, help="simulated raters per trajectory")
    parser.add_argument("--rater-accuracy", type=float, default=0.85, help="share of step labels a rater gets right")
    parser.add_argument("--epochs", type=float, default=RECIPE["num_train_epochs"])
    parser.add_argument("--base", choices=("pretrained", "trajectories", "init-tiny"), default=BASE,
                        help="the base model: `trajectories` a tiny Llama (random weights) with a tokenizer trained "
                             "on the trajectories; `pretrained` that model first pretrained as a causal LM on "
                             "--pretrain unlabelled trajectories of another seed (--corpus; registered as a "
                             "checkpoint of one's own); `init-tiny` `models init-tiny`'s (its tokenizer sees prompts and final "
                             "answers only)")
    parser.add_argument("--pretrain", type=int, default=4000, help="unlabelled trajectories of --base pretrained")
    parser.add_argument("--pretrain-epochs", type=float, default=PRETRAIN_EPOCHS)
    parser.add_argument("--pretrain-lr", type=float, default=PRETRAIN_LR)
    parser.add_argument("--corpus", choices=("self-correcting", "good"), default="self-correcting",
                        help="--base pretrained's unlabelled trajectories: a self-correcting agent's (half hold a "
                             "wrong call, followed by the agent's correction), or good ones only (session 8's)")
    parser.add_argument("--recipe", choices=("bench", "product"), default=None,
                        help="the prm job's params: none (`product`: the product's defaults, PRMArgs; the default "
                             "with --base pretrained), or RECIPE (`bench`: 60 epochs with weight decay, for a base "
                             "trained from scratch; the default with the other bases)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, default=None, help="keep the database and artifacts here")
    parser.add_argument("--cache", type=Path, default=None,
                        help="reuse (or store) the base model here, keyed by --base, --seed, --train, --corpus, "
                             "--pretrain, --pretrain-epochs and --pretrain-lr: --base pretrained then skips the "
                             "pretraining it already did")
    args = parser.parse_args()
    if args.recipe is None:
        args.recipe = "product" if args.base == "pretrained" else "bench"

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


def pretrain(path: Path, corpus: list[dict], *, epochs: float = PRETRAIN_EPOCHS, lr: float = PRETRAIN_LR,
             batch_size: int = 32, seed: int = 0) -> dict[str, float]:  # fmt: skip
    """Pretrain the causal LM at `path` in place (plain next-token prediction, no labels) on unlabelled trajectories,
    each read exactly as the prm job reads a trajectory (prompt, then every step followed by the default separator),
    and save it back as a normal checkpoint. Returns the first and last loss, the seconds, and the two checks below
    (the copy of the request's city; whether the base expects the self-correcting agent's CORRECTION after a wrong
    call)."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    from trainer.params import PRMArgs
    from trainer.prm import encode_steps, separator_ids, step_text
    from trainer.tiny_steps import steps_of

    started = time.monotonic()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 100k-parameter model: more threads only wait on each other
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = LlamaForCausalLM.from_pretrained(path, dtype=torch.float32)
    sep = separator_ids(tokenizer, PRMArgs.step_separator)

    def encode(traj: dict):
        return encode_steps(traj["prompt"][0]["content"], [step_text(s) for s in steps_of(traj)], tokenizer, sep,
                            None)  # fmt: skip

    def batch(items: list[list[int]]) -> tuple:
        width = max(map(len, items))
        ids = torch.full((len(items), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, item in enumerate(items):
            ids[row, : len(item)], mask[row, : len(item)] = torch.tensor(item), 1
        return ids, mask, ids.masked_fill(mask == 0, -100)

    rows = [encode(traj).input_ids for traj in corpus]
    steps = max(1, int(epochs * len(rows) / batch_size))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / (0.05 * steps)) * (1 - s / steps))
    order = random.Random(seed)
    losses, queue = [], []
    model.train()
    for _ in range(steps):
        if len(queue) < batch_size:
            queue += order.sample(range(len(rows)), len(rows))
        picked, queue = queue[:batch_size], queue[batch_size:]
        ids, mask, labels = batch([rows[i] for i in picked])
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step(), schedule.step(), optimizer.zero_grad()
        losses.append(float(loss.detach()))
    model.eval()
    # Two checks on 200 fresh trajectories, half with a wrong call, read plainly (no correction: as the PRM reads
    # them). The copy: each call's city token predicted where it is the request's. Noticing: where the base's most
    # likely next token after a step's separator is the first token of CORRECTION (the self-correcting agent's
    # reaction), at the wrong call's separator (noticed) and at the others (false alarms).
    from trainer.tiny_steps import CITIES, CORRECTION, trajectory

    check = random.Random(seed + 99)
    hits = total = noticed = alarms = wrong_calls = other_steps = 0
    firsts = {tokenizer(f'"{c}', add_special_tokens=False)["input_ids"][-1] for c in CITIES}
    marker = tokenizer(CORRECTION, add_special_tokens=False)["input_ids"][0]
    with torch.no_grad():
        for index in range(200):
            traj = trajectory(check, index % 2 == 1)
            encoded = encode(traj)
            ids = encoded.input_ids
            logits = model(input_ids=torch.tensor([ids])).logits[0]
            for i in range(1, len(ids)):
                if ids[i] in firsts and index % 2 == 0:  # a call's city in a good trajectory: the request's
                    hits += int(logits[i - 1].argmax()) == ids[i]
                    total += 1
            for step, position in enumerate(encoded.positions[:-1]):  # the final answer is never a wrong call
                said = int(logits[position].argmax()) == marker
                if step == traj["bad_step"]:
                    noticed, wrong_calls = noticed + said, wrong_calls + 1
                else:
                    alarms, other_steps = alarms + said, other_steps + 1
    model.save_pretrained(path)
    torch.set_num_threads(threads)
    return {"loss_first": sum(losses[:10]) / len(losses[:10]), "loss_last": sum(losses[-10:]) / len(losses[-10:]),
            "steps": steps, "city_accuracy": hits / max(total, 1), "city_tokens": total,
            "noticed": noticed, "wrong_calls": wrong_calls, "false_alarms": alarms, "other_steps": other_steps,
            "seconds": time.monotonic() - started}  # fmt: skip


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

    pretrained = None
    if args.base == "init-tiny":  # the product's tiny models: a tokenizer trained on prompts and final answers only
        with session_scope(write=True) as db:
            policy_id = next(v.id for v in init_tiny(db, db.get(Project, pid)) if v.kind == "policy")
    else:  # a tiny Llama whose tokenizer was trained on the trajectories' text (tool calls, results), registered
        from trainer.prm import step_text
        from trainer.tiny import build_tiny_policy, default_texts, train_tokenizer
        from trainer.tiny_steps import steps_of, stepwise_row, texts, trajectory

        key = f"{args.base}-seed{args.seed}-train{args.train}" + (
            f"-{args.corpus}-pretrain{args.pretrain}-epochs{args.pretrain_epochs:g}-lr{args.pretrain_lr:g}" if args.base == "pretrained" else "")
        cached = args.cache / key if args.cache else None
        path = root / "base-policy"
        if cached is not None and (cached / "config.json").is_file():
            shutil.copytree(cached, path, dirs_exist_ok=True)
            print(f"base model from the cache: {cached}")
        else:
            correcting = args.corpus == "self-correcting"
            corpus = []
            if args.base == "pretrained":  # no labels: trajectories of their own seed (no plan numbers)
                corpus_rng = random.Random(10**4 + args.seed)
                corpus = [trajectory(corpus_rng, correcting and corpus_rng.random() < 0.5, correcting=correcting)
                          for _ in range(args.pretrain)]  # fmt: skip
            # the tokenizer learns the words of what the model will read: the labelled trajectories and the corpus
            corpus_texts = [step_text(s) for traj in corpus[:1000] for s in steps_of(traj)]
            tokenizer = train_tokenizer(texts([stepwise_row(t) for t in train]) + corpus_texts + default_texts(100),
                                        vocab_size=512)  # fmt: skip
            path = build_tiny_policy(path, tokenizer, seed=args.seed)
            if corpus:
                pretrained = pretrain(path, corpus, epochs=args.pretrain_epochs, lr=args.pretrain_lr, seed=args.seed)
                print(f"pretrained the base on {args.pretrain} unlabelled trajectories ({args.corpus}): "
                      f"{pretrained['steps']} steps, loss {pretrained['loss_first']:.2f} -> "
                      f"{pretrained['loss_last']:.2f}, {pretrained['seconds']:.0f} s; on fresh ones it predicts the "
                      f"calls' city {pretrained['city_accuracy']:.3f} ({pretrained['city_tokens']} tokens) and expects "
                      f"a correction after {pretrained['noticed']} of {pretrained['wrong_calls']} wrong calls "
                      f"(and after {pretrained['false_alarms']} of {pretrained['other_steps']} other steps)")  # fmt: skip
            if cached is not None:
                shutil.copytree(path, cached, dirs_exist_ok=True)
        added = client.post("/api/v1/models", json={"name": "steps-base", "path": str(path.resolve()),
                                                    "kind": "policy", "project_id": pid}, headers=headers)  # fmt: skip
        assert added.status_code == 201, added.text
        policy_id = added.json()["id"]
    t_base = time.monotonic()
    recipe = RECIPE | {"num_train_epochs": args.epochs} if args.recipe == "bench" else {}
    params = recipe | {"snapshot": {"split": {"test_fraction": 0.0}}}  # all 400 train
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
          f"{metrics.get('train/runtime_s', 0):.1f} s training")  # fmt: skip
    if "validation/trajectories" in metrics:
        print(f"  model selection: {metrics['validation/trajectories']} labelled trajectories held out of training "
              f"(validation_share), the weights of epoch {metrics['validation/best_epoch']:g} of "
              f"{metrics['validation/epochs']} kept: first-error accuracy on them "
              f"{metrics['validation/first_error_accuracy']:.3f} (against the raters' labels)")  # fmt: skip

    first_error_accuracy, area = evaluate(path, held_out)
    t_eval = time.monotonic()
    print()
    print(f"held-out {args.held_out} fresh trajectories ({sum(t['bad_step'] is not None for t in held_out)} bad):")
    print(f"  first bad step found:  {first_error_accuracy:.3f}   (aim >= 0.8)")
    print(f"  AUROC good vs bad:     {area:.3f}   (aim >= 0.9; outcome = min step score)")
    print(f"time: import {t_import - started:.0f} s, labelling {t_label - t_import:.0f} s, base model "
          f"{t_base - t_label:.0f} s, prm job {t_train - t_base:.0f} s, evaluation {t_eval - t_train:.0f} s, total {t_eval - started:.0f} s")
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
