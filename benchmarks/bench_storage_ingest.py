"""Ingestion into the database: idempotent event insert + daily roll-up, against a plain bulk load.

For PostgreSQL and SQLite, in the same run on the same rows:

* **baseline**: a plain bulk load of the events into a table with the same columns and the same unique
  index on ``(game_id, event_id)`` (PostgreSQL ``COPY`` of Polars-written CSV; SQLite one
  ``executemany`` in one transaction), including the CSV / row encoding;
* **ingest**: ``repositories.insert_events`` (dedup against stored keys, new rows only) + a simple
  Polars group-by of the new rows into Daily rows + ``repositories.upsert_daily(mode="add")``
  (which also maintains ``players``), committed in one unit of work;
* **re-ingest**: the same events again (all duplicates: nothing written, daily totals unchanged);
* **file** (what ``useg ingest events FILE`` does): the same events written to a Parquet file, read with
  ``ingest.read_events`` (validation included) and stored with ``Services.ingest_events`` (dedup, the
  product's own roll-up ``events_to_daily``, players, game metadata, one transaction), into a second game
  of the same database; then the same file again (all duplicates).

Prints one JSON document. Usage::

    python benchmarks/bench_storage_ingest.py [--events 1000000] [--players 50000] [--days 7]
        [--postgres-admin-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres] [--no-sqlite] [--no-file]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from unified_segmentation.ingest import read_events
from unified_segmentation.services.facade import Services
from unified_segmentation.storage import repositories as repo
from unified_segmentation.storage._bulk import encode_for, pg_copy_in
from unified_segmentation.storage.db import make_engine, normalize_url, session_factory, unit_of_work
from unified_segmentation.storage.migrate import upgrade

GAME = "bench_game"
FILE_GAME = "bench_game_file"
START = dt.datetime(2024, 3, 4, tzinfo=dt.UTC)


def make_events(n_events: int, n_players: int, days: int, seed: int) -> pl.DataFrame:
    """Seeded synthetic events: skewed player activity, five event types, values per type."""
    rng = np.random.default_rng(seed)
    weights = rng.lognormal(0.0, 1.0, n_players)
    players = rng.choice(n_players, size=n_events, p=weights / weights.sum())
    types = np.array(["session", "purchase", "refund", "social", "quest"])
    kind = rng.choice(len(types), size=n_events, p=[0.40, 0.05, 0.005, 0.20, 0.345])
    offsets_us = rng.integers(0, days * 86_400 * 10**6, n_events)
    value = np.where(
        kind == 0,
        rng.exponential(900.0, n_events),
        np.where(kind <= 2, np.round(rng.lognormal(1.5, 1.0, n_events), 2), np.nan),
    )
    frame = pl.DataFrame(
        {
            "player_id": pl.Series(players).cast(pl.String).str.zfill(6).str.replace("^", "p"),
            "event_type": types[kind],
            "timestamp": pl.Series(np.datetime64("2024-03-04", "us") + offsets_us.astype("timedelta64[us]")),
            "value": value,
        }
    ).with_columns(
        pl.col("timestamp").dt.replace_time_zone("UTC"),
        pl.col("value").fill_nan(None),
        pl.lit(None, dtype=pl.String).alias("properties"),
    )
    # content-derived keys, as ingestion derives them when a file has no event_id
    key = pl.concat_str(
        ["player_id", "event_type", pl.col("timestamp").dt.epoch("us"), "value"],
        separator="|",
        ignore_nulls=True,
    )
    frame = frame.with_columns(
        pl.format("{}{}", key.hash(seed=1).cast(pl.String), key.hash(seed=2).cast(pl.String))
        .str.slice(0, 20)
        .alias("event_id")
    )
    return frame.select("event_id", "player_id", "event_type", "timestamp", "value", "properties").unique(
        "event_id", maintain_order=True
    )


def rollup(events: pl.DataFrame) -> pl.DataFrame:
    """A simple events -> Daily group-by (UTC days)."""
    is_type = pl.col("event_type").eq
    return events.group_by("player_id", pl.col("timestamp").dt.date().alias("date")).agg(
        sessions=is_type("session").sum().cast(pl.Float64),
        playtime_minutes=pl.col("value").filter(is_type("session")).sum() / 60.0,
        purchases=is_type("purchase").sum().cast(pl.Float64),
        spend=pl.col("value").filter(is_type("purchase")).sum(),
        refunds=pl.col("value").filter(is_type("refund")).sum(),
        social_events=is_type("social").sum().cast(pl.Float64),
        ev_quest=is_type("quest").sum().cast(pl.Float64),
    )


def _raw_rows(events: pl.DataFrame) -> pl.DataFrame:
    return events.select(
        pl.lit(GAME).alias("game_id"),
        "event_id",
        "player_id",
        "event_type",
        pl.col("timestamp").alias("ts"),
        "value",
        "properties",
        pl.lit(dt.datetime.now(dt.UTC)).dt.convert_time_zone("UTC").alias("ingested_at"),
    )


BASELINE_DDL = (
    "CREATE TABLE bench_copy (game_id VARCHAR(100) NOT NULL, event_id VARCHAR(255) NOT NULL, "
    "player_id VARCHAR(255) NOT NULL, event_type VARCHAR(100) NOT NULL, ts {ts} NOT NULL, value {f}, "
    "properties {j}, ingested_at {ts} NOT NULL, UNIQUE (game_id, event_id))"
)


def baseline(engine: Any, events: pl.DataFrame) -> float:
    kind = engine.dialect.name
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS bench_copy"))
        if kind == "postgresql":
            conn.execute(text(BASELINE_DDL.format(ts="TIMESTAMPTZ", f="DOUBLE PRECISION", j="JSONB")))
        else:
            conn.execute(text(BASELINE_DDL.format(ts="DATETIME", f="FLOAT", j="JSON")))
    _settle(engine)
    started = time.perf_counter()
    with engine.begin() as conn:
        rows = encode_for(_raw_rows(events), kind)
        cursor = conn.connection.cursor()
        if kind == "postgresql":
            pg_copy_in(cursor, "bench_copy", rows.columns, rows)
        else:
            marks = ", ".join("?" for _ in rows.columns)
            cursor.executemany(f"INSERT INTO bench_copy VALUES ({marks})", rows.iter_rows())
        cursor.close()
    elapsed = time.perf_counter() - started
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE bench_copy"))
    return elapsed


def ingest(sessions: Any, events: pl.DataFrame) -> dict[str, float]:
    times: dict[str, float] = {}
    started = time.perf_counter()
    with unit_of_work(sessions) as session:
        t = time.perf_counter()
        result = repo.insert_events(session, GAME, events)
        times["insert_events_s"] = time.perf_counter() - t
        t = time.perf_counter()
        daily = rollup(result.new_events)
        times["rollup_s"] = time.perf_counter() - t
        t = time.perf_counter()
        repo.upsert_daily(session, GAME, daily, mode="add")
        times["upsert_daily_s"] = time.perf_counter() - t
        t = time.perf_counter()
    times["commit_s"] = time.perf_counter() - t
    times["total_s"] = time.perf_counter() - started
    times["inserted"] = result.inserted
    times["duplicates"] = result.duplicates
    times["daily_rows"] = daily.height
    return times


def ingest_file(url: str, path: Path) -> dict[str, float]:
    """``useg ingest events FILE``'s path: read and validate the file, then ``Services.ingest_events``."""
    services = Services(url)
    try:
        started = time.perf_counter()
        events = read_events(path, timezone="UTC")
        read_s = time.perf_counter() - started
        answer = services.ingest_events(FILE_GAME, events)
        total_s = time.perf_counter() - started
    finally:
        services.close()
    return {"read_s": read_s, "store_s": total_s - read_s, "total_s": total_s, "inserted": answer["inserted"],
            "duplicates": answer["duplicates"]}


def _settle(engine: Any) -> None:
    """Start each timed phase from the same state (PostgreSQL: flush dirty buffers first)."""
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("CHECKPOINT"))


def run_backend(url: str, events: pl.DataFrame, parquet: Path | None = None) -> dict[str, Any]:
    upgrade(url)
    engine = make_engine(url)
    sessions = session_factory(engine)
    n = events.height
    try:
        with unit_of_work(sessions) as session:
            repo.ensure_game(session, GAME, {"timezone": "UTC"})
        base_s = baseline(engine, events)
        _settle(engine)
        first = ingest(sessions, events)
        with unit_of_work(sessions) as session:
            totals_before = repo.load_daily(session, GAME).select(pl.col("sessions", "spend").sum()).row(0)
        _settle(engine)
        again = ingest(sessions, events)
        with unit_of_work(sessions) as session:
            totals_after = repo.load_daily(session, GAME).select(pl.col("sessions", "spend").sum()).row(0)
            stored = repo.count_events(session, GAME)
        file_runs = None
        if parquet is not None:
            _settle(engine)
            file_first = ingest_file(url, parquet)
            _settle(engine)
            file_again = ingest_file(url, parquet)
            with unit_of_work(sessions) as session:
                file_totals = repo.load_daily(session, FILE_GAME).select(pl.col("sessions", "spend").sum()).row(0)
                file_stored = repo.count_events(session, FILE_GAME)
            assert file_first["inserted"] == n and file_again["inserted"] == 0 and file_stored == n
            file_runs = (file_first, file_again, file_totals)
    finally:
        engine.dispose()
    assert first["inserted"] == n and again["inserted"] == 0 and stored == n
    assert totals_before == totals_after
    out = {
        "baseline_bulk_load_s": round(base_s, 3),
        "baseline_events_per_s": round(n / base_s),
        "ingest_s": round(first["total_s"], 3),
        "ingest_events_per_s": round(n / first["total_s"]),
        "ingest_vs_baseline": round(base_s / first["total_s"], 3),
        "daily_rows": first["daily_rows"],
        "breakdown_s": {
            k: round(first[k], 3) for k in ("insert_events_s", "rollup_s", "upsert_daily_s", "commit_s")
        },
        "reingest_s": round(again["total_s"], 3),
        "reingest_events_per_s": round(n / again["total_s"]),
        "reingest_duplicates": again["duplicates"],
        "daily_totals_unchanged_by_reingest": totals_before == totals_after,
    }
    if file_runs is not None:
        file_first, file_again, file_totals = file_runs
        out["file"] = {
            "file_to_db_s": round(file_first["total_s"], 3),
            "file_to_db_events_per_s": round(n / file_first["total_s"]),
            "file_to_db_vs_baseline": round(base_s / file_first["total_s"], 3),
            "read_s": round(file_first["read_s"], 3),
            "store_s": round(file_first["store_s"], 3),
            "store_events_per_s": round(n / file_first["store_s"]),
            "store_vs_baseline": round(base_s / file_first["store_s"], 3),
            "reingest_s": round(file_again["total_s"], 3),
            "reingest_events_per_s": round(n / file_again["total_s"]),
            "reingest_duplicates": file_again["duplicates"],
            "sessions_total_equals_repository_phase": file_totals[0] == totals_before[0],
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--players", type=int, default=50_000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--postgres-admin-url",
        default=os.environ.get("USEG_TEST_POSTGRES_URL")
        or "postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
    )
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument("--no-file", action="store_true", help="skip the file -> Services.ingest_events phase")
    args = parser.parse_args()

    t = time.perf_counter()
    events = make_events(args.events, args.players, args.days, args.seed)
    out: dict[str, Any] = {
        "benchmark": "storage_ingest",
        "events": events.height,
        "players": events["player_id"].n_unique(),
        "days": args.days,
        "generate_s": round(time.perf_counter() - t, 3),
        "cpus": os.cpu_count(),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }
    workdir = tempfile.TemporaryDirectory(prefix="useg-bench-ingest-")
    parquet = None
    if not args.no_file:
        parquet = Path(workdir.name) / "events.parquet"
        events.write_parquet(parquet)
    if not args.no_postgres and args.postgres_admin_url != "skip":
        admin_url = normalize_url(args.postgres_admin_url)
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        name = f"useg_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
            out["postgresql"] = run_backend(url, events, parquet)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
    if not args.no_sqlite:
        with tempfile.TemporaryDirectory() as tmp:
            out["sqlite"] = run_backend(f"sqlite:///{Path(tmp) / 'bench.db'}", events, parquet)
    workdir.cleanup()
    out["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
