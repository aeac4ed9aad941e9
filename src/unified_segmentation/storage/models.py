"""SQLAlchemy 2 typed models: the whole schema, for PostgreSQL (JSONB) and SQLite (JSON).

The seed's four tables keep their names and columns and gain ``taxonomy_version``
(``game_behavioral_taxonomy``, ``behavioral_axes``, ``segment_definitions``,
``player_segment_memberships``). High-volume tables (raw events, daily activity, memberships,
offsets, detections) carry no foreign keys: a per-row referential check would cost more than the
bulk load itself, and the repositories write them only for games that exist.

Timestamps are ``timestamptz`` on PostgreSQL and naive-UTC text on SQLite; both read back as
timezone-aware UTC datetimes (:class:`UTCDateTime`).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Float,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

__all__ = [
    "JSONType",
    "UTCDateTime",
    "Base",
    "AnomalyDetection",
    "ApiKey",
    "BehavioralAxis",
    "CalibrationJob",
    "DailyActivity",
    "EventKey",
    "Game",
    "GameBehavioralTaxonomy",
    "IdempotencyKey",
    "Outcome",
    "Player",
    "PlayerSegmentMembership",
    "PlayerTypicalOffset",
    "RateLimitCounter",
    "RawEvent",
    "RolloutAudit",
    "RolloutConfig",
    "SegmentDefinition",
    "ShadowComparison",
    "TaxonomyVersion",
    "ValidationReport",
    "utcnow",
]

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: JSONB on PostgreSQL, JSON (text) on SQLite. Python ``None`` is SQL NULL, not JSON ``null``.
JSONType = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")

GAME_ID = 100
PLAYER_ID = 255
EVENT_ID = 255
NAME = 100


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timezone-aware UTC datetime on every backend.

    Binds: aware values are converted to UTC, naive values are taken as UTC. Results are always
    aware (UTC). On SQLite the value is stored as naive UTC text, so text order is time order.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        dt.datetime: UTCDateTime(),
        dt.date: Date(),
        dict[str, Any]: JSONType,
        list[Any]: JSONType,
        Any: JSONType,
        float: Float(),
        int: Integer(),
        bool: Boolean(),
    }


# --------------------------------------------------------------------------------------------------
# games and taxonomies
# --------------------------------------------------------------------------------------------------


class Game(Base):
    __tablename__ = "games"

    game_id: Mapped[str] = mapped_column(String(GAME_ID), primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    settings: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    settings_updated_at: Mapped[dt.datetime | None]
    data_changed_at: Mapped[dt.datetime | None]
    newest_event_at: Mapped[dt.datetime | None]


class GameBehavioralTaxonomy(Base):
    """The seed's table: one row per game describing its *active* taxonomy version."""

    __tablename__ = "game_behavioral_taxonomy"
    __table_args__ = (ForeignKeyConstraint(["game_id"], ["games.game_id"], ondelete="CASCADE"),)

    game_id: Mapped[str] = mapped_column(String(GAME_ID), primary_key=True)
    universal_axes: Mapped[list[Any] | None] = mapped_column(JSONType)
    game_specific_axes: Mapped[list[Any] | None] = mapped_column(JSONType)
    total_axes_count: Mapped[int | None]
    total_segments_count: Mapped[int | None]
    variance_explained: Mapped[float | None]
    last_calibrated: Mapped[dt.datetime | None]
    active_version: Mapped[int | None]


class TaxonomyVersion(Base):
    """Every calibration, kept: ``params`` is the whole taxonomy dict (lossless)."""

    __tablename__ = "taxonomy_versions"
    __table_args__ = (
        ForeignKeyConstraint(["game_id"], ["games.game_id"], ondelete="CASCADE"),
        CheckConstraint("status IN ('active', 'inactive')", name="status"),
        # At most one active version per game; activation flips rows in one transaction.
        Index(
            "uq_taxonomy_versions_one_active",
            "game_id",
            unique=True,
            postgresql_where=text("status = 'active'"),
            sqlite_where=text("status = 'active'"),
        ),
    )

    game_id: Mapped[str] = mapped_column(String(GAME_ID), primary_key=True)
    version: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    as_of: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    status: Mapped[str] = mapped_column(String(16), default="inactive")
    params: Mapped[dict[str, Any]] = mapped_column(JSONType)
    data_fingerprint: Mapped[str | None] = mapped_column(String(128))


class BehavioralAxis(Base):
    __tablename__ = "behavioral_axes"
    __table_args__ = (
        ForeignKeyConstraint(
            ["game_id", "taxonomy_version"],
            ["taxonomy_versions.game_id", "taxonomy_versions.version"],
            ondelete="CASCADE",
        ),
        CheckConstraint("axis_type IN ('universal', 'game_specific')", name="axis_type"),
    )

    game_id: Mapped[str] = mapped_column(String(GAME_ID), primary_key=True)
    taxonomy_version: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    axis_id: Mapped[str] = mapped_column(String(NAME), primary_key=True)
    axis_name: Mapped[str] = mapped_column(String(NAME))
    axis_type: Mapped[str] = mapped_column(String(20))
    defining_metrics: Mapped[list[Any] | None] = mapped_column(JSONType)
    segment_count: Mapped[int]
    variance_explained: Mapped[float | None]
    variance_explained_null: Mapped[float | None]
    degenerate: Mapped[bool] = mapped_column(default=False)


class SegmentDefinition(Base):
    __tablename__ = "segment_definitions"
    __table_args__ = (
        ForeignKeyConstraint(
            ["game_id", "taxonomy_version", "axis_id"],
            ["behavioral_axes.game_id", "behavioral_axes.taxonomy_version", "behavioral_axes.axis_id"],
            ondelete="CASCADE",
        ),
    )

    game_id: Mapped[str] = mapped_column(String(GAME_ID), primary_key=True)
    taxonomy_version: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    segment_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    axis_id: Mapped[str] = mapped_column(String(NAME))
    segment_name: Mapped[str] = mapped_column(String(NAME))
    center_position: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    standard_deviations: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    covariance_matrix: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    contextual_centers: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    population_percentage: Mapped[float | None]
    ltv_mean: Mapped[float | None]
    churn_rate: Mapped[float | None]
    support_tickets_per_player: Mapped[float | None]
    ltv_correlation: Mapped[float | None]
    churn_correlation: Mapped[float | None]
    support_risk_correlation: Mapped[float | None]


class PlayerSegmentMembership(Base):
    """Each axis's primary segment and every segment with strength >= 0.01, per version."""

    __tablename__ = "player_segment_memberships"

    game_id: Mapped[str] = mapped_column(String(GAME_ID), primary_key=True)
    player_id: Mapped[str] = mapped_column(String(PLAYER_ID), primary_key=True)
    taxonomy_version: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    segment_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    axis: Mapped[str] = mapped_column(String(NAME))
    is_primary: Mapped[bool] = mapped_column(default=False)
    membership_strength: Mapped[float]
    membership_probability: Mapped[float | None]
    typicality: Mapped[float | None]
    position_offset: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    distance_from_center: Mapped[float | None]
    confidence: Mapped[float | None]
    last_updated: Mapped[dt.datetime] = mapped_column(default=utcnow)


class PlayerTypicalOffset(Base):
    """The player's typical offset from their typical-window primary segment, per axis."""

    __tablename__ = "player_typical_offsets"

    game_id: Mapped[str] = mapped_column(String(GAME_ID), primary_key=True)
    player_id: Mapped[str] = mapped_column(String(PLAYER_ID), primary_key=True)
    taxonomy_version: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    axis: Mapped[str] = mapped_column(String(NAME), primary_key=True)
    segment_id: Mapped[int]
    offset: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    offset_model: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    typical_exposure_days: Mapped[float | None]
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


# --------------------------------------------------------------------------------------------------
# activity
# --------------------------------------------------------------------------------------------------


class RawEvent(Base):
    """Raw events, kept for ``raw_event_retention_days`` (timezone re-derivation, audits)."""

    __tablename__ = "raw_events"
    __table_args__ = (Index("ix_raw_events_game_player_ts", "game_id", "player_id", "ts"),)

    game_id: Mapped[str] = mapped_column(String(GAME_ID), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(EVENT_ID), primary_key=True)
    player_id: Mapped[str] = mapped_column(String(PLAYER_ID))
    event_type: Mapped[str] = mapped_column(String(NAME))
    ts: Mapped[dt.datetime]
    value: Mapped[float | None]
    properties: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    ingested_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class EventKey(Base):
    """Keys of purged raw events: a re-ingest of a purged event is still a duplicate.

    A key is *seen* when it is in ``raw_events`` or here; purging moves keys here.
    """

    __tablename__ = "event_keys"

    game_id: Mapped[str] = mapped_column(String(GAME_ID), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(EVENT_ID), primary_key=True)


class DailyActivity(Base):
    """One row per player and local day; ``custom`` holds the game-specific ``ev_*`` counts."""

    __tablename__ = "daily_activity"
    __table_args__ = (
        CheckConstraint("source IN ('events', 'daily')", name="source"),
        Index("ix_daily_activity_game_date", "game_id", "date"),
    )

    game_id: Mapped[str] = mapped_column(String(GAME_ID), primary_key=True)
    player_id: Mapped[str] = mapped_column(String(PLAYER_ID), primary_key=True)
    date: Mapped[dt.date] = mapped_column(primary_key=True)
    sessions: Mapped[float] = mapped_column(default=0.0)
    playtime_minutes: Mapped[float] = mapped_column(default=0.0)
    night_playtime_minutes: Mapped[float | None]
    purchases: Mapped[float] = mapped_column(default=0.0)
    spend: Mapped[float] = mapped_column(default=0.0)
    refunds: Mapped[float] = mapped_column(default=0.0)
    social_events: Mapped[float] = mapped_column(default=0.0)
    social_sessions: Mapped[float | None]
    start_hour_sin_sum: Mapped[float | None]
    start_hour_cos_sum: Mapped[float | None]
    custom: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    source: Mapped[str] = mapped_column(String(10), default="events")


class Player(Base):
    __tablename__ = "players"

    game_id: Mapped[str] = mapped_column(String(GAME_ID), primary_key=True)
    player_id: Mapped[str] = mapped_column(String(PLAYER_ID), primary_key=True)
    first_seen: Mapped[dt.date]
    last_seen: Mapped[dt.date]


class Outcome(Base):
    __tablename__ = "outcomes"

    game_id: Mapped[str] = mapped_column(String(GAME_ID), primary_key=True)
    player_id: Mapped[str] = mapped_column(String(PLAYER_ID), primary_key=True)
    ltv: Mapped[float | None]
    churned: Mapped[int | None] = mapped_column(SmallInteger)
    support_tickets: Mapped[float | None]


# --------------------------------------------------------------------------------------------------
# anomalies
# --------------------------------------------------------------------------------------------------

_BIGINT_ID = BigInteger().with_variant(Integer(), "sqlite")


class AnomalyDetection(Base):
    """A persisted detection. ``flagged_axes`` / ``directions`` are ``|a|b|`` lists derived from
    ``axes`` at write time, so listings filter by axis and direction on both backends."""

    __tablename__ = "anomaly_detections"
    __table_args__ = (Index("ix_anomaly_detections_game_player", "game_id", "player_id"),)

    id: Mapped[int] = mapped_column(_BIGINT_ID, primary_key=True, autoincrement=True)
    game_id: Mapped[str] = mapped_column(String(GAME_ID))
    player_id: Mapped[str] = mapped_column(String(PLAYER_ID))
    taxonomy_version: Mapped[int]
    as_of: Mapped[dt.datetime]
    detected_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    is_anomalous: Mapped[bool]
    overall_score: Mapped[float]
    surprise: Mapped[float]
    confidence: Mapped[float | None]
    context: Mapped[str | None] = mapped_column(String(16))
    axes: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    flagged_axes: Mapped[str] = mapped_column(Text, default="|")
    directions: Mapped[str] = mapped_column(Text, default="|")


# Listings page through a game's detections by surprise, highest first (keyset on surprise, id).
Index(
    "ix_anomaly_detections_game_surprise",
    AnomalyDetection.game_id,
    AnomalyDetection.surprise.desc(),
    AnomalyDetection.id.desc(),
)


# --------------------------------------------------------------------------------------------------
# rollout and validation
# --------------------------------------------------------------------------------------------------


class RolloutConfig(Base):
    __tablename__ = "rollout_configs"
    __table_args__ = (
        ForeignKeyConstraint(["game_id"], ["games.game_id"], ondelete="CASCADE"),
        CheckConstraint(
            "strategy IN ('parallel_only', 'shadow_mode', 'gradual_rollout', 'full_rollout')",
            name="strategy",
        ),
    )

    game_id: Mapped[str] = mapped_column(String(GAME_ID), primary_key=True)
    strategy: Mapped[str] = mapped_column(String(32))
    percentage: Mapped[float]
    shadow_sample: Mapped[float]
    salt: Mapped[str] = mapped_column(String(64))
    legacy: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(NAME))


class RolloutAudit(Base):
    __tablename__ = "rollout_audit"
    __table_args__ = (Index("ix_rollout_audit_game_at", "game_id", "at"),)

    id: Mapped[int] = mapped_column(_BIGINT_ID, primary_key=True, autoincrement=True)
    game_id: Mapped[str] = mapped_column(String(GAME_ID))
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    actor: Mapped[str | None] = mapped_column(String(NAME))
    action: Mapped[str] = mapped_column(String(32))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSONType)


class ShadowComparison(Base):
    __tablename__ = "shadow_comparisons"
    __table_args__ = (Index("ix_shadow_comparisons_game_at", "game_id", "at"),)

    id: Mapped[int] = mapped_column(_BIGINT_ID, primary_key=True, autoincrement=True)
    game_id: Mapped[str] = mapped_column(String(GAME_ID))
    player_id: Mapped[str] = mapped_column(String(PLAYER_ID))
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    legacy: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    unified: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    similarity: Mapped[float | None]
    legacy_ms: Mapped[float | None]
    unified_ms: Mapped[float | None]
    error: Mapped[str | None] = mapped_column(Text)


class ValidationReport(Base):
    __tablename__ = "validation_reports"
    __table_args__ = (Index("ix_validation_reports_game_created", "game_id", "created_at"),)

    id: Mapped[int] = mapped_column(_BIGINT_ID, primary_key=True, autoincrement=True)
    game_id: Mapped[str] = mapped_column(String(GAME_ID))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    sample_size: Mapped[int]
    report: Mapped[dict[str, Any]] = mapped_column(JSONType)


# --------------------------------------------------------------------------------------------------
# service plumbing
# --------------------------------------------------------------------------------------------------


class ApiKey(Base):
    """An API key: only a prefix (for lookup) and a hash are stored; hashing is the caller's."""

    __tablename__ = "api_keys"
    __table_args__ = (CheckConstraint("scope IN ('read', 'write', 'admin')", name="scope"),)

    id: Mapped[int] = mapped_column(_BIGINT_ID, primary_key=True, autoincrement=True)
    key_prefix: Mapped[str] = mapped_column(String(32), unique=True)
    key_hash: Mapped[str] = mapped_column(String(255))
    scope: Mapped[str] = mapped_column(String(8))
    games: Mapped[list[Any] | None] = mapped_column(JSONType)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[dt.datetime | None]
    name: Mapped[str | None] = mapped_column(String(NAME))


class IdempotencyKey(Base):
    __tablename__ = "idempotency_keys"
    __table_args__ = (Index("ix_idempotency_keys_created_at", "created_at"),)

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    game_id: Mapped[str] = mapped_column(String(GAME_ID), primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    response: Mapped[dict[str, Any] | None] = mapped_column(JSONType)


class CalibrationJob(Base):
    """A calibration started as a job by the HTTP API; ``heartbeat_at`` is refreshed by the ``worker``
    (``host:pid``) running it, so a job whose worker died can be told from a slow one."""

    __tablename__ = "calibration_jobs"
    __table_args__ = (Index("ix_calibration_jobs_game_created", "game_id", "created_at"),)

    job_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    game_id: Mapped[str] = mapped_column(String(GAME_ID))
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[dt.datetime | None]
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    error: Mapped[str | None] = mapped_column(Text)
    heartbeat_at: Mapped[dt.datetime | None]
    worker: Mapped[str | None] = mapped_column(String(NAME))


class RateLimitCounter(Base):
    """Requests per API key and one-minute window, shared by every worker process."""

    __tablename__ = "rate_limit_counters"

    key_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    window_start: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hits: Mapped[int] = mapped_column(default=0)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
