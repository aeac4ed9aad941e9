"""Queries the services need beyond the core repositories: game deletion, counts, primary segments,
version metadata, event-derived daily rows, API-key lookup by prefix, rate-limit counters, idempotency
records and calibration jobs as the HTTP API shares them between workers."""

from __future__ import annotations

import datetime as dt
from typing import Any

import polars as pl
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.orm import Session

from .. import _bulk
from ..models import ApiKey, CalibrationJob, DailyActivity, Game, IdempotencyKey, Player, TaxonomyVersion
from .events import ingest_lock

__all__ = [
    "count_players",
    "delete_event_daily",
    "delete_game",
    "get_api_key_info",
    "idempotency_claim",
    "idempotency_purge",
    "idempotency_settle",
    "job_fail_if_stale",
    "job_get",
    "job_heartbeat",
    "job_insert",
    "job_update",
    "primary_segments",
    "rate_limit_increment",
    "rate_limit_purge",
    "version_info",
]


def delete_game(session: Session, game_id: str) -> bool:
    """Delete a game and everything stored for it (cascades); True when it existed."""
    game = session.get(Game, game_id)
    if game is None:
        return False
    session.flush()
    for table in (
        "player_segment_memberships",
        "player_typical_offsets",
        "anomaly_detections",
        "segment_definitions",
        "behavioral_axes",
        "game_behavioral_taxonomy",
        "taxonomy_versions",
        "daily_activity",
        "players",
        "outcomes",
        "raw_events",
        "event_keys",
        "rollout_audit",
        "rollout_configs",
        "shadow_comparisons",
        "validation_reports",
        "calibration_jobs",
        "idempotency_keys",
    ):
        session.execute(text(f"DELETE FROM {table} WHERE game_id = :g"), {"g": game_id})
    session.execute(delete(Game).where(Game.game_id == game_id))
    return True


def count_players(session: Session, game_id: str) -> int:
    return int(session.scalar(select(func.count()).select_from(Player).where(Player.game_id == game_id)) or 0)


def delete_event_daily(session: Session, game_id: str) -> int:
    """Delete the daily rows rolled up from events (before re-deriving them in a new time zone)."""
    session.flush()
    ingest_lock(session, game_id)
    res = session.execute(
        delete(DailyActivity).where(DailyActivity.game_id == game_id, DailyActivity.source == "events")
    )
    return int(res.rowcount or 0)


def version_info(session: Session, game_id: str, version: int) -> dict[str, Any] | None:
    row = session.get(TaxonomyVersion, (game_id, version))
    if row is None:
        return None
    return {"version": row.version, "as_of": row.as_of, "created_at": row.created_at, "status": row.status}


def primary_segments(session: Session, game_id: str, version: int) -> pl.DataFrame:
    """``player_id, axis, segment_id, segment_name, membership_probability, confidence`` of stored primaries."""
    kind = _bulk.dialect(session)
    p = _bulk.param(kind)
    query = (
        "SELECT m.player_id, m.axis, m.segment_id, s.segment_name, m.membership_probability, m.confidence "
        "FROM player_segment_memberships m JOIN segment_definitions s ON s.game_id = m.game_id "
        "AND s.taxonomy_version = m.taxonomy_version AND s.segment_id = m.segment_id "
        f"WHERE m.game_id = {p} AND m.taxonomy_version = {p} "
        f"AND m.is_primary = {'TRUE' if kind == 'postgresql' else 1} "
        "ORDER BY m.player_id, m.axis"
    )
    schema = {
        "player_id": pl.String(),
        "axis": pl.String(),
        "segment_id": pl.Int64(),
        "segment_name": pl.String(),
        "membership_probability": pl.Float64(),
        "confidence": pl.Float64(),
    }
    return _bulk.read_query(session, query, [game_id, version], schema)


def get_api_key_info(session: Session, key_prefix: str) -> dict[str, Any] | None:
    key = session.scalar(select(ApiKey).where(ApiKey.key_prefix == key_prefix))
    if key is None:
        return None
    return {
        "id": key.id,
        "scope": key.scope,
        "games": key.games,
        "key_hash": key.key_hash,
        "revoked_at": key.revoked_at,
        "name": key.name,
        "key_prefix": key.key_prefix,
    }


def rate_limit_increment(session: Session, key_id: int, window: int, hits: int = 1) -> int:
    """Count ``hits`` requests of an API key in a one-minute window (shared by every worker); returns the count.

    One atomic UPSERT (no read-then-write); old windows are purged by :func:`rate_limit_purge`.
    """
    sql = RATE_LIMIT_UPSERT.format(p=_bulk.param(_bulk.dialect(session)))
    cursor = session.connection().exec_driver_sql(sql, (key_id, window, hits, _sql_now(session)))
    return int(cursor.scalar_one())


def rate_limit_purge(session: Session, before_window: int) -> int:
    """Delete the counters of windows before ``before_window``."""
    res = session.execute(text("DELETE FROM rate_limit_counters WHERE window_start < :w"), {"w": before_window})
    return int(res.rowcount or 0)


def _sql_now(session: Session) -> Any:
    now = dt.datetime.now(dt.UTC)
    return now.replace(tzinfo=None).isoformat(sep=" ") if _bulk.dialect(session) == "sqlite" else now


# ---- rate limits -----------------------------------------------------------------------------------
#: One statement per request (or per lease of requests): the per-key per-minute row is created or
#: incremented atomically, by the hits given.
RATE_LIMIT_UPSERT = (
    "INSERT INTO rate_limit_counters (key_id, window_start, hits, updated_at) VALUES ({p}, {p}, {p}, {p}) "
    "ON CONFLICT (key_id, window_start) DO UPDATE SET hits = rate_limit_counters.hits + excluded.hits, "
    "updated_at = excluded.updated_at RETURNING hits"
)
RATE_LIMIT_PURGE = "DELETE FROM rate_limit_counters WHERE window_start < {p}"


# ---- idempotency keys --------------------------------------------------------------------------------
def idempotency_claim(
    session: Session,
    key: str,
    game_id: str,
    record: dict[str, Any],
    *,
    now: dt.datetime,
    expired_before: dt.datetime,
    stale_before: dt.datetime,
) -> tuple[str, dict[str, Any] | None]:
    """Claim ``(key, game_id)`` for a request described by ``record`` (its ``state`` is ``in_progress``).

    Returns ``("new", None)`` when this request owns the key now (inserted, or taking over a record
    that expired or whose in-progress owner went silent), else ``("replay" | "mismatch" | "in_progress",
    stored record)``. The insert is ``ON CONFLICT DO NOTHING`` on the primary key, so of two concurrent
    duplicates exactly one gets ``"new"``.
    """
    insert = _bulk.dialect_insert(session)
    stmt = (insert(IdempotencyKey).values(key=key, game_id=game_id, created_at=now, response=record)
            .on_conflict_do_nothing(index_elements=["key", "game_id"]).returning(IdempotencyKey.key))
    if session.execute(stmt).first() is not None:
        return "new", None
    row = session.scalar(select(IdempotencyKey)
                         .where(IdempotencyKey.key == key, IdempotencyKey.game_id == game_id)
                         .with_for_update())
    if row is None:  # deleted between the two statements (abandoned or purged): insert again
        session.execute(stmt)
        return "new", None
    stored = dict(row.response or {})
    if row.created_at < expired_before:
        row.created_at, row.response = now, record
        session.flush()
        return "new", None
    if stored.get("request_hash") != record.get("request_hash"):
        return "mismatch", stored
    if stored.get("state") == "done":
        return "replay", stored
    if row.created_at < stale_before:
        row.created_at, row.response = now, record
        session.flush()
        return "new", None
    return "in_progress", stored


def idempotency_settle(session: Session, key: str, game_id: str, claim: str, record: dict[str, Any] | None) -> bool:
    """Store the answer (``record``) of the request that holds ``claim``, or delete the claim (``None``).

    Nothing happens when another request took the key over meanwhile; returns whether it was ours.
    """
    row = session.scalar(select(IdempotencyKey)
                         .where(IdempotencyKey.key == key, IdempotencyKey.game_id == game_id)
                         .with_for_update())
    if row is None or (row.response or {}).get("claim") != claim:
        return False
    if record is None:
        session.delete(row)
    else:
        row.response = record
    session.flush()
    return True


def idempotency_purge(session: Session, expired_before: dt.datetime) -> int:
    res = session.execute(delete(IdempotencyKey).where(IdempotencyKey.created_at < expired_before))
    return int(res.rowcount or 0)


# ---- calibration jobs ----------------------------------------------------------------------------------
JOB_ACTIVE = ("queued", "running")


def job_insert(session: Session, job_id: str, game_id: str, *, status: str, worker: str, now: dt.datetime) -> None:
    session.add(CalibrationJob(job_id=job_id, game_id=game_id, status=status, created_at=now, heartbeat_at=now,
                               worker=worker))
    session.flush()


def job_update(session: Session, job_id: str, *, status: str, now: dt.datetime,
               result: dict[str, Any] | None = None, error: str | None = None) -> None:
    values: dict[str, Any] = {"status": status, "heartbeat_at": now}
    if status not in JOB_ACTIVE:
        values.update(finished_at=now, result=result, error=error)
    session.execute(update(CalibrationJob).where(CalibrationJob.job_id == job_id).values(**values))


def job_heartbeat(session: Session, job_ids: list[str], now: dt.datetime) -> int:
    res = session.execute(update(CalibrationJob)
                          .where(CalibrationJob.job_id.in_(job_ids), CalibrationJob.status.in_(JOB_ACTIVE))
                          .values(heartbeat_at=now))
    return int(res.rowcount or 0)


def job_fail_if_stale(session: Session, job_id: str, *, stale_before: dt.datetime, now: dt.datetime,
                      error: str) -> bool:
    """Mark an active job failed when its worker's last heartbeat is older than ``stale_before``."""
    res = session.execute(
        update(CalibrationJob)
        .where(CalibrationJob.job_id == job_id, CalibrationJob.status.in_(JOB_ACTIVE),
               func.coalesce(CalibrationJob.heartbeat_at, CalibrationJob.created_at) < stale_before)
        .values(status="failed", finished_at=now, error=error)
    )
    return bool(res.rowcount)


def job_get(session: Session, job_id: str) -> dict[str, Any] | None:
    row = session.get(CalibrationJob, job_id)
    if row is None:
        return None
    return {"job_id": row.job_id, "game_id": row.game_id, "status": row.status, "created_at": row.created_at,
            "finished_at": row.finished_at, "heartbeat_at": row.heartbeat_at, "worker": row.worker,
            "result": row.result, "error": row.error}
