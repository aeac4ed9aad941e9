"""The single-player request path: categorize or detect one player in one indexed read.

``Services.categorize`` / ``Services.detect`` (and so the HTTP routes and the adapter) come here. It
reads the game's state and the player's rows with :mod:`storage.repositories.requests`, computes the
window features with the array core of ``window_features`` and scores with the same pipeline
functions the batch path uses, so answers equal ``categorize_batch`` / ``detect_batch`` on one player.

The reads run on dedicated DBAPI connections (:class:`ReadConnections`): autocommit, so a read costs
its one statement and no ``BEGIN`` / rollback, and no pool pre-ping (a connection the server dropped
fails its statement, and the read is retried once on a fresh connection; a database that is down
surfaces as SQLAlchemy's ``OperationalError``, which the API answers with 503).
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import orjson
from sqlalchemy import Engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.pool import StaticPool

from ..errors import GameNotFound, InvalidInput, NoTaxonomy, PlayerNotFound
from ..game_settings import GameSettings
from ..pipeline import detect_player_rows, detect_rows, detection_dict, profile_dict, score_player_rows, score_rows
from ..pipeline.data import resolve_as_of
from ..storage.repositories import requests as rrepo
from ._common import _check_id, _detection_rows, _local_date

_SETTINGS_CACHE_MAX = 256
_READ_CONNECTIONS_IDLE = 4  # the single routes run on the event loop: one read at a time per process


class ReadConnections:
    """DBAPI connections reserved for the request path's reads (one statement each, read-only).

    Each connection is made by the engine's pool (its connect arguments and ``connect`` events) and
    then detached from it: autocommit, read-only sessions on PostgreSQL, no checkout ping and no
    rollback on return. At most ``idle`` wait between reads; they are closed with the engine
    (``engine.dispose()``). An in-memory SQLite database has one connection, so reads borrow the
    engine's.
    """

    def __init__(self, engine: Engine, idle: int = _READ_CONNECTIONS_IDLE) -> None:
        self.engine = engine
        self.kind = engine.dialect.name
        self._dbapi_error = engine.dialect.loaded_dbapi.Error
        self._shared = isinstance(engine.pool, StaticPool)
        self._binary = self.kind == "postgresql"
        self._idle: deque[Any] = deque()
        self._max_idle = idle
        event.listen(engine, "engine_disposed", self._on_dispose)

    def _connect(self) -> Any:
        try:
            fairy = self.engine.raw_connection()
        except self._dbapi_error as exc:  # the pool hands out the driver's own error on connect
            raise sa_exc.DBAPIError.instance(None, None, exc, self._dbapi_error) from exc
        if self._shared:
            return fairy
        try:
            fairy.detach()
            conn = fairy.dbapi_connection
            if self.kind == "postgresql":
                conn.rollback()  # idle, whatever the checkout left
                conn.autocommit = True
                conn.execute("SET default_transaction_read_only = on")
            return conn
        except self._dbapi_error as exc:
            fairy.close()
            raise sa_exc.DBAPIError.instance(None, None, exc, self._dbapi_error) from exc

    def run(self, read: Callable[[Any], Any]) -> Any:
        """``read(cursor)`` on an idle (or new) connection; driver errors raised as SQLAlchemy's."""
        for attempt in (0, 1):
            conn = self._take_idle()
            reused = conn is not None
            if conn is None:
                conn = self._connect()
            try:
                # PostgreSQL: results in binary (floats and integers arrive unparsed, bit for bit)
                cursor = conn.cursor(binary=True) if self._binary else conn.cursor()
                out = read(cursor)
                cursor.close()
            except self._dbapi_error as exc:
                dropped = self._is_disconnect(exc, conn)
                self._discard(conn, dropped)
                if dropped and reused and attempt == 0:
                    continue  # the server dropped an idle connection (a restart): once more on a fresh one
                raise sa_exc.DBAPIError.instance(None, None, exc, self._dbapi_error,
                                                 connection_invalidated=dropped) from exc
            except BaseException:
                self._discard(conn, False)
                raise
            if self._shared or len(self._idle) >= self._max_idle:
                conn.close()
            else:
                self._idle.append(conn)
            return out
        raise AssertionError("unreachable")

    def _take_idle(self) -> Any:
        """An idle connection, or ``None`` (threads may race for the last one: ``deque.pop`` is atomic)."""
        if self._shared:
            return None
        try:
            return self._idle.pop()
        except IndexError:
            return None

    def _is_disconnect(self, exc: Exception, conn: Any) -> bool:
        dbapi_conn = conn.dbapi_connection if self._shared else conn
        return bool(self.engine.dialect.is_disconnect(exc, dbapi_conn, None))

    def _discard(self, conn: Any, dropped: bool) -> None:
        if self._shared:  # the engine's own connection (an in-memory database lives in it)
            if dropped:
                conn.invalidate()
            conn.close()
            return
        with contextlib.suppress(Exception):  # a broken connection may fail to close; it is dropped either way
            conn.close()

    def _on_dispose(self, _engine: Engine) -> None:
        self.close()

    def close(self) -> None:
        while self._idle:
            self._discard(self._idle.pop(), True)


class _Hint(NamedTuple):
    """The window a request reads, from the game's settings as last seen."""

    settings_json: str
    as_of: datetime
    start: Any
    end: Any


class RequestPathMixin:
    """Mixed into ``Services``; uses its ``engine``, ``Session``, ``_taxonomy``, counters and background writer."""

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

    def _read_connections(self) -> ReadConnections:
        reads = self.__dict__.get("_reads")
        if reads is None:
            with self._settings_lock:
                reads = self.__dict__.get("_reads")
                if reads is None:
                    reads = self.__dict__["_reads"] = ReadConnections(self.engine)
        return reads

    def _window_hint(self, game_id: str, as_of, days: Callable[[GameSettings], int]) -> _Hint | None:
        """The window of this request under the game's settings as last seen (``None``: not seen yet)."""
        text = self.__dict__.setdefault("_last_settings", {}).get(game_id)
        if text is None:
            return None
        s = self._parsed_settings(text)
        try:
            as_of_dt = resolve_as_of(as_of, s)
        except InvalidInput:
            return None  # reported after the game and player checks, as without a hint
        end = _local_date(as_of_dt, s.timezone)
        return _Hint(text, as_of_dt, end - timedelta(days=days(s)), end)

    def _remember_settings(self, game_id: str, settings_json: str) -> None:
        last = self.__dict__.setdefault("_last_settings", {})
        if last.get(game_id) != settings_json:
            if len(last) >= _SETTINGS_CACHE_MAX:
                last.clear()
            last[game_id] = settings_json

    def _active_taxonomy(self, game_id: str, state: rrepo.RequestState, version: int | None):
        """The compiled taxonomy ``version`` (default: the active one) of the game, loaded at first use."""
        if version is None:
            version = state.active_version
            if version is None:
                raise NoTaxonomy(f"game {game_id!r} has no calibrated taxonomy yet; calibrate it first")
        tax = self._tax.get((game_id, int(version)))
        if tax is None:  # first use of this version in this process: load and compile it
            with self.Session() as session:
                tax = self._taxonomy(session, game_id, version)
        return tax

    def _request_rows(self, game_id: str, player_id: str, as_of, version: int | None,
                      days: Callable[[GameSettings], int]):
        """(compiled taxonomy, resolved as_of, the player's rows of the window ``days`` long).

        One statement when the game's settings are as last seen (the usual case), else two or three.
        """
        reads = self._read_connections()
        kind = reads.kind
        hint = self._window_hint(game_id, as_of, days)
        if hint is None:
            state, rows = reads.run(lambda cur: rrepo.request_state(cur, kind, game_id, player_id)), None
        else:
            state, rows = reads.run(lambda cur: rrepo.request_read(cur, kind, game_id, player_id, hint.start, hint.end))
        if state is None:
            raise GameNotFound(f"unknown game {game_id!r}", game_id=game_id)
        self._remember_settings(game_id, state.settings_json)
        s = self._parsed_settings(state.settings_json)
        tax = self._active_taxonomy(game_id, state, version)
        if state.first_seen is None:
            raise PlayerNotFound(f"player {player_id!r} has no stored activity in game {game_id!r}")
        if hint is not None and hint.settings_json == state.settings_json:
            return tax, hint.as_of, rows
        as_of_dt: datetime = resolve_as_of(as_of, s)
        d = _local_date(as_of_dt, s.timezone)
        start = d - timedelta(days=days(s))
        if rows is None or (hint.start, hint.end) != (start, d):
            rows = reads.run(lambda cur: rrepo.player_daily_rows(cur, kind, game_id, player_id, state.first_seen,
                                                                 start, d))
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

    # ------------------------------------------------------------------ several single requests at once
    def _request_rows_many(self, game_id: str, player_ids: list[str], as_of, version: int | None,
                           days: Callable[[GameSettings], int]):
        """:meth:`_request_rows` for several players: (compiled taxonomy, resolved as_of, rows of the
        known players or ``None``). One statement when the game's settings are as last seen."""
        reads = self._read_connections()
        kind = reads.kind
        hint = self._window_hint(game_id, as_of, days)
        if hint is None:
            state = reads.run(lambda cur: rrepo.request_state(cur, kind, game_id, player_ids[0]))
            rows = None
        else:
            state, rows = reads.run(lambda cur: rrepo.request_read_many(cur, kind, game_id, player_ids,
                                                                        hint.start, hint.end))
        if state is None:
            raise GameNotFound(f"unknown game {game_id!r}", game_id=game_id)
        self._remember_settings(game_id, state.settings_json)
        s = self._parsed_settings(state.settings_json)
        tax = self._active_taxonomy(game_id, state, version)
        if hint is not None and hint.settings_json == state.settings_json:
            return tax, hint.as_of, rows
        as_of_dt: datetime = resolve_as_of(as_of, s)
        d = _local_date(as_of_dt, s.timezone)
        start = d - timedelta(days=days(s))
        state, rows = reads.run(lambda cur: rrepo.request_read_many(cur, kind, game_id, player_ids, start, d))
        if state is None:
            raise GameNotFound(f"unknown game {game_id!r}", game_id=game_id)
        return tax, as_of_dt, rows

    def categorize_many(self, game_id: str, player_ids: list[str], *, as_of=None, taxonomy_version=None
                        ) -> list[dict | Exception]:
        """:meth:`categorize` of each of ``player_ids`` (distinct, checked ids), read and scored together.

        Each answer equals what :meth:`categorize` gives for that player alone; a player the game does not
        know gets :class:`PlayerNotFound` in its place. An error of the whole call (unknown game, no
        taxonomy, a bad ``as_of``) is raised.
        """
        tax, as_of_dt, rows = self._request_rows_many(game_id, player_ids, as_of, taxonomy_version,
                                                      lambda s: s.profile_days + 1)
        out: dict[str, dict] = {}
        if rows is not None:
            ps, keep = score_rows(tax, rows, as_of_dt)
            if ps is not None:
                stamp = as_of_dt.isoformat()
                for i in range(keep.size):
                    profile = profile_dict(tax, ps, i)
                    profile["as_of"] = stamp
                    out[profile["player_id"]] = profile
                self.counters["categorizations"] = self.counters.get("categorizations", 0) + keep.size
                self._record_confidence(game_id, ps.confidence)
        return [out.get(p) or self._not_found(game_id, p, rows, as_of_dt) for p in player_ids]

    def detect_many(self, game_id: str, player_ids: list[str], *, as_of=None) -> list[dict | Exception]:
        """:meth:`detect` of each of ``player_ids`` (distinct, checked ids), read and scored together;
        errors as :meth:`categorize_many`. The detections are persisted by the background writer."""
        tax, as_of_dt, rows = self._request_rows_many(game_id, player_ids, as_of, None,
                                                      lambda s: s.current_days + s.typical_days + 1)
        out: dict[str, dict] = {}
        if rows is not None:
            shifts = self._shifts.get(game_id, {}).get("table", {})
            res, keep = detect_rows(tax, rows, as_of_dt, shifts=shifts)
            if res is not None:
                stamp = as_of_dt.isoformat()
                dets = [detection_dict(tax, res, i) | {"as_of": stamp} for i in range(keep.size)]
                self._enqueue(("detections", game_id,
                               _detection_rows(game_id, tax.taxonomy_version, as_of_dt, res, dets)))
                out = {d["player_id"]: d for d in dets}
                self.counters["detections"] = self.counters.get("detections", 0) + keep.size
                self.counters["anomalies_flagged"] = (self.counters.get("anomalies_flagged", 0)
                                                      + int(res.is_anomalous.sum()))
        return [out.get(p) or self._not_found(game_id, p, rows, as_of_dt) for p in player_ids]

    @staticmethod
    def _not_found(game_id: str, player_id: str, rows, as_of_dt: datetime) -> PlayerNotFound:
        if rows is None or player_id not in rows.players:
            return PlayerNotFound(f"player {player_id!r} has no stored activity in game {game_id!r}")
        return PlayerNotFound(f"player {player_id!r} has no stored activity in game {game_id!r} "
                              f"by {as_of_dt.isoformat()}")
