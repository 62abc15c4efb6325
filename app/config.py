"""Settings, read from the environment (prefix RANKFORGE_) or a .env file."""

import ipaddress
from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RANKFORGE_", env_file=".env", extra="ignore")

    database_url: str = "sqlite:///var/rankforge.db"
    """SQLAlchemy URL. SQLite file by default; postgresql+psycopg://... in production."""
    data_dir: Path = Path("var/data")
    """This machine's local directory: the artifact store itself unless artifact_store names another (then only
    scratch: job working directories, the cache of downloaded artifacts, secret.key)."""
    artifact_store: str = ""
    """RANKFORGE_ARTIFACT_STORE: where snapshots, model versions, job files, uploads and backups live (app.store):
    empty for data_dir (a local directory), or an fsspec URL (s3://bucket/prefix, gs://..., az://...), its endpoint
    and credentials read from the environment by the backend (e.g. AWS_ENDPOINT_URL for s3fs)."""
    cache_max_gb: float = Field(default=50.0, ge=0)
    """RANKFORGE_CACHE_MAX_GB: the most this machine's cache of store artifacts (<data_dir>/cache/artifacts) keeps;
    the least recently used entries are removed beyond it, never one a running job uses (app.store.prune_cache)."""
    export_processes: int = Field(default=0, ge=0, le=64)
    """RANKFORGE_EXPORT_PROCESSES: processes a large pairs export uses on PostgreSQL (app.datasets.export_parts);
    0 for the machine's cores, at most 4; 1 for one process."""
    host: str = "127.0.0.1"
    port: int = 8000

    session_hours: int = 12
    """Lifetime of a browser session."""
    cookie_secure: bool | None = None
    """Force the Secure cookie flag; by default it follows the request scheme (https behind a proxy)."""
    login_max_failures: int = 5
    """Wrong passwords from one address before that account is locked for that address."""
    login_max_failures_per_user: int = 20
    """Wrong passwords for one account from all addresses together before it is locked everywhere (so an
    attacker rotating addresses is stopped too); higher than the per-address limit."""
    login_lock_minutes: int = 15
    """How long failures count (and locks last); older failure rows are pruned."""
    metrics_scrape_addresses: str = ""
    """Comma-separated addresses or CIDR networks allowed to read /metrics without a token (a Prometheus server);
    otherwise /metrics needs an admin's or engineer's API token."""
    trusted_proxies: str = ""
    """Comma-separated addresses or CIDR networks of reverse proxies whose X-Forwarded-For and X-Forwarded-Proto
    are believed (app.proxies); empty: the direct peer is the client."""

    secret_key: str | None = None
    """Encrypts secrets at rest (webhook signing secrets, endpoint keys; app.crypto): at least 32 characters,
    comma-separated to rotate (the first encrypts). Unset: a key generated once into <data_dir>/secret.key (0600)."""

    lease_seconds: int = 1200
    """Default assignment lease for new projects."""
    max_import_bytes: int = 64 * 2**20
    max_body_bytes: int = 8 * 2**20
    """Largest request body of every route but imports (those take max_import_bytes); see app.bodylimit."""
    db_pool_size: int = 20

    worker_heartbeat_seconds: float = 3.0
    worker_stale_seconds: float = 30.0
    """A running job whose heartbeat is older than this is considered abandoned."""
    python_executable: str | None = None
    """Python used to start trainer child processes (defaults to the worker's own)."""
    trainer_threads: int | None = Field(default=None, ge=1)
    """CPU threads per trainer process (RANKFORGE_TRAINER_THREADS; RANKFORGE_TRAINER_OMP_THREADS is its older
    name). Unset: the CPUs the worker may use (affinity, cgroup quota) shared among the child's processes, one
    thread for models under 5M parameters (trainer.threads)."""

    endpoints_allow_link_local: bool = False
    """Allow model endpoints on link-local addresses (169.254.0.0/16, fe80::/10, fd00:ec2::254: cloud metadata
    services live there). Private and loopback addresses are always allowed for endpoints (a vLLM server beside
    the worker)."""
    endpoints_retry_base_seconds: float = 0.5
    """First backoff of a retried endpoint request (doubles per attempt, full jitter)."""
    endpoints_max_attempts: int = 5
    """Attempts per endpoint request (429, 5xx, timeouts and broken answers are retried) before it fails."""

    webhooks_allow_private: bool = False
    """Allow webhook URLs on loopback, link-local and private addresses (self-hosted receivers)."""
    webhooks_timeout_seconds: float = 10.0
    webhooks_max_attempts: int = 8
    """Attempts per delivery before it gives up (backoff doubles from webhooks_retry_base_seconds)."""
    webhooks_retry_base_seconds: float = 5.0
    webhooks_disable_after: int = 20
    """Consecutive failed attempts after which an endpoint is disabled (and the admin told)."""
    webhooks_batch_seconds: float = 1.0
    """judgment.created: at most one delivery per endpoint this often, carrying every judgment since."""


    @field_validator("trusted_proxies", "metrics_scrape_addresses")
    @classmethod
    def _networks(cls, value: str, info) -> str:
        """Refuse a malformed address list at start-up rather than on every request."""
        parse_networks(value, f"RANKFORGE_{info.field_name.upper()}")
        return value


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=16)
def parse_networks(value: str, setting: str = "RANKFORGE_TRUSTED_PROXIES") -> tuple[Network, ...]:
    """`10.0.0.1, 10.1.0.0/16, ::1` -> networks; ValueError naming the setting and the entry that is neither."""
    networks = []
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError as error:
            raise ValueError(f"{setting}: {item!r} is not an address or CIDR network") from error
    return tuple(networks)


@lru_cache
def get_settings() -> Settings:
    return Settings()
