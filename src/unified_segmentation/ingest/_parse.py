"""Vectorized parsing of timestamps, numbers, ids and JSON properties, with per-row error messages.

Every parser returns ``(parsed, error)``: two Series of the input's length, ``error`` null where the
row is fine and a short message where it is not.
"""

from __future__ import annotations

import datetime as dt
import re

import polars as pl

from unified_segmentation.errors import InvalidInput

MAX_EPOCH_S = 4_102_444_800  # 2100-01-01T00:00:00Z
MAX_US = MAX_EPOCH_S * 1_000_000
_US_PER_HOUR = 3_600_000_000
_ISO = (
    r"^(\d{4})-(\d{2})-(\d{2})"
    r"(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?)?"
    r"\s*(?:([Zz])|([+-])(\d{2}):?(\d{2})?)?$"
)
_NUMBER = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"
_UTC = pl.Datetime("us", "UTC")


def _none(n: int) -> pl.Series:
    return pl.Series("error", [None] * n, dtype=pl.String)


def localize(naive: pl.Series, timezone: str) -> pl.Series:
    """Naive local datetimes -> UTC.

    Ambiguous (DST fall-back) times take the earlier instant; times skipped by a DST jump are read
    with the offset before the jump (like ``zoneinfo`` with ``fold=0``).
    """
    naive = naive.cast(pl.Datetime("us"))
    if timezone == "UTC":
        return naive.dt.replace_time_zone("UTC")
    local = naive.dt.replace_time_zone(timezone, ambiguous="earliest", non_existent="null")
    if local.null_count() > naive.null_count():
        # t + 1h lies after the gap, so its UTC instant is t read with the pre-jump offset.
        shifted = (naive + pl.Series([dt.timedelta(hours=1)])).dt.replace_time_zone(
            timezone, ambiguous="earliest", non_existent="null"
        )
        local = local.fill_null(shifted)
    return local.dt.convert_time_zone("UTC")


def _epoch(numbers: pl.Series, epoch_unit: str) -> tuple[pl.Series, pl.Series]:
    """Float64 epoch numbers -> (UTC datetimes, errors)."""
    scale = 1_000_000.0 if epoch_unit == "s" else 1_000.0
    finite = numbers.is_finite().fill_null(False)
    unit_limit = MAX_EPOCH_S if epoch_unit == "s" else MAX_EPOCH_S * 1000
    too_late = finite & (numbers.abs() > unit_limit)
    hint = (
        "timestamp after 2100: looks like milliseconds: use epoch_unit=ms"
        if epoch_unit == "s"
        else "timestamp after 2100: looks like microseconds; give epoch milliseconds"
    )
    frame = pl.DataFrame({"x": numbers, "ok": finite & ~too_late, "late": too_late})
    out = frame.select(
        pl.when("ok").then((pl.col("x") * scale).round(0).cast(pl.Int64)).cast(pl.Datetime("us"))
        .dt.replace_time_zone("UTC").alias("ts"),
        pl.when(pl.col("x").is_null()).then(None)
        .when("late").then(pl.lit(hint))
        .when(~pl.col("ok")).then(pl.lit("unparseable timestamp (not a finite number)"))
        .otherwise(None).alias("error"),
    )
    return out["ts"], out["error"]


def _iso(text: pl.Series, timezone: str) -> tuple[pl.Series, pl.Series]:
    """ISO-8601 text (any mix of date, date-time, with or without offset) -> (UTC, matched)."""
    parts = text.str.extract_groups(_ISO).struct.unnest()
    parts.columns = [f"g{i}" for i in range(1, len(parts.columns) + 1)]
    g = {i: pl.col(f"g{i}") for i in range(1, 12)}
    frame = parts.select(
        date=pl.concat_str(g[1], g[2], g[3], separator="-").str.to_date("%Y-%m-%d", strict=False),
        hour=g[4].cast(pl.Int64).fill_null(0),
        minute=g[5].cast(pl.Int64).fill_null(0),
        second=g[6].cast(pl.Int64).fill_null(0),
        micro=g[7].str.pad_end(9, "0").str.slice(0, 6).cast(pl.Int64).fill_null(0),
        zulu=g[8].is_not_null(),
        sign=pl.when(g[9] == "-").then(-1).otherwise(1),
        offset_h=g[10].cast(pl.Int64),
        offset_m=g[11].cast(pl.Int64).fill_null(0),
        matched=g[1].is_not_null(),
    ).with_columns(
        valid=pl.col("date").is_not_null() & (pl.col("hour") < 24) & (pl.col("minute") < 60)
        & (pl.col("second") < 61) & (pl.col("offset_m") < 60) & (pl.col("offset_h").fill_null(0) < 24),
    )
    frame = frame.with_columns(
        naive=pl.when("valid").then(
            pl.col("date").cast(pl.Datetime("us"))
            + pl.duration(hours="hour", minutes="minute", seconds="second", microseconds="micro")
        ),
        offset_us=pl.when("zulu").then(0).otherwise(
            pl.col("sign") * (pl.col("offset_h") * 60 + pl.col("offset_m")) * 60_000_000
        ),
    )
    with_offset = frame.select(
        (pl.col("naive") - pl.duration(microseconds=pl.col("offset_us"))).dt.replace_time_zone("UTC")
    ).to_series()
    local = localize(frame["naive"], timezone)
    has_offset = frame["offset_us"].is_not_null()
    result = pl.select(pl.when(pl.lit(has_offset)).then(pl.lit(with_offset)).otherwise(pl.lit(local))).to_series()
    return result, frame["valid"]


def _iso_fast(text: pl.Series, timezone: str) -> tuple[pl.Series, pl.Series]:
    """ISO text -> (UTC, valid). Polars' own parser (format inferred from the first value, which must
    be ISO-8601) takes the rows it can; the general regex parser takes the rest."""
    present = text.is_not_null()
    values = text.drop_nulls()
    if values.len() == 0:
        return pl.Series("ts", [None] * text.len(), dtype=_UTC), present
    if re.fullmatch(_ISO, values[0]) is None:
        return _iso(text, timezone)
    try:
        fast = text.str.to_datetime(strict=False, time_unit="us")
    except pl.exceptions.PolarsError:
        return _iso(text, timezone)
    if fast.dtype.time_zone is None:
        fast = localize(fast, timezone)
    elif fast.dtype.time_zone != "UTC":
        fast = fast.dt.convert_time_zone("UTC")
    rest = present & fast.is_null()
    if not rest.any():
        return fast, present
    index = rest.arg_true()
    slow, slow_ok = _iso(text.gather(index), timezone)
    return fast.scatter(index, slow), present.scatter(index, slow_ok)


def parse_timestamps(values: pl.Series, *, timezone: str, epoch_unit: str = "s") -> tuple[pl.Series, pl.Series]:
    """Timestamps of any supported form -> (Datetime[us, UTC], errors).

    Accepts Datetime (naive = local time in ``timezone``), Date (local midnight), epoch numbers
    (seconds, or milliseconds with ``epoch_unit="ms"``) and text: ISO-8601 with or without offset,
    or epoch digits. Anything after 2100 is an error (epoch seconds that large are a millisecond
    mix-up, and the message says so).
    """
    if epoch_unit not in ("s", "ms"):
        raise InvalidInput("epoch_unit must be 's' or 'ms'", field="epoch_unit")
    n = values.len()
    dtype = values.dtype
    if isinstance(dtype, pl.Datetime):
        parsed = localize(values, timezone) if dtype.time_zone is None else values.dt.convert_time_zone("UTC")
        parsed = parsed.dt.cast_time_unit("us")
        errors = _none(n)
    elif dtype == pl.Date:
        parsed, errors = localize(values.cast(pl.Datetime("us")), timezone), _none(n)
    elif dtype.is_numeric():
        parsed, errors = _epoch(values.cast(pl.Float64), epoch_unit)
    elif dtype == pl.String:
        pre = (
            pl.LazyFrame({"v": values})
            .select(pl.col("v").str.strip_chars().alias("stripped"))
            .with_columns(pl.when(pl.col("stripped") == "").then(None).otherwise("stripped").alias("text"))
            .with_columns(pl.col("text").str.contains(_NUMBER).fill_null(False).alias("numeric"))
            .collect()
        )
        text, numeric = pre["text"], pre["numeric"]
        n_numeric = int(numeric.sum())
        if n_numeric == 0:  # only text (the usual case): no epoch pass
            epoch_ts = pl.Series("ts", [None] * n, dtype=_UTC)
            epoch_err = _none(n)
        else:
            epoch_ts, epoch_err = _epoch(
                pl.select(pl.when(pl.lit(numeric)).then(pl.lit(text).cast(pl.Float64, strict=False))).to_series(),
                epoch_unit,
            )
        if n_numeric == n:  # only epoch numbers: no ISO pass
            iso_ts, iso_ok = pl.Series("ts", [None] * n, dtype=_UTC), pl.Series([False] * n)
        else:
            iso_text = text if n_numeric == 0 else pl.select(pl.when(~pl.lit(numeric)).then(pl.lit(text))).to_series()
            iso_ts, iso_ok = _iso_fast(iso_text, timezone)
        frame = pl.LazyFrame(
            {"text": text, "numeric": numeric, "e_ts": epoch_ts, "e_err": epoch_err, "i_ts": iso_ts, "i_ok": iso_ok,
             "missing": values.is_null() | (pre["stripped"] == "").fill_null(True)}
        ).select(
            pl.when("numeric").then("e_ts").otherwise("i_ts").cast(_UTC).alias("ts"),
            pl.when(pl.col("text").is_null()).then(None)
            .when("numeric").then("e_err")
            .when(~pl.col("i_ok")).then(pl.lit("unparseable timestamp: use ISO-8601 or epoch seconds"))
            .otherwise(None).cast(pl.String).alias("error"),
            "missing",
        )
        return _finish_timestamps(frame)
    else:
        parsed = pl.Series("ts", [None] * n, dtype=_UTC)
        errors = pl.Series("error", [f"unsupported timestamp type {dtype}"] * n, dtype=pl.String)
        errors = pl.select(pl.when(pl.lit(values).is_null()).then(None).otherwise(pl.lit(errors))).to_series()
    frame = pl.LazyFrame({"ts": parsed.cast(_UTC), "error": errors.cast(pl.String), "missing": values.is_null()})
    return _finish_timestamps(frame)


def _finish_timestamps(frame: pl.LazyFrame) -> tuple[pl.Series, pl.Series]:
    """``ts, error, missing`` -> (timestamp, error): empty values and times after 2100 are errors, and a
    row with an error has no timestamp."""
    late = pl.col("ts").dt.replace_time_zone(None).cast(pl.Int64) >= MAX_US
    out = (
        frame.with_columns(
            pl.when("missing").then(pl.lit("timestamp is empty"))
            .when(late & pl.col("error").is_null()).then(pl.lit("timestamp after 2100"))
            .otherwise("error").alias("error")
        )
        .select(pl.when(pl.col("error").is_null()).then("ts").alias("timestamp"), "error")
        .collect()
    )
    return out["timestamp"], out["error"]


def parse_numbers(
    values: pl.Series, *, field: str, allow_negative: bool = False
) -> tuple[pl.Series, pl.Series]:
    """Numbers (numeric columns or numeric text) -> (Float64, errors): NaN, inf, text, negatives."""
    n = values.len()
    dtype = values.dtype
    if dtype.is_numeric():
        numbers = values.cast(pl.Float64)
        not_number = pl.Series([False] * n)
    elif dtype == pl.String:
        text = values.str.strip_chars()
        numbers = text.cast(pl.Float64, strict=False)
        not_number = (numbers.is_null() & text.is_not_null() & (text != "")).fill_null(False)
    elif dtype == pl.Null:
        return pl.Series(field, [None] * n, dtype=pl.Float64), _none(n)
    else:
        numbers = pl.Series(field, [None] * n, dtype=pl.Float64)
        not_number = values.is_not_null()
    frame = pl.DataFrame({"x": numbers, "bad": not_number, "raw": values.cast(pl.String, strict=False)})
    negative = pl.lit(False) if allow_negative else pl.col("x") < 0
    out = frame.select(
        pl.when(~pl.col("bad") & pl.col("x").is_finite() & ~negative).then("x").alias(field),
        pl.when("bad").then(pl.format("{} is not a number ({})", pl.lit(field), pl.col("raw").str.slice(0, 40)))
        .when(pl.col("x").is_nan()).then(pl.lit(f"{field} is NaN"))
        .when(pl.col("x").is_infinite()).then(pl.lit(f"{field} is infinite"))
        .when(negative).then(pl.format("{} is negative ({})", pl.lit(field), pl.col("x")))
        .otherwise(None).alias("error"),
    )
    return out[field], out["error"]


def parse_ids(values: pl.Series, *, field: str, lower: bool = False) -> tuple[pl.Series, pl.Series]:
    """Identifiers -> (trimmed text, errors for null/empty). Integral floats lose their ``.0``."""
    dtype = values.dtype
    if dtype.is_float():
        finite = values.drop_nulls()
        if finite.len() and bool((finite == finite.round(0)).all()) and bool(finite.is_finite().all()):
            values = values.cast(pl.Int64)
    text = pl.col(field).cast(pl.String, strict=False).str.strip_chars()
    if lower:
        text = text.str.to_lowercase()
    out = (
        pl.LazyFrame({field: values})
        .select(text.alias(field))
        .with_columns(
            pl.when(pl.col(field).is_null() | (pl.col(field) == ""))
            .then(pl.lit(f"{field} is empty")).cast(pl.String).alias("error")
        )
        .collect()
    )
    return out[field], out["error"]


def parse_properties(values: pl.Series) -> tuple[pl.Series, pl.Series]:
    """Properties -> (JSON object text or null, errors for anything but a JSON object)."""
    n = values.len()
    dtype = values.dtype
    if isinstance(dtype, pl.Struct):
        text = values.struct.json_encode()
        return pl.select(pl.when(pl.lit(values).is_null()).then(None).otherwise(pl.lit(text))).to_series(), _none(n)
    if dtype == pl.Null:
        return pl.Series("properties", [None] * n, dtype=pl.String), _none(n)
    if dtype != pl.String:
        errors = pl.select(
            pl.when(pl.lit(values).is_not_null()).then(pl.lit("properties is not a JSON object"))
        ).to_series()
        return pl.Series("properties", [None] * n, dtype=pl.String), errors.cast(pl.String)
    text = values.str.strip_chars()
    text = pl.select(pl.when(pl.lit(text) == "").then(None).otherwise(pl.lit(text))).to_series()
    candidate = text.str.starts_with("{") & text.str.ends_with("}")
    valid = candidate & text.str.json_path_match("$").is_not_null()
    bad = text.is_not_null() & ~valid.fill_null(False)
    errors = pl.select(pl.when(pl.lit(bad)).then(pl.lit("properties is not a JSON object"))).to_series()
    return text.alias("properties"), errors.cast(pl.String)
