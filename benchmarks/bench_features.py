"""Speed of the feature roll-ups, with a plain Polars group-by of the same events as the baseline.

Prints one JSON object:
- ``events_per_s``: ``features.events_to_daily`` (events -> canonical daily rows, all columns:
  counts and sums per type, night playtime, start-hour sin/cos sums, social sessions, ev_* counts);
- ``plain_groupby_events_per_s``: ``group_by(player_id, date).agg(len, sum(value))`` on the same
  events (lazy, default engine), the floor any roll-up pays;
- ``ratio``: events_per_s / plain_groupby_events_per_s;
- ``player_days_per_s``: ``features.window_features`` over the daily rows of the same events
  (28-day window, holidays on);
plus the same figures for a non-UTC zone and the data shape. Medians of ``--repeat`` runs, the
baseline and ours interleaved so that a noisy neighbour hits both.

The events are generated with numpy: 3M events of 50k players over 28 days, each player active on
a share of days, 30 % sessions, 20 % social, 5 % purchases, 1 % refunds, two game-specific types,
in time order as an event log is.

    python benchmarks/bench_features.py [--events 3000000] [--players 50000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import time

import numpy as np
import polars as pl

from unified_segmentation.features import events_to_daily, window_features, windows_for

START = dt.datetime(2025, 11, 1, tzinfo=dt.UTC)
TYPES = np.array(["session", "purchase", "social", "refund", "level_up", "quest"])
TYPE_SHARES = [0.30, 0.05, 0.20, 0.01, 0.24, 0.20]


def make_events(n_events: int, n_players: int, days: int = 28, seed: int = 7) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    player = rng.integers(0, n_players, n_events)
    activity = rng.uniform(0.1, 0.9, n_players)  # share of days a player is active
    active_days = np.maximum(1, np.round(days * activity[player])).astype(np.int64)
    day = (rng.random(n_events) * active_days).astype(np.int64)
    day = (day * 7919 + player) % days  # spread each player's active days over the window
    hour = rng.normal(20.0, 3.0, n_events) % 24.0
    start_us = int(START.timestamp()) * 1_000_000
    ts = start_us + day * 86_400_000_000 + (hour * 3_600_000_000).astype(np.int64)
    kind = TYPES[rng.choice(TYPES.size, n_events, p=TYPE_SHARES)]
    value = np.where(
        kind == "session",
        rng.exponential(900.0, n_events),
        np.where((kind == "purchase") | (kind == "refund"), rng.exponential(5.0, n_events), np.nan),
    )
    frame = pl.DataFrame(
        {
            "player_id": pl.Series(player).cast(pl.String).str.pad_start(7, "0").str.replace("^", "p"),
            "event_type": pl.Series(kind),
            "timestamp": pl.Series(ts).cast(pl.Datetime("us")).dt.replace_time_zone("UTC"),
            "value": pl.Series(value, nan_to_null=True),
        }
    )
    return frame.sort("timestamp")


def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(events: pl.DataFrame, timezone: str, repeat: int) -> dict[str, float]:
    plain = events.lazy().group_by("player_id", pl.col("timestamp").dt.date().alias("date")).agg(
        pl.len(), pl.col("value").sum()
    )
    daily = events_to_daily(events, timezone=timezone)  # warm-up (offset tables, allocator)
    plain.collect()
    window = windows_for(START.date() + dt.timedelta(days=27), timezone=timezone)["profile"]
    window_features(daily, window, holiday_country="GB")
    ours, base, per_day = [], [], []
    for _ in range(repeat):
        base.append(_time(plain.collect))
        ours.append(_time(lambda: events_to_daily(events, timezone=timezone)))
        per_day.append(_time(lambda: window_features(daily, window, holiday_country="GB")))
    n = events.height
    events_per_s = n / statistics.median(ours)
    plain_per_s = n / statistics.median(base)
    return {
        "events_per_s": round(events_per_s),
        "plain_groupby_events_per_s": round(plain_per_s),
        "ratio": round(events_per_s / plain_per_s, 3),
        "player_days_per_s": round(daily.height / statistics.median(per_day)),
        "player_days": daily.height,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=3_000_000)
    parser.add_argument("--players", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--timezone", default="Europe/London", help="second zone reported (non-UTC)")
    args = parser.parse_args()
    events = make_events(args.events, args.players)
    result = measure(events, "UTC", args.repeat)
    local = measure(events, args.timezone, args.repeat)
    result.update(
        {
            "events": events.height,
            "players": args.players,
            "repeat": args.repeat,
            args.timezone: {k: v for k, v in local.items() if k != "player_days"},
        }
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
