"""Compiled pass of ``features.windows.window_feature_arrays`` (numba, one thread, ``fastmath=False``).

One loop over the daily rows accumulates every per-player total in row order (what ``numpy.bincount``
does, so the sums are the same to the bit), a second loop over the players turns them into the
exposures and metrics with the same floating-point operations as the numpy code it replaced. A
request's window costs one call instead of ~150 small numpy calls. Compiled on first use and cached
on disk (``cache=True``); ``core.kernel`` loads it with the scoring loops.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# rows of ``vals`` (the daily columns the pass reads)
V_SESSIONS, V_PLAYTIME, V_PURCHASES, V_SPEND, V_REFUNDS, V_SOCIAL = 0, 1, 2, 3, 4, 5
N_BASE = 6
# optional inputs (the last 4 rows of ``vals``); the first is a share of playtime, the others of sessions
OPTIONAL_SOURCES = ("night_playtime_minutes", "social_sessions", "start_hour_sin_sum", "start_hour_cos_sum")
# rows of the output block before the per-type totals
(O_EXPOSURE, O_ACTIVE_DAYS, O_EXP_WEEKDAY, O_EXP_WEEKEND, O_EXP_HOLIDAY, O_SESSIONS, O_PLAYTIME, O_PURCHASES,
 O_NET_SPEND, O_SOCIAL, O_SOCIAL_SESSIONS) = range(11)
N_HEAD = 11
# metric rows after the per-type totals (custom metrics follow them)
(M_SPEND_PER_DAY, M_PURCHASES_PER_DAY, M_AVG_PURCHASE_VALUE, M_HAS_PURCHASE, M_SESSIONS_PER_DAY,
 M_AVG_SESSION_MINUTES, M_ACTIVE_DAY_SHARE, M_WEEKEND_PLAY_SHARE, M_NIGHT_PLAY_SHARE, M_START_HOUR_SIN,
 M_START_HOUR_COS, M_SOCIAL_EVENTS_PER_SESSION, M_SOCIAL_SESSION_SHARE) = range(13)
N_METRICS = 13
_BIG = np.finfo(np.float64).max


@njit(cache=True, fastmath=False, error_model="numpy", nogil=True, inline="always")
def _clean(v: float) -> float:
    """``numpy.nan_to_num(v, nan=0.0)`` of one value."""
    if v != v:
        return 0.0
    if v == np.inf:
        return _BIG
    if v == -np.inf:
        return -_BIG
    return v


@njit(cache=True, fastmath=False, error_model="numpy", nogil=True, inline="always")
def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else 0.0


@njit(cache=True, fastmath=False, error_model="numpy", nogil=True, inline="always")
def _min1(x: float) -> float:
    """``numpy.minimum(x, 1.0)`` (NaN wins)."""
    return x if x < 1.0 or x != x else 1.0


@njit(cache=True, fastmath=False, error_model="numpy", nogil=True)
def window_pass(codes, days, vals, first, n_players, start_day, end_day, weights, contexts, suffix,
                context_code, n_types, n_active, min_rate_days, out, opt_known):  # pragma: no cover - compiled
    """Fill ``out`` (shape ``(N_HEAD + n_types + N_METRICS + n_types, n_players)``) and ``opt_known``;
    lower ``first`` (each player's stored first activity, epoch days) to their first row by the end.

    ``vals`` rows: the ``N_BASE`` base columns, ``n_types`` custom types, ``n_active - n_types`` other
    ``ev_`` columns (they only make a day active), the 4 optional sources (NaN where unknown; all NaN
    when absent). ``opt_known[j]``: some row up to the window's end knows optional source ``j``.
    ``context_code`` < 0: every context. Returns whether every player is known by the window's end.
    """
    n_rows = codes.shape[0]
    n_days = weights.shape[0]
    n_vals = vals.shape[0]
    o0 = n_vals - 4
    acc = np.zeros((N_BASE + n_types + 8, n_players))  # base totals, type totals, extras
    a_active = N_BASE + n_types
    a_weighted = a_active + 1
    a_leisure = a_active + 2
    a_opt = a_active + 3  # the 4 optional numerators (their denominators in ``den``)
    den = np.zeros((4, n_players))
    for j in range(4):
        opt_known[j] = False
    for i in range(n_rows):
        d = days[i]
        if d > end_day:
            continue
        g = codes[i]
        if d < first[g]:
            first[g] = d
        for j in range(4):
            if not opt_known[j] and vals[o0 + j, i] == vals[o0 + j, i]:
                opt_known[j] = True
        if d < start_day:
            continue
        di = d - start_day
        if di > n_days - 1:
            di = n_days - 1
        ctx = contexts[di]
        if context_code >= 0 and ctx != context_code:
            continue
        for c in range(N_BASE + n_types):
            acc[c, g] += _clean(vals[c, i])
        sessions = _clean(vals[V_SESSIONS, i])
        playtime = _clean(vals[V_PLAYTIME, i])
        active = (sessions > 0) or (playtime > 0) or (_clean(vals[V_PURCHASES, i]) > 0) or (
            _clean(vals[V_SOCIAL, i]) > 0)
        for c in range(N_BASE, N_BASE + n_active):
            if _clean(vals[c, i]) > 0:
                active = True
        acc[a_active, g] += 1.0 if active else 0.0
        acc[a_weighted, g] += weights[di] if active else 0.0
        acc[a_leisure, g] += playtime if ctx != 0 else 0.0
        for j in range(4):
            v = vals[o0 + j, i]
            known = v == v
            acc[a_opt + j, g] += _clean(v) if known else 0.0
            den[j, g] += _clean(vals[V_PLAYTIME if j == 0 else V_SESSIONS, i]) if known else 0.0
    all_known = True
    n_window = n_days
    mt = N_HEAD + n_types  # first metric row
    for g in range(n_players):
        known_g = first[g] <= end_day
        if not known_g:
            all_known = False
        si = first[g] - start_day
        if si < 0:
            si = 0
        if si > n_window:
            si = n_window
        idx = si if known_g else n_window
        e0, e1, e2 = suffix[0, idx], suffix[1, idx], suffix[2, idx]
        exposure = (e0 + e1) + e2
        out[O_EXPOSURE, g] = exposure
        out[O_ACTIVE_DAYS, g] = acc[a_active, g]
        out[O_EXP_WEEKDAY, g] = e0
        out[O_EXP_WEEKEND, g] = e1
        out[O_EXP_HOLIDAY, g] = e2
        sessions = acc[V_SESSIONS, g]
        playtime = acc[V_PLAYTIME, g]
        purchases = acc[V_PURCHASES, g]
        net = acc[V_SPEND, g] - acc[V_REFUNDS, g]
        net = net if net > 0.0 or net != net else 0.0  # numpy.maximum(net, 0.0)
        social = acc[V_SOCIAL, g]
        out[O_SESSIONS, g] = sessions
        out[O_PLAYTIME, g] = playtime
        out[O_PURCHASES, g] = purchases
        out[O_NET_SPEND, g] = net
        out[O_SOCIAL, g] = social
        out[O_SOCIAL_SESSIONS, g] = acc[a_opt + 1, g]
        rate_days = exposure if exposure > min_rate_days or exposure != exposure else min_rate_days
        out[mt + M_SPEND_PER_DAY, g] = net / rate_days
        out[mt + M_PURCHASES_PER_DAY, g] = purchases / rate_days
        out[mt + M_AVG_PURCHASE_VALUE, g] = _ratio(net, purchases)
        out[mt + M_HAS_PURCHASE, g] = 1.0 if purchases > 0 else 0.0
        out[mt + M_SESSIONS_PER_DAY, g] = sessions / rate_days
        out[mt + M_AVG_SESSION_MINUTES, g] = _ratio(playtime, sessions)
        out[mt + M_ACTIVE_DAY_SHARE, g] = _min1(_ratio(acc[a_weighted, g], exposure))
        out[mt + M_WEEKEND_PLAY_SHARE, g] = _ratio(acc[a_leisure, g], playtime)
        out[mt + M_NIGHT_PLAY_SHARE, g] = _min1(_ratio(acc[a_opt, g], den[0, g]))
        out[mt + M_START_HOUR_SIN, g] = _ratio(acc[a_opt + 2, g], den[2, g])
        out[mt + M_START_HOUR_COS, g] = _ratio(acc[a_opt + 3, g], den[3, g])
        out[mt + M_SOCIAL_EVENTS_PER_SESSION, g] = _ratio(social, sessions)
        out[mt + M_SOCIAL_SESSION_SHARE, g] = _min1(_ratio(acc[a_opt + 1, g], den[1, g]))
        for t in range(n_types):
            tot = acc[N_BASE + t, g]
            out[N_HEAD + t, g] = tot
            out[mt + N_METRICS + t, g] = tot / rate_days
    return all_known


def warm_up() -> None:
    """Load (or compile) :func:`window_pass` with the argument types of the real calls: one row, one player."""
    weights = np.ones(1)
    contexts = np.zeros(1, dtype=np.int8)
    suffix = np.zeros((3, 2))
    for a in (weights, contexts, suffix):  # read-only, as the cached day tables are
        a.setflags(write=False)
    out = np.empty((N_HEAD + N_METRICS, 1))
    window_pass(np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.int64), np.zeros((N_BASE + 4, 1)),
                np.zeros(1, dtype=np.int64), 1, 0, 0, weights, contexts, suffix, -1, 0, 0, 1.0, out,
                np.empty(4, dtype=np.bool_))
