"""The Alembic migrations: head, down to base and up again, and no drift from the models."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect

from unified_segmentation.storage.db import make_engine
from unified_segmentation.storage.migrate import (
    current_revision,
    downgrade,
    head_revision,
    is_at_head,
    upgrade,
)
from unified_segmentation.storage.models import Base

EXPECTED_TABLES = {
    "games",
    "game_behavioral_taxonomy",
    "taxonomy_versions",
    "behavioral_axes",
    "segment_definitions",
    "player_segment_memberships",
    "player_typical_offsets",
    "raw_events",
    "event_keys",
    "daily_activity",
    "players",
    "outcomes",
    "anomaly_detections",
    "rollout_configs",
    "rollout_audit",
    "shadow_comparisons",
    "validation_reports",
    "api_keys",
    "idempotency_keys",
    "calibration_jobs",
    "rate_limit_counters",
}


def test_models_cover_the_schema() -> None:
    assert set(Base.metadata.tables) == EXPECTED_TABLES


def test_upgrade_downgrade_upgrade(empty_db_url: str) -> None:
    assert current_revision(empty_db_url) is None
    upgrade(empty_db_url)
    assert is_at_head(empty_db_url)
    assert current_revision(empty_db_url) == head_revision()
    engine = make_engine(empty_db_url)
    try:
        assert set(inspect(engine).get_table_names()) >= EXPECTED_TABLES
        downgrade(empty_db_url, "base")
        assert current_revision(empty_db_url) is None
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        upgrade(engine)  # an engine works as well as a URL
        assert is_at_head(engine)
        assert set(inspect(engine).get_table_names()) >= EXPECTED_TABLES
    finally:
        engine.dispose()


def test_migrations_match_models(db_engine: Engine) -> None:
    with db_engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def test_naming_convention_applied(db_engine: Engine) -> None:
    inspector = inspect(db_engine)
    assert inspector.get_pk_constraint("raw_events")["constrained_columns"] == ["game_id", "event_id"]
    index_names = {ix["name"] for ix in inspector.get_indexes("raw_events")}
    assert "ix_raw_events_game_player_ts" in index_names
    if db_engine.dialect.name == "postgresql":
        assert inspector.get_pk_constraint("raw_events")["name"] == "pk_raw_events"
        checks = {ck["name"] for ck in inspector.get_check_constraints("taxonomy_versions")}
        assert "ck_taxonomy_versions_status" in checks
