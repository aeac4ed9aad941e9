"""The HTTP routes. Each one translates: validate the request, make one services call, render the answer.

``ROUTERS`` is in matching order, hottest first (scoring), each included directly in the app: FastAPI
tries routers in order, so the per-request routing cost of the categorize / detect paths stays small.
"""

from __future__ import annotations

from fastapi import APIRouter

from . import games, ingest, rollout, scoring, system, taxonomy

ROUTERS: tuple[APIRouter, ...] = (
    scoring.router,
    ingest.router,
    rollout.router,
    taxonomy.router,
    games.router,
    system.router,
)

__all__ = ["ROUTERS"]
