"""Health, readiness and Prometheus metrics: always reachable without an API key (``/metrics`` may
ask for ``USEG_METRICS_TOKEN``)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Header, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from unified_segmentation import __version__

from ..deps import MetricsDep, ServicesDep
from ..responses import ORJSONResponse, render

router = APIRouter(tags=["health"])

READY_TIMEOUT_S = 5.0


@router.get("/health", summary="Service is up")
async def health() -> ORJSONResponse:
    return render({"status": "ok", "version": __version__})


@router.get("/health/live", summary="Liveness: the process answers")
async def live() -> ORJSONResponse:
    return render({"status": "ok"})


@router.get("/health/ready", summary="Readiness: database reachable and migrations at head",
            responses={503: {"description": "Not ready"}})
async def ready(services: ServicesDep) -> ORJSONResponse:
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(run_in_threadpool(services.ping), READY_TIMEOUT_S)
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
        checks["database"] = f"unreachable ({type(exc).__name__})"
    if checks["database"] == "ok":
        try:
            at_head = await asyncio.wait_for(run_in_threadpool(services.migrations_at_head), READY_TIMEOUT_S)
            checks["migrations"] = "ok" if at_head else "not at head: run 'useg db upgrade'"
        except Exception as exc:  # noqa: BLE001
            checks["migrations"] = f"unknown ({type(exc).__name__})"
    if all(v == "ok" for v in checks.values()):
        return render({"status": "ok", "checks": checks})
    failing = ", ".join(f"{k} {v}" for k, v in checks.items() if v != "ok")
    return render({"status": "unavailable", "error": "not_ready", "detail": failing, "checks": checks}, 503)


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
def metrics(request: Request, metrics: MetricsDep,
            authorization: Annotated[str | None, Header()] = None) -> Response:
    request.app.state.auth.check_metrics_token(authorization)
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)
