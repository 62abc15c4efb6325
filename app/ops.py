"""Health and Prometheus metrics."""

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy import func, select, text

from app import metrics
from app.auth.deps import DbSession, public
from app.models import Judgment
from app.tasks.service import open_comparisons_count

router = APIRouter(tags=["ops"], dependencies=[Depends(public)])


@router.get("/healthz")
def healthz(db: DbSession):
    try:
        db.execute(text("SELECT 1"))
    except Exception as error:  # noqa: BLE001 - any database failure means unhealthy
        return JSONResponse({"status": "error", "database": str(error)[:200]}, status_code=503)
    return {"status": "ok", "database": "ok"}


@router.get("/metrics", response_class=PlainTextResponse)
def prometheus(db: DbSession):
    judgments = db.scalar(select(func.count()).select_from(Judgment).where(Judgment.source == "human"))
    open_comparisons = open_comparisons_count(db)
    gauges = {
        "judgments": ("Human judgments stored.", judgments),
        "open_comparisons": ("Comparisons still collecting judgments.", open_comparisons),
    }
    return PlainTextResponse(metrics.render(gauges), media_type="text/plain; version=0.0.4")
