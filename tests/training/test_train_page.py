"""The training and rounds pages a newcomer meets (issue 27): reachable by slug, every parameter of a kind on the form
(max_length, which the job page's warning names), a dataset preselected from its page, the recipe explained."""

from __future__ import annotations

import json

from app.db import session_scope
from app.models import Job, ModelVersion
from tests.auth.test_auth import login, session_csrf
from tests.helpers import import_lines, make_project, native_lines

HTML = {"Accept": "text/html"}


def test_the_train_form_takes_any_parameter_of_the_kind_by_slug(client, users, tmp_path):
    admin = users.create("admin", "admin")
    project = make_project(client, admin, slug="newcomer")
    import_lines(client, admin, project["id"], native_lines(4, ranking=True))
    with session_scope(write=True) as db:  # a base policy to start from (the job is only queued, never run)
        db.add(ModelVersion(name="base-policy", kind="policy", path=str(tmp_path)))
    assert login(client, "admin", "secret-pass-1").status_code == 303

    page = client.get("/projects/newcomer/train?kind=reward&dataset_id=7", headers=HTML)
    assert page.status_code == 200, page.text  # the slug, like every other project page (was 422)
    assert 'name="param_max_length"' in page.text and 'name="param_learning_rate"' in page.text
    assert 'id="more-params"' in page.text

    form = {"csrf_token": session_csrf(client), "kind": "reward", "param_max_length": "384",
            "param_learning_rate": "0.001"}  # fmt: skip
    started = client.post("/projects/newcomer/train", data=form, headers=HTML, follow_redirects=False)
    assert started.status_code == 303, started.text
    job_id = int(started.headers["location"].rsplit("/", 1)[1])
    with session_scope() as db:
        params = db.get(Job, job_id).params
    assert params.get("max_length") == 384  # set, and only what differs from the defaults
    assert "learning_rate" not in params
    assert "use_weights" not in params  # a flag the post did not show keeps its default (True)
    unticked = client.post("/projects/newcomer/train", data=form | {"shown_flag": "use_weights"}, headers=HTML,
                           follow_redirects=False)  # fmt: skip
    with session_scope() as db:  # a box the form showed and the browser left out is unticked: False
        assert db.get(Job, int(unticked.headers["location"].rsplit("/", 1)[1])).params["use_weights"] is False
    job_page = client.get(f"/jobs/{job_id}", headers=HTML).text
    assert "max_length=384" in job_page and "Params: {}" not in job_page

    bad = client.post("/projects/newcomer/train", data=form | {"param_max_length": "long"}, headers=HTML)
    assert bad.status_code == 422 and "max_length" in bad.text


def test_the_rounds_page_explains_the_evaluation_set_and_each_recipe_field(client, users):
    admin = users.create("admin", "admin")
    make_project(client, admin, slug="loop")
    assert login(client, "admin", "secret-pass-1").status_code == 303
    page = client.get("/projects/loop/rounds", headers=HTML).text
    assert 'id="eval-set-explained"' in page and "the first round chooses it once" in page
    assert "Prompts per round" in page and "Unused pool prompts per round." in page  # label and help
    assert "Sampling temperature" in page  # help for a field the recipe model leaves undescribed
    assert json.dumps({}) in page  # update_params shown as JSON
