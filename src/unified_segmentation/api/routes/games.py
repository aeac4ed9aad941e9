"""Per-game settings and player erasure."""

from __future__ import annotations

from fastapi import APIRouter

from ..auth import AdminKey, ReadKey
from ..deps import ServicesDep
from ..responses import ORJSONResponse, render
from ..schemas import GamePath, PlayerPath, SettingsUpdate
from ._common import AUTH_ERRORS, NulFree, errors

router = APIRouter(prefix="/api/v1/games", tags=["games"], responses=AUTH_ERRORS)


@router.get("/{game_id}/settings", summary="A game's settings", responses=errors(404))
def get_settings(game_id: GamePath, key: ReadKey, services: ServicesDep) -> ORJSONResponse:
    return render({"game_id": game_id, "settings": services.get_settings(game_id)})


@router.put("/{game_id}/settings", summary="Change settings (creates the game); any subset of the keys",
            responses=errors(409))
def put_settings(game_id: GamePath, body: SettingsUpdate, key: AdminKey, _: NulFree,
                 services: ServicesDep) -> ORJSONResponse:
    changes = body.model_dump(exclude_unset=True)
    return render({"game_id": game_id, "settings": services.put_settings(game_id, changes, actor=key.actor)})


@router.delete("/{game_id}/players/{player_id}", summary="Erase a player everywhere", responses=errors(404))
def erase_player(game_id: GamePath, player_id: PlayerPath, key: AdminKey, services: ServicesDep) -> ORJSONResponse:
    return render(services.erase_player(game_id, player_id))
