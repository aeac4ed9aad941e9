"""Engines, sessions and the unit of work.

Everything here is synchronous SQLAlchemy 2. PostgreSQL goes through psycopg 3
(``postgresql+psycopg://``); SQLite is the embedded default (``sqlite:///./useg.db``).

The unit of work (:func:`unit_of_work`) is the only place that commits; repositories never do.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

__all__ = [
    "default_sqlite_url",
    "dialect_name",
    "json_dumps",
    "make_engine",
    "normalize_url",
    "session_factory",
    "unit_of_work",
]

SQLITE_BUSY_TIMEOUT_MS = 30_000
# Page cache per connection (KiB). The default 2 MiB makes bulk loads into indexed tables thrash.
SQLITE_CACHE_KIB = 65_536
_ORJSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def default_sqlite_url() -> str:
    """The embedded default database: ``./useg.db`` in the working directory."""
    return "sqlite:///./useg.db"


def normalize_url(url: str) -> str:
    """Map the URL spellings people use onto the drivers this package runs.

    * ``postgres://`` / ``postgresql://`` / ``postgresql+asyncpg://`` / ``postgresql+psycopg2://``
      -> ``postgresql+psycopg://`` (an asyncpg-style ``ssl=`` query parameter becomes ``sslmode=``);
    * a bare filesystem path (``./useg.db``, ``/var/lib/useg/useg.db``) -> ``sqlite:///<path>``;
      ``:memory:`` -> ``sqlite://``; ``sqlite+aiosqlite://`` -> ``sqlite://``.

    Anything else is returned unchanged.
    """
    url = url.strip()
    if not url:
        raise ValueError("empty database URL")
    if "://" not in url:
        if url == ":memory:":
            return "sqlite://"
        return f"sqlite:///{url}"
    scheme, rest = url.split("://", 1)
    scheme_l = scheme.lower()
    if scheme_l in ("sqlite", "sqlite+pysqlite", "sqlite+aiosqlite"):
        return f"sqlite://{rest}"
    if scheme_l in ("postgres", "postgresql") or scheme_l.startswith(("postgresql+", "postgres+")):
        parsed = make_url(f"postgresql+psycopg://{rest}")
        query = dict(parsed.query)
        if "ssl" in query and "sslmode" not in query:
            query["sslmode"] = query.pop("ssl")
            parsed = parsed.set(query=query)
        return parsed.render_as_string(hide_password=False)
    return url


def dialect_name(bind: Session | Engine | Any) -> str:
    """``"postgresql"`` or ``"sqlite"`` for a session, engine or connection."""
    if isinstance(bind, Session):
        bind = bind.get_bind()
    return bind.dialect.name


def _finite(obj: Any) -> Any:
    """Non-finite floats become ``None`` (JSON has no NaN; PostgreSQL's JSONB refuses it)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def json_dumps(obj: Any) -> str:
    """JSON text for a JSON column: numpy values and datetimes accepted, NaN/inf written as ``null``.

    Floats are written in their shortest round-trip form, so a stored float reads back bit for bit.
    """
    try:
        return orjson.dumps(obj, option=_ORJSON_OPTIONS).decode()
    except TypeError:
        # orjson refuses e.g. integers beyond 64 bits or arbitrary objects; fall back to the stdlib.
        return json.dumps(_finite(obj), allow_nan=False, default=str)


def make_engine(url: str, *, sslmode: str | None = None, echo: bool = False, **kwargs: Any) -> Engine:
    """A synchronous engine for ``url`` (normalized with :func:`normalize_url`).

    SQLite: WAL journal, ``foreign_keys=ON``, a busy timeout, ``synchronous=FULL`` (an acknowledged
    commit is durable), a 64 MiB page cache, and real ``BEGIN``/``SAVEPOINT`` handling (the pysqlite
    driver's own transaction emulation is switched off). PostgreSQL: ``pool_pre_ping`` and, when
    given, ``sslmode`` (``require``, ``verify-full``, ...).
    """
    url = normalize_url(url)
    parsed = make_url(url)
    kwargs.setdefault("json_serializer", json_dumps)
    if parsed.get_backend_name() == "sqlite":
        connect_args = dict(kwargs.pop("connect_args", {}))
        connect_args.setdefault("timeout", SQLITE_BUSY_TIMEOUT_MS / 1000)
        connect_args.setdefault("check_same_thread", False)
        database = parsed.database or ""
        if database in ("", ":memory:") or database.startswith("file::memory:"):
            kwargs.setdefault("poolclass", StaticPool)
        engine = create_engine(url, echo=echo, connect_args=connect_args, **kwargs)
        _configure_sqlite(engine, in_memory=database in ("", ":memory:"))
        return engine
    connect_args = dict(kwargs.pop("connect_args", {}))
    if sslmode:
        connect_args["sslmode"] = sslmode
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, echo=echo, connect_args=connect_args, **kwargs)


def _configure_sqlite(engine: Engine, *, in_memory: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy emit BEGIN itself (see "begin" below) so that transactions, savepoints
        # and transactional DDL behave as on PostgreSQL.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            if not in_memory:
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
            cursor.execute("PRAGMA temp_store=MEMORY")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN")


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions bound to ``engine``; objects stay readable after commit (``expire_on_commit=False``)."""
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def unit_of_work(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One transaction: commit when the block ends normally, roll back on any exception.

    This is the one place in the product that commits::

        with unit_of_work(sessions) as session:
            repositories.insert_events(session, game_id, events)
    """
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
