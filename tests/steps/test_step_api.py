"""Step labels through the API: next trajectory, labels (once), branches, roles, bad input, and the stepwise
export loaded by the trainer's data reader."""

import json

import pytest

from app.worker import run_one
from tests.helpers import import_lines, make_project
from tests.steps.trajectories import trajectory_file


@pytest.fixture
def setup(client, users):
    admin = users.create("admin", "admin")
    rita, sam = users.create("rita", "annotator"), users.create("sam", "annotator")
    project = make_project(client, admin, overlap=2)
    response = import_lines(client, admin, project["id"], trajectory_file(["a", "b"], n_steps=3), "openai-chat")
    assert response.status_code in (200, 201), response.text
    return admin, rita, sam, project


def _labels(*names, tags=None):
    return [{"label": name, "tags": (tags or {}).get(i, [])} for i, name in enumerate(names)]


def test_label_steps_once_branch_and_export(client, setup, tmp_path):
    admin, rita, sam, project = setup
    base = f"/api/v1/projects/{project['id']}"
    first = client.get(f"{base}/steps/next", headers=rita["headers"]).json()
    assert len(first["steps"]) == 3 and first["steps"][0]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert first["steps"][0]["observations"][0]["content"] == '{"temp_c": 10}'
    assert "wrong tool" in first["tags"]
    url = f"{base}/trajectories/{first['completion_id']}/step-labels"
    body = {"labels": _labels("good", None, None, tags={1: ["wrong arguments"]}), "first_error": 1}
    saved = client.post(url, json=body, headers=rita["headers"])
    assert saved.status_code == 201, saved.text
    assert saved.json()["first_error"] == 1 and saved.json()["labels"][1] == {"label": "bad", "tags": ["wrong arguments"]}
    again = client.post(url, json={"labels": _labels("good", "good", "good")}, headers=rita["headers"])
    assert again.status_code == 200 and again.json()["id"] == saved.json()["id"] and again.json()["first_error"] == 1
    # the same trajectory is not served to rita again; sam gets it (overlap 2)
    assert client.get(f"{base}/steps/next", headers=rita["headers"]).json()["completion_id"] != first["completion_id"]
    assert client.get(f"{base}/steps/next", headers=sam["headers"]).json()["completion_id"] == first["completion_id"]
    assert client.post(url, json={"labels": _labels("good", "bad", "good")}, headers=sam["headers"]).status_code == 201

    # bad input: 422 with a reason, never a 500
    for bad in ({"labels": _labels("good", "good")}, {"labels": _labels("good", None, "good")},
                {"labels": _labels("good", "good", "good"), "first_error": 9},
                {"labels": _labels("good", "good", "great")}, {"labels": "x"}, {"labels": [], "extra": 1},
                {"labels": _labels("good", "good", "good", tags={0: ["<script>"]})}):  # fmt: skip
        response = client.post(f"{base}/trajectories/{first['completion_id'] + 1}/step-labels", json=bad,
                               headers=admin["headers"])  # fmt: skip
        assert response.status_code == 422, (bad, response.text)
    assert client.post(f"{base}/trajectories/999999/step-labels", json={"labels": []},
                       headers=admin["headers"]).status_code == 404  # fmt: skip

    # roles: raters see their own labels, staff everyone's; only staff list, only admins void and set tags
    own = client.get(f"{base}/trajectories/{first['completion_id']}", headers=rita["headers"]).json()
    assert [j["rater"] for j in own["step_labels"]] == ["rita"]
    assert client.get(f"{base}/step-labels", headers=rita["headers"]).status_code == 403
    listed = client.get(f"{base}/step-labels", headers=admin["headers"]).json()["step_labels"]
    assert len(listed) == 2
    assert client.put(f"{base}/step-tags", json={"tags": ["x"]}, headers=rita["headers"]).status_code == 403

    # a rewritten step starts a branch: steps before it copied, the step replaced, nothing after it
    branch = client.post(f"{base}/trajectories/{first['completion_id']}/branches", headers=rita["headers"],
                         json={"step": 1, "content": "Step 1 rewritten.", "tool_calls": [
                             {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]})  # fmt: skip
    assert branch.status_code == 201, branch.text
    new = branch.json()
    assert new["parent_id"] == first["completion_id"] and new["branch"] == {"from": first["completion_id"], "step": 1}
    assert new["steps"][0] == first["steps"][0]
    assert new["steps"][1]["content"] == "Step 1 rewritten." and new["steps"][1]["observations"] == []
    assert new["steps"][1]["tool_calls"][0]["function"]["arguments"] == {"city": "Paris"} and len(new["steps"]) == 2
    same = client.post(f"{base}/trajectories/{first['completion_id']}/branches", headers=rita["headers"],
                       json={"step": 0, "content": first["steps"][0]["content"],
                             "tool_calls": first["steps"][0]["tool_calls"]})  # fmt: skip
    assert same.status_code == 422
    assert client.post(f"{base}/trajectories/{first['completion_id']}/branches", headers=rita["headers"],
                       json={"step": 7, "content": "x"}).status_code == 422  # fmt: skip
    labelled = client.post(f"{base}/trajectories/{new['completion_id']}/step-labels", headers=rita["headers"],
                           json={"labels": _labels("good", "good")})  # fmt: skip
    assert labelled.status_code == 201

    # the stepwise export: JSONL, Parquet and hf/, read back by the trainer's data reader
    response = client.post(f"{base}/datasets", headers=admin["headers"],
                           json={"format": "steps", "split": {"test_fraction": 0.0}, "hf_datasets": True})  # fmt: skip
    assert response.status_code == 202, response.text
    snapshot = response.json()
    assert run_one("test-worker") == snapshot["job_id"]
    dataset = client.get(f"/api/v1/datasets/{snapshot['id']}", headers=admin["headers"]).json()
    assert dataset["status"] == "ready", dataset
    assert {"train.jsonl", "train.parquet"} <= set(dataset["files"]) and any(f.startswith("hf/") for f in dataset["files"])
    rows = [json.loads(line) for line in client.get(f"/api/v1/datasets/{snapshot['id']}/files/train.jsonl",
                                                    headers=admin["headers"]).text.splitlines()]  # fmt: skip
    by_id = {row["completion_id"]: row for row in rows}
    original = by_id[first["completion_id"]]
    assert original["labels"] == [True, False] and original["n_votes"] == 2 and original["first_error"] == 1
    assert original["prompt"].startswith("system: You are an agent.") and "<b>now</b>" in original["prompt"]
    assert original["completions"][1].startswith("Step 1 of a") and "call: get_weather" in original["completions"][1]
    assert by_id[new["completion_id"]]["labels"] == [True, True] and by_id[new["completion_id"]]["parent_id"] == first["completion_id"]

    from app.datasets.service import snapshot_dir
    from app.db import session_scope
    from app.models import DatasetSnapshot
    from trainer.data import read_snapshot

    with session_scope() as db:
        path = snapshot_dir(db.get(DatasetSnapshot, snapshot["id"]))
    for split in (read_snapshot(path, "train"),):
        assert {"prompt", "completions", "labels"} <= set(split.column_names)
        assert split.features["labels"].feature.dtype == "bool"
        assert sorted(split["completion_id"]) == sorted(by_id)
    import datasets

    hf = datasets.load_from_disk(str(path / "hf" / "train"))  # (an empty split's hf/ folder has no data file)
    assert hf.num_rows == len(rows) and hf.features["labels"].feature.dtype == "bool"

    # agreement over steps (each rater's steps up to their first error): both said good, bad on steps 1-2
    agreement = client.get(f"{base}/step-agreement", headers=admin["headers"]).json()
    assert agreement["units"] == 2 and agreement["krippendorff_alpha"] == 1.0
    assert {r["username"]: r["labels"] for r in agreement["raters"]} == {"rita": 4, "sam": 2}
    assert client.get(f"{base}/step-agreement", headers=rita["headers"]).status_code == 403
    section = client.get(f"/projects/{project['slug']}/dashboard/steps", headers=admin["headers"])
    assert section.status_code == 200 and 'id="step-alpha"' in section.text

    # voiding takes labels out of the export and the figures
    void = client.post(f"{base}/step-labels/{listed[1]['id']}/void", headers=admin["headers"])
    assert void.status_code == 200 and void.json()["voided"]
    assert client.post(f"{base}/step-labels/{listed[1]['id']}/void", headers=admin["headers"]).status_code == 409
    agreement = client.get(f"{base}/step-agreement", headers=admin["headers"]).json()
    assert agreement["units"] == 0 and agreement["krippendorff_alpha"] is None and agreement["labels"] == 4


def test_members_only_and_archived(client, setup):
    admin, rita, _, project = setup
    client.patch(f"/api/v1/projects/{project['id']}", json={"members_only": True}, headers=admin["headers"])
    assert client.get(f"/api/v1/projects/{project['id']}/steps/next", headers=rita["headers"]).status_code == 403
    assert client.get("/api/v1/projects/nope/steps/next", headers=rita["headers"]).status_code == 404
