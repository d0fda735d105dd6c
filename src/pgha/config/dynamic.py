"""Cluster-wide configuration models: :class:`DynamicConfig` and the ``bootstrap`` section.

Contract: :class:`DynamicConfig` validates ``bootstrap.dcs`` and the DCS ``config`` key (extra
keys kept; the timing rule ``loop_wait + 2 * retry_timeout <= ttl`` is reported and repaired by
:meth:`DynamicConfig.timing_warnings`/:meth:`DynamicConfig.adjusted`, never enforced);
:class:`BootstrapConfig` holds the dynamic configuration to seed plus initdb/users/post_bootstrap.
Pure models: no I/O, no environment, no filtering of PostgreSQL parameters (see ``loader``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AliasChoices, Field, field_validator

from pgha.config.base import Duration, Seconds, _Section
from pgha.core.model import HA_MINIMUMS
from pgha.core.slots import ignore_rule, permanent_slot
from pgha.core.standby import parse_standby_cluster


class DynamicPostgresql(_Section):
    use_pg_rewind: bool = False
    use_slots: bool = True
    parameters: dict[str, Any] = Field(default_factory=dict)
    pg_hba: list[str] | None = None
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


class BootstrapConfig(_Section):
    """``bootstrap``; ``initdb`` items are switches (``data-checksums``) or ``{option: value}``;
    ``users`` is the older Patroni style; ``post_init`` is accepted for ``post_bootstrap``."""

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

    @field_validator("users", mode="before")
    @classmethod
    def _null_users(cls, value: Any) -> Any:
        return {k: v or {} for k, v in value.items()} if isinstance(value, dict) else value

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
