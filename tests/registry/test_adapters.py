"""LoRA adapters in the registry: an adapter directory is registered on its (registered) base version."""

from __future__ import annotations


def _adapter_on(base_dir, out_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir),
                           LoraConfig(r=2, lora_alpha=4, target_modules="all-linear", task_type="CAUSAL_LM"))  # fmt: skip
    model.save_pretrained(out_dir)
    return out_dir


def test_an_adapter_is_registered_with_its_base_version(client, users, tmp_path):
    from trainer.tiny import build_tiny_policy

    engineer = users.create("eve", "engineer")
    base_dir = build_tiny_policy(tmp_path / "base", vocab_size=300, hidden_size=32, num_layers=1)
    adapter_dir = _adapter_on(str(base_dir), tmp_path / "adapter")

    body = {"name": "lora-1", "path": str(adapter_dir), "kind": "policy"}
    response = client.post("/api/v1/models", json=body, headers=engineer["headers"])
    assert response.status_code == 422 and "register the base model first" in response.json()["detail"]

    base = client.post("/api/v1/models", json={"name": "base", "path": str(base_dir), "kind": "policy"},
                       headers=engineer["headers"])  # fmt: skip
    assert base.status_code == 201, base.text
    assert base.json()["adapter"] is False
    created = client.post("/api/v1/models", json=body, headers=engineer["headers"])
    assert created.status_code == 201, created.text
    version = created.json()
    assert version["adapter"] is True and version["base_version_id"] == base.json()["id"]
