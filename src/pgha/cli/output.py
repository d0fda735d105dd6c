"""Output of the operator commands: bordered tables and the machine formats.

Every tabular command renders a list of rows (dicts) through :func:`format_rows`:

- ``pretty``: a bordered table (numbers right-aligned, the title set into the top border);
- ``tsv``: a header line, then one line per row, cells joined by ``delimiter`` (tab);
- ``json``: one JSON array of objects (column name -> value), on one line;
- ``yaml``: a YAML list of mappings, in column order.

Empty cells are ``""``. Values are written as they are (numbers stay numbers in json/yaml).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import yaml

FORMATS = ("pretty", "tsv", "json", "yaml")


def render_table(title: str, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A bordered text table; numbers right-aligned, ``title`` (if any) in the top border."""
    widths = {c: max([len(c)] + [len(str(r.get(c, ""))) for r in rows]) for c in columns}
    sep = "+" + "+".join("-" * (widths[c] + 2) for c in columns) + "+"
    if title:
        head = f"+ {title} "
        top = head + sep[len(head):] if len(head) < len(sep) else head + "+"
    else:
        top = sep

    def cell(c: str, v: Any) -> str:
        text = str(v)
        numeric = isinstance(v, int | float) and not isinstance(v, bool)
        return text.rjust(widths[c]) if numeric else text.ljust(widths[c])

    lines = [top, "| " + " | ".join(c.ljust(widths[c]) for c in columns) + " |", sep]
    lines += ["| " + " | ".join(cell(c, r.get(c, "")) for c in columns) + " |" for r in rows]
    lines.append(sep)
    return "\n".join(lines)


def _tsv_cell(value: Any, delimiter: str) -> str:
    text = "" if value is None else str(value)
    return text.replace(delimiter, " ").replace("\n", " ")


def format_rows(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str],
    fmt: str,
    *,
    title: str = "",
    delimiter: str = "\t",
) -> str:
    """``rows`` in output format ``fmt`` (one of :data:`FORMATS`; ValueError otherwise).
    Only ``columns`` are written, in that order."""
    if fmt == "pretty":
        return render_table(title, rows, columns)
    if fmt == "tsv":
        lines = [delimiter.join(columns)]
        lines += [delimiter.join(_tsv_cell(r.get(c, ""), delimiter) for c in columns)
                  for r in rows]
        return "\n".join(lines)
    ordered = [{c: r.get(c, "") for c in columns} for r in rows]
    if fmt == "json":
        return json.dumps(ordered, default=str)
    if fmt == "yaml":
        return yaml.safe_dump(ordered, sort_keys=False, default_flow_style=False).rstrip("\n")
    raise ValueError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")


def dump_yaml(data: Any) -> str:
    """Block-style YAML with sorted keys (stable for diffs), no trailing newline."""
    return yaml.safe_dump(data, default_flow_style=False, sort_keys=True,
                          allow_unicode=True).rstrip("\n")
