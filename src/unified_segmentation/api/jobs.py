"""Calibration jobs: the work runs on a small thread pool of its own, never on the event loop.

``POST …/taxonomy/calibrate`` waits up to ``USEG_CALIBRATE_WAIT_S`` for its job; a job still running then
keeps running and is polled at ``GET /api/v1/segmentation/jobs/{job_id}``. A second identical request
while one runs in the same process joins it instead of starting another.

With a ``store`` (the database services) every job is a row of ``calibration_jobs`` — ``queued``,
``running``, ``succeeded`` (with its taxonomy version) or ``failed`` (with its error) — so any worker
answers for it. The worker running a job refreshes its heartbeat every ``stale_after_s / 4`` seconds; a
job whose heartbeat is older than ``stale_after_s`` (``USEG_JOB_STALE_S``) is reported ``failed`` with
``job_lost``: its worker stopped. Without a store, jobs live in the process that started them (the last
:data:`KEEP` finished ones are remembered).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from unified_segmentation.errors import UsegError

log = logging.getLogger("unified_segmentation.api")

KEEP = 100
#: ``host:pid`` of this process, written beside each job it runs.
WORKER = f"{socket.gethostname()}:{os.getpid()}"[:100]


class JobStore(Protocol):
    """What the jobs need of ``Services`` (see ``services.ops.OpsMixin``)."""

    def job_create(self, job_id: str, game_id: str, *, status: str, worker: str) -> None: ...
    def job_update(self, job_id: str, status: str, *, result: dict[str, Any] | None = None,
                   error: dict[str, Any] | None = None) -> None: ...
    def job_heartbeat(self, job_ids: list[str]) -> int: ...
    def job_status(self, job_id: str, *, stale_after_s: float) -> dict[str, Any] | None: ...
    def get_taxonomy(self, game_id: str, version: int | None = None) -> dict: ...


def error_of(exc: BaseException | None, job_id: str) -> dict[str, Any]:
    """The ``{"error", "detail"}`` a failed job reports (domain errors as they are, bugs without internals)."""
    if isinstance(exc, UsegError):
        return exc.to_dict()
    if isinstance(exc, CancelledError):
        return {"error": "job_cancelled", "detail": "the server shut down before this calibration started"}
    return {"error": "internal_error", "detail": f"calibration failed; job id {job_id}"}


@dataclass
class Job:
    """A job of this process."""

    job_id: str
    game_id: str
    key: Hashable
    future: Future
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    finished_at: datetime | None = None
    stored_status: str | None = None

    @property
    def status(self) -> str:
        if not self.future.done():
            return "running"
        if self.future.cancelled():
            return "failed"
        return "failed" if self.future.exception() is not None else "succeeded"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"job_id": self.job_id, "game_id": self.game_id, "status": self.status,
                               "created_at": self.created_at, "finished_at": self.finished_at}
        if self.status == "succeeded":
            result = self.future.result()
            out["taxonomy_version"] = result.get("taxonomy_version") if isinstance(result, dict) else None
            out["result"] = result
        elif self.status == "failed":
            exc = CancelledError() if self.future.cancelled() else self.future.exception()
            out["error"] = error_of(exc, self.job_id)
        return out


@dataclass
class StoredJob:
    """A job as the database knows it (started by any worker); :meth:`to_dict` reads the result's taxonomy
    once, so call it off the event loop (``CalibrationJobs.get`` does)."""

    row: dict[str, Any]
    store: JobStore
    _answer: dict[str, Any] | None = None

    @property
    def job_id(self) -> str:
        return self.row["job_id"]

    @property
    def game_id(self) -> str:
        return self.row["game_id"]

    @property
    def status(self) -> str:
        return self.row["status"]

    def to_dict(self) -> dict[str, Any]:
        if self._answer is None:
            self._answer = self._build()
        return self._answer

    def _build(self) -> dict[str, Any]:
        row = self.row
        out: dict[str, Any] = {"job_id": row["job_id"], "game_id": row["game_id"], "status": row["status"],
                               "created_at": row["created_at"], "finished_at": row["finished_at"]}
        if row["status"] == "succeeded":
            version = (row["result"] or {}).get("taxonomy_version")
            out["taxonomy_version"] = version
            try:
                out["result"] = self.store.get_taxonomy(row["game_id"], version) if version is not None else None
            except UsegError:  # the game or version was deleted since
                out["result"] = None
        elif row["status"] == "failed":
            out["error"] = row["error"] or {"error": "internal_error", "detail": "calibration failed"}
        return out


class CalibrationJobs:
    """Runs calibrations on ``max_workers`` threads and finds them by id (in ``store`` when given)."""

    def __init__(self, *, max_workers: int = 2, on_done: Callable[[Job], None] | None = None,
                 store: JobStore | None = None, stale_after_s: float = 120.0) -> None:
        self._max_workers = max_workers
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="useg-calibrate")
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._on_done = on_done
        self.store = store
        self.stale_after_s = float(stale_after_s)
        self._stop = threading.Event()
        self._heart: threading.Thread | None = None

    def submit(self, game_id: str, key: Hashable, fn: Callable[[], Any]) -> Job:
        """Start ``fn`` as a job, or return the running job of the same ``(game_id, key)``."""
        with self._lock:
            for job in self._jobs.values():
                if job.game_id == game_id and job.key == key and not job.future.done():
                    return job
            job = Job(job_id=uuid.uuid4().hex, game_id=game_id, key=key, future=Future())
            if self.store is not None:
                busy = sum(1 for j in self._jobs.values() if not j.future.done())
                job.stored_status = "queued" if busy >= self._max_workers else "running"
                self.store.job_create(job.job_id, game_id, status=job.stored_status, worker=WORKER)
                self._start_heartbeat()
            job.future = self._executor.submit(self._run, job, fn)
            self._jobs[job.job_id] = job
            self._prune()
        job.future.add_done_callback(lambda _f, job=job: self._finished(job))
        return job

    def _run(self, job: Job, fn: Callable[[], Any]) -> Any:
        store = self.store
        if store is None:
            return fn()
        if job.stored_status == "queued":
            self._record(job, "running")
        try:
            result = fn()
        except BaseException as exc:
            self._record(job, "failed", error=error_of(exc, job.job_id))
            raise
        version = result.get("taxonomy_version") if isinstance(result, dict) else None
        self._record(job, "succeeded", result={"taxonomy_version": version})
        return result

    def _record(self, job: Job, status: str, **values: Any) -> None:
        job.stored_status = status
        try:
            self.store.job_update(job.job_id, status, **values)  # type: ignore[union-attr]
        except Exception:  # noqa: BLE001 - the calibration itself is committed; the row goes stale, then failed
            log.exception("could not record a calibration job's status", extra={"job_id": job.job_id})

    def get(self, job_id: str) -> Job | StoredJob | None:
        """The job ``job_id``: from the database when there is a store (any worker's), else this process's."""
        if self.store is not None:
            row = self.store.job_status(job_id, stale_after_s=self.stale_after_s)
            if row is not None:
                job = StoredJob(row, self.store)
                job.to_dict()
                return job
        with self._lock:
            return self._jobs.get(job_id)

    def _finished(self, job: Job) -> None:
        job.finished_at = datetime.now(UTC)
        if job.future.cancelled():
            if self.store is not None:
                self._record(job, "failed", error=error_of(CancelledError(), job.job_id))
        else:
            exc = job.future.exception()
            if exc is not None and not isinstance(exc, UsegError):
                log.error("calibration job failed", exc_info=exc, extra={"job_id": job.job_id,
                                                                         "game_id": job.game_id})
        if self._on_done is not None:
            self._on_done(job)

    def _prune(self) -> None:
        finished = [jid for jid, j in self._jobs.items() if j.future.done()]
        for jid in finished[: max(0, len(finished) - KEEP)]:
            del self._jobs[jid]

    # ------------------------------------------------------------------ heartbeat
    def _start_heartbeat(self) -> None:
        if self._heart is None or not self._heart.is_alive():
            self._heart = threading.Thread(target=self._beat, name="useg-job-heartbeat", daemon=True)
            self._heart.start()

    def _beat(self) -> None:
        interval = max(0.05, self.stale_after_s / 4)
        while not self._stop.wait(interval):
            with self._lock:
                active = [jid for jid, j in self._jobs.items() if not j.future.done()]
            if not active:
                continue
            try:
                self.store.job_heartbeat(active)  # type: ignore[union-attr]
            except Exception:  # noqa: BLE001 - retried at the next beat
                log.warning("could not refresh calibration job heartbeats", exc_info=True)

    def shutdown(self) -> None:
        """Stop taking jobs; running calibrations finish in their threads (they commit atomically), jobs not
        yet started are recorded as failed (``job_cancelled``)."""
        self._stop.set()
        self._executor.shutdown(wait=False, cancel_futures=True)
