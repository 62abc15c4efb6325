"""A multi-objective reward job through the product (issue 14): rated judgments -> ratings snapshot -> reward_multi
child -> a registered reward version whose scalar combines the heads with the project's attribute weights."""

from __future__ import annotations

import json
from pathlib import Path

from app.worker import run_one
from tests.helpers import import_lines, make_project, native_lines
from tests.jobs.test_training_jobs import FAST, tiny_models  # noqa: F401 (a fixture)


def test_reward_multi_job_trains_on_the_projects_ratings(client, users, tiny_models):  # noqa: F811
    admin, engineer, rater = users.create("root", "admin"), users.create("eve", "engineer"), users.create("rita", "annotator")
    scales = [{"name": "helpful", "min": 1, "max": 5, "weight": 2.0}, {"name": "verbose", "min": 1, "max": 3, "weight": 0.5}]
    project = make_project(client, admin, attributes=scales)
    import_lines(client, admin, project["id"], native_lines(6))
    for _ in range(6):
        task = client.get(f"/api/v1/projects/{project['id']}/tasks/next", headers=rater["headers"]).json()
        a, b = sorted(o["id"] for o in task["options"])
        body = {"ranking": [[a], [b]], "attributes": {"helpful": {str(a): 5, str(b): 2}, "verbose": {str(a): 1}}}
        response = client.post(f"/api/v1/assignments/{task['assignment_id']}/judgment", json=body, headers=rater["headers"])
        assert response.status_code == 201, response.text
    response = client.post("/api/v1/models", headers=engineer["headers"], json={
        "name": "tiny-policy", "path": str(tiny_models["policy"]), "kind": "policy", "project_id": project["id"]})  # fmt: skip
    assert response.status_code == 201, response.text
    response = client.post("/api/v1/jobs", headers=engineer["headers"], json={
        "kind": "reward_multi", "project_id": project["id"], "params": dict(FAST)})  # fmt: skip
    assert response.status_code == 202, response.text
    queued = response.json()
    assert run_one("w1") == queued["id"]
    done = client.get(f"/api/v1/jobs/{queued['id']}", headers=engineer["headers"]).json()
    assert done["status"] == "succeeded", done
    assert done["params"]["attribute_weights"] == {"helpful": 2.0, "verbose": 0.5}
    dataset = client.get(f"/api/v1/datasets/{done['result']['dataset_id']}", headers=engineer["headers"]).json()
    assert dataset["format"] == "ratings"
    models = client.get("/api/v1/models", headers=engineer["headers"]).json()
    version = next(m for m in models if m["id"] == done["result"]["model_version_id"])
    assert version["kind"] == "reward"
    heads = json.loads((Path(version["path"]) / "heads" / "heads.json").read_text())
    assert heads["attributes"] == ["helpful", "verbose"] and heads["attribute_weights"] == [2.0, 0.5]
