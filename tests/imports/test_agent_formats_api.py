"""Issue 24 proof, import side: the two conversation formats the API test of test_conversations does not cover
(oasst trees, swe-agent trajectories) import through the API, and a file with bad lines is refused whole, each bad
line named by its number."""

import pytest
from sqlalchemy import func, select

from app.models import Completion, Prompt
from tests.helpers import import_lines, make_project
from tests.imports.test_conversations import swe_traj
from tests.imports.test_parsers import jsonl, message


def oasst_tree(tree_id: str) -> dict:
    replies = [message(f"{tree_id}-a", "assistant", "Paris.", rank=0),
               message(f"{tree_id}-b", "assistant", "Lyon.", rank=1)]  # fmt: skip
    return {"message_tree_id": tree_id, "prompt": message(tree_id, "prompter", "Capital of France?", replies=replies)}


@pytest.mark.parametrize(
    ("fmt", "good", "bad", "bad_lines", "options"),
    [("oasst", [oasst_tree("t1"), oasst_tree("t2")], [{"message_tree_id": "t3"}, oasst_tree("t1")], [3, 4], 4),
     # two trajectories of one task: the two options of one comparison
     ("swe-agent", [swe_traj(["ls"]), swe_traj(["pwd", "submit"])], [{"history": []}, swe_traj([])], [3, 4], 2)],
)  # fmt: skip
def test_agent_and_tree_formats_import_through_the_api_and_bad_lines_refuse_the_file(users, client, db, fmt, good,
                                                                                    bad, bad_lines, options):  # fmt: skip
    admin = users.create("alice", "admin")
    project = make_project(client, admin)
    refused = import_lines(client, admin, project["id"], jsonl(*good, *bad), fmt)
    assert refused.status_code == 422, refused.text
    assert [error["line"] for error in refused.json()["detail"]["errors"]] == bad_lines
    db.rollback()
    assert db.scalar(select(func.count()).select_from(Prompt)) == 0  # nothing of the good lines either

    imported = import_lines(client, admin, project["id"], jsonl(*good), fmt)
    assert imported.status_code == 200, imported.text
    db.rollback()
    assert db.scalar(select(func.count()).select_from(Completion)) == options
