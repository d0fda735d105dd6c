"""The Linux watchdog device (``watchdog`` {mode, device, safety_margin}; Patroni's semantics).

Contract:

* Armed only while this member leads with PostgreSQL running as primary and the cluster is not
  paused (:meth:`LeaderWatchdog.follow`, after each decision cycle; leading is holding the lock,
  or a lease or failsafe confirmation still valid while the DCS cannot be read), and before a
  decision promotes (:meth:`LeaderWatchdog.arm`, called by the decision loop before it runs the
  actions). Disarmed with the magic close (``V``, then close) when that no longer holds
  (demotion, switchover, pause, lost lock) and on the agent's exit (:meth:`disarm`).
* Timeout: ``ttl - safety_margin`` whole seconds (``safety_margin: -1``: ``ttl / 2``), with the
  TTL of the DCS session the leader key is bound to, set with ``WDIOC_SETTIMEOUT`` when armed
  and again when the TTL changes. Fed (``WDIOC_KEEPALIVE``) right after each successful lease
  keep-alive (:meth:`keepalive`, which the lease keeper calls with the moment the keep-alive was
  SENT) or failsafe confirmation, and only when it was sent less than ``ttl - timeout`` seconds
  ago: the machine then resets before the leader key can expire (``fed + timeout < sent +
  ttl``). The lease keep-alive is itself gated on the decision loop's heartbeat, so a stuck
  loop, a dead agent or a lost DCS stops the feeding; a live agent cut off from the DCS demotes
  and disarms at its own deadline, and whatever else happens the device resets the machine
  before another member can take the lock. A timeout shorter than the agent's own deadline
  (``ttl < 20`` with the default margin) is warned about: a DCS outage then resets the machine.
* A device whose ioctls are refused as unsupported (``ENOTTY``/``EINVAL``: not a watchdog driver,
  e.g. a test's stand-in file) is fed by writing a byte; its timeout cannot be set (a warning).
* ``mode: required``: :meth:`usable` (``LocalState.watchdog_ok``) is False while the device
  cannot be armed, so the member stays out of the leader race; ``automatic`` logs a warning and
  goes on; ``off`` never touches the device. A failed arming is retried after a backoff doubling
  from 1 s to 60 s, never in a tight loop, and logged once per distinct failure.
* Device IO goes through :class:`DeviceIO` (the seam tests replace). The device is opened with
  ``O_NONBLOCK``: an open or an ioctl of a character device returns at once and never blocks
  the event loop. Nothing here raises into the caller.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import math
import os
import struct
import time
from collections.abc import Callable
from typing import Protocol

from pgha.config.models import WatchdogConfig
from pgha.core.model import safety_margin_for

log = logging.getLogger("pgha.agent")

# <linux/watchdog.h>: _IOR('W', 5, int), _IOWR('W', 6, int), _IOR('W', 7, int)
WDIOC_KEEPALIVE = 0x80045705
WDIOC_SETTIMEOUT = 0xC0045706
WDIOC_GETTIMEOUT = 0x80045707
_UNSUPPORTED = (errno.ENOTTY, errno.EINVAL)
_BACKOFF_FIRST, _BACKOFF_CAP = 1.0, 60.0


class DeviceIO(Protocol):
    """The system calls on the device; every method raises OSError on failure."""

    def open(self, path: str) -> int: ...

    def ioctl(self, fd: int, request: int, arg: int) -> int: ...

    def write(self, fd: int, data: bytes) -> None: ...

    def close(self, fd: int) -> None: ...


class OsDeviceIO:
    """The real system calls (non-blocking open, ``int`` ioctl argument)."""

    def open(self, path: str) -> int:
        return os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)

    def ioctl(self, fd: int, request: int, arg: int) -> int:
        buf = fcntl.ioctl(fd, request, struct.pack("i", arg))
        return int(struct.unpack("i", buf)[0])

    def write(self, fd: int, data: bytes) -> None:
        os.write(fd, data)

    def close(self, fd: int) -> None:
        os.close(fd)


def watchdog_timeout(ttl: float, safety_margin: float) -> int:
    """The device timeout for a lease of ``ttl`` seconds: ``ttl - safety_margin`` (``-1``:
    ``ttl / 2``), in whole seconds, rounded down."""
    return int(ttl // 2) if safety_margin == -1 else int(ttl - safety_margin)


class LeaderWatchdog:
    """See the module docstring. ``ttl()`` is the TTL of the session the lock is bound to."""

    def __init__(self, config: WatchdogConfig, ttl: Callable[[], float],
                 io: DeviceIO | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.mode = config.mode
        self.device = config.device
        self.safety_margin = float(config.safety_margin)
        self.ttl = ttl
        self.io: DeviceIO = io or OsDeviceIO()
        self.clock = clock
        self.fd: int | None = None
        self.timeout: int | None = None  # the timeout set on the open device (None: unknown)
        self.by_write = False  # the device refused the ioctls: fed by writes
        self.failure: str | None = None  # the last arming failure, while not armed
        self._retry_at = 0.0
        self._backoff = _BACKOFF_FIRST
        self._late_logged = False

    # ------------------------------------------------------------------ read by others
    @property
    def armed(self) -> bool:
        return self.fd is not None

    @property
    def state(self) -> str:
        """``off``, ``armed``, ``failed`` (the last arming failed) or ``disarmed``."""
        if self.mode == "off":
            return "off"
        if self.armed:
            return "armed"
        return "failed" if self.failure is not None else "disarmed"

    def usable(self) -> bool:
        """Whether this member may take the leader lock as far as the watchdog is concerned:
        always unless ``required``; then when armed, or when the device is writable, the
        timeout makes sense and no failed arming is waiting out its backoff."""
        if self.mode != "required" or self.armed:
            return True
        if self.failure is not None and self.clock() < self._retry_at:
            return False
        return self._timing_problem() is None and os.access(self.device, os.W_OK)

    def _timing_problem(self) -> str | None:
        ttl = self.ttl()
        timeout = watchdog_timeout(ttl, self.safety_margin)
        if timeout < 1 or timeout <= ttl / 4:
            return (f"watchdog timeout {timeout}s (ttl {ttl:g} - safety_margin "
                    f"{self.safety_margin:g}) is too short for lease renewals every ttl/4")
        return None

    # ------------------------------------------------------------------ told by the loop
    def arm(self) -> bool:
        """Open and configure the device unless it is open (then re-set the timeout if the
        TTL changed). Returns False only in ``required`` mode when it is not armed."""
        if self.mode == "off":
            return True
        if self.armed:
            self._set_timeout()
            return True
        if self.failure is not None and self.clock() < self._retry_at:
            return self.mode != "required"
        problem = self._timing_problem()
        if problem is None:
            problem = self._open()
        if problem is None:
            if self.failure is not None:
                log.info("watchdog %s works again", self.device)
            self.failure, self._backoff = None, _BACKOFF_FIRST
            return True
        if problem != self.failure:
            how = "refusing the leader lock" if self.mode == "required" else "going on without it"
            log.warning("cannot arm the watchdog %s: %s; %s (retried with backoff)",
                        self.device, problem, how)
        self.failure = problem
        self._retry_at = self.clock() + self._backoff
        self._backoff = min(_BACKOFF_CAP, self._backoff * 2)
        return self.mode != "required"

    def _open(self) -> str | None:
        """Open, set the timeout, first keepalive; a description of the failure (closed)."""
        try:
            self.fd = self.io.open(self.device)
        except OSError as exc:
            return f"cannot open it: {exc.strerror or exc}"
        self.by_write, self.timeout = False, None
        problem = self._set_timeout()
        if problem is None:
            problem = self._feed()
        if problem is not None:
            self.disarm(quiet=True)
            return problem
        log.info("watchdog %s armed: timeout %s", self.device,
                 f"{self.timeout}s" if self.timeout is not None else "the device's own")
        return None

    def _set_timeout(self) -> str | None:
        fd = self.fd
        wanted = watchdog_timeout(self.ttl(), self.safety_margin)
        if fd is None or self.by_write or wanted == self.timeout:
            return None
        try:
            self.io.ioctl(fd, WDIOC_SETTIMEOUT, wanted)
            actual = self.io.ioctl(fd, WDIOC_GETTIMEOUT, 0)
        except OSError as exc:
            if exc.errno in _UNSUPPORTED:
                self.by_write = True
                log.warning("watchdog %s does not support ioctls (not a watchdog driver?): "
                            "feeding it by writes, its timeout cannot be set", self.device)
                return None
            return f"cannot set its timeout to {wanted}s: {exc.strerror or exc}"
        if actual > wanted:
            log.warning("watchdog %s took timeout %ds instead of %ds: the machine may reset "
                        "only after the leader key expired", self.device, actual, wanted)
        if actual < 1:
            return f"the device reports timeout {actual}s"
        self.timeout = actual
        self._warn_if_before_demotion(actual)
        return None

    def _warn_if_before_demotion(self, timeout: int) -> None:
        """Warn when the device fires before the agent's own fail-closed point (a leader cut
        off from the DCS stops PostgreSQL ``ttl - safety_margin_for(ttl)`` after its last
        renewal): a DCS outage would then reset the machine although the agent is healthy."""
        ttl = self.ttl()
        own = ttl - safety_margin_for(ttl)
        if timeout < own:
            log.warning("watchdog %s: timeout %ds (ttl %g - watchdog.safety_margin %g) is "
                        "shorter than pgha's own demotion point (%.1fs after a lease renewal): "
                        "a DCS outage longer than %ds resets this machine instead of demoting "
                        "PostgreSQL; set watchdog.safety_margin to %g or less to avoid it",
                        self.device, timeout, ttl, self.safety_margin, own, timeout,
                        ttl - math.ceil(own))

    def _feed(self) -> str | None:
        fd = self.fd
        if fd is None:
            return None
        try:
            if self.by_write:
                self.io.write(fd, b"1")
            else:
                try:
                    self.io.ioctl(fd, WDIOC_KEEPALIVE, 0)
                except OSError as exc:
                    if exc.errno not in _UNSUPPORTED:
                        raise
                    self.by_write = True
                    self.io.write(fd, b"1")
        except OSError as exc:
            return f"keepalive failed: {exc.strerror or exc}"
        return None

    def keepalive(self, sent: float) -> None:
        """After a successful lease keep-alive that was sent at ``sent`` (monotonic): feed the
        device when armed and ``sent`` is recent enough (see the module docstring)."""
        if self.fd is None:
            return
        slack = self.ttl() - (self.timeout if self.timeout is not None
                              else watchdog_timeout(self.ttl(), self.safety_margin))
        late = self.clock() - sent
        if late >= slack:
            if not self._late_logged:
                log.warning("lease renewal answered %.1fs after it was sent (>= %.1fs): not "
                            "feeding the watchdog on it", late, slack)
            self._late_logged = True
            return
        self._late_logged = False
        problem = self._feed()
        if problem is not None:
            log.error("watchdog %s: %s", self.device, problem)

    def follow(self, leader: bool) -> None:
        """After a decision cycle: armed while ``leader`` (holds the lock, PostgreSQL runs as
        primary, not paused), disarmed otherwise."""
        if leader:
            self.arm()
        elif self.armed:
            self.disarm()

    def disarm(self, quiet: bool = False) -> None:
        """The magic close: ``V``, then close (errors logged). No-op when not armed."""
        fd = self.fd
        if fd is None:
            return
        self.fd = None
        try:
            self.io.write(fd, b"V")
        except OSError as exc:
            log.error("watchdog %s: magic close failed: %s", self.device, exc)
        try:
            self.io.close(fd)
        except OSError as exc:
            log.error("watchdog %s: close failed: %s", self.device, exc)
        if not quiet:
            log.info("watchdog %s disarmed", self.device)
