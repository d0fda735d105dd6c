"""Failsafe mode state of one agent (``failsafe_mode: true`` in the dynamic configuration).

Two halves, both observations the decision loop reads:

* as a primary cut off from the DCS: :meth:`Failsafe.confirm` asks every member listed in the
  ``failsafe`` key to promise not to take over; only when all answer does ``deadline`` move
  (counted from when the round was sent, like a lease keep-alive);
* as a replica: :meth:`Failsafe.accept` records such a request (from ``POST /failsafe``);
  :meth:`Failsafe.asking_primary` names that primary for ``ttl`` seconds, and the core keeps
  this member out of any leader race meanwhile.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from pgha.agent.clock import SYSTEM_CLOCK, Clock
from pgha.agent.peers import PeerClient
from pgha.core.model import ClusterView, PgRole, PgState, safety_margin_for

log = logging.getLogger("pgha.agent.failsafe")


class Failsafe:
    """State owned: ``deadline`` (monotonic; None until a round succeeded) and which primary
    last asked us."""

    def __init__(self, name: str, clock: Clock = SYSTEM_CLOCK) -> None:
        self.clock = clock
        self.name = name
        self.deadline: float | None = None
        self._asked_by: tuple[str, float] | None = None
        self._slots: dict[str, int] = {}  # slot positions the asking primary sent

    def asking_primary(self, ttl: float) -> str | None:
        """The primary that asked us for a confirmation within the last ``ttl`` seconds."""
        if self._asked_by is None:
            return None
        name, at = self._asked_by
        return name if self.clock.monotonic() - at < ttl else None

    def asking_slots(self, ttl: float) -> dict[str, int]:
        """The slot positions :meth:`asking_primary` sent with its request (empty when none
        asked within ``ttl``): replicas advance their copies to them while the DCS is down."""
        return dict(self._slots) if self.asking_primary(ttl) is not None else {}

    def accept(self, name: str, view: ClusterView | None, pg: PgState,
               slots: Mapping[str, int] | None = None) -> tuple[int, str]:
        """A ``POST /failsafe`` from primary ``name``. Answers (HTTP code, text), the first
        that applies: 502 when failsafe_mode is off (or no view yet); 500 when we run as a
        primary ourselves; 409 when ``name`` is not the leader of ``view`` (the last DCS view)
        or, when that view names no leader (the key expired while the primary was cut off),
        not a member listed in its ``failsafe`` key, or is this member; else 200 and ``name``
        is recorded (keeping us out of any race for ``ttl``) with the ``slots`` positions it
        sent. Only a 200 changes state."""
        if view is None or not view.settings.failsafe_mode:
            return 502, "failsafe_mode is off"
        if pg.running and pg.role is PgRole.PRIMARY:
            return 500, "this member runs as a primary"
        if view.leader is not None:
            known = name == view.leader.name
        else:
            known = name in (view.failsafe or {})
        if not known or name == self.name:
            leader = view.leader.name if view.leader is not None else None
            log.warning("failsafe: refused a request naming %r (last leader: %s)", name,
                        leader or "none; failsafe key: " + ", ".join(sorted(view.failsafe or {})))
            return 409, f"{name} is not the leader this member knows"
        self._asked_by = (name, self.clock.monotonic())
        self._slots = dict(slots or {})
        return 200, "Accepted"

    async def confirm(self, peers: PeerClient, view: ClusterView | None,
                      pg: PgState, body: Mapping[str, Any], session_ttl: float,
                      ttl: float) -> float | None:
        """One confirmation round, when we run as a primary in failsafe_mode and the last view
        lists members; ``deadline`` moves only when every one of them answered, to ``sent +
        min(session_ttl, ttl) - margin``: a replica keeps its promise for the DCS ``ttl`` in
        force (:meth:`asking_primary`), which is ``ttl`` here, and a confirmation is never
        trusted longer than our own session would have held the lock either. Returns ``sent``
        (monotonic) when the deadline moved (the watchdog device is fed on it), else None."""
        if view is None or not view.settings.failsafe_mode or not view.failsafe \
                or not (pg.running and pg.role is PgRole.PRIMARY):
            return None
        sent = self.clock.monotonic()
        if await peers.failsafe_round(view.failsafe, body,
                                      timeout=min(2.0, view.settings.ttl / 4)):
            trusted = min(session_ttl, ttl)
            self.deadline = sent + trusted - safety_margin_for(trusted)
            return sent
        log.warning("failsafe: not every member confirmed us")
        return None
