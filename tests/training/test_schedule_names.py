"""The retraining schedule counts new judgments, and says so: `reward_every_judgments` (the former name,
`reward_every_pairs`, is still accepted on input, and a schedule stored under it still works)."""

from __future__ import annotations

from app.projects.schemas import ScheduleSettings
from tests.helpers import make_project


def test_the_schedule_takes_its_new_name_and_its_former_one(client, users):
    admin = users.create("root", "admin")
    project = make_project(client, admin)
    for name in ("reward_every_judgments", "reward_every_pairs"):
        response = client.patch(f"/api/v1/projects/{project['id']}", json={"schedule": {name: 7}},
                                headers=admin["headers"])  # fmt: skip
        assert response.status_code == 200, response.text
        assert response.json()["schedule"]["reward_every_judgments"] == 7 and "reward_every_pairs" not in response.json()["schedule"]
    refused = client.patch(f"/api/v1/projects/{project['id']}", json={"schedule": {"reward_every_pairs": 0}},
                           headers=admin["headers"])  # fmt: skip
    assert refused.status_code == 422 and "reward_every_pairs" in refused.text
    assert ScheduleSettings.model_validate({"reward_every_pairs": 3}).reward_every_judgments == 3  # stored before
