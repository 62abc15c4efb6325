"""A model version's page (issue 26): lineage, held-out figures, the reward-model audit its job stored with it, and
its model card; reachable from the models list; staff only."""

from __future__ import annotations

import json

from trainer.audit import reward_audit
from trainer.card import model_card

HTML = {"Accept": "text/html"}


def _checkpoint(tmp_path, name: str, manifest: dict):
    directory = tmp_path / name
    directory.mkdir()
    (directory / "config.json").write_text("{}")
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return directory


def test_reward_version_page_shows_its_audit_and_card(client, users, tmp_path):
    engineer = users.create("eve", "engineer")
    annotator = users.create("anna", "annotator")
    rows = [{"chosen": "a" * (12 if i % 4 else 2), "rejected": "a" * (2 if i % 4 else 12),
             "group_chosen": ["locale=fr"], "category": "<b>code</b>"} for i in range(40)]  # fmt: skip
    # A model that always prefers the longer answer: right on the 30 pairs where the chosen one is longer only.
    audit = reward_audit(rows, [len(r["chosen"]) for r in rows], [len(r["rejected"]) for r in rows], split="test")
    assert audit["length_bias"] is True
    manifest = {"kind": "reward", "job_kind": "reward", "metrics": {"eval/accuracy": 0.75}, "audit": audit,
                "params": {"learning_rate": 0.001}, "seed": 0}  # fmt: skip
    path = _checkpoint(tmp_path, "rm", manifest)
    (path / "README.md").write_text(model_card(manifest))  # as trainer.run writes it
    created = client.post("/api/v1/models", json={"name": "rm-1", "path": str(path), "kind": "reward"},
                          headers=engineer["headers"])  # fmt: skip
    assert created.status_code == 201, created.text
    version_id = created.json()["id"]

    listing = client.get("/models", headers=engineer["headers"] | HTML).text
    assert f'href="/models/{version_id}"' in listing
    page = client.get(f"/models/{version_id}", headers=engineer["headers"] | HTML)
    assert page.status_code == 200
    html = page.text
    assert "Reward-model audit" in html and "length bias" in html
    assert "Accuracy, length-balanced pairs" in html and "0.500" in html and "0.750" in html
    assert "locale=fr" in html and "&lt;b&gt;code&lt;/b&gt;" in html and "<b>code</b>" not in html
    assert 'id="model-card"' in html and "Hyperparameters" in html
    # A reward model scores answers and does not chat: nothing offers to serve it, and the API refuses.
    assert 'id="serving"' not in html
    refused = client.post("/api/v1/endpoints/serve", json={"version": "rm-1"}, headers=engineer["headers"])
    assert refused.status_code == 422 and "does not chat" in refused.json()["detail"], refused.text
    assert client.get(f"/api/v1/models/{version_id}", headers=engineer["headers"]).json()["manifest"]["audit"] == audit
    assert client.get(f"/models/{version_id}", headers=annotator["headers"] | HTML).status_code == 403
    assert client.get("/models/999999", headers=engineer["headers"] | HTML).status_code == 404
    assert client.get("/models/endpoints", headers=engineer["headers"] | HTML).status_code == 200


def test_a_reward_version_without_an_audit_says_so(client, users, tmp_path):
    engineer = users.create("eve", "engineer")
    path = _checkpoint(tmp_path, "plain", {})
    version_id = client.post("/api/v1/models", json={"name": "rm-plain", "path": str(path), "kind": "reward"},
                             headers=engineer["headers"]).json()["id"]  # fmt: skip
    html = client.get(f"/models/{version_id}", headers=engineer["headers"] | HTML).text
    assert "No audit" in html and 'id="model-card"' not in html
