"""Starting uvicorn. With several workers uvicorn creates the listening socket itself in a way that
leaves Nagle's algorithm on, and every response then waits ~40 ms for the client's delayed ACK; binding
a TCP socket here and handing it to uvicorn's supervisor avoids that.

uvicorn's proxy headers are off: it would believe X-Forwarded-For from loopback (its default
FORWARDED_ALLOW_IPS); RANKFORGE_TRUSTED_PROXIES alone decides, in app.proxies."""

from __future__ import annotations

import socket

import uvicorn


def run_server(host: str, port: int, workers: int = 1, log_level: str = "warning",
               sockets: list[socket.socket] | None = None) -> None:  # fmt: skip
    """Serve the app; `sockets`: already listening sockets to serve on (one worker), e.g. bound early by the demo."""
    if sockets:
        config = uvicorn.Config("app.asgi:app", log_level=log_level, proxy_headers=False)
        uvicorn.Server(config).run(sockets=sockets)
        return
    if workers <= 1:
        uvicorn.run("app.asgi:app", host=host, port=port, log_level=log_level, proxy_headers=False)
        return
    from uvicorn.supervisors import Multiprocess

    config = uvicorn.Config("app.asgi:app", host=host, port=port, workers=workers, log_level=log_level,
                            proxy_headers=False)  # fmt: skip
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    Multiprocess(config, sockets=[sock]).run()
