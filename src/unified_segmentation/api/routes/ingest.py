"""Ingestion over HTTP: events, daily aggregates, outcomes.

A request is validated whole before anything is written: one bad row answers 422 naming the row and
field, and nothing lands. The answer comes after a durable commit.

``Idempotency-Key``: a repeated request writes nothing new — events are keyed by ``event_id`` (given,
or derived from the row's content), daily rows and outcomes are upserts of the same values — so a
retry after a lost answer is safe; its answer counts the rows as ``duplicates``. The key is echoed
back in the ``Idempotency-Key`` response header.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header

from unified_segmentation.ingest import read_daily, read_outcomes

from ..auth import WriteKey
from ..deps import MetricsDep, ServicesDep, SettingsDep
from ..responses import ORJSONResponse, render
from ..schemas import DailyRequest, EventsRequest, OutcomesRequest
from ._common import AUTH_ERRORS, NulFree, check_batch_size, errors

router = APIRouter(prefix="/api/v1", tags=["ingestion"], responses={**AUTH_ERRORS, **errors(413)})

IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=255,
                                              description="Retry-safe key of this request")]


def _answer(answer: dict, idempotency_key: str | None) -> ORJSONResponse:
    return render(answer, headers={"Idempotency-Key": idempotency_key} if idempotency_key else None)


@router.post("/events", summary="Ingest events (up to 50,000 per request)")
def ingest_events(body: EventsRequest, key: WriteKey, _: NulFree, services: ServicesDep, settings: SettingsDep,
                  metrics: MetricsDep, idempotency_key: IdempotencyKey = None) -> ORJSONResponse:
    key.check_game(body.game_id)
    check_batch_size(len(body.events), settings.max_batch_events, "events")
    answer = services.ingest_events(body.game_id, body.events)  # read in the game's time zone, same transaction
    metrics.record_ingestion(body.game_id, "events", answer)
    return _answer(answer, idempotency_key)


@router.post("/daily", summary="Ingest daily aggregates (one row per player and local day)")
def ingest_daily(body: DailyRequest, key: WriteKey, _: NulFree, services: ServicesDep, settings: SettingsDep,
                 metrics: MetricsDep, idempotency_key: IdempotencyKey = None) -> ORJSONResponse:
    key.check_game(body.game_id)
    check_batch_size(len(body.rows), settings.max_batch_events, "rows")
    answer = services.ingest_daily(body.game_id, read_daily(body.rows))
    metrics.record_ingestion(body.game_id, "daily", answer)
    return _answer(answer, idempotency_key)


@router.post("/outcomes", summary="Ingest per-player outcomes (LTV, churn, support tickets)")
def ingest_outcomes(body: OutcomesRequest, key: WriteKey, _: NulFree, services: ServicesDep, settings: SettingsDep,
                    metrics: MetricsDep, idempotency_key: IdempotencyKey = None) -> ORJSONResponse:
    key.check_game(body.game_id)
    check_batch_size(len(body.rows), settings.max_batch_events, "rows")
    answer = services.ingest_outcomes(body.game_id, read_outcomes(body.rows))
    metrics.record_ingestion(body.game_id, "outcomes", answer)
    return _answer(answer, idempotency_key)
