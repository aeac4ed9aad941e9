"""Reading per-player daily aggregates and per-player outcomes."""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from unified_segmentation.features.daily import (
    DAILY_BASE_COLUMNS,
    DAILY_NULLABLE_COLUMNS,
    DAILY_REQUIRED_COLUMNS,
    EV_PREFIX,
    empty_daily,
    normalize_daily,
    sanitize_type_name,
)
from unified_segmentation.ingest._parse import parse_ids, parse_numbers
from unified_segmentation.ingest._problems import (
    ROW,
    Problems,
    missing_columns_error,
    raise_problems,
    rejects_frame,
)
from unified_segmentation.ingest._sources import Source, load_raw
from unified_segmentation.ingest.mapping import check_mapping, evaluate, field_expressions, source_column

OUTCOME_FIELDS: tuple[str, ...] = ("player_id", "ltv", "churned", "support_tickets")
OUTCOMES_SCHEMA: dict[str, pl.DataType] = {
    "player_id": pl.String(),
    "ltv": pl.Float64(),
    "churned": pl.Int8(),
    "support_tickets": pl.Float64(),
}
_SIGNED = ("start_hour_sin_sum", "start_hour_cos_sum")
_TRUE = ("1", "true", "yes", "y", "t")
_FALSE = ("0", "false", "no", "n", "f")


def parse_dates(values: pl.Series) -> tuple[pl.Series, pl.Series]:
    """Dates (Date, Datetime, or ``YYYY-MM-DD`` text, optionally followed by a time) -> (Date, errors)."""
    dtype = values.dtype
    if dtype == pl.Date:
        parsed = values
    elif isinstance(dtype, pl.Datetime):
        parsed = values.dt.date()
    elif dtype == pl.String:
        text = values.str.strip_chars()
        parsed = (
            pl.DataFrame({"t": text})
            .select(
                pl.when(pl.col("t").str.contains(r"^\d{4}-\d{2}-\d{2}([T ].*)?$"))
                .then(pl.col("t").str.slice(0, 10).str.to_date("%Y-%m-%d", strict=False))
            )
            .to_series()
        )
    else:
        parsed = pl.Series("date", [None] * values.len(), dtype=pl.Date)
    missing = values.is_null()
    if dtype == pl.String:
        missing = missing | (values.str.strip_chars() == "").fill_null(True)
    errors = pl.select(
        pl.when(pl.lit(missing)).then(pl.lit("date is empty"))
        .when(pl.lit(parsed).is_null()).then(pl.lit("unparseable date: use YYYY-MM-DD"))
    ).to_series()
    return parsed.alias("date"), errors.cast(pl.String)


def _duplicates(frame: pl.DataFrame, keys: list[str], problems: Problems, field: str) -> None:
    """Flag every repeat of the same key (rows with a null key are left to other checks)."""
    repeated = frame.select(
        pl.col(ROW),
        (pl.int_range(pl.len()).over(keys) > 0).alias("repeat"),
        pl.col(ROW).first().over(keys).alias("first"),
        pl.all_horizontal(pl.col(k).is_not_null() for k in keys).alias("complete"),
    ).filter(pl.col("repeat") & pl.col("complete"))
    if repeated.height:
        problems.add(
            repeated,
            pl.lit(True),
            field,
            pl.format("duplicate {} (first at row {})", pl.lit("/".join(keys)), pl.col("first")),
        )


def read_daily(
    source: Source,
    *,
    mapping: Mapping[str, str] | None = None,
    skip_invalid: bool = False,
) -> pl.DataFrame | tuple[pl.DataFrame, pl.DataFrame]:
    """Read per-player daily aggregates into the canonical Daily frame.

    Required: ``player_id, date, sessions, playtime_minutes, purchases, spend, social_events``;
    optional: ``night_playtime_minutes, social_sessions`` (unknown -> null), ``refunds`` (0),
    ``start_hour_sin_sum, start_hour_cos_sum``; every other numeric column is a game-specific count
    ``ev_<name>``. Numbers must be finite and non-negative, dates ``YYYY-MM-DD``, and a
    ``(player_id, date)`` may appear once. ``mapping`` is ``{ours: their column or expression}``
    (keys may also be ``ev_<type>``). With ``skip_invalid`` returns ``(daily, rejects)``.
    """
    fields = list(DAILY_BASE_COLUMNS)
    mapping = check_mapping(mapping, fields, allow_prefix=EV_PREFIX)
    custom = [k for k in mapping if k not in fields]

    def text_columns(header: list[str]) -> set[str]:
        direct = {source_column(header, f, mapping) for f in ("player_id", "date")}
        return {c for c in direct if c is not None}

    raw = load_raw(source, text_columns=text_columns)
    if raw.width == 0:  # an empty payload
        return (empty_daily(), rejects_frame(Problems().frame())) if skip_invalid else empty_daily()
    exprs, used = field_expressions(raw, fields + custom, mapping)
    missing = [f for f in DAILY_REQUIRED_COLUMNS if f not in exprs]
    if missing:
        raise missing_columns_error(missing, "daily data", raw.columns)
    extra: dict[str, pl.Expr] = {}
    for name, dtype in raw.schema.items():
        if name in used or name in exprs or not (dtype.is_numeric() or dtype == pl.Boolean):
            continue
        target = name if name.startswith(EV_PREFIX) else EV_PREFIX + sanitize_type_name(name)
        if target not in exprs and target not in extra:
            extra[target] = pl.col(name).cast(pl.Float64)
    frame = evaluate(raw, exprs, extra)
    rows = frame[ROW]
    problems = Problems()
    out: dict[str, pl.Series] = {ROW: rows}
    out["player_id"], errors = parse_ids(frame["player_id"], field="player_id")
    problems.add_errors(rows, errors, "player_id")
    out["date"], errors = parse_dates(frame["date"])
    problems.add_errors(rows, errors, "date")
    numeric = [c for c in frame.columns if c not in (ROW, "player_id", "date")]
    for name in numeric:
        parsed, errors = parse_numbers(frame[name], field=name, allow_negative=name in _SIGNED)
        if name in DAILY_REQUIRED_COLUMNS:
            empty = frame[name].is_null()
            errors = pl.select(
                pl.when(pl.lit(empty)).then(pl.lit(f"{name} is empty")).otherwise(pl.lit(errors))
            ).to_series()
        elif name not in DAILY_NULLABLE_COLUMNS and name not in _SIGNED:
            parsed = parsed.fill_null(0.0)
        problems.add_errors(rows, errors, name)
        out[name] = parsed.alias(name)
    parsed_frame = pl.DataFrame(out)
    _duplicates(parsed_frame, ["player_id", "date"], problems, "date")
    found = problems.frame()
    if found.height:
        if not skip_invalid:
            raise_problems(found, "daily")
        parsed_frame = parsed_frame.filter(~pl.col(ROW).is_in(found["row"].unique().implode()))
    daily = normalize_daily(parsed_frame.drop(ROW)) if parsed_frame.height else empty_daily(
        [c for c in parsed_frame.columns if c.startswith(EV_PREFIX)]
    )
    daily = daily.sort("player_id", "date")
    return (daily, rejects_frame(found)) if skip_invalid else daily


def _parse_churned(values: pl.Series) -> tuple[pl.Series, pl.Series]:
    dtype = values.dtype
    if dtype == pl.Boolean:
        return values.cast(pl.Int8).alias("churned"), pl.Series("error", [None] * values.len(), dtype=pl.String)
    text = values.cast(pl.String, strict=False).str.strip_chars().str.to_lowercase()
    if dtype.is_numeric():
        text = values.cast(pl.Float64).cast(pl.String).str.replace(r"\.0$", "")
    frame = pl.DataFrame({"t": text})
    out = frame.select(
        pl.when(pl.col("t").is_in(_TRUE)).then(1).when(pl.col("t").is_in(_FALSE)).then(0)
        .cast(pl.Int8).alias("churned"),
        pl.when(pl.col("t").is_not_null() & (pl.col("t") != "") & ~pl.col("t").is_in(_TRUE + _FALSE))
        .then(pl.format("churned must be 0 or 1 ({})", pl.col("t").str.slice(0, 20))).alias("error"),
    )
    return out["churned"], out["error"]


def read_outcomes(
    source: Source,
    *,
    mapping: Mapping[str, str] | None = None,
    skip_invalid: bool = False,
) -> pl.DataFrame | tuple[pl.DataFrame, pl.DataFrame]:
    """Read per-player outcomes: ``player_id, ltv, churned (Int8 0/1), support_tickets``.

    Optional fields may be absent (null). ``ltv`` and ``support_tickets`` must be finite and
    non-negative; ``churned`` 0/1 (or true/false, yes/no); one row per player.
    """
    mapping = check_mapping(mapping, OUTCOME_FIELDS)

    def text_columns(header: list[str]) -> set[str]:
        column = source_column(header, "player_id", mapping)
        return {column} if column else set()

    raw = load_raw(source, text_columns=text_columns)
    if raw.width == 0:  # an empty payload
        empty = pl.DataFrame(schema=OUTCOMES_SCHEMA)
        return (empty, rejects_frame(Problems().frame())) if skip_invalid else empty
    exprs, _ = field_expressions(raw, OUTCOME_FIELDS, mapping)
    if "player_id" not in exprs:
        raise missing_columns_error(["player_id"], "outcomes", raw.columns)
    frame = evaluate(raw, exprs)
    rows = frame[ROW]
    problems = Problems()
    out: dict[str, pl.Series] = {ROW: rows}
    out["player_id"], errors = parse_ids(frame["player_id"], field="player_id")
    problems.add_errors(rows, errors, "player_id")
    for name in ("ltv", "support_tickets"):
        if name in frame.columns:
            out[name], errors = parse_numbers(frame[name], field=name)
            problems.add_errors(rows, errors, name)
        else:
            out[name] = pl.Series(name, [None] * frame.height, dtype=pl.Float64)
    if "churned" in frame.columns:
        out["churned"], errors = _parse_churned(frame["churned"])
        problems.add_errors(rows, errors, "churned")
    else:
        out["churned"] = pl.Series("churned", [None] * frame.height, dtype=pl.Int8)
    parsed_frame = pl.DataFrame(out)
    _duplicates(parsed_frame, ["player_id"], problems, "player_id")
    found = problems.frame()
    if found.height:
        if not skip_invalid:
            raise_problems(found, "outcome")
        parsed_frame = parsed_frame.filter(~pl.col(ROW).is_in(found["row"].unique().implode()))
    outcomes = parsed_frame.select([pl.col(n).cast(t) for n, t in OUTCOMES_SCHEMA.items()])
    return (outcomes, rejects_frame(found)) if skip_invalid else outcomes
