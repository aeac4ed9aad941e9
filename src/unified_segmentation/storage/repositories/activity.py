"""Daily activity, players (first / last seen) and outcomes."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Literal

import polars as pl
from sqlalchemy import exists, select, text
from sqlalchemy.orm import Session

from ...features.daily import DAILY_BASE_COLUMNS
from .. import _bulk
from ..models import DailyActivity, Player
from .events import ingest_lock

__all__ = [
    "DAILY_COLUMNS",
    "DAILY_NULLABLE",
    "load_daily",
    "load_outcomes",
    "load_players_daily",
    "player_exists",
    "players_first_seen",
    "upsert_daily",
    "upsert_outcomes",
    "upsert_players",
]

#: Canonical Daily value columns (docs/ARCHITECTURE.md), then any ``ev_<type>`` columns.
DAILY_COLUMNS = DAILY_BASE_COLUMNS[2:]
#: Columns where null means "unknown" (a daily file may not provide them).
DAILY_NULLABLE = frozenset(
    {"night_playtime_minutes", "social_sessions", "start_hour_sin_sum", "start_hour_cos_sum"}
)
_DAILY_TABLE_COLUMNS = ("game_id", "player_id", "date", *DAILY_COLUMNS, "custom", "source")
_KEY_RE = r'"((?:[^"\\]|\\.)*)"\s*:'


# --------------------------------------------------------------------------------------------------
# daily activity
# --------------------------------------------------------------------------------------------------


def _ev_columns(frame: pl.DataFrame) -> list[str]:
    return [c for c in frame.columns if c.startswith("ev_")]


def _custom_json(ev_cols: Sequence[str]) -> pl.Expr:
    """Sparse JSON object of the non-zero ``ev_*`` counts of a row (null when there are none)."""
    if not ev_cols:
        return pl.lit(None, dtype=pl.String)
    pieces = [
        pl.when(pl.col(c).is_finite() & (pl.col(c) != 0)).then(
            pl.lit(json.dumps(c) + ": ") + pl.col(c).cast(pl.Float64).cast(pl.String)
        )
        for c in ev_cols
    ]
    body = pl.concat_str(pieces, separator=", ", ignore_nulls=True)
    return pl.when(body != "").then(pl.lit("{") + body + pl.lit("}"))


def _daily_rows(game_id: str, daily: pl.DataFrame, source: str, mode: str) -> pl.DataFrame:
    missing = [c for c in ("player_id", "date") if c not in daily.columns]
    if missing:
        raise ValueError(f"daily frame lacks column(s) {missing}")
    ev_cols = _ev_columns(daily)
    values = []
    for c in DAILY_COLUMNS:
        if c in daily.columns:
            values.append(pl.col(c).cast(pl.Float64))
        else:
            values.append(pl.lit(None if c in DAILY_NULLABLE else 0.0, dtype=pl.Float64).alias(c))
    frame = (
        daily.lazy()
        .select(
            pl.col("player_id").cast(pl.String),
            pl.col("date").cast(pl.Date),
            *values,
            *[pl.col(c).cast(pl.Float64) for c in ev_cols],
        )
        .with_columns(pl.col(c).fill_null(0.0) for c in DAILY_COLUMNS if c not in DAILY_NULLABLE)
        .with_columns(pl.struct("player_id", "date").is_duplicated().any().alias("__repeated"))
        .collect()
    )
    repeated = frame.height > 0 and bool(frame["__repeated"][0])
    frame = frame.drop("__repeated")
    if repeated:
        if mode == "add":
            frame = frame.group_by("player_id", "date", maintain_order=True).agg(
                *[
                    pl.when(pl.col(c).is_null().all()).then(None).otherwise(pl.col(c).sum()).alias(c)
                    for c in (*DAILY_COLUMNS, *ev_cols)
                ]
            )
        else:
            frame = frame.unique(["player_id", "date"], keep="last", maintain_order=True)
    return frame.select(
        pl.lit(game_id).alias("game_id"),
        "player_id",
        "date",
        *DAILY_COLUMNS,
        _custom_json(ev_cols).alias("custom"),
        pl.lit(source).alias("source"),
    )


def _custom_merge_sql(kind: str) -> str:
    """SQL adding the ``custom`` counts of the stored row and the incoming row key by key."""
    if kind == "postgresql":
        merged = (
            "(SELECT jsonb_object_agg(key, total) FROM (SELECT key, sum(value::float8) AS total FROM "
            "(SELECT key, value FROM jsonb_each_text(daily_activity.custom) UNION ALL "
            "SELECT key, value FROM jsonb_each_text({new}.custom)) AS parts GROUP BY key) AS sums)"
        )
    else:
        merged = (
            "(SELECT json_group_object(key, total) FROM (SELECT key, sum(value) AS total FROM "
            "(SELECT key, value FROM json_each(daily_activity.custom) UNION ALL "
            "SELECT key, value FROM json_each({new}.custom)) GROUP BY key))"
        )
    return (
        "CASE WHEN {new}.custom IS NULL THEN daily_activity.custom "
        "WHEN daily_activity.custom IS NULL THEN {new}.custom "
        f"ELSE {merged} END"
    )


def upsert_daily(
    session: Session,
    game_id: str,
    daily: pl.DataFrame,
    *,
    mode: Literal["add", "replace"] = "add",
    update_players: bool = True,
) -> int:
    """Write canonical Daily rows for a game; returns the number of player-days written.

    ``mode="add"`` (events rolled up): the rows are added into stored player-days that came from
    events (counts and sums add; ``ev_*`` counts add key by key) and inserted where none exists; a
    player-day that came from a daily file is left alone (a daily row replaces the events' roll-up).
    ``mode="replace"`` (daily files): the rows replace stored player-days whatever their source.
    Missing columns are 0 (null for the nullable ones, meaning unknown). With ``update_players`` the
    players' first / last seen dates are widened to cover the rows.
    """
    if mode not in ("add", "replace"):
        raise ValueError("mode must be 'add' or 'replace'")
    frame = _daily_rows(game_id, daily, "events" if mode == "add" else "daily", mode)
    if frame.height == 0:
        return 0
    kind = _bulk.dialect(session)
    session.flush()
    ingest_lock(session, game_id)
    sets, where = daily_conflict_sets(kind, mode)
    _bulk.upsert_frame(session, "daily_activity", frame, DAILY_KEYS, sets, where)
    if update_players:
        _upsert_player_rows(session, game_id, players_seen(game_id, frame))
    return frame.height


#: Primary key of ``daily_activity``.
DAILY_KEYS = ("game_id", "player_id", "date")
#: Primary key of ``players`` and what an ingested player-day changes in it (``{new}``: the incoming row).
PLAYER_KEYS = ("game_id", "player_id")


def daily_conflict_sets(kind: str, mode: str) -> tuple[list[str], str | None]:
    """The ``ON CONFLICT DO UPDATE`` assignments and condition of :func:`upsert_daily`'s ``mode``."""
    if mode == "add":
        sets = []
        for c in DAILY_COLUMNS:
            if c in DAILY_NULLABLE:
                sets.append(
                    f"{c} = CASE WHEN daily_activity.{c} IS NULL AND {{new}}.{c} IS NULL THEN NULL "
                    f"ELSE COALESCE(daily_activity.{c}, 0) + COALESCE({{new}}.{c}, 0) END"
                )
            else:
                sets.append(f"{c} = daily_activity.{c} + {{new}}.{c}")
        sets.append(f"custom = {_custom_merge_sql(kind)}")
        return sets, "daily_activity.source = 'events'"
    return [f"{c} = {{new}}.{c}" for c in (*DAILY_COLUMNS, "custom", "source")], None


def player_conflict_sets(kind: str) -> tuple[list[str], str]:
    """The ``ON CONFLICT DO UPDATE`` assignments and condition widening a player's seen dates."""
    least, greatest = ("LEAST", "GREATEST") if kind == "postgresql" else ("min", "max")
    sets = [
        f"first_seen = {least}(players.first_seen, {{new}}.first_seen)",
        f"last_seen = {greatest}(players.last_seen, {{new}}.last_seen)",
    ]
    return sets, "{new}.first_seen < players.first_seen OR {new}.last_seen > players.last_seen"


def players_seen(game_id: str, rows: pl.DataFrame) -> pl.DataFrame:
    """``game_id, player_id, first_seen, last_seen`` of :func:`_daily_rows`' rows, one per player."""
    return (
        rows.lazy()
        .group_by("player_id", maintain_order=True)
        .agg(pl.col("date").min().alias("first_seen"), pl.col("date").max().alias("last_seen"))
        .select(pl.lit(game_id).alias("game_id"), "player_id", "first_seen", "last_seen")
        .collect()
    )


def _expand_custom(frame: pl.DataFrame) -> pl.DataFrame:
    """The ``custom`` JSON column expanded to ``ev_*`` Float64 columns (0 where absent).

    Only the distinct ``custom`` texts are parsed (counts repeat: a few thousand distinct texts per
    million rows); each row gets the values of its text through a join.
    """
    texts = frame.select(pl.col("custom").unique().drop_nulls())
    found = texts.select(pl.col("custom").str.extract_all(_KEY_RE).explode().drop_nulls().unique())
    keys = sorted({json.loads(m[: m.rindex(":")].strip()) for m in found.to_series().to_list()})
    if not keys:
        return frame.drop("custom")
    dtype = pl.Struct({k: pl.Float64 for k in keys})
    values = texts.with_columns(pl.col("custom").str.json_decode(dtype).alias("__values")).unnest("__values")
    return (
        frame.join(values, on="custom", how="left", maintain_order="left")
        .drop("custom")
        .with_columns(pl.col(k).fill_null(0.0) for k in keys)
    )


def _sorted_by_player_date(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` ordered by ``player_id, date`` (byte order of the id); a frame already in that order
    (as the rows usually arrive) is returned as is after a vectorized check."""
    if frame.height < 2:
        return frame
    in_order = (
        frame["player_id"].is_sorted()
        and frame.select(
            ((pl.col("date").to_physical().diff() > 0) | (pl.col("player_id") != pl.col("player_id").shift(1)))
            .slice(1)
            .all()
        ).item()
    )
    return frame if in_order else frame.sort("player_id", "date")


def load_daily(
    session: Session,
    game_id: str,
    *,
    start: dt.date | None = None,
    end: dt.date | None = None,
    player_ids: Sequence[str] | None = None,
    player_range: tuple[str, str] | None = None,
) -> pl.DataFrame:
    """The game's daily activity with ``start <= date <= end`` as a canonical Daily frame:
    ``player_id, date``, the value columns of :data:`DAILY_COLUMNS` and one ``ev_<type>`` column
    per game-specific event type present (0 where a player-day has none). Ordered by player, date.

    ``player_range=(first, last)`` keeps the players with ``first <= player_id <= last`` in the
    database's order of ids (a contiguous run of ``players_first_seen``'s ids): the database reads
    that run of its primary key instead of testing every row of the window against a list. With
    ``player_ids`` too, the rows are those of ``player_ids`` within the range (the list is then
    applied to the fetched rows).

    PostgreSQL: dates travel as day numbers, the rows unsorted by the server (sorted here only if
    they did not arrive in order), through a binary ``COPY ... TO STDOUT`` decoded column by column.
    """
    kind = _bulk.dialect(session)
    p = _bulk.param(kind)
    where = [f"game_id = {p}"]
    params: list[object] = [game_id]
    if start is not None:
        where.append(f"date >= {p}")
        params.append(_bulk.date_param(kind, start))
    if end is not None:
        where.append(f"date <= {p}")
        params.append(_bulk.date_param(kind, end))
    pg = kind == "postgresql"
    schema: dict[str, pl.DataType] = {"player_id": pl.String(), "date": pl.Int32() if pg else pl.String()}
    schema.update({c: pl.Float64() for c in DAILY_COLUMNS})
    schema["custom"] = pl.String()
    if player_ids is not None and not player_ids:
        return _expand_custom(pl.DataFrame(schema=schema)).with_columns(pl.col("date").cast(pl.Date))
    source = "daily_activity"
    if player_range is not None:
        where.append(f"player_id >= {p} AND player_id <= {p}")
        params.extend(player_range)
    elif player_ids is not None and pg:
        # One index range scan per player (the list's length, not the table's, sets the cost): a
        # list tested row by row, ``= ANY(list)``, plans as a full scan of the window (10k players of
        # 100k: 0.2 s against 0.5 s). Sorted ids come back in player, date order.
        source = f"unnest({p}::text[]) AS u(pid) JOIN daily_activity ON player_id = u.pid"
        params.insert(0, sorted(set(player_ids)))
    elif player_ids is not None:
        cond, value = _bulk.in_list(kind, "player_id", list(player_ids))
        where.append(cond)
        params.append(value)
    if pg:
        if player_range is not None:
            # A run of ids is a contiguous stretch of the primary key (and of the heap, which ingestion
            # fills in key order), but for a wide run the planner prefers a full scan that filters
            # the whole table: categorize_all's k chunks then read the table k times (100k players,
            # 4 chunks: 0.75 s a chunk against 0.38 s through the key). Only for this transaction.
            session.execute(text("SET LOCAL enable_seqscan = off"))
            session.execute(text("SET LOCAL enable_bitmapscan = off"))
        # No ORDER BY: a server-side sort of the window costs far more than checking the order here.
        query = (
            f"SELECT player_id, date - DATE '1970-01-01', {', '.join(DAILY_COLUMNS)}, custom::text "
            f"FROM {source} WHERE {' AND '.join(where)}"
        )
        frame = _bulk.read_binary(session, query, params, schema).with_columns(pl.col("date").cast(pl.Date))
        frame = _sorted_by_player_date(frame)
    else:
        query = (
            f"SELECT player_id, date, {', '.join(DAILY_COLUMNS)}, custom FROM daily_activity "
            f"WHERE {' AND '.join(where)} ORDER BY player_id, date"
        )
        frame = _bulk.parse_temporal(_bulk.read_query(session, query, params, schema), dates=["date"])
    if player_range is not None and player_ids is not None:
        frame = frame.filter(pl.col("player_id").is_in(pl.Series(list(player_ids), dtype=pl.String).implode()))
    return _expand_custom(frame)


# --------------------------------------------------------------------------------------------------
# players
# --------------------------------------------------------------------------------------------------


def upsert_players(session: Session, game_id: str, players: pl.DataFrame) -> int:
    """Widen the players' ``[first_seen, last_seen]`` to cover ``players`` (``player_id``,
    ``first_seen``, ``last_seen``; a ``date`` column may stand for both)."""
    if players.height == 0:
        return 0
    lazy = players.lazy()
    if "first_seen" not in players.columns:
        lazy = lazy.group_by("player_id").agg(
            pl.col("date").min().alias("first_seen"), pl.col("date").max().alias("last_seen")
        )
    frame = (
        lazy.select(
            pl.col("player_id").cast(pl.String),
            pl.col("first_seen").cast(pl.Date),
            pl.col("last_seen").cast(pl.Date),
        )
        .group_by("player_id", maintain_order=True)
        .agg(pl.col("first_seen").min(), pl.col("last_seen").max())
        .select(pl.lit(game_id).alias("game_id"), "player_id", "first_seen", "last_seen")
        .collect()
    )
    return _upsert_player_rows(session, game_id, frame)


def _upsert_player_rows(session: Session, game_id: str, frame: pl.DataFrame) -> int:
    """``game_id, player_id, first_seen, last_seen`` rows, one per player, into ``players``."""
    sets, where = player_conflict_sets(_bulk.dialect(session))
    session.flush()
    ingest_lock(session, game_id)
    _bulk.upsert_frame(session, "players", frame, PLAYER_KEYS, sets, where)
    return frame.height


def players_first_seen(
    session: Session, game_id: str, player_ids: Sequence[str] | None = None
) -> pl.DataFrame:
    """``player_id, first_date`` (Date) of the game's known players (optionally only ``player_ids``)."""
    kind = _bulk.dialect(session)
    p = _bulk.param(kind)
    where = [f"game_id = {p}"]
    params: list[object] = [game_id]
    source = "players"
    if player_ids is not None:
        if not player_ids:
            return pl.DataFrame(schema={"player_id": pl.String, "first_date": pl.Date})
        if kind == "postgresql":  # one key lookup per id (see load_daily)
            source = f"unnest({p}::text[]) AS u(pid) JOIN players ON player_id = u.pid"
            params.insert(0, sorted(set(player_ids)))
        else:
            cond, value = _bulk.in_list(kind, "player_id", list(player_ids))
            where.append(cond)
            params.append(value)
    query = (
        f"SELECT player_id, {_bulk.sql_date(kind, 'first_seen')} FROM {source} "
        f"WHERE {' AND '.join(where)} ORDER BY player_id"
    )
    frame = _bulk.read_query(session, query, params, {"player_id": pl.String(), "first_date": pl.String()})
    return _bulk.parse_temporal(frame, dates=["first_date"])


#: A list of players is read as the key range from its smallest to its largest id when its players are
#: at least this share of the range's known players (the whole game, a run of ids).
DENSE_SHARE = 0.8


def _first_seen_range(session: Session, game_id: str, lo: str, hi: str, limit: int) -> pl.DataFrame:
    """``players_first_seen`` of the players ``lo <= player_id <= hi`` (database order), at most ``limit``."""
    kind = _bulk.dialect(session)
    p = _bulk.param(kind)
    query = (
        f"SELECT player_id, {{date}} FROM players WHERE game_id = {p} AND player_id >= {p} AND player_id <= {p} "
        f"ORDER BY player_id LIMIT {p}"
    )
    params = [game_id, lo, hi, limit]
    if kind == "postgresql":
        frame = _bulk.read_binary(session, query.format(date="first_seen - DATE '1970-01-01'"), params,
                                  {"player_id": pl.String(), "first_date": pl.Int32()})
        return frame.with_columns(pl.col("first_date").cast(pl.Date))
    frame = _bulk.read_query(session, query.format(date="first_seen"), params,
                             {"player_id": pl.String(), "first_date": pl.String()})
    return _bulk.parse_temporal(frame, dates=["first_date"])


def load_players_daily(
    session: Session, game_id: str, player_ids: Sequence[str], *, start: dt.date | None, end: dt.date | None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``(load_daily(start, end, player_ids), players_first_seen(player_ids))``, read by the cheaper plan.

    The players between the list's smallest and largest id are read first (at most as many as the list
    over :data:`DENSE_SHARE`). When the list covers that share of them (a whole game, a run of ids),
    both reads go through that range of the primary key: no list is sent, the rows come in key order,
    and the list is applied to the fetched rows. Else (a sparse list) the list is sent, as before.
    Ids the range misses but the game knows (a collation ordering ids unlike Python) take the list path.
    """
    ids = sorted(set(player_ids))
    if not ids:
        return (load_daily(session, game_id, start=start, end=end, player_ids=[]),
                players_first_seen(session, game_id, player_ids=[]))
    cap = int(len(ids) / DENSE_SHARE) + 1
    first = _first_seen_range(session, game_id, ids[0], ids[-1], cap + 1)
    if first.height <= cap:
        wanted = pl.Series(ids, dtype=pl.String)
        found = first["player_id"].is_in(wanted.implode())
        n_found = int(found.sum())
        missing = [] if n_found == len(ids) else wanted.filter(~wanted.is_in(first["player_id"].implode())).to_list()
        if not missing or players_first_seen(session, game_id, player_ids=missing).height == 0:
            daily = load_daily(session, game_id, start=start, end=end, player_ids=ids,
                               player_range=(ids[0], ids[-1]))
            return daily, first if n_found == first.height else first.filter(found)
    return (load_daily(session, game_id, start=start, end=end, player_ids=ids),
            players_first_seen(session, game_id, player_ids=ids))


def player_exists(session: Session, game_id: str, player_id: str) -> bool:
    """Whether anything is stored for the player (a *known* player, even if silent lately)."""
    return bool(
        session.scalar(select(exists().where(Player.game_id == game_id, Player.player_id == player_id)))
        or session.scalar(
            select(exists().where(DailyActivity.game_id == game_id, DailyActivity.player_id == player_id))
        )
    )


# --------------------------------------------------------------------------------------------------
# outcomes
# --------------------------------------------------------------------------------------------------

_OUTCOME_SCHEMA: dict[str, pl.DataType] = {
    "player_id": pl.String(),
    "ltv": pl.Float64(),
    "churned": pl.Int8(),
    "support_tickets": pl.Float64(),
}


def upsert_outcomes(session: Session, game_id: str, outcomes: pl.DataFrame) -> int:
    """Store per-player outcomes. Columns present in the frame overwrite stored values (a null
    clears one); columns absent from the frame keep what is stored."""
    if "player_id" not in outcomes.columns:
        raise ValueError("outcomes frame lacks column 'player_id'")
    if outcomes.height == 0:
        return 0
    value_cols = [c for c in ("ltv", "churned", "support_tickets") if c in outcomes.columns]
    frame = (
        outcomes.select(pl.col(c).cast(_OUTCOME_SCHEMA[c]) for c in ("player_id", *value_cols))
        .unique("player_id", keep="last", maintain_order=True)
        .select(pl.lit(game_id).alias("game_id"), pl.all())
    )
    session.flush()
    ingest_lock(session, game_id)
    sets = [f"{c} = {{new}}.{c}" for c in value_cols]
    _bulk.upsert_frame(session, "outcomes", frame, ("game_id", "player_id"), sets)
    return frame.height


def load_outcomes(session: Session, game_id: str, player_ids: Sequence[str] | None = None) -> pl.DataFrame:
    """``player_id, ltv (Float64), churned (Int8 0/1), support_tickets (Float64)``, nulls allowed."""
    kind = _bulk.dialect(session)
    p = _bulk.param(kind)
    where = [f"game_id = {p}"]
    params: list[object] = [game_id]
    if player_ids is not None:
        if not player_ids:
            return pl.DataFrame(schema=_OUTCOME_SCHEMA)
        cond, value = _bulk.in_list(kind, "player_id", list(player_ids))
        where.append(cond)
        params.append(value)
    query = (
        f"SELECT player_id, ltv, churned, support_tickets FROM outcomes WHERE {' AND '.join(where)} "
        "ORDER BY player_id"
    )
    return _bulk.read_query(session, query, params, _OUTCOME_SCHEMA)
