"""Memberships and typical offsets: bulk write, replace per player, reload."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import polars as pl
import pytest
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


def test_prepared_write_over_a_range_replaces_the_whole_run(db_session: Session, game: str) -> None:
    """``player_range``: every stored row of the version with an id in the range goes (also a player
    the new rows no longer hold), nothing outside it or of another version; without a range only the
    listed players' rows are replaced, also for a list with an id that has no rows."""
    repo.bulk_write_memberships(db_session, game, 1, _memberships(["a", "b", "c", "d"]))
    repo.bulk_write_memberships(db_session, game, 2, _memberships(["b"]))
    prepared = repo.prepare_memberships(game, 1, _memberships(["b"], segments_per_axis=1))
    assert repo.write_prepared(db_session, prepared, player_range=("b", "c")) == 2
    counts = repo.load_memberships(db_session, game, 1).group_by("player_id").len().sort("player_id").rows()
    assert counts == [("a", 4), ("b", 2), ("d", 4)]
    assert repo.load_memberships(db_session, game, 2).height == 4
    listed = repo.prepare_memberships(game, 1, _memberships(["d", "e"], segments_per_axis=1))
    assert repo.write_prepared(db_session, listed) == 4
    counts = repo.load_memberships(db_session, game, 1).group_by("player_id").len().sort("player_id").rows()
    assert counts == [("a", 4), ("b", 2), ("d", 2), ("e", 2)]


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


def test_nulls_unicode_and_exact_floats_round_trip(db_session: Session, game: str) -> None:
    """The PostgreSQL write is a binary COPY encoded column by column: NULLs in any nullable column,
    non-ASCII ids, JSON nulls and floats at the edges of the range come back exactly."""
    values = [0.1, -1e-300, 1.2345678901234567e300, 1.5, 5e-324]
    frame = pl.DataFrame(
        {
            "player_id": ["é-joueur", "玩家", "p'; DROP TABLE x; --", "b", "c"],
            "axis": ["monetization", "engagement", "monetization", "social", "social"],
            "segment_id": [1, 3, 2, 5, 6],
            "is_primary": [True, False, True, True, False],
            "membership_strength": values,
            "membership_probability": [None, 0.5, None, 0.25, None],
            "typicality": [0.5, None, 0.5, None, 0.5],
            "position_offset": [json.dumps({"spend_per_day": v}) for v in (0.1, -1e-300, 2.5)] + [None, '{"x": null}'],
            "distance_from_center": [None] * 5,
            "confidence": values[::-1],
            "last_updated": [dt.datetime(1999, 12, 31, 23, 59, 59, 999_999, tzinfo=dt.UTC)] * 5,
        },
        schema_overrides={"distance_from_center": pl.Float64},
    )
    assert repo.bulk_write_memberships(db_session, game, 1, frame) == 5
    loaded = repo.load_memberships(db_session, game, 1).sort("player_id")
    expected = frame.sort("player_id")
    for col in ("player_id", "axis", "segment_id", "is_primary", "membership_probability", "typicality",
                "distance_from_center", "last_updated"):
        assert loaded[col].to_list() == expected[col].to_list(), col
    for col in ("membership_strength", "confidence"):  # bit for bit
        assert loaded[col].to_numpy().tobytes() == expected[col].to_numpy().tobytes(), col
    decoded = [None if s is None else json.loads(s) for s in loaded["position_offset"]]
    assert decoded == [None if s is None else json.loads(s) for s in expected["position_offset"]]


def test_chunked_binary_copy_keeps_one_layout(db_session: Session, game: str) -> None:
    """Rows are encoded in chunks; a column with NULLs only in a later chunk keeps the same layout."""
    from unified_segmentation.storage import _bulk, _pgcopy

    if _bulk.dialect(db_session) != "postgresql":
        return
    n = 1_000
    frame = pl.DataFrame(
        {
            "game_id": [game] * n,
            "player_id": [f"p{i:05d}" for i in range(n)],
            "taxonomy_version": [7] * n,
            "axis": ["engagement"] * n,
            "segment_id": [3] * n,
            "offset": [None if i > 900 else json.dumps({"sessions_per_day": i / 7}) for i in range(n)],
            "offset_model": [json.dumps({"sessions_per_day": -i / 3}) for i in range(n)],
            "typical_exposure_days": [None if i % 400 == 399 else float(i) for i in range(n)],
            "updated_at": [dt.datetime(2024, 3, 1, 12)] * n,
        }
    )
    db_session.flush()
    with _bulk.dbapi_cursor(db_session) as cursor:
        assert _pgcopy.copy_frame_binary(cursor, "player_typical_offsets", frame, rows_per_chunk=300) == n
    loaded = repo.load_offsets(db_session, game, 7)
    assert loaded["player_id"].to_list() == frame["player_id"].to_list()
    assert loaded["typical_exposure_days"].to_list() == frame["typical_exposure_days"].to_list()
    assert loaded["offset"].null_count() == 99
    assert json.loads(loaded["offset_model"][999]) == {"sessions_per_day": -999 / 3}
    assert loaded["updated_at"][0] == dt.datetime(2024, 3, 1, 12, tzinfo=dt.UTC)


def test_compiled_copy_loops_warm_up() -> None:
    """The image build's warm-up encodes one row and decodes it back through the compiled loops."""
    from unified_segmentation.storage import _pgcopy

    assert _pgcopy.warm_up() == 1


def test_copy_out_matches_psycopg_iteration(db_session: Session, game: str) -> None:
    """The fast ``COPY TO`` drain returns exactly what psycopg's row iterator returns, and errors alike."""
    from unified_segmentation.storage import _bulk, _pgcopy

    if _bulk.dialect(db_session) != "postgresql":
        return
    repo.bulk_write_memberships(db_session, game, 1, _memberships([f"p{i}" for i in range(500)]))
    db_session.flush()
    statement = "COPY (SELECT * FROM player_segment_memberships WHERE game_id = %s ORDER BY 2, 4) TO STDOUT"
    with _bulk.dbapi_cursor(db_session) as cursor:
        fast = _pgcopy.copy_out(cursor, statement, (game,))
        slow = bytearray()
        with cursor.copy(statement, (game,)) as copy:
            for chunk in copy:
                slow.extend(chunk)
        assert fast == bytes(slow) and fast.count(b"\n") == 2_000
        with pytest.raises(Exception, match="division by zero"):
            _pgcopy.copy_out(cursor, "COPY (SELECT 1 / (count(*) - count(*)) FROM players) TO STDOUT")


def test_prepared_writes_replace_like_bulk_writes(db_session: Session, game: str) -> None:
    """``prepare_*`` (encoded for the binary COPY on PostgreSQL) then ``write_prepared`` in the unit of
    work: the same rows as ``bulk_write_*``, replacing only the prepared players' rows, ids with quotes,
    backslashes, commas and braces included (the DELETE's array literal)."""
    odd = ['q"uote', "back\\slash", "com,ma", "{brace}", "plain"]
    types = repo.pg_copy_types(db_session)
    assert (types is None) == (db_session.get_bind().dialect.name == "sqlite")
    if types is not None:
        assert types["player_segment_memberships"]["position_offset"] == "jsonb"
    first = repo.prepare_memberships(game, 1, _memberships(odd), pg_types=types)
    assert (first.payload is not None) == (types is not None) and first.height == 20
    assert sorted(first.players.to_list()) == sorted(odd)
    assert repo.write_prepared(db_session, first) == 20
    offsets = _memberships(odd).select("player_id", "axis", "segment_id").unique(["player_id", "axis"])
    assert repo.write_prepared(db_session, repo.prepare_offsets(game, 1, offsets, pg_types=types)) == 10

    # rewrite two of them with one segment per axis: the others keep theirs
    again = repo.prepare_memberships(game, 1, _memberships(odd[:2], segments_per_axis=1), pg_types=types)
    assert repo.write_prepared(db_session, again) == 4
    loaded = repo.load_memberships(db_session, game, 1)
    counts = dict(loaded.group_by("player_id").len().iter_rows())
    assert counts == {odd[0]: 2, odd[1]: 2, odd[2]: 4, odd[3]: 4, odd[4]: 4}
    expected = _memberships(odd[:2], segments_per_axis=1).sort("player_id", "axis", "segment_id")
    got = loaded.filter(pl.col("player_id").is_in(odd[:2])).sort("player_id", "axis", "segment_id")
    for col in ("player_id", "axis", "segment_id", "membership_strength", "typicality", "is_primary"):
        assert got[col].to_list() == expected[col].to_list()
    assert [json.loads(s) for s in got["position_offset"]] == [json.loads(s) for s in expected["position_offset"]]
    assert repo.load_offsets(db_session, game, 1).height == 10
    assert repo.write_prepared(db_session, repo.prepare_memberships(game, 1, _memberships(["x"]).clear())) == 0
