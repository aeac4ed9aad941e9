"""Calibration jobs: the work runs on a small thread pool of its own, never on the event loop.

``POST …/taxonomy/calibrate`` waits up to ``USEG_CALIBRATE_WAIT_S`` for its job; a job still running then
keeps running and is polled at ``GET /api/v1/segmentation/jobs/{job_id}``. A second identical request
while one runs joins it instead of starting another. Jobs live in the process that started them (the
last :data:`KEEP` finished ones are remembered); with several workers, poll through the same connection or
read the taxonomy's history.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from unified_segmentation.errors import UsegError

log = logging.getLogger("unified_segmentation.api")

KEEP = 100


@dataclass
class Job:
    job_id: str
    game_id: str
    key: Hashable
    future: Future
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    finished_at: datetime | None = None

    @property
    def status(self) -> str:
        if not self.future.done():
            return "running"
        return "failed" if self.future.exception() is not None else "succeeded"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"job_id": self.job_id, "game_id": self.game_id, "status": self.status,
                               "created_at": self.created_at, "finished_at": self.finished_at}
        if self.status == "succeeded":
            result = self.future.result()
            out["taxonomy_version"] = result.get("taxonomy_version") if isinstance(result, dict) else None
            out["result"] = result
        elif self.status == "failed":
            exc = self.future.exception()
            out["error"] = (exc.to_dict() if isinstance(exc, UsegError)
                            else {"error": "internal_error", "detail": f"calibration failed; job id {self.job_id}"})
        return out


class CalibrationJobs:
    """Runs calibrations on ``max_workers`` threads and remembers them by id."""

    def __init__(self, *, max_workers: int = 2, on_done: Callable[[Job], None] | None = None) -> None:
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="useg-calibrate")
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._on_done = on_done

    def submit(self, game_id: str, key: Hashable, fn: Callable[[], Any]) -> Job:
        """Start ``fn`` as a job, or return the running job of the same ``(game_id, key)``."""
        with self._lock:
            for job in self._jobs.values():
                if job.game_id == game_id and job.key == key and not job.future.done():
                    return job
            job = Job(job_id=uuid.uuid4().hex, game_id=game_id, key=key, future=Future())
            job.future = self._executor.submit(fn)
            self._jobs[job.job_id] = job
            self._prune()
        job.future.add_done_callback(lambda _f, job=job: self._finished(job))
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def _finished(self, job: Job) -> None:
        job.finished_at = datetime.now(UTC)
        exc = job.future.exception()
        if exc is not None and not isinstance(exc, UsegError):
            log.error("calibration job failed", exc_info=exc, extra={"job_id": job.job_id, "game_id": job.game_id})
        if self._on_done is not None:
            self._on_done(job)

    def _prune(self) -> None:
        finished = [jid for jid, j in self._jobs.items() if j.future.done()]
        for jid in finished[: max(0, len(finished) - KEEP)]:
            del self._jobs[jid]

    def shutdown(self) -> None:
        """Stop taking jobs; running calibrations finish in their threads (they commit atomically)."""
        self._executor.shutdown(wait=False, cancel_futures=True)
