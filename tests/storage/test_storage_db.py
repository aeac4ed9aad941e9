"""Engines, URL normalization and the unit of work."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.engine import Engine

from unified_segmentation.storage import repositories as repo
from unified_segmentation.storage.db import (
    default_sqlite_url,
    make_engine,
    normalize_url,
    session_factory,
    unit_of_work,
)
from unified_segmentation.storage.migrate import upgrade
from unified_segmentation.storage.models import Game


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u:p@db:5432/useg", "postgresql+psycopg://u:p@db:5432/useg"),
        ("postgresql://u@db/useg?sslmode=require", "postgresql+psycopg://u@db/useg?sslmode=require"),
        ("postgresql+asyncpg://u@db/useg?ssl=require", "postgresql+psycopg://u@db/useg?sslmode=require"),
        ("postgresql+psycopg://u@db/useg", "postgresql+psycopg://u@db/useg"),
        ("sqlite:///./useg.db", "sqlite:///./useg.db"),
        ("sqlite+aiosqlite:///x.db", "sqlite:///x.db"),
        ("./data/useg.db", "sqlite:///./data/useg.db"),
        ("/var/lib/useg.db", "sqlite:////var/lib/useg.db"),
        (":memory:", "sqlite://"),
    ],
)
def test_normalize_url(given: str, expected: str) -> None:
    assert normalize_url(given) == expected


def test_normalize_url_rejects_empty() -> None:
    with pytest.raises(ValueError):
        normalize_url("  ")


def test_default_sqlite_url() -> None:
    assert default_sqlite_url() == "sqlite:///./useg.db"


def test_sqlite_engine_pragmas(tmp_path) -> None:
    engine = make_engine(str(tmp_path / "x.db"))
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
    finally:
        engine.dispose()


def test_postgresql_engine_options() -> None:
    engine = make_engine("postgres://u@localhost/none", sslmode="require")
    assert engine.pool._pre_ping  # type: ignore[attr-defined]
    assert engine.dialect.driver == "psycopg"
    engine.dispose()


def _count_games(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.scalar(select(func.count()).select_from(Game)) or 0


def test_unit_of_work_commits_and_rolls_back(empty_db_url: str) -> None:
    """For real (no outer test transaction): the block commits, or writes nothing on error."""
    upgrade(empty_db_url)
    engine = make_engine(empty_db_url)
    sessions = session_factory(engine)
    try:
        with pytest.raises(RuntimeError), unit_of_work(sessions) as session:
            repo.ensure_game(session, "doomed", {})
            session.execute(text("SELECT 1"))
            raise RuntimeError("boom")
        assert _count_games(engine) == 0

        with unit_of_work(sessions) as session:
            repo.ensure_game(session, "kept", {"timezone": "UTC"})
        assert _count_games(engine) == 1
        with unit_of_work(sessions) as session:
            assert repo.get_game_or_raise(session, "kept").settings == {"timezone": "UTC"}
    finally:
        engine.dispose()
