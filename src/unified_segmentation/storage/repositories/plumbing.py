"""API keys, idempotency keys and calibration jobs."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, exists, select
from sqlalchemy.orm import Session

from .. import _bulk
from ..models import ApiKey, CalibrationJob, IdempotencyKey, utcnow

__all__ = [
    "create_api_key",
    "create_calibration_job",
    "get_api_key",
    "get_calibration_job",
    "get_idempotency",
    "has_api_keys",
    "list_api_keys",
    "list_calibration_jobs",
    "purge_idempotency",
    "put_idempotency",
    "revoke_api_key",
    "update_calibration_job",
]

# ---- API keys ------------------------------------------------------------------------------------


def create_api_key(
    session: Session,
    *,
    key_prefix: str,
    key_hash: str,
    scope: str,
    games: Sequence[str] | None = None,
    name: str | None = None,
) -> ApiKey:
    """Store a key's lookup prefix and hash (the caller hashes; the secret is never stored)."""
    if scope not in ("read", "write", "admin"):
        raise ValueError("scope must be 'read', 'write' or 'admin'")
    key = ApiKey(
        key_prefix=key_prefix, key_hash=key_hash, scope=scope, games=list(games) if games else None, name=name
    )
    session.add(key)
    session.flush()
    return key


def get_api_key(session: Session, key_prefix: str) -> ApiKey | None:
    """The key with this prefix (revoked or not: check ``revoked_at``)."""
    return session.scalar(select(ApiKey).where(ApiKey.key_prefix == key_prefix))


def list_api_keys(session: Session, *, include_revoked: bool = False) -> list[ApiKey]:
    stmt = select(ApiKey).order_by(ApiKey.id)
    if not include_revoked:
        stmt = stmt.where(ApiKey.revoked_at.is_(None))
    return list(session.scalars(stmt))


def has_api_keys(session: Session, *, scope: str | None = None) -> bool:
    """Whether any live key (of ``scope``) exists, e.g. before creating a bootstrap admin key."""
    cond = [ApiKey.revoked_at.is_(None)]
    if scope is not None:
        cond.append(ApiKey.scope == scope)
    return bool(session.scalar(select(exists().where(*cond))))


def revoke_api_key(session: Session, key_prefix: str) -> bool:
    """Revoke a key; ``False`` if no live key has this prefix."""
    key = get_api_key(session, key_prefix)
    if key is None or key.revoked_at is not None:
        return False
    key.revoked_at = utcnow()
    session.flush()
    return True


# ---- idempotency keys ----------------------------------------------------------------------------


def get_idempotency(session: Session, game_id: str, key: str) -> IdempotencyKey | None:
    return session.get(IdempotencyKey, (key, game_id))


def put_idempotency(session: Session, game_id: str, key: str, response: dict[str, Any] | None) -> bool:
    """Remember the response of a request carrying ``Idempotency-Key: key``.

    Returns ``False`` if the key was already stored (a concurrent duplicate): read it back with
    :func:`get_idempotency` and answer with that response.
    """
    insert = _bulk.dialect_insert(session)
    result = session.execute(
        insert(IdempotencyKey)
        .values(key=key, game_id=game_id, created_at=utcnow(), response=response)
        .on_conflict_do_nothing(index_elements=["key", "game_id"])
        .returning(IdempotencyKey.key)
    )
    return result.first() is not None


def purge_idempotency(session: Session, *, older_than: dt.datetime) -> int:
    result = session.execute(delete(IdempotencyKey).where(IdempotencyKey.created_at < older_than))
    return int(result.rowcount or 0)


# ---- calibration jobs ----------------------------------------------------------------------------


def create_calibration_job(
    session: Session, game_id: str, *, job_id: str | None = None, status: str = "pending"
) -> CalibrationJob:
    job = CalibrationJob(job_id=job_id or uuid.uuid4().hex, game_id=game_id, status=status)
    session.add(job)
    session.flush()
    return job


def get_calibration_job(session: Session, job_id: str) -> CalibrationJob | None:
    return session.get(CalibrationJob, job_id)


def update_calibration_job(
    session: Session,
    job_id: str,
    *,
    status: str,
    result: dict[str, Any] | None = None,
    error: str | None = None,
    finished: bool | None = None,
) -> CalibrationJob:
    """Set a job's status (and result / error). ``finished`` defaults to ``status`` being
    ``"succeeded"`` or ``"failed"``, which stamps ``finished_at``."""
    job = session.get(CalibrationJob, job_id)
    if job is None:
        raise KeyError(job_id)
    job.status = status
    if result is not None:
        job.result = result
    if error is not None:
        job.error = error
    if finished if finished is not None else status in ("succeeded", "failed"):
        job.finished_at = utcnow()
    session.flush()
    return job


def list_calibration_jobs(session: Session, game_id: str, *, limit: int = 20) -> list[CalibrationJob]:
    stmt = (
        select(CalibrationJob)
        .where(CalibrationJob.game_id == game_id)
        .order_by(CalibrationJob.created_at.desc())
        .limit(limit)
    )
    return list(session.scalars(stmt))
