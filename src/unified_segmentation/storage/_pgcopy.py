"""Fast paths of PostgreSQL ``COPY`` through psycopg: binary ``COPY FROM`` of Polars frames encoded
column by column (no Python loop per row), and ``COPY TO`` drained without psycopg's per-row generator.

The binary format is a header, then per row a 16-bit field count and, per field, a 32-bit length (-1 for
NULL) and the value in network byte order; jsonb values carry a leading version byte (1). Fixed-width
columns without NULLs are packed into one big-endian numpy record per row; text, jsonb and columns with
NULLs travel as (offsets, bytes) pairs; a small compiled loop interleaves them into the wire buffer.
The server then skips all text parsing but JSON's, which makes this the cheapest way in after the
server's own work (and no client-side CSV writing either).

Nothing here commits; the caller's transaction holds the rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

__all__ = ["copy_encoded", "copy_frame_binary", "copy_out", "encode_rows", "pg_table_types", "read_binary", "warm_up"]

HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
TRAILER = b"\xff\xff"
# microseconds / days between the Unix epoch and PostgreSQL's (2000-01-01)
_PG_EPOCH_US = 946_684_800_000_000
_PG_EPOCH_DAYS = 10_957
# rows encoded (and handed to the connection) at a time: bounds memory and lets encoding overlap sending
ROWS_PER_CHUNK = 200_000

_FIXED: dict[str, str] = {
    "int2": ">i2",
    "int4": ">i4",
    "int8": ">i8",
    "float4": ">f4",
    "float8": ">f8",
    "bool": "u1",
    "timestamptz": ">i8",
    "timestamp": ">i8",
    "date": ">i4",
}
_TEXT = frozenset({"text", "varchar", "bpchar", "name", "json", "jsonb"})


def pg_table_types(cursor: Any, table: str) -> dict[str, str]:
    """``{column: type name}`` of a table (or temporary table) as the server sees it."""
    cursor.execute(
        "SELECT a.attname, t.typname FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
        "WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped",
        (table,),
    )
    return dict(cursor.fetchall())


def _fixed_values(series: pl.Series, typname: str) -> np.ndarray:
    """The column as numpy values of the wire's numeric meaning (not yet big-endian)."""
    dtype = series.dtype
    if typname in ("timestamptz", "timestamp"):
        if not isinstance(dtype, pl.Datetime):
            raise TypeError(f"column {series.name!r} must be a Datetime for {typname}")
        if dtype.time_zone is not None:
            series = series.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
        return series.dt.cast_time_unit("us").to_physical().to_numpy() - _PG_EPOCH_US
    if typname == "date":
        if dtype != pl.Date:
            raise TypeError(f"column {series.name!r} must be a Date for date")
        return series.to_physical().cast(pl.Int64).to_numpy() - _PG_EPOCH_DAYS
    if typname == "bool":
        return series.cast(pl.UInt8).to_numpy()
    if typname.startswith("int"):
        values = series.cast(pl.Int64).to_numpy()
        bits = {"int2": 15, "int4": 31, "int8": 63}[typname]
        if values.size and (values.min() < -(1 << bits) or values.max() >= (1 << bits)):
            raise OverflowError(f"column {series.name!r} does not fit {typname}")
        return values
    return series.cast(pl.Float64).to_numpy()


def _text_parts(series: pl.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(offsets int64 (n + 1,), UTF-8 bytes uint8, null mask bool) of a String column."""
    arr = series.cast(pl.String).rechunk().to_arrow()
    import pyarrow as pa

    if not pa.types.is_large_string(arr.type):
        arr = arr.cast(pa.large_string())
    n = len(arr)
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], dtype=np.int64)[arr.offset : arr.offset + n + 1]
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    nulls = series.is_null().to_numpy()
    return offsets, data, nulls


def encode_rows(frame: pl.DataFrame, types: dict[str, str], nullable: frozenset[str] | None = None
                ) -> tuple[list[str], np.ndarray]:
    """The rows of ``frame`` in binary COPY layout (no header or trailer), and the column order used.

    ``types`` maps each column of ``frame`` to its PostgreSQL type name (:func:`pg_table_types`);
    ``nullable`` names the columns that may hold NULLs (default: those that do in ``frame``).
    """
    if nullable is None:
        nullable = frozenset(c for c in frame.columns if frame[c].null_count())
    from ._pgcopy_numba import assemble

    n = frame.height
    fixed_cols: list[tuple[str, str]] = []
    var_cols: list[str] = []
    for name in frame.columns:
        typname = types.get(name)
        if typname is None:
            raise KeyError(f"column {name!r} is not a column of the target table")
        if typname in _FIXED and name not in nullable:
            fixed_cols.append((name, typname))
        elif typname in _FIXED or typname in _TEXT:
            var_cols.append(name)
        else:
            raise TypeError(f"binary COPY does not encode {typname} (column {name!r})")
    record = [("nfields", ">i2")]
    for i, (_, typname) in enumerate(fixed_cols):
        record += [(f"l{i}", ">i4"), (f"v{i}", _FIXED[typname])]
    fixed = np.empty(n, dtype=np.dtype(record))
    fixed["nfields"] = len(frame.columns)
    for i, (name, typname) in enumerate(fixed_cols):
        fixed[f"l{i}"] = np.dtype(_FIXED[typname]).itemsize
        fixed[f"v{i}"] = _fixed_values(frame[name], typname)

    k = len(var_cols)
    var_offsets = np.zeros((k, n + 1), dtype=np.int64)
    var_nulls = np.zeros((k, n), dtype=np.bool_)
    var_jsonb = np.zeros(k, dtype=np.uint8)
    datas = []
    base = 0
    for j, name in enumerate(var_cols):
        typname = types[name]
        if typname in _TEXT:
            offsets, data, nulls = _text_parts(frame[name])
            var_jsonb[j] = typname == "jsonb"
            start = offsets[0]
            data = data[start : offsets[-1]]
            offsets = offsets - start
        else:  # fixed width with NULLs
            series = frame[name]
            nulls = series.is_null().to_numpy()
            width = np.dtype(_FIXED[typname]).itemsize
            values = _fixed_values(series.drop_nulls(), typname).astype(_FIXED[typname])
            data = values.view(np.uint8).reshape(-1)
            offsets = np.zeros(n + 1, dtype=np.int64)
            np.cumsum(np.where(nulls, 0, width), out=offsets[1:])
        var_offsets[j] = offsets + base
        var_nulls[j] = nulls
        datas.append(data)
        base += len(data)
    var_data = np.concatenate(datas) if datas else np.zeros(0, dtype=np.uint8)
    out = assemble(fixed.view(np.uint8).reshape(n, fixed.dtype.itemsize), var_data, var_offsets, var_nulls, var_jsonb)
    return [c for c, _ in fixed_cols] + var_cols, out


def copy_frame_binary(cursor: Any, table: str, frame: pl.DataFrame, types: dict[str, str] | None = None,
                      *, rows_per_chunk: int = ROWS_PER_CHUNK) -> int:
    """``COPY table (...) FROM STDIN (FORMAT binary)`` of every row of ``frame``; returns rows sent.

    Datetime columns must be Datetime (naive = UTC) and JSON columns JSON text. Rows are encoded
    ``rows_per_chunk`` at a time while a writer thread sends the previous chunk.
    """
    if frame.height == 0:
        return 0
    from psycopg.copy import QueuedLibpqWriter

    types = types if types is not None else pg_table_types(cursor, table)
    columns: Sequence[str] | None = None
    nullable = frozenset(c for c in frame.columns if frame[c].null_count())
    quoted = '"' + table.replace('"', '""') + '"'
    copy_cm = None
    copy = None
    try:
        for start in range(0, frame.height, rows_per_chunk):
            cols, payload = encode_rows(frame.slice(start, rows_per_chunk), types, nullable)
            if copy is None:
                columns = cols
                col_sql = ", ".join('"' + c.replace('"', '""') + '"' for c in columns)
                copy_cm = cursor.copy(f"COPY {quoted} ({col_sql}) FROM STDIN (FORMAT binary)",
                                      writer=QueuedLibpqWriter(cursor))
                copy = copy_cm.__enter__()
                copy.write(HEADER)
            _write(copy, payload)
        copy.write(TRAILER)
    except BaseException as exc:
        if copy_cm is not None:
            copy_cm.__exit__(type(exc), exc, exc.__traceback__)
        raise
    copy_cm.__exit__(None, None, None)
    return frame.height


def copy_encoded(cursor: Any, table: str, columns: Sequence[str], payload: np.ndarray, rows: int) -> int:
    """``COPY table (columns) FROM STDIN (FORMAT binary)`` of rows already encoded by :func:`encode_rows`
    (``payload``, ``columns`` as it returned them); returns ``rows``."""
    quoted = '"' + table.replace('"', '""') + '"'
    col_sql = ", ".join('"' + c.replace('"', '""') + '"' for c in columns)
    with cursor.copy(f"COPY {quoted} ({col_sql}) FROM STDIN (FORMAT binary)") as copy:
        copy.write(HEADER)
        _write(copy, payload)
        copy.write(TRAILER)
    return rows


def _write(copy: Any, payload: np.ndarray, chunk: int = 1 << 20) -> None:
    view = memoryview(payload)
    for start in range(0, len(view), chunk):
        copy.write(view[start : start + chunk])


def copy_out(cursor: Any, statement: str, params: Sequence[Any] | dict[str, Any] | None = None) -> bytes:
    """All data of a ``COPY ... TO STDOUT`` statement as one ``bytes``.

    The server sends one message per row; psycopg's ``Copy`` iterator runs a generator and a wait per
    row (~4 µs). Here every row libpq has buffered is taken in one tight loop and the socket is waited
    on only when nothing is buffered; the end of the copy is checked exactly as psycopg's
    ``copy_from`` does. Falls back to the ``Copy`` iterator if psycopg's internals differ.
    """
    buf = bytearray()
    with cursor.copy(statement, params) as copy:
        try:
            from psycopg import errors
            from psycopg.generators import WAIT_R, _fetch_many
            from psycopg.pq import ExecStatus

            pgconn = cursor.connection.pgconn
            encoding = pgconn._encoding  # noqa: SLF001
            if not hasattr(copy, "_finished"):
                raise ImportError
        except (ImportError, AttributeError):
            for chunk in copy:
                buf.extend(chunk)
            return bytes(buf)

        def drain() -> Any:
            get = pgconn.get_copy_data
            while True:
                nbytes, data = get(1)
                if nbytes > 0:
                    buf.extend(data)
                elif nbytes == 0:
                    while not (yield WAIT_R):
                        pass
                    pgconn.consume_input()
                else:
                    break
            return (yield from _fetch_many(pgconn))

        results = cursor.connection.wait(drain())
        copy._finished = True  # noqa: SLF001 - the Copy must not read again on exit
        if len(results) != 1:
            raise errors.ProgrammingError("you cannot mix COPY with other operations")
        if results[0].status != ExecStatus.COMMAND_OK:
            raise errors.error_from_result(results[0], encoding=encoding)
    return bytes(buf)


# field widths of the binary COPY values :func:`read_binary` decodes, by the Polars type asked for
_READ_WIDTH: dict[type[pl.DataType], int] = {pl.String: 0, pl.Int32: 4, pl.Int64: 8, pl.Float64: 8}


def read_binary(cursor: Any, query: str, params: Sequence[Any] | dict[str, Any] | None,
                schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """The rows of ``query`` through ``COPY (query) TO STDOUT (FORMAT binary)``, decoded column by
    column into a frame of ``schema`` (no text formatting on the server, no CSV parsing here).

    ``schema`` names the selected columns in order, each ``pl.String`` (text, varchar: the query
    casts JSON to text), ``pl.Int32`` (int4), ``pl.Int64`` (int8) or ``pl.Float64`` (float8); the
    query must select exactly those server types (a mismatch raises ``ValueError``). NULLs stay nulls.
    """
    import pyarrow as pa

    from ._pgcopy_numba import count_rows, gather, parse_rows

    widths = []
    for name, dtype in schema.items():
        width = _READ_WIDTH.get(dtype.base_type() if isinstance(dtype, pl.DataType) else dtype)
        if width is None:
            raise TypeError(f"read_binary does not decode {dtype} (column {name!r})")
        widths.append(width)
    data = copy_out(cursor, f"COPY ({query}) TO STDOUT (FORMAT binary)", params)
    if len(data) < 19 or data[:11] != HEADER[:11]:
        raise ValueError("not a binary COPY stream")
    buf = np.frombuffer(data, dtype=np.uint8)
    start = 19 + int.from_bytes(data[15:19], "big")
    n = count_rows(buf, start)
    kinds = np.asarray(widths, dtype=np.int64)
    k = len(widths)
    raw = np.zeros((k, n), dtype=np.uint64)
    nulls = np.zeros((k, n), dtype=np.bool_)
    var_start = np.zeros((k, n), dtype=np.int64)
    var_len = np.zeros((k, n), dtype=np.int64)
    bad = parse_rows(buf, start, n, kinds, raw, nulls, var_start, var_len)
    if bad >= 0:
        raise ValueError(f"row {bad} of the COPY does not match the schema {list(schema)}")
    arrays = []
    for f, (dtype, width) in enumerate(zip(schema.values(), widths, strict=True)):
        mask = nulls[f]
        null_count = int(mask.sum())
        if width == 0:
            offsets, chars = gather(buf, var_start[f], var_len[f], mask)
            bitmap = pa.py_buffer(np.packbits(~mask, bitorder="little")) if null_count else None
            arrays.append(pa.LargeStringArray.from_buffers(
                n, pa.py_buffer(offsets), pa.py_buffer(chars), bitmap, null_count))
            continue
        values = raw[f]
        if width == 4:
            values = values.astype(np.uint32).view(np.int32)
        else:
            values = values.view(np.float64 if dtype == pl.Float64 else np.int64)
        arrays.append(pa.array(values, mask=mask if null_count else None))
    return pl.from_arrow(pa.Table.from_arrays(arrays, names=list(schema))).cast(schema)


def warm_up() -> int:
    """Compile the loops of :mod:`._pgcopy_numba` (or load them from numba's on-disk cache) with the
    argument types the real calls use, by encoding one row and decoding it again; returns the rows
    decoded (1). The image build runs it so workers do not compile on their first bulk read or write."""
    from ._pgcopy_numba import count_rows, gather, parse_rows

    _, payload = encode_rows(pl.DataFrame({"v": [1.5], "t": ["x"]}), {"v": "float8", "t": "text"})
    data = HEADER + payload.tobytes() + TRAILER
    buf = np.frombuffer(data, dtype=np.uint8)  # read-only, as read_binary's buffer is
    n = count_rows(buf, len(HEADER))
    raw = np.zeros((2, n), dtype=np.uint64)
    nulls = np.zeros((2, n), dtype=np.bool_)
    starts = np.zeros((2, n), dtype=np.int64)
    lengths = np.zeros((2, n), dtype=np.int64)
    if parse_rows(buf, len(HEADER), n, np.asarray([8, 0], dtype=np.int64), raw, nulls, starts, lengths) >= 0:
        raise RuntimeError("binary COPY warm-up: the encoded row did not decode")
    offsets, chars = gather(buf, starts[1], lengths[1], nulls[1])
    if raw[0].view(np.float64)[0] != 1.5 or chars.tobytes() != b"x" or offsets[-1] != 1:
        raise RuntimeError("binary COPY warm-up: the decoded row differs")
    return n
