"""The request path's answers do not depend on how many players are scored together.

A single categorize / detect scores one player's :class:`DailyRows` (the one-player code: window
features from the compiled pass, detection in plain floats); a micro-batch scores several players'
rows at once (the array code). Each player's answer must be the same to the bit either way, and the
same as the batch (Polars) path's.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import polars as pl
import pytest

import unified_segmentation as us
from unified_segmentation.core import anomaly as an
from unified_segmentation.features import daily_rows, window_feature_arrays
from unified_segmentation.pipeline import (
    _settings_of,
    _windows,
    anomalies,
    detect_player_rows,
    detect_rows,
    detection_dict,
    profile_dict,
    run_detection,
    score_player_rows,
    score_profiles,
    score_rows,
)
from unified_segmentation.pipeline.data import first_seen, resolve_as_of, to_daily
from unified_segmentation.synth import PlantedSpec, generate_game


@pytest.fixture(scope="module")
def game():
    g = generate_game(PlantedSpec(n_players=1500, seed=5))
    tax = us.calibrate(g.events, game_id="rows", as_of=g.as_of)
    daily = to_daily(g.events, tax.settings.get("timezone", "UTC"))
    first = first_seen(daily)
    anomalous = g.truth.filter(pl.col("anomaly").is_not_null())["player_id"].to_list()
    ids = sorted(set(anomalous[:30]) | set(g.truth["player_id"].to_list()[:50]))
    return g, tax, daily, first, ids


def _rows(daily: pl.DataFrame, first: pl.DataFrame, ids: list[str]):
    keep = pl.col("player_id").is_in(ids)
    rows = daily_rows(daily.filter(keep), first.filter(keep))
    return replace(rows, players=rows.players.to_list())  # as the request path's reads build them


def _shift_table(tax) -> dict:
    """A stored shift for every segment and signal (a rate factor for counts, a median move otherwise)."""
    table = {}
    for axis in tax.active_axes:
        names = an.COUNT_SIGNALS.get(axis.axis_id, []) if axis.axis_type == "universal" else [
            "ev_" + m.removesuffix("_per_day") for m in axis.metrics]
        moves = [m for m, _, _ in an.AMOUNT_SIGNALS.get(axis.axis_id, [])] + an.CONTINUOUS_SIGNALS.get(
            axis.axis_id, []) if axis.axis_type == "universal" else []
        for s in range(len(axis.segments)):
            table.update({(axis.axis_id, s, n): 1.25 + 0.1 * s for n in names})
            table.update({(axis.axis_id, s, m): 0.05 * (s + 1) for m in moves})
    return table


def _same(a, b, path: str = "") -> None:
    """Equal to the bit: floats by value and sign of zero (NaN equals NaN), arrays by bytes."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), path
        for k in a:
            _same(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, list | tuple):
        assert type(a) is type(b) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{path}[{i}]")
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, path
        if a.dtype == object:
            assert a.tolist() == b.tolist(), path
        else:
            assert a.tobytes() == b.tobytes(), path
    elif isinstance(a, float):
        assert isinstance(b, float), path
        assert (a == b and math.copysign(1, a) == math.copysign(1, b)) or (a != a and b != b), (path, a, b)
    else:
        assert a == b and type(a) is type(b), (path, a, b)


def test_window_features_of_several_players_equal_each_players_own(game):
    _, tax, daily, first, ids = game
    s = _settings_of(tax)
    wins = _windows(resolve_as_of(game[0].as_of, s), s)
    many = _rows(daily, first, ids)
    for name, window in wins.items():
        keep, out = window_feature_arrays(many, window, holiday_country=s.holiday_country,
                                          custom_types=tax.custom_types)
        for j, i in enumerate(keep.tolist()):
            k1, one = window_feature_arrays(_rows(daily, first, [many.players[i]]), window,
                                            holiday_country=s.holiday_country, custom_types=tax.custom_types)
            assert k1.tolist() == [0]
            for col, values in out.items():
                if col in one:
                    _same(values[j:j + 1], one[col], f"{name}/{col}")


@pytest.mark.parametrize("with_shifts", [False, True])
def test_detect_of_several_players_equals_each_single_detect(game, with_shifts):
    g, tax, daily, first, ids = game
    shifts = _shift_table(tax) if with_shifts else {}
    many = _rows(daily, first, ids)
    res, keep = detect_rows(tax, many, g.as_of, shifts=shifts)
    assert res is not None and len(keep) == len(ids)
    flagged = 0
    for j, i in enumerate(keep.tolist()):
        pid = many.players[i]
        one = detect_player_rows(tax, _rows(daily, first, [pid]), g.as_of, shifts=shifts)
        _same(detection_dict(tax, res, j), detection_dict(tax, one, 0), pid)
        flagged += bool(one.is_anomalous[0])
        for axis_id, d in res.axes.items():
            for key, values in d.items():
                _same(values[j:j + 1], one.axes[axis_id][key], f"{pid}/{axis_id}/{key}")
            sig, sig1 = res.signals[axis_id], one.signals[axis_id]
            assert sig.names == sig1.names
            for key in ("p", "sign", "current", "typical", "baseline"):
                _same(getattr(sig, key)[j:j + 1], getattr(sig1, key), f"{pid}/{axis_id}/{key}")
        for key in ("is_anomalous", "overall_score", "surprise", "p_value", "confidence", "insufficient"):
            _same(getattr(res, key)[j:j + 1], getattr(one, key), f"{pid}/{key}")
    assert flagged > 0  # the planted anomalies are among the players compared


@pytest.mark.parametrize("with_shifts", [False, True])
def test_a_small_group_detected_player_by_player_equals_the_array_path(game, with_shifts, monkeypatch):
    """Up to ``ONE_BY_ONE_MAX`` players (a micro-batch of requests) are detected one by one and joined:
    every field of the result equals the array path's on the same players, to the bit."""
    g, tax, daily, first, ids = game
    shifts = _shift_table(tax) if with_shifts else {}
    for group in (ids[:2], ids[10:15], ids[30:30 + anomalies.ONE_BY_ONE_MAX]):
        rows = _rows(daily, first, group)
        small, keep = detect_rows(tax, rows, g.as_of, shifts=shifts)
        monkeypatch.setattr(anomalies, "ONE_BY_ONE_MAX", 1)
        array, keep_a = detect_rows(tax, rows, g.as_of, shifts=shifts)
        monkeypatch.undo()
        assert keep.tolist() == keep_a.tolist() and small.player_ids == array.player_ids == group
        for key in ("is_anomalous", "overall_score", "surprise", "p_value", "confidence", "insufficient",
                    "segment", "offsets_model", "axes"):
            _same(getattr(small, key), getattr(array, key), key)
        assert small.context == array.context and list(small.signals) == list(array.signals)
        for axis_id, sig in array.signals.items():
            one = small.signals[axis_id]
            assert one.names == sig.names
            for key in ("p", "sign", "current", "typical", "baseline", "tested"):
                _same(getattr(one, key), getattr(sig, key), f"{axis_id}/{key}")
        for j in range(len(group)):
            _same(detection_dict(tax, small, j), detection_dict(tax, array, j), group[j])


def test_single_detect_equals_the_batch_path(game):
    g, tax, daily, first, ids = game
    shifts = _shift_table(tax)
    for pid in ids[:25]:
        one = detect_player_rows(tax, _rows(daily, first, [pid]), g.as_of, shifts=shifts)
        batch = run_detection(tax, daily, g.as_of, player_ids=[pid], first=first, shifts=shifts)
        _same(detection_dict(tax, one, 0), detection_dict(tax, batch, 0), pid)


def test_categorize_of_several_players_equals_each_single_categorize(game):
    g, tax, daily, first, ids = game
    many = _rows(daily, first, ids)
    ps, keep = score_rows(tax, many, g.as_of)
    assert ps is not None
    batch = score_profiles(tax, daily, g.as_of, player_ids=ids, first=first)
    at = {p: i for i, p in enumerate(batch.player_ids)}
    for j, i in enumerate(keep.tolist()):
        pid = many.players[i]
        one = profile_dict(tax, score_player_rows(tax, _rows(daily, first, [pid]), g.as_of), 0)
        _same(profile_dict(tax, ps, j), one, pid)
        _same(profile_dict(tax, batch, at[pid]), one, pid)
