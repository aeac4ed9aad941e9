"""Memberships and typical offsets: bulk write, replace per player, reload."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import polars as pl
from sqlalchemy.orm import Session

from unified_segmentation.storage import repositories as repo


def _memberships(players: list[str], segments_per_axis: int = 2) -> pl.DataFrame:
    rows = []
    for i, player in enumerate(players):
        for axis, first_segment in (("monetization", 1), ("engagement", 3)):
            for k in range(segments_per_axis):
                rows.append(
                    {
                        "player_id": player,
                        "axis": axis,
                        "segment_id": first_segment + k,
                        "is_primary": k == 0,
                        "membership_strength": 0.9 / (k + 1),
                        "membership_probability": 0.8 if k == 0 else 0.2,
                        "typicality": 0.5 + i * 1e-3,
                        "position_offset": json.dumps({"spend_per_day": 0.1 * i, "purchases_per_day": -0.5}),
                        "distance_from_center": 1.25,
                        "confidence": 0.75,
                    }
                )
    return pl.DataFrame(rows)


def test_memberships_bulk_write_and_reload(db_session: Session, game: str) -> None:
    frame = _memberships(["a", "b", "c"])
    assert repo.bulk_write_memberships(db_session, game, 1, frame) == 12
    loaded = repo.load_memberships(db_session, game, 1)
    assert loaded.schema == pl.Schema(repo.MEMBERSHIP_SCHEMA)
    assert loaded.height == 12
    assert loaded.filter(pl.col("is_primary")).height == 6
    expected = frame.sort("player_id", "axis", "segment_id")
    for col in ("player_id", "axis", "membership_strength", "typicality", "confidence"):
        assert loaded[col].to_list() == expected[col].to_list()
    offsets = [json.loads(s) for s in loaded["position_offset"]]
    assert offsets[-1] == {"spend_per_day": 0.1 * 2, "purchases_per_day": -0.5}
    assert loaded["last_updated"].null_count() == 0
    assert repo.load_memberships(db_session, game, 2).height == 0
    assert repo.load_memberships(db_session, game, 1, ["b"]).height == 4


def test_rewrite_replaces_only_the_given_players(db_session: Session, game: str) -> None:
    repo.bulk_write_memberships(db_session, game, 1, _memberships(["a", "b"]))
    repo.bulk_write_memberships(db_session, game, 2, _memberships(["a"]))
    # player a now has one segment per axis in version 1
    repo.bulk_write_memberships(db_session, game, 1, _memberships(["a"], segments_per_axis=1))
    v1 = repo.load_memberships(db_session, game, 1)
    assert v1.group_by("player_id").len().sort("player_id").rows() == [("a", 2), ("b", 4)]
    assert repo.load_memberships(db_session, game, 2).height == 4


def test_struct_offsets_and_large_batch(db_session: Session, game: str) -> None:
    n = 3_000
    rng = np.random.default_rng(0)
    frame = pl.DataFrame(
        {
            "player_id": [f"p{i}" for i in range(n)],
            "axis": ["monetization"] * n,
            "segment_id": rng.integers(1, 3, n),
            "is_primary": [True] * n,
            "membership_strength": rng.random(n),
            "position_offset": pl.DataFrame({"spend_per_day": rng.normal(size=n)}).to_struct(),
            "last_updated": [dt.datetime(2024, 3, 1, 12)] * n,
        }
    )
    assert repo.bulk_write_memberships(db_session, game, 1, frame) == n
    loaded = repo.load_memberships(db_session, game, 1).sort("player_id")
    expected = frame.sort("player_id")
    assert loaded["membership_strength"].to_list() == expected["membership_strength"].to_list()
    decoded = loaded["position_offset"].str.json_decode(pl.Struct({"spend_per_day": pl.Float64}))
    assert (
        decoded.struct.field("spend_per_day").to_list()
        == expected["position_offset"].struct.field("spend_per_day").to_list()
    )
    assert loaded["last_updated"][0] == dt.datetime(2024, 3, 1, 12, tzinfo=dt.UTC)


def test_offsets_bulk_write_and_reload(db_session: Session, game: str) -> None:
    frame = pl.DataFrame(
        {
            "player_id": ["a", "a", "b"],
            "axis": ["monetization", "engagement", "monetization"],
            "segment_id": [1, 3, 2],
            "offset": [json.dumps({"spend_per_day": 1.5}), json.dumps({"sessions_per_day": -0.25}), None],
            "offset_model": [
                json.dumps({"spend_per_day": 0.3}),
                json.dumps({"sessions_per_day": -0.1}),
                None,
            ],
            "typical_exposure_days": [28.0, 28.0, 3.5],
        }
    )
    assert repo.bulk_write_offsets(db_session, game, 1, frame) == 3
    repo.bulk_write_offsets(db_session, game, 1, frame.filter(pl.col("player_id") == "b"))
    loaded = repo.load_offsets(db_session, game, 1)
    assert loaded.schema == pl.Schema(repo.OFFSET_SCHEMA)
    assert loaded.select("player_id", "axis", "segment_id", "typical_exposure_days").rows() == [
        ("a", "engagement", 3, 28.0),
        ("a", "monetization", 1, 28.0),
        ("b", "monetization", 2, 3.5),
    ]
    assert json.loads(loaded["offset"][1]) == {"spend_per_day": 1.5}
    assert loaded["offset"][2] is None
    assert repo.load_offsets(db_session, game, 1, player_ids=["a"]).height == 2
