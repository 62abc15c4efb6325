"""Benchmark of Rankforge's endpoint client against a real OpenAI-compatible server.

It builds a tiny local checkpoint (trainer.tiny), starts `transformers serve` on it (app.registry.local_serving, the
command `rankforge models serve` runs), or uses a server you name with --base-url/--model (e.g. `vllm serve` on a
GPU), and prints:

- generation: requests/s and completion tokens/s at concurrency 1, 4 and 16 (EndpointClient.chat, the client a
  generate job uses, with its bounded concurrency and retries);
- judging: tokens and seconds per 1,000 judge verdicts (a verdict = one pair asked in both orders with the default
  template, app.judges.endpoint_judge.ask_question);
- streaming: time to first token straight from the server (EndpointClient.stream_chat), p50 and p99;
- battles: time to the first token of a live battle through Rankforge (a real `uvicorn app.asgi:app` on a scratch
  SQLite database: the battle's stream request, both sides asked at once by the web process, to the first `delta`
  event) against straight from the server (the same two streamed requests at once, to the first text piece of either),
  interleaved, and Rankforge's overhead at p50 and p99 (differences of the percentiles).

The machine's load (uptime) is printed beside the figures: on a loaded machine they are lower bounds.

    .venv/bin/python bench/endpoints.py [--requests 32] [--max-tokens 16] [--verdicts 16]
    .venv/bin/python bench/endpoints.py --base-url http://127.0.0.1:8000 --model Qwen/Qwen2.5-0.5B-Instruct
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.judges.endpoint_judge import ask_question  # noqa: E402
from app.registry.endpoint_client import EndpointClient, EndpointConfig  # noqa: E402
from trainer.params import DEFAULT_JUDGE_TEMPLATE, JudgeArgs  # noqa: E402
from trainer.verdicts import fill_template  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def generation(config: EndpointConfig, requests: int, max_tokens: int) -> None:
    print("generation (EndpointClient.chat)")
    print(f"{'concurrency':>12} {'requests':>9} {'seconds':>8} {'requests/s':>11} {'tokens/s':>9}")
    for concurrency in (1, 4, 16):
        cfg = EndpointConfig(**{**config.__dict__, "max_concurrency": concurrency})
        with EndpointClient(cfg) as client:

            def ask(i: int, client=client) -> int:
                answer = client.chat([{"role": "user", "content": f"Write about item {i}."}],
                                     {"max_tokens": max_tokens, "temperature": 1.0})  # fmt: skip
                return (answer.usage or {}).get("completion_tokens") or 0

            started = time.perf_counter()
            with ThreadPoolExecutor(concurrency) as pool:
                tokens = sum(pool.map(ask, range(requests)))
            elapsed = time.perf_counter() - started
        print(f"{concurrency:>12} {requests:>9} {elapsed:>8.2f} {requests / elapsed:>11.2f} {tokens / elapsed:>9.1f}")


def judging(config: EndpointConfig, verdicts: int) -> None:
    args = JudgeArgs(method="generative", max_answer_tokens=4)
    questions = []
    for i in range(verdicts):
        a, b = f"Please take item {i}.", f"Take item {i} now."
        for first, second in ((a, b), (b, a)):
            questions.append(fill_template(DEFAULT_JUDGE_TEMPLATE, guidelines="Be polite.", prompt=f"Ask for item {i}",
                                           response_a=first, response_b=second))  # fmt: skip
    with EndpointClient(config) as client:
        started = time.perf_counter()
        with ThreadPoolExecutor(config.max_concurrency) as pool:
            answers = list(pool.map(lambda q: ask_question(client, q, args), questions))
        elapsed = time.perf_counter() - started
    tokens = sum(a["usage"]["prompt_tokens"] + a["usage"]["completion_tokens"] for _p, a in answers)
    parsed = sum(1 for p, _a in answers if p is not None)
    print(f"judging ({verdicts} verdicts = {len(questions)} questions, concurrency {config.max_concurrency}): "
          f"{1000 * tokens / verdicts:,.0f} tokens and {1000 * elapsed / verdicts:,.1f} s per 1,000 verdicts; "
          f"{parsed}/{len(questions)} answers parseable")  # fmt: skip


def first_tokens(config: EndpointConfig, n: int, max_tokens: int) -> None:
    waits = []
    with EndpointClient(config) as client:
        for i in range(n):
            started = time.perf_counter()
            for event in client.stream_chat([{"role": "user", "content": f"Tell me about item {i}."}],
                                             {"max_tokens": max_tokens}):  # fmt: skip
                if "delta" in event:
                    waits.append(time.perf_counter() - started)
                    break
    if waits:
        print(f"time to first token straight from the server ({len(waits)} streams): p50 "
              f"{1000 * statistics.median(waits):.1f} ms, p99 {1000 * percentile(waits, 0.99):.1f} ms")  # fmt: skip


def _serve_rankforge(root: Path) -> tuple[subprocess.Popen, str, dict]:
    """A scratch Rankforge (SQLite, migrated) served by uvicorn: (process, url, env)."""
    import httpx

    env = os.environ | {"RANKFORGE_DATABASE_URL": f"sqlite:///{root / 'bench.db'}", "RANKFORGE_DATA_DIR": str(root / "data")}
    subprocess.run([sys.executable, "-c", "from app.migrate import upgrade; upgrade()"], env=env, check=True,
                   cwd=Path(__file__).resolve().parents[1])  # fmt: skip
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "uvicorn", "app.asgi:app", "--host", "127.0.0.1", "--port",
                                str(port), "--log-level", "warning"], env=env, cwd=Path(__file__).resolve().parents[1])  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return process, url, env
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("Rankforge did not start")


def battles(base_url: str, model: str, n: int, max_tokens: int) -> None:
    """Time to first token of a battle through Rankforge vs straight from the server (see the module)."""
    import httpx

    root = Path(tempfile.mkdtemp(prefix="bench-battles-"))
    process, web, env = _serve_rankforge(root)
    make_users = ("from app.db import session_scope; from app.users.service import create_user; "
                  "from app.auth.service import create_api_token\n"
                  "with session_scope(write=True) as db:\n"
                  " a = create_user(db, 'bench-admin', 'admin', 'bench-pass-1', actor=None)\n"
                  " r = create_user(db, 'bench-rater', 'annotator', 'bench-pass-1', actor=None)\n"
                  " print(create_api_token(db, a, 'bench'), create_api_token(db, r, 'bench'))")  # fmt: skip
    tokens = subprocess.run([sys.executable, "-c", make_users], env=env, capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parents[1]).stdout.split()  # fmt: skip
    admin, rater = ({"Authorization": f"Bearer {token}"} for token in tokens[-2:])
    direct, through = [], []
    try:
        with httpx.Client(base_url=web, timeout=300) as api:
            project = api.post("/api/v1/projects", json={"name": "bench arena"}, headers=admin).json()
            for name in ("bench-left", "bench-right"):
                response = api.post("/api/v1/endpoints", json={"name": name, "base_url": base_url, "model": model,
                                                              "project_id": project["id"], "timeout_seconds": 120},
                                    headers=admin)  # fmt: skip
                response.raise_for_status()
            api.put(f"/api/v1/projects/{project['id']}/battle-settings", headers=admin, json={
                "enabled": True, "max_tokens": max_tokens, "turns_per_minute": 10_000, "turns_per_hour": 100_000,
                "timeout_seconds": 120}).raise_for_status()  # fmt: skip
            config = EndpointConfig(name="bench", base_url=base_url, model=model, timeout_seconds=120)
            with EndpointClient(config) as client, ThreadPoolExecutor(2) as pool:

                def first_piece(prompt: str, started: float) -> float:
                    for event in client.stream_chat([{"role": "user", "content": prompt}], {"max_tokens": max_tokens}):
                        if "delta" in event:
                            return time.perf_counter() - started
                    return float("inf")

                for i in range(n):
                    prompt = f"Tell me about item {i}."
                    # as a battle does: both sides asked at once, the first piece of either
                    started = time.perf_counter()
                    direct.append(min(pool.map(first_piece, [prompt, prompt], [started, started])))
                    battle = api.post(f"/api/v1/projects/{project['id']}/battles", json={"prompt": prompt},
                                      headers=rater).json()  # fmt: skip
                    started = time.perf_counter()
                    with api.stream("POST", f"/api/v1/battles/{battle['id']}/turns/0/stream", headers=rater) as events:
                        first = None
                        for line in events.iter_lines():
                            if first is None and line == "event: delta":
                                first = time.perf_counter() - started
                        if first is not None:
                            through.append(first)
    finally:
        process.terminate()
        process.wait(30)
    if direct and through:
        p50 = (statistics.median(direct), statistics.median(through))
        p99 = (percentile(direct, 0.99), percentile(through, 0.99))
        print(f"battle time to first token ({len(through)} battles, {len(direct)} direct streams, interleaved)")
        print(f"{'':>22} {'p50 ms':>8} {'p99 ms':>8}")
        print(f"{'straight from server':>22} {1000 * p50[0]:8.1f} {1000 * p99[0]:8.1f}")
        print(f"{'through Rankforge':>22} {1000 * p50[1]:8.1f} {1000 * p99[1]:8.1f}")
        print(f"{'Rankforge overhead':>22} {1000 * (p50[1] - p50[0]):8.1f} {1000 * (p99[1] - p99[0]):8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", help="an OpenAI-compatible server to use instead of transformers serve")
    parser.add_argument("--model", help="its model name (with --base-url)")
    parser.add_argument("--requests", type=int, default=32, help="generation requests per concurrency level")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--verdicts", type=int, default=16)
    parser.add_argument("--streams", type=int, default=20)
    parser.add_argument("--battles", type=int, default=20, help="battles (and as many direct streams) for the "
                        "battle time to first token")
    options = parser.parse_args()
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    process = None
    if options.base_url:
        base_url, model = options.base_url.rstrip("/").removesuffix("/v1"), options.model
        print(f"server: {base_url} ({model})")
    else:
        from app.registry.local_serving import start_server, wait_until_serving
        from trainer.tiny import build_tiny_policy, default_texts, train_tokenizer

        root = Path(tempfile.mkdtemp(prefix="bench-endpoints-"))
        path = build_tiny_policy(root / "policy", train_tokenizer(default_texts(200), vocab_size=400), seed=0)
        port = free_port()
        base_url, model = f"http://127.0.0.1:{port}", str(path)
        process = start_server(model, port=port, device=os.environ.get("BENCH_DEVICE", "cpu"))
        wait_until_serving(base_url, model, process, timeout=300)
        print(f"server: transformers serve on a tiny Llama checkpoint ({base_url})")
    config = EndpointConfig(name="bench", base_url=base_url, model=model, max_concurrency=4, timeout_seconds=120)
    try:
        generation(config, options.requests, options.max_tokens)
        judging(config, options.verdicts)
        first_tokens(config, options.streams, options.max_tokens)
        battles(base_url, model, options.battles, options.max_tokens)
    finally:
        if process is not None:
            process.terminate()
            process.wait(30)
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
