"""`rankforge models endpoint` (register a model served elsewhere) and `rankforge models serve` (serve a registered
local version with `transformers serve` or `vllm serve` and register it as an endpoint)."""

from __future__ import annotations

import json
import signal
import sys

import typer


def register(models_app: typer.Typer, fail) -> None:
    @models_app.command("endpoint")
    def models_endpoint(
        name: str,
        base_url: str = typer.Option(..., "--base-url", help="e.g. http://10.0.0.5:8000 or https://api.openai.com/v1"),
        model: str = typer.Option(..., "--model", help="The model's name at the server (GET /v1/models)."),
        api_key_env: str = typer.Option(None, "--api-key-env", help="Environment variable of the worker and web "
                                                                    "server that holds the key."),
        api_key_stdin: bool = typer.Option(False, "--api-key-stdin", help="Read the key from stdin (stored "
                                                                          "encrypted, never shown again)."),
        project: str = typer.Option(None, "--project", "-p"),
        max_concurrency: int = typer.Option(4, "--max-concurrency"),
        requests_per_minute: int = typer.Option(None, "--requests-per-minute"),
        timeout: float = typer.Option(60.0, "--timeout", help="Seconds per request."),
        price_input: float = typer.Option(None, "--price-input", help="Price per million prompt tokens."),
        price_output: float = typer.Option(None, "--price-output", help="Price per million completion tokens."),
        json_output: bool = typer.Option(False, "--json-output", help="The server supports response_format."),
        check: bool = typer.Option(True, help="Ask GET /v1/models first."),
    ):  # fmt: skip
        """Register a model served behind an OpenAI-compatible API as a policy version (checked on save)."""
        from app.db import session_scope
        from app.errors import RankforgeError
        from app.projects.service import get_project
        from app.registry.endpoints import create_endpoint, endpoint_json

        api_key = sys.stdin.readline().strip() if api_key_stdin else None
        try:
            with session_scope(write=True) as db:
                owner = get_project(db, project) if project else None
                version, endpoint = create_endpoint(
                    db, name=name, base_url=base_url, model=model, api_key=api_key, api_key_env=api_key_env,
                    project=owner, max_concurrency=max_concurrency, requests_per_minute=requests_per_minute,
                    timeout_seconds=timeout, price_input=price_input, price_output=price_output,
                    json_output=json_output, check=check)  # fmt: skip
                typer.echo(json.dumps(endpoint_json(version, endpoint)))
        except RankforgeError as error:
            fail(str(error.detail))

    @models_app.command("serve")
    def models_serve(
        version: str = typer.Argument(..., help="A registered local version (name or id)."),
        host: str = typer.Option("127.0.0.1", "--host"),
        port: int = typer.Option(8000, "--port"),
        server: str = typer.Option("transformers", "--server", help="transformers (transformers serve) or vllm."),
        device: str = typer.Option(None, "--device", help="transformers serve's --device (e.g. cpu, cuda:0)."),
        endpoint_name: str = typer.Option(None, "--endpoint-name", help="Default: VERSION-served."),
        advertise: str = typer.Option(None, "--advertise", help="Base URL the worker and web server reach it at "
                                                                "(default http://HOST:PORT)."),
    ):  # fmt: skip
        """Serve a local version with an existing OpenAI-compatible server and register it as an endpoint; runs
        until stopped (Ctrl-C stops the server too, and marks the endpoint unavailable). The worker's route: a
        `serve` job (the version's page, or POST /api/v1/endpoints/serve)."""
        from app.db import session_scope
        from app.errors import RankforgeError
        from app.registry.endpoints import endpoint_of
        from app.registry.local_serving import mark_stopped, register_served, start_server, wait_until_serving
        from app.registry.service import get_version

        try:
            with session_scope() as db:
                local = get_version(db, version)
                path, name, project_id = local.path, endpoint_name or f"{local.name}-served", local.project_id
                if endpoint_of(db, local) is not None:
                    fail(f"{local.name} is an endpoint already; serve a local version.")
            process = start_server(path, host=host, port=port, server=server, device=device)
        except RankforgeError as error:
            fail(str(error.detail))
        url = advertise or f"http://{host}:{port}"
        try:
            wait_until_serving(url, path, process)
            with session_scope(write=True) as db:
                register_served(db, name=name, url=url, model=path, project_id=project_id)
            typer.echo(json.dumps({"endpoint": name, "base_url": url, "model": path, "pid": process.pid}))
            signal.signal(signal.SIGTERM, lambda *_: process.terminate())
            process.wait()
        except RankforgeError as error:
            process.terminate()
            fail(str(error.detail))
        except KeyboardInterrupt:
            process.terminate()
        finally:
            if process.poll() is None:
                process.terminate()
                process.wait(15)
            with session_scope(write=True) as db:
                mark_stopped(db, "rankforge models serve stopped", name=name)
