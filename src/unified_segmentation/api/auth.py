"""API keys, scopes, per-game restriction and per-key rate limits.

Scopes are ranked, each including the ones below it: **admin ⊇ write ⊇ read**.

* ``read``  — every GET, plus the scoring POSTs (categorize, detect, profile; single and batch);
* ``write`` — ingestion (``/api/v1/events``, ``/daily``, ``/outcomes``);
* ``admin`` — every other POST / PUT / DELETE (calibrate, rollback, settings, erasure, rollout, validate).

A key may be restricted to a list of games: naming another game answers 403. Keys are sent as
``Authorization: Bearer <key>`` or ``X-API-Key: <key>`` and checked by ``services.authenticate`` (hashed at
rest); a verified key is remembered for :data:`CACHE_TTL_S` seconds per process, so a revoked key stops
working within that time.

Keys are required when the settings say so (``Settings.auth_required``: binding beyond loopback, or
``USEG_AUTH=required``); otherwise every request runs as an anonymous admin and keys are ignored.
``/health*``, ``/docs`` and ``/openapi.json`` never ask for one; ``/metrics`` asks for
``USEG_METRICS_TOKEN`` when it is set.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer, SecurityScopes
from fastapi.security.utils import get_authorization_scheme_param
from starlette.concurrency import run_in_threadpool

from unified_segmentation.errors import Forbidden, RateLimited, Unauthorized
from unified_segmentation.services import ops

from . import idempotency

SCOPE_RANK = {"read": 1, "write": 2, "admin": 3}
CACHE_TTL_S = 10.0
_CACHE_MAX = 10_000


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a key's id, scope and game restriction (``None`` = every game)."""

    key_id: int | None
    scope: str
    games: frozenset[str] | None = None
    anonymous: bool = False

    @property
    def actor(self) -> str:
        """The name written to audit trails."""
        return "anonymous" if self.anonymous else f"api-key:{self.key_id}"

    def allows(self, scope: str) -> bool:
        return SCOPE_RANK.get(self.scope, 0) >= SCOPE_RANK[scope]

    def check_game(self, game_id: str) -> None:
        """Raise 403 when the key is restricted to other games."""
        if self.games is not None and game_id not in self.games:
            raise Forbidden(f"this API key may not access game {game_id!r}")


OPEN = Principal(key_id=None, scope="admin", anonymous=True)


def lease_size(limit_per_minute: int) -> int:
    """Calls a process reserves at a time: 1 % of the limit (1 under 200 a minute). At the end of a
    minute a key may be refused up to (processes × lease) calls before its limit: those leased to other
    processes and not used."""
    return max(1, limit_per_minute // 100)


class Authenticator:
    """Resolves presented keys to principals and enforces the per-key rate limit."""

    def __init__(self, services: Any, *, required: bool, rate_limit_per_minute: int = 0,
                 metrics_token: str | None = None) -> None:
        self.services = services
        self.required = required
        self.rate_limit_per_minute = rate_limit_per_minute
        self.metrics_token = metrics_token
        self._cache: dict[str, tuple[float, Principal]] = {}
        self._leases: dict[int, list] = {}  # key id -> [minute, calls left, the database granted nothing]
        self._lease_locks: dict[int, asyncio.Lock] = {}

    async def resolve(self, key: str | None) -> Principal:
        if not self.required:
            return OPEN
        if not key:
            raise Unauthorized("an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'")
        digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        info = await run_in_threadpool(self.services.authenticate, key)
        if not info:
            raise Unauthorized("invalid or revoked API key")
        games = info.get("games")
        principal = Principal(key_id=int(info["id"]), scope=str(info["scope"]),
                              games=frozenset(games) if games is not None else None)
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[digest] = (now + CACHE_TTL_S, principal)
        return principal

    async def enforce_rate_limit(self, principal: Principal) -> None:
        """Count the call against its key's per-minute limit, shared by every process through the database.

        A process reserves a lease of :func:`lease_size` calls at a time (one atomic statement) and counts
        its calls against it in memory, so a busy key costs a statement per lease, not per call; once the
        database grants nothing more this minute, the process answers 429 without asking again until the
        minute ends. Small limits (under 200 a minute) lease one call at a time: exact, as before.
        """
        limit = self.rate_limit_per_minute
        if principal.anonymous or principal.key_id is None or limit <= 0:
            return
        key_id = principal.key_id
        if self._take_leased(key_id):
            return
        lock = self._lease_locks.setdefault(key_id, asyncio.Lock())
        async with lock:  # one reservation at a time per key in this process
            if self._take_leased(key_id):
                return
            lease = self._leases.get(key_id)
            if lease is None or lease[0] != ops.current_window() or not lease[2]:  # not exhausted this minute
                window, granted = await run_in_threadpool(self.services.rate_limit_take, key_id, limit,
                                                          lease_size(limit))
                if len(self._leases) >= _CACHE_MAX:  # bounded, as the key cache (a held lock stays valid)
                    self._leases.clear()
                    self._lease_locks.clear()
                self._leases[key_id] = [window, max(granted - 1, 0), granted == 0]
                if granted:
                    return
        retry = 60 - int(time.time()) % 60
        raise RateLimited(f"rate limit of {limit} requests per minute exceeded for this key", retry_after=retry)

    def _take_leased(self, key_id: int) -> bool:
        """Use one call of this minute's lease, if it has any left."""
        lease = self._leases.get(key_id)
        if lease is not None and lease[1] > 0 and lease[0] == ops.current_window():
            lease[1] -= 1
            return True
        return False

    def check_metrics_token(self, authorization: str | None) -> None:
        if not self.metrics_token:
            return
        scheme, _, token = (authorization or "").partition(" ")
        given = token.strip().encode()
        if scheme.lower() != "bearer" or not secrets.compare_digest(given, self.metrics_token.encode()):
            raise Unauthorized("/metrics needs 'Authorization: Bearer <USEG_METRICS_TOKEN>'")


bearer_scheme = HTTPBearer(auto_error=False, description="An API key as a bearer token")
api_key_scheme = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key")


async def current_principal(
    security_scopes: SecurityScopes,
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    header_key: Annotated[str | None, Depends(api_key_scheme)],
) -> Principal:
    """Authenticate, rate-limit, then check the scope and any game named in the path or query; last, a write
    carrying ``Idempotency-Key`` claims its record (or is answered from it: see :mod:`.idempotency`)."""
    needed = max(security_scopes.scopes or ["read"], key=SCOPE_RANK.__getitem__)
    game_id = request.path_params.get("game_id") or request.query_params.get("game_id")
    principal = await authorize(request, needed, bearer.credentials if bearer else header_key, game_id)
    if idempotency.applies(request, needed) and not hasattr(request.state, idempotency.STATE_KEY):
        await idempotency.begin(request, principal)
    return principal


async def authorize(request: Request, needed: str, key: str | None, game_id: str | None) -> Principal:
    """The principal of ``key``, rate-limited, allowed scope ``needed`` and game ``game_id`` (if any)."""
    return await authorize_with(request.app.state.auth, needed, key, game_id)


async def authorize_with(auth: Authenticator, needed: str, key: str | None, game_id: str | None) -> Principal:
    """:func:`authorize` with the app's :class:`Authenticator` given (the hot routes have no ``Request``)."""
    principal = await auth.resolve(key)
    await auth.enforce_rate_limit(principal)
    if not principal.allows(needed):
        raise Forbidden(f"this API key has scope {principal.scope!r}; this call needs {needed!r}")
    if game_id is not None:
        principal.check_game(game_id)
    return principal


def presented_key(request: Request) -> str | None:
    """The key as :data:`bearer_scheme` / :data:`api_key_scheme` read it: a bearer token, else ``X-API-Key``."""
    return presented_key_in(request.headers)


def presented_key_in(headers: Mapping[str, str]) -> str | None:
    """:func:`presented_key` of these headers."""
    authorization = headers.get("authorization")
    scheme, credentials = get_authorization_scheme_param(authorization)
    if authorization and scheme and credentials and scheme.lower() == "bearer":
        return credentials
    return headers.get("x-api-key")


#: OpenAPI security of a route that checks its key with :func:`authorize_with` (as ``ReadKey`` documents it).
KEY_SECURITY: dict[str, Any] = {"security": [{"HTTPBearer": ["read"]}, {"APIKeyHeader": ["read"]}]}


ReadKey = Annotated[Principal, Security(current_principal, scopes=["read"])]
WriteKey = Annotated[Principal, Security(current_principal, scopes=["write"])]
AdminKey = Annotated[Principal, Security(current_principal, scopes=["admin"])]
