"""Replica creation settings: ``postgresql.basebackup`` options and the sections of custom
replica methods (``postgresql.<method>``, named by ``postgresql.create_replica_methods``).

Contract (pure; no IO):

- :func:`tool_options` turns Patroni-style options of a PostgreSQL program into ``(name,
  value)`` pairs (``value`` None: a switch), in the order given. Accepted shapes: a list whose
  items are switches (``"verbose"``) or one-key mappings (``{"max-rate": "100M"}``), or one
  mapping (``{"checkpoint": "fast", "verbose": true}``; ``true`` is a switch, ``false`` and
  ``null`` leave the option out). Leading dashes are dropped. The options pgha controls
  itself (``reserved``) are refused, as is any malformed name or a value that is not a
  scalar; the ValueError names the option. :func:`as_arguments` is their command line.
- :func:`basebackup_options` (``postgresql.basebackup``) refuses
  :data:`BASEBACKUP_RESERVED` (data directory, WAL method, output format and target,
  connection, recovery configuration); :func:`rewind_options` (``postgresql.rewind``) refuses
  :data:`REWIND_RESERVED` (target data directory, source, recovery configuration, and the
  switches after which pg_rewind exits 0 without rewinding).
- :class:`ReplicaMethodConfig` is one custom method section: ``command`` (required, split as
  a shell would), ``no_params``, ``keep_data``, ``no_leader`` (``no_master`` is the older
  spelling) and extra scalar keys, passed to the command as ``--key=value``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import Field, field_validator, model_validator

from pgha.config.base import _Section, check_command

_CONNECTION = "pgha connects to the source member itself (replication user, pgpass)"
BASEBACKUP_RESERVED: dict[str, str] = {
    **dict.fromkeys(("pgdata", "D"), "pgha sets the data directory"),
    **dict.fromkeys(("wal-method", "X", "xlog-method"), "pgha streams the WAL (-X stream)"),
    **dict.fromkeys(("format", "F", "target", "t", "gzip", "z"),
                    "a replica needs the plain format in its data directory"),
    **dict.fromkeys(("write-recovery-conf", "R"), "pgha writes the replica configuration"),
    **dict.fromkeys(("dbname", "d", "host", "h", "port", "p", "username", "U", "no-password",
                     "w", "password", "W"), _CONNECTION),
}
"""pg_basebackup options pgha sets itself or that would break the replica, with why."""

_NO_REWIND = "pg_rewind would exit 0 without rewinding, and pgha would start diverged data"
REWIND_RESERVED: dict[str, str] = {
    **dict.fromkeys(("target-pgdata", "D"), "pgha sets the data directory"),
    **dict.fromkeys(("source-server", "source-pgdata"),
                    "pgha rewinds from the leader as the rewind user"),
    **dict.fromkeys(("write-recovery-conf", "R"), "pgha writes the replica configuration"),
    **dict.fromkeys(("dry-run", "n", "help", "?", "version", "V"), _NO_REWIND),
}
"""pg_rewind options pgha sets itself or that would defeat the rewind, with why."""

_OPTION_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]*$")
Option = tuple[str, str | None]


def _option(name: Any, value: Any, reserved: Mapping[str, str]) -> Option | None:
    """One option as ``(name, value)``; None when ``value`` leaves it out."""
    text = str(name).lstrip("-")
    if text in reserved:
        raise ValueError(f"option {text!r} is not allowed: {reserved[text]}")
    if not _OPTION_NAME.match(text):
        raise ValueError(f"option {str(name)!r} is not an option name")
    if value is None or value is False:
        return None
    if value is True:
        return text, None
    if not isinstance(value, str | int | float):
        raise ValueError(f"option {text!r}: expected a single value, got {type(value).__name__}")
    if any(c in str(value) for c in "\n\r\0"):
        raise ValueError(f"option {text!r}: the value must not contain a line break or NUL")
    return text, str(value)


def basebackup_options(value: Any) -> list[Option]:
    """``postgresql.basebackup``; see the module docstring. ``None``: no options."""
    return tool_options(value, BASEBACKUP_RESERVED)


def rewind_options(value: Any) -> list[Option]:
    """``postgresql.rewind``; see the module docstring. ``None``: no options."""
    return tool_options(value, REWIND_RESERVED)


def as_arguments(options: list[Option] | tuple[Option, ...]) -> list[str]:
    """Command-line words of ``options``: long names as ``--name[=value]``, one-letter ones
    as ``-n [value]``."""
    out: list[str] = []
    for name, value in options:
        if len(name) == 1:
            out += [f"-{name}"] + ([value] if value is not None else [])
        else:
            out.append(f"--{name}" if value is None else f"--{name}={value}")
    return out


def tool_options(value: Any, reserved: Mapping[str, str]) -> list[Option]:
    """See the module docstring. ``None``: no options."""
    if value is None:
        return []
    items: list[tuple[Any, Any]] = []
    if isinstance(value, Mapping):
        items = list(value.items())
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, str):
                items.append((item, True))
            elif isinstance(item, Mapping) and len(item) == 1:
                items.extend(item.items())
            else:
                raise ValueError(f"{item!r}: expected an option name or a mapping with one "
                                 "option and its value")
    else:
        raise ValueError("expected a list of options or a mapping")
    return [opt for name, val in items if (opt := _option(name, val, reserved)) is not None]


class ReplicaMethodConfig(_Section):
    """A custom replica method section (see the module docstring); extra keys are kept in
    ``model_extra`` and must be scalars."""

    command: str = Field(min_length=1)
    no_params: bool = False
    keep_data: bool = False
    no_leader: bool = False
    no_master: bool = False

    @field_validator("command")
    @classmethod
    def _splittable(cls, value: str) -> str:
        return check_command(value)

    @model_validator(mode="after")
    def _scalar_extras(self) -> ReplicaMethodConfig:
        for key, value in (self.model_extra or {}).items():
            if isinstance(value, Mapping | list):
                raise ValueError(f"{key}: expected a single value (it is passed to the "
                                 f"command as --{key}=...)")
        return self

    @property
    def without_leader(self) -> bool:
        """The method may create a replica while no leader runs (``no_leader``/``no_master``)."""
        return self.no_leader or self.no_master

    @property
    def params(self) -> dict[str, Any]:
        """The extra keys, in the order given."""
        return dict(self.model_extra or {})
