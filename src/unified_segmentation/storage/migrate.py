"""Programmatic Alembic: upgrade, downgrade and inspect a database without an ini file.

The migration scripts ship inside the package (``storage/migrations``), so this works from an
installed wheel as well as from a checkout. The command line can use the same scripts with
``script_location = unified_segmentation.storage:migrations`` in an ``alembic.ini``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine

from .db import make_engine, normalize_url

__all__ = [
    "MIGRATIONS_DIR",
    "alembic_config",
    "current_revision",
    "downgrade",
    "head_revision",
    "is_at_head",
    "upgrade",
]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

Target = str | Engine | Connection


def alembic_config(
    url: str | None = None, *, connection: Connection | None = None, sslmode: str | None = None
) -> Config:
    """An Alembic ``Config`` for the packaged migrations, bound to ``url`` or an open ``connection``."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        config.attributes["url"] = normalize_url(url)
    if connection is not None:
        config.attributes["connection"] = connection
    if sslmode is not None:
        config.attributes["sslmode"] = sslmode
    return config


@contextmanager
def _config_for(target: Target, sslmode: str | None) -> Iterator[Config]:
    if isinstance(target, str):
        yield alembic_config(target, sslmode=sslmode)
    elif isinstance(target, Engine):
        with target.begin() as conn:
            yield alembic_config(connection=conn)
    else:
        yield alembic_config(connection=target)


def upgrade(url: Target, revision: str = "head", *, sslmode: str | None = None) -> None:
    """Migrate the database at ``url`` (a URL, an engine or an open connection) up to ``revision``."""
    with _config_for(url, sslmode) as config:
        command.upgrade(config, revision)


def downgrade(url: Target, revision: str, *, sslmode: str | None = None) -> None:
    """Migrate down to ``revision`` (``"base"`` removes every table)."""
    with _config_for(url, sslmode) as config:
        command.downgrade(config, revision)


def head_revision() -> str:
    """The newest revision shipped with this package."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships its initial migration
        raise RuntimeError("no migrations found in " + str(MIGRATIONS_DIR))
    return head


def current_revision(url: Target, *, sslmode: str | None = None) -> str | None:
    """The revision the database is at (``None`` for an empty database)."""
    if isinstance(url, Connection):
        return MigrationContext.configure(url).get_current_revision()
    engine = url if isinstance(url, Engine) else make_engine(url, sslmode=sslmode)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        if engine is not url:
            engine.dispose()


def is_at_head(url: Target, *, sslmode: str | None = None) -> bool:
    return current_revision(url, sslmode=sslmode) == head_revision()
