"""The UCI "Online Retail" dataset (CC BY 4.0) as canonical events.

Source: UCI Machine Learning Repository, dataset 352 "Online Retail" (DOI 10.24432/C5BW33), donated
by Dr Daqing Chen, London South Bank University; Chen, D., Sain, S.L., Guo, K. (2012) "Data mining for
the online retail industry: a case study of RFM model-based customer segmentation using data mining",
Journal of Database Marketing & Customer Strategy Management 19(3).

Mapping (one event set per invoice, customer = player, time zone Europe/London):
- a normal invoice is a ``session`` (value 60 s), a ``purchase`` (value: total of its positive lines)
  and an ``items`` game-specific event (value: distinct products on it);
- a cancellation invoice (``InvoiceNo`` starting with ``C``) is a ``refund`` (value: the cancelled
  amount, positive);
- lines without ``CustomerID`` are dropped; the player id is the CustomerID as an integer string.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from unified_segmentation.ingest._parse import localize
from unified_segmentation.ingest.events import EVENTS_SCHEMA

TIMEZONE = "Europe/London"
SESSION_SECONDS = 60.0
ATTRIBUTION = (
    'UCI Machine Learning Repository, dataset 352 "Online Retail" (DOI 10.24432/C5BW33), '
    "Dr Daqing Chen, London South Bank University; CC BY 4.0"
)
_SCHEMA = {
    "InvoiceNo": pl.String,
    "StockCode": pl.String,
    "Description": pl.String,
    "Quantity": pl.Float64,
    "InvoiceDate": pl.String,
    "UnitPrice": pl.Float64,
    "CustomerID": pl.Float64,
    "Country": pl.String,
}


def read_online_retail(path: str | Path, limit: int | None = None) -> pl.DataFrame:
    """Canonical events of the Online Retail CSV (``.csv`` or ``.csv.gz``).

    ``limit`` reads only the first ``limit`` lines of the file. Event ids are ``<InvoiceNo>:<type>``
    (stable across re-reads); ``properties`` carries ``{"invoice", "country"}``.
    """
    lines = pl.read_csv(path, schema_overrides=_SCHEMA, n_rows=limit).filter(pl.col("CustomerID").is_not_null())
    amount = pl.col("Quantity") * pl.col("UnitPrice")
    invoices = lines.group_by("InvoiceNo", maintain_order=True).agg(
        pl.col("CustomerID").first().cast(pl.Int64).cast(pl.String).alias("player_id"),
        pl.col("InvoiceDate").min().alias("local_time"),
        pl.col("Country").first().alias("country"),
        amount.clip(lower_bound=0).sum().alias("positive_total"),
        (-amount).clip(lower_bound=0).sum().alias("negative_total"),
        pl.col("StockCode").n_unique().cast(pl.Float64).alias("products"),
    )
    timestamps = localize(invoices["local_time"].str.to_datetime("%Y-%m-%d %H:%M:%S"), TIMEZONE)
    invoices = invoices.with_columns(
        timestamp=timestamps,
        cancelled=pl.col("InvoiceNo").str.starts_with("C"),
        properties=pl.struct(invoice=pl.col("InvoiceNo"), country=pl.col("country")).struct.json_encode(),
    )

    def events(kind: str, value: pl.Expr, cancelled: bool) -> pl.DataFrame:
        return invoices.filter(pl.col("cancelled") == cancelled).select(
            pl.concat_str(pl.col("InvoiceNo"), pl.lit(f":{kind}")).alias("event_id"),
            "player_id",
            pl.lit(kind).alias("event_type"),
            "timestamp",
            value.cast(pl.Float64).alias("value"),
            "properties",
        )

    out = pl.concat(
        [
            events("session", pl.lit(SESSION_SECONDS), cancelled=False),
            events("purchase", pl.col("positive_total"), cancelled=False),
            events("items", pl.col("products"), cancelled=False),
            events("refund", pl.col("negative_total"), cancelled=True),
        ]
    )
    return out.sort("timestamp", "player_id", "event_id").select(
        [pl.col(name).cast(dtype) for name, dtype in EVENTS_SCHEMA.items()]
    )
