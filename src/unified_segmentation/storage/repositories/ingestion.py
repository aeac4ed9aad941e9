"""Event ingestion as one unit: new events stored, exactly those rolled up into daily activity and
players, the game's data marked changed.

The roll-up of the whole batch is computed before the game's ingestion lock is taken (it depends on
the events and the time zone only), on the bet that every event is new, as a fresh batch is. On
PostgreSQL a batch of up to :data:`_bulk.SMALL_STATEMENT_ROWS` events is then written by one
statement: the events go in with ``ON CONFLICT DO NOTHING`` (keys of purged events skipped), and
the daily rows, players and the game's ``data_changed_at`` / ``newest_event_at`` are written by
data-modifying CTEs only if the insert took every event. Otherwise (some events were seen before)
nothing but the new events was written, and the roll-up of exactly those follows in the same
transaction. Either way what is rolled up is what was inserted: a re-sent batch changes nothing,
and two concurrent batches never count an event twice (the lock serializes them; the keys'
uniqueness would fail a writer that bypassed it, never double count).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import polars as pl
from sqlalchemy import case, update
from sqlalchemy.orm import Session

from ...features.daily import events_to_daily
from .. import _bulk
from ..models import Game, utcnow
from .activity import (
    DAILY_KEYS,
    PLAYER_KEYS,
    _daily_rows,
    daily_conflict_sets,
    player_conflict_sets,
    players_seen,
    upsert_daily,
)
from .events import EVENTS_SCHEMA, _canonical_exprs, ingest_lock, insert_events

__all__ = ["StoredEvents", "store_events"]

_SCHEMA = pl.Schema(EVENTS_SCHEMA)
_EVENT_COLUMNS = ("event_id", "player_id", "event_type", "ts", "value", "properties")


@dataclass(frozen=True)
class StoredEvents:
    """What :func:`store_events` did: ``accepted`` distinct events, ``inserted`` of them new, the
    newest new event's time (None when nothing was new)."""

    accepted: int
    inserted: int
    newest_event_at: dt.datetime | None

    @property
    def duplicates(self) -> int:
        return self.accepted - self.inserted


def _distinct_events(events: pl.DataFrame) -> pl.DataFrame:
    """The canonical Events frame, one row per ``event_id`` (the first); a frame already in that form
    (as ``read_events`` returns it) is kept as is."""
    ids = events["event_id"] if "event_id" in events.columns else None
    if events.schema == _SCHEMA and ids.null_count() == 0 and ids.n_unique() == events.height:
        return events
    distinct = events.lazy().select(_canonical_exprs(events)).unique("event_id", keep="first", maintain_order=True)
    return distinct.collect()


def store_events(
    session: Session,
    game_id: str,
    events: pl.DataFrame,
    *,
    timezone: str,
    ingested_at: dt.datetime | None = None,
) -> StoredEvents:
    """Store the events not seen before, roll exactly those up (``upsert_daily(mode="add")``, players
    widened) and mark the game's data changed. Never commits; takes the game's ingestion lock.
    ``events``: a canonical Events frame (see :func:`insert_events`)."""
    frame = _distinct_events(events)
    total = frame.height
    if total == 0:
        return StoredEvents(events.height, 0, None)
    daily = events_to_daily(frame, timezone=timezone)  # optimistic: every event new
    stamp = _bulk.as_utc(ingested_at or utcnow())
    if _bulk.dialect(session) == "postgresql" and total <= _bulk.SMALL_STATEMENT_ROWS:
        return _pg_store(session, game_id, frame, daily, timezone, stamp, events.height)
    stored = insert_events(session, game_id, frame, ingested_at=stamp)
    new = stored.new_events
    if new.height:
        upsert_daily(session, game_id, daily if new.height == total else events_to_daily(new, timezone=timezone))
        newest = new["timestamp"].max()
        _touch(session, game_id, newest, stamp)
        return StoredEvents(events.height, new.height, newest)
    return StoredEvents(events.height, 0, None)


def _touch(session: Session, game_id: str, newest: dt.datetime, at: dt.datetime) -> None:
    """``data_changed_at = at``, ``newest_event_at`` advanced to ``newest`` (never moved back)."""
    session.execute(
        update(Game)
        .where(Game.game_id == game_id)
        .values(
            data_changed_at=at,
            newest_event_at=case(
                (Game.newest_event_at.is_(None) | (Game.newest_event_at < newest), newest),
                else_=Game.newest_event_at,
            ),
        )
        .execution_options(synchronize_session=False)
    )


def _pg_store(
    session: Session,
    game_id: str,
    frame: pl.DataFrame,
    daily: pl.DataFrame,
    timezone: str,
    stamp: dt.datetime,
    accepted: int,
) -> StoredEvents:
    total = frame.height
    rows = _daily_rows(game_id, daily, "events", "add").drop("game_id")
    seen = players_seen(game_id, rows).drop("game_id")
    params = {
        "g": game_id,
        "stamp": stamp,
        "n": total,
        "events": _bulk.pg_json_rows(frame.lazy().rename({"timestamp": "ts"}).select(_EVENT_COLUMNS)),
        "daily": _bulk.pg_json_rows(rows),
        "players": _bulk.pg_json_rows(seen),
    }
    session.flush()
    ingest_lock(session, game_id)
    with _bulk.dbapi_cursor(session) as cursor:
        cursor.execute(_pg_statement(rows.columns, seen.columns), params)
        inserted, newest, ids = cursor.fetchone()
    if inserted == total or inserted == 0:
        return StoredEvents(accepted, inserted, newest)
    # Some events were seen before: roll up exactly the new ones (nothing else was written).
    new = frame.filter(pl.col("event_id").is_in(pl.Series(ids, dtype=pl.String).implode()))
    upsert_daily(session, game_id, events_to_daily(new, timezone=timezone))
    _touch(session, game_id, newest, stamp)
    return StoredEvents(accepted, inserted, newest)


_PG_STATEMENTS: dict[tuple[tuple[str, ...], tuple[str, ...]], str] = {}


def _pg_statement(daily_columns: list[str], player_columns: list[str]) -> str:
    key = (tuple(daily_columns), tuple(player_columns))
    cached = _PG_STATEMENTS.get(key)
    if cached is not None:
        return cached
    source, exprs = _bulk.pg_recordset("raw_events", _EVENT_COLUMNS, placeholder="%(events)s")
    everything_new = "(SELECT c FROM n) = %(n)s::bigint"
    daily_sets, daily_where = daily_conflict_sets("postgresql", "add")
    player_sets, player_where = player_conflict_sets("postgresql")
    daily_sql = _bulk.pg_upsert_sql(
        "daily_activity", ["game_id", *daily_columns], DAILY_KEYS, daily_sets, daily_where,
        placeholder="%(daily)s", constants={"game_id": "%(g)s::text"}, condition=everything_new,
    )
    player_sql = _bulk.pg_upsert_sql(
        "players", ["game_id", *player_columns], PLAYER_KEYS, player_sets, player_where,
        placeholder="%(players)s", constants={"game_id": "%(g)s::text"}, condition=everything_new,
    )
    statement = (
        "WITH ins AS ("
        "INSERT INTO raw_events (game_id, event_id, player_id, event_type, ts, value, properties, ingested_at) "
        f"SELECT %(g)s::text, {', '.join(exprs[c] for c in _EVENT_COLUMNS)}, %(stamp)s::timestamptz FROM {source} "
        "WHERE NOT EXISTS (SELECT 1 FROM event_keys k WHERE k.game_id = %(g)s::text AND k.event_id = t.event_id) "
        "ORDER BY t.event_id ON CONFLICT (game_id, event_id) DO NOTHING RETURNING event_id, ts), "
        "n AS MATERIALIZED (SELECT count(*) AS c, max(ts) AS newest FROM ins), "
        f"d AS ({daily_sql} RETURNING 1), "
        f"p AS ({player_sql} RETURNING 1), "
        "g AS (UPDATE games SET data_changed_at = %(stamp)s::timestamptz, "
        "newest_event_at = GREATEST(games.newest_event_at, n.newest) FROM n "
        "WHERE games.game_id = %(g)s::text AND n.c = %(n)s::bigint RETURNING 1) "
        "SELECT n.c, n.newest, CASE WHEN n.c < %(n)s::bigint THEN (SELECT array_agg(event_id) FROM ins) END FROM n"
    )
    _PG_STATEMENTS[key] = statement
    return statement
