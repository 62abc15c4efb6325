"""Benchmark of a large import (issue 25: "import of 1M lines streams"), on PostgreSQL.

For each `--lines` size: writes a native JSONL file of that many prompts (two completions each, an external id) to a
temporary file, creates a database of its own (rf_import_bench_<pid>_<n>, dropped afterwards), runs the migrations,
and imports the file

- through the service call the API makes (`app.imports.service.import_stream` over the open file, one transaction),
  in a child process: rows (prompts + completions + comparisons), seconds, prompts/s and rows/s, and the child's
  peak RSS (`ru_maxrss` from os.wait4);
- with `--http`, once more into a second project through `POST /api/v1/projects/{id}/import` of a uvicorn server
  (one worker, a child process; the body streamed by httpx): seconds and the server's peak RSS (VmHWM) before and
  after the import.

Peak RSS that does not grow from 100k to 1M lines is the point: the file is never held whole. Quote `uptime` with
the figures (the script prints it).

    .venv/bin/python bench/import_scale.py [--lines 100000,1000000] [--http]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

PG_URL = os.environ.get("RANKFORGE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
MAX_IMPORT_BYTES = 4 * 2**30


def write_file(path: Path, lines: int) -> int:
    with path.open("w") as out:
        for i in range(lines):
            row = {"prompt": f"Question {i}: what is {i} plus {i}?", "external_id": f"q{i}",
                   "completions": [{"text": f"{2 * i}", "model": "a"}, {"text": f"{2 * i + 1}", "model": "b"}]}  # fmt: skip
            out.write(json.dumps(row) + "\n")
    return path.stat().st_size


def admin_engine() -> sa.Engine:
    return sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")


def create_database(name: str) -> str:
    engine = admin_engine()
    with engine.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    engine.dispose()
    return PG_URL.rsplit("/", 1)[0] + "/" + name


def drop_database(name: str) -> None:
    engine = admin_engine()
    with engine.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    engine.dispose()


def env_for(url: str, data_dir: str) -> dict:
    return os.environ | {"RANKFORGE_DATABASE_URL": url, "RANKFORGE_DATA_DIR": data_dir,
                         "RANKFORGE_MAX_IMPORT_BYTES": str(MAX_IMPORT_BYTES), "PYTHONPATH": str(ROOT)}  # fmt: skip


def setup(url: str) -> tuple[int, int, str]:
    """Migrations, two projects (service, HTTP) and an admin's API token."""
    from app.auth.service import create_api_token
    from app.db import session_scope
    from app.migrate import upgrade
    from app.projects.schemas import ProjectCreate
    from app.projects.service import create_project
    from app.users.service import create_user

    upgrade(url)
    with session_scope(url) as db:
        service_project = create_project(db, ProjectCreate(name="Import bench"), None).id
        http_project = create_project(db, ProjectCreate(name="Import bench HTTP"), None).id
        admin = create_user(db, "bench-admin", "admin", "bench-password-1", actor=None)
        token = create_api_token(db, admin, "bench")
    return service_project, http_project, token


def child(url: str, project_id: int, path: str) -> None:
    """In its own process: the import as the API does it (import_stream over the file), then a JSON line."""
    from app.db import session_scope
    from app.imports.service import import_stream
    from app.models import Project

    started = time.perf_counter()
    with open(path, "rb") as source, session_scope(url, write=True) as db:
        result = import_stream(db, db.get(Project, project_id), source, "native", None)
    print(json.dumps({"seconds": time.perf_counter() - started, **result.model_dump()}), flush=True)


def run_child(url: str, project_id: int, path: Path, env: dict) -> dict:
    process = subprocess.Popen([sys.executable, __file__, "--child", url, str(project_id), str(path)],
                               stdout=subprocess.PIPE, env=env, cwd=ROOT)  # fmt: skip
    out = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise SystemExit(f"the import child failed ({process.returncode})")
    result = json.loads(out.decode().strip().splitlines()[-1])
    result["peak_rss_mib"] = usage.ru_maxrss / 1024  # KiB on Linux
    return result


def vm_hwm_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_http(project_id: int, token: str, path: Path, env: dict) -> dict:
    import socket

    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "uvicorn", "app.asgi:app", "--port", str(port), "--log-level",
                               "warning"], env=env, cwd=ROOT)  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code < 500:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        before = vm_hwm_mib(server.pid)
        started = time.perf_counter()
        with path.open("rb") as body:
            response = httpx.post(f"{base}/api/v1/projects/{project_id}/import", params={"format": "native"},
                                  content=body, timeout=3600,
                                  headers={"Authorization": f"Bearer {token}", "Content-Type": "application/x-ndjson",
                                           "Content-Length": str(path.stat().st_size)})  # fmt: skip
        seconds = time.perf_counter() - started
        if response.status_code != 200:
            raise SystemExit(f"HTTP import: {response.status_code} {response.text[:500]}")
        return {"seconds": seconds, **response.json(), "server_rss_before_mib": before,
                "server_peak_rss_mib": vm_hwm_mib(server.pid)}  # fmt: skip
    finally:
        server.terminate()
        server.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", default="100000,1000000", help="file sizes in lines, comma-separated")
    parser.add_argument("--http", action="store_true", help="also import each file through the HTTP API")
    parser.add_argument("--child", nargs=3, metavar=("URL", "PROJECT", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), args.child[2])
        return
    print("load:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(), flush=True)
    with tempfile.TemporaryDirectory(prefix="rf_import_bench_") as work:
        for lines in [int(n) for n in args.lines.split(",")]:
            path = Path(work) / f"prompts_{lines}.jsonl"
            started = time.perf_counter()
            size = write_file(path, lines)
            print(f"\n{lines:,} lines, {size / 2**20:.0f} MiB written in {time.perf_counter() - started:.1f} s",
                  flush=True)  # fmt: skip
            name = f"rf_import_bench_{os.getpid()}_{lines}"
            url = create_database(name)
            try:
                service_project, http_project, token = setup(url)
                env = env_for(url, str(Path(work) / "data"))
                result = run_child(url, service_project, path, env)
                rows = result["prompts_created"] + result["completions_created"] + result["comparisons_created"]
                print(f"service: {result['prompts_created']:,} prompts, {rows:,} rows in {result['seconds']:.1f} s: "
                      f"{result['prompts_created'] / result['seconds']:,.0f} prompts/s, "
                      f"{rows / result['seconds']:,.0f} rows/s; peak RSS {result['peak_rss_mib']:.0f} MiB", flush=True)  # fmt: skip
                if args.http:
                    http = run_http(http_project, token, path, env)
                    rows = http["prompts_created"] + http["completions_created"] + http["comparisons_created"]
                    print(f"HTTP:    {http['prompts_created']:,} prompts, {rows:,} rows in {http['seconds']:.1f} s: "
                          f"{http['prompts_created'] / http['seconds']:,.0f} prompts/s; server RSS "
                          f"{http['server_rss_before_mib']:.0f} MiB before, peak {http['server_peak_rss_mib']:.0f} MiB",
                          flush=True)  # fmt: skip
            finally:
                drop_database(name)
            path.unlink()
    print("\nload:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
