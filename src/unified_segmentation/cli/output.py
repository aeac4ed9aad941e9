"""Shared CLI helpers: one console, one progress-bar factory, row output (table / CSV / Parquet / JSONL)."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import polars as pl
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

console = Console(stderr=False)
err_console = Console(stderr=True)


@contextmanager
def progress(description: str, total: int | None = None):
    """Rich progress bar; yields ``advance(n)``."""
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console, transient=True) as p:
        task = p.add_task(description, total=total)
        yield lambda n=1: p.advance(task, n)


def write_rows(frame: pl.DataFrame, output: Path | None, *, title: str | None = None, limit: int = 30) -> None:
    """Write rows to ``output`` (by extension: .csv, .parquet, .jsonl/.json) or show a table."""
    if output is not None:
        suffix = output.suffix.lower()
        flat = frame.with_columns([pl.col(c).map_elements(json.dumps, return_dtype=pl.Utf8)
                                   for c, t in frame.schema.items() if isinstance(t, pl.Struct | pl.List | pl.Object)])
        if suffix == ".parquet":
            frame.write_parquet(output)
        elif suffix in (".jsonl", ".json", ".ndjson"):
            frame.write_ndjson(output)
        else:
            flat.write_csv(output)
        console.print(f"wrote {frame.height} rows to {output}")
        return
    table = Table(title=title, show_lines=False)
    for c in frame.columns:
        table.add_column(c)
    for row in frame.head(limit).iter_rows():
        table.add_row(*[_fmt(v) for v in row])
    console.print(table)
    if frame.height > limit:
        console.print(f"... {frame.height - limit} more rows (use --output PATH for all)")


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict | list):
        return json.dumps(v)[:60]
    return "" if v is None else str(v)


def print_json(obj) -> None:
    console.print_json(json.dumps(obj, default=str))
