"""Secrets at rest (issue 21, point 8): webhook signing secrets are encrypted with the server's key, so a copied
database file, its WAL, or a backup reveals none of them; the SQLite files and the data dir are owner-only."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.webhooks.test_webhooks import set_env


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _sqlite_files(url: str) -> list[Path]:
    path = Path(url.removeprefix("sqlite:///"))
    return [p for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")) if p.exists()]


def _make_endpoint(client, users, monkeypatch) -> tuple[dict, str]:
    set_env(monkeypatch, webhooks_allow_private="true")
    admin = users.create("admin", "admin")
    response = client.post("/api/v1/webhooks", json={"url": "http://127.0.0.1:9/hook", "events": ["*"]},
                           headers=admin["headers"])  # fmt: skip
    assert response.status_code == 201, response.text
    rotated = client.post(f"/api/v1/webhooks/{response.json()['id']}/rotate-secret", headers=admin["headers"])
    assert rotated.status_code == 200, rotated.text
    return admin, rotated.json()["secret"]


def test_a_webhook_secret_is_nowhere_in_plain_text_in_the_database(client, users, monkeypatch, db_url, db):
    first_admin, secret = _make_endpoint(client, users, monkeypatch)
    key_material = secret.removeprefix("whsec_")
    stored = db.execute(sa.text("SELECT secret FROM webhook_endpoint")).scalar_one()
    assert key_material not in stored and stored.startswith("enc:v1:")
    # The page and the API still show a hint of the real secret (decrypted on the way out).
    shown = client.get("/api/v1/webhooks", headers=first_admin["headers"]).json()
    assert [item["secret_hint"] for item in shown] == [secret[:10] + "…"]
    if db_url.startswith("sqlite"):
        for file in _sqlite_files(db_url):
            assert key_material.encode() not in file.read_bytes(), file.name


@pytest.mark.only_db("sqlite")
def test_a_backup_holds_no_plain_secret(client, users, monkeypatch, db_url, tmp_path):
    from app.backup import backup
    from app.config import get_settings

    _, secret = _make_endpoint(client, users, monkeypatch)
    target = tmp_path / "backup"
    backup(db_url, get_settings().data_dir, target)
    for file in target.iterdir():
        assert secret.removeprefix("whsec_").encode() not in file.read_bytes(), file.name


def test_secrets_need_the_key_they_were_encrypted_with(db_url, monkeypatch):
    from app.crypto import decrypt_secret, encrypt_secret
    from app.errors import SecretKeyError

    set_env(monkeypatch, secret_key="k" * 40)
    token = encrypt_secret("whsec_abc")
    assert "whsec_abc" not in token and decrypt_secret(token) == "whsec_abc"
    set_env(monkeypatch, secret_key="other-" * 8)
    with pytest.raises(SecretKeyError):
        decrypt_secret(token)
    set_env(monkeypatch, secret_key="other-" * 8 + "," + "k" * 40)  # rotation: the old key still decrypts
    assert decrypt_secret(token) == "whsec_abc"
    set_env(monkeypatch, secret_key="short")
    with pytest.raises(SecretKeyError, match="at least"):
        encrypt_secret("x")


def test_without_a_configured_key_one_is_generated_once_owner_only(db_url, monkeypatch, tmp_path):
    from app.crypto import KEY_FILE_NAME, decrypt_secret, encrypt_secret

    monkeypatch.delenv("RANKFORGE_SECRET_KEY", raising=False)
    set_env(monkeypatch, data_dir=tmp_path / "fresh-data")
    token = encrypt_secret("whsec_xyz")
    key_file = tmp_path / "fresh-data" / KEY_FILE_NAME
    assert _mode(key_file) == 0o600 and _mode(key_file.parent) == 0o700
    before = key_file.read_text()
    assert decrypt_secret(token) == "whsec_xyz" and key_file.read_text() == before


@pytest.mark.only_db("sqlite")
def test_the_migration_encrypts_existing_secrets(tmp_path, monkeypatch):
    from app.crypto import decrypt_secret
    from app.migrate import upgrade

    set_env(monkeypatch, secret_key="m" * 40, data_dir=tmp_path / "data")
    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(url, "0008")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO webhook_endpoint (url, description, events, secret, enabled, consecutive_failures, created_at)"
            " VALUES ('http://example.com/', '', '[\"*\"]', 'whsec_plainOldSecret', 1, 0, '2026-01-01 00:00:00')"))
    upgrade(url)
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT secret FROM webhook_endpoint")).scalar_one()
    engine.dispose()
    assert "plainOldSecret" not in stored and decrypt_secret(stored) == "whsec_plainOldSecret"


@pytest.mark.only_db("sqlite")
def test_database_wal_and_data_dir_are_owner_only(tmp_path, monkeypatch):
    from app.db import make_engine

    previous = os.umask(0o022)  # an ordinary umask: files would be 0644 without the engine's care
    try:
        set_env(monkeypatch, data_dir=tmp_path / "store")
        (tmp_path / "var").mkdir(mode=0o755)  # an ordinary folder, as /var/lib/rankforge (not ours to change)
        url = f"sqlite:///{tmp_path / 'var' / 'rankforge.db'}"
        engine = make_engine(url)
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE t (a INTEGER)"))
            conn.execute(sa.text("INSERT INTO t VALUES (1)"))
        with engine.connect() as conn:  # keeps the WAL and SHM files there while we look
            conn.execute(sa.text("SELECT a FROM t")).all()
            files = _sqlite_files(url)
            assert {f.name for f in files} == {"rankforge.db", "rankforge.db-wal", "rankforge.db-shm"}
            assert {f.name: _mode(f) for f in files} == {f.name: 0o600 for f in files}
        engine.dispose()
    finally:
        os.umask(previous)
    assert _mode(tmp_path / "store") == 0o700
