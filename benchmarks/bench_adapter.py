"""Adapter figures: added latency of the adapter path (POST …/profile logic) over a direct categorize call,
and of shadow mode (which must add nothing: the unified call runs off the request path), in-process on
SQLite with the demo-sized planted game. Medians/p95 over repeated calls; the direct call is the baseline.

    python benchmarks/bench_adapter.py [--players 3000] [--calls 300]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from unified_segmentation.services.facade import Services
from unified_segmentation.synth import PlantedSpec, generate_game

GAME = "bench_adapter"


def timed(fn, ids) -> dict:
    out = []
    for pid in ids:
        t0 = time.perf_counter()
        fn(pid)
        out.append((time.perf_counter() - t0) * 1000)
    a = np.asarray(out)
    return {"p50_ms": float(np.percentile(a, 50)), "p95_ms": float(np.percentile(a, 95)), "calls": len(a)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--players", type=int, default=3000)
    ap.add_argument("--calls", type=int, default=300)
    args = ap.parse_args()
    as_of = datetime(2026, 3, 2, 12, tzinfo=UTC)
    with tempfile.TemporaryDirectory() as d:
        svc = Services(f"sqlite:///{Path(d) / 'useg.db'}")
        svc.upgrade()
        game = generate_game(PlantedSpec(n_players=args.players, seed=0, as_of=as_of))
        svc.ingest_events(GAME, game.events)
        svc.put_settings(GAME, {"default_as_of": as_of.isoformat()})
        svc.calibrate(GAME, force=True)
        rng = np.random.default_rng(0)
        ids = rng.choice(game.truth["player_id"].to_list(), args.calls).tolist()
        for pid in ids[:20]:  # warm caches
            svc.categorize(GAME, pid)
        res = {"players": args.players, "calls": args.calls}
        res["direct_categorize"] = timed(lambda p: svc.categorize(GAME, p), ids)
        res["direct_categorize_and_detect"] = timed(lambda p: (svc.categorize(GAME, p), svc.detect(GAME, p)), ids)
        svc.put_rollout(GAME, {"strategy": "full_rollout"}, actor="bench")
        res["adapter_full_rollout_unified"] = timed(lambda p: svc.profile(GAME, p), ids)
        svc.put_rollout(GAME, {"strategy": "parallel_only"}, actor="bench")
        res["adapter_parallel_only_legacy"] = timed(lambda p: svc.profile(GAME, p), ids)
        svc.put_rollout(GAME, {"strategy": "shadow_mode", "shadow_sample": 100}, actor="bench")
        res["adapter_shadow_mode_100pct"] = timed(lambda p: svc.profile(GAME, p), ids)
        svc.router.drain(timeout=120)
        report = svc.rollout_report(GAME)
        res["shadow_report"] = {k: report.get(k) for k in ("runs", "compared", "errors", "equivalence_rate",
                                                          "latency_ms")}
        base = res["direct_categorize_and_detect"]
        for k in ("adapter_full_rollout_unified", "adapter_parallel_only_legacy", "adapter_shadow_mode_100pct"):
            res[k]["added_p50_ms_vs_direct"] = res[k]["p50_ms"] - base["p50_ms"]
            res[k]["added_p95_ms_vs_direct"] = res[k]["p95_ms"] - base["p95_ms"]
        res["shadow_added_p50_ms_vs_parallel"] = (res["adapter_shadow_mode_100pct"]["p50_ms"]
                                                  - res["adapter_parallel_only_legacy"]["p50_ms"])
        svc.close()
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
