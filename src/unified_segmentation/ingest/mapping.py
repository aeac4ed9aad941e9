"""Mapping a foreign file's columns onto our fields: a column name or a Polars SQL expression."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import polars as pl

from unified_segmentation.errors import InvalidInput
from unified_segmentation.ingest._problems import ROW

EVENT_FIELDS: tuple[str, ...] = ("event_id", "player_id", "event_type", "timestamp", "value", "properties")


def parse_map_options(options: Iterable[str], our_fields: Iterable[str] = EVENT_FIELDS) -> dict[str, str]:
    """Parse ``--map A=B`` options into ``{ours: theirs}``.

    Either side may be ours: ``value=Quantity*UnitPrice`` and ``Quantity*UnitPrice=value`` mean the
    same. It is an error when both sides or neither side is one of ``our_fields``, or when a field
    is mapped twice. Surrounding double quotes of the foreign side (a shell leftover) are removed.
    """
    ours = set(our_fields)
    result: dict[str, str] = {}
    for option in options:
        text = str(option).strip()
        if "=" not in text:
            raise InvalidInput(f"--map {text!r}: expected OURS=THEIRS (or THEIRS=OURS)", field="mapping")
        left, right = text.split("=", 1)
        left, right = left.strip(), right.strip()
        # An expression may itself contain '=': then ours can only be the part after the last '='.
        if left not in ours and right not in ours and "=" in right:
            head, tail = text.rsplit("=", 1)
            if tail.strip() in ours:
                left, right = head.strip(), tail.strip()
        left_ours, right_ours = left in ours, right in ours
        if left_ours and right_ours:
            raise InvalidInput(
                f"--map {text!r}: both sides are our field names; one side must be the file's column",
                field="mapping",
            )
        if not left_ours and not right_ours:
            raise InvalidInput(
                f"--map {text!r}: neither side is one of our fields ({', '.join(sorted(ours))})",
                field="mapping",
            )
        field, theirs = (left, right) if left_ours else (right, left)
        theirs = _unquote(theirs)
        if not theirs:
            raise InvalidInput(f"--map {text!r}: empty column or expression", field=field)
        if field in result:
            raise InvalidInput(f"--map: field {field!r} is mapped twice", field=field)
        result[field] = theirs
    return result


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1].strip()
    return text


def source_column(header: Sequence[str], field: str, mapping: Mapping[str, str]) -> str | None:
    """The raw column a field is read from directly (None for an expression or when absent)."""
    if field in mapping:
        theirs = _unquote(mapping[field].strip())
        return theirs if theirs in header else None
    if field in header:
        return field
    lowered = {name.lstrip("\ufeff").strip().lower(): name for name in header}
    return lowered.get(field.lower())


def check_mapping(mapping: Mapping[str, str] | None, fields: Sequence[str], *, allow_prefix: str = "") -> dict:
    """Validate a ``{ours: theirs}`` mapping: keys must be our fields (or start with ``allow_prefix``)."""
    if mapping is None:
        return {}
    if not isinstance(mapping, Mapping):
        raise InvalidInput("mapping must be a dict {our_field: their_column_or_expression}", field="mapping")
    for key, value in mapping.items():
        if key not in fields and not (allow_prefix and str(key).startswith(allow_prefix)):
            raise InvalidInput(
                f"mapping key {key!r} is not one of our fields ({', '.join(fields)})", field=str(key)
            )
        if not isinstance(value, str) or not value.strip():
            raise InvalidInput(f"mapping for {key!r} must be a column name or an expression", field=str(key))
    return dict(mapping)


def field_expressions(
    raw: pl.DataFrame, fields: Sequence[str], mapping: Mapping[str, str]
) -> tuple[dict[str, pl.Expr], set[str]]:
    """Expressions for our fields present in ``raw`` and the raw columns they use.

    A mapped value that names a column is that column; anything else is compiled with
    ``pl.sql_expr``. Unmapped fields use the same-named column (case-insensitively).
    """
    exprs: dict[str, pl.Expr] = {}
    used: set[str] = set()
    for field in fields:
        column = source_column(raw.columns, field, mapping)
        if column is not None:
            exprs[field] = pl.col(column)
            used.add(column)
            continue
        if field not in mapping:
            continue
        text = _unquote(mapping[field].strip())
        try:
            expr = pl.sql_expr(text)
            used.update(name for name in expr.meta.root_names() if name in raw.columns)
        except Exception as exc:  # noqa: BLE001 - any parse failure is the user's expression
            raise InvalidInput(
                f"mapping for {field!r}: {text!r} is neither a column of the input nor a valid SQL expression "
                f"({_first_line(exc)})",
                field=field,
            ) from exc
        exprs[field] = expr
    return exprs, used


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def evaluate(raw: pl.DataFrame, exprs: Mapping[str, pl.Expr], extra: Mapping[str, pl.Expr] = {}) -> pl.DataFrame:  # noqa: B006
    """Select ``__row`` (1-based) and every expression; a failing expression names its field."""
    selection = [pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias(ROW)]
    selection += [expr.alias(name) for name, expr in {**exprs, **extra}.items()]
    try:
        return raw.select(selection)
    except Exception as first_error:  # noqa: BLE001 - find which field failed
        for name, expr in {**exprs, **extra}.items():
            try:
                raw.head(0).select(expr.alias(name)) if raw.height == 0 else raw.select(expr.alias(name))
            except Exception as exc:  # noqa: BLE001
                raise InvalidInput(
                    f"cannot compute field {name!r} from the input: {_first_line(exc)}", field=name
                ) from exc
        raise InvalidInput(f"cannot read the input: {_first_line(first_error)}") from first_error
