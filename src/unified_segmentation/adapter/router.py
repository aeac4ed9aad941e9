"""The adapter's entry point: who answers a profile request, fallback, and shadow runs (DESIGN §4.5).

``ProfileRouter.serve`` is synchronous and pure of storage: the unified system comes in as a zero-argument
callable, the legacy as a ``LegacySystem``; shadow comparisons go to ``on_shadow`` (the lead persists
them). Shadow work runs on a thread pool, never on the request path, and is bounded (``max_pending_shadow``):
when the pool is saturated a shadow run is dropped (counted), never queued without limit.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from unified_segmentation.errors import InvalidInput, UsegError

from .compare import NameMap, classify, compare
from .legacy import LegacyError, LegacySystem
from .profile import CompatProfile
from .rollout import RolloutConfig, decide

log = logging.getLogger(__name__)

UnifiedCall = Callable[[], CompatProfile | dict[str, Any]]


@dataclass
class ShadowRecord:
    """One shadow comparison: both answers, latencies, error, similarity (to be stored)."""

    game_id: str
    player_id: str
    legacy: dict[str, Any]
    unified: dict[str, Any] | None
    similarity: float | None
    legacy_ms: float
    unified_ms: float | None
    error: str | None
    classification: str | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def to_dict(self) -> dict[str, Any]:
        return {"game_id": self.game_id, "player_id": self.player_id, "legacy": self.legacy,
                "unified": self.unified, "similarity": self.similarity, "classification": self.classification,
                "legacy_ms": self.legacy_ms, "unified_ms": self.unified_ms, "error": self.error,
                "created_at": self.created_at.isoformat()}


def _as_profile(value: CompatProfile | dict[str, Any]) -> CompatProfile:
    if isinstance(value, CompatProfile):
        return value
    if isinstance(value, dict):
        return CompatProfile.model_validate({"served_by": "unified", **value})
    raise TypeError(f"the unified callable returned {type(value).__name__}, expected a CompatProfile")


def _reason(exc: BaseException) -> str:
    return getattr(exc, "code", None) if isinstance(exc, UsegError) else type(exc).__name__


class ProfileRouter:
    """Routes profile requests between the unified system and a legacy one, per a game's rollout config.

    Counters (plain ints, read them for Prometheus): ``served_by`` {"unified", "legacy"}, ``fallbacks``,
    ``fallback_reasons`` {error code or exception name: n}, ``shadow_runs``, ``shadow_mismatches``
    (similarity ≤ 0.90), ``shadow_errors`` (unified raised in shadow), ``shadow_dropped`` (pool saturated).
    """

    def __init__(self, executor: ThreadPoolExecutor | None = None, *, shadow_workers: int = 2,
                 max_pending_shadow: int = 1000, unified_when_legacy_fails: bool = False) -> None:
        self._owns_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(max_workers=shadow_workers, thread_name_prefix="useg-shadow")
        self.max_pending_shadow = int(max_pending_shadow)
        self.unified_when_legacy_fails = unified_when_legacy_fails
        self._lock = threading.Lock()
        self._pending: set[Future] = set()
        self.served_by = {"unified": 0, "legacy": 0}
        self.fallbacks = 0
        self.fallback_reasons: dict[str, int] = {}
        self.shadow_runs = 0
        self.shadow_mismatches = 0
        self.shadow_errors = 0
        self.shadow_dropped = 0

    # -- counters ----------------------------------------------------------------------------------

    def counters(self) -> dict[str, Any]:
        with self._lock:
            return {"served_by": dict(self.served_by), "fallbacks": self.fallbacks,
                    "fallback_reasons": dict(self.fallback_reasons), "shadow_runs": self.shadow_runs,
                    "shadow_mismatches": self.shadow_mismatches, "shadow_errors": self.shadow_errors,
                    "shadow_dropped": self.shadow_dropped, "shadow_pending": len(self._pending)}

    def _served(self, who: str, fallback_exc: BaseException | None = None) -> None:
        with self._lock:
            self.served_by[who] += 1
            if fallback_exc is not None:
                self.fallbacks += 1
                key = _reason(fallback_exc)
                self.fallback_reasons[key] = self.fallback_reasons.get(key, 0) + 1

    # -- the request path --------------------------------------------------------------------------

    def serve(self, config: RolloutConfig | dict[str, Any], game_id: str, player_id: str, *,
              unified: UnifiedCall, legacy: LegacySystem, force_unified: bool = False, force_legacy: bool = False,
              shadow_executor: ThreadPoolExecutor | None = None,
              on_shadow: Callable[[ShadowRecord], None] | None = None,
              name_map: NameMap | None = None) -> CompatProfile:
        """The player's backward-compatible profile, ``served_by`` and ``fallback`` set.

        Unified serves (forced, gradual bucket, full rollout) → its answer, or on ANY exception the legacy's
        with ``fallback=True``. Otherwise the legacy answers; in ``shadow_mode`` a sampled player's unified
        call and comparison are submitted to the shadow pool and ``on_shadow(record)`` gets the result later.
        ``name_map`` (legacy → unified names per axis, e.g. from the last validation) is used for the shadow
        similarity. Legacy errors propagate (``LegacyError``/``UsegError``) unless
        ``unified_when_legacy_fails`` lets the unified system stand in (not under ``parallel_only``).
        """
        if force_unified and force_legacy:
            raise InvalidInput("force_unified and force_legacy are mutually exclusive")
        cfg = RolloutConfig.parse(config)
        d = decide(cfg, game_id, player_id, force_unified, force_legacy)
        if d.unified:
            try:
                prof = _as_profile(unified())
            except Exception as exc:
                log.warning("unified profile failed for %s/%s, serving legacy: %s", game_id, player_id,
                            _reason(exc))
                prof = self._call_legacy(legacy, game_id, player_id, cause=exc)
                self._served("legacy", fallback_exc=exc)
                return prof.served("legacy", fallback=True)
            self._served("unified")
            return prof.served("unified")

        t0 = time.perf_counter()
        try:
            prof = self._call_legacy(legacy, game_id, player_id)
        except UsegError as exc:
            if not self.unified_when_legacy_fails or cfg.strategy == "parallel_only":
                raise
            try:
                uprof = _as_profile(unified())
            except Exception:
                raise exc from None
            self._served("unified", fallback_exc=exc)
            return uprof.served("unified", fallback=True)
        legacy_ms = (time.perf_counter() - t0) * 1000.0
        prof = prof.served("legacy")
        self._served("legacy")
        if d.shadow:
            self._submit_shadow(shadow_executor or self._executor, game_id, player_id, prof, legacy_ms, unified,
                                on_shadow, name_map)
        return prof

    @staticmethod
    def _call_legacy(legacy: LegacySystem, game_id: str, player_id: str,
                     cause: BaseException | None = None) -> CompatProfile:
        try:
            return legacy.profile(game_id, player_id)
        except UsegError:
            raise
        except Exception as exc:
            raise LegacyError(f"legacy {getattr(legacy, 'name', '?')!r} failed: {type(exc).__name__}: {exc}") \
                from (cause or exc)

    # -- shadow ------------------------------------------------------------------------------------

    def _submit_shadow(self, executor: ThreadPoolExecutor, game_id: str, player_id: str, legacy_prof: CompatProfile,
                       legacy_ms: float, unified: UnifiedCall, on_shadow: Callable[[ShadowRecord], None] | None,
                       name_map: NameMap | None) -> None:
        with self._lock:
            if len(self._pending) >= self.max_pending_shadow:
                self.shadow_dropped += 1
                return
        try:
            fut = executor.submit(self._run_shadow, game_id, player_id, legacy_prof, legacy_ms, unified, on_shadow,
                                  name_map)
        except RuntimeError:  # executor shut down
            with self._lock:
                self.shadow_dropped += 1
            return
        with self._lock:
            self._pending.add(fut)
        fut.add_done_callback(self._done)

    def _done(self, fut: Future) -> None:
        with self._lock:
            self._pending.discard(fut)

    def _run_shadow(self, game_id: str, player_id: str, legacy_prof: CompatProfile, legacy_ms: float,
                    unified: UnifiedCall, on_shadow: Callable[[ShadowRecord], None] | None,
                    name_map: NameMap | None) -> ShadowRecord:
        t0 = time.perf_counter()
        uprof: CompatProfile | None = None
        error = None
        try:
            uprof = _as_profile(unified()).served("unified")
        except Exception as exc:
            error = f"{_reason(exc)}: {exc}"
        unified_ms = (time.perf_counter() - t0) * 1000.0
        sim = cls = None
        if uprof is not None:
            sim = compare(legacy_prof, uprof, name_map).similarity
            cls = classify(sim)
        rec = ShadowRecord(game_id=game_id, player_id=player_id, legacy=legacy_prof.to_dict(),
                           unified=uprof.to_dict() if uprof is not None else None, similarity=sim,
                           legacy_ms=legacy_ms, unified_ms=unified_ms, error=error, classification=cls)
        with self._lock:
            self.shadow_runs += 1
            if error is not None:
                self.shadow_errors += 1
            elif cls != "equivalent":
                self.shadow_mismatches += 1
        if on_shadow is not None:
            try:
                on_shadow(rec)
            except Exception:  # a failing sink must not kill the worker
                log.exception("on_shadow failed for %s/%s", game_id, player_id)
        return rec

    def drain(self, timeout: float | None = None) -> bool:
        """Wait for in-flight shadow runs; True when none is left."""
        with self._lock:
            pending = list(self._pending)
        if not pending:
            return True
        _, not_done = wait_futures(pending, timeout=timeout)
        return not not_done

    def close(self, wait: bool = True) -> None:
        """Shut down the router's own shadow pool (a given executor is left to its owner)."""
        if self._owns_executor:
            self._executor.shutdown(wait=wait, cancel_futures=not wait)

    def __enter__(self) -> ProfileRouter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
