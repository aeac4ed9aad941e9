"""The application factory. Nothing is built at import time: settings are read, and the database services
built, when :func:`create_app` runs and its lifespan starts.

``uvicorn --factory unified_segmentation.api.app:create_app`` serves it with settings from the
environment; tests pass their own ``Settings`` and ``Services``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.concurrency import run_in_threadpool

from unified_segmentation import __version__
from unified_segmentation.config import Settings

from .auth import Authenticator
from .batching import RequestBatcher
from .errors import install_error_handlers
from .heap import freeze_heap
from .hot import HotRoutes
from .idempotency import IdempotencyMiddleware, IdempotentReplay, replay_handler
from .jobs import CalibrationJobs, Job
from .logs import auth_banner, configure_logging, masked_url
from .metrics import ApiMetrics
from .middleware import BodySizeLimitMiddleware, RequestContextMiddleware
from .responses import ORJSONResponse
from .routes import ROUTERS

if TYPE_CHECKING:
    from unified_segmentation.services.facade import Services

log = logging.getLogger("unified_segmentation.api")

DESCRIPTION = """Per-game behavioural taxonomies, fuzzy memberships, per-player anomaly detection and a safe
migration path from legacy segmentation systems.

Errors are `{"error": code, "detail": text}`. API keys (`Authorization: Bearer <key>` or `X-API-Key`) are
required when the server binds beyond loopback or `USEG_AUTH=required`; scopes admin ⊇ write ⊇ read.

Write routes (write / admin scope) accept `Idempotency-Key`: a retry with the same body replays the first
answer byte for byte (`Idempotent-Replayed: true`); the same key with another body answers 422
`idempotency_key_reused`, a duplicate while the first runs 409 `idempotency_in_progress`."""


def create_app(settings: Settings | None = None, services: Services | None = None) -> FastAPI:
    """Build the FastAPI application.

    Parameters
    ----------
    settings : Settings, optional
        Default: ``Settings.load()`` (environment, ``.env``).
    services : Services, optional
        Use these services (the caller closes them); default: built in the lifespan from
        ``settings.url`` / ``db_sslmode`` / ``db_pool_size`` and closed at shutdown.
    """
    settings = settings if settings is not None else Settings.load()
    configure_logging(settings.log_level, settings.log_json)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = services is None
        if owned:
            from unified_segmentation.services.facade import Services as _Services

            svc = _Services(settings.url, sslmode=settings.db_sslmode, pool_size=settings.db_pool_size)
        else:
            svc = services
        app.state.services = svc
        app.state.batcher = RequestBatcher(svc, max_batch=max(1, settings.request_batch_max),
                                           enabled=settings.request_batch_max > 1, observe=metrics.observe_batch,
                                           linger_s=settings.request_batch_linger_ms / 1000)
        app.state.auth = Authenticator(svc, required=settings.auth_required,
                                       rate_limit_per_minute=settings.rate_limit_per_minute,
                                       metrics_token=settings.metrics_token)
        store = svc if hasattr(svc, "job_status") else None  # test doubles keep jobs in memory
        app.state.jobs = CalibrationJobs(on_done=lambda job: _count_calibration(metrics, job), store=store,
                                         stale_after_s=settings.job_stale_s)
        log.info("database: %s", masked_url(settings.url), extra={"database_url": masked_url(settings.url)})
        log.info(auth_banner(settings), extra={"auth_required": settings.auth_required})
        if settings.bootstrap_admin_key:
            try:
                await _store_bootstrap_key(svc, settings.bootstrap_admin_key)
                log.info("bootstrap admin key is stored")
            except Exception:  # noqa: BLE001 - the service still starts; /health/ready tells what is wrong
                log.exception("could not store the bootstrap admin key (are migrations at head?)")
        hook = getattr(svc, "after_compile", None)
        if settings.gc_freeze:
            svc.after_compile = freeze_heap
            freeze_heap()
        try:
            yield
        finally:
            svc.after_compile = hook
            app.state.jobs.shutdown()
            if owned:
                await run_in_threadpool(svc.close)

    app = FastAPI(
        title="Unified Behavioral Segmentation",
        version=__version__,
        description=DESCRIPTION,
        default_response_class=ORJSONResponse,
        lifespan=lifespan,
    )
    app.state.settings = settings
    metrics = ApiMetrics(snapshot=lambda: _snapshot(app))
    app.state.metrics = metrics
    install_error_handlers(app)
    app.add_exception_handler(IdempotentReplay, replay_handler)
    for router in ROUTERS:
        app.include_router(router)

    # Added innermost first: request context wraps the hot routes wrap CORS wraps the body limit wraps
    # idempotency wraps the routes.
    app.add_middleware(IdempotencyMiddleware)
    app.add_middleware(BodySizeLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    if settings.cors_list:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_list,
            allow_methods=["GET", "POST", "PUT", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "Idempotency-Key", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Idempotency-Key", "Idempotent-Replayed", "Location", "Retry-After"],
        )
    app.add_middleware(HotRoutes, api=app, cors=bool(settings.cors_list), max_body_bytes=settings.max_body_bytes)
    app.add_middleware(RequestContextMiddleware, metrics=metrics)
    return app


async def _store_bootstrap_key(services: Services, key: str) -> None:
    """Get-or-create; a second try covers two workers racing to create it."""
    for attempt in (1, 2):
        try:
            await run_in_threadpool(services.ensure_api_key, key, "admin")
            return
        except Exception:
            if attempt == 2:
                raise
            await asyncio.sleep(0.2)


def _snapshot(app: FastAPI) -> dict:
    services = getattr(app.state, "services", None)
    return services.metrics_snapshot() if services is not None else {}


def _count_calibration(metrics: ApiMetrics, job: Job) -> None:
    metrics.calibrations.labels(job.game_id, job.status).inc()
