"""PPO end to end through trainer.run: it learns what a reward model (trained here on keyword pairs) rewards,
reports KL to the reference, writes a policy checkpoint, fails clearly, and stops promptly on SIGTERM.

The synthetic task: a tiny policy warm-started to answer "Write a short reply about X." with filler words,
saying "please" in about one reply in four; the reward model prefers replies with "please". Learning shows on
prompts about topics PPO never trained on, measured here by sampling the saved checkpoint and counting the
keyword (the true property, independent of the reward model and of the trainer's own metrics).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import random
import re
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from tests.trainer.conftest import ROOT, child_env, parsed, run_job, spec_for
from trainer import ppo
from trainer.tiny import KEYWORD, build_tiny_reward, keyword_pairs, train_tokenizer

pytestmark = pytest.mark.training

# Tiny models run several times faster on one thread than on two contended ones (shared 2-core runners).
ONE_THREAD = {"OMP_NUM_THREADS": "1"}

TRAIN_TOPICS = ["cats", "rain", "trains", "bread", "music", "rivers", "chess", "tea", "maps", "stars", "boats",
                "snow", "birds", "clocks", "hills", "lamps", "books", "coffee", "shoes", "roads"]  # fmt: skip
HELD_OUT_TOPICS = ["kites", "apples", "clouds", "gardens", "horses", "bikes", "waves", "paper"]

FAST_PPO = {
    "max_steps": 15,
    "per_device_train_batch_size": 16,
    "max_new_tokens": 16,
    "eval_prompts": 6,
    "logging_steps": 5,
}


@contextlib.contextmanager
def one_torch_thread():
    """In-process training on one thread too (see ONE_THREAD), restoring the caller's setting afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def prompt_text(topic: str) -> str:
    return f"Write a short reply about {topic}.\n"  # the prompt format of trainer.tiny.keyword_pairs


@dataclass
class RLWorld:
    """Models and prompts for the RL tests, built once per session (a marker file makes it reusable)."""

    base: Path  # warm-started policy: says KEYWORD in about a quarter of its replies
    reward: Path  # reward model trained on keyword pairs by trainer.reward (shares the policy tokenizer)
    prompts: Path  # prompts.jsonl of TRAIN_TOPICS, each row with an extra "keyword" field
    temperature: float = 0.7


def warm_start(
    policy_dir: Path, out_dir: Path, *, steps: int, seed: int, keyword_share: float = 0.25
) -> Path:
    """Supervised warm start of the random tiny policy on keyword-task replies (prompt + reply + EOS), with
    KEYWORD in `keyword_share` of them: a base policy that answers in the task's format and sometimes says it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(policy_dir)
    model = AutoModelForCausalLM.from_pretrained(policy_dir)
    rows = keyword_pairs(512, seed=seed)
    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        batch = []
        for row in rng.sample(rows, 32):
            topic = rng.choice(TRAIN_TOPICS + HELD_OUT_TOPICS)
            reply = row["chosen"] if rng.random() < keyword_share else row["rejected"]
            batch.append(prompt_text(topic) + reply + tokenizer.eos_token)
        encoded = tokenizer(batch, return_tensors="pt", padding=True)
        labels = encoded.input_ids.masked_fill(encoded.attention_mask == 0, -100)
        model(**encoded, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def build_rl_world(root: Path, tiny) -> RLWorld:
    """Warm-started policy + reward model trained with trainer.reward on the keyword pairs snapshot."""
    from trainer import reward

    world = RLWorld(base=root / "base", reward=root / "reward", prompts=root / "prompts.jsonl")
    if (root / "ready").exists():
        return world
    root.mkdir(parents=True, exist_ok=True)
    with one_torch_thread():
        torch.manual_seed(0)
        warm_start(tiny.policy, world.base, steps=150, seed=0)
        spec = spec_for("reward", world.reward, base_model=str(tiny.reward), dataset_path=str(tiny.pairs))
        world.reward.mkdir()
        metrics = reward.main(parsed(spec), world.reward)
        assert metrics["eval/accuracy"] >= 0.8, metrics  # the reward model really learned the keyword
    rows = [
        {"prompt_id": i, "prompt": prompt_text(t), "keyword": KEYWORD} for i, t in enumerate(TRAIN_TOPICS)
    ]
    world.prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "ready").write_text("ok")
    return world


@pytest.fixture(scope="module")
def rl_world(tmp_path_factory, tiny) -> RLWorld:
    return build_rl_world(tmp_path_factory.getbasetemp() / "rl-world", tiny)


@torch.no_grad()
def keyword_rate(
    policy_dir: Path, topics: list[str], *, temperature: float, samples: int = 8, seed: int = 1
) -> float:
    """Share of sampled replies (fresh, `samples` per prompt) that contain KEYWORD."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(policy_dir)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(policy_dir).eval()
    torch.manual_seed(seed)
    prompts = [prompt_text(t) for t in topics for _ in range(samples)]
    encoded = tokenizer(prompts, return_tensors="pt", padding=True)
    with one_torch_thread():
        output = model.generate(
            **encoded, do_sample=True, temperature=temperature, top_k=0, top_p=1.0, max_new_tokens=16,
            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        )  # fmt: skip
    replies = tokenizer.batch_decode(output[:, encoded.input_ids.shape[1] :], skip_special_tokens=True)
    return sum(KEYWORD in reply.split() for reply in replies) / len(replies)


def test_ppo_learns_what_the_reward_model_rewards(tmp_path, rl_world):
    out = tmp_path / "ppo-policy"
    spec = spec_for(
        "ppo", out, base_model=str(rl_world.base), reward_model=str(rl_world.reward),
        prompts_path=str(rl_world.prompts), params=FAST_PPO,
    )  # fmt: skip
    result = run_job(tmp_path, spec, env=child_env() | ONE_THREAD)
    done = result.done
    assert result.returncode == 0 and done["kind"] == "policy"
    metrics = done["metrics"]

    # The trainer's own before/after on held-out prompts: fresh samples score clearly higher, KL is reported.
    assert metrics["eval/held_out"] is True and metrics["eval/prompts"] == 6
    assert metrics["eval/score_after"] > metrics["eval/score_before"] + 1.0, metrics
    assert 0.0 < metrics["eval/kl_to_reference"] < 100.0

    # Metrics are grouped cleanrl/TRL style and logged during training.
    logged = [e["metrics"] for e in result.of("metrics")]
    names = set().union(*logged)
    for name in ("objective/scores", "objective/kl", "objective/entropy", "objective/kl_coef", "policy/clipfrac",
                 "policy/approxkl", "loss/value", "loss/policy", "val/clipfrac", "rollout/eos_fraction"):  # fmt: skip
        assert name in names, name
    training = [m for m in logged if "objective/scores" in m]
    assert len(training) == 3  # logging_steps 5 of 15 updates
    fractions = [e["progress"] for e in result.of("progress")]
    assert fractions == sorted(fractions)

    # The checkpoint is a policy; sampled on topics PPO never saw, it says the keyword far more often.
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "policy" and manifest["job_kind"] == "ppo"
    assert manifest["params"]["max_steps"] == 15 and manifest["metrics"] == metrics
    before = keyword_rate(rl_world.base, HELD_OUT_TOPICS, temperature=rl_world.temperature)
    after = keyword_rate(out, HELD_OUT_TOPICS, temperature=rl_world.temperature)
    print(f"ppo: score {metrics['eval/score_before']:.2f} -> {metrics['eval/score_after']:.2f}, KL "
          f"{metrics['eval/kl_to_reference']:.2f}; keyword rate on unseen topics {before:.2f} -> {after:.2f}")  # fmt: skip
    assert after >= before + 0.25, (before, after)


def test_adaptive_kl_controller_moves_towards_the_target():
    controller = ppo.AdaptiveKLController(0.1, target=6.0, horizon=100)
    controller.update(current_kl=12.0, n_steps=10)  # KL above target: the penalty grows, by at most 20% x n/h
    assert controller.value == pytest.approx(0.1 * (1 + 0.2 * 10 / 100))
    controller = ppo.AdaptiveKLController(0.1, target=6.0, horizon=100)
    controller.update(current_kl=5.4, n_steps=10)  # below: it shrinks in proportion to the error
    assert controller.value == pytest.approx(0.1 * (1 - 0.1 * 10 / 100))


def test_masked_whiten_ignores_masked_entries():
    values = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1, 1, 1, 0]]).bool()
    whitened = ppo.masked_whiten(values, mask)
    assert float(ppo.masked_mean(whitened, mask)) == pytest.approx(0.0, abs=1e-6)
    assert float(ppo.masked_mean(whitened**2, mask)) == pytest.approx(1.0, abs=1e-4)  # the 100 was ignored


def test_ppo_fails_clearly_without_a_usable_reward_model(tmp_path, tiny):
    missing = tmp_path / "no-reward"
    spec = spec_for("ppo", tmp_path / "o", base_model=str(tiny.policy), reward_model=str(missing),
                    prompts_path=str(tmp_path / "p.jsonl"))  # fmt: skip
    with pytest.raises(FileNotFoundError, match=f"reward model.*{re.escape(str(missing))}"):
        ppo.main(parsed(spec), tmp_path)

    other_tokenizer = train_tokenizer(["an entirely different corpus of words"] * 20, vocab_size=300)
    foreign = build_tiny_reward(tmp_path / "foreign-reward", other_tokenizer)
    spec["reward_model"] = str(foreign)
    with pytest.raises(ValueError, match="shares the policy's tokenizer"):
        ppo.main(parsed(spec), tmp_path)


def test_sigterm_stops_a_ppo_run_promptly_and_leaves_no_output(tmp_path, rl_world):
    out = tmp_path / "cancelled-policy"
    spec = spec_for(
        "ppo", out, base_model=str(rl_world.base), reward_model=str(rl_world.reward),
        prompts_path=str(rl_world.prompts), params={**FAST_PPO, "max_steps": 100000, "logging_steps": 1},
    )  # fmt: skip
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec))
    child = subprocess.Popen(
        [sys.executable, "-m", "trainer.run", str(spec_path)],
        cwd=ROOT, env=child_env() | ONE_THREAD, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        start_new_session=True,  # its own process group: afterwards we can check that no process of it is left
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in child.stdout], daemon=True)
    reader.start()
    try:
        while True:  # wait until PPO updates are under way
            event = json.loads(lines.get(timeout=120))
            if event["event"] == "metrics" and "objective/scores" in event["metrics"]:
                break
        child.send_signal(signal.SIGTERM)
        returncode = child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    reader.join(timeout=10)
    assert returncode != 0
    with pytest.raises(ProcessLookupError):  # no process of its group (children included) survived
        os.killpg(child.pid, 0)
    events = []
    while not lines.empty():
        events.append(json.loads(lines.get()))
    assert events and events[-1] == {"event": "error", "message": "cancelled (SIGTERM)"}
    assert not out.exists()
    assert not list(tmp_path.glob(f"{out.name}.partial-*"))
