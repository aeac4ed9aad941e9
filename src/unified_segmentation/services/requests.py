"""The single-player request path: categorize or detect one player in a couple of indexed reads.

``Services.categorize`` / ``Services.detect`` (and so the HTTP routes and the adapter) come here. It
reads the game's state and the player's rows with :mod:`storage.repositories.requests`, computes the
window features with the array core of ``window_features`` and scores with the same pipeline
functions the batch path uses, so answers equal ``categorize_batch`` / ``detect_batch`` on one player.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta

import orjson
from sqlalchemy import exc as sa_exc

from ..errors import GameNotFound, NoTaxonomy, PlayerNotFound
from ..game_settings import GameSettings
from ..pipeline import detect_player_rows, detection_dict, profile_dict, score_player_rows
from ..pipeline.data import resolve_as_of
from ..storage.repositories import requests as rrepo
from ._common import _check_id, _detection_rows, _local_date

_SETTINGS_CACHE_MAX = 256


class RequestPathMixin:
    """Mixed into ``Services``; uses its ``Session``, ``_taxonomy``, counters and background writer."""

    _settings_cache: dict[str, GameSettings]
    _settings_lock = threading.Lock()

    def _parsed_settings(self, text: str) -> GameSettings:
        cache = self.__dict__.setdefault("_settings_cache", {})
        s = cache.get(text)
        if s is None:
            s = GameSettings.from_dict(orjson.loads(text) or {})
            with self._settings_lock:
                if len(cache) >= _SETTINGS_CACHE_MAX:
                    cache.clear()
                cache[text] = s
        return s

    def _request_rows(self, game_id: str, player_id: str, as_of, version: int | None,
                      days: Callable[[GameSettings], int]):
        dialect = self.engine.dialect
        dbapi_error = dialect.loaded_dbapi.Error
        raw = None
        try:
            raw = self.engine.raw_connection()  # a pooled DBAPI connection: no ORM, no result wrappers
            cursor = raw.cursor()
            state = rrepo.request_state(cursor, dialect.name, game_id, player_id)
            if state is None:
                raise GameNotFound(f"unknown game {game_id!r}", game_id=game_id)
            s = self._parsed_settings(state.settings_json)
            if version is None:
                version = state.active_version
                if version is None:
                    raise NoTaxonomy(f"game {game_id!r} has no calibrated taxonomy yet; calibrate it first")
            tax = self._tax.get((game_id, int(version)))
            if tax is None:  # first use of this version in this process: load and compile it
                with self.Session() as session:
                    tax = self._taxonomy(session, game_id, version)
            if state.first_seen is None:
                raise PlayerNotFound(f"player {player_id!r} has no stored activity in game {game_id!r}")
            as_of_dt: datetime = resolve_as_of(as_of, s)
            d = _local_date(as_of_dt, s.timezone)
            rows = rrepo.player_daily_rows(cursor, dialect.name, game_id, player_id, state.first_seen,
                                           d - timedelta(days=days(s)), d)
            cursor.close()
        except dbapi_error as exc:  # as SQLAlchemy would raise it (the API answers 503 when unreachable)
            if raw is not None and dialect.is_disconnect(exc, raw.dbapi_connection, None):
                raw.invalidate()
            raise sa_exc.DBAPIError.instance(None, None, exc, dbapi_error) from exc
        finally:
            if raw is not None:
                raw.close()  # back to the pool (which rolls the read transaction back)
        return tax, as_of_dt, rows

    def categorize(self, game_id: str, player_id: str, *, as_of=None, taxonomy_version=None) -> dict:
        """One player's profile (what ``categorize_batch`` gives for ``[player_id]``)."""
        _check_id(player_id, "player_id")
        tax, as_of_dt, rows = self._request_rows(game_id, player_id, as_of, taxonomy_version,
                                                 lambda s: s.profile_days + 1)
        try:
            ps = score_player_rows(tax, rows, as_of_dt)
        except PlayerNotFound:
            raise PlayerNotFound(f"player {player_id!r} has no stored activity in game {game_id!r} "
                                 f"by {as_of_dt.isoformat()}") from None
        profile = profile_dict(tax, ps, 0)
        profile["as_of"] = as_of_dt.isoformat()
        self.counters["categorizations"] = self.counters.get("categorizations", 0) + 1
        self._record_confidence(game_id, ps.confidence)
        return profile

    def detect(self, game_id: str, player_id: str, *, as_of=None) -> dict:
        """One player's detection (as ``detect_batch``), persisted behind the answer by the background writer."""
        _check_id(player_id, "player_id")
        tax, as_of_dt, rows = self._request_rows(game_id, player_id, as_of, None,
                                                 lambda s: s.current_days + s.typical_days + 1)
        shifts = self._shifts.get(game_id, {}).get("table", {})
        try:
            res = detect_player_rows(tax, rows, as_of_dt, shifts=shifts)
        except PlayerNotFound:
            raise PlayerNotFound(f"player {player_id!r} has no stored activity in game {game_id!r} "
                                 f"by {as_of_dt.isoformat()}") from None
        det = detection_dict(tax, res, 0) | {"as_of": as_of_dt.isoformat()}
        self._enqueue(("detections", game_id, _detection_rows(game_id, tax.taxonomy_version, as_of_dt, res, [det])))
        self.counters["detections"] = self.counters.get("detections", 0) + 1
        self.counters["anomalies_flagged"] = self.counters.get("anomalies_flagged", 0) + int(res.is_anomalous.sum())
        return det
