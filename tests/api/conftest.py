"""Fixtures of the HTTP API tests.

* ``make_client(settings=..., services=...)`` - a started ``TestClient`` (lifespan run) on a fresh app;
* ``FakeServices`` - a stand-in for the infrastructure tests (auth, errors, metrics) that need no database;
* ``seeded`` - real ``Services`` on a database (SQLite and PostgreSQL, a session-scoped parameter) holding
  the planted game ``test_game`` (600 players, seed 1, player ``test_player``) ingested and calibrated;
  ``seeded_sqlite`` is the SQLite one alone, for tests whose subject does not depend on the backend.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import pytest
from starlette.exceptions import StarletteDeprecationWarning

with warnings.catch_warnings():  # starlette prefers httpx2 (not a dependency); httpx works the same
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

from unified_segmentation.api.app import create_app
from unified_segmentation.config import Settings
from unified_segmentation.services.ops import current_window

GAME = "test_game"
PLAYER = "test_player"


@dataclass
class FakeServices:
    """Just enough of ``Services`` for the middleware, auth and metrics tests."""

    keys: dict[str, dict[str, Any]] = field(default_factory=dict)
    rate_limited_after: int | None = None
    hits: dict[int, int] = field(default_factory=dict)
    healthy: bool = True
    at_head: bool = True
    closed: bool = False
    ensured: list[tuple[str, str]] = field(default_factory=list)

    def authenticate(self, key: str) -> dict[str, Any] | None:
        return self.keys.get(key)

    def rate_limit_take(self, key_id: int, limit_per_minute: int, wanted: int) -> tuple[int, int]:
        before = self.hits.get(key_id, 0)
        self.hits[key_id] = before + wanted
        limit = self.rate_limited_after if self.rate_limited_after is not None else limit_per_minute
        return current_window(), max(0, min(wanted, limit - before))

    def ensure_api_key(self, plaintext: str, scope: str = "admin") -> dict[str, Any]:
        self.ensured.append((plaintext, scope))
        self.keys[plaintext] = {"id": 99, "scope": scope, "games": None}
        return self.keys[plaintext]

    def ping(self) -> None:
        if not self.healthy:
            raise ConnectionError("database unreachable")

    def migrations_at_head(self) -> bool:
        return self.at_head

    def metrics_snapshot(self) -> dict[str, Any]:
        return {"games": {"g1": {"variance_explained": 0.81, "average_confidence": 0.77, "taxonomy_version": 3,
                                 "calibration_confidence_mean": 0.83}},
                "counters": {"events_ingested": 2}, "adapter": {"served_by": {"unified": 5}, "shadow_mismatches": 1}}

    def get_settings(self, game_id: str) -> dict[str, Any]:
        return {"timezone": "UTC"}

    def close(self) -> None:
        self.closed = True


def settings_for(url: str = "sqlite:///:memory:", **overrides: Any) -> Settings:
    """Settings for a test app: a given database, human-readable logs, nothing read from the environment;
    the heap is not frozen (test_api_heap.py turns that on where it is the subject)."""
    base: dict[str, Any] = {"database_url": url, "log_json": False, "port": 8000, "gc_freeze": False}
    base.update(overrides)
    return Settings.model_construct(**base)


@pytest.fixture(name="settings_for")
def settings_for_fixture() -> Callable[..., Settings]:
    """``settings_for(url=..., **overrides)`` → isolated ``Settings``."""
    return settings_for


@pytest.fixture
def make_client() -> Iterator[Callable[..., TestClient]]:
    """``make_client(settings=None, services=None, raise_server_exceptions=False)`` → a running client."""
    with ExitStack() as stack:

        def make(settings: Settings | None = None, services: Any = None, **kwargs: Any) -> TestClient:
            app = create_app(settings if settings is not None else settings_for(), services=services)
            kwargs.setdefault("raise_server_exceptions", False)
            return stack.enter_context(TestClient(app, **kwargs))

        yield make


@pytest.fixture
def fake_services() -> FakeServices:
    return FakeServices(keys={
        "k-read": {"id": 1, "scope": "read", "games": None},
        "k-write": {"id": 2, "scope": "write", "games": None},
        "k-admin": {"id": 3, "scope": "admin", "games": None},
        "k-other-game": {"id": 4, "scope": "admin", "games": ["other_game"]},
    })


# ---------------------------------------------------------------------------------------------- real services
@dataclass
class Seeded:
    """Real services on a migrated database holding the planted ``test_game``, ingested and calibrated."""

    backend: str
    url: str
    services: Any
    game: Any

    def count(self, table: str, game_id: str) -> int:
        """Rows of ``table`` for ``game_id`` (to prove that a rejected request wrote nothing)."""
        from sqlalchemy import text

        with self.services.engine.connect() as conn:
            return int(conn.execute(text(f"SELECT count(*) FROM {table} WHERE game_id = :g"), {"g": game_id}).scalar())

    def footprint(self, game_id: str) -> tuple[int, int, int]:
        return (self.count("raw_events", game_id), self.count("daily_activity", game_id),
                self.count("outcomes", game_id))


@pytest.fixture(scope="session")
def planted_game() -> Any:
    from unified_segmentation.synth import generate_game

    return generate_game(n_players=600, seed=1)


@pytest.fixture(scope="session")
def seed_database(new_database: Callable[[str], str], planted_game: Any) -> Iterator[Callable[[str], Seeded]]:
    """``seed_database(backend)`` → the session's seeded database of that backend (built once)."""
    from unified_segmentation.services.facade import Services

    built: dict[str, Seeded] = {}

    def seed(backend: str) -> Seeded:
        if backend not in built:
            url = new_database(backend)
            services = Services(url)
            services.upgrade()
            # as the demo does: the data's end is the game's default as_of, so calls without as_of see full windows
            services.put_settings(GAME, {"default_as_of": planted_game.as_of.isoformat()})
            services.ingest_events(GAME, planted_game.events)
            services.ingest_outcomes(GAME, planted_game.outcomes)
            services.calibrate(GAME)
            built[backend] = Seeded(backend, url, services, planted_game)
        return built[backend]

    yield seed
    for seeded in built.values():
        seeded.services.close()


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def seeded(request: pytest.FixtureRequest, seed_database: Callable[[str], Seeded]) -> Seeded:
    return seed_database(request.param)


@pytest.fixture(scope="session")
def seeded_sqlite(seed_database: Callable[[str], Seeded]) -> Seeded:
    return seed_database("sqlite")


def _started_client(seeded: Seeded) -> Iterator[TestClient]:
    app = create_app(settings_for(seeded.url), services=seeded.services)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture(scope="session")
def api(seeded: Seeded) -> Iterator[TestClient]:
    """A client of an open (loopback) app over the seeded services of the current backend (one per session)."""
    yield from _started_client(seeded)
