"""Serving a registered local version as an endpoint by starting an existing OpenAI-compatible server on it:
`transformers serve` (transformers' `serving` extra, installed with the `train` extra) or `vllm serve` where vLLM is
installed (a GPU machine). We write no model server of our own.

    serve_command(path, host, port, server="transformers") -> argv    what `rankforge models serve` runs
    start_server(...) -> Popen, wait_until_serving(url, ...)          for the CLI, the tests and the bench

The server runs in a child process (the web process and the worker never import torch). The model's name at the
server is the checkpoint path (what GET /v1/models lists), which is what the endpoint registered for it names.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx

from app.errors import EndpointError, Unprocessable
from app.jobs.child import python_executable

SERVERS = ("transformers", "vllm")


def _server_program(server: str) -> str:
    """The server's console script beside the Python that runs trainer children (same environment)."""
    beside = Path(python_executable()).parent / server
    if beside.is_file():
        return str(beside)
    found = shutil.which(server)
    if found is None:
        extra = "pip install 'transformers[serving]'" if server == "transformers" else "pip install vllm"
        raise Unprocessable(f"The `{server}` command is not installed ({extra}).")
    return found


def serve_command(path: str, *, host: str = "127.0.0.1", port: int = 8000, server: str = "transformers",
                  device: str | None = None) -> list[str]:  # fmt: skip
    """argv of a server for the checkpoint at `path` on host:port."""
    if server not in SERVERS:
        raise Unprocessable(f"server must be one of {', '.join(SERVERS)}.")
    if not (Path(path) / "config.json").is_file():
        raise Unprocessable(f"{path} is not a local checkpoint (no config.json): only local versions are served.")
    if server == "vllm":
        return [_server_program("vllm"), "serve", path, "--host", host, "--port", str(port)]
    command = [_server_program("transformers"), "serve", path, "--host", host, "--port", str(port),
               "--log-level", "warning"]  # fmt: skip
    return command + (["--device", device] if device else [])


def server_env() -> dict[str, str]:
    """Offline by default: a local checkpoint needs nothing from the hub."""
    return os.environ | {"HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}


def start_server(path: str, *, host: str = "127.0.0.1", port: int = 8000, server: str = "transformers",
                 device: str | None = None, log=None) -> subprocess.Popen:  # fmt: skip
    return subprocess.Popen(serve_command(path, host=host, port=port, server=server, device=device), env=server_env(),
                            stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT if log else subprocess.DEVNULL)  # fmt: skip


def wait_until_serving(base_url: str, model: str, process: subprocess.Popen | None = None,
                       timeout: float = 180.0) -> None:  # fmt: skip
    """Poll GET /v1/models until it lists `model` (the server loads the checkpoint first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise EndpointError(f"The model server exited (code {process.returncode}) before it served {model}.")
        try:
            listed = httpx.get(f"{base_url}/v1/models", timeout=2).json()
            if any(m.get("id") == model for m in listed.get("data", [])):
                return
        except (httpx.HTTPError, ValueError, AttributeError):
            pass
        time.sleep(0.3)
    raise EndpointError(f"{base_url} did not list {model} within {timeout:g} s.")
