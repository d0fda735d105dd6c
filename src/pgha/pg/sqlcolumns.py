"""A query's columns written once, for its plain form and for the same rows as one JSON array.

:data:`Columns` pairs each output name with its SQL expression. :func:`select_sql` builds
``SELECT expr AS name, ... FROM source ORDER BY order``; :func:`json_rows_sql` builds a scalar
subquery giving those rows as a JSON array of objects with the same keys, in the same order
(``[]`` when there is none), so one statement can carry several views' rows. Through asyncpg
and ``json.loads`` the two forms give equal Python values for text, boolean and bigint
columns (the only kinds used here)."""

from __future__ import annotations

#: (output name, SQL expression) per column
Columns = tuple[tuple[str, str], ...]


def select_sql(columns: Columns, source: str, order: str) -> str:
    """The rows of ``source`` (a FROM clause, optionally with WHERE) as a plain query."""
    names = ", ".join(f"{expr} AS {name}" for name, expr in columns)
    return f"SELECT {names}\n  FROM {source}\n ORDER BY {order}\n"


def json_rows_sql(columns: Columns, source: str, order: str) -> str:
    """The rows of :func:`select_sql` as a scalar subquery returning one JSON array."""
    pairs = ", ".join(f"'{name}', {expr}" for name, expr in columns)
    return (f"(SELECT coalesce(json_agg(json_build_object({pairs}) ORDER BY {order}), '[]')"
            f"\n          FROM {source})")
