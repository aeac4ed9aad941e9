"""Calibration speed and memory (TARGETS.md "Speed and memory", calibration row), with a plain scikit-learn
pipeline as the baseline measured in the same run.

Data: the planted game of ``synth.generate_daily(n_players=N)`` (real cluster structure on the four universal
axes), rolled into per-player features of the profile window exactly as ``calibrate_frames`` does
(``pipeline.data.compute_windows`` -> players with ``active_days >= 1`` -> the universal metrics and the
``<type>_per_day`` metrics as a float64 matrix). Generation and feature roll-up are timed but are not part of
the calibration figures.

**Ours, "calibrate from features"**: ``MetricScaler`` fit/transform + ``calibration.varying_metrics`` (prep),
then ``calibration.fit_axis`` on each universal axis's model-space columns (K-means sweep k = 2..8 with
``n_init`` starts on <= 20k of the <= 200k sampled players, Kneedle, the candidate k refitted on the whole
sample from the sweep's centers (one start), acceptance rule: segment sizes, silhouette on 2k, half-sample
stability on the sweep players; labels for every player, Ledoit-Wolf covariances, Gaussian null), with the
rule constants of ``GameSettings()``.

**Baseline**: per axis, on the same kept metric columns in metric units, ``StandardScaler`` + ``PCA`` fitted on
all players, a ``KMeans`` sweep k = 2..8 (``n_init`` = 4, ``random_state`` 0) on the same <= 200k sample, k
picked by the best silhouette on a 2k subsample, then ``predict`` for every player. Pinned to 1 thread
(threadpoolctl) like ours (``fit_axis`` pins its K-means to 1 thread itself).

Sizes below 500k players run in this process, ours and the baseline interleaved in each of ``--repeat``
runs. The size of 500k players or more (at most one; default 1M) runs ours in a **child process** (this
script with ``--child``) that is spawned before this process allocates anything large (a child's
``ru_maxrss`` inherits the parent's high-water mark at spawn), waits for the feature matrix (a ``.npy`` in a
temporary directory), reports its RSS before calibrating and runs ``--repeat-large`` calibrations; then this
process reads ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` (the peak RSS of the child, KB on Linux) and runs the
baseline ``--repeat-large`` times on the same matrix. Finally the whole
``pipeline.calibrate.calibrate_frames(daily, ...)`` (windows, calibration, game-specific axes, contexts, the
anomaly null run) is timed on the ``--frames-players`` (100k) daily frame.

Prints one JSON document (medians; every run's seconds are listed too).

    python benchmarks/bench_calibrate.py [--players 100000 1000000] [--repeat 5] [--repeat-large 3]
        [--frames-players 100000] [--frames-repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD_THRESHOLD = 500_000
TARGET_S = {100_000: 4.0, 1_000_000: 15.0}
TARGET_PEAK_RSS_MB = 2048
SEED_TARGET_S = 45.0


def _status_mb(field: str) -> float:
    """``VmRSS`` / ``VmHWM`` of this process from /proc (MB)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _spawn_child(seed: int) -> tuple[subprocess.Popen, float]:
    parent_hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--child", "--seed", str(seed)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    return proc, parent_hwm


# The heavy imports come after the child is spawned (see main); these helpers import lazily.

def build_features(n_players: int, seed: int) -> dict:
    """Generate the planted game's daily rows and the calibration feature matrix (as calibrate_frames)."""
    import polars as pl

    from unified_segmentation.features import METRICS_BY_AXIS, select_custom_types
    from unified_segmentation.game_settings import GameSettings
    from unified_segmentation.pipeline.data import UNIVERSAL_AXES, compute_windows, first_seen, matrix
    from unified_segmentation.synth import generate_daily

    t0 = time.perf_counter()
    game = generate_daily(n_players=n_players, seed=seed)
    t1 = time.perf_counter()
    daily = game.daily
    settings = GameSettings(timezone=game.spec.timezone)
    custom = select_custom_types(daily)
    prof = compute_windows(daily, game.as_of, settings, custom_types=custom, first=first_seen(daily),
                           which=("profile",))["profile"]
    calib = prof.filter(pl.col("active_days") >= 1)
    universal = [m for a in UNIVERSAL_AXES for m in METRICS_BY_AXIS[a]]
    metrics = [m for m in universal if m in calib.columns] + \
              [f"{t}_per_day" for t in custom if f"{t}_per_day" in calib.columns]
    X = matrix(calib, metrics)
    t2 = time.perf_counter()
    return {"game": game, "settings": settings, "X": X, "metrics": metrics,
            "info": {"players": n_players, "daily_rows": daily.height, "calibration_players": int(X.shape[0]),
                     "metrics": len(metrics), "generate_daily_s": round(t1 - t0, 2),
                     "profile_features_s": round(t2 - t1, 2)}}


def calibrate_from_features(X, metrics: list[str]) -> dict:
    """Ours: scaler + varying metrics + fit_axis on every universal axis. Returns seconds and chosen k."""
    import numpy as np

    from unified_segmentation.core import calibration as cal
    from unified_segmentation.core.transform import MetricScaler
    from unified_segmentation.features import HEAVY_TAILED, METRICS_BY_AXIS
    from unified_segmentation.game_settings import GameSettings
    from unified_segmentation.pipeline.calibrate import rules_from
    from unified_segmentation.pipeline.data import UNIVERSAL_AXES

    rules = rules_from(GameSettings())
    t0 = time.perf_counter()
    scaler = MetricScaler(metrics=metrics,
                          log1p=[m in HEAVY_TAILED or m.endswith("_per_day") for m in metrics]).fit(X)
    Z = scaler.transform(X)
    n = X.shape[0]
    varying = cal.varying_metrics(X, max(rules.min_members, int(np.ceil(rules.min_share * n))))
    out = {"prep_s": time.perf_counter() - t0, "fit_axis_s": {}, "k": {}, "columns": {}}
    for axis in UNIVERSAL_AXES:
        cols = [metrics.index(m) for m in METRICS_BY_AXIS[axis] if m in metrics and varying[metrics.index(m)]]
        out["columns"][axis] = cols
        if not cols:
            continue
        t = time.perf_counter()
        fit = cal.fit_axis(Z[:, np.array(cols)], rules)
        out["fit_axis_s"][axis] = time.perf_counter() - t
        out["k"][axis] = fit.k
    out["total_s"] = time.perf_counter() - t0
    return out


def sklearn_baseline(X, columns: dict[str, list[int]], seed: int = 0) -> dict:
    """StandardScaler + PCA + KMeans sweep k=2..8 (n_init=4) on the same <= 200k sample, per axis."""
    import numpy as np
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.metrics import silhouette_score
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    from unified_segmentation.core.calibration import RuleConstants

    rules = RuleConstants()
    out = {"axis_s": {}, "k": {}}
    t0 = time.perf_counter()
    with threadpool_limits(1):
        for axis, cols in columns.items():
            if not cols:
                continue
            t = time.perf_counter()
            rng = np.random.default_rng(seed)
            Za = PCA(random_state=seed).fit_transform(StandardScaler().fit_transform(X[:, np.array(cols)]))
            n = len(Za)
            sample = Za if n <= rules.sample_size else Za[rng.choice(n, rules.sample_size, replace=False)]
            sil_idx = rng.choice(len(sample), min(rules.silhouette_sample, len(sample)), replace=False)
            best = None
            for k in range(rules.min_k, rules.max_k + 1):
                km = KMeans(n_clusters=k, n_init=rules.n_init, random_state=seed).fit(sample)
                sub = km.labels_[sil_idx]
                s = float(silhouette_score(sample[sil_idx], sub)) if len(np.unique(sub)) > 1 else -1.0
                if best is None or s > best[0]:
                    best = (s, k, km)
            best[2].predict(Za)
            out["axis_s"][axis] = time.perf_counter() - t
            out["k"][axis] = best[1]
    out["total_s"] = time.perf_counter() - t0
    return out


def _median_summary(ours: list[dict], base: list[dict]) -> dict:
    med = statistics.median
    o_tot, b_tot = med([r["total_s"] for r in ours]), med([r["total_s"] for r in base])
    axes = list(ours[0]["fit_axis_s"])
    return {
        "ours_total_s": round(o_tot, 3),
        "ours_prep_s": round(med([r["prep_s"] for r in ours]), 3),
        "ours_fit_axis_s": {a: round(med([r["fit_axis_s"][a] for r in ours]), 3) for a in axes},
        "ours_k": ours[0]["k"],
        "baseline_total_s": round(b_tot, 3),
        "baseline_axis_s": {a: round(med([r["axis_s"][a] for r in base]), 3) for a in base[0]["axis_s"]},
        "baseline_k_best_silhouette": base[0]["k"],
        "ratio_ours_over_baseline_time": round(o_tot / b_tot, 2),
        "runs_s": {"ours": [round(r["total_s"], 3) for r in ours], "baseline": [round(r["total_s"], 3) for r in base]},
    }


def run_child(seed: int) -> None:
    """Child: wait for a job on stdin, calibrate, print one JSON line with times and RSS."""
    import numpy as np

    from unified_segmentation.core import calibration  # noqa: F401 - imports before the RSS baseline
    from unified_segmentation.pipeline import calibrate  # noqa: F401

    rss_imports = _status_mb("VmRSS")
    line = sys.stdin.readline()
    if not line.strip():
        return
    job = json.loads(line)
    X = np.load(job["path"])
    rss_before = _status_mb("VmRSS")
    runs = [calibrate_from_features(X, job["metrics"]) for _ in range(job["repeat"])]
    print(json.dumps({"runs": runs, "rss_after_imports_mb": rss_imports, "rss_before_calibration_mb": rss_before,
                      "vmhwm_mb": _status_mb("VmHWM")}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--players", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--repeat", type=int, default=5, help="runs per in-process size")
    ap.add_argument("--repeat-large", type=int, default=3, help="runs for the child-process size")
    ap.add_argument("--frames-players", type=int, default=100_000, help="0 skips calibrate_frames")
    ap.add_argument("--frames-repeat", type=int, default=5)
    ap.add_argument("--child-from", type=int, default=CHILD_THRESHOLD,
                    help="sizes from this many players run in the child process (at most one)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        run_child(args.seed)
        return

    large = [n for n in args.players if n >= args.child_from]
    if len(large) > 1:
        ap.error(f"at most one size >= {args.child_from} (it runs in the child process)")
    child, parent_hwm_at_spawn = _spawn_child(args.seed) if large else (None, None)
    # scikit-learn's first KMeans.fit asks loky for the physical core count by running `lscpu` (cached);
    # run it now, while this process is small, or that short child would carry our later high-water mark
    # into RUSAGE_CHILDREN.
    from joblib import cpu_count

    cpu_count(only_physical_cores=True)

    import gc

    import numpy as np
    from threadpoolctl import threadpool_info

    from unified_segmentation.pipeline.calibrate import calibrate_frames

    out: dict = {
        "benchmark": "calibrate from features",
        "data": "synth.generate_daily (planted game, default spec) -> profile-window features as calibrate_frames",
        "rules": "GameSettings() defaults: k 2..8, sample <= 200k, sweep on <= 20k with n_init 4, "
                 "refit at the candidate k on the sample, silhouette on 2k, half-sample stability >= 0.5",
        "machine": {"cpus": os.cpu_count(), "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
                    "loadavg_1_5_15_start": [round(x, 2) for x in os.getloadavg()],
                    "threadpools": [{k: d.get(k) for k in ("internal_api", "version", "num_threads")}
                                    for d in threadpool_info()]},
        "targets": {"seconds": {str(k): v for k, v in TARGET_S.items()}, "peak_rss_mb_at_1M": TARGET_PEAK_RSS_MB,
                    "seed_seconds": SEED_TARGET_S},
        "sizes": {},
    }
    frames_data = None
    for n in sorted(args.players):
        data = build_features(n, args.seed)
        entry: dict = {"data": data["info"]}
        X, metrics = data["X"], data["metrics"]
        if n < args.child_from:
            ours, base = [], []
            calibrate_from_features(X[:5000], metrics)  # warm-up (imports, threadpool discovery)
            for _ in range(args.repeat):
                ours.append(calibrate_from_features(X, metrics))
                base.append(sklearn_baseline(X, ours[-1]["columns"], args.seed))
            entry.update({"process": "in-process", "repeat": args.repeat, **_median_summary(ours, base)})
            if n == args.frames_players:
                frames_data = data
        else:
            if n != args.frames_players:
                data.pop("game")  # free the daily frame before the child runs
            gc.collect()
            with tempfile.TemporaryDirectory() as tmp:
                other_children_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
                path = Path(tmp) / "features.npy"
                np.save(path, X)
                child.stdin.write(json.dumps({"path": str(path), "metrics": metrics,
                                              "repeat": args.repeat_large}) + "\n")
                child.stdin.flush()
                child_out, _ = child.communicate()
            if child.returncode != 0:
                raise SystemExit(f"calibration child failed with exit code {child.returncode}")
            res = json.loads(child_out.strip().splitlines()[-1])
            peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
            child = None
            base = [sklearn_baseline(X, res["runs"][0]["columns"], args.seed) for _ in range(args.repeat_large)]
            entry.update({"process": "child (ours); baseline in the parent right after",
                          "repeat": args.repeat_large, **_median_summary(res["runs"], base)})
            entry["memory"] = {
                "peak_rss_mb": round(peak_mb, 1),
                "peak_rss_source": "getrusage(RUSAGE_CHILDREN).ru_maxrss of the calibration child",
                "child_vmhwm_mb": round(res["vmhwm_mb"], 1),
                "rss_after_imports_mb": round(res["rss_after_imports_mb"], 1),
                "rss_before_calibration_mb": round(res["rss_before_calibration_mb"], 1),
                "increment_mb": round(peak_mb - res["rss_before_calibration_mb"], 1),
                "feature_matrix_mb": round(X.nbytes / 2**20, 1),
                "parent_hwm_at_spawn_mb": round(parent_hwm_at_spawn, 1),
                "other_children_max_rss_mb": round(other_children_mb, 1),
                "meets_target": peak_mb <= TARGET_PEAK_RSS_MB,
            }
            if n == args.frames_players:
                frames_data = data
        if n in TARGET_S:
            entry["meets_target"] = entry["ours_total_s"] <= TARGET_S[n]
        out["sizes"][str(n)] = entry
        if frames_data is not data:
            del data
        gc.collect()
    if child is not None:  # the large size was not requested after all
        child.communicate("")

    if frames_data is None and args.frames_players > 0 and args.frames_repeat > 0:
        frames_data = build_features(args.frames_players, args.seed)
    if frames_data is not None and args.frames_repeat > 0:
        game, settings = frames_data["game"], frames_data["settings"]
        runs = []
        for _ in range(args.frames_repeat):
            t = time.perf_counter()
            tax = calibrate_frames(game.daily, game_id="bench", as_of=game.as_of, settings=settings)
            runs.append(time.perf_counter() - t)
        out["calibrate_frames"] = {
            "players": args.frames_players, "daily_rows": game.daily.height, "repeat": args.frames_repeat,
            "median_s": round(statistics.median(runs), 3), "runs_s": [round(r, 3) for r in runs],
            "k": {a.axis_id: len(a.segments) for a in tax.axes}, "seed_target_s": SEED_TARGET_S,
            "meets_seed_target": statistics.median(runs) < SEED_TARGET_S,
        }
    out["machine"]["loadavg_1_5_15_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
