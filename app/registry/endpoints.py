"""Endpoints: model versions served elsewhere behind an OpenAI-compatible API (vLLM, SGLang, TGI, `transformers
serve`, a hosted API). Services never commit.

    create_endpoint / update_endpoint / delete_endpoint     the registry rows, checked against the server on save
    endpoint_json                                            what any API or page may show (never the key)
    endpoint_of / is_endpoint                                is this version an endpoint, and its row
    endpoint_config                                          what a caller needs to reach it (the key decrypted)
    unavailable_reason                                       why it cannot be used now (None: it can)

A version that is an endpoint is an ordinary `model_version` (kind policy) plus one `model_endpoint` row. Its
`path` is the base URL: informative, and never a directory anything loads (training refuses it as a base).

The API key: given, it is stored encrypted (app.crypto) and never shown again, only whether one is set; or
`api_key_env` names an environment variable the worker and web processes read at call time (the key then never
reaches the database). Addresses: private and loopback ones are allowed (a vLLM server beside the worker);
link-local ones, where cloud metadata services answer, are refused unless RANKFORGE_ENDPOINTS_ALLOW_LINK_LOCAL.

Availability: an endpoint whose server a `serve` job of the worker runs (served_by_job_id) is usable while that job
runs; the job marks it unavailable when it stops (cancel, failure), and a job that stopped without saying so (a
killed worker) makes it unavailable all the same. `rankforge models serve` marks its endpoint unavailable on exit.
Using an unavailable endpoint (generation, judging, battles) is a clear error naming the reason.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session, object_session

from app.audit import audit
from app.config import get_settings
from app.crypto import decrypt_secret, encrypt_secret
from app.errors import Conflict, EndpointError, NotFound, Unprocessable
from app.models import Job, JobStatus, ModelEndpoint, ModelVersion, Project, User, utcnow
from app.registry.endpoint_client import EndpointConfig, EndpointFailure, list_models
from app.registry.service import check_name, get_version, version_json
from app.webhooks.service import emit

SAMPLING_KEYS = {"temperature": float, "top_p": float, "top_k": int, "max_tokens": int, "presence_penalty": float,
                 "frequency_penalty": float, "seed": int, "stop": list}  # fmt: skip
"""Default sampling parameters an endpoint may carry (OpenAI names; top_k for vLLM and friends)."""
METADATA_ADDRESSES = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"),
                      ipaddress.ip_network("fd00:ec2::254/128"))  # fmt: skip
"""Link-local addresses: cloud metadata services (169.254.169.254, fd00:ec2::254) answer there."""
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}")
LIMITS = {"max_concurrency": (1, 256), "requests_per_minute": (1, 1_000_000), "timeout_seconds": (0.1, 3600.0)}


# --- checks ---------------------------------------------------------------------------------------------------


def normalise_base_url(url: str) -> str:
    """http(s)://host[:port][/prefix] without a trailing slash or /v1 (the client adds /v1/...)."""
    url = (url or "").strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Unprocessable("base_url must be an http:// or https:// URL with a host, e.g. http://10.0.0.5:8000.")
    if parts.username or parts.password:
        raise Unprocessable("base_url must not carry credentials: give the key as api_key (or api_key_env).")
    if parts.query or parts.fragment:
        raise Unprocessable("base_url must not carry a query or fragment: give the key as api_key (or api_key_env).")
    try:
        parts.port  # noqa: B018 - raises on a port out of range
    except ValueError as error:
        raise Unprocessable(f"base_url: {error}.") from error
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[: -len("/v1")]
    return f"{parts.scheme}://{parts.netloc}{path}"


def check_address(base_url: str) -> None:
    """Refuse a host that resolves to a link-local (metadata) address, unless the environment allows it."""
    if get_settings().endpoints_allow_link_local:
        return
    parts = urlsplit(base_url)
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80),
                                   proto=socket.IPPROTO_TCP)  # fmt: skip
    except (socket.gaierror, UnicodeError) as error:
        raise EndpointError(f"{parts.hostname} does not resolve ({error}).") from error
    for info in infos:
        ip = ipaddress.ip_address(info[4][0].split("%")[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        if any(ip in network for network in METADATA_ADDRESSES):
            raise EndpointError(f"{parts.hostname} resolves to the link-local address {ip}, where cloud metadata "
                                "services answer; set RANKFORGE_ENDPOINTS_ALLOW_LINK_LOCAL=true to allow it.")  # fmt: skip


def check_sampling(sampling: dict | None) -> dict:
    sampling = dict(sampling or {})
    for key, value in sampling.items():
        wanted = SAMPLING_KEYS.get(key)
        if wanted is None:
            raise Unprocessable(f"sampling: unknown parameter {key!r}; known: {', '.join(sorted(SAMPLING_KEYS))}.")
        if wanted is list:
            ok = isinstance(value, list) and all(isinstance(s, str) for s in value) and len(value) <= 8
        elif wanted is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok:
            raise Unprocessable(f"sampling: {key} must be {'a list of strings' if wanted is list else wanted.__name__}.")
    return sampling


def _check_limit(name: str, value):
    if value is None:
        return None
    low, high = LIMITS[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise Unprocessable(f"{name} must be between {low:g} and {high:g}.")
    return value


def _check_price(name: str, value):
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1e6):
        raise Unprocessable(f"{name} (price per million tokens) must be a number from 0 to 1,000,000.")
    return value


def _check_key_source(api_key: str | None, api_key_env: str | None) -> None:
    if api_key and api_key_env:
        raise Unprocessable("Give the API key (api_key) or the name of the environment variable holding it "
                            "(api_key_env), not both.")  # fmt: skip
    if api_key_env is not None and not ENV_NAME.fullmatch(api_key_env):
        raise Unprocessable("api_key_env must be an environment variable name (letters, digits, '_').")
    if api_key is not None and (len(api_key) > 1000 or any(c.isspace() for c in api_key)):
        raise Unprocessable("api_key must be one token of at most 1,000 characters (no spaces).")


# --- reading --------------------------------------------------------------------------------------------------


def endpoint_of(db: Session, version: ModelVersion) -> ModelEndpoint | None:
    return db.scalar(select(ModelEndpoint).where(ModelEndpoint.model_version_id == version.id))


def is_endpoint(db: Session, version: ModelVersion | None) -> bool:
    return version is not None and endpoint_of(db, version) is not None


def get_endpoint(db: Session, ref: int | str) -> tuple[ModelVersion, ModelEndpoint]:
    version = get_version(db, ref)
    endpoint = endpoint_of(db, version)
    if endpoint is None:
        raise NotFound(f"Model version {version.name!r} is not an endpoint.")
    return version, endpoint


def list_endpoints(db: Session) -> list[tuple[ModelVersion, ModelEndpoint]]:
    rows = db.execute(select(ModelVersion, ModelEndpoint).join(ModelEndpoint, ModelEndpoint.model_version_id
                                                               == ModelVersion.id).order_by(ModelVersion.id.desc()))  # fmt: skip
    return [(v, e) for v, e in rows]


def unavailable_reason(db: Session | None, endpoint: ModelEndpoint) -> str | None:
    """Why the endpoint cannot be used now, or None: its own mark, else its serve job no longer running."""
    if endpoint.unavailable:
        return endpoint.unavailable
    if endpoint.served_by_job_id is not None and db is not None:
        status = db.scalar(select(Job.status).where(Job.id == endpoint.served_by_job_id))
        if status != JobStatus.running:
            return f"the serve job {endpoint.served_by_job_id} running its server is {status or 'gone'}"
    return None


def endpoint_json(version: ModelVersion, endpoint: ModelEndpoint) -> dict:
    """The endpoint as the API and pages show it: everything but the key (only whether one is set, or the name of
    the environment variable that holds it)."""
    return version_json(version) | {"endpoint": {
        "base_url": endpoint.base_url, "model": endpoint.model, "has_api_key": bool(endpoint.api_key_encrypted),
        "api_key_env": endpoint.api_key_env, "sampling": endpoint.sampling or {},
        "max_concurrency": endpoint.max_concurrency, "requests_per_minute": endpoint.requests_per_minute,
        "timeout_seconds": endpoint.timeout_seconds, "price_input": endpoint.price_input,
        "price_output": endpoint.price_output, "json_output": endpoint.json_output,
        "checked_at": endpoint.checked_at.isoformat() if endpoint.checked_at else None,
        "unavailable": unavailable_reason(object_session(endpoint), endpoint),
        "served_by_job_id": endpoint.served_by_job_id}}  # fmt: skip


def _api_key(endpoint: ModelEndpoint) -> str | None:
    if endpoint.api_key_encrypted:
        return decrypt_secret(endpoint.api_key_encrypted)
    if endpoint.api_key_env:
        value = os.environ.get(endpoint.api_key_env)
        if not value:
            raise EndpointError(f"The endpoint's key is read from ${endpoint.api_key_env}, which is not set in this "
                                "process (set it for the worker and the web server).")  # fmt: skip
        return value
    return None


def endpoint_config(db: Session, version: ModelVersion, endpoint: ModelEndpoint | None = None, *,
                    require_available: bool = True) -> EndpointConfig:  # fmt: skip
    """How to call this endpoint version (the key decrypted: keep the config out of logs and responses); an
    unavailable endpoint is an EndpointError naming why (unless `require_available` is False: the check on save)."""
    endpoint = endpoint or endpoint_of(db, version)
    if endpoint is None:
        raise Unprocessable(f"Model version {version.name!r} is not an endpoint.")
    reason = unavailable_reason(db, endpoint) if require_available else None
    if reason:
        raise EndpointError(f"The endpoint {version.name} is unavailable: {reason}.")
    return EndpointConfig(name=version.name, base_url=endpoint.base_url, model=endpoint.model, api_key=_api_key(endpoint),
                          sampling=dict(endpoint.sampling or {}), max_concurrency=endpoint.max_concurrency,
                          requests_per_minute=endpoint.requests_per_minute, timeout_seconds=endpoint.timeout_seconds,
                          price_input=endpoint.price_input, price_output=endpoint.price_output,
                          json_output=endpoint.json_output)  # fmt: skip


def check_endpoint(db: Session, version: ModelVersion, endpoint: ModelEndpoint) -> list[str]:
    """GET /v1/models must answer and list the endpoint's model; marks it checked (and available again, unless a
    serve job runs its server: that job says). The served names, on success."""
    check_address(endpoint.base_url)
    config = endpoint_config(db, version, endpoint, require_available=False)
    try:
        served = list_models(config)
    except EndpointFailure as failure:
        raise EndpointError(failure.reason) from None
    if endpoint.model not in served:
        shown = ", ".join(repr(s) for s in served[:10]) + (" …" if len(served) > 10 else "")
        raise EndpointError(f"{endpoint.base_url} does not serve a model named {endpoint.model!r}; it lists: "
                            f"{shown or 'none'}.")  # fmt: skip
    endpoint.checked_at = utcnow()
    if endpoint.served_by_job_id is None:
        endpoint.unavailable = None
    return served


# --- writing --------------------------------------------------------------------------------------------------


def create_endpoint(db: Session, *, name: str, base_url: str, model: str, api_key: str | None = None,
                    api_key_env: str | None = None, project: Project | None = None, sampling: dict | None = None,
                    max_concurrency: int = 4, requests_per_minute: int | None = None, timeout_seconds: float = 60.0,
                    price_input: float | None = None, price_output: float | None = None, json_output: bool = False,
                    actor: User | None = None, check: bool = True) -> tuple[ModelVersion, ModelEndpoint]:  # fmt: skip
    """Register an endpoint as a policy version; `check` (the default) asks the server first."""
    check_name(name)
    base_url = normalise_base_url(base_url)
    model = (model or "").strip()
    if not model or len(model) > 300:
        raise Unprocessable("model (the name the server lists at GET /v1/models) must be 1 to 300 characters.")
    _check_key_source(api_key or None, api_key_env or None)
    if db.scalar(select(ModelVersion.id).where(ModelVersion.name == name)) is not None:
        raise Conflict(f"A model version named {name!r} exists already.")
    version = ModelVersion(name=name, kind="policy", path=base_url, project_id=project.id if project else None,
                           metrics={}, manifest={"endpoint": True})  # fmt: skip
    endpoint = ModelEndpoint(base_url=base_url, model=model,
                             api_key_encrypted=encrypt_secret(api_key) if api_key else None,
                             api_key_env=api_key_env or None, sampling=check_sampling(sampling),
                             max_concurrency=_check_limit("max_concurrency", max_concurrency) or 4,
                             requests_per_minute=_check_limit("requests_per_minute", requests_per_minute),
                             timeout_seconds=float(_check_limit("timeout_seconds", timeout_seconds) or 60.0),
                             price_input=_check_price("price_input", price_input),
                             price_output=_check_price("price_output", price_output),
                             json_output=bool(json_output))  # fmt: skip
    if check:
        check_endpoint(db, version, endpoint)
    else:
        check_address(base_url)
    db.add(version)
    db.flush()
    endpoint.model_version_id = version.id
    db.add(endpoint)
    db.flush()
    audit(db, actor, "endpoint.create", "model_version", version.id, name=name, base_url=base_url, model=model,
          api_key="set" if api_key else None, api_key_env=api_key_env)  # fmt: skip
    emit(db, "model.registered", version.project_id, version_json(version))
    return version, endpoint


UNSET = object()


def update_endpoint(db: Session, version: ModelVersion, endpoint: ModelEndpoint, *, actor: User | None = None,
                    check: bool = True, **changes) -> ModelEndpoint:  # fmt: skip
    """Change an endpoint's address, model, key (a new key replaces the stored one; "" removes it), sampling,
    limits or prices; checked against the server again when anything that reaches it changed."""
    reach = False
    if changes.get("base_url") is not None:
        endpoint.base_url = normalise_base_url(changes["base_url"])
        version.path = endpoint.base_url
        reach = True
    if changes.get("model") is not None:
        model = changes["model"].strip()
        if not model or len(model) > 300:
            raise Unprocessable("model must be 1 to 300 characters.")
        endpoint.model, reach = model, True
    if "api_key" in changes or "api_key_env" in changes:
        api_key, api_key_env = changes.get("api_key"), changes.get("api_key_env")
        _check_key_source(api_key or None, api_key_env or None)
        if api_key is not None:
            endpoint.api_key_encrypted = encrypt_secret(api_key) if api_key else None
            endpoint.api_key_env = None if api_key else endpoint.api_key_env
        if api_key_env is not None:
            endpoint.api_key_env = api_key_env or None
            endpoint.api_key_encrypted = None if api_key_env else endpoint.api_key_encrypted
        reach = True
    if changes.get("sampling") is not None:
        endpoint.sampling = check_sampling(changes["sampling"])
    for name in ("max_concurrency", "requests_per_minute", "timeout_seconds"):
        if changes.get(name) is not None:
            setattr(endpoint, name, _check_limit(name, changes[name]))
    for name in ("price_input", "price_output"):
        if name in changes:
            setattr(endpoint, name, _check_price(name, changes[name]))
    if changes.get("json_output") is not None:
        endpoint.json_output = bool(changes["json_output"])
    if reach and check:
        check_endpoint(db, version, endpoint)
    elif reach:
        check_address(endpoint.base_url)
    db.flush()
    audit(db, actor, "endpoint.update", "model_version", version.id,
          fields=sorted(k for k, v in changes.items() if v is not None or k.startswith("price")))  # fmt: skip
    return endpoint
