"""Cluster-wide configuration models: :class:`DynamicConfig` and the ``bootstrap`` section.

Contract: :class:`DynamicConfig` validates ``bootstrap.dcs`` and the DCS ``config`` key (extra
keys kept; the timing rule ``loop_wait + 2 * retry_timeout <= ttl`` is reported and repaired by
:meth:`DynamicConfig.timing_warnings`/:meth:`DynamicConfig.adjusted`, never enforced);
:class:`BootstrapConfig` holds the dynamic configuration to seed plus initdb/users/post_bootstrap
and the custom method (``bootstrap.method`` naming a :class:`BootstrapMethod` section).
Pure models: no I/O, no environment, no filtering of PostgreSQL parameters (see ``loader``).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    Field,
    PrivateAttr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from pgha.config.base import Duration, Seconds, _OneLine, _Section, check_command
from pgha.core.model import HA_MINIMUMS
from pgha.core.slots import ignore_rule, permanent_slot
from pgha.core.standby import parse_standby_cluster


class DynamicPostgresql(_Section):
    use_pg_rewind: bool = False
    use_slots: bool = True
    parameters: dict[str, Any] = Field(default_factory=dict)
    pg_hba: list[str] | None = None
    pg_ident: list[Annotated[str, _OneLine]] | None = None
    recovery_conf: dict[str, Any] | None = None


class DynamicConfig(_Section):
    """Dynamic configuration (``bootstrap.dcs`` and the DCS ``config`` key); extra keys kept.

    ``synchronous_mode`` is True, False or ``"quorum"`` (on/off/true/false accepted).
    ``member_slots_ttl`` is in seconds (``"30min"``-style strings accepted). ``ttl``,
    ``loop_wait`` and ``retry_timeout`` are refused below :data:`HA_MINIMUMS`. The rule
    ``loop_wait + 2 * retry_timeout <= ttl`` is not enforced: see :meth:`adjusted`.
    """

    ttl: Seconds = Field(default=30, ge=HA_MINIMUMS["ttl"])
    loop_wait: Seconds = Field(default=10, ge=HA_MINIMUMS["loop_wait"])
    retry_timeout: Seconds = Field(default=10, ge=HA_MINIMUMS["retry_timeout"])
    maximum_lag_on_failover: int = Field(default=1048576, ge=0)
    maximum_lag_on_syncnode: int = -1
    primary_start_timeout: Seconds = Field(default=300, ge=0, validation_alias=AliasChoices(
        "primary_start_timeout", "master_start_timeout"))
    primary_stop_timeout: Seconds = Field(default=0, ge=0)
    synchronous_mode: bool | Literal["quorum"] = False
    synchronous_mode_strict: bool = False
    synchronous_node_count: int = Field(default=1, ge=1)
    failsafe_mode: bool = False
    check_timeline: bool = False
    max_timelines_history: int = Field(default=0, ge=0)
    pause: bool = False
    slots: dict[str, Any] | None = None
    ignore_slots: list[Any] | None = None
    member_slots_ttl: Duration = 1800
    standby_cluster: dict[str, Any] | None = None
    postgresql: DynamicPostgresql = Field(default_factory=DynamicPostgresql)

    @field_validator("synchronous_mode", mode="before")
    @classmethod
    def _sync_mode(cls, value: Any) -> Any:
        modes = {"on": True, "true": True, "yes": True, "off": False, "false": False, "no": False,
                 "quorum": "quorum"}
        if not isinstance(value, bool) and str(value).strip().lower() not in modes:
            raise ValueError("expected on, off or quorum")
        return value if isinstance(value, bool) else modes[str(value).strip().lower()]

    @field_validator("slots")
    @classmethod
    def _slots(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        for name, entry in (value or {}).items():
            if isinstance(problem := permanent_slot(name, entry), str):
                raise ValueError(problem)
        return value

    @field_validator("standby_cluster")
    @classmethod
    def _standby_cluster(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if isinstance(problem := parse_standby_cluster(value), str):
            raise ValueError(problem)
        return value

    @field_validator("ignore_slots")
    @classmethod
    def _ignore_slots(cls, value: list[Any] | None) -> list[Any] | None:
        for index, entry in enumerate(value or []):
            if isinstance(problem := ignore_rule(index, entry), str):
                raise ValueError(problem)
        return value

    def timing_warnings(self) -> list[str]:
        """One message when ``loop_wait + 2 * retry_timeout > ttl``, else empty."""
        total = self.loop_wait + 2 * self.retry_timeout
        if total <= self.ttl:
            return []
        return [f"loop_wait ({self.loop_wait:g}) + 2 * retry_timeout ({self.retry_timeout:g}) = "
                f"{total:g} exceeds ttl ({self.ttl:g}): the leader lock could expire before a "
                "failed update is retried"]

    def adjusted(self) -> DynamicConfig:
        """A copy obeying ``loop_wait + 2 * retry_timeout <= ttl``; ``ttl`` is never changed.

        Unchanged when the rule holds. Otherwise ``retry_timeout = (ttl - loop_wait) / 2``; if
        that is below 1 s, ``loop_wait`` and ``retry_timeout`` both become ``ttl / 3``.
        """
        if not self.timing_warnings():
            return self.model_copy()
        loop_wait, retry = self.loop_wait, (self.ttl - self.loop_wait) / 2
        if retry < 1:
            loop_wait = retry = self.ttl / 3
        return self.model_copy(update={"loop_wait": loop_wait, "retry_timeout": retry})

    def to_dcs(self) -> dict[str, Any]:
        """JSON-ready dict for the DCS ``config`` key (``None`` values left out)."""
        return self.model_dump(mode="json", exclude_none=True)


class UserSpec(_Section):
    password: str | None = None
    options: list[str] = Field(default_factory=list)


_GUC_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
RECOVERY_TARGETS = frozenset({"recovery_target", "recovery_target_lsn", "recovery_target_name",
                              "recovery_target_time", "recovery_target_xid"})
"""Recovery settings that each name a target: with one of them (or a ``restore_command``) in a
custom method's ``recovery_conf``, the restored cluster starts in targeted archive recovery."""
_STREAMING = frozenset({"primary_conninfo", "primary_slot_name", "standby_mode"})
_METHOD_OWN = frozenset({"command", "keep_existing_recovery_conf", "no_params", "recovery_conf"})


def _scalar_text(value: Any) -> bool:
    """A value that fits on one line of postgresql.conf or of a command line."""
    if isinstance(value, str):
        return not any(c in value for c in "\n\r\0")
    return isinstance(value, bool | int | float)


class BootstrapMethod(_Section):
    """A custom bootstrap method: the section ``bootstrap.<name>`` that ``bootstrap.method``
    names (Patroni's conventions). ``command`` is split as a shell would (no shell runs it);
    every key besides the four declared ones is passed to it as ``--key=value`` (see
    :func:`pgha.pg.methods.method_argv`), so those values must be scalars.
    ``recovery_conf`` holds recovery settings for the restored data (names lower-cased; the
    streaming settings pgha manages are refused, and ``recovery_target_action`` must be
    ``promote`` or ``pause``: pgha cannot go on after a server that shut down at its target)."""

    command: str = Field(min_length=1)
    keep_existing_recovery_conf: bool = False
    no_params: bool = False
    recovery_conf: dict[str, Any] = Field(default_factory=dict)

    @field_validator("command")
    @classmethod
    def _command(cls, value: str) -> str:
        return check_command(value)

    @field_validator("recovery_conf", mode="before")
    @classmethod
    def _recovery_conf(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            raise ValueError("expected a mapping of recovery settings")
        out: dict[str, Any] = {}
        for raw, setting in value.items():
            name = str(raw).lower()
            if not _GUC_NAME.match(name):
                raise ValueError(f"{raw}: not a parameter name")
            if name in _STREAMING:
                raise ValueError(f"{raw}: managed by pgha (a new cluster streams from nowhere)")
            if not _scalar_text(setting):
                raise ValueError(f"{raw}: expected one scalar value on one line")
            if name == "recovery_target_action" and str(setting).strip().lower() not in (
                    "promote", "pause"):
                raise ValueError(f"{raw}: expected promote or pause (pgha cannot go on after "
                                 "PostgreSQL shuts down at the target)")
            out[name] = setting
        return out

    @model_validator(mode="after")
    def _scalar_extras(self) -> BootstrapMethod:
        for key, value in self.extra.items():
            if value is not None and not _scalar_text(value):
                raise ValueError(f"{key}: expected a scalar value on one line (passed to the "
                                 f"command as --{key}=value)")
        return self

    @property
    def extra(self) -> dict[str, Any]:
        """The keys passed to the command (everything not declared above)."""
        return {k: v for k, v in (self.model_extra or {}).items() if k not in _METHOD_OWN}

    @property
    def needs_recovery_signal(self) -> bool:
        """``recovery_conf`` names a recovery target or a ``restore_command``."""
        return any(k in RECOVERY_TARGETS or k == "restore_command" for k in self.recovery_conf)


_METHODS = TypeAdapter(dict[str, BootstrapMethod])


def _error_at(loc: tuple[str, ...], message: str, value: Any) -> ValidationError:
    """A validation error at ``loc`` below the model being validated (pydantic prefixes the
    model's own location)."""
    return ValidationError.from_exception_data("BootstrapConfig", [InitErrorDetails(
        type=PydanticCustomError("value_error", "{error}", {"error": message}),
        loc=loc, input=value)])


class BootstrapConfig(_Section):
    """``bootstrap``; ``initdb`` items are switches (``data-checksums``) or ``{option: value}``;
    ``users`` is the older Patroni style; ``post_init`` is accepted for ``post_bootstrap``.
    ``method`` other than ``initdb`` names a custom method section, validated as a
    :class:`BootstrapMethod` (errors at ``bootstrap.method`` when it names none, else at the
    section's keys) and given by :attr:`custom_method`."""

    dcs: DynamicConfig = Field(default_factory=DynamicConfig)
    method: str | None = None
    initdb: list[str | dict[str, Any]] = Field(default_factory=list)
    pg_hba: list[str] = Field(default_factory=list)
    users: dict[str, UserSpec] = Field(default_factory=dict)
    post_bootstrap: str | None = Field(
        default=None, validation_alias=AliasChoices("post_bootstrap", "post_init"))

    @field_validator("initdb", mode="before")
    @classmethod
    def _check_initdb(cls, value: Any) -> Any:
        if not isinstance(value, list):
            raise ValueError("expected a list of switches and {option: value} mappings")
        for i, item in enumerate(value):
            if isinstance(item, dict):
                if not item or not all(isinstance(k, str) and isinstance(v, str | int | float)
                                       for k, v in item.items()):
                    raise ValueError(f"item {i}: expected {{option: value}} with a scalar value")
            elif not isinstance(item, str) or not item.strip():
                raise ValueError(f"item {i}: expected a switch name or {{option: value}}")
        return value

    _custom: BootstrapMethod | None = PrivateAttr(default=None)

    @field_validator("users", mode="before")
    @classmethod
    def _null_users(cls, value: Any) -> Any:
        return {k: v or {} for k, v in value.items()} if isinstance(value, dict) else value

    @field_validator("method")
    @classmethod
    def _method(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be empty (initdb is the default)")
        return value

    @model_validator(mode="after")
    def _custom_method(self) -> BootstrapConfig:
        name = self.method
        if name is None or name == "initdb":
            return self
        if name in type(self).model_fields or name == "post_init":
            raise _error_at(("method",), f"{name!r} is a bootstrap setting, not a method "
                            "section", name)
        section = (self.model_extra or {}).get(name)
        if section is None:
            raise _error_at(("method",), f"names no section bootstrap.{name} (it needs at "
                            "least a command)", name)
        if not isinstance(section, dict):
            raise _error_at((name,), "expected a mapping with at least a command", section)
        self._custom = _METHODS.validate_python({name: section})[name]
        return self

    @property
    def custom_method(self) -> BootstrapMethod | None:
        """The custom bootstrap method to run instead of initdb (None: initdb)."""
        return self._custom

    def initdb_args(self) -> list[str]:
        """``initdb`` as options: ``{encoding: UTF8}`` -> ``--encoding=UTF8``,
        ``data-checksums`` -> ``--data-checksums``."""
        args: list[str] = []
        for item in self.initdb:
            if isinstance(item, str):
                args.append(f"--{item.strip().lstrip('-')}")
            else:
                args.extend(f"--{k.lstrip('-')}={v}" for k, v in item.items())
        return args
