"""Versioned taxonomies: save, activate (rollback), load field for field."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from unified_segmentation.errors import GameNotFound, NoTaxonomy, TaxonomyNotFound
from unified_segmentation.storage import repositories as repo
from unified_segmentation.storage.models import (
    BehavioralAxis,
    GameBehavioralTaxonomy,
    SegmentDefinition,
    TaxonomyVersion,
)

TaxonomyFactory = Callable[..., dict[str, Any]]


def test_save_twice_then_rollback(db_session: Session, game: str, taxonomy_dict: TaxonomyFactory) -> None:
    assert repo.next_version(db_session, game) == 1
    assert repo.active_version(db_session, game) is None
    v1 = repo.save_taxonomy(db_session, game, taxonomy_dict(), data_fingerprint="abc")
    v2 = repo.save_taxonomy(db_session, game, taxonomy_dict(shift=0.5))
    assert (v1, v2) == (1, 2)
    assert repo.active_version(db_session, game) == 2
    assert repo.load_taxonomy(db_session, game)["taxonomy_version"] == 2

    repo.activate_version(db_session, game, 1)  # rollback
    assert repo.active_version(db_session, game) == 1
    assert repo.load_taxonomy(db_session, game)["variance_explained"] == taxonomy_dict()["variance_explained"]
    statuses = dict(db_session.execute(select(TaxonomyVersion.version, TaxonomyVersion.status)).all())
    assert statuses == {1: "active", 2: "inactive"}
    summary = db_session.get(GameBehavioralTaxonomy, game, populate_existing=True)
    assert summary is not None
    assert (summary.active_version, summary.total_axes_count, summary.total_segments_count) == (1, 3, 6)
    assert summary.universal_axes == taxonomy_dict()["universal_axes"]

    versions = repo.list_versions(db_session, game)
    assert [(v["version"], v["status"]) for v in versions] == [(2, "inactive"), (1, "active")]
    assert versions[1]["data_fingerprint"] == "abc"
    assert versions[0]["variance_explained"] == pytest.approx(taxonomy_dict()["variance_explained"] + 0.5)


def test_load_taxonomy_field_for_field(
    db_session: Session, game: str, taxonomy_dict: TaxonomyFactory
) -> None:
    original = taxonomy_dict()
    version = repo.save_taxonomy(db_session, game, original)
    db_session.expire_all()
    loaded = repo.load_taxonomy(db_session, game, version)
    assert loaded == {**original, "taxonomy_version": version}
    # floats bit for bit, ints stay ints
    assert loaded["variance_explained"].hex() == original["variance_explained"].hex()
    assert loaded["model"]["scalers"]["spend_per_day"]["scale"] == 1e-300
    assert loaded["model"]["big_int"] == 2**53 + 1
    assert repo.load_taxonomy(db_session, game) == loaded


def test_save_writes_axes_and_segments(
    db_session: Session, game: str, taxonomy_dict: TaxonomyFactory
) -> None:
    version = repo.save_taxonomy(db_session, game, taxonomy_dict(), activate=False)
    assert repo.active_version(db_session, game) is None
    axes = db_session.scalars(
        select(BehavioralAxis)
        .where(BehavioralAxis.taxonomy_version == version)
        .order_by(BehavioralAxis.axis_id)
    ).all()
    assert [(a.axis_id, a.axis_type, a.segment_count) for a in axes] == [
        ("engagement", "universal", 2),
        ("gs_quest", "game_specific", 2),
        ("monetization", "universal", 2),
    ]
    assert axes[1].variance_explained_null is None
    segments = db_session.scalars(select(SegmentDefinition).order_by(SegmentDefinition.segment_id)).all()
    assert [s.segment_name for s in segments] == [
        "non_payer",
        "whale",
        "casual",
        "hardcore",
        "quest_low",
        "quest_high",
    ]
    whale = segments[1]
    assert whale.axis_id == "monetization"
    assert whale.covariance_matrix["metrics"] == ["spend_per_day", "purchases_per_day"]
    assert whale.contextual_centers["holiday"] is None
    assert whale.support_tickets_per_player is None


def test_numpy_values_are_stored_as_json(
    db_session: Session, game: str, taxonomy_dict: TaxonomyFactory
) -> None:
    tax = taxonomy_dict()
    tax["variance_explained"] = np.float64(0.5)
    tax["universal_axes"][0]["segments"][0]["center_position"] = {"spend_per_day": np.float32(0.25)}
    tax["model"]["thresholds"] = {"monetization": np.array([1.0, 2.0])}
    tax["model"]["nan_is_null"] = float("nan")
    version = repo.save_taxonomy(db_session, game, tax)
    loaded = repo.load_taxonomy(db_session, game, version)
    assert loaded["variance_explained"] == 0.5
    assert loaded["model"]["thresholds"] == {"monetization": [1.0, 2.0]}
    assert loaded["model"]["nan_is_null"] is None


def test_taxonomy_errors(db_session: Session, game: str, taxonomy_dict: TaxonomyFactory) -> None:
    with pytest.raises(GameNotFound):
        repo.load_taxonomy(db_session, "nope")
    with pytest.raises(GameNotFound):
        repo.save_taxonomy(db_session, "nope", taxonomy_dict())
    with pytest.raises(NoTaxonomy):
        repo.load_taxonomy(db_session, game)
    repo.save_taxonomy(db_session, game, taxonomy_dict())
    with pytest.raises(TaxonomyNotFound):
        repo.load_taxonomy(db_session, game, 7)
    with pytest.raises(TaxonomyNotFound):
        repo.activate_version(db_session, game, 7)
    with pytest.raises(ValueError):
        repo.save_taxonomy(db_session, game, {**taxonomy_dict(), "game_id": "someone_else"})
