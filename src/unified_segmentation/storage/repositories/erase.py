"""Erasing a player everywhere (DESIGN §5: ``DELETE /api/v1/games/{g}/players/{p}``)."""

from __future__ import annotations

from sqlalchemy import delete
from sqlalchemy.orm import Session

from ..models import (
    AnomalyDetection,
    DailyActivity,
    Outcome,
    Player,
    PlayerSegmentMembership,
    PlayerTypicalOffset,
    RawEvent,
    ShadowComparison,
)
from .events import ingest_lock

__all__ = ["erase_player"]

_PLAYER_TABLES = (
    RawEvent,
    DailyActivity,
    Player,
    Outcome,
    PlayerSegmentMembership,
    PlayerTypicalOffset,
    AnomalyDetection,
    ShadowComparison,
)


def erase_player(session: Session, game_id: str, player_id: str) -> dict[str, int]:
    """Delete every stored row of the player; returns rows deleted per table.

    Keys of the player's already-purged events (``event_keys``) carry no player id and stay; the
    keys of the raw rows deleted here go with them, so the player's events can be ingested again.
    """
    session.flush()
    ingest_lock(session, game_id)
    deleted: dict[str, int] = {}
    for model in _PLAYER_TABLES:
        result = session.execute(delete(model).where(model.game_id == game_id, model.player_id == player_id))
        deleted[model.__tablename__] = int(result.rowcount or 0)
    return deleted
