"""One statistics call tells all figures: GET /projects/{id}/stats carries step agreement (as /step-agreement)."""

from tests.helpers import import_lines, make_project
from tests.steps.trajectories import trajectory_file


def test_project_stats_include_step_agreement(client, users):
    admin, ann, bob = users.create("admin", "admin"), users.create("ann", "annotator"), users.create("bob", "annotator")
    project = make_project(client, admin, overlap=2)
    assert import_lines(client, admin, project["id"], trajectory_file(["q"], n_steps=3), "openai-chat").status_code < 300
    base = f"/api/v1/projects/{project['id']}"
    before = client.get(f"{base}/stats", headers=admin["headers"])
    assert before.status_code == 200 and before.json()["steps"]["labels"] == 0
    for rater, labels in ((ann, ["good", "bad", None]), (bob, ["good", "good", "bad"])):
        tid = client.get(f"{base}/steps/next", headers=rater["headers"]).json()["completion_id"]
        first_error = labels.index("bad")
        body = {"labels": [{"label": label, "tags": []} for label in labels], "first_error": first_error}
        saved = client.post(f"{base}/trajectories/{tid}/step-labels", json=body, headers=rater["headers"])
        assert saved.status_code == 201, saved.text
    steps = client.get(f"{base}/stats", headers=admin["headers"]).json()["steps"]
    assert steps == client.get(f"{base}/step-agreement", headers=admin["headers"]).json()
    assert steps["labels"] == 5 and steps["units"] == 2 and {r["username"] for r in steps["raters"]} == {"ann", "bob"}
