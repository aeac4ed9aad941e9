"""Initial schema: games, versioned taxonomies, activity, memberships, anomalies, rollout, keys,
rate-limit counters.

Revision ID: 20261126_0001
Revises:
Create Date: 2026-11-26

Runs unchanged on PostgreSQL (JSONB, timestamptz) and SQLite (JSON text, batch mode).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "20261126_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.types.TypeEngine:
    return sa.JSON(none_as_null=True).with_variant(
        postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
    )


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _bigid() -> sa.types.TypeEngine:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    # ---- games and taxonomies -------------------------------------------------------------------
    op.create_table(
        "games",
        sa.Column("game_id", sa.String(100), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("settings", _json(), nullable=False),
        sa.Column("settings_updated_at", _ts(), nullable=True),
        sa.Column("data_changed_at", _ts(), nullable=True),
        sa.Column("newest_event_at", _ts(), nullable=True),
        sa.PrimaryKeyConstraint("game_id", name=op.f("pk_games")),
    )
    op.create_table(
        "game_behavioral_taxonomy",
        sa.Column("game_id", sa.String(100), nullable=False),
        sa.Column("universal_axes", _json(), nullable=True),
        sa.Column("game_specific_axes", _json(), nullable=True),
        sa.Column("total_axes_count", sa.Integer(), nullable=True),
        sa.Column("total_segments_count", sa.Integer(), nullable=True),
        sa.Column("variance_explained", sa.Float(), nullable=True),
        sa.Column("last_calibrated", _ts(), nullable=True),
        sa.Column("active_version", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["game_id"],
            ["games.game_id"],
            name=op.f("fk_game_behavioral_taxonomy_game_id_games"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("game_id", name=op.f("pk_game_behavioral_taxonomy")),
    )
    op.create_table(
        "taxonomy_versions",
        sa.Column("game_id", sa.String(100), nullable=False),
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("as_of", _ts(), nullable=True),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("params", _json(), nullable=False),
        sa.Column("data_fingerprint", sa.String(128), nullable=True),
        sa.CheckConstraint("status IN ('active', 'inactive')", name=op.f("ck_taxonomy_versions_status")),
        sa.ForeignKeyConstraint(
            ["game_id"],
            ["games.game_id"],
            name=op.f("fk_taxonomy_versions_game_id_games"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("game_id", "version", name=op.f("pk_taxonomy_versions")),
    )
    op.create_index(
        "uq_taxonomy_versions_one_active",
        "taxonomy_versions",
        ["game_id"],
        unique=True,
        postgresql_where=sa.text("status = 'active'"),
        sqlite_where=sa.text("status = 'active'"),
    )
    op.create_table(
        "behavioral_axes",
        sa.Column("game_id", sa.String(100), nullable=False),
        sa.Column("taxonomy_version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("axis_id", sa.String(100), nullable=False),
        sa.Column("axis_name", sa.String(100), nullable=False),
        sa.Column("axis_type", sa.String(20), nullable=False),
        sa.Column("defining_metrics", _json(), nullable=True),
        sa.Column("segment_count", sa.Integer(), nullable=False),
        sa.Column("variance_explained", sa.Float(), nullable=True),
        sa.Column("variance_explained_null", sa.Float(), nullable=True),
        sa.Column("degenerate", sa.Boolean(), nullable=False),
        sa.CheckConstraint(
            "axis_type IN ('universal', 'game_specific')", name=op.f("ck_behavioral_axes_axis_type")
        ),
        sa.ForeignKeyConstraint(
            ["game_id", "taxonomy_version"],
            ["taxonomy_versions.game_id", "taxonomy_versions.version"],
            name=op.f("fk_behavioral_axes_game_id_taxonomy_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("game_id", "taxonomy_version", "axis_id", name=op.f("pk_behavioral_axes")),
    )
    op.create_table(
        "segment_definitions",
        sa.Column("game_id", sa.String(100), nullable=False),
        sa.Column("taxonomy_version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("segment_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("axis_id", sa.String(100), nullable=False),
        sa.Column("segment_name", sa.String(100), nullable=False),
        sa.Column("center_position", _json(), nullable=True),
        sa.Column("standard_deviations", _json(), nullable=True),
        sa.Column("covariance_matrix", _json(), nullable=True),
        sa.Column("contextual_centers", _json(), nullable=True),
        sa.Column("population_percentage", sa.Float(), nullable=True),
        sa.Column("ltv_mean", sa.Float(), nullable=True),
        sa.Column("churn_rate", sa.Float(), nullable=True),
        sa.Column("support_tickets_per_player", sa.Float(), nullable=True),
        sa.Column("ltv_correlation", sa.Float(), nullable=True),
        sa.Column("churn_correlation", sa.Float(), nullable=True),
        sa.Column("support_risk_correlation", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["game_id", "taxonomy_version", "axis_id"],
            ["behavioral_axes.game_id", "behavioral_axes.taxonomy_version", "behavioral_axes.axis_id"],
            name=op.f("fk_segment_definitions_game_id_behavioral_axes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "game_id", "taxonomy_version", "segment_id", name=op.f("pk_segment_definitions")
        ),
    )
    op.create_table(
        "player_segment_memberships",
        sa.Column("game_id", sa.String(100), nullable=False),
        sa.Column("player_id", sa.String(255), nullable=False),
        sa.Column("taxonomy_version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("segment_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("axis", sa.String(100), nullable=False),
        sa.Column("is_primary", sa.Boolean(), nullable=False),
        sa.Column("membership_strength", sa.Float(), nullable=False),
        sa.Column("membership_probability", sa.Float(), nullable=True),
        sa.Column("typicality", sa.Float(), nullable=True),
        sa.Column("position_offset", _json(), nullable=True),
        sa.Column("distance_from_center", sa.Float(), nullable=True),
        sa.Column("confidence", sa.Float(), nullable=True),
        sa.Column("last_updated", _ts(), nullable=False),
        sa.PrimaryKeyConstraint(
            "game_id",
            "player_id",
            "taxonomy_version",
            "segment_id",
            name=op.f("pk_player_segment_memberships"),
        ),
    )
    op.create_table(
        "player_typical_offsets",
        sa.Column("game_id", sa.String(100), nullable=False),
        sa.Column("player_id", sa.String(255), nullable=False),
        sa.Column("taxonomy_version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("axis", sa.String(100), nullable=False),
        sa.Column("segment_id", sa.Integer(), nullable=False),
        sa.Column("offset", _json(), nullable=True),
        sa.Column("offset_model", _json(), nullable=True),
        sa.Column("typical_exposure_days", sa.Float(), nullable=True),
        sa.Column("updated_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint(
            "game_id", "player_id", "taxonomy_version", "axis", name=op.f("pk_player_typical_offsets")
        ),
    )

    # ---- activity -------------------------------------------------------------------------------
    op.create_table(
        "raw_events",
        sa.Column("game_id", sa.String(100), nullable=False),
        sa.Column("event_id", sa.String(255), nullable=False),
        sa.Column("player_id", sa.String(255), nullable=False),
        sa.Column("event_type", sa.String(100), nullable=False),
        sa.Column("ts", _ts(), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("properties", _json(), nullable=True),
        sa.Column("ingested_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("game_id", "event_id", name=op.f("pk_raw_events")),
    )
    op.create_index("ix_raw_events_game_player_ts", "raw_events", ["game_id", "player_id", "ts"])
    op.create_table(
        "event_keys",
        sa.Column("game_id", sa.String(100), nullable=False),
        sa.Column("event_id", sa.String(255), nullable=False),
        sa.PrimaryKeyConstraint("game_id", "event_id", name=op.f("pk_event_keys")),
    )
    op.create_table(
        "daily_activity",
        sa.Column("game_id", sa.String(100), nullable=False),
        sa.Column("player_id", sa.String(255), nullable=False),
        sa.Column("date", sa.Date(), nullable=False),
        sa.Column("sessions", sa.Float(), nullable=False),
        sa.Column("playtime_minutes", sa.Float(), nullable=False),
        sa.Column("night_playtime_minutes", sa.Float(), nullable=True),
        sa.Column("purchases", sa.Float(), nullable=False),
        sa.Column("spend", sa.Float(), nullable=False),
        sa.Column("refunds", sa.Float(), nullable=False),
        sa.Column("social_events", sa.Float(), nullable=False),
        sa.Column("social_sessions", sa.Float(), nullable=True),
        sa.Column("start_hour_sin_sum", sa.Float(), nullable=True),
        sa.Column("start_hour_cos_sum", sa.Float(), nullable=True),
        sa.Column("custom", _json(), nullable=True),
        sa.Column("source", sa.String(10), nullable=False),
        sa.CheckConstraint("source IN ('events', 'daily')", name=op.f("ck_daily_activity_source")),
        sa.PrimaryKeyConstraint("game_id", "player_id", "date", name=op.f("pk_daily_activity")),
    )
    op.create_index("ix_daily_activity_game_date", "daily_activity", ["game_id", "date"])
    op.create_table(
        "players",
        sa.Column("game_id", sa.String(100), nullable=False),
        sa.Column("player_id", sa.String(255), nullable=False),
        sa.Column("first_seen", sa.Date(), nullable=False),
        sa.Column("last_seen", sa.Date(), nullable=False),
        sa.PrimaryKeyConstraint("game_id", "player_id", name=op.f("pk_players")),
    )
    op.create_table(
        "outcomes",
        sa.Column("game_id", sa.String(100), nullable=False),
        sa.Column("player_id", sa.String(255), nullable=False),
        sa.Column("ltv", sa.Float(), nullable=True),
        sa.Column("churned", sa.SmallInteger(), nullable=True),
        sa.Column("support_tickets", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("game_id", "player_id", name=op.f("pk_outcomes")),
    )

    # ---- anomalies ------------------------------------------------------------------------------
    op.create_table(
        "anomaly_detections",
        sa.Column("id", _bigid(), autoincrement=True, nullable=False),
        sa.Column("game_id", sa.String(100), nullable=False),
        sa.Column("player_id", sa.String(255), nullable=False),
        sa.Column("taxonomy_version", sa.Integer(), nullable=False),
        sa.Column("as_of", _ts(), nullable=False),
        sa.Column("detected_at", _ts(), nullable=False),
        sa.Column("is_anomalous", sa.Boolean(), nullable=False),
        sa.Column("overall_score", sa.Float(), nullable=False),
        sa.Column("surprise", sa.Float(), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=True),
        sa.Column("context", sa.String(16), nullable=True),
        sa.Column("axes", _json(), nullable=True),
        sa.Column("flagged_axes", sa.Text(), nullable=False),
        sa.Column("directions", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_anomaly_detections")),
    )
    op.create_index(
        "ix_anomaly_detections_game_surprise",
        "anomaly_detections",
        ["game_id", sa.column("surprise").desc(), sa.column("id").desc()],
    )
    op.create_index("ix_anomaly_detections_game_player", "anomaly_detections", ["game_id", "player_id"])

    # ---- rollout and validation -----------------------------------------------------------------
    op.create_table(
        "rollout_configs",
        sa.Column("game_id", sa.String(100), nullable=False),
        sa.Column("strategy", sa.String(32), nullable=False),
        sa.Column("percentage", sa.Float(), nullable=False),
        sa.Column("shadow_sample", sa.Float(), nullable=False),
        sa.Column("salt", sa.String(64), nullable=False),
        sa.Column("legacy", _json(), nullable=True),
        sa.Column("updated_at", _ts(), nullable=False),
        sa.Column("updated_by", sa.String(100), nullable=True),
        sa.CheckConstraint(
            "strategy IN ('parallel_only', 'shadow_mode', 'gradual_rollout', 'full_rollout')",
            name=op.f("ck_rollout_configs_strategy"),
        ),
        sa.ForeignKeyConstraint(
            ["game_id"], ["games.game_id"], name=op.f("fk_rollout_configs_game_id_games"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("game_id", name=op.f("pk_rollout_configs")),
    )
    op.create_table(
        "rollout_audit",
        sa.Column("id", _bigid(), autoincrement=True, nullable=False),
        sa.Column("game_id", sa.String(100), nullable=False),
        sa.Column("at", _ts(), nullable=False),
        sa.Column("actor", sa.String(100), nullable=True),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("before", _json(), nullable=True),
        sa.Column("after", _json(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rollout_audit")),
    )
    op.create_index("ix_rollout_audit_game_at", "rollout_audit", ["game_id", "at"])
    op.create_table(
        "shadow_comparisons",
        sa.Column("id", _bigid(), autoincrement=True, nullable=False),
        sa.Column("game_id", sa.String(100), nullable=False),
        sa.Column("player_id", sa.String(255), nullable=False),
        sa.Column("at", _ts(), nullable=False),
        sa.Column("legacy", _json(), nullable=True),
        sa.Column("unified", _json(), nullable=True),
        sa.Column("similarity", sa.Float(), nullable=True),
        sa.Column("legacy_ms", sa.Float(), nullable=True),
        sa.Column("unified_ms", sa.Float(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_shadow_comparisons")),
    )
    op.create_index("ix_shadow_comparisons_game_at", "shadow_comparisons", ["game_id", "at"])
    op.create_table(
        "validation_reports",
        sa.Column("id", _bigid(), autoincrement=True, nullable=False),
        sa.Column("game_id", sa.String(100), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("sample_size", sa.Integer(), nullable=False),
        sa.Column("report", _json(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_validation_reports")),
    )
    op.create_index("ix_validation_reports_game_created", "validation_reports", ["game_id", "created_at"])

    # ---- service plumbing -----------------------------------------------------------------------
    op.create_table(
        "api_keys",
        sa.Column("id", _bigid(), autoincrement=True, nullable=False),
        sa.Column("key_prefix", sa.String(32), nullable=False),
        sa.Column("key_hash", sa.String(255), nullable=False),
        sa.Column("scope", sa.String(8), nullable=False),
        sa.Column("games", _json(), nullable=True),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("revoked_at", _ts(), nullable=True),
        sa.Column("name", sa.String(100), nullable=True),
        sa.CheckConstraint("scope IN ('read', 'write', 'admin')", name=op.f("ck_api_keys_scope")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_prefix", name=op.f("uq_api_keys_key_prefix")),
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("game_id", sa.String(100), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("response", _json(), nullable=True),
        sa.PrimaryKeyConstraint("key", "game_id", name=op.f("pk_idempotency_keys")),
    )
    op.create_index("ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"])
    op.create_table(
        "calibration_jobs",
        sa.Column("job_id", sa.String(64), nullable=False),
        sa.Column("game_id", sa.String(100), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("finished_at", _ts(), nullable=True),
        sa.Column("result", _json(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("job_id", name=op.f("pk_calibration_jobs")),
    )
    op.create_index("ix_calibration_jobs_game_created", "calibration_jobs", ["game_id", "created_at"])
    op.create_table(
        "rate_limit_counters",
        sa.Column("key_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("window_start", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hits", sa.Integer(), nullable=False),
        sa.Column("updated_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("key_id", "window_start", name=op.f("pk_rate_limit_counters")),
    )


def downgrade() -> None:
    for table in (
        "rate_limit_counters",
        "calibration_jobs",
        "idempotency_keys",
        "api_keys",
        "validation_reports",
        "shadow_comparisons",
        "rollout_audit",
        "rollout_configs",
        "anomaly_detections",
        "outcomes",
        "players",
        "daily_activity",
        "event_keys",
        "raw_events",
        "player_typical_offsets",
        "player_segment_memberships",
        "segment_definitions",
        "behavioral_axes",
        "taxonomy_versions",
        "game_behavioral_taxonomy",
        "games",
    ):
        op.drop_table(table)
