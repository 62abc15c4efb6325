"""ASGI entry point for uvicorn: `uvicorn app.asgi:app`.

Sync endpoints run in anyio's worker threads, 40 by default. On a few cores 40 threads holding the
GIL in turn make every request slower than queueing would; a smaller pool served 20-25% more requests
per second in bench/assign.py. RANKFORGE_WORKER_THREADS overrides the size. Requests that hold row
locks never wait for a thread (they do all their work in one), so a small pool cannot deadlock.
"""

import os
import sys
from contextlib import asynccontextmanager

import anyio.to_thread

from app.main import create_app


def _ignore_uvicorn_proxy_headers() -> None:
    """`uvicorn app.asgi:app` turns --proxy-headers on by default and then believes X-Forwarded-For from
    FORWARDED_ALLOW_IPS (loopback by default), rewriting the client address before the app sees the real peer:
    anyone on the machine, or a proxy not configured here, could pick their address. RANKFORGE_TRUSTED_PROXIES
    must decide alone (app.proxies), so when uvicorn loads this module (it wraps the app afterwards, through
    the name ProxyHeadersMiddleware in uvicorn.config) that wrapper hands the app through unchanged."""
    config = sys.modules.get("uvicorn.config")
    if config is not None and hasattr(config, "ProxyHeadersMiddleware"):
        config.ProxyHeadersMiddleware = lambda app, trusted_hosts=None: app


_ignore_uvicorn_proxy_headers()

WORKER_THREADS = int(os.environ.get("RANKFORGE_WORKER_THREADS", "8"))
"""Worker threads per process for sync endpoints and dependencies."""

app = create_app()
_lifespan = app.router.lifespan_context


@asynccontextmanager
async def _lifespan_with_thread_limit(application):
    # The limiter belongs to the running event loop, so it can only be sized once the loop runs.
    anyio.to_thread.current_default_thread_limiter().total_tokens = WORKER_THREADS
    async with _lifespan(application) as state:
        yield state


app.router.lifespan_context = _lifespan_with_thread_limit
