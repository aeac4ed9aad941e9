"""Row-level validation problems: collected as frames, reported as one InvalidInput."""

from __future__ import annotations

import polars as pl

from unified_segmentation.errors import InvalidInput

ROW = "__row"  # 1-based data row number carried through every ingest frame
MAX_REPORTED = 10
_SCHEMA = {"row": pl.Int64, "field": pl.String, "message": pl.String}


class Problems:
    """Accumulates ``(row, field, message)`` triples from vectorized checks."""

    def __init__(self) -> None:
        self._parts: list[pl.DataFrame] = []

    def add(self, frame: pl.DataFrame, bad: pl.Series | pl.Expr, field: str, message: str | pl.Expr) -> None:
        """Record ``message`` for the rows of ``frame`` where ``bad`` is true (null counts as false)."""
        bad = pl.lit(bad.fill_null(False)) if isinstance(bad, pl.Series) else bad.fill_null(False)
        text = pl.lit(message) if isinstance(message, str) else message
        part = frame.filter(bad).select(
            pl.col(ROW).cast(pl.Int64).alias("row"),
            pl.lit(field, dtype=pl.String).alias("field"),
            text.cast(pl.String).alias("message"),
        )
        if part.height:
            self._parts.append(part)

    def add_errors(self, rows: pl.Series, errors: pl.Series, field: str) -> None:
        """Record the non-null messages of ``errors`` (aligned with ``rows``) under ``field``."""
        if errors.null_count() == errors.len():
            return
        part = (
            pl.DataFrame({"row": rows.cast(pl.Int64), "message": errors.cast(pl.String)})
            .filter(pl.col("message").is_not_null())
            .select("row", pl.lit(field, dtype=pl.String).alias("field"), "message")
        )
        self._parts.append(part)

    def frame(self) -> pl.DataFrame:
        """All problems ordered by row (checks keep their order within a row)."""
        if not self._parts:
            return pl.DataFrame(schema=_SCHEMA)
        return pl.concat(self._parts).sort("row", maintain_order=True)

    def __bool__(self) -> bool:
        return bool(self._parts)


def _quote(value: str, limit: int = 160) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


def raise_problems(problems: pl.DataFrame, what: str) -> None:
    """Raise one :class:`InvalidInput` naming the first problems, if there are any."""
    if problems.height == 0:
        return
    first = problems.head(MAX_REPORTED).to_dicts()
    n_rows = problems["row"].n_unique()
    listed = "; ".join(f"row {e['row']}, field '{e['field']}': {_quote(e['message'])}" for e in first[:3])
    more = f" (and {problems.height - 3} more problems)" if problems.height > 3 else ""
    raise InvalidInput(
        f"{n_rows} invalid {what} row(s), nothing ingested: {listed}{more}",
        row=first[0]["row"],
        field=first[0]["field"],
        errors=first,
    )


def rejects_frame(problems: pl.DataFrame) -> pl.DataFrame:
    """One row per rejected input row: ``row``, first bad ``field`` and every ``reason``."""
    if problems.height == 0:
        return pl.DataFrame(schema={"row": pl.Int64, "field": pl.String, "reason": pl.String})
    return (
        problems.group_by("row", maintain_order=True)
        .agg(
            pl.col("field").first(),
            pl.concat_str(pl.col("field"), pl.lit(": "), pl.col("message")).str.join("; ").alias("reason"),
        )
        .sort("row")
    )


def missing_columns_error(missing: list[str], what: str, available: list[str]) -> InvalidInput:
    shown = ", ".join(available[:20]) + (" …" if len(available) > 20 else "")
    return InvalidInput(
        f"{what} lack required column(s) {', '.join(missing)} (columns found: {shown or 'none'}); "
        "map them with mapping={ours: theirs}",
        field=missing[0],
        errors=[{"row": None, "field": m, "message": "missing required column"} for m in missing],
    )
