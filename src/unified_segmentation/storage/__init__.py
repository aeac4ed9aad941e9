"""Storage: SQLAlchemy 2 models, Alembic migrations, repositories (which never commit).

``db`` builds engines and the unit of work, ``models`` the schema, ``migrate`` runs the packaged
Alembic migrations, ``repositories`` holds every query.
"""

from __future__ import annotations

from .db import default_sqlite_url, make_engine, normalize_url, session_factory, unit_of_work

__all__ = ["default_sqlite_url", "make_engine", "normalize_url", "session_factory", "unit_of_work"]
