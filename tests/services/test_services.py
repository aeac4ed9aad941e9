"""The services over a real database (SQLite and PostgreSQL, through the Alembic migrations)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import orjson
import polars as pl
import pytest

from unified_segmentation.errors import GameNotFound, InvalidInput, NoTaxonomy, PlayerNotFound
from unified_segmentation.features import window_features, windows_for
from unified_segmentation.game_settings import GameSettings
from unified_segmentation.ingest import read_events
from unified_segmentation.services.facade import Services
from unified_segmentation.storage import repositories as repo
from unified_segmentation.storage.migrate import upgrade
from unified_segmentation.synth import PlantedSpec, generate_game

GAME = "svc_game"
AS_OF = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def seeded(request, new_database):
    url = new_database(request.param)
    upgrade(url)
    svc = Services(url)
    game = generate_game(PlantedSpec(n_players=800, seed=3, as_of=AS_OF))
    first = svc.ingest_events(GAME, game.events)
    svc.ingest_outcomes(GAME, game.outcomes)
    tax = svc.calibrate(GAME, as_of=AS_OF, force=True)
    yield svc, game, first, tax
    svc.close()


def _daily_totals(svc: Services) -> dict:
    with svc.Session() as s:
        d = repo.load_daily(s, GAME)
    return {c: float(d[c].sum()) for c in ("sessions", "purchases", "spend", "social_events")}


def test_ingest_is_idempotent(seeded):
    svc, game, first, _ = seeded
    assert first["inserted"] == game.events.height and first["duplicates"] == 0
    before = _daily_totals(svc)
    again = svc.ingest_events(GAME, game.events.head(5000))
    assert again == {"game_id": GAME, "accepted": 5000, "inserted": 0, "duplicates": 5000}
    assert _daily_totals(svc) == before


def test_bad_rows_write_nothing(seeded):
    svc, *_ = seeded
    with svc.Session() as s:
        n_before = repo.count_events(s, GAME)
    rows = [{"player_id": "x1", "event_type": "purchase", "timestamp": "2026-03-01T10:00:00Z", "value": 1.0},
            {"player_id": "x1", "event_type": "purchase", "timestamp": "2026-03-01T11:00:00Z", "value": float("nan")}]
    with pytest.raises(InvalidInput) as exc:
        svc.ingest_events(GAME, read_events(rows))
    assert "value" in exc.value.detail and "2" in exc.value.detail
    with svc.Session() as s:
        assert repo.count_events(s, GAME) == n_before


def test_taxonomy_versions_rollback_and_stable_ids(seeded):
    svc, _, _, tax = seeded
    v1 = tax["taxonomy_version"]
    same = svc.calibrate(GAME, as_of=AS_OF)  # data unchanged: the active version comes back
    assert same["taxonomy_version"] == v1
    v2 = svc.calibrate(GAME, as_of=AS_OF, force=True)
    assert v2["taxonomy_version"] == v1 + 1
    for a1, a2 in zip(tax["universal_axes"], v2["universal_axes"], strict=True):
        assert [s["segment_id"] for s in a1["segments"]] == [s["segment_id"] for s in a2["segments"]]
        assert [s["segment_name"] for s in a1["segments"]] == [s["segment_name"] for s in a2["segments"]]
    back = svc.rollback(GAME)
    assert back["taxonomy_version"] == v1
    stored = svc.get_taxonomy(GAME, v1)
    assert orjson.dumps(stored, option=orjson.OPT_SORT_KEYS) == orjson.dumps(back, option=orjson.OPT_SORT_KEYS)
    assert svc.categorize(GAME, "test_player", as_of=AS_OF)["taxonomy_version"] == v1
    assert [h["version"] for h in svc.taxonomy_history(GAME)][:2] == [v1 + 1, v1]
    diff = svc.diff(GAME, v1, v1 + 1)
    assert diff["axes"]["monetization"]["removed"] == {}


def test_categorize_player_shape_and_errors(seeded):
    svc, game, *_ = seeded
    p = svc.categorize(GAME, "test_player", as_of=AS_OF)
    assert set(p["axes"]) >= {"monetization", "engagement", "temporal", "social"}
    assert p["axes"]["engagement"]["primary_segment"] == "regular"
    assert 0 < p["confidence"] <= 1 and len(p["top_segments"]) <= 7
    mem = p["axes"]["monetization"]["memberships"]
    assert all(0 <= m["membership_strength"] <= 1 for m in mem)
    assert abs(sum(m["membership_probability"] for m in mem) - 1) < 0.02
    with pytest.raises(PlayerNotFound):
        svc.categorize(GAME, "nobody", as_of=AS_OF)
    with pytest.raises(GameNotFound):
        svc.categorize("no_such_game", "test_player")
    svc.put_settings("empty_game", {"timezone": "Europe/London"})
    with pytest.raises(NoTaxonomy):
        svc.categorize("empty_game", "p1")
    batch = svc.categorize_batch(GAME, ["test_player", "nobody"], as_of=AS_OF, compact=True)
    assert batch["errors"] == [{"player_id": "nobody", "error": "player_not_found"}]
    assert batch["profiles"][0]["primary_segments"]["engagement"] == "regular"


def test_a_purchase_counts_at_once(seeded):
    svc, *_ = seeded
    before = svc.categorize(GAME, "test_player", as_of=AS_OF)
    ts = AS_OF - timedelta(hours=1)
    ev = read_events([{"event_id": "acceptance-1", "player_id": "test_player", "event_type": "purchase",
                       "timestamp": ts.isoformat(), "value": 42.0}])
    svc.ingest_events(GAME, ev)
    after = svc.categorize(GAME, "test_player", as_of=AS_OF)
    exposure = after["exposure_days"]
    rise = after["metrics"]["spend_per_day"] - before["metrics"]["spend_per_day"]
    assert rise == pytest.approx(42.0 / exposure, rel=1e-9)


def test_baseline_reconstruction_from_stored_offsets(seeded):
    svc, *_ = seeded
    summary = svc.categorize_all(GAME, as_of=AS_OF)
    assert summary["players"] > 700
    tax = svc.taxonomy_object(GAME, summary["taxonomy_version"])
    with svc.Session() as s:
        offsets = repo.load_offsets(s, GAME, summary["taxonomy_version"])
        daily = repo.load_daily(s, GAME)
        first = repo.players_first_seen(s, GAME)
    st = GameSettings.from_dict(tax.settings)
    w = windows_for(AS_OF, timezone=st.timezone, profile_days=st.profile_days, current_days=st.current_days,
                    typical_days=st.typical_days)
    typ = window_features(daily, w["typical"], first_seen=first, custom_types=tax.custom_types)
    axis = tax.axis("engagement")
    cols = tax.metric_index(axis.metrics)
    off = offsets.filter(pl.col("axis") == "engagement").sort("player_id")
    typ = typ.filter(pl.col("player_id").is_in(off["player_id"].implode())).sort("player_id")
    centers = {s.segment_id: s.center for s in axis.segments}
    model = np.array([[orjson.loads(o)[m] for m in axis.metrics] for o in off["offset_model"]])
    center = np.stack([centers[i] for i in off["segment_id"]])
    rebuilt = tax.scaler.inverse_columns(center + model, cols)
    expected = typ.select(axis.metrics).to_numpy()
    assert np.allclose(rebuilt, expected, rtol=1e-9, atol=1e-9)


def test_categorize_all_rows_do_not_depend_on_the_chunking(seeded):
    """Chunks of 9 players (a first one of 2, then a short last one) store exactly the rows one chunk
    stores: memberships and typical offsets, apart from their timestamps."""
    svc, *_ = seeded

    def stored(chunk: int) -> tuple[dict, pl.DataFrame, pl.DataFrame]:
        summary = svc.categorize_all(GAME, as_of=AS_OF, chunk=chunk)
        with svc.Session() as s:
            version = summary["taxonomy_version"]
            members = repo.load_memberships(s, GAME, version).drop("last_updated")
            offsets = repo.load_offsets(s, GAME, version).drop("updated_at")
        return summary, members, offsets

    whole, m1, o1 = stored(100_000)
    chunked, m2, o2 = stored(9)
    assert chunked["players"] == whole["players"] > 700
    assert chunked["rows_written"] == whole["rows_written"] == m1.height + o1.height
    assert m2.equals(m1) and o2.equals(o1)
    assert m1["player_id"].n_unique() == whole["players"]


def test_detect_and_list_anomalies(seeded):
    svc, game, *_ = seeded
    summary = svc.detect_all(GAME, as_of=AS_OF)
    res = summary["result"]
    assert summary["players"] > 700
    listing = svc.list_anomalies(GAME, limit=5)
    items = listing["items"]
    assert len(items) == min(5, summary["anomalous"])
    surprises = [i["surprise"] for i in items]
    assert surprises == sorted(surprises, reverse=True)
    d = svc.detect(GAME, "test_player", as_of=AS_OF)
    assert set(d) >= {"is_anomalous", "overall_score", "axes", "context", "taxonomy_version"}
    eng = d["axes"]["engagement"]
    assert eng["distance_delta"] == pytest.approx(eng["current_distance"] - eng["typical_distance"])
    planted = game.truth.filter(pl.col("anomaly").is_not_null())["player_id"].to_list()
    flagged = {p for p, f in zip(res.player_ids, res.is_anomalous, strict=True) if f}
    assert len(flagged & set(planted)) >= len(flagged) * 0.5


def test_erase_player_everywhere(seeded):
    svc, *_ = seeded
    pid = "p000007"
    out = svc.erase_player(GAME, pid)
    assert out["erased"] and out["rows_deleted"] > 0
    with pytest.raises(PlayerNotFound):
        svc.categorize(GAME, pid, as_of=AS_OF)


def test_api_keys_hashed_and_checked(seeded):
    svc, *_ = seeded
    key, info = svc.create_api_key("read", games=[GAME], name="t")
    assert "key_hash" not in info
    assert svc.authenticate(key)["scope"] == "read"
    assert svc.authenticate(key + "x") is None
    assert svc.authenticate("garbage") is None
