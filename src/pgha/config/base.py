"""Foundations shared by the configuration modules; imports nothing else from ``pgha.config``.

Contract: :class:`ConfigError` (every problem as ``(key path, message)``), the constants used by
the other modules, the scalar parsers (``host:port``, durations, comma-separated lists), the
annotated field types (:data:`Seconds`, :data:`Duration`) and the section base classes:
``_Section`` (unknown keys kept, ``null`` for a declared key = default), ``_Closed`` (unknown keys
are errors) and ``_Endpoint`` (``listen``/``connect_address`` as ``host:port``).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
from collections.abc import Iterable
from typing import Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    PlainSerializer,
    ValidationInfo,
    field_validator,
    model_validator,
)

from pgha.core.units import parse_duration

DEFAULT_BIN_DIR = "/usr/lib/postgresql/15/bin"
ETCD_DEFAULT_PORT = 2379
DCS_KINDS = ("etcd3", "etcd", "consul", "zookeeper")
_UNSUPPORTED_DCS = ("exhibitor", "kubernetes", "raft")
_WILDCARDS = frozenset({"", "*", "0.0.0.0", "::"})
_ROLE_DEFAULTS = {"superuser": "postgres", "replication": "replicator", "rewind": "rewind_user"}
_ROLE_KEYS = ("username", "password", "sslmode", "sslkey", "sslpassword", "sslcert", "sslrootcert",
              "sslcrl", "sslcrldir", "sslnegotiation", "gssencmode", "channel_binding")


class ConfigError(Exception):
    """Invalid configuration. ``errors`` holds every problem as ``(key path, message)``."""

    def __init__(self, errors: Iterable[tuple[str, str]]) -> None:
        self.errors: list[tuple[str, str]] = list(errors)
        super().__init__(self.errors)  # args stay (errors,) so the exception pickles

    def __str__(self) -> str:
        return "\n".join(f"{path}: {msg}" if path else msg for path, msg in self.errors)


_HOST_PORT = re.compile(r"(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^\s\[\]]+?)):(?P<port>\d{1,5})")


def split_host_port(value: str, default_port: int | None = None) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port``; in ``h1,h2:port`` the host is ``h1,h2``).

    Without a ``:port``, ``default_port`` is used when given. Raises ``ValueError`` otherwise
    ("expected host:port"), or for a port outside 1..65535.
    """
    text = value.strip()
    match = _HOST_PORT.fullmatch(text)
    if match is None:
        if default_port is not None and text and ":" not in text.strip("[]"):
            return text.strip("[]"), default_port
        raise ValueError("expected host:port")
    if not 0 < int(match["port"]) < 65536:
        raise ValueError("port must be between 1 and 65535")
    return match["v6"] or match["host"], int(match["port"])


def check_command(value: str) -> str:
    """A method's ``command``: ``value`` when a shell can split it into at least one word;
    ValueError (a one-line reason) otherwise."""
    try:
        words = shlex.split(value)
    except ValueError as exc:
        raise ValueError(f"a shell cannot split it: {exc}") from None
    if not words:
        raise ValueError("must not be empty")
    return value


def join_host_port(host: str, port: int) -> str:
    """Inverse of :func:`split_host_port`; IPv6 literals get brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def default_bin_dir(path_env: str | None = None, pg_ctl: str = "pg_ctl") -> str:
    """Directory of ``pg_ctl`` (the program's name, or a ``postgresql.bin_name.pg_ctl``) found
    on ``path_env`` (default ``$PATH``) with symlinks resolved (so it holds ``postgres``,
    ``initdb``... too), else DEFAULT_BIN_DIR."""
    found = shutil.which(pg_ctl, path=path_env)
    return os.path.dirname(os.path.realpath(found)) if found else DEFAULT_BIN_DIR


def _num_out(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


def _csv(value: Any) -> Any:
    return [p.strip() for p in value.split(",") if p.strip()] if isinstance(value, str) else value


Seconds = Annotated[float, PlainSerializer(_num_out)]
"""A float that serializes as an int when integral (``30``, not ``30.0``, in DCS JSON)."""
Duration = Annotated[float, BeforeValidator(parse_duration), PlainSerializer(_num_out)]
def _one_line(value: str) -> str:
    if any(c in value for c in "\n\r\0"):
        raise ValueError("one line expected: the text contains a line break or NUL")
    return value


_Lower = BeforeValidator(_lower)
_OneLine = AfterValidator(_one_line)
_Csv = BeforeValidator(_csv)


class _Section(BaseModel):
    """Base of config sections: unknown keys are kept; ``null`` for a declared key = default."""

    model_config = ConfigDict(extra="allow", coerce_numbers_to_str=True, allow_inf_nan=False,
                              defer_build=True)  # schemas built on first use

    @model_validator(mode="before")
    @classmethod
    def _nulls_to_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        names = set(cls.model_fields)
        for info in cls.model_fields.values():
            if isinstance(info.validation_alias, AliasChoices):
                names.update(c for c in info.validation_alias.choices if isinstance(c, str))
        return {k: v for k, v in data.items() if v is not None or k not in names}


class _Closed(_Section):
    """A section with a fixed key set: unknown keys are errors (catches typos)."""

    model_config = ConfigDict(extra="forbid")


class _Endpoint(_Section):
    """``listen`` and ``connect_address`` as ``host:port``; connect defaults to listen."""

    _multi_host: ClassVar[bool] = False
    listen: str
    connect_address: str | None = None

    @field_validator("listen", "connect_address")
    @classmethod
    def _check_host_port(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and "," in split_host_port(value)[0]:
            if not (cls._multi_host and info.field_name == "listen"):
                raise ValueError("expected host:port")
        return value

    @property
    def listen_host(self) -> str:
        """Host part of ``listen`` (for PostgreSQL maybe ``h1,h2``, i.e. listen_addresses)."""
        return split_host_port(self.listen)[0]

    @property
    def listen_port(self) -> int:
        return split_host_port(self.listen)[1]

    @property
    def connect_host(self) -> str:
        """``connect_address`` host, else the first listen host (wildcard -> ``127.0.0.1``)."""
        if self.connect_address:
            return split_host_port(self.connect_address)[0]
        host = self.listen_host.split(",")[0].strip()
        return "127.0.0.1" if host in _WILDCARDS else host

    @property
    def connect_port(self) -> int:
        return split_host_port(self.connect_address or self.listen)[1]

    @property
    def connect_host_port(self) -> str:
        return join_host_port(self.connect_host, self.connect_port)
