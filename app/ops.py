"""Health and Prometheus metrics."""

import logging

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import Field
from sqlalchemy import func, select, text

from app import metrics
from app.api import Out
from app.auth.deps import DbSession, OptionalPrincipal, public
from app.config import get_settings
from app.errors import Forbidden, Unauthorized
from app.models import Judgment, Role
from app.proxies import address_in, parse_networks
from app.tasks.service import open_comparisons_count

log = logging.getLogger("rankforge.ops")
router = APIRouter(tags=["ops"], dependencies=[Depends(public)])


class Health(Out):
    status: str = Field(description="ok, or unavailable (503)")
    database: str


@router.get("/healthz", response_model=Health)
def healthz(db: DbSession):
    """ok / unavailable, and nothing about why: the error (host, port, driver) goes to the log, not the caller."""
    try:
        db.execute(text("SELECT 1"))
    except Exception as error:  # noqa: BLE001 - any database failure means unhealthy
        log.warning("healthz: database check failed: %s", type(error).__name__)
        db.rollback()
        return JSONResponse({"status": "unavailable", "database": "unavailable"}, status_code=503,
                            headers={"Retry-After": "5"})  # fmt: skip
    return {"status": "ok", "database": "ok"}


def metrics_access(request: Request, principal: OptionalPrincipal) -> None:
    """/metrics: an admin's or engineer's API token (or session), or a caller from RANKFORGE_METRICS_SCRAPE_ADDRESSES
    (the client address as app.proxies resolved it). Anyone else gets 401 (no credentials) or 403."""
    if principal is not None and principal.user.role in (Role.admin, Role.engineer):
        return
    networks = parse_networks(get_settings().metrics_scrape_addresses, "RANKFORGE_METRICS_SCRAPE_ADDRESSES")
    if address_in(request.client.host if request.client else None, networks):
        return
    if principal is None:
        raise Unauthorized("Metrics need an admin's or engineer's API token, or a configured scrape address.")
    raise Forbidden("Metrics are for admins and engineers.")


metrics_access.allowed_roles = None  # not a role rule (scrape addresses need no login): the route-table test skips it

@router.get("/metrics", response_class=PlainTextResponse, dependencies=[Depends(metrics_access)])
def prometheus(db: DbSession):
    # The request counters live in this process: they are served even while the database is down.
    try:
        judgments = db.scalar(select(func.count()).select_from(Judgment).where(Judgment.source == "human"))
        open_comparisons = open_comparisons_count(db)
    except Exception as error:  # noqa: BLE001 - report the outage as a gauge instead of failing the scrape
        log.warning("metrics: database gauges unavailable: %s", type(error).__name__)
        db.rollback()
        gauges = {"database_up": ("1 when the database answered this scrape.", 0)}
    else:
        gauges = {
            "database_up": ("1 when the database answered this scrape.", 1),
            "judgments": ("Human judgments stored.", judgments),
            "open_comparisons": ("Comparisons still collecting judgments.", open_comparisons),
        }
    return PlainTextResponse(metrics.render(gauges), media_type="text/plain; version=0.0.4")
