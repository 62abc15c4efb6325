"""The step-labelling page without a browser: roles, CSRF, escaping, and no 500 on any form input."""

from tests.auth.test_auth import login, session_csrf
from tests.helpers import import_lines, make_project
from tests.steps.trajectories import trajectory_file

HTML = {"Accept": "text/html"}


def test_step_page_forms_refuse_bad_input_without_500(client, users):
    admin, rater = users.create("admin", "admin"), users.create("rita", "annotator")
    project = make_project(client, admin)
    assert import_lines(client, admin, project["id"], trajectory_file(["x"], 2), "openai-chat").status_code == 200
    assert client.get(f"/projects/{project['slug']}/steps", headers=HTML, follow_redirects=False).status_code in (302, 303, 401)
    login(client, "rita", rater["password"])
    page = client.get(f"/projects/{project['slug']}/steps", headers=HTML)
    assert page.status_code == 200 and 'id="labels-form"' in page.text and f'href="/projects/{project["slug"]}/steps"' in page.text
    assert "&lt;b&gt;now&lt;/b&gt;" in page.text and "<b>now</b>" not in page.text
    completion_id = int(page.text.split(f'action="/projects/{project["slug"]}/steps/', 1)[1].split('"', 1)[0])
    url = f"/projects/{project['slug']}/steps/{completion_id}"
    csrf = session_csrf(client)

    assert client.post(url, data={"label-0": "good", "label-1": "good"}, headers=HTML).status_code == 403  # no CSRF
    for form in ({"label-0": "great", "label-1": "good"}, {"label-0": "good"}, {"first_error": "abc"},
                 {"first_error": "99999999999999", "label-0": "good"}, {"label-0": "good", "label-1": "good", "tag-0": "nope"},
                 {"label-0": "good", "label-1": "good", "first_error": "0"}, {"label-0": "\x00", "label-1": "good"}):  # fmt: skip
        response = client.post(url, data=form | {"csrf_token": csrf}, headers=HTML)
        assert response.status_code in (400, 422), (form, response.status_code)
        assert "Not saved" in response.text
    for branch in ({"step": "0", "content": "new", "tool_calls": "{not json"}, {"step": "-1", "content": "x"},
                   {"step": "7", "content": "x"}, {"step": "0", "content": "", "tool_calls": ""},
                   {"step": "0", "content": "x", "tool_calls": '"a string"'},
                   {"step": "0", "content": "x", "tool_calls": '[{"function": {"name": ""}}]'}):  # fmt: skip
        response = client.post(url + "/branch", data=branch | {"csrf_token": csrf}, headers=HTML)
        assert response.status_code in (400, 422), (branch, response.status_code, response.text[-300:])
    for bad in ("abc", "0", "99999999999999", "999999"):
        assert client.get(f"/projects/{project['slug']}/steps?trajectory={bad}", headers=HTML).status_code == 404
    assert client.post(f"/projects/{project['slug']}/steps/999999", data={"csrf_token": csrf}, headers=HTML).status_code == 404

    saved = client.post(url, data={"label-0": "good", "label-1": "bad", "tag-1": "wrong tool", "csrf_token": csrf},
                        headers=HTML, follow_redirects=False)  # fmt: skip
    assert saved.status_code == 303 and saved.headers["location"].endswith("saved=labels")
    again = client.post(url, data={"label-0": "good", "label-1": "good", "csrf_token": csrf}, headers=HTML,
                        follow_redirects=False)  # fmt: skip
    assert again.status_code == 303 and again.headers["location"].endswith("saved=again")
    labels = client.get(f"/api/v1/projects/{project['id']}/step-labels", headers=admin["headers"]).json()["step_labels"]
    assert len(labels) == 1 and labels[0]["first_error"] == 1 and labels[0]["labels"][1]["tags"] == ["wrong tool"]
    # the dashboard (staff only) loads the step section
    assert client.get(f"/projects/{project['slug']}/dashboard/steps", headers=HTML).status_code == 403


def test_admin_sets_failure_tags_on_the_page(client, users):
    admin = users.create("admin", "admin")
    project = make_project(client, admin)
    assert import_lines(client, admin, project["id"], trajectory_file(["x"], 2), "openai-chat").status_code == 200
    login(client, "admin", admin["password"])
    page = client.get(f"/projects/{project['slug']}/steps", headers=HTML)
    assert 'id="step-tags-settings"' in page.text and "wrong tool" in page.text
    saved = client.post(f"/projects/{project['slug']}/step-tags", headers=HTML, follow_redirects=False,
                        data={"tags": "hallucinated <tool>\r\nloops\n\nloops", "csrf_token": session_csrf(client)})  # fmt: skip
    assert saved.status_code == 303
    assert client.get(f"/api/v1/projects/{project['id']}/steps/next", headers=admin["headers"]).json()["tags"] == [
        "hallucinated <tool>", "loops"]
    page = client.get(f"/projects/{project['slug']}/steps", headers=HTML)
    assert "hallucinated &lt;tool&gt;" in page.text and "wrong tool" not in page.text
    too_long = client.post(f"/projects/{project['slug']}/step-tags", headers=HTML,
                           data={"tags": "x" * 100, "csrf_token": session_csrf(client)})  # fmt: skip
    assert too_long.status_code == 422
    rater = users.create("rita", "annotator")
    assert client.put(f"/api/v1/projects/{project['id']}/step-tags", json={"tags": ["a"]},
                      headers=rater["headers"]).status_code == 403  # fmt: skip
