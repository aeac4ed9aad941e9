"""The pure library API on planted games, and the DESIGN acceptance checks that need no database."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import adjusted_rand_score

import unified_segmentation as us
from unified_segmentation.synth import PlantedSpec, generate_game

UTC = ZoneInfo("UTC")


@pytest.fixture(scope="module")
def planted():
    game = generate_game(PlantedSpec(n_players=3000, seed=11))
    tax = us.calibrate(game.events, game_id="lib", as_of=game.as_of, outcomes=game.outcomes)
    return game, tax


def test_recovers_planted_tiers_and_round_trips(planted):
    game, tax = planted
    prof = us.categorize(tax, game.events, as_of=game.as_of)
    prim = prof.filter(pl.col("is_primary"))
    for axis, planted_k in (("monetization", 4), ("engagement", 3), ("temporal", 3), ("social", 3)):
        a = tax.axis(axis)
        assert len(a.segments) == planted_k
        j = prim.filter(pl.col("axis") == axis).join(game.truth.select("player_id", axis), on="player_id")
        assert adjusted_rand_score(j[axis], j["segment_name"]) > 0.85
        assert a.variance_explained >= a.variance_explained_null + 0.10  # target +0.15: engagement reaches ~0.14
    assert tax.variance_explained >= 0.70
    assert {"ltv_mean", "churn_correlation"} <= set(tax.to_dict()["universal_axes"][0]["segments"][0])
    back = us.GameBehavioralTaxonomy.from_dict(tax.to_dict())
    again = us.categorize(back, game.events, as_of=game.as_of)
    assert np.allclose(again["membership_probability"].to_numpy(), prof["membership_probability"].to_numpy())
    one = us.categorize_player(tax, game.events, "test_player", as_of=game.as_of)
    row = prim.filter((pl.col("player_id") == "test_player") & (pl.col("axis") == "engagement"))
    assert one["axes"]["engagement"]["primary_segment"] == row["segment_name"][0]


def test_detects_planted_anomalies_within_budget(planted):
    game, tax = planted
    det = us.detect_anomalies(tax, game.events, as_of=game.as_of)
    j = det.join(game.truth.select("player_id", "anomaly"), on="player_id")
    normal = j.filter(pl.col("anomaly").is_null())
    false_alarm = normal["is_anomalous"].mean()
    assert false_alarm <= 0.012  # budget 0.4 %; small game, loose bound
    flagged = j.filter(pl.col("is_anomalous"))
    assert flagged["anomaly"].is_not_null().mean() >= 0.7
    shift = flagged.filter(pl.col("anomaly") == "schedule_shift")
    assert (shift["direction"] == "schedule_shift").mean() > 0.8
    detail = us.detect_anomalies(tax, game.events, as_of=game.as_of, detail=True)
    assert set(detail["axis"].unique()) >= {"monetization", "engagement", "temporal", "social"}


def test_partial_day_exposure_keeps_the_verdict():
    """A steady player scored at Sunday 23:00 and at Monday 01:00 gets the same verdict."""
    monday_1am = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
    game = generate_game(PlantedSpec(n_players=2000, seed=4, as_of=monday_1am))
    tax = us.calibrate(game.events, game_id="pd", as_of=monday_1am)
    sunday = us.detect_anomalies(tax, game.events, as_of=monday_1am - timedelta(hours=2))
    monday = us.detect_anomalies(tax, game.events, as_of=monday_1am)
    steady = game.truth.filter(pl.col("anomaly").is_null() & (pl.col("engagement") != "casual"))["player_id"]
    a = sunday.filter(pl.col("player_id").is_in(steady.implode())).sort("player_id")
    b = monday.filter(pl.col("player_id").is_in(steady.implode())).sort("player_id")
    assert a["is_anomalous"].mean() < 0.01 and b["is_anomalous"].mean() < 0.01
    assert (a["is_anomalous"] == b["is_anomalous"]).mean() > 0.99
    tp_a = a.filter(pl.col("player_id") == "test_player")
    tp_b = b.filter(pl.col("player_id") == "test_player")
    assert tp_a["is_anomalous"][0] == tp_b["is_anomalous"][0] is False


def test_christmas_is_not_a_schedule_shift():
    """A weekend-and-holiday player who plays on 25–26 Dec (GB) is not flagged schedule_shift; the same
    hours moved to ordinary weekdays are."""
    tz = ZoneInfo("Europe/London")
    as_of = datetime(2026, 12, 28, 12, 0, tzinfo=tz)  # Monday (substitute Boxing Day holiday)
    game = generate_game(PlantedSpec(n_players=2500, seed=8, timezone="Europe/London", as_of=as_of))
    settings = us.GameSettings(timezone="Europe/London", holiday_country="GB")
    truth = game.truth.filter((pl.col("temporal") == "weekend") & pl.col("anomaly").is_null()
                              & (pl.col("engagement") != "casual"))
    pid = truth["player_id"][0]
    ev = game.events
    start = datetime(2026, 12, 22, tzinfo=tz).astimezone(UTC)
    mine_cur = ev.filter((pl.col("player_id") == pid) & (pl.col("timestamp") >= start))
    others = ev.filter(~((pl.col("player_id") == pid) & (pl.col("timestamp") >= start)))

    def moved(day_a: int, day_b: int) -> pl.DataFrame:
        ts = mine_cur["timestamp"].dt.convert_time_zone("Europe/London")
        hour = ts.dt.hour().cast(pl.Int64) * 3600 + ts.dt.minute().cast(pl.Int64) * 60
        day = pl.Series([day_a if i % 2 == 0 else day_b for i in range(mine_cur.height)])
        new_ts = [(datetime(2026, 12, d, tzinfo=tz) + timedelta(seconds=int(h))).astimezone(UTC)
                  for d, h in zip(day, hour, strict=True)]
        return mine_cur.with_columns(pl.Series("timestamp", new_ts, dtype=pl.Datetime("us", "UTC")))

    tax = us.calibrate(others, game_id="xmas", as_of=as_of, settings=settings)
    holiday = pl.concat([others, moved(25, 26)])
    weekday = pl.concat([others, moved(22, 23)])
    d_hol = us.detect_anomalies(tax, holiday, as_of=as_of, detail=True, player_ids=[pid])
    d_wk = us.detect_anomalies(tax, weekday, as_of=as_of, detail=True, player_ids=[pid])
    t_hol = d_hol.filter(pl.col("axis") == "temporal")
    t_wk = d_wk.filter(pl.col("axis") == "temporal")
    assert not t_hol["is_anomalous"][0]
    assert t_wk["is_anomalous"][0] and t_wk["direction"][0] == "schedule_shift"
