"""The verifier's audit (issue 21, point 2): the project's membership rules on every audit route and page, a
verdict read or audited only through its own project, and only verdicts drawn into the audit sample audited."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from app.models import Completion, Prompt, Verdict
from tests.helpers import import_lines, make_project


def _verifiable_project(client, admin, slug: str) -> dict:
    project = make_project(client, admin, name=slug.title(), slug=slug)
    rows = [{"prompt": f"What is {i} + {i}? ({slug})", "external_id": f"{slug}-{i}", "reference": {"answer": 2 * i},
             "completions": [{"text": f"The answer is {2 * i}", "model": "m1"},
                             {"text": f"The answer is {2 * i + 1}", "model": "m1"}]} for i in range(2)]  # fmt: skip
    response = import_lines(client, admin, project["id"], "\n".join(json.dumps(r) for r in rows).encode())
    assert response.status_code == 200, response.text
    return project


def _verdicts(db, project_id: int, audit_statuses: list[str | None]) -> list[int]:
    completions = db.execute(select(Completion.id, Completion.prompt_id).join(Prompt, Prompt.id == Completion.prompt_id)
                             .where(Prompt.project_id == project_id).order_by(Completion.id)).all()  # fmt: skip
    verdicts = [Verdict(project_id=project_id, prompt_id=prompt_id, completion_id=completion_id, passed=i % 2 == 0,
                        reason="passed" if i % 2 == 0 else "wrong_answer", audit_status=status)
                for i, ((completion_id, prompt_id), status) in enumerate(zip(completions, audit_statuses, strict=False))]  # fmt: skip
    db.add_all(verdicts)
    db.commit()
    return [v.id for v in verdicts]


@pytest.fixture
def world(client, users, db):
    admin = users.create("root", "admin")
    member = users.create("member", "annotator")
    outsider = users.create("outsider", "annotator")
    engineer = users.create("eng", "engineer")
    private = _verifiable_project(client, admin, "private")
    public = _verifiable_project(client, admin, "public")
    response = client.put(f"/api/v1/projects/{private['id']}/members",
                          json={"usernames": ["member"], "members_only": True}, headers=admin["headers"])  # fmt: skip
    assert response.status_code == 200, response.text
    return {"admin": admin, "member": member, "outsider": outsider, "engineer": engineer,
            "private": private, "public": public,
            "private_verdicts": _verdicts(db, private["id"], ["pending", "pending", None, "right"]),
            "public_verdicts": _verdicts(db, public["id"], ["pending", None])}  # fmt: skip


def test_a_non_member_reads_no_members_only_audit_queue(client, world):
    pid = world["private"]["id"]
    outsider, member = world["outsider"]["headers"], world["member"]["headers"]
    assert client.get(f"/api/v1/projects/{pid}", headers=outsider).status_code == 403
    assert client.get(f"/api/v1/projects/{pid}/verdicts/audit", headers=outsider).status_code == 403
    assert client.get(f"/projects/{pid}/verifier", headers=outsider | {"accept": "text/html"}).status_code == 403
    queue = client.get(f"/api/v1/projects/{pid}/verdicts/audit", headers=member)
    assert queue.status_code == 200 and len(queue.json()["verdicts"]) == 2
    assert client.get(f"/projects/{pid}/verifier", headers=member | {"accept": "text/html"}).status_code == 200
    # the open project stays open to every annotator
    public = client.get(f"/api/v1/projects/{world['public']['id']}/verdicts/audit", headers=outsider)
    assert public.status_code == 200 and len(public.json()["verdicts"]) == 1


def test_a_non_member_audits_nothing_in_a_members_only_project(client, world, db):
    pid, (pending, *_rest) = world["private"]["id"], world["private_verdicts"]
    body = {"correct": False, "note": "moved by an outsider"}
    outsider = world["outsider"]["headers"]
    assert client.post(f"/api/v1/verdicts/{pending}/audit", json=body, headers=outsider).status_code == 404
    assert client.post(f"/api/v1/projects/{pid}/verdicts/{pending}/audit", json=body,
                       headers=outsider).status_code == 403  # fmt: skip
    page = client.post(f"/projects/{pid}/verifier/audit/{pending}", data={"correct": "no"},
                       headers=outsider | {"accept": "text/html"}, follow_redirects=False)  # fmt: skip
    assert page.status_code == 403
    # an engineer who is not a member does not audit a members-only project either (the rating rule)
    assert client.post(f"/api/v1/projects/{pid}/verdicts/{pending}/audit", json=body,
                       headers=world["engineer"]["headers"]).status_code == 403  # fmt: skip
    db.expire_all()
    assert db.get(Verdict, pending).audit_status == "pending"
    ok = client.post(f"/api/v1/projects/{pid}/verdicts/{pending}/audit", json={"correct": True},
                     headers=world["member"]["headers"])  # fmt: skip
    assert ok.status_code == 200 and ok.json()["audit_status"] == "right"


def test_a_verdict_is_audited_only_through_its_own_project(client, world, db):
    public_pid = world["public"]["id"]
    private_pending = world["private_verdicts"][1]
    admin = world["admin"]["headers"]
    # the admin may see both projects, but a verdict is found only under its own project's URL
    api = client.post(f"/api/v1/projects/{public_pid}/verdicts/{private_pending}/audit", json={"correct": False},
                      headers=admin)  # fmt: skip
    assert api.status_code == 404
    page = client.post(f"/projects/{public_pid}/verifier/audit/{private_pending}", data={"correct": "no"},
                       headers=admin | {"accept": "text/html"}, follow_redirects=False)  # fmt: skip
    assert page.status_code == 404
    db.expire_all()
    assert db.get(Verdict, private_pending).audit_status == "pending"
    # the older URL still works for someone allowed, through the verdict's own project
    old = client.post(f"/api/v1/verdicts/{private_pending}/audit", json={"correct": False}, headers=admin)
    assert old.status_code == 200 and old.json()["audit_status"] == "wrong"


def test_only_sampled_verdicts_are_audited(client, world, db):
    pid = world["private"]["id"]
    never_sampled, already_audited = world["private_verdicts"][2], world["private_verdicts"][3]
    member = world["member"]["headers"]
    for url in (f"/api/v1/projects/{pid}/verdicts/{never_sampled}/audit", f"/api/v1/verdicts/{never_sampled}/audit"):
        response = client.post(url, json={"correct": False}, headers=member)
        assert response.status_code == 409 and "not sampled" in response.json()["detail"]
    page = client.post(f"/projects/{pid}/verifier/audit/{never_sampled}", data={"correct": "no"},
                       headers=member | {"accept": "text/html"}, follow_redirects=False)  # fmt: skip
    assert page.status_code == 409
    db.expire_all()
    assert db.get(Verdict, never_sampled).audit_status is None
    # an audited verdict of the sample may be corrected
    again = client.post(f"/api/v1/projects/{pid}/verdicts/{already_audited}/audit", json={"correct": False},
                        headers=member)  # fmt: skip
    assert again.status_code == 200 and again.json()["audit_status"] == "wrong"
