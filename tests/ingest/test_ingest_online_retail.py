"""The real UCI Online Retail slice (CC BY 4.0, see tests/data/README.md): ingest, roll up, check by hand."""

from __future__ import annotations

import csv
import datetime as dt
from collections import defaultdict
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from unified_segmentation.features import events_to_daily, window_features, windows_for
from unified_segmentation.ingest import parse_map_options, read_events, read_online_retail

SLICE = Path(__file__).resolve().parents[1] / "data" / "online_retail_slice.csv"
TZ = "Europe/London"
CUSTOMER = "12472"  # 13 invoices, some of them cancellations


@pytest.fixture(scope="module")
def events() -> pl.DataFrame:
    return read_online_retail(SLICE)


def _by_hand(customer: str) -> dict:
    """An independent computation with the csv module: per local day and in total."""
    days: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    products: dict[str, set] = defaultdict(set)
    with SLICE.open(newline="") as handle:
        for line in csv.DictReader(handle):
            if not line["CustomerID"] or int(float(line["CustomerID"])) != int(customer):
                continue
            day = line["InvoiceDate"][:10]  # UK local time; the roll-up uses Europe/London
            amount = float(line["Quantity"]) * float(line["UnitPrice"])
            invoice = line["InvoiceNo"]
            if invoice.startswith("C"):
                days[day]["refunds"] += max(-amount, 0.0)
                days[day]["cancel_" + invoice] = 1
            else:
                days[day]["spend"] += max(amount, 0.0)
                days[day]["invoice_" + invoice] = 1
                products[invoice].add(line["StockCode"])
    out = {}
    for day, values in days.items():
        out[day] = {
            "sessions": sum(1 for k in values if k.startswith("invoice_")),
            "spend": values["spend"],
            "refunds": values["refunds"],
        }
    return {"days": out, "products": {k: len(v) for k, v in products.items()}}


def test_slice_ingests_to_canonical_events(events: pl.DataFrame) -> None:
    assert events["player_id"].n_unique() == 200
    assert set(events["event_type"].unique()) == {"session", "purchase", "items", "refund"}
    assert events["player_id"].str.contains(r"^\d+$").all()  # integer strings, not "12346.0"
    assert events["event_id"].is_unique().all()
    assert (events["value"] >= 0).all()
    sessions = events.filter(pl.col("event_type") == "session")
    assert sessions["value"].unique().to_list() == [60.0]
    assert events.filter(pl.col("event_type") == "refund")["event_id"].str.starts_with("C").all()


def test_one_customer_against_the_csv(events: pl.DataFrame) -> None:
    expected = _by_hand(CUSTOMER)
    mine = events.filter(pl.col("player_id") == CUSTOMER)
    items = mine.filter(pl.col("event_type") == "items")
    assert dict(zip(items["event_id"].str.replace(":items", ""), items["value"], strict=True)) == {
        k: float(v) for k, v in expected["products"].items()
    }
    daily = events_to_daily(mine, timezone=TZ)
    got = {
        row["date"].isoformat(): row for row in daily.to_dicts()
    }
    assert set(got) == set(expected["days"])
    for day, values in expected["days"].items():
        assert got[day]["sessions"] == values["sessions"], day
        assert got[day]["purchases"] == values["sessions"], day
        assert got[day]["spend"] == pytest.approx(values["spend"]), day
        assert got[day]["refunds"] == pytest.approx(values["refunds"]), day
        assert got[day]["playtime_minutes"] == values["sessions"], day  # 60 s per invoice
    total_spend = sum(v["spend"] for v in expected["days"].values())
    total_refunds = sum(v["refunds"] for v in expected["days"].values())
    as_of = dt.datetime(2011, 12, 10)  # after the last invoice
    window = windows_for(as_of, timezone=TZ, profile_days=400)["profile"]
    features = window_features(daily, window, holiday_country="GB").row(0, named=True)
    assert features["net_spend"] == pytest.approx(max(total_spend - total_refunds, 0.0))
    assert features["sessions"] == sum(v["sessions"] for v in expected["days"].values())


def test_whole_slice_rolls_up(events: pl.DataFrame) -> None:
    daily = events_to_daily(events, timezone=TZ)
    assert daily["player_id"].n_unique() == 200
    assert daily["spend"].sum() == pytest.approx(
        events.filter(pl.col("event_type") == "purchase")["value"].sum()
    )
    assert daily["social_events"].sum() == 0 and daily["ev_items"].sum() == daily["sessions"].sum()
    window = windows_for(dt.datetime(2011, 12, 10), timezone=TZ, profile_days=90)["profile"]
    features = window_features(daily, window, holiday_country="GB")
    assert features.height == 200  # every customer known by then, silent ones included
    assert features["spend_per_day"].is_finite().all() and (features["spend_per_day"] >= 0).all()
    assert features.filter(pl.col("sessions") == 0).height > 0  # silence is kept


def test_generic_read_events_with_mapping_and_group_by(events: pl.DataFrame) -> None:
    mapping = parse_map_options(
        [
            "player_id=CAST(CAST(CustomerID AS BIGINT) AS VARCHAR)",
            "event_type=CASE WHEN InvoiceNo LIKE 'C%' THEN 'refund' ELSE 'purchase' END",
            "InvoiceDate=timestamp",
            "value=CASE WHEN InvoiceNo LIKE 'C%' THEN GREATEST(-Quantity*UnitPrice, 0) "
            "ELSE GREATEST(Quantity*UnitPrice, 0) END",
            "event_id=InvoiceNo",
        ]
    )
    generic = read_events(SLICE, timezone=TZ, mapping=mapping, group_by="InvoiceNo")
    dedicated = events.filter(pl.col("event_type").is_in(["purchase", "refund"])).with_columns(
        pl.col("event_id").str.replace(r":(purchase|refund)$", "")
    )
    columns = ["event_id", "player_id", "event_type", "timestamp", "value"]
    assert_frame_equal(
        generic.select(columns).sort("event_id"), dedicated.select(columns).sort("event_id"), check_exact=False
    )


def test_limit_reads_the_first_lines() -> None:
    few = read_online_retail(SLICE, limit=50)
    assert 0 < few["event_id"].str.replace(":.*", "").n_unique() <= 50
