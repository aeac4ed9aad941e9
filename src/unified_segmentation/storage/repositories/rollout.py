"""Rollout configuration (every change audited), shadow comparisons and validation reports."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..db import json_dumps
from ..models import RolloutAudit, RolloutConfig, ShadowComparison, ValidationReport, utcnow

__all__ = [
    "ROLLOUT_FIELDS",
    "add_shadow_comparison",
    "get_rollout_config",
    "get_validation_report",
    "list_rollout_audit",
    "list_shadow_comparisons",
    "list_validation_reports",
    "rollout_snapshot",
    "save_rollout_config",
    "save_validation_report",
]

ROLLOUT_FIELDS = ("strategy", "percentage", "shadow_sample", "salt", "legacy")


def get_rollout_config(session: Session, game_id: str) -> RolloutConfig | None:
    return session.get(RolloutConfig, game_id)


def rollout_snapshot(config: RolloutConfig | None) -> dict[str, Any] | None:
    """The configuration as a plain dict (what the audit trail stores)."""
    if config is None:
        return None
    return {f: getattr(config, f) for f in ROLLOUT_FIELDS}


def save_rollout_config(
    session: Session,
    game_id: str,
    *,
    actor: str | None,
    action: str = "update",
    defaults: Mapping[str, Any] | None = None,
    **changes: Any,
) -> RolloutConfig:
    """Create or change the game's rollout configuration and audit the change (before / after).

    A new configuration starts from ``defaults`` (``strategy, percentage, shadow_sample, salt``
    are required between ``defaults`` and ``changes``). ``action`` names the change in the audit
    (``"update"``, ``"rollback"``, ...).
    """
    unknown = set(changes) - set(ROLLOUT_FIELDS)
    if unknown:
        raise ValueError(f"unknown rollout field(s) {sorted(unknown)}")
    config = session.get(RolloutConfig, game_id, with_for_update=True)
    before = rollout_snapshot(config)
    if config is None:
        values = {**(defaults or {}), **changes}
        config = RolloutConfig(game_id=game_id, **values)
        session.add(config)
    else:
        for key, value in changes.items():
            setattr(config, key, value)
    config.updated_at = utcnow()
    config.updated_by = actor
    session.flush()
    session.add(
        RolloutAudit(
            game_id=game_id, actor=actor, action=action, before=before, after=rollout_snapshot(config)
        )
    )
    session.flush()
    return config


def list_rollout_audit(session: Session, game_id: str, *, limit: int = 100) -> list[RolloutAudit]:
    """The game's rollout changes, newest first."""
    stmt = (
        select(RolloutAudit)
        .where(RolloutAudit.game_id == game_id)
        .order_by(RolloutAudit.at.desc(), RolloutAudit.id.desc())
        .limit(limit)
    )
    return list(session.scalars(stmt))


def add_shadow_comparison(
    session: Session,
    game_id: str,
    player_id: str,
    *,
    legacy: Mapping[str, Any] | None,
    unified: Mapping[str, Any] | None,
    similarity: float | None = None,
    legacy_ms: float | None = None,
    unified_ms: float | None = None,
    error: str | None = None,
    at: dt.datetime | None = None,
) -> ShadowComparison:
    row = ShadowComparison(
        game_id=game_id,
        player_id=player_id,
        at=at or utcnow(),
        legacy=_plain(legacy),
        unified=_plain(unified),
        similarity=similarity,
        legacy_ms=legacy_ms,
        unified_ms=unified_ms,
        error=error,
    )
    session.add(row)
    session.flush()
    return row


def list_shadow_comparisons(
    session: Session, game_id: str, *, since: dt.datetime | None = None, limit: int | None = None
) -> list[ShadowComparison]:
    """The game's shadow comparisons, oldest first (``since``: ``at >=``)."""
    stmt = select(ShadowComparison).where(ShadowComparison.game_id == game_id)
    if since is not None:
        stmt = stmt.where(ShadowComparison.at >= since)
    stmt = stmt.order_by(ShadowComparison.at, ShadowComparison.id)
    if limit is not None:
        stmt = stmt.limit(limit)
    return list(session.scalars(stmt))


def save_validation_report(
    session: Session, game_id: str, *, sample_size: int, report: Mapping[str, Any]
) -> ValidationReport:
    row = ValidationReport(game_id=game_id, sample_size=sample_size, report=_plain(report))
    session.add(row)
    session.flush()
    return row


def get_validation_report(session: Session, game_id: str, report_id: int) -> ValidationReport | None:
    row = session.get(ValidationReport, report_id)
    return row if row is not None and row.game_id == game_id else None


def list_validation_reports(session: Session, game_id: str, *, limit: int = 50) -> list[ValidationReport]:
    """The game's validation reports, newest first."""
    stmt = (
        select(ValidationReport)
        .where(ValidationReport.game_id == game_id)
        .order_by(ValidationReport.created_at.desc(), ValidationReport.id.desc())
        .limit(limit)
    )
    return list(session.scalars(stmt))


def _plain(obj: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A JSON-clean copy (numpy values, datetimes, NaN handled) so what is stored is what reads back."""
    import orjson

    return None if obj is None else orjson.loads(json_dumps(dict(obj)))
