"""Schemathesis against /openapi.json (issue 10, point 2): no 5xx and no answer the document does not describe.

Bounded so it stays a test and not a campaign: a fixed seed, a few examples per operation, PostgreSQL only
(where the database refuses what SQLite lets through), as an admin with an API token so the requests get
past authentication. Every operation is exercised, the HTML pages' forms included (app.openapi.full_schema), and
every answer is checked against its declared response model.
"""

from __future__ import annotations

import collections
import json
import os

import pytest

from tests.helpers import import_lines, make_project

schemathesis = pytest.importorskip("schemathesis")

EXAMPLES = int(os.environ.get("RANKFORGE_FUZZ_EXAMPLES", "8"))
SEED = int(os.environ.get("RANKFORGE_FUZZ_SEED", "10"))


@pytest.mark.only_db("postgresql")
def test_every_operation_keeps_to_the_openapi_document(app, client, users):
    from hypothesis import HealthCheck, Phase, given, seed, settings
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    admin = users.create("admin", "admin")
    users.create("ann1", "annotator")
    project = make_project(client, admin, attributes=[{"name": "helpful", "min": 1, "max": 7}])
    rows = [{"prompt": f"q{i}", "completions": [{"text": f"a{i}", "model": "m1"}, {"text": f"b{i}", "model": "m2"}],
             "metadata": {"batch": "b1"}} for i in range(5)]  # fmt: skip
    assert import_lines(client, admin, project["id"], "\n".join(map(json.dumps, rows)).encode()).status_code == 200

    from app.openapi import full_schema

    # /openapi.json shows the JSON API only; the full document adds the HTML pages, whose forms are fuzzed too
    schema = schemathesis.openapi.from_dict(full_schema(app))
    schema.app = app
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    failures: dict[str, list[str]] = collections.defaultdict(list)
    operations = 0

    def run_examples(operation, label):
        @seed(SEED)
        @settings(max_examples=EXAMPLES, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        @given(case=operation.as_strategy())
        def run(case):
            try:
                case.call_and_validate(headers=admin["headers"], checks=checks)
            except (Exception, BaseExceptionGroup) as error:  # noqa: BLE001 - every failure is collected
                failures[label].append(" | ".join(line for line in str(error).splitlines()[:8] if line.strip()))

        run()

    for result in schema.get_all_operations():
        operation = result.ok()
        label = f"{operation.method.upper()} {operation.path}"
        operations += 1

        run_examples(operation, label)
    assert operations > 50
    report = "\n".join(f"{label}: {len(found)} x {found[0][:600]}" for label, found in failures.items())
    assert not failures, f"{sum(map(len, failures.values()))} failing requests:\n{report}"
