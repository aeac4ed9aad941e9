"""Real data (UCI Online Retail, CC BY 4.0; Chen, Sain & Guo 2012): the whole pipeline on messy,
heavy-tailed transactions, and the stability of the taxonomy across random halves of the customers.

Settings per TARGETS.md: Europe/London, GB holidays, profile 365 d, current 30 d, typical 180 d,
as_of 2011-12-09T12:51. Prints JSON: per axis segments and sizes, variance explained, degenerate flags,
profiles for every customer active in the profile window, anomalies listed, and the ARI between the two
half-sample taxonomies' primaries on all customers (target ≥ 0.80 on monetization and engagement), for
several random splits of the customers (``--splits``, seeds of the split; the median is the figure, each
split's ARI and chosen k are listed: one split is one draw of a noisy statistic).

    python benchmarks/bench_real_data.py [path/to/online_retail.csv.gz] [--splits 0 1 2 3 4]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import polars as pl
from sklearn.metrics import adjusted_rand_score

from unified_segmentation.features import events_to_daily
from unified_segmentation.game_settings import GameSettings
from unified_segmentation.ingest import read_online_retail
from unified_segmentation.pipeline import run_detection, score_profiles
from unified_segmentation.pipeline.calibrate import calibrate_frames
from unified_segmentation.pipeline.data import resolve_as_of

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "online_retail" / "online_retail.csv.gz"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("path", nargs="?", type=Path, default=DEFAULT)
    ap.add_argument("--splits", type=int, nargs="+", default=[0, 1, 2, 3, 4],
                    help="seeds of the random half splits (default 0..4)")
    args = ap.parse_args()
    path = args.path
    settings = GameSettings(timezone="Europe/London", holiday_country="GB", profile_days=365, current_days=30,
                            typical_days=180)
    as_of = resolve_as_of("2011-12-09T12:51:00", settings)
    t0 = time.perf_counter()
    events = read_online_retail(path)
    daily = events_to_daily(events, timezone=settings.timezone)
    t1 = time.perf_counter()
    tax = calibrate_frames(daily, game_id="online_retail", as_of=as_of, settings=settings)
    t2 = time.perf_counter()
    ps = score_profiles(tax, daily, as_of)
    active = ~ps.inactive
    res = run_detection(tax, daily, as_of)
    t3 = time.perf_counter()
    out = {
        "events": events.height, "customers": daily["player_id"].n_unique(),
        "profiled_active_customers": int(active.sum()), "anomalous": int(res.is_anomalous.sum()),
        "variance_explained_overall": tax.variance_explained, "quality": tax.quality,
        "seconds": {"read_and_rollup": t1 - t0, "calibrate": t2 - t1, "score_and_detect": t3 - t2},
        "axes": {a.axis_id: {"degenerate": a.degenerate, "reason": a.degenerate_reason, "k": len(a.segments),
                             "variance_explained": a.variance_explained,
                             "variance_explained_null": a.variance_explained_null,
                             "knee": a.selection.get("knee"), "stability": a.selection.get("stability"),
                             "weak_structure": a.weak_structure, "notes": a.selection.get("notes"),
                             "segments": {s.segment_name: round(s.population_percentage, 2) for s in a.segments}}
                 for a in tax.axes},
    }
    ids = np.array(sorted(daily["player_id"].unique().to_list()))
    axes = ("monetization", "engagement", "temporal")
    splits = []
    for seed in args.splits:
        half = np.random.default_rng(seed).random(len(ids)) < 0.5
        halves = []
        for mask in (half, ~half):
            sub = daily.filter(pl.col("player_id").is_in(ids[mask].tolist()))
            halves.append(calibrate_frames(sub, game_id="half", as_of=as_of, settings=settings))
        s1, s2 = (score_profiles(t, daily, as_of) for t in halves)
        m = ~s1.inactive
        row = {"seed": seed, "ari": {}, "k": {}}
        for axis in axes:
            try:
                a1, a2 = s1.axis_scores(axis), s2.axis_scores(axis)
            except KeyError:
                row["ari"][axis] = None
                continue
            row["ari"][axis] = adjusted_rand_score(a1.scores.primary[m], a2.scores.primary[m])
            row["k"][axis] = [len(t.axis(axis).segments) for t in halves]
        splits.append(row)
    out["half_sample_ari"] = {
        a: (statistics.median(v) if (v := [r["ari"][a] for r in splits if r["ari"][a] is not None]) else None)
        for a in axes}
    out["half_sample_splits"] = splits
    print(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
