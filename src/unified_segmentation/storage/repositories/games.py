"""Games and their settings."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from sqlalchemy import case, select, update
from sqlalchemy.orm import Session

from ...errors import GameNotFound
from .. import _bulk
from ..models import Game, utcnow

__all__ = [
    "ensure_game",
    "get_game",
    "get_game_or_raise",
    "list_games",
    "lock_game",
    "touch_data_changed",
    "update_settings",
]


def get_game(session: Session, game_id: str) -> Game | None:
    return session.get(Game, game_id)


def get_game_or_raise(session: Session, game_id: str) -> Game:
    game = session.get(Game, game_id)
    if game is None:
        raise GameNotFound(f"unknown game {game_id!r}", game_id=game_id)
    return game


def lock_game(session: Session, game_id: str) -> Game:
    """The game's row, locked until the end of the transaction (``SELECT ... FOR UPDATE``).

    Serializes version numbering, activation and settings writes of one game.
    """
    if _bulk.dialect(session) == "sqlite":
        _bulk.lock(session, game_id)
    game = session.execute(
        select(Game)
        .where(Game.game_id == game_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if game is None:
        raise GameNotFound(f"unknown game {game_id!r}", game_id=game_id)
    return game


def ensure_game(session: Session, game_id: str, default_settings: Mapping[str, Any]) -> Game:
    """The game, created with ``default_settings`` if it does not exist (safe under concurrency)."""
    game = session.get(Game, game_id)
    if game is not None:
        return game
    if not game_id or len(game_id) > 100:
        raise ValueError("game_id must be 1-100 characters")
    insert = _bulk.dialect_insert(session)
    session.execute(
        insert(Game)
        .values(game_id=game_id, created_at=utcnow(), settings=dict(default_settings))
        .on_conflict_do_nothing(index_elements=["game_id"])
    )
    return get_game_or_raise(session, game_id)


def list_games(session: Session) -> list[Game]:
    return list(session.scalars(select(Game).order_by(Game.game_id)))


def update_settings(
    session: Session, game_id: str, changes: Mapping[str, Any], *, replace: bool = False
) -> dict[str, Any]:
    """Merge ``changes`` into the game's settings (or replace them all); returns the new settings."""
    game = lock_game(session, game_id)
    settings = dict(changes) if replace else {**(game.settings or {}), **changes}
    game.settings = settings
    game.settings_updated_at = utcnow()
    session.flush()
    return settings


def touch_data_changed(
    session: Session,
    game_id: str,
    *,
    newest_event_at: dt.datetime | None = None,
    at: dt.datetime | None = None,
) -> None:
    """Record that the game's data changed (``data_changed_at``, default now: call it under the ingestion
    lock, right before the write ends, so a calibration that started earlier never looks newer than the
    data) and advance ``newest_event_at`` (never moved back), in one ``UPDATE``."""
    values: dict[str, Any] = {"data_changed_at": at or utcnow()}
    if newest_event_at is not None:
        newest = _bulk.as_utc(newest_event_at)
        values["newest_event_at"] = case(
            (Game.newest_event_at.is_(None) | (Game.newest_event_at < newest), newest),
            else_=Game.newest_event_at,
        )
    result = session.execute(
        update(Game).where(Game.game_id == game_id).values(**values).execution_options(synchronize_session="fetch")
    )
    if result.rowcount == 0:
        raise GameNotFound(f"unknown game {game_id!r}", game_id=game_id)
