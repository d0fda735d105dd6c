"""The parameter catalogue of the PostgreSQL server binary (``postgresql.bin_dir``, and the
``postgresql.bin_name.postgres`` of the configuration).

:func:`load_catalogue` runs ``postgres --version`` and ``postgres --describe-config`` (both work
as root and without a data directory), each under :data:`TIMEOUT` seconds, and parses them with
:func:`pgha.config.pg_parameters.parse_describe_config`. The result is cached in the process per
binary (resolved path and modification time), so a package upgrade is noticed and the binary is
asked once otherwise. It never raises: when the binary cannot be run or its output cannot be
parsed, the catalogue is pgha's name list (:meth:`ParamCatalogue.fallback`, with the major from
``--version`` when that much worked) and one warning per binary says so.

Enum values are not printed by ``--describe-config``; pgha's table of them per major is used
(see :mod:`pgha.config.pg_catalogue_data`) rather than ``pg_settings.enumvals``, because
parameters are judged before the server runs (``validate-config``, the first start).

``load_catalogue`` takes the server binary's path, or a directory holding it as ``postgres``; it
fits the ``catalogue`` argument of :func:`pgha.config.load_config` (path -> catalogue).
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
from pathlib import Path

from pgha.config.pg_parameters import ParamCatalogue, parse_describe_config, parse_version

log = logging.getLogger("pgha.pg")

TIMEOUT = 15.0
"""Seconds each run of the binary may take."""

_lock = threading.Lock()
_cache: dict[tuple[str, int], ParamCatalogue] = {}
_warned: set[str] = set()


def _run(binary: Path, flag: str, timeout: float) -> str:
    """stdout of ``binary flag``; OSError/TimeoutError/ValueError describe a failure."""
    try:
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}  # read now: the agent may strip it
        done = subprocess.run([str(binary), flag], capture_output=True, text=True,
                              timeout=timeout, env=env, stdin=subprocess.DEVNULL, check=False,
                              errors="replace")
    except subprocess.TimeoutExpired:
        raise TimeoutError(f"{binary} {flag} did not finish within {timeout:g}s") from None
    if done.returncode != 0:
        err = " ".join(done.stderr.split())[:200]
        raise ValueError(f"{binary} {flag} exited with {done.returncode}: {err}")
    return done.stdout


def _fallback(binary: Path, reason: str, major: int | None) -> ParamCatalogue:
    key = str(binary)
    with _lock:
        first = key not in _warned
        _warned.add(key)
    if first:
        log.warning("cannot read the parameter catalogue of %s (%s); judging PostgreSQL "
                    "parameters by pgha's list of names only", binary, reason)
    return ParamCatalogue.fallback(major, f"pgha's list of names ({reason})")


def load_catalogue(binary_or_dir: str | os.PathLike[str],
                   timeout: float = TIMEOUT) -> ParamCatalogue:
    """The catalogue of the server binary ``binary_or_dir``, or of ``binary_or_dir``/postgres
    when that is a directory (see the module docstring); never raises."""
    binary = Path(binary_or_dir)
    if binary.is_dir():
        binary = binary / "postgres"
    try:
        real = binary.resolve()
        stat = real.stat()
    except OSError as exc:
        return _fallback(binary, exc.strerror or str(exc), None)
    key = (str(real), stat.st_mtime_ns)
    with _lock:
        cached = _cache.get(key)
    if cached is not None:
        return cached
    major: int | None = None
    try:
        major = parse_version(_run(binary, "--version", timeout))
        catalogue = parse_describe_config(_run(binary, "--describe-config", timeout), major,
                                          str(binary))
    except (OSError, TimeoutError, ValueError) as exc:
        return _fallback(binary, str(exc), major)
    with _lock:
        _cache[key] = catalogue
    log.debug("parameter catalogue of %s: PostgreSQL %s, %d parameters", binary, major,
              len(catalogue.specs))
    return catalogue


def clear_cache() -> None:
    """Forget every cached catalogue and warning (tests)."""
    with _lock:
        _cache.clear()
        _warned.clear()
