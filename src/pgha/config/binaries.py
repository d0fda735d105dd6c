"""Where the PostgreSQL programs are: ``postgresql.bin_dir`` and ``postgresql.bin_name``.

Contract (:func:`binary_path` and :func:`check_bin_name` are pure; the others look at the
file system):

- :data:`BINARIES` are the programs whose file name ``postgresql.bin_name.<program>`` (or
  ``PATRONI_POSTGRESQL_BIN_<PROGRAM>``) may change; the same list as Patroni's.
- :func:`binary_path` is the one rule every caller uses to run a PostgreSQL program: the
  configured name (default: the program's own name) joined to ``bin_dir``; an absolute name is
  used as is. Programs without a ``bin_name`` key (``pg_waldump``) resolve the same way.
- :func:`check_bin_name` validates one configured name (raises ValueError).
- :func:`names_on_path` serves an empty ``bin_dir``: each configured plain name found on
  ``PATH`` becomes that absolute path (a name not found is kept: running it fails, naming the
  path tried). :func:`fill_bin_dir` fills an empty ``bin_dir`` of a raw ``postgresql``
  section: the directory of ``pg_ctl`` (under its configured name) on ``PATH``, symlinks
  resolved, and the ``bin_name`` entries through :func:`names_on_path`.
  :func:`server_binary` is the ``postgres`` program a raw section names.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from typing import Any

from pgha.config.base import default_bin_dir

BINARIES = ("pg_ctl", "initdb", "pg_controldata", "pg_basebackup", "postgres", "pg_isready",
            "pg_rewind")


def binary_path(bin_dir: str | os.PathLike[str], names: Mapping[str, str | None],
                program: str) -> str:
    """Path of ``program``: ``names[program]`` (else ``program``) joined to ``bin_dir``."""
    return os.path.join(bin_dir, names.get(program) or program)


def check_bin_name(value: Any) -> str:
    """``value`` when it can name a program: a non-empty string without NUL or line break,
    not ending in ``/``; else ValueError saying why."""
    if not isinstance(value, str):
        raise ValueError(f"expected the program's file name as a string, got "
                         f"{type(value).__name__}")
    if not value.strip():
        raise ValueError("must not be empty")
    if any(c in value for c in "\0\n\r"):
        raise ValueError("must not contain a NUL character or a line break")
    if value.endswith("/"):
        raise ValueError(f"{value!r} names a directory, not a program")
    return value


def names_on_path(names: Mapping[str, Any], path_env: str | None) -> dict[str, Any]:
    """``names`` with each plain (slash-free) string name found on ``path_env`` (None:
    ``$PATH``) replaced by its absolute path; other values unchanged."""
    out = dict(names)
    for program, name in names.items():
        if isinstance(name, str) and name and "/" not in name:
            found = shutil.which(name, path=path_env)
            if found:
                out[program] = os.path.abspath(found)
    return out


def fill_bin_dir(pg: dict[str, Any], path_env: str | None) -> None:
    """Fill in an empty ``bin_dir`` of the raw section ``pg`` in place (module docstring);
    values of the wrong type are left for validation to refuse."""
    if pg.get("bin_dir"):
        return
    names = pg.get("bin_name")
    names = names if isinstance(names, dict) else {}
    pg_ctl = names.get("pg_ctl")
    if not (isinstance(pg_ctl, str) and pg_ctl.strip() and "/" not in pg_ctl):
        pg_ctl = "pg_ctl"
    pg["bin_dir"] = default_bin_dir(path_env, pg_ctl)
    if names:
        pg["bin_name"] = names_on_path(names, path_env)


def server_binary(pg: Any, path_env: str | None) -> str:
    """The ``postgres`` program the raw ``postgresql`` section ``pg`` names (an empty
    ``bin_dir`` filled in as :func:`fill_bin_dir` does; unusable values ignored)."""
    section = dict(pg) if isinstance(pg, Mapping) else {}
    fill_bin_dir(section, path_env)
    names = section.get("bin_name")
    name = names.get("postgres") if isinstance(names, Mapping) else None
    return binary_path(str(section["bin_dir"]),
                       {"postgres": name if isinstance(name, str) else None}, "postgres")
