"""``Idempotency-Key`` on write routes: the first answer is stored and replayed byte for byte.

Every POST / PUT / PATCH / DELETE that needs a **write** or **admin** key (ingestion, calibrate, rollback,
settings, rollout, validation, erasure) honours the header; the scoring POSTs (read scope) ignore it.

1. After authentication, rate limit and scope checks (:func:`begin`, called by ``current_principal``), the
   request claims the record ``(caller, method, path, key)`` in ``idempotency_keys``; the claim is an
   ``INSERT … ON CONFLICT DO NOTHING`` on the primary key, so of two concurrent duplicates exactly one runs.
2. :class:`IdempotencyMiddleware` holds the answer back until it is stored (status < 500), then sends
   it. A 5xx or a crash releases the claim, so a retry runs again.
3. A repeat with the same method, path, query and body gets the stored status, headers and body again,
   plus ``Idempotent-Replayed: true``; with a different body ``422 idempotency_key_reused``; while the
   first is still running ``409 idempotency_in_progress``.

Records expire after ``USEG_IDEMPOTENCY_TTL_S`` (24 h); a claim whose request never finished (its worker
died) can be taken over after ``USEG_CALIBRATE_WAIT_S`` + :data:`STALE_MARGIN_S`. Keys are scoped to the
API key (or ``anonymous`` when the server runs open), so two callers never see each other's answers.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import threading
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from unified_segmentation.errors import InvalidInput, UsegError

if TYPE_CHECKING:
    from .auth import Principal

log = logging.getLogger("unified_segmentation.api")

HEADER = "idempotency-key"
REPLAYED_HEADER = (b"idempotent-replayed", b"true")
STATE_KEY = "useg_idempotency"
#: Beyond ``USEG_CALIBRATE_WAIT_S``, how long an unfinished claim is honoured before another request may
#: take it over (the request holding it must have died).
STALE_MARGIN_S = 300.0
_VALID_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class IdempotencyKeyReused(UsegError):
    code = "idempotency_key_reused"
    status = 422


class IdempotencyInProgress(UsegError):
    code = "idempotency_in_progress"
    status = 409


class IdempotentReplay(Exception):  # noqa: N818 - not an error: the stored answer, raised to short-circuit
    """Raised by :func:`begin` to answer with a stored response (rendered by :func:`replay_handler`)."""

    def __init__(self, stored: dict[str, Any]) -> None:
        super().__init__("idempotent replay")
        self.stored = stored


@dataclass
class Claim:
    """This request owns the record ``(key, game_id)``; ``record`` is its in-progress content."""

    services: Any
    key: str
    game_id: str
    record: dict[str, Any]
    settled: bool = False


def applies(request: Request, needed_scope: str) -> bool:
    return (needed_scope != "read" and request.method in _WRITE_METHODS
            and HEADER in request.headers and hasattr(request.app.state.services, "idempotency_claim"))


async def begin(request: Request, principal: Principal) -> None:
    """Claim this request's idempotency record, or raise: replay, key reused, or still in progress."""
    raw = request.headers[HEADER]
    if not _VALID_KEY.match(raw):
        raise InvalidInput("Idempotency-Key must be 1 to 255 visible ASCII characters", field="header idempotency-key")
    body = await request.body()
    method, path = request.method, request.url.path
    digest = hashlib.sha256()
    for part in (method.encode(), path.encode(), request.url.query.encode()):
        digest.update(part + b"\n")
    digest.update(body)
    key = hashlib.sha256(f"{principal.actor}\n{method}\n{path}\n{raw}".encode()).hexdigest()
    game_id = str(request.path_params.get("game_id") or "")[:100]
    record = {"v": 1, "state": "in_progress", "claim": uuid.uuid4().hex, "request_hash": digest.hexdigest(),
              "method": method, "path": path, "principal": principal.actor, "idempotency_key": raw}
    settings = request.app.state.settings
    services = request.app.state.services
    outcome, stored = await run_in_threadpool(
        services.idempotency_claim, key, game_id, record, ttl_s=float(settings.idempotency_ttl_s),
        stale_s=float(settings.calibrate_wait_s) + STALE_MARGIN_S)
    if outcome == "new":
        request.state.useg_idempotency = Claim(services, key, game_id, record)
        return
    stored = stored or {}
    if outcome == "replay":
        raise IdempotentReplay(stored)
    first = f"{stored.get('method', method)} {stored.get('path', path)}"
    if outcome == "mismatch":
        raise IdempotencyKeyReused(f"Idempotency-Key {raw!r} was already used for a different request ({first} "
                                   "with another body or query); send a new key for a new request")
    raise IdempotencyInProgress(f"a request with Idempotency-Key {raw!r} ({first}) is still being processed; "
                                "retry in a moment to get its answer")


async def replay_handler(request: Request, exc: Exception) -> Response:
    stored = exc.stored if isinstance(exc, IdempotentReplay) else {}
    raw_body = stored.get("body") or ""
    body = base64.b64decode(raw_body) if stored.get("body_encoding") == "base64" else raw_body.encode()
    response = Response(content=body, status_code=int(stored.get("status", 200)))
    response.raw_headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in stored.get("headers", ())]
    response.raw_headers.append(REPLAYED_HEADER)
    return response


def _answer_record(claim: Claim, start: Message, body: bytes) -> dict[str, Any]:
    try:
        text, encoding = body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(body).decode(), "base64"
    headers = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in start.get("headers", ())]
    return {**claim.record, "state": "done", "status": int(start["status"]), "headers": headers, "body": text,
            "body_encoding": encoding}


def _release_in_background(claim: Claim) -> None:
    """Drop the claim without awaiting (usable while the request is being cancelled)."""
    claim.settled = True

    def release() -> None:
        try:
            claim.services.idempotency_settle(claim.key, claim.game_id, claim.record["claim"], None)
        except Exception:  # noqa: BLE001 - the claim goes stale and is taken over later
            log.warning("could not release an idempotency claim", exc_info=True)

    threading.Thread(target=release, name="useg-idempotency-release", daemon=True).start()


class IdempotencyMiddleware:
    """Stores the answer of a request that claimed an idempotency record before sending it.

    Innermost of the service's middleware (it sees the answers of the error handlers); a request without
    a claim passes straight through.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in _WRITE_METHODS:
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        start: Message | None = None
        chunks: list[bytes] = []
        holding = False

        async def hold(message: Message) -> None:
            nonlocal start, holding
            if message["type"] == "http.response.start":
                claim = state.get(STATE_KEY)
                holding = isinstance(claim, Claim) and not claim.settled
                if holding:
                    start = message
                    return
            if not holding or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = b"".join(chunks)
            await self._settle(state[STATE_KEY], start, body)
            await send(start)
            await send({"type": "http.response.body", "body": body})

        try:
            await self.app(scope, receive, hold)
        except BaseException as error:
            claim = state.get(STATE_KEY)
            if isinstance(claim, Claim) and not claim.settled:
                if isinstance(error, Exception):  # a crash: release before the 500 goes out
                    claim.settled = True
                    await self._release(claim)
                else:  # cancelled: nothing may be awaited any more
                    _release_in_background(claim)
            raise
        claim = state.get(STATE_KEY)
        if isinstance(claim, Claim) and not claim.settled:  # the app ended without a complete answer
            _release_in_background(claim)

    @staticmethod
    async def _release(claim: Claim) -> None:
        try:
            await run_in_threadpool(claim.services.idempotency_settle, claim.key, claim.game_id,
                                    claim.record["claim"], None)
        except Exception:  # noqa: BLE001 - the claim goes stale and is taken over later
            log.warning("could not release an idempotency claim", exc_info=True)

    @staticmethod
    async def _settle(claim: Claim, start: Message | None, body: bytes) -> None:
        claim.settled = True
        assert start is not None
        record = _answer_record(claim, start, body) if int(start["status"]) < 500 else None
        try:
            await run_in_threadpool(claim.services.idempotency_settle, claim.key, claim.game_id,
                                    claim.record["claim"], record)
        except Exception:  # noqa: BLE001 - the answer still goes out; the claim goes stale, a retry runs again
            log.warning("could not store an idempotent answer", exc_info=True,
                        extra={"route": claim.record.get("path")})
