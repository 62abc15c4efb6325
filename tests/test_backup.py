"""`rankforge db backup` / `db restore` on both databases: every judgment comes back in a fresh database, the
artifact store is verified against the manifest's sha256s, and the failure cases say what is wrong."""

from __future__ import annotations

import json
import os
import uuid

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from app.cli import app as cli
from app.db import session_scope
from tests.conftest import PG_ADMIN_URL
from tests.helpers import import_lines, make_project, native_lines

JUDGMENT_COLUMNS = "id, assignment_id, comparison_id, rater_id, ranking, attributes, time_spent_ms, created_at"


@pytest.fixture
def target_database(db_url, tmp_path):
    """A fresh, empty database of the same kind as the test's (the restore target); dropped afterwards."""
    created = []

    def make() -> str:
        if db_url.startswith("sqlite"):
            return f"sqlite:///{tmp_path / f'restored-{uuid.uuid4().hex[:6]}.db'}"
        name = f"rankforge_restore_{uuid.uuid4().hex[:10]}"
        admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        admin.dispose()
        created.append(name)
        return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name

    yield make
    if created:
        admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            for name in created:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def _cli(url: str, *args: str):
    from app.config import get_settings
    from app.db import dispose_engines

    saved = os.environ.get("RANKFORGE_DATABASE_URL")
    os.environ["RANKFORGE_DATABASE_URL"] = url
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(cli, list(args))
    finally:
        os.environ["RANKFORGE_DATABASE_URL"] = saved
        get_settings.cache_clear()
        dispose_engines()


def _judgments(url: str) -> list[tuple]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text(f"SELECT {JUDGMENT_COLUMNS} FROM judgment ORDER BY id")).all()
    finally:
        engine.dispose()
    return [tuple(json.dumps(v, sort_keys=True) if isinstance(v, list | dict) else str(v) for v in row) for row in rows]


def _world_with_judgments_and_artifacts(client, users, db_url, data_dir):
    from app.models import DatasetSnapshot, ModelVersion

    admin = users.create("admin", "admin")
    raters = [users.create(f"r{i}", "annotator") for i in range(3)]
    project = make_project(client, admin, overlap=3, attributes=[{"name": "helpful", "min": 1, "max": 7}])
    assert import_lines(client, admin, project["id"], native_lines(8)).status_code == 200
    for rater in raters:
        while (task := client.get(f"/api/v1/projects/{project['id']}/tasks/next", headers=rater["headers"])).status_code == 200:
            ids = [o["id"] for o in task.json()["options"]]
            sent = client.post(f"/api/v1/assignments/{task.json()['assignment_id']}/judgment", headers=rater["headers"],
                               json={"ranking": [[ids[1]], [ids[0]]], "rationale": "B é mejor ✓",
                                     "attributes": {"helpful": {str(ids[1]): 6}}, "time_spent_ms": 4200})  # fmt: skip
            assert sent.status_code == 201, sent.text
    model_dir = data_dir / "models" / "tiny-policy"
    dataset_dir = data_dir / "datasets" / "1-abcd"
    for directory, files in ((model_dir, {"config.json": b"{}", "weights.bin": os.urandom(4096)}),
                             (dataset_dir, {"train.jsonl": b'{"prompt": "x"}\n', "manifest.json": b"{}"})):  # fmt: skip
        (directory / "sub").mkdir(parents=True)
        for name, content in files.items():
            (directory / name).write_bytes(content)
        (directory / "sub" / "extra.txt").write_text("nested")
    with session_scope(db_url) as session:
        snapshot = DatasetSnapshot(project_id=project["id"], format="pairs", status="ready", path=str(dataset_dir))
        session.add(snapshot)
        session.flush()
        session.add(ModelVersion(name="tiny-policy", kind="policy", path=str(model_dir), dataset_id=snapshot.id))
    return model_dir


def test_backup_and_restore_into_a_fresh_database_keeps_every_judgment(client, users, db_url, tmp_path,
                                                                        target_database):  # fmt: skip
    from app.config import get_settings

    data_dir = get_settings().data_dir
    model_dir = _world_with_judgments_and_artifacts(client, users, db_url, data_dir)
    original = _judgments(db_url)
    assert len(original) == 24

    backup_dir = tmp_path / "backup"
    made = _cli(db_url, "db", "backup", str(backup_dir))
    assert made.exit_code == 0, made.output
    manifest = json.loads((backup_dir / "manifest.json").read_text())
    assert manifest["counts"]["judgments"] == 24
    listed = {f["path"]: f for a in manifest["artifacts"] for f in a["files"]}
    assert {"models/tiny-policy/weights.bin", "models/tiny-policy/sub/extra.txt",
            "datasets/1-abcd/train.jsonl"} <= set(listed)  # fmt: skip
    assert {a["kind"] for a in manifest["artifacts"]} == {"dataset", "model"}
    assert all(len(f["sha256"]) == 64 for f in listed.values())
    assert _cli(db_url, "db", "backup", str(backup_dir)).exit_code == 1  # never over an existing backup

    fresh = target_database()
    restored = _cli(fresh, "db", "restore", str(backup_dir))
    assert restored.exit_code == 0, restored.output
    assert "files checked" in restored.output
    assert _judgments(fresh) == original  # every judgment, field by field

    # Restoring over a database that is not empty is refused without --force.
    again = _cli(fresh, "db", "restore", str(backup_dir))
    assert again.exit_code == 1 and "--force" in again.output
    forced = _cli(fresh, "db", "restore", str(backup_dir), "--force")
    assert forced.exit_code == 0, forced.output
    assert _judgments(fresh) == original

    # The artifact store is verified against the manifest: a changed and a missing file are named, exit 3.
    (model_dir / "weights.bin").write_bytes(b"tampered")
    (model_dir / "config.json").unlink()
    checked = _cli(target_database(), "db", "restore", str(backup_dir))
    assert checked.exit_code == 3, checked.output
    assert "models/tiny-policy/weights.bin" in checked.output and "models/tiny-policy/config.json" in checked.output

    # A damaged dump is refused before anything is written.
    dump = backup_dir / manifest["database"]["file"]
    dump.write_bytes(dump.read_bytes()[:-10])
    damaged = _cli(target_database(), "db", "restore", str(backup_dir))
    assert damaged.exit_code == 1 and "damaged" in damaged.output


@pytest.mark.only_db("postgresql")
def test_missing_pg_tools_give_a_clear_error(db_url, tmp_path, monkeypatch):
    import app.backup

    monkeypatch.setattr(app.backup.shutil, "which", lambda name: None)
    result = _cli(db_url, "db", "backup", str(tmp_path / "b"))
    assert result.exit_code == 1
    assert "pg_dump was not found" in result.output and "postgresql-client" in result.output


def test_backup_through_the_artifact_store_to_s3_and_restore_from_it(client, users, db_url, s3_store,
                                                                      target_database):  # fmt: skip
    """`rankforge db backup s3://...` (and without a target: the configured store's backups/<time>) publishes the
    dump and its manifest, the store manifest last; `db restore s3://...` streams it back and restores every
    judgment. A backup without its store manifest (an upload cut off) or with a damaged dump is refused before
    anything is written; a store that refuses the write is a clear error and leaves nothing there."""
    import s3fs

    from app.config import get_settings
    from app.store import STORE_MANIFEST

    _world_with_judgments_and_artifacts(client, users, db_url, get_settings().data_dir)
    original = _judgments(db_url)
    location = f"s3://{s3_store['bucket']}/elsewhere/nightly"  # any fsspec URL, not only under the store's root
    made = _cli(db_url, "db", "backup", location)
    assert made.exit_code == 0, made.output
    s3fs.S3FileSystem.clear_instance_cache()
    raw = s3fs.S3FileSystem()
    key = location.removeprefix("s3://")
    dump_name = "database.sqlite" if db_url.startswith("sqlite") else "database.pgdump"
    assert {k.rsplit("/", 1)[1] for k in raw.find(key)} == {"manifest.json", dump_name, STORE_MANIFEST}
    assert not any((get_settings().data_dir / "backups").iterdir())  # the local staging copy is gone
    assert _cli(db_url, "db", "backup", location).exit_code == 1  # never over an existing backup

    default = _cli(db_url, "db", "backup")  # no target: the configured store
    assert default.exit_code == 0, default.output
    assert f"to {s3_store['url']}/backups/" in default.output, default.output

    fresh = target_database()
    restored = _cli(fresh, "db", "restore", location)
    assert restored.exit_code == 0, restored.output
    assert _judgments(fresh) == original  # every judgment, field by field
    assert not any((get_settings().data_dir / "backups").iterdir())  # the downloaded copy is gone too

    # a damaged dump in the store is refused before anything is written
    original_dump = raw.cat_file(f"{key}/{dump_name}")
    raw.pipe_file(f"{key}/{dump_name}", original_dump[:-10])
    empty = target_database()
    damaged = _cli(empty, "db", "restore", location)
    assert damaged.exit_code == 1 and "damaged" in damaged.output, damaged.output
    # a backup whose upload did not finish (no store manifest) is invisible: refused, nothing restored
    raw.pipe_file(f"{key}/{dump_name}", original_dump)
    raw.rm(f"{key}/{STORE_MANIFEST}")
    cut_off = _cli(empty, "db", "restore", location)
    assert cut_off.exit_code == 1 and "not a complete Rankforge backup" in cut_off.output, cut_off.output
    engine = sa.create_engine(empty)
    try:
        assert not sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()

    # a store that refuses the write (no such bucket): a clear error, nothing there
    refused = _cli(db_url, "db", "backup", "s3://no-such-bucket-rf/backups/b")
    assert refused.exit_code == 1 and "bucket" in refused.output.lower(), refused.output
    assert "refused the write" in refused.output or "Cannot write" in refused.output, refused.output
