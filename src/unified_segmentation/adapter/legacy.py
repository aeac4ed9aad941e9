"""Legacy segmentation systems behind one interface (DESIGN §4.5).

* ``BuiltinLegacy`` — the built-in per-player-baseline system (``core.legacy``): typical metrics as the
  baseline, per-metric z of ``current − baseline`` against the population, fixed studio-style tiers.
* ``HttpLegacy`` — the studio's own endpoint, with a per-attempt timeout, retries with exponential backoff,
  an overall deadline and a circuit breaker. Never hangs: the whole call is bounded by roughly
  ``timeout_s × (retries + 1) + Σ backoff``.
* ``legacy_from_config`` builds either from the stored per-game JSON config; ``LegacyPool`` caches the built
  systems per game so a breaker keeps its state across requests.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Protocol, runtime_checkable
from urllib.parse import quote, urlsplit

import httpx
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from unified_segmentation.core.legacy import LegacyBaselineModel, legacy_segments
from unified_segmentation.errors import InvalidInput, PlayerNotFound, UsegError

from .profile import CompatProfile

log = logging.getLogger(__name__)

__all__ = [
    "BuiltinLegacy", "CircuitBreaker", "HttpLegacy", "LegacyError", "LegacyInvalidResponse", "LegacyPool",
    "LegacySystem", "LegacyUnavailable", "legacy_from_config", "redact_legacy_config", "validate_legacy_config",
]


# --------------------------------------------------------------------------------------------- errors


class LegacyError(UsegError):
    """The legacy system could not answer (base class)."""

    code = "legacy_error"
    status = 502


class LegacyUnavailable(LegacyError):
    """Down, too slow, answering 5xx, or the circuit breaker is open (fail fast)."""

    code = "legacy_unavailable"
    status = 503


class LegacyInvalidResponse(LegacyError):
    """The legacy answered, but not with a valid backward-compatible profile."""

    code = "legacy_invalid_response"
    status = 502


# ------------------------------------------------------------------------------------------ interface


@runtime_checkable
class LegacySystem(Protocol):
    """What the router needs from a legacy system."""

    name: str

    def profile(self, game_id: str, player_id: str) -> CompatProfile:
        """The player's profile, ``served_by="legacy"``; raises ``LegacyError`` (or a ``UsegError``)."""
        ...


# ------------------------------------------------------------------------------------------- built-in

MetricsProvider = Callable[[str, str], tuple[Mapping[str, float] | None, Mapping[str, float] | None]]


def _finite(d: Mapping[str, Any] | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in (d or {}).items():
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(f):
            out[str(k)] = f
    return out


class BuiltinLegacy:
    """The built-in per-player-baseline legacy system.

    ``metrics_provider(game_id, player_id) -> (current, typical)`` gives the player's current-window and
    typical-window metrics in metric units (see ``core.legacy.LEGACY_METRICS``). ``model`` is a fitted
    ``LegacyBaselineModel`` or a callable ``game_id -> LegacyBaselineModel`` (one instance then serves
    every game). A player without typical data gets segments and baseline from the current window,
    no anomaly verdict and confidence 0.3.
    """

    def __init__(self, metrics_provider: MetricsProvider,
                 model: LegacyBaselineModel | Callable[[str], LegacyBaselineModel], *,
                 name: str = "builtin", threshold: float | None = None,
                 clock: Callable[[], datetime] | None = None) -> None:
        self.metrics_provider = metrics_provider
        self._model = model
        self.name = name
        self.threshold = threshold
        self._clock = clock or (lambda: datetime.now(UTC))

    def model_for(self, game_id: str) -> LegacyBaselineModel:
        return self._model if isinstance(self._model, LegacyBaselineModel) else self._model(game_id)

    def profile(self, game_id: str, player_id: str) -> CompatProfile:
        try:
            current_raw, typical_raw = self.metrics_provider(game_id, player_id)
        except UsegError:
            raise
        except Exception as exc:  # a broken provider is a legacy failure, not a crash
            raise LegacyError(f"built-in legacy could not read metrics: {type(exc).__name__}: {exc}") from exc
        current, typical = _finite(current_raw), _finite(typical_raw)
        if not current and not typical:
            raise PlayerNotFound(f"no metrics for player {player_id!r} in game {game_id!r}",
                                 player_id=player_id, game_id=game_id)
        has_typical = bool(typical)
        baseline = typical if has_typical else current
        segs = legacy_segments({m: np.asarray([v]) for m, v in baseline.items()})
        primary = {axis: str(names[0]) for axis, names in segs.items()}
        anomalies = None
        if has_typical:
            anomalies = self._anomalies(self.model_for(game_id), current, typical)
        return CompatProfile.model_validate({
            "player_id": player_id,
            "primary_segments": primary,
            "segment_scores": {axis: {name: 1.0} for axis, name in primary.items()},
            "behavioral_baseline": baseline,
            "confidence": 1.0 if has_typical else 0.3,
            "timestamp": self._clock(),
            "anomalies": anomalies,
            "served_by": "legacy",
            "fallback": False,
        })

    def _anomalies(self, model: LegacyBaselineModel, current: dict[str, float],
                   typical: dict[str, float]) -> dict[str, Any] | None:
        idx = [j for j, m in enumerate(model.metrics) if m in current and m in typical]
        if not idx:
            return None
        sub = LegacyBaselineModel(metrics=[model.metrics[j] for j in idx], scale=np.asarray(model.scale)[idx],
                                  threshold=model.threshold)
        cur = {m: np.asarray([current[m]]) for m in sub.metrics}
        typ = {m: np.asarray([typical[m]]) for m in sub.metrics}
        flags = sub.axis_flags(cur, typ, threshold=self.threshold)
        axes = {axis: bool(f[0]) for axis, f in flags.items()}
        return {"is_anomalous": any(axes.values()), "axes": axes}


# ----------------------------------------------------------------------------------- circuit breaker


class CircuitBreaker:
    """closed → open after ``failure_threshold`` consecutive failures → half-open after ``reset_after_s``
    (one trial call) → closed on success / open again on failure. Thread-safe."""

    CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"

    def __init__(self, failure_threshold: int = 5, reset_after_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be >= 1")
        self.failure_threshold = int(failure_threshold)
        self.reset_after_s = float(reset_after_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._state = self.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_in_flight = False
        self.opened_count = 0

    @property
    def state(self) -> str:
        with self._lock:
            if self._state == self.OPEN and self._clock() - self._opened_at >= self.reset_after_s:
                return self.HALF_OPEN
            return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def retry_after_s(self) -> float:
        with self._lock:
            if self._state != self.OPEN:
                return 0.0
            return max(0.0, self.reset_after_s - (self._clock() - self._opened_at))

    def allow(self) -> bool:
        """May a call go through now? (In half-open, only one trial call at a time.)"""
        with self._lock:
            if self._state == self.CLOSED:
                return True
            if self._state == self.OPEN:
                if self._clock() - self._opened_at < self.reset_after_s:
                    return False
                self._state = self.HALF_OPEN
                self._trial_in_flight = False
            if self._trial_in_flight:
                return False
            self._trial_in_flight = True
            return True

    def record_success(self) -> None:
        with self._lock:
            self._state, self._failures, self._trial_in_flight = self.CLOSED, 0, False

    def record_failure(self) -> None:
        with self._lock:
            self._failures += 1
            if self._state == self.HALF_OPEN or self._failures >= self.failure_threshold:
                if self._state != self.OPEN:
                    self.opened_count += 1
                self._state, self._opened_at, self._trial_in_flight = self.OPEN, self._clock(), False


# ---------------------------------------------------------------------------------------------- HTTP

RETRYABLE_STATUS = frozenset({408, 429})


class _BodyTooLarge(Exception):
    pass


def _check_url(url: str) -> str:
    if not isinstance(url, str) or not url:
        raise ValueError("url must be a non-empty string")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"url scheme must be http or https, got {parts.scheme or '(none)'!r}")
    if not parts.hostname:
        raise ValueError("url has no host")
    if parts.username or parts.password:
        raise ValueError("url must not embed credentials; use headers")
    return url


class HttpLegacy:
    """The studio's own segmentation endpoint, answering the backward-compatible profile.

    ``POST url`` with JSON ``{"game_id", "player_id"}`` (or ``GET url?game_id=…&player_id=…`` with
    ``method="GET"``); ``{game_id}`` / ``{player_id}`` placeholders in the URL are filled (URL-quoted).
    Connect errors, timeouts, 408/429 and 5xx are retried with backoff ``backoff_s · 2^k``; other 4xx raise
    ``LegacyError`` at once; a body that is not JSON or not a valid profile for that player raises
    ``LegacyInvalidResponse``. Each failed call (retries exhausted, or garbage) counts once toward the
    circuit breaker; while it is open calls fail fast with ``LegacyUnavailable`` without any request.
    """

    def __init__(self, url: str, timeout_s: float = 0.5, retries: int = 2, backoff_s: float = 0.05,
                 failure_threshold: int = 5, reset_after_s: float = 30.0, client: httpx.Client | None = None, *,
                 method: Literal["GET", "POST"] = "POST", headers: Mapping[str, str] | None = None,
                 name: str = "http", max_body_bytes: int = 1_000_000,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        try:
            self.url = _check_url(url)
        except ValueError as exc:
            raise InvalidInput(f"legacy url: {exc}", field="url") from exc
        if timeout_s <= 0 or retries < 0 or backoff_s < 0:
            raise InvalidInput("timeout_s must be > 0, retries >= 0 and backoff_s >= 0")
        method = method.upper()  # type: ignore[assignment]
        if method not in ("GET", "POST"):
            raise InvalidInput("method must be GET or POST", field="method")
        self.method = method
        self.timeout_s = float(timeout_s)
        self.retries = int(retries)
        self.backoff_s = float(backoff_s)
        self.headers = dict(headers or {})
        self.name = name
        self.max_body_bytes = int(max_body_bytes)
        self.breaker = CircuitBreaker(failure_threshold, reset_after_s, clock)
        self._sleep = sleep
        self._owns_client = client is None
        self._client = client if client is not None else httpx.Client(follow_redirects=False)
        self._stats_lock = threading.Lock()
        self.stats = {"calls": 0, "requests": 0, "retries": 0, "failures": 0, "invalid": 0, "rejected_open": 0}

    # -- budget -----------------------------------------------------------------------------------

    @property
    def max_latency_s(self) -> float:
        """Upper bound of one call's time budget: ``timeout × (retries+1) + Σ backoff``."""
        return self.timeout_s * (self.retries + 1) + sum(self.backoff_s * 2**k for k in range(self.retries))

    def _count(self, key: str, n: int = 1) -> None:
        with self._stats_lock:
            self.stats[key] += n

    # -- the call ---------------------------------------------------------------------------------

    def profile(self, game_id: str, player_id: str) -> CompatProfile:
        self._count("calls")
        if not self.breaker.allow():
            self._count("rejected_open")
            wait = self.breaker.retry_after_s()
            raise LegacyUnavailable(f"legacy {self.name!r} circuit breaker is open; failing fast "
                                    f"(retry in ~{wait:.1f}s)", retry_after_s=round(wait, 3))
        failure = True
        try:
            content = self._fetch(game_id, player_id)
            prof = self._parse(content, player_id)
            failure = False
            return prof
        except LegacyInvalidResponse:
            self._count("invalid")
            raise
        except LegacyUnavailable:
            raise
        except LegacyError:
            failure = False  # a 4xx: the endpoint is alive and answered; not a breaker failure
            raise
        finally:
            if failure:
                self._count("failures")
                self.breaker.record_failure()
            else:
                self.breaker.record_success()

    def _target(self, game_id: str, player_id: str) -> str:
        if "{" not in self.url:
            return self.url
        return self.url.replace("{game_id}", quote(game_id, safe="")).replace("{player_id}", quote(player_id, safe=""))

    def _fetch(self, game_id: str, player_id: str) -> bytes:
        start = time.monotonic()
        deadline = start + self.max_latency_s
        last = "no attempt made"
        attempts = 0
        for attempt in range(self.retries + 1):
            if attempt:
                self._count("retries")
                pause = min(self.backoff_s * 2 ** (attempt - 1), max(0.0, deadline - time.monotonic()))
                if pause > 0:
                    self._sleep(pause)
            remaining = deadline - time.monotonic()
            if remaining <= 0.001:
                break
            attempts += 1
            t = min(self.timeout_s, remaining)
            try:
                status, content = self._request_once(game_id, player_id, t)
            except httpx.TimeoutException:
                last = f"timed out after {t:.3g}s"
                continue
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
                continue
            except _BodyTooLarge as exc:
                raise LegacyInvalidResponse(f"legacy {self.name!r} answered a body over {self.max_body_bytes} "
                                            "bytes") from exc
            if status >= 500 or status in RETRYABLE_STATUS:
                last = f"HTTP {status}"
                continue
            if status >= 400:
                raise LegacyError(f"legacy {self.name!r} answered HTTP {status}", upstream_status=status)
            if not 200 <= status < 300:
                raise LegacyInvalidResponse(f"legacy {self.name!r} answered unexpected HTTP {status}",
                                            upstream_status=status)
            return content
        elapsed = time.monotonic() - start
        raise LegacyUnavailable(f"legacy {self.name!r} unavailable after {attempts} attempt(s) in "
                                f"{elapsed:.2f}s: {last}", attempts=attempts)

    def _request_once(self, game_id: str, player_id: str, timeout: float) -> tuple[int, bytes]:
        self._count("requests")
        started = time.monotonic()
        kwargs: dict[str, Any] = {"headers": self.headers, "timeout": httpx.Timeout(timeout)}
        if self.method == "GET":
            kwargs["params"] = {"game_id": game_id, "player_id": player_id}
        else:
            kwargs["json"] = {"game_id": game_id, "player_id": player_id}
        with self._client.stream(self.method, self._target(game_id, player_id), **kwargs) as resp:
            if resp.status_code >= 300:
                return resp.status_code, b""
            buf = bytearray()
            for chunk in resp.iter_bytes():
                buf += chunk
                if len(buf) > self.max_body_bytes:
                    raise _BodyTooLarge()
                if time.monotonic() - started > timeout:  # a trickling body must not outlive the attempt
                    raise httpx.ReadTimeout("body exceeded the attempt's timeout")
            return resp.status_code, bytes(buf)

    def _parse(self, content: bytes, player_id: str) -> CompatProfile:
        try:
            data = json.loads(content)
        except (ValueError, UnicodeDecodeError) as exc:
            snippet = content[:60].decode("utf-8", "replace")
            raise LegacyInvalidResponse(f"legacy {self.name!r} answered a non-JSON body: {snippet!r}") from exc
        if not isinstance(data, dict):
            raise LegacyInvalidResponse(f"legacy {self.name!r} answered JSON {type(data).__name__}, "
                                        "expected an object")
        try:
            prof = CompatProfile.model_validate({**data, "served_by": "legacy", "fallback": False})
        except ValidationError as exc:
            errs = [{"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()[:5]]
            summary = "; ".join(f"{e['field']}: {e['message']}" for e in errs)
            raise LegacyInvalidResponse(f"legacy {self.name!r} answer is not a valid profile: {summary}",
                                        errors=errs) from exc
        if prof.player_id != player_id:
            raise LegacyInvalidResponse(f"legacy {self.name!r} answered for player {prof.player_id!r}, "
                                        f"asked {player_id!r}")
        return prof

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> HttpLegacy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------------------------------- config


class _BuiltinConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["builtin"]
    name: str = "builtin"
    threshold: Annotated[float, Field(gt=0, le=100)] | None = None


class _HttpConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["http"]
    url: str
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 0.5
    retries: Annotated[int, Field(ge=0, le=10)] = 2
    backoff_s: Annotated[float, Field(ge=0, le=10)] = 0.05
    failure_threshold: Annotated[int, Field(ge=1, le=1000)] = 5
    reset_after_s: Annotated[float, Field(gt=0, le=86400)] = 30.0
    method: Literal["GET", "POST"] = "POST"
    headers: dict[str, str] = Field(default_factory=dict)
    name: str = "http"

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return _check_url(v)

    @field_validator("method", mode="before")
    @classmethod
    def _method(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v


def _legacy_model(config: Mapping[str, Any]) -> _BuiltinConfig | _HttpConfig:
    """Validate; raises ``ValueError`` (for use inside pydantic validators)."""
    if not isinstance(config, Mapping):
        raise ValueError("legacy config must be an object")
    kind = config.get("type", "builtin")
    data = {**config, "type": kind}
    if kind == "builtin":
        return _BuiltinConfig.model_validate(data)
    if kind == "http":
        return _HttpConfig.model_validate(data)
    raise ValueError(f"legacy type must be 'builtin' or 'http', got {kind!r}")


def _errors(exc: ValidationError) -> list[dict[str, str]]:
    return [{"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()[:10]]


def validate_legacy_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The normalized legacy config (defaults filled in); raises ``InvalidInput`` when it is not valid."""
    try:
        return _legacy_model(config).model_dump()
    except ValidationError as exc:
        raise InvalidInput("invalid legacy config: " + "; ".join(f"{e['field']}: {e['message']}"
                                                                 for e in _errors(exc)), errors=_errors(exc)) from exc
    except ValueError as exc:
        raise InvalidInput(f"invalid legacy config: {exc}", field="legacy") from exc


def redact_legacy_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config with header values masked (for GET answers and audit logs)."""
    out = dict(config)
    if isinstance(out.get("headers"), Mapping):
        out["headers"] = {k: "***" for k in out["headers"]}
    return out


def legacy_from_config(config: Mapping[str, Any], *, builtin_factory: Callable[[dict[str, Any]], LegacySystem],
                       client: httpx.Client | None = None) -> LegacySystem:
    """Build the legacy system a stored config describes.

    ``{"type": "builtin", "threshold"?}`` → ``builtin_factory(normalized_config)``;
    ``{"type": "http", "url", "timeout_s"?, "retries"?, "backoff_s"?, "failure_threshold"?, "reset_after_s"?,
    "method"?, "headers"?}`` → ``HttpLegacy`` (sharing ``client`` when given).
    """
    cfg = validate_legacy_config(config)
    if cfg["type"] == "builtin":
        return builtin_factory(cfg)
    return HttpLegacy(cfg["url"], timeout_s=cfg["timeout_s"], retries=cfg["retries"], backoff_s=cfg["backoff_s"],
                      failure_threshold=cfg["failure_threshold"], reset_after_s=cfg["reset_after_s"],
                      client=client, method=cfg["method"], headers=cfg["headers"], name=cfg["name"])


class LegacyPool:
    """Built legacy systems cached per game (rebuilt when the game's config changes), so an HTTP legacy's
    circuit breaker keeps its state across requests. ``builtin_factory(game_id, config)``."""

    def __init__(self, builtin_factory: Callable[[str, dict[str, Any]], LegacySystem],
                 client: httpx.Client | None = None) -> None:
        self._factory = builtin_factory
        self._client = client
        self._lock = threading.Lock()
        self._items: dict[str, tuple[str, LegacySystem]] = {}

    def get(self, game_id: str, config: Mapping[str, Any]) -> LegacySystem:
        key = json.dumps(validate_legacy_config(config), sort_keys=True)
        with self._lock:
            hit = self._items.get(game_id)
            if hit is not None and hit[0] == key:
                return hit[1]
            system = legacy_from_config(config, builtin_factory=lambda cfg: self._factory(game_id, cfg),
                                        client=self._client)
            self._items[game_id] = (key, system)
        if hit is not None and isinstance(hit[1], HttpLegacy):
            hit[1].close()
        return system

    def close(self) -> None:
        with self._lock:
            items, self._items = list(self._items.values()), {}
        for _, system in items:
            if isinstance(system, HttpLegacy):
                system.close()
