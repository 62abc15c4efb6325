"""LoRA (peft): reward and DPO train adapters that generate and score load on their base; merging writes a full
checkpoint; every training kind takes the lora_* params; QLoRA is refused clearly without CUDA."""

from __future__ import annotations

import json

import pytest

from tests.trainer.conftest import parsed, run_job, spec_for
from trainer import dpo, generate, kto, reward
from trainer.models import lora_config
from trainer.params import KIND_INFO, TrainArgs, parse_params

pytestmark = pytest.mark.training
FAST = {"max_steps": 2, "per_device_train_batch_size": 4, "logging_steps": 1, "max_length": 64,
        "use_lora": True, "lora_r": 4, "lora_alpha": 8, "learning_rate": 1e-3}  # fmt: skip


def _prompts(tmp_path, completions: bool = False):
    path = tmp_path / "prompts.jsonl"
    rows = [{"prompt_id": i, "prompt": f"Write a short reply about {t}.\n"} for i, t in enumerate(["tea", "snow"])]
    if completions:
        for row in rows:
            row["completions"] = [{"completion_id": 10 * row["prompt_id"] + j, "text": t}
                                  for j, t in enumerate(["please tea", "tea"])]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_reward_lora_writes_an_adapter_that_scores_on_its_base(tmp_path, tiny):
    out = tmp_path / "reward-adapter"
    result = run_job(tmp_path, spec_for("reward", out, base_model=str(tiny.reward), dataset_path=str(tiny.pairs),
                                        params=FAST))  # fmt: skip
    assert result.done["metrics"]["train/steps"] == 2
    assert (out / "adapter_config.json").is_file() and not (out / "model.safetensors").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["adapter"] is True and manifest["adapter_base_model"] == str(tiny.reward)
    assert (out / "README.md").read_text().startswith("---\nlibrary_name: peft")

    scored = run_job(tmp_path, spec_for("score", tmp_path / "scores", reward_model=str(out),
                                        prompts_path=str(_prompts(tmp_path, completions=True))))  # fmt: skip
    assert scored.done["metrics"]["scores/count"] == 4


def test_dpo_lora_adapter_generates_and_merging_writes_a_full_checkpoint(tmp_path, tiny):
    out = tmp_path / "dpo-adapter"
    out.mkdir()
    metrics = dpo.main(parsed(spec_for("dpo", out, base_model=str(tiny.policy), dataset_path=str(tiny.pairs),
                                       params=FAST)), out)  # fmt: skip
    assert metrics["train/steps"] == 2 and (out / "adapter_config.json").is_file()

    generated = tmp_path / "generated"
    generated.mkdir()
    gen = generate.main(parsed(spec_for("generate", generated, base_model=str(out), prompts_path=str(_prompts(tmp_path)),
                                        params={"max_new_tokens": 4})), generated)  # fmt: skip
    assert gen["generate/completions"] == 4

    merged = tmp_path / "dpo-merged"
    result = run_job(tmp_path, spec_for("dpo", merged, base_model=str(tiny.policy), dataset_path=str(tiny.pairs),
                                        params=FAST | {"merge_adapter": True}))  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert (merged / "config.json").is_file() and (merged / "model.safetensors").is_file()
    assert not (merged / "adapter_config.json").exists()
    manifest = json.loads((merged / "manifest.json").read_text())
    assert manifest["adapter"] is False and manifest["merged_adapter"] is True


def test_kto_takes_lora(tmp_path, tiny):
    out = tmp_path / "kto-adapter"
    out.mkdir()
    metrics = kto.main(parsed(spec_for("kto", out, base_model=str(tiny.policy), dataset_path=str(tiny.kto),
                                       params=FAST | {"eval_split": ""})), out)  # fmt: skip
    assert metrics["train/steps"] == 2 and (out / "adapter_config.json").is_file()


@pytest.mark.parametrize("kind", ["reward", "dpo", "kto", "ppo", "grpo", "rloo"])
def test_every_training_kind_takes_the_lora_params(kind):
    args = parse_params(kind, {"use_lora": True, "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.1,
                               "lora_target_modules": ["q_proj", "v_proj"]})  # fmt: skip
    assert issubclass(KIND_INFO[kind].args, TrainArgs)
    config = lora_config(args, "SEQ_CLS" if kind == "reward" else "CAUSAL_LM")
    assert config.r == 8 and config.lora_alpha == 16 and set(config.target_modules) == {"q_proj", "v_proj"}
    default = lora_config(parse_params(kind, {"use_lora": True}), "CAUSAL_LM")
    assert default.target_modules == "all-linear"
    assert lora_config(parse_params(kind, {}), "CAUSAL_LM") is None


def test_qlora_is_refused_clearly_without_cuda(tmp_path, tiny):
    out = tmp_path / "qlora"
    result = run_job(tmp_path, spec_for("dpo", out, base_model=str(tiny.policy), dataset_path=str(tiny.pairs),
                                        params=FAST | {"load_in_4bit": True}))  # fmt: skip
    assert result.returncode == 1 and "load_in_4bit (QLoRA) needs a CUDA GPU" in result.last["message"]
    assert not out.exists()


def test_reward_lora_in_process_trains_the_score_head(tmp_path, tiny):
    out = tmp_path / "in-process"
    out.mkdir()
    metrics = reward.main(parsed(spec_for("reward", out, base_model=str(tiny.reward), dataset_path=str(tiny.pairs),
                                          params=FAST | {"eval_split": ""})), out)  # fmt: skip
    assert metrics["train/steps"] == 2
    saved = json.loads((out / "adapter_config.json").read_text())
    assert saved["task_type"] == "SEQ_CLS" and saved["modules_to_save"]  # the score head is trained and saved


@pytest.mark.parametrize("kind", ["grpo", "rloo", "ppo"])
def test_rl_kinds_train_a_lora_adapter(tmp_path, tiny, kind):
    from trainer import grpo, ppo

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt_id": i, "prompt": f"Write a short reply about {t}.\n",
                                           "keyword": "please"}) + "\n"
                               for i, t in enumerate(["tea", "snow", "maps", "cats"])))  # fmt: skip
    out = tmp_path / kind
    out.mkdir()
    params = {"max_steps": 1, "use_lora": True, "lora_r": 4, "lora_alpha": 8, "eval_prompts": 0,
              "per_device_train_batch_size": 4, "per_device_eval_batch_size": 4}  # fmt: skip
    if kind == "ppo":
        params |= {"max_new_tokens": 4, "num_ppo_epochs": 1}
        spec = spec_for(kind, out, base_model=str(tiny.policy), reward_model=str(tiny.reward),
                        prompts_path=str(prompts), params=params)  # fmt: skip
        metrics = ppo.main(parsed(spec), out)
    else:
        params |= {"num_generations": 2, "max_completion_length": 4,
                   "rewards": [{"name": "exact_match", "weight": 1.0, "answer_field": "keyword", "mode": "contains"}]}  # fmt: skip
        spec = spec_for(kind, out, base_model=str(tiny.policy), prompts_path=str(prompts), params=params)
        metrics = (grpo.main_grpo if kind == "grpo" else grpo.main_rloo)(parsed(spec), out)
        assert metrics["train/generation_backend"] == "transformers"
    assert (out / "adapter_config.json").is_file() and not (out / "model.safetensors").exists()
