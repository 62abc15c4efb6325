"""LoRA adapters in the registry: an adapter directory is registered on its (registered) base version."""

from __future__ import annotations

from pathlib import Path

import pytest


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


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_lora_dpo_job_registers_an_adapter_on_its_base_with_a_model_card(client, users, tmp_path):
    from app.worker import run_one
    from tests.helpers import import_lines, make_project
    from tests.jobs.test_training_jobs import keyword_native
    from trainer.tiny import build_tiny_policy, keyword_pairs, keyword_texts, train_tokenizer

    admin = users.create("root", "admin")
    engineer = users.create("eve", "engineer")
    project = make_project(client, admin, name="Keyword", slug="kw")
    assert import_lines(client, admin, project["id"], keyword_native(24)).status_code == 200
    tokenizer = train_tokenizer(keyword_texts(keyword_pairs(24, seed=1)), vocab_size=300)
    base_dir = build_tiny_policy(tmp_path / "base", tokenizer, hidden_size=32, num_layers=1)
    base = client.post("/api/v1/models", json={"name": "base", "path": str(base_dir), "kind": "policy"},
                       headers=engineer["headers"]).json()  # fmt: skip
    params = {"max_steps": 2, "per_device_train_batch_size": 4, "max_length": 64, "use_lora": True, "lora_r": 4}
    job = client.post("/api/v1/jobs", json={"kind": "dpo", "project_id": project["id"], "base_model": "base",
                                            "params": params}, headers=engineer["headers"]).json()  # fmt: skip
    assert run_one("w1") == job["id"]
    done = client.get(f"/api/v1/jobs/{job['id']}", headers=engineer["headers"]).json()
    assert done["status"] == "succeeded", done
    version = client.get(f"/api/v1/models/{done['result']['model_version_id']}", headers=engineer["headers"]).json()
    assert version["adapter"] is True and version["base_version_id"] == base["id"]
    card = (Path(version["path"]) / "README.md").read_text()
    assert "library_name: peft" in card and str(base_dir) in card
