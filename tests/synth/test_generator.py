"""Tests of the planted-game generator: determinism, pinned shares, per-tier rates, schema, fast path."""

from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl
import pytest

from unified_segmentation.errors import InvalidInput
from unified_segmentation.synth import (
    ANOMALY_KINDS,
    DAILY_SCHEMA,
    ENGAGEMENT_TIERS,
    EVENTS_SCHEMA,
    MONETIZATION_TIERS,
    OUTCOMES_SCHEMA,
    SOCIAL_TIERS,
    TEMPORAL_TIERS,
    TEST_PLAYER,
    PlantedSpec,
    SyntheticGame,
    generate_daily,
    generate_game,
)

SPEC = PlantedSpec()


# ----------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def game() -> SyntheticGame:
    """5k players as events (about 2.4M events)."""
    return generate_game(n_players=5000, seed=0)


@pytest.fixture(scope="module")
def daily_game() -> SyntheticGame:
    """The same 5k players through the daily fast path."""
    return generate_daily(n_players=5000, seed=0)


@pytest.fixture(scope="module")
def big() -> SyntheticGame:
    """50k players through the daily fast path (shares and per-tier rates)."""
    return generate_daily(n_players=50_000, seed=1)


def rollup(events: pl.DataFrame, tz: str) -> pl.DataFrame:
    """A plain events -> daily roll-up (local dates), independent of the generator's code."""
    local = pl.col("timestamp").dt.convert_time_zone(tz)
    hour = local.dt.hour() + local.dt.minute() / 60 + local.dt.second() / 3600 + local.dt.microsecond() / 3.6e9
    ev = events.with_columns(date=local.dt.date(), h=hour)
    is_ = {t: pl.col("event_type") == t for t in ("session", "purchase", "refund", "social", "build", "raid")}
    night = (pl.col("h") >= 22) | (pl.col("h") < 6)
    return ev.group_by("player_id", "date").agg(
        sessions=is_["session"].sum().cast(pl.Float64),
        playtime_minutes=pl.col("value").filter(is_["session"]).sum() / 60,
        night_playtime_minutes=pl.col("value").filter(is_["session"] & night).sum() / 60,
        purchases=is_["purchase"].sum().cast(pl.Float64),
        spend=pl.col("value").filter(is_["purchase"]).sum(),
        refunds=pl.col("value").filter(is_["refund"]).sum(),
        social_events=is_["social"].sum().cast(pl.Float64),
        start_hour_sin_sum=(pl.col("h") * (math.pi / 12)).sin().filter(is_["session"]).sum(),
        ev_build=is_["build"].sum().cast(pl.Float64),
        ev_raid=is_["raid"].sum().cast(pl.Float64),
    )


def full_days(g: SyntheticGame) -> pl.DataFrame:
    """Per-player exposure in whole days before the as_of day (the partial last day is left out)."""
    last = g.as_of.date()
    return g.truth.with_columns(full_days=(pl.lit(last) - pl.col("first_day")).dt.total_days().cast(pl.Float64))


def before_as_of_day(daily: pl.DataFrame, g: SyntheticGame) -> pl.DataFrame:
    return daily.filter(pl.col("date") < g.as_of.date())


# ----------------------------------------------------------------------------------------- spec
def test_defaults_are_the_targets_spec() -> None:
    assert SPEC.n_players == 5000 and SPEC.seed == 0
    assert SPEC.payer_shares == (0.88, 0.08, 0.03, 0.01)
    assert SPEC.purchases_per_active_day == (0.0, 0.15, 0.4, 1.0)
    assert SPEC.purchase_value_median == (0.0, 2.0, 15.0, 80.0)
    assert SPEC.engagement_shares == (0.50, 0.35, 0.15)
    assert SPEC.sessions_per_day == (0.4, 1.5, 4.0)
    assert SPEC.session_minutes_median == (8.0, 18.0, 35.0)
    assert SPEC.temporal_shares == (0.60, 0.25, 0.15)
    assert SPEC.social_shares == (0.50, 0.35, 0.15)
    assert SPEC.social_per_session == (0.05, 1.0, 4.0)
    assert SPEC.anomaly_share == 0.03
    assert SPEC.history_days >= 28 + 28 + 7
    assert SPEC.resolved_as_of() == datetime(2026, 3, 2, 12, 0, tzinfo=ZoneInfo("UTC"))


@pytest.mark.parametrize(
    "overrides",
    [
        {"payer_shares": (0.5, 0.2, 0.2, 0.2)},
        {"engagement_shares": (0.5, 0.5)},
        {"sessions_per_day": (0.4, -1.0, 4.0)},
        {"timezone": "Mars/Olympus_Mons"},
        {"n_players": 0},
        {"history_days": 20},
        {"anomaly_share": 1.5},
        {"no_such_field": 1},
    ],
)
def test_invalid_specs_are_rejected(overrides: dict) -> None:
    with pytest.raises(InvalidInput):
        generate_game(**{"n_players": 10, **overrides})


def test_lists_are_accepted_and_frozen_as_tuples() -> None:
    spec = PlantedSpec(payer_shares=[0.93, 0.05, 0.015, 0.005])  # the second configuration of TARGETS
    assert spec.payer_shares == (0.93, 0.05, 0.015, 0.005)
    assert hash(spec) == hash(PlantedSpec(payer_shares=(0.93, 0.05, 0.015, 0.005)))


# ----------------------------------------------------------------------------------------- determinism
def test_same_seed_same_frames_different_seed_different() -> None:
    a = generate_game(n_players=400, seed=7)
    b = generate_game(PlantedSpec(n_players=400, seed=7))
    c = generate_game(n_players=400, seed=8)
    assert a.events.equals(b.events) and a.truth.equals(b.truth) and a.outcomes.equals(b.outcomes)
    assert not a.events.equals(c.events)
    assert not a.truth.drop("player_id").equals(c.truth.drop("player_id"))
    d1, d2 = generate_daily(n_players=400, seed=7), generate_daily(n_players=400, seed=7)
    assert d1.daily.equals(d2.daily)
    assert not d1.daily.equals(generate_daily(n_players=400, seed=8).daily)


def test_both_paths_plant_the_same_population(game: SyntheticGame, daily_game: SyntheticGame) -> None:
    assert game.truth.equals(daily_game.truth)
    assert game.outcomes.equals(daily_game.outcomes)
    assert game.daily is None and daily_game.events is None


# ----------------------------------------------------------------------------------------- shares
def test_tier_shares_are_pinned(big: SyntheticGame) -> None:
    truth = big.truth
    n = truth.height
    axes = {
        "monetization": (MONETIZATION_TIERS, SPEC.payer_shares),
        "engagement": (ENGAGEMENT_TIERS, SPEC.engagement_shares),
        "temporal": (TEMPORAL_TIERS, SPEC.temporal_shares),
        "social": (SOCIAL_TIERS, SPEC.social_shares),
        "play_style": (("builder", "raider"), (0.5, 0.5)),
    }
    for column, (tiers, shares) in axes.items():
        counts = dict(truth[column].value_counts().iter_rows())
        assert set(counts) == set(tiers), column
        for tier, share in zip(tiers, shares, strict=True):
            assert abs(counts[tier] / n - share) < 0.005, (column, tier)


def test_axes_are_independent(big: SyntheticGame) -> None:
    # Whale share among hardcore guild players equals the overall whale share (within sampling error).
    sub = big.truth.filter((pl.col("engagement") != "casual") & (pl.col("social") != "solo"))
    whale = (sub["monetization"] == "whale").mean()
    assert abs(whale - 0.01) < 4 * math.sqrt(0.01 * 0.99 / sub.height)


def test_anomalies_share_split_and_eligibility(big: SyntheticGame) -> None:
    truth = big.truth
    n = truth.height
    planted = truth.filter(pl.col("anomaly").is_not_null())
    assert abs(planted.height / n - 0.03) <= 0.003
    counts = dict(planted["anomaly"].value_counts().iter_rows())
    assert set(counts) == set(ANOMALY_KINDS)
    assert max(counts.values()) - min(counts.values()) <= 1
    assert planted["typical_exposure_days"].min() >= 7
    by_kind = {k: planted.filter(pl.col("anomaly") == k) for k in ANOMALY_KINDS}
    assert (by_kind["spend_spike"]["monetization"] != "non_payer").all()
    assert (by_kind["engagement_drop"]["engagement"] != "casual").all()
    assert (by_kind["social_burst"]["social"] != "solo").all()
    assert TEST_PLAYER not in planted["player_id"].to_list()
    factors = {"spend_spike": 5.0, "engagement_drop": 0.1, "schedule_shift": 1.0, "social_burst": 4.0}
    for kind, frame in by_kind.items():
        assert (frame["anomaly_factor"] == factors[kind]).all()
        assert (frame["anomaly_shift_hours"] == (8.0 if kind == "schedule_shift" else 0.0)).all()
    normal = truth.filter(pl.col("anomaly").is_null())
    assert (normal["anomaly_factor"] == 1.0).all() and (normal["anomaly_shift_hours"] == 0.0).all()


def test_installs_and_first_days(big: SyntheticGame) -> None:
    truth = big.truth
    last = big.as_of.date()
    start = last - timedelta(days=SPEC.history_days - 1)
    installed = truth.filter(pl.col("installed"))
    assert abs(installed.height / truth.height - 0.10) < 0.005
    assert installed["first_day"].min() == last - timedelta(days=40)
    assert installed["first_day"].max() == last - timedelta(days=1)
    assert (truth.filter(~pl.col("installed"))["first_day"] == start).all()
    # A player's first day always has a session (so "first stored activity" is the install day).
    firsts = big.daily.group_by("player_id").agg(pl.col("date").min().alias("first_active"))
    joined = installed.join(firsts, on="player_id")
    assert joined.height == installed.height
    assert (joined["first_active"] == joined["first_day"]).all()
    # No activity before the first day, for anyone.
    all_firsts = truth.join(firsts, on="player_id")
    assert (all_firsts["first_active"] >= all_firsts["first_day"]).all()


def test_test_player(game: SyntheticGame) -> None:
    row = game.truth.filter(pl.col("player_id") == TEST_PLAYER).row(0, named=True)
    assert (row["monetization"], row["engagement"], row["temporal"], row["social"]) == (
        "minnow",
        "regular",
        "weekday_evening",
        "social",
    )
    assert row["anomaly"] is None and not row["installed"]
    assert (game.as_of.date() - row["first_day"]).days >= 35
    assert row["true_sessions_rate"] == 1.5 and row["true_purchase_rate"] == 0.15  # steady: no jitter
    assert game.truth["player_id"][1] == "p000001"
    mine = game.events.filter(pl.col("player_id") == TEST_PLAYER)
    assert mine.filter(pl.col("event_type") == "session").height > 35


# ----------------------------------------------------------------------------------------- rates
def test_sessions_per_day_per_engagement_tier(big: SyntheticGame) -> None:
    exposure = full_days(big).filter(pl.col("anomaly").is_null())
    sessions = (
        before_as_of_day(big.daily, big)
        .group_by("player_id")
        .agg(pl.col("sessions").sum())
        .join(exposure, on="player_id", how="right")
        .with_columns(pl.col("sessions").fill_null(0.0))
    )
    rates = sessions.group_by("engagement").agg(rate=pl.col("sessions").sum() / pl.col("full_days").sum())
    for tier, expected in zip(ENGAGEMENT_TIERS, SPEC.sessions_per_day, strict=True):
        got = rates.filter(pl.col("engagement") == tier)["rate"][0]
        assert abs(got / expected - 1) < 0.05, (tier, got)
    # The temporal tiers keep the engagement rate on average.
    by_tem = sessions.group_by("temporal").agg(
        rate=pl.col("sessions").sum() / (pl.col("full_days") * pl.col("true_sessions_rate")).sum()
    )
    assert np.allclose(by_tem["rate"].to_numpy(), 1.0, atol=0.05)


def test_purchases_per_active_day_per_payer_tier(big: SyntheticGame) -> None:
    rows = before_as_of_day(big.daily, big).join(
        big.truth.filter(pl.col("anomaly").ne_missing("spend_spike")).select("player_id", "monetization"),
        on="player_id",
    )
    rates = rows.group_by("monetization").agg(rate=pl.col("purchases").sum() / pl.len())
    for tier, expected in zip(MONETIZATION_TIERS, SPEC.purchases_per_active_day, strict=True):
        got = rates.filter(pl.col("monetization") == tier)["rate"][0]
        if expected == 0:
            assert got == 0.0
        else:
            assert abs(got / expected - 1) < 0.10, (tier, got)


def test_purchase_values_and_session_minutes(game: SyntheticGame) -> None:
    ev = game.events.join(game.truth.select("player_id", "monetization", "engagement"), on="player_id")
    purchases = ev.filter(pl.col("event_type") == "purchase")
    assert set(purchases["monetization"].unique()) <= {"minnow", "dolphin", "whale"}
    for tier, median in zip(MONETIZATION_TIERS[1:], SPEC.purchase_value_median[1:], strict=True):
        values = purchases.filter(pl.col("monetization") == tier)["value"].to_numpy()
        assert abs(np.median(values) / median - 1) < 0.15, tier
        assert abs(np.std(np.log(values)) - 1.0) < 0.1, tier
    sessions = ev.filter((pl.col("event_type") == "session") & (pl.col("timestamp") < game.as_of - timedelta(days=1)))
    for tier, median in zip(ENGAGEMENT_TIERS, SPEC.session_minutes_median, strict=True):
        minutes = sessions.filter(pl.col("engagement") == tier)["value"].to_numpy() / 60
        assert abs(np.median(minutes) / median - 1) < 0.05, tier
        assert abs(np.std(np.log(minutes)) - 0.6) < 0.05, tier


def test_social_events_per_session_per_tier(big: SyntheticGame) -> None:
    rows = big.daily.join(
        big.truth.filter(pl.col("anomaly").ne_missing("social_burst")).select("player_id", "social"), on="player_id"
    )
    rates = rows.group_by("social").agg(rate=pl.col("social_events").sum() / pl.col("sessions").sum())
    for tier, expected in zip(SOCIAL_TIERS, SPEC.social_per_session, strict=True):
        got = rates.filter(pl.col("social") == tier)["rate"][0]
        assert abs(got / expected - 1) < 0.10, (tier, got)
    assert (big.daily["social_sessions"] <= big.daily["sessions"]).all()
    assert (big.daily["social_sessions"] <= big.daily["social_events"]).all()


def test_temporal_tiers(big: SyntheticGame, game: SyntheticGame) -> None:
    rows = before_as_of_day(big.daily, big).join(
        big.truth.filter(pl.col("anomaly").ne_missing("schedule_shift")).select("player_id", "temporal"), on="player_id"
    )
    shares = rows.group_by("temporal").agg(
        weekend=pl.col("sessions").filter(pl.col("date").dt.weekday() >= 6).sum() / pl.col("sessions").sum(),
        night=pl.col("night_playtime_minutes").sum() / pl.col("playtime_minutes").sum(),
    )
    share = {r["temporal"]: r for r in shares.iter_rows(named=True)}
    assert share["weekend"]["weekend"] > 0.6
    assert share["weekday_evening"]["weekend"] < 0.25
    assert share["night"]["night"] > 0.9
    assert share["weekday_evening"]["night"] < 0.1 and share["weekend"]["night"] < 0.1
    # Start hours of night players are mostly in 22:00-06:00 local, weekday-evening ones around 20:00.
    ev = game.events.filter(pl.col("event_type") == "session").join(
        game.truth.filter(pl.col("anomaly").is_null()).select("player_id", "temporal"), on="player_id"
    )
    hour = ev.with_columns(h=pl.col("timestamp").dt.hour())
    night = hour.filter(pl.col("temporal") == "night")["h"].to_numpy()
    assert np.mean((night >= 22) | (night < 6)) > 0.9
    evening = hour.filter(pl.col("temporal") == "weekday_evening")["h"].to_numpy()
    assert np.mean((evening >= 18) & (evening < 22)) > 0.8


def test_play_styles_are_carried_by_custom_events(big: SyntheticGame) -> None:
    rows = big.daily.join(big.truth.select("player_id", "play_style"), on="player_id")
    rates = rows.group_by("play_style").agg(
        build=pl.col("ev_build").sum() / pl.col("sessions").sum(),
        raid=pl.col("ev_raid").sum() / pl.col("sessions").sum(),
        quest=pl.col("ev_quest").sum() / pl.col("sessions").sum(),
    )
    r = {row["play_style"]: row for row in rates.iter_rows(named=True)}
    assert abs(r["builder"]["build"] - 3.0) < 0.1 and abs(r["builder"]["raid"] - 0.3) < 0.03
    assert abs(r["raider"]["raid"] - 3.0) < 0.1 and abs(r["raider"]["build"] - 0.3) < 0.03
    assert abs(r["builder"]["quest"] - 0.5) < 0.03


def test_planted_anomalies_move_the_current_window(big: SyntheticGame) -> None:
    current_start, _ = big.windows["current"]
    typical_start, typical_end = big.windows["typical"]
    days = big.daily.filter(pl.col("date") < big.as_of.date()).join(
        big.truth.select("player_id", "anomaly"), on="player_id"
    )
    window = (
        pl.when(pl.col("date") >= current_start)
        .then(pl.lit("current"))
        .when((pl.col("date") >= typical_start) & (pl.col("date") <= typical_end))
        .then(pl.lit("typical"))
    )
    agg = (
        days.with_columns(window=window)
        .drop_nulls("window")
        .group_by("anomaly", "window")
        .agg(
            pl.col("sessions").sum(),
            pl.col("purchases").sum(),
            pl.col("social_events").sum(),
            pl.col("start_hour_sin_sum").sum(),
            pl.col("start_hour_cos_sum").sum(),
            active=pl.len(),
        )
    )

    def value(kind: str, window: str, column: str) -> float:
        return agg.filter((pl.col("anomaly") == kind) & (pl.col("window") == window))[column][0]

    full_cur = (big.as_of.date() - current_start).days  # whole days of the current window before as_of
    spike = (value("spend_spike", "current", "purchases") / value("spend_spike", "current", "active")) / (
        value("spend_spike", "typical", "purchases") / value("spend_spike", "typical", "active")
    )
    assert 4.0 < spike < 6.0
    drop = (value("engagement_drop", "current", "sessions") / full_cur) / (
        value("engagement_drop", "typical", "sessions") / 28
    )
    assert 0.05 < drop < 0.2
    burst = (value("social_burst", "current", "social_events") / value("social_burst", "current", "sessions")) / (
        value("social_burst", "typical", "social_events") / value("social_burst", "typical", "sessions")
    )
    assert 3.3 < burst < 4.7

    def mean_hour(window: str) -> float:
        s = value("schedule_shift", window, "start_hour_sin_sum")
        c = value("schedule_shift", window, "start_hour_cos_sum")
        return math.atan2(s, c) * 12 / math.pi % 24

    shift = (mean_hour("current") - mean_hour("typical")) % 24
    assert 6.5 < shift < 9.5


# ----------------------------------------------------------------------------------------- schema
def test_events_conform_to_the_canonical_schema(game: SyntheticGame) -> None:
    ev = game.events
    assert dict(ev.schema) == EVENTS_SCHEMA
    assert ev.null_count()[["event_id", "player_id", "event_type", "timestamp"]].row(0) == (0, 0, 0, 0)
    assert ev["event_id"].n_unique() == ev.height
    assert (ev["player_id"].str.len_chars() > 0).all()
    assert set(ev["event_type"].unique()) == {"session", "purchase", "refund", "social", "build", "raid", "quest"}
    assert (ev["event_type"] == ev["event_type"].str.to_lowercase()).all()
    assert ev["timestamp"].max() <= game.as_of
    values = ev["value"].drop_nulls().to_numpy()
    assert np.isfinite(values).all() and (values >= 0).all()
    valued = ev.filter(pl.col("event_type").is_in(["session", "purchase", "refund"]))
    assert valued["value"].null_count() == 0
    assert set(ev["player_id"].unique()) <= set(game.truth["player_id"])
    # Refunds are rare, of payers' purchases, with the purchase's value.
    counts = dict(ev["event_type"].value_counts().iter_rows())
    assert 0.005 < counts["refund"] / counts["purchase"] < 0.04
    # Social events carry {"kind": "guild"} for guild players, {"kind": "chat"} otherwise; others no properties.
    social = ev.filter(pl.col("event_type") == "social").join(game.truth.select("player_id", "social"), on="player_id")
    parsed = {text: json.loads(text) for text in social["properties"].unique().to_list()}
    assert sorted(p["kind"] for p in parsed.values()) == ["chat", "guild"]
    guild_text = next(text for text, p in parsed.items() if p["kind"] == "guild")
    assert ((social["properties"] == guild_text) == (social["social"] == "guild")).all()
    assert ev.filter(pl.col("event_type") != "social")["properties"].null_count() == ev.height - social.height


def test_no_event_before_first_day(game: SyntheticGame) -> None:
    firsts = game.events.group_by("player_id").agg(pl.col("timestamp").min().dt.date().alias("first_event"))
    joined = firsts.join(game.truth.select("player_id", "first_day"), on="player_id")
    assert (joined["first_event"] >= joined["first_day"]).all()


def test_outcomes_are_tied_to_tiers(big: SyntheticGame) -> None:
    out = big.outcomes
    assert dict(out.schema) == OUTCOMES_SCHEMA
    assert out.height == big.truth.height and out.null_count().sum_horizontal()[0] == 0
    assert (out["ltv"] >= 0).all() and set(out["churned"].unique()) <= {0, 1}
    joined = out.join(big.truth, on="player_id")
    means = {
        col: dict(joined.group_by(axis).agg(pl.col(col).mean()).iter_rows())
        for col, axis in [("ltv", "monetization"), ("support_tickets", "monetization")]
    }
    ltv = means["ltv"]
    assert ltv["non_payer"] < ltv["minnow"] < ltv["dolphin"] < ltv["whale"]
    tickets = means["support_tickets"]
    assert tickets["whale"] > 2 * tickets["non_payer"]
    churn = dict(joined.group_by("engagement").agg(pl.col("churned").cast(pl.Float64).mean()).iter_rows())
    assert churn["casual"] > churn["regular"] > churn["hardcore"]
    assert abs(churn["casual"] - 0.35) < 0.03
    whale_churn = joined.filter(pl.col("monetization") == "whale")["churned"].cast(pl.Float64).mean()
    assert whale_churn < joined["churned"].cast(pl.Float64).mean()
    by_tier = dict(joined.group_by("engagement").agg(pl.col("support_tickets").mean()).iter_rows())
    assert by_tier["hardcore"] > by_tier["regular"] > by_tier["casual"]


# ----------------------------------------------------------------------------------------- fast path
def test_daily_conforms_to_the_canonical_schema(daily_game: SyntheticGame) -> None:
    daily = daily_game.daily
    assert dict(daily.schema) == DAILY_SCHEMA
    assert daily.null_count().sum_horizontal()[0] == 0
    assert daily.select(pl.struct("player_id", "date").is_unique().all()).item()
    assert (daily["sessions"] >= 1).all()
    assert daily["date"].max() == daily_game.as_of.date()
    numbers = daily.drop("player_id", "date", "start_hour_sin_sum", "start_hour_cos_sum").to_numpy()
    assert np.isfinite(numbers).all() and (numbers >= 0).all()
    assert (daily["night_playtime_minutes"] <= daily["playtime_minutes"] + 1e-9).all()


def test_daily_matches_the_events_rollup(game: SyntheticGame, daily_game: SyntheticGame) -> None:
    tz = game.spec.timezone
    rolled = rollup(game.events, tz)
    fast = daily_game.daily
    columns = ["sessions", "playtime_minutes", "night_playtime_minutes", "purchases", "spend", "social_events"]
    columns += ["start_hour_sin_sum", "ev_build", "ev_raid"]
    # In distribution: per-tier means per active player-day agree.
    for axis in ("engagement", "monetization", "social"):
        tiers = game.truth.select("player_id", axis)
        a = (
            rolled.filter(pl.col("sessions") > 0)
            .join(tiers, on="player_id")
            .group_by(axis)
            .agg([pl.col(c).mean() for c in columns])
        )
        b = fast.join(tiers, on="player_id").group_by(axis).agg([pl.col(c).mean() for c in columns])
        joined = a.join(b, on=axis, suffix="_fast")
        for c in columns:
            x, y = joined[c].to_numpy(), joined[f"{c}_fast"].to_numpy()
            assert np.allclose(x, y, rtol=0.02, atol=0.02), (axis, c)
    # By construction the fast path shares the session draws: session counts and playtime agree per row.
    both = rolled.join(fast, on=["player_id", "date"], how="full", coalesce=True, suffix="_fast").fill_null(0)
    assert np.array_equal(both["sessions"].to_numpy(), both["sessions_fast"].to_numpy())
    assert np.allclose(both["playtime_minutes"], both["playtime_minutes_fast"], rtol=1e-9, atol=1e-6)
    assert rolled["purchases"].sum() == fast["purchases"].sum()


def test_non_utc_timezone_and_as_of(daily_game: SyntheticGame) -> None:
    tz = "Asia/Tokyo"
    as_of = datetime(2026, 5, 10, 0, 30)  # naive: local time of the game, just after midnight
    g = generate_game(n_players=300, seed=2, timezone=tz, as_of=as_of)
    assert g.as_of == as_of.replace(tzinfo=ZoneInfo(tz))
    assert g.events["timestamp"].max() <= g.as_of
    local = g.events.filter(pl.col("event_type") == "session").join(
        g.truth.filter(pl.col("anomaly").is_null()).select("player_id", "temporal"), on="player_id"
    )
    hours = local.filter(pl.col("temporal") == "weekday_evening")["timestamp"].dt.convert_time_zone(tz).dt.hour()
    assert ((hours >= 18) & (hours < 22)).mean() > 0.8
    # An aware as_of in another zone is converted; the windows follow the local days.
    aware = datetime(2026, 5, 9, 15, 30, tzinfo=UTC)
    h = generate_daily(n_players=300, seed=2, timezone=tz, as_of=aware)
    assert h.as_of == g.as_of and h.windows == g.windows
    assert h.windows["current"] == (date(2026, 5, 4), date(2026, 5, 10))
    assert h.truth.equals(g.truth)


def test_dst_zone_is_handled() -> None:
    tz = "Europe/London"  # clocks go forward on 2026-03-29 inside this history
    g = generate_game(n_players=300, seed=4, timezone=tz, as_of=datetime(2026, 4, 15, 9, 30))
    d = generate_daily(n_players=300, seed=4, timezone=tz, as_of=datetime(2026, 4, 15, 9, 30))
    rolled = rollup(g.events, tz)
    assert rolled["sessions"].sum() == d.daily["sessions"].sum()
    assert g.events["timestamp"].max() <= g.as_of


# ----------------------------------------------------------------------------------------- write
@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_write_round_trips(tmp_path, fmt: str) -> None:
    g = generate_game(n_players=200, seed=5)
    d = generate_daily(n_players=200, seed=5)
    paths = g.write(tmp_path / "events", fmt=fmt)
    assert set(paths) == {"events", "outcomes", "truth"}
    paths_d = d.write(tmp_path / "daily", fmt=fmt)
    assert set(paths_d) == {"daily", "outcomes", "truth"}
    for name, frame, path in [
        ("events", g.events, paths["events"]),
        ("outcomes", g.outcomes, paths["outcomes"]),
        ("truth", g.truth, paths["truth"]),
        ("daily", d.daily, paths_d["daily"]),
    ]:
        assert path.suffix == f".{fmt}" and path.exists()
        if fmt == "csv":
            schema = frame.schema if name == "truth" else SyntheticGame.schema(name)
            back = pl.read_csv(path, schema=schema)
        else:
            back = pl.read_parquet(path)
        assert back.equals(frame), name
    with pytest.raises(InvalidInput):
        g.write(tmp_path, fmt="xlsx")


# ----------------------------------------------------------------------------------------- chunks
def test_chunked_threaded_generation_is_deterministic(monkeypatch: pytest.MonkeyPatch) -> None:
    from unified_segmentation.synth import generator

    monkeypatch.setattr(generator, "CHUNK_PLAYERS", 128)  # 5 chunks
    threaded = generate_daily(n_players=600, seed=9)
    events = generate_game(n_players=600, seed=9)
    monkeypatch.setattr(generator, "_MAX_THREADS", 1)
    sequential = generate_daily(n_players=600, seed=9)
    assert threaded.daily.equals(sequential.daily) and threaded.outcomes.equals(sequential.outcomes)
    assert generate_game(n_players=600, seed=9).events.equals(events.events)
    assert events.truth.equals(threaded.truth)
    assert rollup(events.events, "UTC")["sessions"].sum() == threaded.daily["sessions"].sum()
    assert events.events["player_id"].n_unique() == 600
