"""Command lines of custom bootstrap and replica-creation methods, with Patroni's argument
conventions (pure).

A method section (``bootstrap.<method>``, ``postgresql.<replica method>``) names a
``command`` and may set ``no_params``; every other key that is not one of the method's own
settings (:data:`METHOD_SETTINGS`) is passed to the command as ``--key=value``, after
``--scope=<scope>`` and ``--datadir=<data_dir>`` (and, for a replica method, ``--role=replica``
and ``--connstring=<libpq connection string of the source>``). With ``no_params`` the command
gets none of them.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import Any

METHOD_SETTINGS = frozenset({"command", "no_params", "keep_existing_recovery_conf",
                             "recovery_conf", "no_leader", "no_master", "keep_data"})
"""Keys of a method section that configure pgha, never passed to the command."""


def _text(value: Any) -> str:
    """A value as Patroni writes it on the command line (Python's ``str``: ``True``)."""
    return str(value)


def method_argv(command: str, *, scope: str, data_dir: str, extra: Mapping[str, Any],
                no_params: bool = False, role: str | None = None,
                connstring: str | None = None) -> list[str]:
    """The argv of a method's ``command`` (split as a shell would, without a shell).
    Raises ValueError for an empty command or one a shell could not split."""
    argv = shlex.split(command)
    if not argv:
        raise ValueError("the method's command is empty")
    if no_params:
        return argv
    argv += [f"--scope={scope}", f"--datadir={data_dir}"]
    if role is not None:
        argv.append(f"--role={role}")
    if connstring is not None:
        argv.append(f"--connstring={connstring}")
    argv += [f"--{key}={_text(value)}" for key, value in extra.items()
             if key not in METHOD_SETTINGS and value is not None]
    return argv
