"""Benchmark: large JSON bodies with bogus credentials are refused before they are read (issue 21, point 3).

Starts a real uvicorn (a fresh SQLite database of its own, migrated) and sends `--parallel` (8) bodies of
`--mib` (8) MiB of JSON at once, each with `Authorization: Bearer garbage` (and, with `--cookie`, a forged session
cookie instead), over raw sockets so the client never waits on the server to read. Meanwhile it polls /healthz.
It prints: how many got 401 (all should), the server's RSS before and at its peak during the burst (MB, from
/proc), and /healthz latency meanwhile (median and max, ms). Before the fix each body was read and parsed: about
190 MB and 2.3 s of CPU each, /healthz stalled for seconds.

    .venv/bin/python bench/auth_bodies.py [--parallel 8] [--mib 8] [--rounds 3] [--cookie]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_mb(pid: int) -> float:
    """Resident memory of the process and its children, MB."""
    total = 0
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def send_body(port: int, size: int, credentials: str) -> int:
    """POST a JSON body of `size` bytes; the status code the server answers (0 if none)."""
    body_head = b'{"name": "x", "description": "'
    body_tail = b'"}'
    filler = size - len(body_head) - len(body_tail)
    request = (f"POST /api/v1/projects HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               f"Content-Length: {size}\r\n{credentials}\r\nConnection: close\r\n\r\n").encode()  # fmt: skip
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(request + body_head)
        chunk = b"a" * 65536
        sent, answer = 0, b""
        sock.settimeout(0.0)
        while sent < filler:
            try:
                answer += sock.recv(4096)
                if answer:
                    break  # answered before the body was sent: stop sending
            except BlockingIOError:
                pass
            try:
                sent += sock.send(chunk[: min(len(chunk), filler - sent)])
            except (BlockingIOError, InterruptedError):
                time.sleep(0.001)
            except (BrokenPipeError, ConnectionResetError):
                break
        sock.settimeout(60)
        try:
            if not answer:
                sock.sendall(body_tail)
            while b"\r\n" not in answer:
                data = sock.recv(4096)
                if not data:
                    break
                answer += data
        except OSError:
            pass
    try:
        return int(answer.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--mib", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cookie", action="store_true", help="a forged session cookie instead of a bogus token")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="rankforge-auth-bodies-"))
    env = os.environ | {"RANKFORGE_DATABASE_URL": f"sqlite:///{work / 'bench.db'}",
                        "RANKFORGE_DATA_DIR": str(work / "data")}  # fmt: skip
    subprocess.run([sys.executable, "-c", "from app.migrate import upgrade; upgrade()"], cwd=ROOT, env=env, check=True)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "uvicorn", "app.asgi:app", "--host", "127.0.0.1", "--port",
                               str(port), "--log-level", "warning"], cwd=ROOT, env=env)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        for _ in range(20):  # warm up: the first requests import and compile lazily
            httpx.get(url + "/healthz", timeout=5)
        time.sleep(0.5)
        before = rss_mb(server.pid)
        credentials = "Cookie: rf_session=forged-session" if args.cookie else "Authorization: Bearer garbage"
        statuses: list[int] = []
        latencies: list[float] = []
        peak = before
        done = threading.Event()

        def poll_health() -> None:
            nonlocal peak
            with httpx.Client(base_url=url, timeout=30) as client:
                while not done.is_set():
                    started = time.perf_counter()
                    client.get("/healthz")
                    latencies.append((time.perf_counter() - started) * 1000)
                    peak = max(peak, rss_mb(server.pid))
                    time.sleep(0.02)

        poller = threading.Thread(target=poll_health)
        poller.start()
        started = time.perf_counter()
        for _ in range(args.rounds):
            threads = [threading.Thread(target=lambda: statuses.append(send_body(port, args.mib * 2**20, credentials)))
                       for _ in range(args.parallel)]  # fmt: skip
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        elapsed = time.perf_counter() - started
        time.sleep(0.3)
        done.set()
        poller.join()
        peak = max(peak, rss_mb(server.pid))
        refused = sum(1 for s in statuses if s == 401)
        print(f"uptime: {os.popen('uptime').read().strip()}")
        print(f"{args.rounds} x {args.parallel} parallel {args.mib} MiB JSON bodies with "
              f"{'a forged session cookie' if args.cookie else 'a bogus bearer token'}: "
              f"{refused}/{len(statuses)} answered 401 (others: {sorted(s for s in statuses if s != 401)}), "
              f"{elapsed:.2f} s in all")  # fmt: skip
        print(f"server RSS: {before:.0f} MB before, {peak:.0f} MB at peak: growth {peak - before:.1f} MB")
        if latencies:
            print(f"/healthz meanwhile: {len(latencies)} requests, median {statistics.median(latencies):.1f} ms, "
                  f"max {max(latencies):.1f} ms")  # fmt: skip
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    main()
