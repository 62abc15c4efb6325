"""The artifact store (app.store) on a real S3 API: moto's standalone server (`moto_server`, from moto[server]),
started once per session on a free port
(fixtures `s3_server`, `s3_store` in tests/conftest.py). Where it is missing these tests skip with the reason; under CI=true they
fail (tests/conftest.py `missing`), as for PostgreSQL and Chromium.

- a snapshot the web side writes to the S3 store is trained on by a worker started with another local directory
  (RANKFORGE_DATA_DIR), and the model version it publishes is downloaded through the API and checked against its
  store manifest;
- a store that refuses the write fails the job with the store's message and registers no version;
- a process killed mid-upload leaves nothing visible (no manifest: readers see no artifact).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import ROOT

FAST = {"max_steps": 2, "logging_steps": 1, "per_device_train_batch_size": 4, "max_length": 64}


def _worker(env_extra: dict, data_dir: Path) -> subprocess.CompletedProcess:
    """`rankforge worker --once` in a process of its own, with its own local directory."""
    env = os.environ | env_extra | {"RANKFORGE_DATA_DIR": str(data_dir)}
    return subprocess.run([sys.executable, "-m", "app.cli", "worker", "--once"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip


def _keyword_native(n: int) -> bytes:
    import json

    from trainer.tiny import keyword_pairs

    lines = [json.dumps({"prompt": row["prompt"].strip(), "external_id": f"k{i}", "ranking": [[0], [1]],
                         "completions": [{"text": row["chosen"], "model": "a"}, {"text": row["rejected"], "model": "b"}]})
             for i, row in enumerate(keyword_pairs(n, seed=1))]  # fmt: skip
    return ("\n".join(lines) + "\n").encode()


@pytest.mark.only_db("sqlite")
def test_snapshot_from_web_trained_by_another_worker_and_model_downloaded(client, users, db_url, s3_store, tmp_path):
    from app.db import session_scope
    from app.models import DatasetSnapshot, ModelVersion, Project
    from app.registry.service import init_tiny
    from app.store import STORE_MANIFEST, open_location, overall_sha256
    from app.worker import run_one
    from tests.helpers import import_lines, make_project

    admin, engineer = users.create("root", "admin"), users.create("eve", "engineer")
    project = make_project(client, admin, name="Keyword", slug="kw")
    assert import_lines(client, admin, project["id"], _keyword_native(40)).status_code == 200
    with session_scope(write=True) as db:
        tiny = init_tiny(db, db.get(Project, project["id"]))  # built here, published to S3
        assert all(v.path.startswith(s3_store["url"] + "/") for v in tiny), [v.path for v in tiny]
    # the web side (this process, its own data dir) writes the snapshot to the store
    snapshot = client.post(f"/api/v1/projects/{project['id']}/datasets", json={"format": "pairs"},
                           headers=engineer["headers"]).json()  # fmt: skip
    assert run_one("web-side") is not None
    with session_scope() as db:
        row = db.get(DatasetSnapshot, snapshot["id"])
        assert row.status == "ready" and row.path.startswith(s3_store["url"] + "/datasets/"), (row.status, row.path)
        snapshot_location = row.path
    served = client.get(f"/api/v1/datasets/{snapshot['id']}/files/train.jsonl", headers=engineer["headers"])
    assert served.status_code == 200 and served.content.count(b"\n") >= 1

    # a worker on "another machine": another local directory, the same database and store
    job = client.post("/api/v1/jobs", headers=engineer["headers"],
                      json={"kind": "reward", "project_id": project["id"], "dataset_id": snapshot["id"],
                            "params": FAST}).json()  # fmt: skip
    other_dir = tmp_path / "other-machine"
    done = _worker(s3_store["env"] | {"RANKFORGE_DATABASE_URL": db_url,
                                      "RANKFORGE_ARTIFACT_STORE": s3_store["url"]}, other_dir)
    state = client.get(f"/api/v1/jobs/{job['id']}", headers=engineer["headers"]).json()
    assert state["status"] == "succeeded", (state, done.stderr[-3000:])
    version_id = state["result"]["model_version_id"]
    with session_scope() as db:
        version = db.get(ModelVersion, version_id)
        assert version.path.startswith(s3_store["url"] + "/models/"), version.path
        from app.models import Job

        base = db.get(ModelVersion, db.get(Job, job["id"]).base_model_id)
        wanted = {open_location(base.path).manifest()["sha256"], open_location(snapshot_location).manifest()["sha256"]}
        log_tail = db.get(Job, job["id"]).log_tail or ""
    # the other worker read the snapshot and the base model through its own cache, keyed by content hash
    cached = {p.name for p in (other_dir / "cache" / "artifacts").iterdir() if not p.name.startswith(".")}
    assert wanted <= cached, (wanted, cached)
    # and archived the job's directory to the store once the job ended
    archived = log_tail.rsplit("job files: ", 1)[-1].split()[0] if "job files: " in log_tail else None
    assert archived and archived.startswith(s3_store["url"] + f"/jobs/{job['id']}/"), log_tail[-500:]
    assert "spec.json" in open_location(archived).manifest()["files"]

    listing = client.get(f"/api/v1/models/{version_id}/files", headers=engineer["headers"])
    assert listing.status_code == 200, listing.text
    body = listing.json()
    assert "manifest.json" in {f["name"] for f in body["files"]} and body["files"]
    assert body["files"][0]["url"].startswith(f"{os.environ['AWS_ENDPOINT_URL']}/")  # presigned by S3
    hashes = {}
    for entry in body["files"]:
        with client.stream("GET", f"/api/v1/models/{version_id}/files/{entry['name']}",
                           headers=engineer["headers"]) as response:  # fmt: skip
            assert response.status_code == 200
            digest, size = hashlib.sha256(), 0
            for chunk in response.iter_bytes():
                digest.update(chunk)
                size += len(chunk)
        assert (digest.hexdigest(), size) == (entry["sha256"], entry["bytes"]), entry["name"]
        hashes[entry["name"]] = {"sha256": digest.hexdigest()}
    assert overall_sha256(hashes) == body["sha256"]
    assert open_location(version.path).manifest()["sha256"] == body["sha256"]
    missing_file = client.get(f"/api/v1/models/{version_id}/files/nope.bin", headers=engineer["headers"])
    assert missing_file.status_code == 404
    escape = client.get(f"/api/v1/models/{version_id}/files/..%2F{STORE_MANIFEST}", headers=engineer["headers"])
    assert escape.status_code == 404

    # a backup lists the store's artifacts from their manifests, and its check finds an object that went missing
    import s3fs
    import sqlalchemy as sa

    from app.backup import list_artifacts, verify_artifacts

    engine = sa.create_engine(db_url)
    listed = list_artifacts(engine, Path(os.environ["RANKFORGE_DATA_DIR"]))
    engine.dispose()
    in_store = [a for a in listed if a["path"].startswith(s3_store["url"])]
    assert {a["kind"] for a in in_store} == {"dataset", "model"} and not any(a.get("missing") for a in in_store)
    assert verify_artifacts({"artifacts": listed}, Path(os.environ["RANKFORGE_DATA_DIR"])).ok
    victim = next(a for a in in_store if a["path"] == version.path)["files"][0]["path"]
    s3fs.S3FileSystem.clear_instance_cache()
    s3fs.S3FileSystem().rm(victim.removeprefix("s3://"))
    check = verify_artifacts({"artifacts": listed}, Path(os.environ["RANKFORGE_DATA_DIR"]))
    assert check.missing == [victim] and not check.changed

    # a store that refuses the write (a bucket that does not exist): the job fails with the store's message,
    # and no version is registered
    job2 = client.post("/api/v1/jobs", headers=engineer["headers"],
                       json={"kind": "reward", "project_id": project["id"], "dataset_id": snapshot["id"],
                             "params": FAST}).json()  # fmt: skip
    refused = _worker(s3_store["env"] | {"RANKFORGE_DATABASE_URL": db_url,
                                         "RANKFORGE_ARTIFACT_STORE": "s3://no-such-bucket-rf/x"}, other_dir)
    state = client.get(f"/api/v1/jobs/{job2['id']}", headers=engineer["headers"]).json()
    assert state["status"] == "failed", (state, refused.stderr[-2000:])
    assert "refused the write" in state["error"] and "bucket" in state["error"].lower(), state["error"]
    with session_scope() as db:
        from sqlalchemy import select

        assert db.scalar(select(ModelVersion).where(ModelVersion.job_id == job2["id"])) is None


KILLED_UPLOAD = textwrap.dedent("""
    import os, signal, sys
    import s3fs
    from app.store import get_store
    calls = {"n": 0}
    original = s3fs.S3FileSystem.put_file
    def put_file(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            os.kill(os.getpid(), signal.SIGKILL)  # the worker dies with one file uploaded
        return original(self, *args, **kwargs)
    s3fs.S3FileSystem.put_file = put_file
    get_store().publish(sys.argv[1], sys.argv[2])
""")


def test_process_killed_mid_upload_leaves_nothing_visible(s3_store, tmp_path, monkeypatch):
    import s3fs

    from app.errors import NotFound
    from app.store import STORE_MANIFEST, get_store, open_location

    monkeypatch.setenv("RANKFORGE_DATA_DIR", str(tmp_path / "data"))
    source = tmp_path / "model"
    (source / "sub").mkdir(parents=True)
    for name in ("a.bin", "b.bin", "sub/c.bin"):
        (source / name).write_bytes(os.urandom(50_000))
    location = get_store().location("models", "killed")
    env = os.environ | s3_store["env"] | {"RANKFORGE_ARTIFACT_STORE": s3_store["url"]}
    result = subprocess.run([sys.executable, "-c", KILLED_UPLOAD, str(source), location], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == -9, result.stderr[-2000:]
    s3fs.S3FileSystem.clear_instance_cache()
    raw = s3fs.S3FileSystem()
    uploaded = raw.find(location.removeprefix("s3://"))
    assert uploaded and not any(key.endswith(STORE_MANIFEST) for key in uploaded)  # a file went up, no manifest
    artifact = open_location(location)
    assert not artifact.exists()
    with pytest.raises(NotFound):
        artifact.manifest()
    with pytest.raises(NotFound):
        list(artifact.stream("a.bin"))
    # publishing again (a retry) completes it
    manifest = get_store().publish(source, location)
    assert open_location(location).exists() and open_location(location).manifest() == manifest


def test_local_store_publishes_in_place_with_a_manifest(tmp_path, monkeypatch):
    from app.config import get_settings
    from app.store import STORE_MANIFEST, get_store, local_path, open_location

    monkeypatch.setenv("RANKFORGE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("RANKFORGE_ARTIFACT_STORE", raising=False)
    get_settings.cache_clear()
    store = get_store()
    assert store.local
    location = store.location("models", "m")
    work = tmp_path / "work"
    work.mkdir()
    (work / "w.bin").write_bytes(b"x" * 10)
    manifest = store.publish(work, location)
    assert not work.exists() and (Path(location) / STORE_MANIFEST).is_file()
    assert local_path(location) == location  # a local store's artifact is read in place, never copied
    assert b"".join(open_location(location).stream("w.bin")) == b"x" * 10
    assert manifest["files"]["w.bin"]["bytes"] == 10
    get_settings.cache_clear()


@pytest.mark.only_db("sqlite")
def test_model_files_of_a_local_store_version(client, users, tmp_path):
    """The default local store: a registered checkpoint's files listed with their hashes and downloaded in place."""
    engineer = users.create("eve", "engineer")
    checkpoint = tmp_path / "ckpt"
    (checkpoint / "sub").mkdir(parents=True)
    (checkpoint / "config.json").write_text('{"model_type": "x"}')
    (checkpoint / "sub" / "weights.bin").write_bytes(os.urandom(4096))
    version = client.post("/api/v1/models", headers=engineer["headers"],
                          json={"name": "local-ckpt", "path": str(checkpoint), "kind": "policy"}).json()  # fmt: skip
    listing = client.get(f"/api/v1/models/{version['id']}/files", headers=engineer["headers"]).json()
    assert [f["name"] for f in listing["files"]] == ["config.json", "sub/weights.bin"]
    assert all(f["url"] == f"/api/v1/models/{version['id']}/files/{f['name']}"
               for f in listing["files"])  # fmt: skip
    served = client.get(f"/api/v1/models/{version['id']}/files/sub/weights.bin", headers=engineer["headers"])
    assert served.status_code == 200
    assert hashlib.sha256(served.content).hexdigest() == listing["files"][1]["sha256"]
    outside = client.get(f"/api/v1/models/{version['id']}/files/..%2F..%2Fetc%2Fpasswd", headers=engineer["headers"])
    assert outside.status_code == 404


def test_cache_is_pruned_least_recently_used_first_and_never_an_entry_in_use(s3_store, tmp_path, monkeypatch):
    """RANKFORGE_CACHE_MAX_GB: over the cap the entries used longest ago go first; one a running job holds (a lease
    inside `cache_leases()`) stays whatever its age; once released it can go; an evicted artifact is fetched again."""
    from app.config import get_settings
    from app.store import CACHE_DIR, cache_leases, get_store, open_location, prune_cache

    monkeypatch.setenv("RANKFORGE_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    store, shas, locations = get_store(), {}, {}
    for name in ("a", "b", "c"):
        source = tmp_path / name
        source.mkdir()
        (source / "w.bin").write_bytes(os.urandom(100_000))
        locations[name] = store.location("models", name)
        shas[name] = store.publish(source, locations[name])["sha256"]  # the uploaded tree becomes the cached copy
    cache = tmp_path / "data" / CACHE_DIR
    cached = lambda: {p.name for p in cache.iterdir() if not p.name.startswith(".")}  # noqa: E731
    assert cached() == set(shas.values())
    for age, name in enumerate(("b", "a", "c")):  # last used: b longest ago, then a, then c
        os.utime(cache / shas[name], (1_000_000 + age, 1_000_000 + age))
    monkeypatch.setenv("RANKFORGE_CACHE_MAX_GB", str(250_000 / 2**30))  # room for two of the three entries
    get_settings.cache_clear()

    assert prune_cache() == [shas["b"]]  # 300 kB over a 250 kB cap: the least recently used one goes
    assert cached() == {shas["a"], shas["c"]}

    with cache_leases():  # a running job reads "a" (use: its mtime is now the newest)
        local = open_location(locations["a"]).local_copy()
        os.utime(local, (1, 1))  # even the oldest-used entry is kept while leased
        assert prune_cache(0) == [shas["c"]]
        assert cached() == {shas["a"]} and (local / "w.bin").stat().st_size == 100_000
    assert prune_cache(0) == [shas["a"]]  # released with the block
    assert not cached()

    again = open_location(locations["b"]).local_copy()  # evicted: downloaded again, checked against its manifest
    assert again.name == shas["b"] and (again / "w.bin").stat().st_size == 100_000
    get_settings.cache_clear()
