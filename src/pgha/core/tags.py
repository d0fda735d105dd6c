"""Member tags (``tags:`` in a member's YAML), as the decision core reads them: an input of
:class:`pgha.core.model.Member` and of this member's own state. Pure data."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

_TAG_FLAGS = ("nofailover", "noloadbalance", "clonefrom", "nosync", "nostream")
_TAG_NAMES = frozenset({*_TAG_FLAGS, "failover_priority", "replicatefrom", "sync_priority"})


@dataclass(frozen=True)
class Tags:
    """Member tags (``tags:`` in the YAML). ``custom`` holds every other key; ``configured``
    names the standard tags the source set explicitly (published even at default values).

    Published form (:meth:`to_json`, as Patroni publishes them): every configured tag except
    a false flag, but ``nofailover`` / ``nosync`` stay, even false, next to a configured
    ``failover_priority`` / ``sync_priority`` so that readers see both; plus any tag holding a
    non-default value. ``nofailover: true`` wins over any ``failover_priority``."""

    nofailover: bool = False
    failover_priority: int = 1
    noloadbalance: bool = False
    clonefrom: bool = False
    replicatefrom: str | None = None
    nosync: bool = False
    sync_priority: int = 1
    nostream: bool = False
    custom: Mapping[str, Any] = field(default_factory=dict)
    # how the tags were written, not what they mean: left out of ==
    configured: frozenset[str] = field(default=frozenset(), compare=False)

    @property
    def can_be_leader(self) -> bool:
        return not self.nofailover and self.failover_priority > 0

    def _published(self, name: str) -> bool:
        value = getattr(self, name)
        if name in _TAG_FLAGS:
            pair = {"nofailover": "failover_priority", "nosync": "sync_priority"}.get(name)
            return bool(value) or (name in self.configured and pair in self.configured)
        default = getattr(Tags, name)
        return name in self.configured or value != default

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.custom)
        for name in ("nofailover", "failover_priority", "noloadbalance", "clonefrom",
                     "replicatefrom", "nosync", "sync_priority", "nostream"):
            value = getattr(self, name)
            if self._published(name) and value is not None:
                out[name] = value
        return out

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> Tags:
        """Parse tags from a member key or the YAML; raises ValueError on wrong types."""
        priority = data.get("failover_priority", 1)
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise ValueError("failover_priority must be an integer")
        sync_priority = data.get("sync_priority", 1)
        if isinstance(sync_priority, bool) or not isinstance(sync_priority, int):
            raise ValueError("sync_priority must be an integer")
        replicatefrom = data.get("replicatefrom")
        if replicatefrom is not None and not isinstance(replicatefrom, str):
            raise ValueError("replicatefrom must be a member name")
        return Tags(
            nofailover=bool(data.get("nofailover", False)),
            failover_priority=priority,
            noloadbalance=bool(data.get("noloadbalance", False)),
            clonefrom=bool(data.get("clonefrom", False)),
            replicatefrom=replicatefrom,
            nosync=bool(data.get("nosync", False)),
            sync_priority=sync_priority,
            nostream=bool(data.get("nostream", False)),
            custom={k: v for k, v in data.items() if k not in _TAG_NAMES},
            configured=frozenset(k for k in data if k in _TAG_NAMES and data[k] is not None),
        )
