"""Small builders shared by tests."""

from __future__ import annotations

import json


def native_lines(n: int, k: int = 2, *, prefix: str = "p", ranking: bool = False) -> bytes:
    lines = []
    for i in range(n):
        row = {
            "prompt": f"Question {prefix}{i}?",
            "completions": [{"text": f"answer {j} to {prefix}{i}", "model": f"model-{j}"} for j in range(k)],
            "external_id": f"{prefix}{i}",
        }
        if ranking:
            row["ranking"] = [[j] for j in range(k)]
        lines.append(json.dumps(row))
    return ("\n".join(lines) + "\n").encode()


def make_project(client, admin, **overrides) -> dict:
    body = {"name": "Test project", "mode": "pairwise", "overlap": 1, "allow_ties": True} | overrides
    response = client.post("/api/v1/projects", json=body, headers=admin["headers"])
    assert response.status_code == 201, response.text
    return response.json()


def import_lines(client, admin, project_id, data: bytes, fmt: str = "native", **params):
    return client.post(f"/api/v1/projects/{project_id}/import", params={"format": fmt, **params}, content=data,
                       headers=admin["headers"] | {"Content-Type": "application/x-ndjson"})  # fmt: skip
