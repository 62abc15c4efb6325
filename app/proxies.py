"""The client's real address and scheme behind reverse proxies.

`X-Forwarded-For` and `X-Forwarded-Proto` are written by whoever sends the request, so they are believed only
when the direct peer is a proxy the admin configured (`RANKFORGE_TRUSTED_PROXIES`: addresses or CIDRs, empty by
default). `ClientAddressMiddleware` rewrites the ASGI scope's `client` and `scheme` once, first thing, so every
part of the app (login throttling, sessions, cookies) sees the same answer. uvicorn's own `--proxy-headers`
(which trusts loopback by default) is switched off by `rankforge serve` and neutralized in `app.asgi`, so it
never rewrites the peer before this runs.
"""

from __future__ import annotations

import ipaddress

from app.config import Network, get_settings, parse_networks

__all__ = ["Network", "parse_networks"]  # defined with the settings they check; imported from here too
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_address(value: str) -> Address | None:
    """An address as proxies write it (bare, `1.2.3.4:port`, `[v6]` or `[v6]:port`); None when it is not one."""
    value = value.strip()
    if value.startswith("["):
        value = value[1 : value.find("]")] if "]" in value else ""
    elif value.count(":") == 1:
        value = value.split(":", 1)[0]
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


def address_in(address: str | None, networks: tuple[Network, ...]) -> bool:
    """Whether an address (as the ASGI scope gives it) lies in one of the networks."""
    return _trusted(parse_address(address) if address else None, networks)


def _trusted(address: Address | None, networks: tuple[Network, ...]) -> bool:
    return address is not None and any(address in network for network in networks)


def client_address(peer: str | None, forwarded_for: list[str], networks: tuple[Network, ...]) -> str | None:
    """The client's address: the peer itself, unless the peer is a trusted proxy and the request carries
    X-Forwarded-For. Then the hops are read right to left (each proxy appends the address it saw), skipping
    trusted proxies; the first other address is the client. A malformed hop ends the walk at the last address
    a trusted proxy vouched for, so garbage can never become the client address."""
    peer_address = parse_address(peer) if peer else None
    if not _trusted(peer_address, networks) or not forwarded_for:
        return peer
    hops = [hop for header in forwarded_for for hop in header.split(",")]
    current = str(peer_address)
    for hop in reversed(hops):
        address = parse_address(hop)
        if address is None:
            return current
        current = str(address)
        if not _trusted(address, networks):
            return current
    return current


class ClientAddressMiddleware:
    """Pure ASGI: sets scope["client"] (and scope["scheme"] from X-Forwarded-Proto) per the trusted proxies."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket"):
            networks = parse_networks(get_settings().trusted_proxies)
            client = scope.get("client")
            peer = client[0] if client else None
            if networks and _trusted(parse_address(peer) if peer else None, networks):
                forwarded = [v.decode("latin-1") for k, v in scope["headers"] if k == b"x-forwarded-for"]
                address = client_address(peer, forwarded, networks)
                if address != peer:
                    scope["client"] = (address, 0)
                proto = [v.decode("latin-1").strip().lower() for k, v in scope["headers"] if k == b"x-forwarded-proto"]
                if proto and proto[-1] in ("http", "https"):
                    scope["scheme"] = proto[-1] if scope["type"] == "http" else proto[-1].replace("http", "ws")
        await self.app(scope, receive, send)
