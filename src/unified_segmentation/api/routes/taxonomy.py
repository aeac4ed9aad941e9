"""Taxonomy: calibrate (with jobs), read a version, history, rollback."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Body, Path, Query, Request
from starlette.concurrency import run_in_threadpool

from unified_segmentation.errors import UsegError

from ..auth import AdminKey, ReadKey
from ..deps import JobsDep, ServicesDep, SettingsDep
from ..responses import ORJSONResponse, render
from ..schemas import CalibrateRequest, GamePath, RollbackRequest
from ._common import AUTH_ERRORS, SEGMENTATION, errors

router = APIRouter(prefix=SEGMENTATION, tags=["taxonomy"], responses=AUTH_ERRORS)


class JobNotFound(UsegError):
    code = "job_not_found"
    status = 404


@router.post("/taxonomy/calibrate", summary="Calibrate a game's taxonomy",
             responses={202: {"description": "Still running: poll status_url"}, **errors(404, 409)})
async def calibrate(body: CalibrateRequest, key: AdminKey, services: ServicesDep, jobs: JobsDep,
                    settings: SettingsDep, request: Request) -> ORJSONResponse:
    """Answers 200 with the taxonomy when it finishes within ``USEG_CALIBRATE_WAIT_S``, else 202 with a job.

    Without ``force_recalibration`` the active version is returned when the data has not changed since.
    Readers keep the active version until the new one commits.
    """
    key.check_game(body.game_id)
    job = await run_in_threadpool(  # it records the job in the database: off the event loop
        jobs.submit, body.game_id, (body.as_of, body.force_recalibration),
        lambda: services.calibrate(body.game_id, as_of=body.as_of, force=body.force_recalibration))
    try:
        taxonomy = await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(job.future)), settings.calibrate_wait_s)
    except TimeoutError:
        status_url = str(request.url_for("calibration_job", job_id=job.job_id).path)
        return render({"job_id": job.job_id, "status": "running", "status_url": status_url}, 202,
                      headers={"Location": status_url})
    return render(taxonomy)


@router.get("/jobs/{job_id}", name="calibration_job", summary="A calibration job's status and result",
            responses=errors(404))
async def calibration_job(job_id: Annotated[str, Path(max_length=64)], key: ReadKey, jobs: JobsDep) -> ORJSONResponse:
    job = await run_in_threadpool(jobs.get, job_id)  # read from the database: any worker's job
    if job is None:
        raise JobNotFound(f"no calibration job {job_id!r}")
    key.check_game(job.game_id)
    return render(job.to_dict())


@router.get("/taxonomy/{game_id}", summary="A game's taxonomy (active, or ?version=N)", responses=errors(404, 409))
def get_taxonomy(game_id: GamePath, key: ReadKey, services: ServicesDep,
                 version: Annotated[int | None, Query(ge=1)] = None) -> ORJSONResponse:
    return render(services.get_taxonomy(game_id, version))


@router.get("/taxonomy/{game_id}/history", summary="Every taxonomy version of a game", responses=errors(404))
def taxonomy_history(game_id: GamePath, key: ReadKey, services: ServicesDep) -> ORJSONResponse:
    return render({"game_id": game_id, "versions": services.taxonomy_history(game_id)})


@router.post("/taxonomy/{game_id}/rollback", summary="Activate an earlier taxonomy version", responses=errors(404))
def rollback_taxonomy(game_id: GamePath, key: AdminKey, services: ServicesDep,
                      body: Annotated[RollbackRequest | None, Body()] = None) -> ORJSONResponse:
    version = body.version if body is not None else None
    return render(services.rollback(game_id, version, actor=key.actor))
