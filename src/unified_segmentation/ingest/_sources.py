"""Reading any supported source into a raw Polars frame (columns as the source names them)."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
import polars as pl

from unified_segmentation.errors import InvalidInput

Source = str | Path | pl.DataFrame | pl.LazyFrame | Sequence[Mapping[str, Any]] | Any
TextColumns = Callable[[list[str]], set[str]]

_CSV_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".tsv.gz", ".txt")
_PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
_JSON_SUFFIXES = (".jsonl", ".ndjson", ".json", ".jsonl.gz", ".ndjson.gz", ".json.gz")


def load_raw(source: Source, *, text_columns: TextColumns) -> pl.DataFrame:
    """Raw frame of ``source``; ``text_columns(header)`` names CSV columns to keep as text.

    CSV is read as text and every other column that parses entirely as numbers becomes Int64 or
    Float64 (so ``"Quantity*UnitPrice"`` works and ``"00123"`` ids stay text). JSON values that
    are objects or arrays become their JSON text.
    """
    if isinstance(source, pl.LazyFrame):
        return source.collect()
    if isinstance(source, pl.DataFrame):
        return source
    if type(source).__module__.split(".")[0] == "pandas" and hasattr(source, "columns"):
        try:
            return pl.from_pandas(source)
        except Exception as exc:  # pragma: no cover - depends on the pandas frame
            raise InvalidInput(f"cannot convert the pandas frame: {exc}", field="source") from exc
    if isinstance(source, (str, Path)):
        return _load_path(Path(source), text_columns)
    if isinstance(source, (bytes, bytearray)):
        return frame_from_records(_json_records(bytes(source)))
    if isinstance(source, Iterable) and not isinstance(source, Mapping):
        return frame_from_records(list(source))
    raise InvalidInput(
        f"unsupported source {type(source).__name__}: give a path (CSV, Parquet, JSON lines), a Polars or "
        "pandas DataFrame, or a list of JSON objects",
        field="source",
    )


def _load_path(path: Path, text_columns: TextColumns) -> pl.DataFrame:
    name = path.name.lower()
    if not path.exists():
        raise InvalidInput(f"file not found: {path}", field="source")
    try:
        if name.endswith(_PARQUET_SUFFIXES):
            return pl.read_parquet(path)
        if name.endswith(_JSON_SUFFIXES):
            data = path.read_bytes()
            if name.endswith(".gz"):
                import gzip

                data = gzip.decompress(data)
            return frame_from_records(_json_records(data))
        if name.endswith(_CSV_SUFFIXES):
            separator = "\t" if ".tsv" in name else ","
            header = pl.read_csv(path, n_rows=0, separator=separator).columns
            raw = pl.read_csv(path, infer_schema=False, separator=separator)
            return infer_numeric(raw, keep_text=text_columns(header))
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
        if isinstance(exc, InvalidInput):
            raise
        raise InvalidInput(f"cannot read {path.name}: {_first_line(exc)}", field="source") from exc
    raise InvalidInput(
        f"unsupported file type {path.name!r}: use .csv, .csv.gz, .tsv, .parquet, .jsonl or .json",
        field="source",
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _json_records(data: bytes) -> list[Any]:
    stripped = data.lstrip()
    if stripped.startswith(b"["):
        try:
            records = orjson.loads(stripped)
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(f"malformed JSON: {exc}", field="source") from exc
        return records
    records = []
    for number, line in enumerate(io.BytesIO(data), start=1):
        if not line.strip():
            continue
        try:
            records.append(orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(
                f"line {number}: malformed JSON ({exc})",
                row=len(records) + 1,
                errors=[{"row": len(records) + 1, "field": None, "message": "malformed JSON"}],
            ) from exc
    return records


def _to_text(value: Any) -> Any:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)  # keeps nan / inf visible to validation
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def frame_from_records(records: Sequence[Any]) -> pl.DataFrame:
    """Columns of a list of JSON objects (the union of their keys; absent keys are null)."""
    plain = set(map(type, records)) <= {dict}  # JSON payloads: skip the slower ABC check
    bad = None if plain else next((i for i, record in enumerate(records) if not isinstance(record, Mapping)), None)
    if bad is not None:
        raise InvalidInput(
            f"row {bad + 1}: not a JSON object",
            row=bad + 1,
            errors=[{"row": bad + 1, "field": None, "message": "not a JSON object"}],
        )
    keys = _union_keys(records)
    columns = {}
    for key in keys:
        values = [record.get(key) for record in records]
        columns[str(key)] = _series(str(key), values)
    return pl.DataFrame(columns, height=len(records)) if columns else pl.DataFrame(height=len(records))


def _union_keys(records: Sequence[Mapping[str, Any]]) -> list[Any]:
    """The keys of all records in order of first appearance (fast when they share one key set)."""
    if not records:
        return []
    first = list(records[0])
    if not set().union(*records).difference(first):
        return first
    return list(dict.fromkeys(key for record in records for key in record))


_NESTED = (dict, list, tuple)


def _series(name: str, values: list[Any]) -> pl.Series:
    if any(issubclass(kind, _NESTED) for kind in set(map(type, values))):
        return pl.Series(name, [_to_text(v) for v in values], dtype=pl.String)
    try:
        series = pl.Series(name, values, strict=True)
    except (TypeError, ValueError, OverflowError, pl.exceptions.PolarsError):
        return pl.Series(name, [_to_text(v) for v in values], dtype=pl.String)
    if series.dtype == pl.Object:
        return pl.Series(name, [_to_text(v) for v in values], dtype=pl.String)
    return series


def infer_numeric(frame: pl.DataFrame, *, keep_text: set[str]) -> pl.DataFrame:
    """Turn text columns that parse entirely as numbers into Int64 / Float64 (others untouched)."""
    updates = []
    for name, dtype in frame.schema.items():
        if dtype != pl.String or name in keep_text:
            continue
        text = frame[name].str.strip_chars()
        present = text.len() - text.null_count() - int((text == "").sum())
        if present == 0:
            continue
        for target in (pl.Int64, pl.Float64):
            parsed = text.cast(target, strict=False)
            if parsed.len() - parsed.null_count() == present:
                updates.append(parsed.alias(name))
                break
    return frame.with_columns(updates) if updates else frame
