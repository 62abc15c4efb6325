from datetime import datetime

from sqlalchemy import Float, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedMixin, IdMixin


class ModelVersion(IdMixin, CreatedMixin, Base):
    """A registered checkpoint (kind policy or reward) with its lineage."""

    __tablename__ = "model_version"

    name: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    path: Mapped[str] = mapped_column(String(500))
    project_id: Mapped[int | None] = mapped_column(ForeignKey("project.id", ondelete="SET NULL"), index=True)
    base_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_version.id", ondelete="SET NULL"))
    job_id: Mapped[int | None] = mapped_column(index=True)
    """The job that made it (no foreign key: jobs also point here, and a cycle buys nothing)."""
    dataset_id: Mapped[int | None] = mapped_column(ForeignKey("dataset_snapshot.id", ondelete="SET NULL"))
    dataset_sha256: Mapped[str | None] = mapped_column(String(64))
    metrics: Mapped[dict] = mapped_column(default=dict)
    manifest: Mapped[dict] = mapped_column(default=dict)


class ModelEndpoint(IdMixin, CreatedMixin, Base):
    """A model version served elsewhere behind an OpenAI-compatible API (vLLM, SGLang, TGI, `transformers serve`,
    a hosted API). The version's own row says what it is (kind, project, lineage); this row says how to reach it.
    The API key is stored encrypted (app.crypto) or named as an environment variable of the worker and web
    process; neither form is ever returned."""

    __tablename__ = "model_endpoint"

    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_version.id", ondelete="CASCADE"), unique=True)
    base_url: Mapped[str] = mapped_column(String(500))
    """Scheme, host, port and path prefix before /v1 (e.g. http://10.0.0.5:8000)."""
    model: Mapped[str] = mapped_column(String(300))
    """The model's name at the server (what GET /v1/models lists)."""
    api_key_encrypted: Mapped[str | None] = mapped_column(String(2000))
    api_key_env: Mapped[str | None] = mapped_column(String(100))
    sampling: Mapped[dict] = mapped_column(default=dict)
    """Default sampling parameters (temperature, top_p, max_tokens, ...) a job's own params override."""
    max_concurrency: Mapped[int] = mapped_column(default=4)
    requests_per_minute: Mapped[int | None]
    timeout_seconds: Mapped[float] = mapped_column(Float, default=60.0)
    price_input: Mapped[float | None] = mapped_column(Float)
    """Price per million prompt tokens (any currency; cost is reported in it)."""
    price_output: Mapped[float | None] = mapped_column(Float)
    """Price per million completion tokens."""
    json_output: Mapped[bool] = mapped_column(default=False)
    """The server honours response_format (JSON schema): a judge asks for its verdict as JSON."""
    checked_at: Mapped[datetime | None]
    """When GET /v1/models last answered and listed the model."""
    unavailable: Mapped[str | None] = mapped_column(String(500))
    """Why the endpoint cannot be used now (e.g. the serve job running its server stopped); None: available."""
    served_by_job_id: Mapped[int | None]
    """The worker's `serve` job whose child runs this endpoint's server (a local version served from the worker);
    None: served elsewhere. No foreign key, like model_version.job_id."""
