"""Shared database fixtures: every storage test runs on SQLite and on PostgreSQL, through the real
Alembic migrations, and each test is rolled back.

* ``db_backend``      - ``"sqlite"`` / ``"postgresql"`` (session-scoped parameter);
* ``db_url``          - a database of that backend migrated to head, shared by the session;
* ``db_engine``       - an engine on it;
* ``db_sessionmaker`` - sessions joined to a per-test outer transaction (``commit()`` only releases a
  savepoint), so ``unit_of_work`` works as in production and the test leaves nothing behind;
* ``db_session``      - one such session;
* ``empty_db_url``    - a brand-new empty database (for migration tests).

PostgreSQL: a uniquely named database is created in the server at ``USEG_TEST_POSTGRES_URL``
(default ``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``) and dropped at the end; set
``USEG_TEST_POSTGRES_URL=skip`` on a machine without a server to skip the PostgreSQL half.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from unified_segmentation.storage.db import make_engine, normalize_url
from unified_segmentation.storage.migrate import upgrade

DB_BACKENDS = ("sqlite", "postgresql")
_DEFAULT_PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def _pg_admin_url() -> str | None:
    value = os.environ.get("USEG_TEST_POSTGRES_URL", "").strip()
    if value.lower() == "skip":
        return None
    return normalize_url(value or _DEFAULT_PG_ADMIN)


class _PostgresDatabases:
    """Creates uniquely named throwaway databases and drops them all at the end."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
        self.names: list[str] = []

    def create(self) -> str:
        name = f"useg_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        self.names.append(name)
        return make_url(self.admin_url).set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        with self.admin.connect() as conn:
            for name in self.names:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self.admin.dispose()


@pytest.fixture(scope="session")
def _postgres_databases() -> Iterator[_PostgresDatabases | None]:
    admin_url = _pg_admin_url()
    if admin_url is None:
        yield None
        return
    databases = _PostgresDatabases(admin_url)
    try:
        yield databases
    finally:
        databases.drop_all()


@pytest.fixture(scope="session")
def new_database(
    tmp_path_factory: pytest.TempPathFactory, _postgres_databases: _PostgresDatabases | None
) -> Callable[[str], str]:
    """``new_database(backend) -> url`` of a brand-new empty database."""

    def create(backend: str) -> str:
        if backend == "sqlite":
            path: Path = tmp_path_factory.mktemp("sqlite") / "useg.db"
            return f"sqlite:///{path}"
        if _postgres_databases is None:
            pytest.skip("USEG_TEST_POSTGRES_URL=skip: no PostgreSQL server on this machine")
        return _postgres_databases.create()

    return create


@pytest.fixture(scope="session", params=DB_BACKENDS)
def db_backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="session")
def db_url(db_backend: str, new_database: Callable[[str], str]) -> str:
    url = new_database(db_backend)
    upgrade(url)
    return url


@pytest.fixture
def empty_db_url(db_backend: str, new_database: Callable[[str], str]) -> str:
    return new_database(db_backend)


@pytest.fixture(scope="session")
def db_engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def db_connection(db_engine: Engine) -> Iterator[Connection]:
    with db_engine.connect() as conn:
        outer = conn.begin()
        try:
            yield conn
        finally:
            outer.rollback()


@pytest.fixture
def db_sessionmaker(db_connection: Connection) -> sessionmaker[Session]:
    return sessionmaker(bind=db_connection, join_transaction_mode="create_savepoint", expire_on_commit=False)


@pytest.fixture
def db_session(db_sessionmaker: sessionmaker[Session]) -> Iterator[Session]:
    session = db_sessionmaker()
    try:
        yield session
    finally:
        session.close()
