"""Service plumbing the HTTP API shares between its worker processes through the database.

* **Rate limits**: one atomic UPSERT per reservation (a lease of calls the API counts in memory, see
  ``api.auth.Authenticator.enforce_rate_limit``) on the key's row for the current minute
  (``rate_limit_counters``), on a small connection pool of its own that commits without waiting for the
  disk (SQLite ``synchronous=NORMAL`` in WAL mode, PostgreSQL ``synchronous_commit=off``): a lost
  increment after a power cut costs nothing, and the count stays one per key, not one per process.
* **Idempotency records** (``idempotency_keys``): a request with an ``Idempotency-Key`` claims its record
  first (``INSERT … ON CONFLICT DO NOTHING`` on the primary key, so one of two concurrent duplicates
  wins) and stores its answer once done; a repeat replays that answer.
* **Calibration jobs** (``calibration_jobs``): status, result version and error of each job, with the
  heartbeat of the worker running it, so that any worker can answer ``GET /jobs/{id}`` and a job whose
  worker died is reported failed instead of running forever.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from typing import Any

import orjson
from sqlalchemy import Engine, event, exc

from ..storage.db import make_engine
from ..storage.repositories import service as srepo

log = logging.getLogger("unified_segmentation.services")

#: How often (seconds) one process purges expired idempotency records and old rate-limit windows.
PURGE_EVERY_S = 600.0
#: Counter windows kept behind the current one.
RATE_WINDOWS_KEPT = 2
_COUNTER_POOL = 2


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def current_window() -> int:
    """The rate-limit window of now: minutes since the epoch (every worker agrees on it)."""
    return int(time.time() // 60)


class OpsMixin:
    """Mixed into ``Services`` (needs ``url``, ``sslmode``, ``engine``, ``_sqlite``, ``_uow``, ``Session``)."""

    url: str
    sslmode: str | None
    engine: Engine
    _sqlite: bool

    _ops_lock = threading.Lock()
    _counter: Engine | None = None
    _counter_purged_window: int = -1
    _idem_purged_at: float = 0.0

    # ------------------------------------------------------------------ rate limits
    def _counter_engine(self) -> Engine | None:
        """The counters' own engine; ``None`` for an in-memory SQLite database (one shared connection)."""
        if self._counter is not None:
            return self._counter
        with self._ops_lock:
            if self._counter is None:
                if self._sqlite:
                    if self.engine.url.database in (None, "", ":memory:"):
                        return None
                    engine = make_engine(self.url)

                    @event.listens_for(engine, "connect")
                    def _fast_commit(dbapi_connection: Any, _record: Any) -> None:
                        # WAL + NORMAL: commits skip the fsync (checkpoints still sync): no corruption risk,
                        # only the last increments lost on a power cut.
                        dbapi_connection.execute("PRAGMA synchronous=NORMAL")
                else:
                    engine = make_engine(self.url, sslmode=self.sslmode, pool_size=_COUNTER_POOL, max_overflow=8,
                                         pool_pre_ping=False, isolation_level="AUTOCOMMIT",
                                         connect_args={"options": "-c synchronous_commit=off"})
                self._counter = engine
        return self._counter

    def rate_limit_count(self, key_id: int, window: int, hits: int = 1) -> int:
        """Count ``hits`` requests of ``key_id`` in minute ``window`` (shared by every process); returns the count."""
        engine = self._counter_engine()
        if engine is None:
            with self._uow() as session:
                return srepo.rate_limit_increment(session, key_id, window, hits)
        kind = "sqlite" if self._sqlite else "postgresql"
        sql = srepo.RATE_LIMIT_UPSERT.format(p="?" if kind == "sqlite" else "%s")
        now: Any = _utcnow()
        if kind == "sqlite":
            now = now.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
        purge = window != self._counter_purged_window
        dbapi_error = engine.dialect.loaded_dbapi.Error
        for attempt in (1, 2):
            try:
                raw = engine.raw_connection()
            except dbapi_error as error:  # the pool hands out the driver's own error on connect
                raise exc.DBAPIError.instance(None, None, error, dbapi_error) from error
            try:
                cursor = raw.cursor()
                try:
                    if purge:
                        cursor.execute(srepo.RATE_LIMIT_PURGE.format(p="?" if kind == "sqlite" else "%s"),
                                       (window - RATE_WINDOWS_KEPT,))
                    cursor.execute(sql, (key_id, window, hits, now))
                    rows = cursor.fetchall()  # exhausting the cursor ends the statement (SQLite autocommit)
                finally:
                    cursor.close()
                if purge:
                    self._counter_purged_window = window
                return int(rows[0][0])
            except Exception as error:
                if attempt == 1 and _is_disconnect(error):  # a broken pooled connection: drop it, retry once
                    raw.invalidate()
                    continue
                # the driver's error as SQLAlchemy's, so that the API answers 503 as for any database error
                raise exc.DBAPIError.instance(sql, None, error, dbapi_error) from error
            finally:
                raw.close()
        raise AssertionError("unreachable")

    def rate_limit_hit(self, key_id: int, limit_per_minute: int) -> bool:
        """Count one request of an API key; ``True`` when it is over ``limit_per_minute`` this minute."""
        return self.rate_limit_take(key_id, limit_per_minute, 1)[1] == 0

    def rate_limit_take(self, key_id: int, limit_per_minute: int, wanted: int) -> tuple[int, int]:
        """Reserve up to ``wanted`` requests of an API key this minute: ``(window, granted)``, ``granted``
        being how many of them are within ``limit_per_minute`` (0: the key is over its limit this minute).
        One atomic statement; every process reserves from the same counter."""
        window = current_window()
        hits = self.rate_limit_count(key_id, window, wanted)
        return window, max(0, min(wanted, limit_per_minute - (hits - wanted)))

    def _close_ops(self) -> None:
        if self._counter is not None:
            self._counter.dispose()
            self._counter = None

    # ------------------------------------------------------------------ idempotency records
    def idempotency_claim(self, key: str, game_id: str, record: dict[str, Any], *, ttl_s: float,
                          stale_s: float) -> tuple[str, dict[str, Any] | None]:
        """Claim an idempotency record; see :func:`storage.repositories.service.idempotency_claim`."""
        now = _utcnow()
        with self._uow() as session:
            outcome = srepo.idempotency_claim(session, key, game_id, record, now=now,
                                              expired_before=now - dt.timedelta(seconds=ttl_s),
                                              stale_before=now - dt.timedelta(seconds=stale_s))
        if time.monotonic() - self._idem_purged_at > PURGE_EVERY_S:
            self._idem_purged_at = time.monotonic()
            try:
                self.idempotency_purge(ttl_s)
            except Exception:  # noqa: BLE001 - housekeeping; the next purge catches up
                log.warning("could not purge expired idempotency records", exc_info=True)
        return outcome

    def idempotency_settle(self, key: str, game_id: str, claim: str, record: dict[str, Any] | None) -> bool:
        """Store the answer of the claim's request, or release the claim (``record=None``)."""
        with self._uow() as session:
            return srepo.idempotency_settle(session, key, game_id, claim, record)

    def idempotency_purge(self, ttl_s: float) -> int:
        with self._uow() as session:
            return srepo.idempotency_purge(session, _utcnow() - dt.timedelta(seconds=ttl_s))

    # ------------------------------------------------------------------ calibration jobs
    def job_create(self, job_id: str, game_id: str, *, status: str, worker: str) -> None:
        with self._uow() as session:
            srepo.job_insert(session, job_id, game_id, status=status, worker=worker, now=_utcnow())

    def job_update(self, job_id: str, status: str, *, result: dict[str, Any] | None = None,
                   error: dict[str, Any] | None = None) -> None:
        with self._uow() as session:
            srepo.job_update(session, job_id, status=status, now=_utcnow(), result=result,
                             error=orjson.dumps(error).decode() if error is not None else None)

    def job_heartbeat(self, job_ids: list[str]) -> int:
        if not job_ids:
            return 0
        with self._uow() as session:
            return srepo.job_heartbeat(session, job_ids, _utcnow())

    def job_status(self, job_id: str, *, stale_after_s: float) -> dict[str, Any] | None:
        """A job as stored, ``None`` when unknown. An active job whose worker has sent no heartbeat for
        ``stale_after_s`` seconds is marked failed first (its worker stopped)."""
        with self.Session() as session:
            job = srepo.job_get(session, job_id)
        if job is None:
            return None
        if job["status"] in srepo.JOB_ACTIVE:
            now = _utcnow()
            beat = job["heartbeat_at"] or job["created_at"]
            if beat < now - dt.timedelta(seconds=stale_after_s):
                error = {"error": "job_lost",
                         "detail": f"the worker running this calibration ({job['worker'] or 'unknown'}) stopped "
                                   f"sending heartbeats for over {stale_after_s:g} s; start the calibration again"}
                with self._uow() as session:
                    srepo.job_fail_if_stale(session, job_id, stale_before=now - dt.timedelta(seconds=stale_after_s),
                                            now=now, error=orjson.dumps(error).decode())
                with self.Session() as session:
                    job = srepo.job_get(session, job_id)
                if job is None:
                    return None
        if job["error"] is not None:
            try:
                job["error"] = orjson.loads(job["error"])
            except orjson.JSONDecodeError:
                job["error"] = {"error": "calibration_failed", "detail": job["error"]}
        return job


def _is_disconnect(error: BaseException) -> bool:
    name = type(error).__name__
    return name in ("OperationalError", "InterfaceError")
