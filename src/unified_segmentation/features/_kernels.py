"""Array helpers shared by the feature builders: exact string factorization and UTC -> local time.

These are the hot loops of the roll-up. Both replace a Polars string ``group_by`` / per-element time
zone conversion with a few vectorized passes and ``numpy.bincount`` sums (see ``bench_features.py``).
"""

from __future__ import annotations

import zoneinfo
from functools import lru_cache

import numpy as np
import polars as pl

from unified_segmentation.errors import InvalidInput

US_PER_DAY = 86_400_000_000
US_PER_HOUR = 3_600_000_000
_QUARTER_US = 15 * 60 * 1_000_000
_MAX_OFFSET_GRID = 4_000_000  # quarter hours (~114 years); wider spans use Polars' own conversion
_EPOCH_DATE = np.datetime64("1970-01-01", "D")


def check_timezone(timezone: str) -> str:
    """Return ``timezone`` if it is a valid IANA name, else raise :class:`InvalidInput`."""
    if not isinstance(timezone, str) or not timezone:
        raise InvalidInput("timezone must be an IANA name such as 'Europe/London'", field="timezone")
    try:
        zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidInput(f"unknown timezone {timezone!r}", field="timezone") from exc
    return timezone


_FIB = np.uint64(0x9E3779B97F4A7C15)


def _hash_slots(hashes: np.ndarray, expected_unique: int) -> tuple[np.ndarray, int]:
    """Sparse codes of uint64 hashes: equal hashes share a slot, distinct hashes never do.

    A vectorized open-addressing table (load factor <= 1/4): every hash is scattered to its
    Fibonacci slot, the hashes that lost their slot to another value retry in a fresh table with
    another multiplier. Returns ``(slots, n_slots)``, ``slots`` an int64 ndarray of shape (n,).
    """
    bits = max(8, int(np.ceil(np.log2(max(expected_unique, 1) * 4))))
    size = 1 << bits
    shift = np.uint64(64 - bits)
    slots = ((hashes * _FIB) >> shift).astype(np.int64)
    table = np.zeros(size, dtype=np.uint64)
    table[slots] = hashes
    lost = np.flatnonzero(table[slots] != hashes)
    base, attempt = size, 1
    while lost.size:
        pending = hashes[lost]
        retry = ((pending * np.uint64(2 * attempt + 1) * _FIB) >> shift).astype(np.int64)
        table[:] = 0
        table[retry] = pending
        won = table[retry] == pending
        slots[lost[won]] = base + retry[won]
        lost = lost[~won]
        base += size
        attempt += 1
    return slots, base


def _expected_unique(hashes: pl.Series) -> int:
    """Cheap estimate of the number of distinct hashes (sizes the hash table; a low guess only costs
    extra rounds): a strided sample when it shows few values, else HyperLogLog."""
    n = hashes.len()
    if n > (1 << 18):
        sample = hashes.gather_every(n // (1 << 16)).n_unique()
        if sample < (1 << 14):
            return 2 * sample
    return int(hashes.approx_n_unique())


def factorize(values: pl.Series, *, sort: bool = True) -> tuple[np.ndarray, pl.Series]:
    """Integer codes of a non-null Series.

    Returns ``codes`` (int64 ndarray of shape (n,), values in ``0..k-1``) and ``uniques`` (Series of
    length k, sorted ascending when ``sort``, else in slot order), with ``uniques[codes] == values``.

    Values are hashed once and numbered with a vectorized hash table. The numbering is then checked
    with an independent second hash (another seed): two different values could only share a code if
    both 64-bit hashes collided (probability ~ k**2 / 2**128); if the check ever fails, an exact
    sort-based ranking is used instead.
    """
    n = values.len()
    if n == 0:
        return np.empty(0, dtype=np.int64), values.clear()
    hashed = values.hash(seed=0x5EED)
    slots, n_slots = _hash_slots(hashed.to_numpy(), _expected_unique(hashed))
    representative = np.full(n_slots, -1, dtype=np.int64)
    representative[slots] = np.arange(n, dtype=np.int64)
    used = np.flatnonzero(representative >= 0)
    first_rows = representative[used]
    uniques = values.gather(first_rows)
    rank = np.full(n_slots, -1, dtype=np.int64)
    if sort:
        order = uniques.arg_sort().to_numpy().astype(np.int64)
        rank[used[order]] = np.arange(used.size, dtype=np.int64)
        uniques = uniques.gather(order)
        first_rows = first_rows[order]
    else:
        rank[used] = np.arange(used.size, dtype=np.int64)
    codes = rank[slots]
    check = values.hash(seed=0xC0FFEE).to_numpy()
    if not np.array_equal(check[first_rows][codes], check):  # a collision: be exact instead
        codes = values.rank("dense").cast(pl.Int64).to_numpy() - 1
        first = np.empty(int(codes.max()) + 1, dtype=np.int64)
        first[codes] = np.arange(n, dtype=np.int64)
        return codes, values.gather(first)
    return codes, uniques


@lru_cache(maxsize=256)
def _offset_table(timezone: str, first_quarter: int, last_quarter: int) -> np.ndarray:
    grid = pl.Series(np.arange(first_quarter, last_quarter + 1, dtype=np.int64) * _QUARTER_US)
    utc = grid.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    local = utc.dt.convert_time_zone(timezone).dt.replace_time_zone(None).cast(pl.Int64)
    return (local - grid).to_numpy()


def local_epoch_us(utc_us: np.ndarray, timezone: str) -> np.ndarray:
    """Local wall-clock time of UTC instants, as microseconds since 1970-01-01 00:00 local.

    Offsets are looked up per quarter hour (every real-world offset change of the last century
    happens on a quarter hour), computed once per quarter with Polars' time zone database.
    """
    if utc_us.size == 0 or timezone == "UTC":
        return utc_us
    lo = int(utc_us.min()) // _QUARTER_US
    hi = int(utc_us.max()) // _QUARTER_US
    if hi - lo > _MAX_OFFSET_GRID:
        utc = pl.Series(utc_us).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
        return utc.dt.convert_time_zone(timezone).dt.replace_time_zone(None).cast(pl.Int64).to_numpy()
    # Cache on a coarse (weekly) grid so that consecutive calls over similar spans share the table.
    week = 4 * 24 * 7
    lo_c, hi_c = (lo // week) * week, (hi // week + 1) * week
    table = _offset_table(timezone, lo_c, hi_c)
    return utc_us + table[utc_us // _QUARTER_US - lo_c]


def dates_from_days(days: np.ndarray) -> pl.Series:
    """Polars Date Series from integer days since 1970-01-01."""
    return pl.Series(days.astype(np.int32)).cast(pl.Date)


def days_from_dates(dates: pl.Series) -> np.ndarray:
    """Integer days since 1970-01-01 (int64 ndarray) of a Date Series without nulls."""
    return dates.cast(pl.Int32).to_numpy().astype(np.int64)


def timestamp_us(timestamps: pl.Series) -> np.ndarray:
    """UTC microseconds since the epoch of a Datetime Series (naive values are taken as UTC)."""
    dtype = timestamps.dtype
    if not isinstance(dtype, pl.Datetime):
        raise InvalidInput("timestamp must be a Datetime column", field="timestamp")
    if dtype.time_zone not in (None, "UTC"):
        timestamps = timestamps.dt.convert_time_zone("UTC")
    if dtype.time_unit != "us":
        timestamps = timestamps.dt.cast_time_unit("us")
    return timestamps.dt.replace_time_zone(None).cast(pl.Int64).to_numpy()


def group_sum(gid: np.ndarray, n_groups: int, weights: np.ndarray | None = None) -> np.ndarray:
    """Per-group sums (float64 ndarray of shape (n_groups,)); counts when ``weights`` is None."""
    if weights is None:
        return np.bincount(gid, minlength=n_groups).astype(np.float64)
    return np.bincount(gid, weights=weights, minlength=n_groups)
