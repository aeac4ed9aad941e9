"""``useg demo``: a planted game through the whole service, found next to planted."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import polars as pl
from rich.table import Table
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score

from .output import console, progress

DEMO_GAME = "test_game"
AXES = ("monetization", "engagement", "temporal", "social")


def _match(found: np.ndarray, planted: np.ndarray) -> dict:
    fv, pv = np.unique(found), np.unique(planted)
    table = np.array([[np.sum((found == f) & (planted == p)) for p in pv] for f in fv])
    rows, cols = linear_sum_assignment(-table)
    return {fv[r]: pv[c] for r, c in zip(rows, cols, strict=True)}


def run_demo(svc, *, players: int = 5000, seed: int = 0) -> dict:
    from ..synth import PlantedSpec, generate_game

    as_of = datetime.now(UTC).replace(microsecond=0)
    with progress("generating the planted game"):
        game = generate_game(PlantedSpec(n_players=players, seed=seed, as_of=as_of))
    svc.delete_game(DEMO_GAME)
    svc.put_settings(DEMO_GAME, {"timezone": "UTC"}, actor="demo")
    with progress(f"ingesting {game.events.height:,} events"):
        ing = svc.ingest_events(DEMO_GAME, game.events)
        svc.ingest_outcomes(DEMO_GAME, game.outcomes)
    # the demo's data ends now; pin it so a server started later still sees full windows
    svc.put_settings(DEMO_GAME, {"default_as_of": as_of.isoformat()}, actor="demo")
    with progress("calibrating"):
        tax = svc.calibrate(DEMO_GAME, as_of=as_of, force=True)
    with progress("categorizing every player", total=players) as adv:
        cat = svc.categorize_all(DEMO_GAME, as_of=as_of, progress=adv)
    with progress("detecting anomalies"):
        det = svc.detect_all(DEMO_GAME, as_of=as_of)
    res = det.pop("result")
    console.print(f"[bold]test_game[/bold]: {players:,} players, {ing['inserted']:,} events ingested, taxonomy "
                  f"v{tax['taxonomy_version']}, variance explained {tax['variance_explained']:.3f}, "
                  f"{cat['players_per_s']:.0f} players/s categorized and persisted")
    prim = svc.primary_segments(DEMO_GAME, tax["taxonomy_version"])
    truth = game.truth
    table = Table(title="found vs planted (universal axes)")
    for c in ("axis", "planted (share %)", "found (share %)", "k found/planted", "ARI"):
        table.add_column(c)
    summary = {"axes": {}}
    for axis in AXES:
        ax = next(a for a in tax["universal_axes"] if a["axis_id"] == axis)
        planted = truth.group_by(axis).len().sort(axis)
        p_txt = ", ".join(f"{r[0]} {100 * r[1] / truth.height:.1f}" for r in planted.iter_rows())
        f_txt = ", ".join(f"{s['segment_name']} {s['population_percentage']:.1f}" for s in ax["segments"])
        j = prim.filter(pl.col("axis") == axis).join(truth.select("player_id", axis), on="player_id")
        ari = adjusted_rand_score(j[axis].to_numpy(), j["segment_name"].to_numpy()) if j.height else float("nan")
        k_pl = truth[axis].n_unique()
        table.add_row(axis, p_txt, f_txt, f"{ax['segment_count']}/{k_pl}", f"{ari:.3f}")
        summary["axes"][axis] = {"ari": ari, "k": ax["segment_count"], "planted_k": k_pl}
    console.print(table)
    flagged = pl.DataFrame({"player_id": res.player_ids, "flag": res.is_anomalous})
    j = truth.select("player_id", "anomaly").join(flagged, on="player_id")
    kinds = j["anomaly"].to_numpy()
    flag = j["flag"].to_numpy()
    planted_any = j["anomaly"].is_not_null().to_numpy()
    at = Table(title="anomalies: planted vs flagged")
    for c in ("kind", "planted", "flagged"):
        at.add_column(c)
    for k in ("spend_spike", "engagement_drop", "schedule_shift", "social_burst"):
        m = kinds == k
        at.add_row(k, str(int(m.sum())), str(int((flag & m).sum())))
    at.add_row("normal players", str(int((~planted_any).sum())), str(int((flag & ~planted_any).sum())))
    console.print(at)
    precision = float((flag & planted_any).sum() / max(flag.sum(), 1))
    recall = float((flag & planted_any).sum() / max(planted_any.sum(), 1))
    console.print(f"flagged {int(flag.sum())} players: precision {precision:.2f}, recall over all plants "
                  f"{recall:.2f} (plants too weak to see in one week included); "
                  f"{len(det['shifts'])} game-wide shifts")
    p = svc.categorize(DEMO_GAME, "test_player", as_of=as_of)
    console.print("test_player: " + ", ".join(f"{a}={v['primary_segment']}" for a, v in p["axes"].items())
                  + f", confidence {p['confidence']:.2f}")
    console.print("next: [bold]useg demo --serve[/bold] (or useg serve) and try\n"
                  "  curl -X POST localhost:8000/api/v1/segmentation/categorize -H 'Content-Type: application/json' "
                  "-d '{\"player_id\":\"test_player\",\"game_id\":\"test_game\"}'")
    summary["precision"] = precision
    summary["recall_all_plants"] = recall
    return summary
