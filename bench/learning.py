"""Learning benchmark: do the trainers learn, not merely run? Prints figures for each job kind.

Task (trainer.tiny.keyword_pairs): every chosen completion says "please" where its rejected twin says a filler
word; a model that learns the property ranks unseen pairs right. Tiny models are built from configs (no
download) and each kind runs end to end as the worker runs it: `python -m trainer.run spec.json` in a child.

    .venv/bin/python bench/learning.py [--kinds reward,dpo] [--train 512] [--test 256] [--keep DIR]

Figures: reward model held-out pairwise accuracy (target >= 0.95), DPO held-out implicit-reward accuracy
(target >= 0.8), wall time per job. Exit code 1 when a target is missed.

Structure: one `bench_<kind>(world) -> dict` function per kind, registered in BENCHES; main() runs them and
prints. PPO/GRPO sections are added the same way (they may use world.trained_reward, set by bench_reward).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from trainer.tiny import (  # noqa: E402
    build_tiny_policy,
    build_tiny_reward,
    keyword_pairs,
    keyword_texts,
    train_tokenizer,
    write_snapshot,
)


@dataclass
class World:
    """Tiny models and the synthetic snapshot shared by every bench section."""

    root: Path
    policy: Path
    reward: Path
    snapshot: Path
    trained_reward: Path | None = None  # set by bench_reward, for sections that need a learned reward model


def make_world(root: Path, n_train: int, n_test: int, seed: int = 0) -> World:
    train, test = keyword_pairs(n_train, seed=seed + 1), keyword_pairs(n_test, seed=seed + 2)
    tokenizer = train_tokenizer(keyword_texts(train + test), vocab_size=1024)
    return World(
        root=root,
        policy=build_tiny_policy(root / "policy", tokenizer, seed=seed),
        reward=build_tiny_reward(root / "reward", tokenizer, seed=seed),
        snapshot=write_snapshot(root / "snapshot", {"train": train, "test": test}),
    )


def run_job(world: World, kind: str, **fields: Any) -> tuple[dict[str, Any], float]:
    """Run one job as the worker does; returns its done event and the wall time in seconds."""
    output_dir = world.root / f"out-{kind}"
    spec = {"kind": kind, "job_id": 0, "output_dir": str(output_dir), "params": {}, "seed": 0, "launcher": "python"}
    spec.update(fields)
    spec_path = world.root / f"spec-{kind}.json"
    spec_path.write_text(json.dumps(spec))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    started = time.monotonic()
    child = subprocess.run(
        [sys.executable, "-m", "trainer.run", str(spec_path)], cwd=ROOT, env=env, capture_output=True, text=True
    )
    wall = time.monotonic() - started
    events = [json.loads(line) for line in child.stdout.splitlines() if line.startswith("{")]
    if child.returncode != 0 or not events or events[-1]["event"] != "done":
        raise RuntimeError(f"{kind} job failed (exit {child.returncode}): {events[-1:]}\n{child.stderr[-2000:]}")
    return events[-1], wall


def bench_reward(world: World) -> dict[str, Any]:
    """Bradley-Terry reward model from the tiny policy checkpoint (a fresh score head)."""
    from trainer.data import read_rows
    from trainer.models import load_reward, load_tokenizer
    from trainer.reward import pairwise_accuracy

    tokenizer = load_tokenizer(world.reward)
    untrained = pairwise_accuracy(
        load_reward(world.reward, tokenizer=tokenizer), tokenizer, read_rows(world.snapshot, "test"),
        batch_size=32, max_length=512,
    )  # fmt: skip
    done, wall = run_job(world, "reward", base_model=str(world.policy), dataset_path=str(world.snapshot))
    world.trained_reward = Path(done["output_dir"])
    metrics = done["metrics"]
    return {
        "figure": "held-out pairwise accuracy",
        "value": metrics["eval/accuracy"],
        "target": 0.95,
        "extra": f"untrained {untrained['accuracy']:.3f}, margin {metrics['eval/margin']:.2f}, "
        f"{metrics['train/pairs']} pairs, {metrics['train/steps']} steps",
        "wall_s": wall,
        "train_s": metrics["train/runtime_s"],
    }


def bench_dpo(world: World) -> dict[str, Any]:
    """DPO of the tiny policy against itself as reference (before training every implicit reward is 0)."""
    done, wall = run_job(world, "dpo", base_model=str(world.policy), dataset_path=str(world.snapshot))
    metrics = done["metrics"]
    return {
        "figure": "held-out implicit-reward accuracy",
        "value": metrics["eval/rewards/accuracies"],
        "target": 0.8,
        "extra": f"margin {metrics['eval/rewards/margins']:.2f}, {metrics['train/pairs']} pairs, "
        f"{metrics['train/steps']} steps",
        "wall_s": wall,
        "train_s": metrics["train/runtime_s"],
    }


BENCHES: dict[str, Callable[[World], dict[str, Any]]] = {
    "reward": bench_reward,
    "dpo": bench_dpo,
}


# --- RL sections (ppo, grpo, rloo) -------------------------------------------------------------------------------
# Their base policy must already answer in the task's format, so the tiny random policy is warm-started on replies
# of the keyword task, with "please" in a quarter of them. Learning is measured on prompts about topics the RL
# job never trained on: the share of sampled replies that say "please" (the true property, not the reward).

RL_TRAIN_TOPICS = ["cats", "rain", "trains", "bread", "music", "rivers", "chess", "tea", "maps", "stars", "boats",
                   "snow", "birds", "clocks", "hills", "lamps", "books", "coffee", "shoes", "roads"]  # fmt: skip
RL_HELD_OUT_TOPICS = ["kites", "apples", "clouds", "gardens", "horses", "bikes", "waves", "paper"]
RL_TEMPERATURE = 0.7
_rl_bases: dict[Path, Path] = {}


def _rl_prompt(topic: str) -> str:
    return f"Write a short reply about {topic}.\n"


def rl_base(world: World) -> tuple[Path, Path]:
    """(warm-started base policy, prompts.jsonl), built once per world."""
    import random

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base, prompts = world.root / "rl-base", world.root / "rl-prompts.jsonl"
    if world.root in _rl_bases:
        return base, prompts
    tokenizer = AutoTokenizer.from_pretrained(world.policy)
    model = AutoModelForCausalLM.from_pretrained(world.policy)
    rows, rng = keyword_pairs(1024, seed=7), random.Random(7)
    torch.manual_seed(7)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(200):
        batch = [
            _rl_prompt(rng.choice(RL_TRAIN_TOPICS + RL_HELD_OUT_TOPICS))
            + (row["chosen"] if rng.random() < 0.25 else row["rejected"])
            + tokenizer.eos_token
            for row in rng.sample(rows, 32)
        ]
        encoded = tokenizer(batch, return_tensors="pt", padding=True)
        labels = encoded.input_ids.masked_fill(encoded.attention_mask == 0, -100)
        model(**encoded, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(base)
    tokenizer.save_pretrained(base)
    rows = [{"prompt_id": i, "prompt": _rl_prompt(t), "keyword": "please"} for i, t in enumerate(RL_TRAIN_TOPICS)]
    prompts.write_text("".join(json.dumps(row) + "\n" for row in rows))
    _rl_bases[world.root] = base
    return base, prompts


def keyword_rate(policy: Path, samples: int = 32) -> float:
    """Share of fresh replies on the held-out topics that contain "please"."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(policy)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(policy).eval()
    torch.manual_seed(1)
    encoded = tokenizer([_rl_prompt(t) for t in RL_HELD_OUT_TOPICS for _ in range(samples)], return_tensors="pt",
                        padding=True)  # fmt: skip
    with torch.no_grad():
        output = model.generate(**encoded, do_sample=True, temperature=RL_TEMPERATURE, top_k=0, top_p=1.0,
                                max_new_tokens=20, pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    replies = tokenizer.batch_decode(output[:, encoded.input_ids.shape[1] :], skip_special_tokens=True)
    return sum("please" in reply.split() for reply in replies) / len(replies)


def _rl_result(base: Path, done: dict[str, Any], wall: float) -> dict[str, Any]:
    metrics = done["metrics"]
    before, after = keyword_rate(base), keyword_rate(Path(done["output_dir"]))
    return {
        "figure": "keyword rate of fresh replies on unseen topics",
        "value": after,
        "target": 0.8,
        "extra": f"base {before:.3f}; reward of held-out samples {metrics['eval/score_before']:.2f} -> "
        f"{metrics['eval/score_after']:.2f}, KL to reference {metrics['eval/kl_to_reference']:.2f}",
        "wall_s": wall,
        "train_s": metrics["train/runtime_s"],
    }


def _trained_reward(world: World) -> Path:
    if world.trained_reward is None:  # ppo/rloo alone: train the reward model first
        bench_reward(world)
    return world.trained_reward


def bench_ppo(world: World) -> dict[str, Any]:
    """PPO against the reward model trained by bench_reward (its value model starts from it)."""
    base, prompts = rl_base(world)
    params = {"max_steps": 40, "per_device_train_batch_size": 32, "max_new_tokens": 20, "eval_prompts": 8}
    done, wall = run_job(world, "ppo", base_model=str(base), reward_model=str(_trained_reward(world)),
                         prompts_path=str(prompts), params=params)  # fmt: skip
    return _rl_result(base, done, wall)


RL_RULES = [
    {"name": "exact_match", "weight": 1.0, "answer_field": "keyword", "mode": "contains"},
    {"name": "length_penalty", "weight": 0.5, "max_length": 16, "unit": "tokens"},
]


def bench_grpo(world: World) -> dict[str, Any]:
    """GRPO with verifiable rules: the prompt row's keyword must appear, and replies stay short."""
    base, prompts = rl_base(world)
    params = {"max_steps": 40, "learning_rate": 1e-3, "per_device_train_batch_size": 32, "num_generations": 8,
              "max_completion_length": 20, "temperature": RL_TEMPERATURE, "eval_prompts": 8, "rewards": RL_RULES}  # fmt: skip
    done, wall = run_job(world, "grpo", base_model=str(base), prompts_path=str(prompts), params=params)
    return _rl_result(base, done, wall)


def bench_rloo(world: World) -> dict[str, Any]:
    """RLOO with the learned reward model alone."""
    base, prompts = rl_base(world)
    params = {"max_steps": 40, "learning_rate": 1e-3, "per_device_train_batch_size": 32, "num_generations": 8,
              "max_completion_length": 20, "temperature": RL_TEMPERATURE, "eval_prompts": 8}  # fmt: skip
    done, wall = run_job(world, "rloo", base_model=str(base), reward_model=str(_trained_reward(world)),
                         prompts_path=str(prompts), params=params)  # fmt: skip
    return _rl_result(base, done, wall)


BENCHES.update({"ppo": bench_ppo, "grpo": bench_grpo, "rloo": bench_rloo})


def bench_reward_multi(world: World) -> dict[str, Any]:
    """Multi-objective reward (issue 14) on planted attributes (trainer.tiny.attribute_rows): "helpful" is the
    keyword, "verbose" the length. Figure: the smallest of the held-out correlations of each head with its
    attribute and of the folded scalar with the weighted attributes (the combined reward follows the weights)."""
    from trainer.encoding import encode_sequence
    from trainer.models import load_reward, load_tokenizer, reward_scores
    from trainer.reward_multi import pearson
    from trainer.tiny import attribute_rows

    train, test = attribute_rows(max(world_size(world) // 2, 64), seed=21), attribute_rows(128, seed=22)
    snapshot = write_snapshot(world.root / "snapshot-ratings", {"train": train, "test": test}, fmt="ratings")
    weights = {"helpful": 1.0, "verbose": -0.5}
    params = {"attribute_weights": weights, "preference_weight": 0.0, "num_train_epochs": 6, "learning_rate": 2e-3,
              "per_device_train_batch_size": 16}  # fmt: skip
    done, wall = run_job(world, "reward_multi", base_model=str(world.policy), dataset_path=str(snapshot), params=params)
    metrics = done["metrics"]
    out = Path(done["output_dir"])
    tokenizer = load_tokenizer(out)
    model = load_reward(out, tokenizer=tokenizer)
    scores = reward_scores(model, tokenizer, [encode_sequence(r["prompt"], r["completion"], tokenizer, 512) for r in test],
                           batch_size=32, max_length=512)  # fmt: skip
    heads = json.loads((out / "heads" / "heads.json").read_text())
    scaled = {name: [(r[name] - c) / h for r in test]
              for name, c, h in zip(heads["attributes"], heads["centers"], heads["half_ranges"], strict=True)}
    wanted = [sum(weights[name] * scaled[name][i] for name in weights) for i in range(len(test))]
    combined = pearson(scores, wanted) or 0.0
    helpful, verbose = metrics["eval/helpful/correlation"], metrics["eval/verbose/correlation"]
    return {
        "figure": "min held-out correlation (heads, combined)",
        "value": min(helpful, verbose, combined),
        "target": 0.8,
        "extra": f"helpful r {helpful:.3f} (RMSE {metrics['eval/helpful/rmse']:.2f}), verbose r {verbose:.3f} "
        f"(RMSE {metrics['eval/verbose/rmse']:.2f}), combined {weights} r {combined:.3f}, "
        f"preference accuracy {metrics.get('eval/preference_accuracy', float('nan')):.3f}",
        "wall_s": wall,
        "train_s": wall,
    }


def world_size(world: World) -> int:
    from trainer.data import read_rows

    return len(read_rows(world.snapshot, "train"))


BENCHES["reward_multi"] = bench_reward_multi


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", default=",".join(BENCHES), help=f"comma-separated, from {', '.join(BENCHES)}")
    parser.add_argument("--train", type=int, default=512, help="training pairs")
    parser.add_argument("--test", type=int, default=256, help="held-out pairs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="work in this directory and keep it (default: a temp dir)")
    args = parser.parse_args(argv)
    kinds = [kind.strip() for kind in args.kinds.split(",") if kind.strip()]
    unknown = [kind for kind in kinds if kind not in BENCHES]
    if unknown:
        parser.error(f"unknown kinds: {', '.join(unknown)}")

    root = args.keep or Path(tempfile.mkdtemp(prefix="rankforge-bench-"))
    if args.keep:
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
    started = time.monotonic()
    try:
        world = make_world(root, args.train, args.test, args.seed)
        print(f"synthetic keyword task: {args.train} train / {args.test} held-out pairs, tiny Llama models, CPU")
        missed = []
        for kind in kinds:
            result = BENCHES[kind](world)
            ok = result["value"] >= result["target"]
            missed += [] if ok else [kind]
            print(
                f"{kind:8s} {result['figure']}: {result['value']:.3f} (target >= {result['target']}, "
                f"{'ok' if ok else 'MISSED'}); {result['extra']}; "
                f"train {result['train_s']:.1f} s, job wall {result['wall_s']:.1f} s"
            )
        print(f"total {time.monotonic() - started:.1f} s")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
