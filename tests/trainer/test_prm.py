"""Process reward models (kind prm): training on a stepwise snapshot with a planted bad step, the typed result, any
local checkpoint as the base (a Llama with chat template and pad, a GPT-2 without either, a BERT encoder), and a
PRM used as the outcome of score jobs and of GRPO/RLOO's reward_model reward (min or last step score)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.trainer.conftest import parsed, run_job, spec_for
from trainer import prm
from trainer.results import PRMResult, read_result
from trainer.tiny import (
    build_tiny_encoder,
    build_tiny_gpt2,
    build_tiny_policy,
    train_tokenizer,
    write_snapshot,
)
from trainer.tiny_steps import planted_stepwise, texts, trajectory

pytestmark = pytest.mark.training

LEARN = {"max_steps": 150, "learning_rate": 3e-3, "warmup_steps": 0.05, "per_device_train_batch_size": 8,
         "bad_step_weight": 4.0}
"""Enough for a tiny Llama to learn the test's planted task (a wrong argument answered by a tool error: a cue inside
the step; bench/steps.py measures the harder task where the result looks plausible)."""


@pytest.fixture(scope="module")
def steps_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("prm")
    train, test = planted_stepwise(200, seed=1, failing=True), planted_stepwise(80, seed=2, failing=True)
    tokenizer = train_tokenizer(texts(train + test), vocab_size=512)
    snapshot = write_snapshot(root / "snapshot-steps", {"train": train, "test": test}, fmt="steps")
    policy = build_tiny_policy(root / "policy", tokenizer, seed=0)
    return {"root": root, "snapshot": snapshot, "policy": policy, "texts": texts(train + test), "test": test}


@pytest.fixture(scope="module")
def trained_prm(steps_world):
    root = steps_world["root"]
    out = root / "prm"
    spec = spec_for("prm", out, base_model=str(steps_world["policy"]), dataset_path=str(steps_world["snapshot"]),
                    params=LEARN)  # fmt: skip
    result = run_job(root, spec, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    epochs = [e["metrics"] for e in result.of("metrics") if "validation/first_error_accuracy" in e["metrics"]]
    return out, result.done["metrics"] | {"_validation_epochs": epochs}


def test_prm_learns_the_planted_bad_step(trained_prm):
    out, metrics = trained_prm
    chance = 1 - metrics["eval/bad_step_share"]  # calling every step good
    assert metrics["eval/trajectories"] == 80
    assert metrics["eval/step_accuracy"] >= chance + 0.05, metrics
    assert metrics["eval/first_error_accuracy"] >= 0.7, metrics  # "no error anywhere" gets 0.5
    assert metrics["eval/outcome_auroc"] >= 0.8, metrics

    result = read_result(out)
    assert isinstance(result, PRMResult) and result.model_kind == "prm"
    assert result.step_accuracy == metrics["eval/step_accuracy"]
    assert result.first_error_accuracy == metrics["eval/first_error_accuracy"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "prm" and manifest["job_kind"] == "prm"
    assert prm.is_prm(out) and prm.prm_config(out)["step_separator"] == "\n\n"


def test_prm_keeps_the_epoch_best_on_held_out_training_trajectories(trained_prm):
    """validation_share (default 0.1): 20 of the 200 training trajectories (12 prompts: held out by trajectory) are
    scored after every epoch; the kept weights are the best epoch's (the last of equals), reported and typed."""
    out, metrics = trained_prm
    epochs = metrics["_validation_epochs"]
    assert metrics["train/trajectories"] == 180 and metrics["validation/trajectories"] == 20
    assert len(epochs) == metrics["validation/epochs"] >= 2
    scores = [epoch["validation/first_error_accuracy"] for epoch in epochs]
    best = len(scores) - 1 - scores[::-1].index(max(scores))
    assert metrics["validation/first_error_accuracy"] == max(scores)
    assert metrics["validation/loss"] == epochs[best]["validation/loss"]
    assert 0 < metrics["validation/best_epoch"] <= metrics["validation/epochs"]
    result = read_result(out)
    assert result.best_epoch == metrics["validation/best_epoch"]
    assert result.validation_first_error_accuracy == max(scores) and result.validation_loss > 0


def test_prm_restarts_keep_the_run_best_on_validation(steps_world):
    """restarts=2: two trainings from the base (seeds 0 and 1), each scored on the validation trajectories after
    every epoch; the run whose best epoch is best is kept (a tie keeps the first), reported as validation/restart."""
    root = steps_world["root"]
    out = root / "prm-restarts"
    params = {"num_train_epochs": 2, "learning_rate": 3e-3, "per_device_train_batch_size": 8, "bad_step_weight": 4.0,
              "restarts": 2, "eval_split": ""}  # fmt: skip
    spec = spec_for("prm", out, base_model=str(steps_world["policy"]), dataset_path=str(steps_world["snapshot"]),
                    params=params)  # fmt: skip
    result = run_job(root, spec, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = result.done["metrics"]
    epochs = [e["metrics"]["validation/first_error_accuracy"] for e in result.of("metrics")
              if "validation/first_error_accuracy" in e["metrics"]]  # fmt: skip
    assert len(epochs) == 4 and metrics["validation/epochs"] == 2  # 2 epochs of each run
    runs = [max(epochs[:2]), max(epochs[2:])]
    assert metrics["validation/restarts"] == 2
    assert metrics["validation/restart"] == (0 if runs[0] >= runs[1] else 1)
    assert metrics["validation/first_error_accuracy"] == max(runs)
    logs = [e["message"] for e in result.of("log") if "restart" in e["message"]]
    assert len(logs) == 2 and logs[1].startswith("prm: restart 2 of 2 (seed 1)")
    assert prm.is_prm(out)
    from trainer.params import PRMArgs

    for bad in (0, 17, True, 2.5):  # a job trains at most 16 times
        with pytest.raises(ValueError, match="restarts"):
            PRMArgs(restarts=bad)


def test_validation_split_holds_out_by_prompt_or_by_trajectory():
    from trainer.params import PRMArgs

    many = [{"prompt": f"p{i // 2}", "completions": ["a"], "labels": [True]} for i in range(200)]  # 100 prompts
    train, held = prm.validation_split(many, 0.1, seed=3, min_rows=100)
    assert len(held) == 20 and len(train) == 180 and not {r["prompt"] for r in held} & {r["prompt"] for r in train}
    assert prm.validation_split(many, 0.1, seed=3, min_rows=100) == (train, held)  # the seed decides
    few = [{"prompt": f"p{i % 12}", "completions": [str(i)], "labels": [True]} for i in range(200)]  # 12 prompts
    train, held = prm.validation_split(few, 0.1, seed=3, min_rows=100)
    assert len(held) == 20 and len({r["prompt"] for r in held}) > 1  # by trajectory: no prompt taken out whole
    assert prm.validation_split(few[:99], 0.1, seed=3, min_rows=100) == (few[:99], [])
    assert prm.validation_split(few, 0.0, seed=3, min_rows=100) == (few, [])
    with pytest.raises(ValueError, match="validation_metric"):
        PRMArgs(validation_metric="recall")
    with pytest.raises(ValueError, match="validation_share"):
        PRMArgs(validation_share=1.0)


def test_score_job_with_a_prm_takes_the_min_or_last_step_score(tmp_path, trained_prm):
    """Bad trajectories (a planted wrong argument) score below good ones; last differs from min where the bad
    step is not the last one."""
    import random

    out, _ = trained_prm
    rng = random.Random(7)
    trajectories = [trajectory(rng, bad=i % 2 == 1, failing=True) for i in range(40)]
    prompts = tmp_path / "prompts.jsonl"
    with open(prompts, "w", encoding="utf-8") as handle:
        for i, traj in enumerate(trajectories):
            steps = "\n\n".join(prm.step_text(step) for step in _steps(traj))
            handle.write(json.dumps({"prompt_id": i, "prompt": traj["prompt"][0]["content"],
                                     "completions": [{"completion_id": i, "text": steps}]}) + "\n")  # fmt: skip
    scores = {}
    for how in ("min", "last"):
        result = run_job(tmp_path, spec_for("score", tmp_path / f"scores-{how}", reward_model=str(out),
                                            prompts_path=str(prompts), params={"prm_outcome": how}))  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        rows = [json.loads(line) for line in (tmp_path / f"scores-{how}" / "scores.jsonl").read_text().splitlines()]
        scores[how] = {row["completion_id"]: row["score"] for row in rows}
    bad = [i for i, t in enumerate(trajectories) if t["bad_step"] is not None]
    good = [i for i, t in enumerate(trajectories) if t["bad_step"] is None]
    assert prm.auroc([scores["min"][i] for i in good], [scores["min"][i] for i in bad]) >= 0.8
    assert all(scores["min"][i] <= scores["last"][i] for i in scores["min"])
    assert any(scores["min"][i] < scores["last"][i] for i in bad)


def test_grpo_reward_model_reward_uses_a_prm(trained_prm):
    from trainer.rewards import build_rewards
    from trainer.rewards.reward_model import ProcessRewardModelReward

    out, _ = trained_prm
    rewards = build_rewards([{"name": "reward_model", "prm_outcome": "last"}], reward_model_path=str(out))
    assert isinstance(rewards[0].func, ProcessRewardModelReward) and rewards[0].func.scorer.outcome == "last"
    prompt = "Plan my trip to Oslo: check what I need before I go."
    good = 'call: get_weather({"city": "Oslo"})\nresult: Oslo: 5 degrees, snow\n\nYour trip to Oslo is planned.'
    as_messages = [{"role": "assistant", "content": "", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}]},
        {"role": "tool", "tool_call_id": "c", "content": "Oslo: 5 degrees, snow"},
        {"role": "assistant", "content": "Your trip to Oslo is planned."}]  # fmt: skip
    values = rewards[0].func([prompt, prompt], [good, as_messages])
    assert len(values) == 2 and all(0.0 <= v <= 1.0 for v in values)
    assert values[0] == pytest.approx(values[1], abs=1e-5)  # the same steps, as text or as messages
    with pytest.raises(ValueError, match="prm_outcome"):
        build_rewards([{"name": "reward_model", "prm_outcome": "min"}], reward_model_path=str(out.parent / "policy"))


def test_a_prm_judge_prefers_the_good_trajectory_and_follows_the_prm_scores(tmp_path, trained_prm):
    """A `judge` job with method prm on comparisons of two trajectories for one request, one of them with a planted
    bad call: the good one wins far more often than chance, and every verdict is exactly what the PRM's own step
    scores say (outcome = min or last step score, the higher wins, P = (1 + a - b) / 2, a tie within the margin)."""
    import random

    out, _ = trained_prm
    rng = random.Random(11)
    rows, good_ids = [], set()
    for i in range(20):
        city = rng.choice(sorted({"Paris", "Rome", "Oslo", "Lima", "Cairo", "Tokyo"}))
        good, bad = (trajectory(rng, bad=b, city=city, plan=k, failing=True) for k, b in enumerate((False, True)))
        shown = [good, bad] if i % 2 == 0 else [bad, good]  # the good one first or second
        completions = [{"completion_id": 10 * i + k, "text": t["continuation"][-1]["content"],
                        "messages": t["continuation"]} for k, t in enumerate(shown)]  # fmt: skip
        good_ids.add(10 * i + shown.index(good))
        rows.append({"comparison_id": i, "prompt": good["prompt"][0]["content"], "completions": completions})
    inputs = tmp_path / "comparisons.jsonl"
    inputs.write_text("".join(json.dumps(row) + "\n" for row in rows))
    scorer = prm.ProcessRewardScorer(out)
    direct = {c["completion_id"]: scores for row in rows for c, scores in zip(
        row["completions"], scorer.step_scores([row["prompt"]] * 2, [c["messages"] for c in row["completions"]]),
        strict=True)}  # fmt: skip

    for how, margin in (("min", 0.0), ("last", 0.0), ("min", 1.0 - 1e-9)):
        result = run_job(tmp_path, spec_for("judge", tmp_path / f"judged-{how}-{margin}", reward_model=str(out),
                                            prompts_path=str(inputs), params={"method": "prm", "prm_outcome": how,
                                                                              "tie_margin": margin}))  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        verdicts = [json.loads(line) for line in (tmp_path / f"judged-{how}-{margin}" / "judgments.jsonl")
                    .read_text().splitlines()]  # fmt: skip
        assert len(verdicts) == 20 and result.done["metrics"]["judge/comparisons"] == 20
        for verdict in verdicts:
            a, b = sorted(int(c) for c in verdict["prm"]["outcomes"])
            for cid in (a, b):  # the judge scored the same steps the PRM scores directly
                assert verdict["prm"]["step_scores"][str(cid)] == pytest.approx(direct[cid], abs=1e-5)
                assert verdict["prm"]["outcomes"][str(cid)] == pytest.approx(prm.outcome(direct[cid], how), abs=1e-5)
            oa, ob = verdict["prm"]["outcomes"][str(a)], verdict["prm"]["outcomes"][str(b)]
            assert verdict["pairs"] == [[a, b, pytest.approx(0.5 if abs(oa - ob) <= margin else (1 + oa - ob) / 2)]]
            if abs(oa - ob) <= margin:
                assert [sorted(g) for g in verdict["ranking"]] == [[a, b]] and verdict["confidence"] == 0.5
            else:
                assert verdict["ranking"] == ([[a], [b]] if oa > ob else [[b], [a]])
                assert verdict["confidence"] == pytest.approx((1 + abs(oa - ob)) / 2)
            assert verdict["p_first"] == []  # it reads each trajectory alone: no position to be biased by
        wins = sum(v["ranking"][0] == [c] for v in verdicts for c in good_ids if len(v["ranking"]) == 2)
        print(f"prm judge ({how}, tie margin {margin:g}): the good trajectory won {wins} of 20")  # shown with -s
        if margin == 0.0 and how == "min":
            assert wins >= 16, wins  # P(>= 16 of 20 by chance) = 0.006
        if margin > 0.5:
            assert all(len(v["ranking"]) == 1 for v in verdicts)  # everything within the margin: all ties


@pytest.mark.parametrize("build", [build_tiny_gpt2, build_tiny_encoder], ids=["gpt2-no-pad-no-template", "bert-encoder"])
def test_prm_trains_from_other_architectures(tmp_path, steps_world, build):
    """A decoder without pad token or chat template, and an encoder (its WordPiece drops the blank-line separator:
    SEP stands in), train a few steps and score; long trajectories lose their last steps on the encoder's 128
    positions rather than failing."""
    base = build(tmp_path / "base", steps_world["texts"])
    out = tmp_path / "prm"
    result = run_job(tmp_path, spec_for("prm", out, base_model=str(base), dataset_path=str(steps_world["snapshot"]),
                                        params={"max_steps": 3, "per_device_train_batch_size": 4}))  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = result.done["metrics"]
    assert metrics["eval/trajectories"] == 80 and 0.0 <= metrics["eval/step_accuracy"] <= 1.0
    scorer = prm.ProcessRewardScorer(out)
    rows = steps_world["test"][:3]
    scores = scorer.step_scores([r["prompt"] for r in rows], ["\n\n".join(r["completions"]) for r in rows])
    assert all(1 <= len(s) <= len(r["completions"]) for s, r in zip(scores, rows, strict=True))
    if build is build_tiny_encoder:
        assert scorer.sep == [scorer.tokenizer.sep_token_id]


def test_encoding_puts_each_label_on_the_separator_end(steps_world):
    from trainer.models import load_tokenizer

    tokenizer = load_tokenizer(steps_world["policy"])
    sep = prm.separator_ids(tokenizer, "\n\n")
    row = {"prompt": "p", "completions": ["one", "two", "three"], "labels": [True, True, False]}
    (encoded,), fit = prm.training_rows([row], tokenizer, sep, 512)
    marked = [(i, label) for i, label in enumerate(encoded["labels"]) if label != prm.IGNORE]
    assert [label for _, label in marked] == [1, 1, 0]
    assert all(encoded["input_ids"][i - len(sep) + 1 : i + 1] == sep for i, _ in marked)
    (last_only,), _ = prm.training_rows([row], tokenizer, sep, 512, last_step_only=True)
    assert [label for label in last_only["labels"] if label != prm.IGNORE] == [0]
    # too long: the prompt's start goes first, then the last steps with their labels
    short = prm.encode_steps("a long prompt " * 20, ["one", "two", "three"], tokenizer, sep, 12, [True, True, False])
    assert short.truncated and len(short.input_ids) <= 12 and 1 <= len(short.labels) < 3
    with pytest.raises(ValueError, match="same length"):
        prm.training_rows([{"prompt": "p", "completions": ["a"], "labels": []}], tokenizer, sep, 512)
    assert parsed(spec_for("prm", Path("/tmp/x"), params={"step_separator": "\n"})).args.step_separator == "\n"


def _steps(traj):
    from trainer.tiny_steps import steps_of

    return steps_of(traj)


def test_a_self_correcting_agent_follows_its_wrong_call_with_a_correction():
    """bench/steps.py pretrains its base on these logs: the step after the wrong call says CORRECTION and repeats the
    call with the request's city; a good trajectory has no correction; the wrong call keeps its index."""
    import json
    import random

    from trainer.tiny_steps import CITIES, CORRECTION, trajectory

    rng = random.Random(5)
    for bad in [True] * 20 + [False] * 20:
        traj = trajectory(rng, bad, correcting=True)
        steps = _steps(traj)
        city = next(c for c in CITIES if f"to {c}:" in traj["prompt"][0]["content"])
        calls = [step[0]["tool_calls"][0]["function"] for step in steps[:-1]]
        arguments = [next(iter(call["arguments"].values())) for call in calls]
        corrections = [i for i, step in enumerate(steps) if step[0]["content"] == CORRECTION]
        if not bad:
            assert traj["bad_step"] is None and corrections == [] and set(arguments) == {city}
            continue
        wrong = traj["bad_step"]
        assert corrections == [wrong + 1] and arguments[wrong] != city
        assert calls[wrong + 1]["name"] == calls[wrong]["name"] and arguments[wrong + 1] == city
        assert [a for i, a in enumerate(arguments) if i != wrong] == [city] * (len(arguments) - 1)
        assert steps[wrong + 1][1]["role"] == "tool" and city in steps[wrong + 1][1]["content"]
        json.dumps(traj)  # plain data, as the import format needs
