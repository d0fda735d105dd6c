"""Each simulated node's watchdog device, driven by the agent's real
:class:`pgha.agent.watchdog.LeaderWatchdog` and the real arming rule
(:func:`pgha.core.lease.watchdog_armed`).

:class:`NodeDevice` behaves as Linux's watchdog drivers do: opening starts the timer,
``WDIOC_SETTIMEOUT`` sets the timeout and restarts it, ``WDIOC_KEEPALIVE`` restarts it, and
closing stops it only after the magic character ``V`` was written; a process that dies closes
the device without it, so the timer runs on. When it runs out the node resets: PostgreSQL and
the agent die at that instant and the node boots again later (the Sim's ``watchdog`` event).

Rules a Sim can run with (``Sim(watchdog=...)``): ``lease`` (the agent's rule), ``lock`` (the
rule before the fix: armed only while the published status holds the lock, which needs a DCS
read - kept as a mutation the invariants must catch) and ``off`` (no device: a dead agent on
an isolated node is recorded as unfenced, see :meth:`tests.sim.cluster.Sim.check_invariants`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pgha.agent.watchdog import (
    WDIOC_GETTIMEOUT,
    WDIOC_KEEPALIVE,
    WDIOC_SETTIMEOUT,
    LeaderWatchdog,
)
from pgha.config.models import WatchdogConfig
from pgha.core.actions import Promote
from pgha.core.decision import Decision
from pgha.core.lease import watchdog_armed
from pgha.core.model import PgState

if TYPE_CHECKING:
    from tests.sim.agent_parts import SimMember
    from tests.sim.cluster import Sim

RULES = ("lease", "lock", "off")
REBOOT_SECONDS = 20.0  # from the reset to the agent's start


def rule_for(rule: str, ttl: float) -> str:
    """The rule a Sim runs with: ``off`` when no device timeout fits ``ttl`` (the agent's
    ``automatic`` mode then goes on without one, as :class:`LeaderWatchdog` decides)."""
    assert rule in RULES, rule
    probe = LeaderWatchdog(WatchdogConfig(), ttl=lambda: ttl)
    return "off" if probe._timing_problem() is not None else rule


@dataclass
class NodeDevice:
    """One node's device (the DeviceIO seam). ``fires_at`` is when the running timer resets
    the node (None: stopped)."""

    sim: Sim
    name: str
    timeout: int = 60
    fires_at: float | None = None
    magic: bool = False
    resets: list[float] = field(default_factory=list)

    def open(self, path: str) -> int:
        self.magic = False
        self._restart()
        return 3

    def ioctl(self, fd: int, request: int, arg: int) -> int:
        if request == WDIOC_SETTIMEOUT:
            self.timeout = arg
            self._restart()
        elif request == WDIOC_KEEPALIVE:
            self._restart()
        else:
            assert request == WDIOC_GETTIMEOUT
        return self.timeout

    def write(self, fd: int, data: bytes) -> None:
        self.magic = b"V" in data

    def close(self, fd: int) -> None:
        if self.magic:
            self.fires_at = None

    def process_died(self) -> None:
        """The agent was killed: the kernel closes the device without the magic character."""
        self.magic = False

    def node_died(self) -> None:
        self.fires_at = None

    def _restart(self) -> None:
        self.fires_at = self.sim.now() + self.timeout
        self.sim.schedule(self.timeout, self.name, "watchdog")

    def due(self) -> bool:
        return self.fires_at is not None and self.fires_at <= self.sim.now()


def attach(sim: Sim, m: SimMember) -> None:
    """A started agent takes hold of its node's device (default ``watchdog`` settings:
    automatic, safety margin 5) and feeds it after each lease renewal."""
    if sim.watchdog_rule == "off" or m.device is None or m.lease is None:
        return
    m.watchdog = LeaderWatchdog(WatchdogConfig(), ttl=m.session_ttl, io=m.device,
                                clock=sim.now)
    m.lease.renewed = m.watchdog.keepalive


def before_actions(m: SimMember, decision: Decision) -> None:
    """A decision that promotes arms the device first (as :mod:`pgha.agent.cycle` does)."""
    if m.watchdog is not None and any(isinstance(a, Promote) for a in decision.actions):
        m.watchdog.arm()


def follow(sim: Sim, m: SimMember, pg: PgState, stopping: bool) -> None:
    """After ``m``'s cycle: arm or disarm its device as the Sim's rule says."""
    if m.watchdog is None or m.publisher is None:
        return
    holds = m.publisher.status.holds_lock
    if sim.watchdog_rule == "lock":
        armed = holds and watchdog_armed(pg, holds, None, False, stopping, sim.now())
    else:
        armed = watchdog_armed(pg, holds, m.lease_deadline, False, stopping, sim.now())
    m.watchdog.follow(armed)


def reset_if_due(sim: Sim, m: SimMember) -> None:
    """The ``watchdog`` event: the node resets when its timer ran out."""
    device = m.device
    if device is None or not device.due():
        return
    device.resets.append(sim.now())
    sim.log.append(f"{sim.now():.2f} watchdog resets {m.name}")
    sim.kill_agent(m.name)
    sim.schedule(REBOOT_SECONDS, m.name, "restart_agent")
