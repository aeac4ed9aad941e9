"""Categorization and anomaly detection: single players, batches, listings and game-wide shifts."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from ..auth import KEY_SECURITY, ReadKey, presented_key
from ..deps import MetricsDep, ServicesDep, SettingsDep
from ..hot import serve_categorize, serve_detect
from ..responses import ORJSONResponse, render
from ..schemas import (
    CategorizeBatchRequest,
    CategorizeRequest,
    DetectBatchRequest,
    DetectRequest,
    GameQuery,
    Timestamp,
)
from ._common import AUTH_ERRORS, SEGMENTATION, check_batch_size, errors

router = APIRouter(prefix=SEGMENTATION, tags=["scoring"], responses=AUTH_ERRORS)


# The single-player routes run on the event loop: a call is ~1 ms of CPU plus one indexed read, less than a
# hop to the threadpool and back costs. Calls that arrive together are read and scored together (batching.py).
# A well-formed call is answered by the HotRoutes layer (hot.py) before it reaches FastAPI; these routes
# serve the rest (and document both) with the same functions. They check their key inside those functions
# (the same checks as ``ReadKey``) instead of through dependencies. Batches and listings stay in the threadpool.
@router.post("/categorize", summary="Place one player in the game's taxonomy", responses=errors(404, 409),
             openapi_extra=KEY_SECURITY)
async def categorize(body: CategorizeRequest, request: Request) -> ORJSONResponse:
    return render(await serve_categorize(request.app.state, presented_key(request), body))


@router.post("/categorize/batch", summary="Categorize up to 10,000 players", responses=errors(404, 409, 413))
def categorize_batch(body: CategorizeBatchRequest, key: ReadKey, services: ServicesDep, settings: SettingsDep,
                     metrics: MetricsDep) -> ORJSONResponse:
    key.check_game(body.game_id)
    check_batch_size(len(body.player_ids), settings.max_batch_players, "players")
    answer = services.categorize_batch(body.game_id, body.player_ids, as_of=body.as_of, compact=body.compact,
                                       persist=body.persist, columnar=body.columnar)
    if body.columnar:
        metrics.record_confidences(body.game_id, answer["columns"]["confidence"])
    else:
        metrics.record_profiles(body.game_id, answer["profiles"])
    return render(answer)


@router.post("/anomalies/detect", summary="Does one player depart from their own normal?", responses=errors(404, 409),
             openapi_extra=KEY_SECURITY)
async def detect(body: DetectRequest, request: Request) -> ORJSONResponse:
    return render(await serve_detect(request.app.state, presented_key(request), body))


@router.post("/anomalies/detect/batch", summary="Detect anomalies for up to 10,000 players",
             responses=errors(404, 409, 413))
def detect_batch(body: DetectBatchRequest, key: ReadKey, services: ServicesDep, settings: SettingsDep,
                 metrics: MetricsDep) -> ORJSONResponse:
    key.check_game(body.game_id)
    check_batch_size(len(body.player_ids), settings.max_batch_players, "players")
    answer = services.detect_batch(body.game_id, body.player_ids, as_of=body.as_of, persist=body.persist)
    metrics.record_detections(body.game_id, answer["detections"])
    return render(answer)


@router.get("/anomalies", summary="Stored anomalies, most surprising first (cursor pagination)",
            responses=errors(404))
def list_anomalies(
    game_id: GameQuery,
    key: ReadKey,
    services: ServicesDep,
    axis: Annotated[str | None, Query(max_length=100)] = None,
    direction: Annotated[str | None, Query(max_length=100, examples=["spend_spike"])] = None,
    min_score: Annotated[float | None, Query(ge=0, allow_inf_nan=False)] = None,
    since: Annotated[Timestamp | None, Query(description="Detections at or after this time")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=512, description="next_cursor of the previous page")] = None,
) -> ORJSONResponse:
    return render(services.list_anomalies(game_id, axis=axis, direction=direction, min_score=min_score, since=since,
                                          limit=limit, cursor=cursor))


@router.get("/anomalies/shifts", summary="Game-wide shifts (live events, sales) removed before scoring",
            responses=errors(404))
def shifts(game_id: GameQuery, key: ReadKey, services: ServicesDep) -> ORJSONResponse:
    return render({"game_id": game_id, "shifts": services.shifts(game_id)})
