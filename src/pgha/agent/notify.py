"""systemd service notification (``sd_notify``), without a dependency.

Contract:

* :func:`take_environment` reads ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` and
  REMOVES them from the environment it is given (``os.environ`` by default). The agent calls it
  before it spawns anything, so no child (PostgreSQL, pg_ctl, callbacks, replica and bootstrap
  commands, pg_rewind) inherits them: Debian's PostgreSQL would otherwise send its own
  notifications to the agent's unit (``NotifyAccess=main`` ignores them, but they are noise
  and a postmaster sending ``READY=1`` is wrong). The watchdog settings only count when
  ``WATCHDOG_PID`` is unset or names this process.
* :class:`Notifier` sends datagrams to the socket (a path, or an abstract name given with a
  leading ``@``) on a non-blocking socket: a send never waits, a failure is logged once (again
  only after a send worked in between) and is never raised. Without ``NOTIFY_SOCKET`` every
  method does nothing.
* ``READY=1`` is sent once (:meth:`Notifier.ready`), by the decision loop at the end of the
  first completed cycle after which this member's key is published in the DCS: the agent has
  joined the cluster and holds (or has taken) its role. A first cycle that creates the data
  directory (initdb, a base backup) ends only after it: the unit's ``TimeoutStartSec`` must
  allow for that (the sample unit sets ``infinity``; the systemd watchdog still runs).
* ``STATUS=<role>, <state>`` (:func:`status_line`, e.g. ``leader, running`` or ``replica,
  streaming from pg1``) is sent after each cycle when it changed; ``STOPPING=1`` once, when a
  clean stop begins.
* :meth:`Notifier.watchdog_loop` sends ``WATCHDOG=1`` every half ``WATCHDOG_USEC``, but only
  while ``alive()`` says the decision loop completed a cycle recently (or runs a long action
  that announced itself): a stuck loop stops the pings and systemd's ``WatchdogSec`` restarts
  the agent (which adopts the running PostgreSQL).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass

from pgha.core.status import AgentStatus

log = logging.getLogger("pgha.agent")

ENV_NAMES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
"""The variables systemd sets for a ``Type=notify`` service; never passed on to children."""


@dataclass(frozen=True)
class NotifyEnv:
    """What systemd asked of this process: the socket to notify (None: not run by systemd
    with ``Type=notify``) and the watchdog interval in microseconds (None: no watchdog)."""

    socket: str | None = None
    watchdog_usec: int | None = None


def take_environment(environ: MutableMapping[str, str] | None = None,
                     pid: int | None = None) -> NotifyEnv:
    """Read and remove :data:`ENV_NAMES` from ``environ`` (``os.environ``). ``WATCHDOG_USEC``
    counts only when it is a positive integer and ``WATCHDOG_PID`` is unset or equals ``pid``
    (this process); anything else is logged and ignored."""
    env = os.environ if environ is None else environ
    values = {name: env.pop(name, None) for name in ENV_NAMES}
    sock = values["NOTIFY_SOCKET"] or None
    usec: int | None = None
    raw, owner = values["WATCHDOG_USEC"], values["WATCHDOG_PID"]
    if raw:
        me = os.getpid() if pid is None else pid
        try:
            usec = int(raw)
            owner_pid = int(owner) if owner else me
        except ValueError:
            log.warning("ignoring WATCHDOG_USEC=%r / WATCHDOG_PID=%r: not integers", raw, owner)
            usec = None
        else:
            if usec <= 0 or owner_pid != me:
                usec = None
    return NotifyEnv(sock, usec)


def _address(name: str) -> str:
    return "\0" + name[1:] if name.startswith("@") else name


def status_line(status: AgentStatus) -> str:
    """``<role>, <state>`` for ``STATUS=``: ``leader`` for the lock holder running as
    primary, ``standby leader``, ``replica, streaming from <upstream>`` for a streaming
    replica, else Patroni's role and state (``replica, starting``, ``uninitialized,
    stopped``...)."""
    role, state = status.role, status.pg_state
    if role == "primary":
        return f"{'leader' if status.holds_lock else 'primary'}, {state}"
    if role == "standby_leader":
        return f"standby leader, {state}"
    if role == "replica" and state == "running":
        how = status.pg_details.get("replication_state")
        if how == "streaming" and status.pg.upstream:
            return f"replica, streaming from {status.pg.upstream}"
        if isinstance(how, str):
            return f"replica, {how}"
    return f"{role}, {state}"


class Notifier:
    """See the module docstring. Methods other than :meth:`watchdog_loop` never block."""

    def __init__(self, env: NotifyEnv) -> None:
        self.env = env
        self._sock: socket.socket | None = None
        self._failing = False
        self._ready = False
        self._stopping = False
        self._status: str | None = None
        self.sent: int = 0  # datagrams sent successfully (for tests and the log)

    @property
    def enabled(self) -> bool:
        return self.env.socket is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between ``WATCHDOG=1`` pings: half systemd's interval (None: no watchdog)."""
        if not self.enabled or self.env.watchdog_usec is None:
            return None
        return self.env.watchdog_usec / 2_000_000

    def send(self, message: str) -> bool:
        """Send one datagram; False when it could not be sent (logged, never raised)."""
        if self.env.socket is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(message.encode(), _address(self.env.socket))
        except OSError as exc:
            if not self._failing:
                log.warning("systemd notification to %s failed: %s (not logged again until "
                            "one works)", self.env.socket, exc)
            self._failing = True
            return False
        if self._failing:
            log.info("systemd notifications to %s work again", self.env.socket)
        self._failing = False
        self.sent += 1
        return True

    def ready(self) -> None:
        """``READY=1``, the first time only."""
        if self.enabled and not self._ready:
            self._ready = self.send("READY=1")
            if self._ready:
                log.info("told systemd we are ready")

    def status(self, text: str) -> None:
        """``STATUS=text`` when it differs from the last one sent."""
        if self.enabled and text != self._status and self.send(f"STATUS={text}"):
            self._status = text

    def stopping(self) -> None:
        """``STOPPING=1``, once."""
        if self.enabled and not self._stopping:
            self._stopping = True
            self.send("STOPPING=1")

    async def watchdog_loop(self, alive: Callable[[], bool]) -> None:
        """Runs until cancelled (returns at once without a systemd watchdog): every
        :attr:`watchdog_interval`, ``WATCHDOG=1`` when ``alive()``; a stall is logged once
        per change."""
        interval = self.watchdog_interval
        if interval is None:
            return
        stalled = False
        while True:
            if alive():
                if stalled:
                    log.info("decision loop alive again: feeding systemd's watchdog")
                stalled = False
                self.send("WATCHDOG=1")
            elif not stalled:
                stalled = True
                log.error("decision loop stalled: not feeding systemd's watchdog")
            await asyncio.sleep(interval)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
