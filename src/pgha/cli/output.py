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
from collections.abc import Collection, Sequence
from typing import Any

import yaml

FORMATS = ("pretty", "tsv", "json", "yaml")


def render_table(title: str, rows: Sequence[dict[str, Any]], columns: Sequence[str],
                 *, right: Collection[str] = (), headers: Sequence[str] | None = None) -> str:
    """A bordered text table, ``title`` (if any) set into the top border. Numbers and the
    ``right`` columns are right-aligned (their header too), the rest left-aligned. ``headers``
    (default: ``columns``) are the names shown, so two columns may show the same name. A cell
    holding several lines spans several table lines (top-aligned), and then a rule separates
    every row, as patronictl's tables do."""
    shown = list(headers) if headers is not None else list(columns)
    texts = [{c: str(r.get(c, "")).split("\n") for c in columns} for r in rows]
    widths = {c: max([len(h)] + [len(line) for t in texts for line in t[c]])
              for c, h in zip(columns, shown, strict=True)}
    sep = "+" + "+".join("-" * (widths[c] + 2) for c in columns) + "+"
    if title:
        head = f"+ {title} "
        top = head + sep[len(head):] if len(head) < len(sep) else head + "+"
    else:
        top = sep

    def numeric(v: Any) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool)

    def just(c: str, text: str, to_right: bool) -> str:
        return text.rjust(widths[c]) if to_right else text.ljust(widths[c])

    header = "| " + " | ".join(just(c, h, c in right)
                               for c, h in zip(columns, shown, strict=True)) + " |"
    lines = [top, header, sep]
    ruled = any(len(t[c]) > 1 for t in texts for c in columns)
    for row, text in zip(rows, texts, strict=True):
        height = max([len(text[c]) for c in columns] or [1])
        for i in range(height):
            cells = [just(c, text[c][i] if i < len(text[c]) else "",
                          c in right or numeric(row.get(c, ""))) for c in columns]
            lines.append("| " + " | ".join(cells) + " |")
        if ruled:
            lines.append(sep)
    if not ruled or not rows:
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
    right: Collection[str] = (),
    skip_missing: bool = False,
) -> str:
    """``rows`` in output format ``fmt`` (one of :data:`FORMATS`; ValueError otherwise).
    Only ``columns`` are written, in that order; ``right``: see :func:`render_table`. With
    ``skip_missing`` a json/yaml object leaves out the columns its row does not have."""
    if fmt == "pretty":
        return render_table(title, rows, columns, right=right)
    if fmt == "tsv":
        lines = [delimiter.join(columns)]
        lines += [delimiter.join(_tsv_cell(r.get(c, ""), delimiter) for c in columns)
                  for r in rows]
        return "\n".join(lines)
    ordered = [{c: r.get(c, "") for c in columns if not skip_missing or c in r} for r in rows]
    if fmt == "json":
        return json.dumps(ordered, default=str)
    if fmt == "yaml":
        return yaml.safe_dump(ordered, sort_keys=False, default_flow_style=False).rstrip("\n")
    raise ValueError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")


def dump_yaml(data: Any) -> str:
    """Block-style YAML with sorted keys (stable for diffs), lines up to 200 characters (as
    patronictl shows a configuration), no trailing newline."""
    return yaml.safe_dump(data, default_flow_style=False, sort_keys=True,
                          allow_unicode=True, width=200).rstrip("\n")
