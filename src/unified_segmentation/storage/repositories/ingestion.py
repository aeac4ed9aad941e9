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
import json
import math
from dataclasses import dataclass

import orjson
import polars as pl
from sqlalchemy.orm import Session

from ...features.daily import events_to_daily
from .. import _bulk
from ..models import utcnow
from .activity import (
    DAILY_COLUMNS,
    DAILY_KEYS,
    PLAYER_KEYS,
    daily_conflict_sets,
    player_conflict_sets,
    upsert_daily,
)
from .events import EVENTS_SCHEMA, _canonical_exprs, ingest_lock, insert_events
from .games import touch_data_changed

__all__ = ["StoredEvents", "game_time_settings", "store_events"]

_SCHEMA = pl.Schema(EVENTS_SCHEMA)
_EVENT_COLUMNS = ("event_id", "player_id", "event_type", "ts", "value", "properties")


@dataclass(frozen=True)
class StoredEvents:
    """What :func:`store_events` did: ``accepted`` rows, ``inserted`` of them new (a key repeated in the
    batch counts once), the newest new event's time (None when nothing was new)."""

    accepted: int
    inserted: int
    newest_event_at: dt.datetime | None

    @property
    def duplicates(self) -> int:
        return self.accepted - self.inserted


def game_time_settings(session: Session, game_id: str) -> tuple[str, str | None] | None:
    """``(timezone, default_as_of)`` of the game's stored settings (``"UTC"`` when unset), ``None`` when
    the game does not exist: what ingestion reads of the game, in one small query."""
    if _bulk.dialect(session) == "postgresql":
        query = "SELECT settings ->> 'timezone', settings ->> 'default_as_of' FROM games WHERE game_id = %s"
    else:
        query = (
            "SELECT json_extract(settings, '$.timezone'), json_extract(settings, '$.default_as_of') "
            "FROM games WHERE game_id = ?"
        )
    with _bulk.dbapi_cursor(session) as cursor:
        cursor.execute(query, (game_id,))
        row = cursor.fetchone()
    if row is None:
        return None
    return row[0] or "UTC", row[1]


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
    kind = _bulk.dialect(session)
    daily = events_to_daily(frame, timezone=timezone)  # optimistic: every event new
    stamp = _bulk.as_utc(ingested_at or utcnow())
    small = total <= _bulk.SMALL_STATEMENT_ROWS
    if kind == "postgresql" and small:
        return _pg_store(session, game_id, frame, _Rollup.of(daily), timezone, stamp, events.height)
    if kind == "sqlite" and small:
        new = _sqlite_insert(session, game_id, frame, stamp)
    else:
        new = insert_events(session, game_id, frame, ingested_at=stamp).new_events
    if not new.height:
        return StoredEvents(events.height, 0, None)
    if new.height < total:
        daily = events_to_daily(new, timezone=timezone)
    newest = new["timestamp"].max()
    if kind == "sqlite":
        _sqlite_upsert(session, game_id, _Rollup.of(daily), newest)
    else:
        upsert_daily(session, game_id, daily)
        touch_data_changed(session, game_id, newest_event_at=newest)
    return StoredEvents(events.height, new.height, newest)


@dataclass(frozen=True)
class _Rollup:
    """A Daily frame of ``events_to_daily`` as the rows ``upsert_daily(mode="add")`` writes (plain
    Python values: for a batch of a few thousand events this costs a fraction of Polars' per-query
    overhead), and the players' first / last dates."""

    columns: tuple[str, ...]  # player_id, date, *DAILY_COLUMNS, custom
    rows: list[tuple]  # dates as datetime.date
    players: list[tuple]  # player_id, first_seen, last_seen

    @classmethod
    def of(cls, daily: pl.DataFrame) -> _Rollup:
        ev = [c for c in daily.columns if c.startswith("ev_")]
        player_ids = daily["player_id"].to_list()
        dates = daily["date"].to_list()
        values = [daily[c].to_list() for c in DAILY_COLUMNS]
        if ev:
            keys = [json.dumps(c) + ": " for c in ev]
            custom = [_custom_text(keys, counts) for counts in zip(*(daily[c].to_list() for c in ev), strict=True)]
        else:
            custom = [None] * daily.height
        span: dict[str, list] = {}
        for player, date in zip(player_ids, dates, strict=True):
            seen = span.get(player)
            if seen is None:
                span[player] = [date, date]
            elif date < seen[0]:
                seen[0] = date
            elif date > seen[1]:
                seen[1] = date
        return cls(
            ("player_id", "date", *DAILY_COLUMNS, "custom"),
            list(zip(player_ids, dates, *values, custom, strict=True)),
            [(player, first, last) for player, (first, last) in span.items()],
        )


def _custom_text(keys: list[str], counts: tuple[float, ...]) -> str | None:
    """The sparse JSON object of a row's non-zero ``ev_*`` counts, as ``activity._custom_json`` writes it."""
    parts = [key + repr(v) for key, v in zip(keys, counts, strict=True) if v != 0 and math.isfinite(v)]
    return "{" + ", ".join(parts) + "}" if parts else None


def _sqlite_insert(session: Session, game_id: str, frame: pl.DataFrame, stamp: dt.datetime) -> pl.DataFrame:
    """SQLite, a small distinct frame: the events not seen before inserted; returns the new rows.

    The usual batch is all new and the game has no purged keys: the rows then go in by one
    ``executemany`` of a plain ``INSERT ... ON CONFLICT DO NOTHING`` inside a savepoint, kept when
    every row went in. Otherwise (the savepoint rolled back) one ``INSERT ... SELECT FROM json_each``
    skips stored and purged keys and names the new ones (``RETURNING``). Exact either way: SQLite
    has one writer, and the game's lock is held.
    """
    ts = frame["timestamp"].dt.strftime(_bulk.SQLITE_DATETIME_FORMAT).to_list()  # UTC
    rows = sorted(zip(  # key order: one ordered pass over the primary-key index
        frame["event_id"].to_list(), frame["player_id"].to_list(), frame["event_type"].to_list(), ts,
        frame["value"].to_list(), frame["properties"].to_list(), strict=True,
    ))
    at = _sqlite_datetime(stamp)
    session.flush()
    ingest_lock(session, game_id)
    with _bulk.dbapi_cursor(session) as cursor:
        cursor.execute("SELECT EXISTS (SELECT 1 FROM event_keys WHERE game_id = ?)", (game_id,))
        if not cursor.fetchone()[0]:
            cursor.execute("SAVEPOINT useg_new_events")
            cursor.executemany(_SQLITE_INSERT_ROW, [(game_id, *row, at) for row in rows])
            all_new = cursor.rowcount == len(rows)
            if not all_new:
                cursor.execute("ROLLBACK TO useg_new_events")
            cursor.execute("RELEASE useg_new_events")
            if all_new:
                return frame
        cursor.execute(_SQLITE_INSERT, (game_id, at, orjson.dumps(rows).decode(), game_id))
        inserted = [r[0] for r in cursor.fetchall()]
    if len(inserted) == frame.height:
        return frame
    return frame.filter(pl.col("event_id").is_in(pl.Series(inserted, dtype=pl.String).implode()))


_SQLITE_INSERT_ROW = (
    "INSERT INTO raw_events (game_id, event_id, player_id, event_type, ts, value, properties, ingested_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (game_id, event_id) DO NOTHING"
)
_SQLITE_INSERT = (
    "INSERT INTO raw_events (game_id, event_id, player_id, event_type, ts, value, properties, ingested_at) "
    "SELECT ?, json_extract(j.value, '$[0]'), json_extract(j.value, '$[1]'), json_extract(j.value, '$[2]'), "
    "json_extract(j.value, '$[3]'), json_extract(j.value, '$[4]'), json_extract(j.value, '$[5]'), ? "
    "FROM json_each(?) AS j WHERE NOT EXISTS (SELECT 1 FROM event_keys k WHERE k.game_id = ? "
    "AND k.event_id = json_extract(j.value, '$[0]')) ORDER BY 2 "
    "ON CONFLICT (game_id, event_id) DO NOTHING RETURNING event_id"
)


def _sqlite_datetime(value: dt.datetime) -> str:
    """How ``UTCDateTime`` stores a datetime on SQLite (naive UTC text)."""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _sqlite_upsert(
    session: Session, game_id: str, rollup: _Rollup, newest: dt.datetime
) -> None:
    """SQLite, under the lock: ``upsert_daily(mode="add")`` of the roll-up's rows, players widened,
    the game's data marked changed (as :func:`_touch`)."""
    daily_sets, daily_where = daily_conflict_sets("sqlite", "add")
    player_sets, player_where = player_conflict_sets("sqlite")
    daily_sql = _bulk.sqlite_upsert_sql(
        "daily_activity", ("game_id", *rollup.columns, "source"), DAILY_KEYS, daily_sets, daily_where
    )
    player_sql = _bulk.sqlite_upsert_sql(
        "players", ("game_id", "player_id", "first_seen", "last_seen"), PLAYER_KEYS, player_sets, player_where
    )
    session.flush()
    ingest_lock(session, game_id)
    with _bulk.dbapi_cursor(session) as cursor:
        cursor.executemany(
            daily_sql, [(game_id, r[0], r[1].isoformat(), *r[2:], "events") for r in rollup.rows]
        )
        cursor.executemany(
            player_sql, [(game_id, p, first.isoformat(), last.isoformat()) for p, first, last in rollup.players]
        )
        newest_text = _sqlite_datetime(newest)
        cursor.execute(
            "UPDATE games SET data_changed_at = ?, newest_event_at = CASE WHEN newest_event_at IS NULL "
            "OR newest_event_at < ? THEN ? ELSE newest_event_at END WHERE game_id = ?",
            (_sqlite_datetime(utcnow()), newest_text, newest_text, game_id),
        )


def _pg_store(
    session: Session,
    game_id: str,
    frame: pl.DataFrame,
    rollup: _Rollup,
    timezone: str,
    stamp: dt.datetime,
    accepted: int,
) -> StoredEvents:
    total = frame.height
    params = {
        "g": game_id,
        "stamp": stamp,
        "n": total,
        "events": frame.with_columns(frame["timestamp"].dt.strftime(_bulk.PG_DATETIME_FORMAT))  # UTC
        .rename({"timestamp": "ts"})
        .write_json(),
        "daily": orjson.dumps([dict(zip(rollup.columns, row, strict=True)) for row in rollup.rows]).decode(),
        "players": orjson.dumps(
            [{"player_id": p, "first_seen": first, "last_seen": last} for p, first, last in rollup.players]
        ).decode(),
    }
    session.flush()
    ingest_lock(session, game_id)
    params["changed"] = _bulk.as_utc(utcnow())  # as late as possible (see touch_data_changed)
    with _bulk.dbapi_cursor(session) as cursor:
        cursor.execute(_pg_statement(list(rollup.columns), ["player_id", "first_seen", "last_seen"]), params)
        inserted, newest, ids = cursor.fetchone()
    if inserted == total or inserted == 0:
        return StoredEvents(accepted, inserted, newest)
    # Some events were seen before: roll up exactly the new ones (nothing else was written).
    new = frame.filter(pl.col("event_id").is_in(pl.Series(ids, dtype=pl.String).implode()))
    upsert_daily(session, game_id, events_to_daily(new, timezone=timezone))
    touch_data_changed(session, game_id, newest_event_at=newest)
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
        "daily_activity", ["game_id", *daily_columns, "source"], DAILY_KEYS, daily_sets, daily_where,
        placeholder="%(daily)s", constants={"game_id": "%(g)s::text", "source": "'events'"},
        condition=everything_new,
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
        "g AS (UPDATE games SET data_changed_at = %(changed)s::timestamptz, "
        "newest_event_at = GREATEST(games.newest_event_at, n.newest) FROM n "
        "WHERE games.game_id = %(g)s::text AND n.c = %(n)s::bigint RETURNING 1) "
        "SELECT n.c, n.newest, CASE WHEN n.c < %(n)s::bigint THEN (SELECT array_agg(event_id) FROM ins) END FROM n"
    )
    _PG_STATEMENTS[key] = statement
    return statement
