"""The entrypoint of a Ray job when the artifact store is an object store (app.store): runs on a Ray node that does
not see the worker's files, so the job's inputs travel through the store.

    python -m app.jobs.ray_entry IN_LOCATION OUT_LOCATION -- COMMAND ...

IN_LOCATION is the job's bundle the worker published (app.jobs.trainer_child.stage_for_ray): spec.json with its
input paths replaced by the inputs' content-addressed locations in the store (`_bundle`: {field: {"location",
"file" for a single file}}; an older bundle's plain names are files inside the bundle). This entry takes this
node's cached copy of the bundle and of each input (keyed by content hash, leased while the Ray job runs: the
cache's pruning leaves them), writes the spec with this node's paths and a scratch output directory, runs COMMAND (the
trainer: `python -m trainer.run SPEC` or `accelerate launch ... -m trainer.run SPEC`, SPEC_PLACEHOLDER standing for
the spec's path) with its output going to the Ray job's log, and publishes the output to OUT_LOCATION (files, then
the store manifest). The worker reads it from there. A store that refuses the write fails the Ray job with the
store's message (an `error` event). Needs no database: only the store's URL and this node's credentials for it
(its environment), and RANKFORGE_DATA_DIR for its cache and scratch.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from app.config import get_settings
from app.store import ArtifactNotFound, ArtifactStore, StoreError, cache_leases, open_location
from trainer.threads import TOKEN_CACHE_ENV

SPEC_PLACEHOLDER = "{spec}"
BUNDLE_KEY = "_bundle"


def _event(kind: str, message: str) -> None:
    print(json.dumps({"event": kind, "message": message}), flush=True)


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[2] != "--":
        print("usage: python -m app.jobs.ray_entry IN_LOCATION OUT_LOCATION -- COMMAND ...", file=sys.stderr)
        return 2
    in_location, out_location, command = argv[0], argv[1], argv[3:]
    with cache_leases():
        return _run(in_location, out_location, command)


def _inputs(bundle: Path, names: dict) -> dict[str, str]:
    """This node's paths of the spec's inputs: cached copies of their store locations (or files in the bundle)."""
    paths = {}
    for field, value in names.items():
        if isinstance(value, dict):
            local = open_location(value["location"]).local_copy()
            paths[field] = str(local / value["file"]) if value.get("file") else str(local)
        else:
            paths[field] = str(bundle / value)
    return paths


def _run(in_location: str, out_location: str, command: list[str]) -> int:
    data_dir = Path(get_settings().data_dir).resolve()
    try:
        bundle = open_location(in_location).local_copy()
        spec = json.loads((bundle / "spec.json").read_text(encoding="utf-8"))
        spec |= _inputs(bundle, spec.pop(BUNDLE_KEY, {}))
    except (StoreError, ArtifactNotFound) as error:
        _event("error", f"Reading the job's inputs from {in_location}: {error.detail}")
        return 1
    (data_dir / "jobs").mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="ray-", dir=data_dir / "jobs"))
    try:
        spec["output_dir"] = str(scratch / "output")
        spec_path = scratch / "spec.json"
        spec_path.write_text(json.dumps(spec, indent=2), encoding="utf-8")
        env = os.environ | {"PYTHONUNBUFFERED": "1", TOKEN_CACHE_ENV: str(data_dir / "cache" / "tokenized")}
        returncode = subprocess.call([part.replace(SPEC_PLACEHOLDER, str(spec_path)) for part in command], env=env)
        if returncode != 0:
            return returncode
        _event("log", f"publishing the output to {out_location}")
        try:
            ArtifactStore(out_location, data_dir).publish(scratch / "output", out_location)
        except StoreError as error:
            _event("error", str(error.detail))
            return 1
        return 0
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
