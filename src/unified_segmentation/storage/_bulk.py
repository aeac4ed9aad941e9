"""Bulk I/O between Polars frames and the database, one code path per dialect.

PostgreSQL: frames travel as CSV written by Polars (no Python loop per row) through psycopg's
``COPY``, in both directions. SQLite: ``executemany`` on the driver cursor inside the caller's
transaction, and plain ``SELECT`` for reading.

Nothing here commits. All helpers use the connection of the caller's session.
"""

from __future__ import annotations

import datetime as dt
import gc
import threading
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import polars as pl
from sqlalchemy import Table, text
from sqlalchemy.orm import Session

from .db import dialect_name, json_dumps

# How SQLAlchemy's SQLite DATETIME stores values: naive UTC text with microseconds.
SQLITE_DATETIME_FORMAT = "%Y-%m-%d %H:%M:%S%.6f"
# CSV for COPY: explicit UTC offset, so the server's TimeZone setting never matters.
PG_DATETIME_FORMAT = "%Y-%m-%d %H:%M:%S%.6f+00"
_COPY_CHUNK = 1 << 20
# Up to this many keys, look-ups use one parameterized query instead of a temporary table.
SMALL_BATCH = 2_000
# Up to this many rows, PostgreSQL upserts / inserts travel as one JSON parameter of one statement
# (``json_to_recordset``): one round trip and no temporary table (whose catalog churn and extra
# round trips cost ~30 ms per call). Beyond, staging with ``COPY`` is cheaper per row (measured
# break-even of a whole event ingestion: between 5,000 and 20,000 rows).
SMALL_STATEMENT_ROWS = 10_000


def dialect(session: Session) -> str:
    return dialect_name(session)


def temp_name(prefix: str) -> str:
    return f"_useg_{prefix}_{uuid.uuid4().hex[:12]}"


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@contextmanager
def dbapi_cursor(session: Session) -> Iterator[Any]:
    """The driver cursor of the session's connection (inside the session's transaction)."""
    cursor = session.connection().connection.cursor()
    try:
        yield cursor
    finally:
        cursor.close()


# --------------------------------------------------------------------------------------------------
# locks
# --------------------------------------------------------------------------------------------------


def lock(session: Session, key: str) -> None:
    """Serialize writers of ``key`` until the end of the transaction.

    PostgreSQL: a transaction-level advisory lock. SQLite has a single writer: a write statement
    that touches no row takes the database write lock now (waiting on the busy timeout) instead of
    at the first real write, so what this transaction reads next cannot go stale.

    A lock already taken in the session's current transaction is not asked for again (one round
    trip saved per repeated call: ingestion takes the game's lock in three repositories).
    """
    held = session.info.setdefault("_useg_locks", {})
    transaction = session.get_nested_transaction() or session.get_transaction()
    if transaction is not None and held.get(key) is transaction:
        return
    if dialect(session) == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"), {"k": key})
    else:
        session.execute(text("DELETE FROM event_keys WHERE 0 = 1"))
    held[key] = session.get_nested_transaction() or session.get_transaction()


# --------------------------------------------------------------------------------------------------
# frame preparation
# --------------------------------------------------------------------------------------------------


def json_text(frame: pl.DataFrame, column: str) -> pl.Expr:
    """An expression turning ``column`` (Utf8 JSON text, Struct, List or Python objects) into JSON text."""
    dtype = frame.schema[column]
    col = pl.col(column)
    if dtype == pl.String:
        return col
    if dtype == pl.Null:
        return col.cast(pl.String)
    if isinstance(dtype, pl.Struct):
        return col.struct.json_encode()
    return col.map_elements(
        lambda v: None if v is None else json_dumps(v.to_list() if isinstance(v, pl.Series) else v),
        return_dtype=pl.String,
    )


def _utc(expr: pl.Expr, dtype: pl.Datetime) -> pl.Expr:
    if dtype.time_zone is None:
        return expr.dt.replace_time_zone("UTC")
    return expr.dt.convert_time_zone("UTC")


def encode_for(frame: pl.DataFrame, kind: str) -> pl.DataFrame:
    """Datetimes to UTC (and, for SQLite, to the stored text form); dates to ISO text on SQLite."""
    exprs = []
    for name, dtype in frame.schema.items():
        col = pl.col(name)
        if isinstance(dtype, pl.Datetime):
            col = _utc(col, dtype)
            if kind == "sqlite":
                col = col.dt.replace_time_zone(None).dt.strftime(SQLITE_DATETIME_FORMAT)
        elif dtype == pl.Date and kind == "sqlite":
            col = col.dt.strftime("%Y-%m-%d")
        exprs.append(col.alias(name))
    return frame.select(exprs)


def to_csv(frame: pl.DataFrame) -> bytes:
    return frame.write_csv(
        include_header=False, datetime_format=PG_DATETIME_FORMAT, date_format="%Y-%m-%d"
    ).encode()


# --------------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------------


def pg_copy_in(cursor: Any, table: str, columns: Sequence[str], frame: pl.DataFrame) -> None:
    """``COPY table (columns) FROM STDIN`` with the frame as CSV. The frame is already encoded."""
    cols = ", ".join(quote(c) for c in columns)
    data = memoryview(to_csv(frame.select(columns)))
    with cursor.copy(f"COPY {quote(table)} ({cols}) FROM STDIN (FORMAT csv)") as copy:
        for start in range(0, len(data), _COPY_CHUNK):
            copy.write(data[start : start + _COPY_CHUNK])


def sqlite_insert_many(cursor: Any, table: str, columns: Sequence[str], frame: pl.DataFrame) -> None:
    cols = ", ".join(quote(c) for c in columns)
    marks = ", ".join("?" for _ in columns)
    cursor.executemany(
        f"INSERT INTO {quote(table)} ({cols}) VALUES ({marks})", frame.select(columns).iter_rows()
    )


def insert_frame(session: Session, table: Table | str, frame: pl.DataFrame) -> int:
    """Append every row of ``frame`` to ``table`` (columns by name). No conflict handling: callers
    make sure the rows are new (they hold the lock that makes that true)."""
    if frame.height == 0:
        return 0
    name = table if isinstance(table, str) else table.name
    kind = dialect(session)
    encoded = encode_for(frame, kind)
    with dbapi_cursor(session) as cursor:
        if kind == "postgresql":
            pg_copy_in(cursor, name, encoded.columns, encoded)
        else:
            sqlite_insert_many(cursor, name, encoded.columns, encoded)
    return frame.height


def create_temp_like(session: Session, source: str, prefix: str) -> str:
    """A temporary table with ``source``'s columns (no constraints but NOT NULL), dropped at commit."""
    name = temp_name(prefix)
    if dialect(session) == "postgresql":
        session.execute(text(f"CREATE TEMP TABLE {name} (LIKE {quote(source)}) ON COMMIT DROP"))
    else:
        session.execute(text(f"CREATE TEMP TABLE {name} AS SELECT * FROM {quote(source)} WHERE 0 = 1"))
    return name


def create_temp(session: Session, prefix: str, columns: Sequence[tuple[str, str]]) -> str:
    """A temporary table with ``(name, sql_type)`` columns, dropped at commit (PostgreSQL) or by
    :func:`drop_temp`."""
    name = temp_name(prefix)
    cols = ", ".join(f"{quote(c)} {t}" for c, t in columns)
    suffix = " ON COMMIT DROP" if dialect(session) == "postgresql" else ""
    session.execute(text(f"CREATE TEMP TABLE {name} ({cols}){suffix}"))
    return name


def drop_temp(session: Session, name: str) -> None:
    session.execute(text(f"DROP TABLE IF EXISTS {name}"))


# --------------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------------


def pg_copy_out(cursor: Any, query: str, params: Sequence[Any] | dict[str, Any] | None = None) -> bytes:
    """``COPY (query) TO STDOUT`` as CSV bytes (parameters bound client-side), drained without a
    Python generator per row (:func:`._pgcopy.copy_out`)."""
    from ._pgcopy import copy_out

    return copy_out(cursor, f"COPY ({query}) TO STDOUT (FORMAT csv)", params)


def read_query(
    session: Session,
    query: str,
    params: Sequence[Any] | dict[str, Any] | None,
    schema: dict[str, pl.DataType | type[pl.DataType]],
) -> pl.DataFrame:
    """Run ``query`` (driver paramstyle: ``%s`` on PostgreSQL, ``?`` on SQLite) into a frame.

    ``schema`` names the selected columns in order; temporal columns are selected as text
    (:func:`sql_date`, :func:`sql_datetime`), declared ``pl.String`` and parsed with
    :func:`parse_temporal`.
    """
    if dialect(session) == "postgresql":
        with dbapi_cursor(session) as cursor:
            data = pg_copy_out(cursor, query, params)
        if not data:
            return pl.DataFrame(schema=schema)
        return pl.read_csv(data, has_header=False, schema=schema)
    with dbapi_cursor(session) as cursor, gc_paused():
        cursor.execute(query, params or ())
        return rows_frame(cursor.fetchall(), schema)


def rows_frame(rows: list[tuple], schema: dict[str, pl.DataType | type[pl.DataType]]) -> pl.DataFrame:
    """Driver rows as a frame of ``schema``: built column by column (a transpose and one typed Series per
    column: ~half the time of Polars' row orientation), or by rows when a value needs the lenient
    conversion of the row constructor (a column of another type than declared)."""
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(schema)
    try:
        return pl.DataFrame([pl.Series(name, values, dtype=dtype)
                             for (name, dtype), values in zip(schema.items(), columns, strict=True)])
    except (TypeError, ValueError, pl.exceptions.PolarsError):
        return pl.DataFrame(rows, schema=schema, orient="row")


_gc_lock = threading.Lock()
_gc_holders = 0
_gc_was_enabled = False


@contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off while a large fetch builds its rows (hundreds of thousands of
    tuples: each collection the allocations trigger would walk them all again; ~30 % of a fetch).
    Nested and concurrent holders are counted; the collector's former state comes back with the last."""
    global _gc_holders, _gc_was_enabled
    with _gc_lock:
        if _gc_holders == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_holders += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_holders -= 1
            if _gc_holders == 0 and _gc_was_enabled:
                gc.enable()


def read_binary(
    session: Session, query: str, params: Sequence[Any] | None, schema: dict[str, pl.DataType]
) -> pl.DataFrame:
    """PostgreSQL only: :func:`read_query` through a binary ``COPY``, for queries whose columns are
    text, int4, int8 or float8 exactly as ``schema`` declares them (:func:`._pgcopy.read_binary`)."""
    from ._pgcopy import read_binary

    with dbapi_cursor(session) as cursor:
        return read_binary(cursor, query, params, schema)


def parse_temporal(
    frame: pl.DataFrame, dates: Iterable[str] = (), datetimes: Iterable[str] = ()
) -> pl.DataFrame:
    """Text columns selected with :func:`sql_date` / :func:`sql_datetime` back to Date / Datetime(UTC)."""
    exprs = [pl.col(c).str.to_date("%Y-%m-%d") for c in dates]
    exprs += [
        pl.col(c).str.to_datetime(SQLITE_DATETIME_FORMAT, time_unit="us").dt.replace_time_zone("UTC")
        for c in datetimes
    ]
    return frame.with_columns(exprs) if exprs else frame


def sql_date(kind: str, column: str) -> str:
    """SQL text of a date column as ``YYYY-MM-DD`` regardless of the server's DateStyle."""
    return f"to_char({column}, 'YYYY-MM-DD')" if kind == "postgresql" else column


def sql_datetime(kind: str, column: str) -> str:
    """SQL text of a UTC timestamp as ``YYYY-MM-DD HH:MM:SS.ffffff``."""
    if kind == "postgresql":
        return f"to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')"
    return column


def sql_json(kind: str, column: str) -> str:
    return f"{column}::text" if kind == "postgresql" else column


def param(kind: str) -> str:
    return "%s" if kind == "postgresql" else "?"


def in_list(kind: str, column: str, values: Sequence[Any]) -> tuple[str, Any]:
    """``column`` in ``values`` as one bound parameter (an array, or a JSON list on SQLite)."""
    if kind == "postgresql":
        return f"{column} = ANY(%s)", list(values)
    return f"{column} IN (SELECT value FROM json_each(?))", json_dumps(list(values))


def as_utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def datetime_param(kind: str, value: dt.datetime) -> Any:
    """A datetime bound directly through the driver (bypassing SQLAlchemy's type processing)."""
    value = as_utc(value)
    if kind == "sqlite":
        return value.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
    return value


def date_param(kind: str, value: dt.date) -> Any:
    return value.isoformat() if kind == "sqlite" else value


def dialect_insert(session: Session) -> Any:
    """``insert`` of the session's dialect (it has ``on_conflict_do_nothing`` / ``_do_update``)."""
    if dialect(session) == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert


def upsert_frame(
    session: Session,
    table: str,
    frame: pl.DataFrame,
    keys: Sequence[str],
    sets: Sequence[str],
    where: str | None = None,
) -> None:
    """Insert the rows of ``frame`` (unique on ``keys``) or, where a row with the same keys exists,
    apply ``sets`` to it (``col = expr`` with ``{new}`` naming the incoming row and the table's own
    name the stored one), optionally only where ``where`` holds. No ``sets``: existing rows are kept.

    PostgreSQL, up to :data:`SMALL_STATEMENT_ROWS` rows: one ``INSERT ... SELECT FROM
    json_to_recordset(...) ON CONFLICT DO UPDATE`` (one round trip). Larger: the keys are staged with
    ``COPY``, the existing ones updated from a staging table with ``UPDATE ... FROM`` and the new ones
    appended with ``COPY`` in key order; at that size this costs about half of ``INSERT ... ON
    CONFLICT DO UPDATE``. It is exact because callers serialize the writers
    of these keys (:func:`lock`); a writer that did not would fail on the primary key, not corrupt.
    SQLite: one ``executemany`` of ``INSERT ... ON CONFLICT DO UPDATE``.
    """
    if frame.height == 0:
        return
    kind = dialect(session)
    cols = frame.columns
    encoded = encode_for(frame, kind)
    if kind == "sqlite":
        with dbapi_cursor(session) as cursor:
            cursor.executemany(sqlite_upsert_sql(table, cols, keys, sets, where), encoded.iter_rows())
        return
    if frame.height <= SMALL_STATEMENT_ROWS:
        _pg_upsert_statement(session, table, frame, keys, sets, where)
        return
    if _pg_scope_is_empty(session, table, encoded, keys[0]):  # e.g. a new game: every row is new
        with dbapi_cursor(session) as cursor:
            pg_copy_in(cursor, table, cols, encoded.sort(list(keys)))
        return

    key_list = ", ".join(keys)
    match = " AND ".join(f"{table}.{k} = t.{k}" for k in keys)
    staged_keys = temp_name("keys")
    session.execute(text(f"CREATE TEMP TABLE {staged_keys} AS SELECT {key_list} FROM {table} WITH NO DATA"))
    with dbapi_cursor(session) as cursor:
        pg_copy_in(cursor, staged_keys, keys, encoded)
        cursor.execute(f"ANALYZE {staged_keys}")
        key_exprs = []
        for k in keys:  # temporal keys as ISO text whatever the server's DateStyle
            dtype = encoded.schema[k]
            if dtype == pl.Date:
                key_exprs.append(sql_date(kind, f"t.{k}"))
            elif isinstance(dtype, pl.Datetime):
                key_exprs.append(sql_datetime(kind, f"t.{k}"))
            else:
                key_exprs.append(f"t.{k}")
        found = pg_copy_out(
            cursor, f"SELECT {', '.join(key_exprs)} FROM {staged_keys} t JOIN {table} ON {match}"
        )
        cursor.execute(f"DROP TABLE {staged_keys}")
    if found:
        existing = parse_temporal(
            pl.read_csv(found, has_header=False, schema={k: _text_dtype(encoded.schema[k]) for k in keys}),
            dates=[k for k in keys if encoded.schema[k] == pl.Date],
            datetimes=[k for k in keys if isinstance(encoded.schema[k], pl.Datetime)],
        )
    else:
        existing = encoded.select(keys).clear()
    if existing.height and sets:
        staged = create_temp_like(session, table, "rows")
        rows = encoded.join(existing, on=list(keys), how="semi")
        with dbapi_cursor(session) as cursor:
            pg_copy_in(cursor, staged, cols, rows)
            assignments = ", ".join(s.format(new="t") for s in sets)
            condition = f" AND ({where.format(new='t')})" if where else ""
            cursor.execute(f"UPDATE {table} SET {assignments} FROM {staged} t WHERE {match}{condition}")
            cursor.execute(f"DROP TABLE {staged}")
    new_rows = encoded.join(existing, on=list(keys), how="anti") if existing.height else encoded
    if new_rows.height:
        with dbapi_cursor(session) as cursor:
            pg_copy_in(cursor, table, cols, new_rows.sort(list(keys)))


def _conflict_clause(keys: Sequence[str], sets: Sequence[str], where: str | None) -> str:
    return f"ON CONFLICT ({', '.join(keys)}) " + (
        "DO UPDATE SET "
        + ", ".join(s.format(new="excluded") for s in sets)
        + (f" WHERE {where.format(new='excluded')}" if where else "")
        if sets
        else "DO NOTHING"
    )


def sqlite_upsert_sql(
    table: str, columns: Sequence[str], keys: Sequence[str], sets: Sequence[str], where: str | None = None
) -> str:
    """SQLite ``INSERT ... VALUES (?, ...) ON CONFLICT ...`` of one row (for ``executemany``; see
    :func:`upsert_frame` for ``sets`` and ``where``)."""
    marks = ", ".join("?" for _ in columns)
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks}) {_conflict_clause(keys, sets, where)}"


def pg_column_types(table: str) -> dict[str, str]:
    """PostgreSQL SQL types of a mapped table's columns (``{"date": "DATE", ...}``)."""
    cached = _PG_TYPES.get(table)
    if cached is None:
        from sqlalchemy.dialects import postgresql

        from .models import Base

        dialect = postgresql.dialect()
        cached = {c.name: c.type.compile(dialect=dialect) for c in Base.metadata.tables[table].columns}
        _PG_TYPES[table] = cached
    return cached


_PG_TYPES: dict[str, dict[str, str]] = {}


def pg_json_rows(frame: pl.DataFrame | pl.LazyFrame) -> str:
    """The frame as a JSON array of row objects for :func:`pg_recordset` (datetimes as explicit-UTC
    text, dates as ISO text, floats in their shortest round-trip form)."""
    exprs = []
    schema = frame.collect_schema() if isinstance(frame, pl.LazyFrame) else frame.schema
    for name, dtype in schema.items():
        col = pl.col(name)
        if isinstance(dtype, pl.Datetime):
            col = _utc(col, dtype).dt.strftime(PG_DATETIME_FORMAT)
        elif dtype == pl.Date:
            col = col.dt.strftime("%Y-%m-%d")
        exprs.append(col.alias(name))
    return frame.lazy().select(exprs).collect().write_json()


def pg_recordset(
    table: str, columns: Sequence[str], alias: str = "t", placeholder: str = "%s"
) -> tuple[str, dict[str, str]]:
    """``json_to_recordset(%s::json) AS alias(col type, ...)`` typed like ``table``'s columns, and the
    select expression of each column (JSON columns travel as text and are parsed with ``::jsonb``)."""
    types = pg_column_types(table)
    decl, select_exprs = [], {}
    for c in columns:
        sql_type = types[c]
        if sql_type.upper() in ("JSON", "JSONB"):
            decl.append(f"{quote(c)} text")
            select_exprs[c] = f"{alias}.{quote(c)}::{sql_type}"
        else:
            decl.append(f"{quote(c)} {sql_type}")
            select_exprs[c] = f"{alias}.{quote(c)}"
    return f"json_to_recordset({placeholder}::json) AS {alias}({', '.join(decl)})", select_exprs


def pg_upsert_sql(
    table: str,
    columns: Sequence[str],
    keys: Sequence[str],
    sets: Sequence[str],
    where: str | None = None,
    *,
    placeholder: str = "%s",
    constants: dict[str, str] | None = None,
    condition: str | None = None,
) -> str:
    """``INSERT INTO table ... SELECT FROM json_to_recordset(placeholder) ... ON CONFLICT`` (see
    :func:`upsert_frame`). ``constants``: columns given by an SQL expression instead of the JSON rows
    (e.g. a parameter); ``condition``: an SQL condition every row must meet (e.g. one on a CTE)."""
    constants = constants or {}
    source, exprs = pg_recordset(table, [c for c in columns if c not in constants], placeholder=placeholder)
    exprs.update(constants)
    conflict = _conflict_clause(keys, sets, where)
    order = ", ".join(exprs[k] for k in keys if k not in constants)
    return (
        f"INSERT INTO {table} ({', '.join(quote(c) for c in columns)}) "
        f"SELECT {', '.join(exprs[c] for c in columns)} FROM {source} "
        + (f"WHERE {condition} " if condition else "")
        + (f"ORDER BY {order} " if order else "")
        + conflict
    )


def _pg_upsert_statement(
    session: Session,
    table: str,
    frame: pl.DataFrame,
    keys: Sequence[str],
    sets: Sequence[str],
    where: str | None,
) -> None:
    """One ``INSERT ... SELECT FROM json_to_recordset ... ON CONFLICT`` for a small frame."""
    with dbapi_cursor(session) as cursor:
        cursor.execute(pg_upsert_sql(table, frame.columns, keys, sets, where), (pg_json_rows(frame),))


def _pg_scope_is_empty(session: Session, table: str, frame: pl.DataFrame, first_key: str) -> bool:
    """Whether ``table`` holds no row with the frame's value of its first key column, when that value
    is the same on every row (then none of the frame's keys can exist)."""
    values = frame[first_key].unique()
    if values.len() != 1 or values.null_count():
        return False
    with dbapi_cursor(session) as cursor:
        cursor.execute(f"SELECT EXISTS (SELECT 1 FROM {table} WHERE {quote(first_key)} = %s)", (values[0],))
        return not cursor.fetchone()[0]


def _text_dtype(dtype: pl.DataType) -> pl.DataType:
    return pl.String() if dtype == pl.Date or isinstance(dtype, pl.Datetime) else dtype
