"""Alembic environment for the product's schema.

Reusable from anywhere: ``migrate.upgrade(url)`` passes the URL (or an open connection) through
``config.attributes``; the ``alembic`` command line can point ``script_location`` at
``unified_segmentation.storage:migrations`` and set ``sqlalchemy.url`` or ``USEG_DATABASE_URL``.

URL precedence: ``config.attributes["connection"]``, ``config.attributes["url"]``,
``USEG_DATABASE_URL``, ``DATABASE_URL``, ``sqlalchemy.url`` from the ini file, ``sqlite:///./useg.db``.
"""

from __future__ import annotations

import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy.engine import Connection

from unified_segmentation.storage.db import default_sqlite_url, make_engine, normalize_url
from unified_segmentation.storage.models import Base

config = context.config
target_metadata = Base.metadata

if config.config_file_name is not None and config.file_config.has_section("loggers"):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def database_url() -> str:
    url = (
        config.attributes.get("url")
        or os.environ.get("USEG_DATABASE_URL")
        or os.environ.get("DATABASE_URL")
        or config.get_main_option("sqlalchemy.url")
        or default_sqlite_url()
    )
    return normalize_url(url)


def _configure(**kwargs: object) -> None:
    context.configure(
        target_metadata=target_metadata,
        render_as_batch=True,
        compare_type=True,
        compare_server_default=False,
        **kwargs,
    )


def run_migrations_offline() -> None:
    _configure(url=database_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def _run(connection: Connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(database_url(), sslmode=config.attributes.get("sslmode"))
    try:
        with engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                # Batch migrations rebuild tables, which foreign keys would block. The pragma only
                # works outside a transaction, hence on the driver connection before BEGIN.
                conn.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
