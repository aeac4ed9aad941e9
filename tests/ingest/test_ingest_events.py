"""read_events: sources, timestamps, validation errors naming row and field, ids, mapping, group_by."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import polars as pl
import pytest

from unified_segmentation.errors import InvalidInput
from unified_segmentation.ingest import EVENTS_SCHEMA, parse_map_options, read_events

UTC = dt.UTC


def _utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


def _errors(rows, **kwargs) -> InvalidInput:
    with pytest.raises(InvalidInput) as info:
        read_events(rows, **kwargs)
    return info.value


def test_canonical_frame_from_json_rows() -> None:
    events = read_events(
        [
            {"event_id": "e1", "player_id": " p1 ", "event_type": "Session", "timestamp": "2025-07-01T20:00:00",
             "value": 1800, "properties": {"map": "desert"}},
            {"player_id": 42, "event_type": "purchase", "timestamp": 1751400000, "value": 4.99},
        ],
        timezone="Europe/London",
    )
    assert events.schema == pl.Schema(EVENTS_SCHEMA)
    first, second = events.to_dicts()
    assert first["event_id"] == "e1" and first["player_id"] == "p1" and first["event_type"] == "session"
    assert first["timestamp"] == _utc(2025, 7, 1, 19, 0)  # naive = London summer time (UTC+1)
    assert first["properties"] == '{"map":"desert"}'
    assert second["player_id"] == "42"
    assert second["timestamp"] == _utc(2025, 7, 1, 20, 0)  # epoch seconds are UTC
    assert second["properties"] is None and len(second["event_id"]) == 20


def test_timestamp_forms(tmp_path: Path) -> None:
    rows = [
        {"player_id": "p", "event_type": "x", "timestamp": text}
        for text in (
            "2025-01-15",
            "2025-01-15T10:30",
            "2025-01-15 10:30:15.25",
            "2025-01-15T10:30:00Z",
            "2025-01-15T10:30:00+02:00",
            "2025-01-15T10:30:00-0500",
            "1736937000",
            "1736937000.5",
        )
    ]
    got = read_events(rows, timezone="America/New_York", allow_duplicates=True)["timestamp"].to_list()
    assert got == [
        _utc(2025, 1, 15, 5, 0),  # local midnight (UTC-5)
        _utc(2025, 1, 15, 15, 30),
        _utc(2025, 1, 15, 15, 30, 15, 250_000),
        _utc(2025, 1, 15, 10, 30),
        _utc(2025, 1, 15, 8, 30),
        _utc(2025, 1, 15, 15, 30),
        _utc(2025, 1, 15, 10, 30),
        _utc(2025, 1, 15, 10, 30, 0, 500_000),
    ]
    ms = read_events([{"player_id": "p", "event_type": "x", "timestamp": 1736937000123}], epoch_unit="ms")
    assert ms["timestamp"][0] == _utc(2025, 1, 15, 10, 30, 0, 123_000)
    # DST: the skipped hour reads with the pre-jump offset, the repeated hour takes the earlier instant
    london = read_events(
        [{"player_id": "p", "event_type": "x", "timestamp": t} for t in ("2025-03-30T01:30", "2025-10-26T01:30")],
        timezone="Europe/London",
    )
    assert london["timestamp"].to_list() == [_utc(2025, 3, 30, 1, 30), _utc(2025, 10, 26, 0, 30)]


def test_millisecond_timestamps_rejected_with_the_hint() -> None:
    error = _errors([{"player_id": "p", "event_type": "session", "timestamp": 1736937000123}])
    assert error.extra["errors"][0] == {
        "row": 1,
        "field": "timestamp",
        "message": "timestamp after 2100: looks like milliseconds: use epoch_unit=ms",
    }
    assert "epoch_unit=ms" in error.detail
    text = _errors([{"player_id": "p", "event_type": "session", "timestamp": "1736937000123"}])
    assert "looks like milliseconds" in text.extra["errors"][0]["message"]
    late = _errors([{"player_id": "p", "event_type": "session", "timestamp": "2101-01-01T00:00:00Z"}])
    assert late.extra["errors"][0]["message"] == "timestamp after 2100"


def test_validation_names_rows_and_fields() -> None:
    rows = [
        {"player_id": "ok", "event_type": "session", "timestamp": "2025-01-01T00:00:00Z", "value": 1},
        {"player_id": "", "event_type": "session", "timestamp": "2025-01-01T00:00:00Z"},
        {"player_id": "p", "event_type": " ", "timestamp": "2025-01-01T00:00:00Z"},
        {"player_id": "p", "event_type": "x", "timestamp": "01/02/2025"},
        {"player_id": "p", "event_type": "x", "timestamp": "2025-01-01", "value": float("nan")},
        {"player_id": "p", "event_type": "x", "timestamp": "2025-01-01", "value": float("inf")},
        {"player_id": "p", "event_type": "x", "timestamp": "2025-01-01", "value": -3},
        {"player_id": "p", "event_type": "x", "timestamp": "2025-01-01", "value": "12abc"},
        {"player_id": "p", "event_type": "x", "timestamp": "2025-01-01", "properties": "[1, 2]"},
        {"player_id": "p", "event_type": "x", "timestamp": "2025-01-01", "properties": "{bad json}"},
        {"player_id": "p", "event_type": "x"},
    ]
    error = _errors(rows)
    assert error.code == "invalid_input" and error.status == 422
    found = [(e["row"], e["field"]) for e in error.extra["errors"]]
    assert found == [
        (2, "player_id"), (3, "event_type"), (4, "timestamp"), (5, "value"), (6, "value"), (7, "value"),
        (8, "value"), (9, "properties"), (10, "properties"), (11, "timestamp"),
    ]
    messages = {e["row"]: e["message"] for e in error.extra["errors"]}
    assert messages[5] == "value is NaN" and messages[6] == "value is infinite"
    assert messages[7] == "value is negative (-3.0)" and "not a number" in messages[8]
    assert messages[11] == "timestamp is empty"
    assert error.detail.startswith("10 invalid event row(s)") and "row 2, field 'player_id'" in error.detail
    assert (error.extra["row"], error.extra["field"]) == (2, "player_id")


def test_skip_invalid_returns_rejects() -> None:
    rows = [
        {"player_id": "a", "event_type": "session", "timestamp": "2025-01-01T00:00:00Z", "value": 60},
        {"player_id": "b", "event_type": "session", "timestamp": "soon", "value": -1},
        {"player_id": "c", "event_type": "session", "timestamp": "2025-01-01T00:00:00Z"},
    ]
    events, rejects = read_events(rows, skip_invalid=True)
    assert events["player_id"].to_list() == ["a", "c"]
    assert rejects.to_dicts() == [
        {"row": 2, "field": "timestamp",
         "reason": "timestamp: unparseable timestamp: use ISO-8601 or epoch seconds; value: value is negative (-1.0)"}
    ]


def test_missing_required_columns() -> None:
    error = _errors([{"player": "a", "event_type": "x", "timestamp": "2025-01-01"}])
    assert error.extra["field"] == "player_id"
    assert error.extra["errors"] == [{"row": None, "field": "player_id", "message": "missing required column"}]


def test_derived_ids_and_duplicates() -> None:
    row = {"player_id": "p", "event_type": "purchase", "timestamp": "2025-01-01T10:00:00Z", "value": 2.5,
           "properties": '{"sku":"gem"}'}
    once = read_events([row, dict(row), {**row, "value": 3.0}])
    assert once.height == 2  # the exact duplicate counts once
    key = "p|purchase|1735725600000000|2.5|{\"sku\":\"gem\"}"
    assert once["event_id"][0] == hashlib.sha1(key.encode()).hexdigest()[:20]
    kept = read_events([row, dict(row), dict(row)], allow_duplicates=True)
    base = once["event_id"][0]
    assert kept["event_id"].to_list() == [base, f"{base}:2", f"{base}:3"]
    assert read_events([row, dict(row)], allow_duplicates=True)["event_id"].to_list() == kept["event_id"][:2].to_list()
    given = read_events([{**row, "event_id": "k1"}, {**row, "event_id": "k1", "value": 9.0}], allow_duplicates=True)
    assert given["event_id"].to_list() == ["k1"] and given["value"][0] == 2.5  # an idempotency key: first wins


def test_files_csv_parquet_jsonl(tmp_path: Path) -> None:
    frame = pl.DataFrame(
        {
            "player_id": ["007", "008"],
            "event_type": ["session", "purchase"],
            "timestamp": ["2025-05-01T12:00:00Z", "2025-05-01T12:05:00Z"],
            "value": [600.0, 1.99],
            "properties": ['{"a": 1}', None],
        }
    )
    frame.write_csv(tmp_path / "e.csv")
    frame.write_parquet(tmp_path / "e.parquet")
    frame.write_ndjson(tmp_path / "e.jsonl")
    import gzip

    (tmp_path / "e.csv.gz").write_bytes(gzip.compress((tmp_path / "e.csv").read_bytes()))
    results = [read_events(tmp_path / name) for name in ("e.csv", "e.csv.gz", "e.parquet", "e.jsonl")]
    results.append(read_events(frame))
    for result in results:
        assert result["player_id"].to_list() == ["007", "008"]  # leading zeros kept
        assert result["value"].to_list() == [600.0, 1.99]
        assert result["event_id"].to_list() == results[0]["event_id"].to_list()
    (tmp_path / "e.xlsx").write_bytes(b"")
    with pytest.raises(InvalidInput):
        read_events(tmp_path / "e.xlsx")
    (tmp_path / "bad.jsonl").write_text('{"player_id": "a"}\n{oops\n')
    assert _errors(tmp_path / "bad.jsonl").extra["row"] == 2


def test_csv_errors_use_data_row_numbers(tmp_path: Path) -> None:
    path = tmp_path / "e.csv"
    path.write_text(
        "player_id,event_type,timestamp,value\n"
        "a,session,2025-01-01T00:00:00Z,60\n"
        "b,session,2025-01-01T00:00:00Z,abc\n"
        "c,session,1735689600000,60\n"
    )
    error = _errors(path)
    assert [(e["row"], e["field"]) for e in error.extra["errors"]] == [(2, "value"), (3, "timestamp")]
    assert read_events(path, skip_invalid=True)[0]["player_id"].to_list() == ["a"]
    assert read_events(path, skip_invalid=True, epoch_unit="ms")[0]["player_id"].to_list() == ["a", "c"]


def test_parse_map_options_either_order() -> None:
    ours = ["player_id", "event_type", "timestamp", "value"]
    assert parse_map_options(["value=Quantity*UnitPrice", "CustomerID=player_id"], ours) == {
        "value": "Quantity*UnitPrice",
        "player_id": "CustomerID",
    }
    assert parse_map_options(['event_type="\'purchase\'"'], ours) == {"event_type": "'purchase'"}
    assert parse_map_options(["CASE WHEN a = 1 THEN 'x' ELSE 'y' END=event_type"], ours) == {
        "event_type": "CASE WHEN a = 1 THEN 'x' ELSE 'y' END"
    }
    for bad in ("value=player_id", "Quantity=Price", "novalue", "value="):
        with pytest.raises(InvalidInput):
            parse_map_options([bad], ours)
    with pytest.raises(InvalidInput):
        parse_map_options(["value=a", "b=value"], ours)


def test_mapping_with_expressions() -> None:
    rows = [
        {"Customer": 17850.0, "When": "2010-12-01 08:26:00", "Quantity": 6, "UnitPrice": 2.55},
        {"Customer": 17850.0, "When": "2010-12-01 08:28:00", "Quantity": 2, "UnitPrice": 1.5},
    ]
    events = read_events(
        rows,
        timezone="Europe/London",
        mapping={"player_id": "Customer", "timestamp": "When", "value": "Quantity*UnitPrice",
                 "event_type": "'purchase'"},
    )
    assert events["player_id"].to_list() == ["17850", "17850"]  # integral floats lose ".0"
    assert events["event_type"].to_list() == ["purchase", "purchase"]
    assert events["value"].to_list() == pytest.approx([15.3, 3.0])
    assert events["timestamp"][0] == _utc(2010, 12, 1, 8, 26)
    error = _errors(rows, mapping={"player_id": "Customer", "timestamp": "When", "event_type": "'x'",
                                   "value": "Quantity * NoSuchColumn"})
    assert error.extra["field"] == "value"
    with pytest.raises(InvalidInput) as info:
        read_events(rows, mapping={"player": "Customer"})
    assert info.value.extra["field"] == "player"


def test_group_by_line_items() -> None:
    rows = [
        {"Invoice": "1", "Customer": "a", "At": "2025-01-01T10:00:00Z", "Qty": 2, "Price": 1.5, "Sku": "x"},
        {"Invoice": "1", "Customer": "a", "At": "2025-01-01T10:00:00Z", "Qty": 1, "Price": 4.0, "Sku": "y"},
        {"Invoice": "2", "Customer": "b", "At": "2025-01-02T10:00:00Z", "Qty": 3, "Price": 1.0, "Sku": "x"},
        {"Invoice": "3", "Customer": "b", "At": "2025-01-03T10:00:00Z", "Qty": None, "Price": None, "Sku": "x"},
    ]
    mapping = {"player_id": "Customer", "timestamp": "At", "value": "Qty*Price", "event_type": "'purchase'",
               "event_id": "Invoice"}
    events = read_events(rows, mapping=mapping, group_by="Invoice")
    assert events.select("event_id", "player_id", "value").rows() == [("1", "a", 7.0), ("2", "b", 3.0),
                                                                     ("3", "b", None)]
    error = _errors(rows, mapping=mapping, group_by="Basket")
    assert error.extra["field"] == "group_by"


def test_pandas_frame_source() -> None:
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"player_id": ["a"], "event_type": ["session"], "timestamp": ["2025-01-01T00:00:00Z"],
                          "value": [60.0]})
    assert read_events(frame)["value"].to_list() == [60.0]


def test_json_array_file_and_empty_payload(tmp_path: Path) -> None:
    path = tmp_path / "events.json"
    path.write_text('[{"player_id": "a", "event_type": "x", "timestamp": "2025-01-01T00:00:00Z"}]')
    assert read_events(path)["player_id"].to_list() == ["a"]
    empty = read_events([])
    assert empty.height == 0 and empty.schema == pl.Schema(EVENTS_SCHEMA)
    with pytest.raises(InvalidInput):
        read_events([{"player_id": "a"}, "not an object"])
    with pytest.raises(InvalidInput):
        read_events([], timezone="Nowhere/City")


def test_typed_timestamp_columns() -> None:
    base = {"player_id": ["a"], "event_type": ["x"]}
    naive = pl.DataFrame({**base, "timestamp": [dt.datetime(2025, 7, 1, 12, 0)]})
    aware = pl.DataFrame({**base, "timestamp": [dt.datetime(2025, 7, 1, 12, 0, tzinfo=UTC)]})
    day = pl.DataFrame({**base, "timestamp": [dt.date(2025, 7, 1)]})
    epoch = pl.DataFrame({**base, "timestamp": [1751371200]})
    got = [read_events(f, timezone="Europe/Paris")["timestamp"][0] for f in (naive, aware, day, epoch)]
    assert got == [_utc(2025, 7, 1, 10, 0), _utc(2025, 7, 1, 12, 0), _utc(2025, 6, 30, 22, 0), _utc(2025, 7, 1, 12)]
    wrong = pl.DataFrame({**base, "timestamp": [True]})
    assert _errors(wrong).extra["errors"][0]["field"] == "timestamp"
