"""The integration adapter: backward-compatible profiles, rollout strategy, shadow report, validation."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body

from ..auth import AdminKey, ReadKey
from ..deps import MetricsDep, ServicesDep
from ..responses import ORJSONResponse, render
from ..schemas import GamePath, ProfileRequest, RolloutUpdate, ValidateRequest
from ._common import AUTH_ERRORS, SEGMENTATION, NulFree, errors

router = APIRouter(prefix=SEGMENTATION, tags=["adapter"], responses=AUTH_ERRORS)


@router.post("/profile", summary="Backward-compatible profile, served by unified or legacy per the rollout",
             responses=errors(404))
def profile(body: ProfileRequest, key: ReadKey, services: ServicesDep, metrics: MetricsDep) -> ORJSONResponse:
    key.check_game(body.game_id)
    answer = services.profile(body.game_id, body.player_id, force_unified=body.force_unified,
                              force_legacy=body.force_legacy)
    metrics.record_profile_served(body.game_id, answer)
    return render(answer)


@router.get("/rollout/{game_id}", summary="The game's rollout configuration", responses=errors(404))
def get_rollout(game_id: GamePath, key: ReadKey, services: ServicesDep) -> ORJSONResponse:
    return render(services.get_rollout(game_id))


@router.put("/rollout/{game_id}", summary="Change the rollout strategy (audited)", responses=errors(404))
def put_rollout(game_id: GamePath, body: RolloutUpdate, key: AdminKey, _: NulFree,
                services: ServicesDep) -> ORJSONResponse:
    return render(services.put_rollout(game_id, body.model_dump(mode="json", exclude_unset=True), actor=key.actor))


@router.post("/rollout/{game_id}/rollback", summary="Back to the previous rollout configuration in one call",
             responses=errors(404))
def rollback_rollout(game_id: GamePath, key: AdminKey, services: ServicesDep) -> ORJSONResponse:
    return render(services.rollback_rollout(game_id, actor=key.actor))


@router.get("/rollout/{game_id}/report", summary="Shadow comparison report", responses=errors(404))
def rollout_report(game_id: GamePath, key: ReadKey, services: ServicesDep) -> ORJSONResponse:
    return render(services.rollout_report(game_id))


@router.post("/rollout/{game_id}/validate", summary="Run the migration validator; the report is stored",
             responses=errors(404, 409))
def validate(game_id: GamePath, key: AdminKey, services: ServicesDep,
             body: Annotated[ValidateRequest | None, Body()] = None) -> ORJSONResponse:
    sample = body.sample if body is not None else ValidateRequest().sample
    return render(services.validate(game_id, sample=sample))


@router.get("/rollout/{game_id}/validation", summary="Stored validation reports", responses=errors(404))
def list_validations(game_id: GamePath, key: ReadKey, services: ServicesDep) -> ORJSONResponse:
    return render({"game_id": game_id, "reports": services.list_validations(game_id)})


@router.get("/rollout/{game_id}/validation/{report_id}", summary="One stored validation report",
            responses=errors(404))
def get_validation(game_id: GamePath, report_id: int, key: ReadKey, services: ServicesDep) -> ORJSONResponse:
    return render(services.get_validation(game_id, report_id))
