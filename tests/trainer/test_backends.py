"""Generation backends: vLLM where it is installed and a GPU is present, transformers (batched, left-padded, KV
cache) otherwise; which one ran is recorded. CPU without vLLM is the tested default."""

from __future__ import annotations

import json

import pytest

from tests.trainer.conftest import parsed, spec_for
from trainer import generate
from trainer.generate import generation_backend, vllm_usable
from trainer.grpo import sampling_backend
from trainer.params import parse_params

pytestmark = pytest.mark.training


def test_auto_picks_transformers_without_vllm_and_a_gpu_and_vllm_is_refused_clearly():
    if vllm_usable():
        pytest.skip("this machine has vLLM and a GPU: auto picks vLLM here")
    assert generation_backend("auto") == "transformers" == generation_backend("transformers")
    with pytest.raises(ValueError, match="backend vllm needs the vllm package and a CUDA GPU"):
        generation_backend("vllm")
    with pytest.raises(ValueError, match="must be auto, transformers or vllm"):
        generation_backend("fast")
    assert sampling_backend(parse_params("grpo", {})) == "transformers"
    assert sampling_backend(parse_params("rloo", {"use_vllm": "off"})) == "transformers"
    with pytest.raises(ValueError, match="use_vllm on needs the vllm package"):
        sampling_backend(parse_params("grpo", {"use_vllm": "on"}))


def test_generate_records_its_backend_and_keeps_the_prompt_order(tmp_path, tiny):
    prompts = tmp_path / "prompts.jsonl"
    texts = ["Tea?", "Write a long reply about snow and maps and boats and rivers.", "Maps?", "Say hi."]
    prompts.write_text("".join(json.dumps({"prompt_id": i, "prompt": t}) + "\n" for i, t in enumerate(texts)))
    out = tmp_path / "out"
    out.mkdir()
    metrics = generate.main(parsed(spec_for("generate", out, base_model=str(tiny.policy), prompts_path=str(prompts),
                                            params={"max_new_tokens": 5, "batch_size": 2})), out)  # fmt: skip
    assert metrics["generate/backend"] == "transformers" and metrics["generate/tokens_per_s"] > 0
    rows = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    assert [row["prompt_id"] for row in rows] == [0, 1, 2, 3]
    assert all(c["params"]["backend"] == "transformers" for row in rows for c in row["completions"])
