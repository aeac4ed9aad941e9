"""Versioned taxonomies.

``taxonomy_versions.params`` keeps the whole taxonomy dict (DESIGN §6 "Taxonomy JSON") so that
:func:`load_taxonomy` gives it back field for field; ``behavioral_axes`` and
``segment_definitions`` hold its axes and segments as rows (queryable, the seed's tables), and
``game_behavioral_taxonomy`` describes the active version. A save writes all of them in the
caller's transaction, so readers see either the old or the new version, never half of one.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import orjson
from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from ...errors import GameNotFound, NoTaxonomy, TaxonomyNotFound
from .. import _bulk
from ..db import json_dumps
from ..models import (
    BehavioralAxis,
    Game,
    GameBehavioralTaxonomy,
    SegmentDefinition,
    TaxonomyVersion,
    utcnow,
)
from .games import lock_game

__all__ = [
    "activate_version",
    "active_version",
    "list_versions",
    "load_taxonomy",
    "next_version",
    "save_taxonomy",
]

_SEGMENT_FIELDS = (
    "segment_name",
    "center_position",
    "standard_deviations",
    "covariance_matrix",
    "contextual_centers",
    "population_percentage",
    "ltv_mean",
    "churn_rate",
    "support_tickets_per_player",
    "ltv_correlation",
    "churn_correlation",
    "support_risk_correlation",
)


def _jsonable(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A plain-JSON deep copy: numpy values become Python numbers, datetimes ISO-8601 text, NaN null."""
    return orjson.loads(json_dumps(dict(obj)))


def _parse_time(value: Any) -> dt.datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        return _bulk.as_utc(value)
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
    return _bulk.as_utc(dt.datetime.fromisoformat(str(value)))


def _axes(params: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for key, axis_type in (("universal_axes", "universal"), ("game_specific_axes", "game_specific")):
        for axis in params.get(key) or []:
            out.append((axis.get("axis_type") or axis_type, axis))
    return out


def next_version(session: Session, game_id: str) -> int:
    """The number the game's next calibration gets (1 for the first)."""
    current = session.scalar(
        select(TaxonomyVersion.version)
        .where(TaxonomyVersion.game_id == game_id)
        .order_by(TaxonomyVersion.version.desc())
        .limit(1)
    )
    return (current or 0) + 1


def save_taxonomy(
    session: Session,
    game_id: str,
    taxonomy: Mapping[str, Any],
    *,
    activate: bool = True,
    data_fingerprint: str | None = None,
) -> int:
    """Store a calibrated taxonomy as the game's next version; returns the version number.

    The stored dict is a JSON copy of ``taxonomy`` with ``taxonomy_version`` set to the new number
    (and ``game_id`` added if absent). Axes and segments are written as rows too; with ``activate``
    the version becomes the active one. Raises :class:`GameNotFound` for an unknown game.
    """
    lock_game(session, game_id)
    version = next_version(session, game_id)
    params = _jsonable(taxonomy)
    params.setdefault("game_id", game_id)
    if params["game_id"] != game_id:
        raise ValueError(f"taxonomy is for game {params['game_id']!r}, not {game_id!r}")
    params["taxonomy_version"] = version

    session.execute(
        insert(TaxonomyVersion).values(
            game_id=game_id,
            version=version,
            as_of=_parse_time(params.get("as_of")),
            created_at=utcnow(),
            status="inactive",
            params=params,
            data_fingerprint=data_fingerprint,
        )
    )
    axis_rows: list[dict[str, Any]] = []
    segment_rows: list[dict[str, Any]] = []
    for axis_type, axis in _axes(params):
        axis_id = str(axis.get("axis_id") or axis.get("axis_name"))
        segments = axis.get("segments") or []
        axis_rows.append(
            {
                "game_id": game_id,
                "taxonomy_version": version,
                "axis_id": axis_id,
                "axis_name": axis.get("axis_name") or axis_id,
                "axis_type": axis_type,
                "defining_metrics": axis.get("defining_metrics"),
                "segment_count": axis.get("segment_count", len(segments)),
                "variance_explained": axis.get("variance_explained"),
                "variance_explained_null": axis.get("variance_explained_null"),
                "degenerate": bool(axis.get("degenerate", False)),
            }
        )
        for segment in segments:
            row = {"game_id": game_id, "taxonomy_version": version, "axis_id": axis_id}
            row["segment_id"] = int(segment["segment_id"])
            row.update({f: segment.get(f) for f in _SEGMENT_FIELDS})
            segment_rows.append(row)
    if axis_rows:
        session.execute(insert(BehavioralAxis), axis_rows)
    if segment_rows:
        session.execute(insert(SegmentDefinition), segment_rows)
    if activate:
        _activate(session, game_id, version, params)
    return version


def activate_version(session: Session, game_id: str, version: int) -> dict[str, Any]:
    """Make ``version`` the game's active taxonomy (rollback = activating an older one); returns
    its dict. Raises :class:`TaxonomyNotFound` if the game has no such version."""
    lock_game(session, game_id)
    params = session.scalar(
        select(TaxonomyVersion.params).where(
            TaxonomyVersion.game_id == game_id, TaxonomyVersion.version == version
        )
    )
    if params is None:
        raise TaxonomyNotFound(f"game {game_id!r} has no taxonomy version {version}", game_id=game_id)
    _activate(session, game_id, version, params)
    return params


def _activate(session: Session, game_id: str, version: int, params: Mapping[str, Any]) -> None:
    # Two statements: a unique index is checked row by row, so the old active row goes first.
    session.execute(
        update(TaxonomyVersion)
        .where(
            TaxonomyVersion.game_id == game_id,
            TaxonomyVersion.status == "active",
            TaxonomyVersion.version != version,
        )
        .values(status="inactive")
    )
    session.execute(
        update(TaxonomyVersion)
        .where(TaxonomyVersion.game_id == game_id, TaxonomyVersion.version == version)
        .values(status="active")
    )
    axes = _axes(params)
    summary = {
        "universal_axes": params.get("universal_axes") or [],
        "game_specific_axes": params.get("game_specific_axes") or [],
        "total_axes_count": params.get("total_axes_count", len(axes)),
        "total_segments_count": params.get(
            "total_segments_count", sum(len(a.get("segments") or []) for _, a in axes)
        ),
        "variance_explained": params.get("variance_explained"),
        "last_calibrated": _parse_time(params.get("last_calibrated")),
        "active_version": version,
    }
    stmt = _bulk.dialect_insert(session)(GameBehavioralTaxonomy).values(game_id=game_id, **summary)
    session.execute(stmt.on_conflict_do_update(index_elements=["game_id"], set_=summary))


def active_version(session: Session, game_id: str) -> int | None:
    """The game's active taxonomy version, or ``None`` (one primary-key look-up)."""
    return session.scalar(
        select(GameBehavioralTaxonomy.active_version).where(GameBehavioralTaxonomy.game_id == game_id)
    )


def load_taxonomy(session: Session, game_id: str, version: int | None = None) -> dict[str, Any]:
    """The stored taxonomy dict of ``version`` (default: the active one), as saved.

    Raises :class:`GameNotFound`, :class:`NoTaxonomy` (no version yet / none active) or
    :class:`TaxonomyNotFound` (no such version).
    """
    if version is None:
        version = active_version(session, game_id)
        if version is None:
            if session.get(Game, game_id) is None:
                raise GameNotFound(f"unknown game {game_id!r}", game_id=game_id)
            raise NoTaxonomy(f"game {game_id!r} has no calibrated taxonomy yet", game_id=game_id)
    params = session.scalar(
        select(TaxonomyVersion.params).where(
            TaxonomyVersion.game_id == game_id, TaxonomyVersion.version == version
        )
    )
    if params is None:
        if session.get(Game, game_id) is None:
            raise GameNotFound(f"unknown game {game_id!r}", game_id=game_id)
        raise TaxonomyNotFound(f"game {game_id!r} has no taxonomy version {version}", game_id=game_id)
    return params


def list_versions(session: Session, game_id: str) -> list[dict[str, Any]]:
    """One summary per stored version, newest first: ``version, status, as_of, created_at,
    data_fingerprint, variance_explained, total_axes_count, total_segments_count``."""
    rows = session.execute(
        select(TaxonomyVersion)
        .where(TaxonomyVersion.game_id == game_id)
        .order_by(TaxonomyVersion.version.desc())
        .execution_options(populate_existing=True)
    ).scalars()
    out = []
    for row in rows:
        params = row.params or {}
        out.append(
            {
                "version": row.version,
                "status": row.status,
                "as_of": row.as_of,
                "created_at": row.created_at,
                "data_fingerprint": row.data_fingerprint,
                "variance_explained": params.get("variance_explained"),
                "total_axes_count": params.get("total_axes_count"),
                "total_segments_count": params.get("total_segments_count"),
            }
        )
    return out
