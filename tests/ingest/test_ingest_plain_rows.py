"""JSON payload rows of the usual shape are read by a plain-Python pass; it must read exactly what the
general (Polars) path reads, and hand everything else to it."""

from __future__ import annotations

import random

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from unified_segmentation.errors import InvalidInput
from unified_segmentation.ingest import read_events
from unified_segmentation.ingest._sources import frame_from_records
from unified_segmentation.ingest.events import _read_plain_json_rows


def _general(rows: list[dict], timezone: str = "UTC") -> pl.DataFrame:
    return read_events(frame_from_records(rows), timezone=timezone)  # a frame never takes the plain pass


def _random_rows(seed: int, n: int = 400) -> list[dict]:
    rng = random.Random(seed)
    stamps = ["2024-03-01T10:00:00Z", "2024-03-01T10:00:00.5Z", "2024-03-31T01:59:59.123456+02:00",
              "1999-12-31T23:59:59-05:30", "2099-12-31T23:59:59.999999Z", "1970-01-01T00:00:00+00:00",
              1709287200, 0, 4_102_444_799]
    values = [None, 0, 1, 2.5, 1e-7, 123456789.123, 0.1, 2**52, 1e300, -0.0]
    rows = []
    for _ in range(n):
        row = {"event_id": f"e{rng.randrange(n // 2)}", "player_id": f"p{rng.randrange(20)}",
               "event_type": rng.choice(["session", "Purchase", "QUEST", "social"]),
               "timestamp": rng.choice(stamps)}
        if rng.random() < 0.8:
            row["value"] = rng.choice(values)
        if rng.random() < 0.1:
            row["properties"] = None
        rows.append(row)
    return rows


@pytest.mark.parametrize("seed", range(6))
def test_plain_pass_reads_what_the_general_path_reads(seed: int) -> None:
    rows = _random_rows(seed)
    fast = _read_plain_json_rows(rows)
    assert fast is not None
    assert_frame_equal(fast, _general(rows))
    assert_frame_equal(read_events(rows, timezone="Europe/Berlin"), _general(rows, "Europe/Berlin"))


@pytest.mark.parametrize("change", [
    {"timestamp": "2024-03-01T10:00:00"},          # naive: the game's time zone decides
    {"timestamp": "2024-03-01 10:00:00Z"},         # not the plain form
    {"timestamp": "1709287200"},                   # epoch as text
    {"timestamp": 1709287200.5},                   # fractional epoch
    {"timestamp": "2024-03-01T10:00:60Z"},         # leap second
    {"value": "2.5"}, {"value": True}, {"value": -1}, {"value": float("nan")},
    {"player_id": " p1"}, {"player_id": "joueur-é"}, {"player_id": 7}, {"event_type": ""},
    {"event_id": None}, {"properties": {"kind": "guild"}}, {"Player_ID": "p1"},
])
def test_other_rows_take_the_general_path(change: dict) -> None:
    rows = _random_rows(0, 20)
    rows[5] = {**rows[5], **change}
    assert _read_plain_json_rows(rows) is None
    try:
        expected = _general(rows)
    except InvalidInput as exc:
        with pytest.raises(InvalidInput) as caught:
            read_events(rows)
        assert caught.value.detail == exc.detail
    else:
        assert_frame_equal(read_events(rows), expected)
