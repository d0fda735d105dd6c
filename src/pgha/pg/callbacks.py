"""User callbacks (``postgresql.callbacks``): ``on_start``, ``on_stop``, ``on_restart``,
``on_reload`` and ``on_role_change``.

Each configured command string is split with :func:`shlex.split` and run as
``<command...> <action> <role> <scope>``, for example
``/etc/pgha/vip.sh on_role_change primary batman``; role is one of :data:`ROLES`.

Contract of :class:`CallbackRunner`:

* it is an async context manager, entered inside the agent's TaskGroup (or any running loop);
  it owns one background task that runs queued callbacks **one at a time, in the order they
  were fired**;
* :meth:`CallbackRunner.fire` never blocks and never raises: it queues the callback and returns
  whether it was queued (False: no command configured for that action, bad action/role, or the
  runner is not running);
* **supersede rule**: a callback that is queued and not started yet is replaced by a newer one
  for the same action (the newer one joins the end of the queue, so the queue keeps the order
  of the latest events). A callback already running is never interrupted by a newer one; it
  finishes under its own timeout. (Patroni kills the running one instead; letting it finish
  means a VIP script is never cut between ``ip addr add`` and its ARP announcement.)
* every callback runs in its own session (process group) with the agent's environment, under
  ``timeout`` seconds; on timeout its whole process group is killed. Its stdout and stderr are
  logged line by line as ``callback on_role_change: <line>`` (INFO / WARNING), and its exit
  status is logged;
* on exit the runner stops accepting callbacks, keeps running the queue for at most
  ``stop_grace`` seconds (so an ``on_stop`` fired during shutdown still runs), then kills the
  running callback's process group and drops (and logs) what is still queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shlex
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType

from pgha.pg.cmd import kill_group

log = logging.getLogger("pgha.callbacks")

ACTIONS = ("on_start", "on_stop", "on_restart", "on_reload", "on_role_change")
ROLES = ("primary", "replica", "standby_leader", "demoted")
DEFAULT_TIMEOUT = 60.0
DEFAULT_STOP_GRACE = 5.0
_KILL_WAIT = 5.0


@dataclass(frozen=True)
class _Job:
    action: str
    argv: tuple[str, ...]


class CallbackRunner:
    """Runs the callbacks of ``commands`` (action -> command string or None) for ``scope``."""

    def __init__(self, commands: Mapping[str, str | None], scope: str, *,
                 timeout: float = DEFAULT_TIMEOUT,
                 stop_grace: float = DEFAULT_STOP_GRACE) -> None:
        self._commands: dict[str, str] = {}
        self.update(commands)
        self.scope = scope
        self.timeout = timeout
        self.stop_grace = stop_grace
        self._queue: deque[_Job] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._running: _Job | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    def update(self, commands: Mapping[str, str | None]) -> None:
        """Use new command strings (after a configuration reload); queued callbacks keep the
        command they were queued with. Unknown action names are ignored with a warning."""
        unknown = [a for a in commands if a not in ACTIONS]
        if unknown:
            log.warning("ignoring unknown callbacks: %s", ", ".join(unknown))
        self._commands = {a: c for a, c in commands.items()
                          if a in ACTIONS and c is not None and c.strip()}

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> CallbackRunner:
        self._closing = False
        self._task = asyncio.get_running_loop().create_task(self._worker(), name="callbacks")
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        self._closing = True
        self._wake.set()
        task, self._task = self._task, None
        if task is None:
            return
        try:
            done, _ = await asyncio.wait({task}, timeout=self.stop_grace)
        except asyncio.CancelledError:
            task.cancel()  # we are being cancelled: kill the callback, then go on cancelling
            await asyncio.wait({task}, timeout=_KILL_WAIT + 1)
            raise
        if not done:
            task.cancel()  # kills the running callback's process group (see _run)
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._queue:
            log.warning("callbacks not run at shutdown: %s",
                        ", ".join(" ".join(j.argv[-3:-1]) for j in self._queue))
            self._queue.clear()
        self._idle.set()

    # ------------------------------------------------------------------ API
    def fire(self, action: str, role: str) -> bool:
        """Queue callback ``action`` for ``role``; see the module doc for order and the
        supersede rule. Never raises; True when queued."""
        if self._task is None or self._closing:
            if action in self._commands:
                log.warning("callback %s %s not run: the callback runner is not running",
                            action, role)
            return False
        if action not in ACTIONS or role not in ROLES:
            log.error("not running callback %r with role %r: unknown action or role",
                      action, role)
            return False
        command = self._commands.get(action)
        if command is None:
            return False
        try:
            argv = (*shlex.split(command), action, role, self.scope)
        except ValueError as exc:
            log.error("callback %s: cannot parse command %r: %s", action, command, exc)
            return False
        superseded = [j for j in self._queue if j.action == action]
        for job in superseded:
            self._queue.remove(job)
            log.info("callback %s %s superseded by %s %s before it started",
                     action, job.argv[-2], action, role)
        self._queue.append(_Job(action, argv))
        self._idle.clear()
        self._wake.set()
        return True

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing running."""
        return not self._queue and self._running is None

    async def wait_idle(self) -> None:
        """Return once nothing is queued or running (for tests and orderly shutdowns)."""
        await self._idle.wait()

    # ------------------------------------------------------------------ worker
    async def _worker(self) -> None:
        while True:
            if not self._queue:
                self._idle.set()
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            job = self._queue.popleft()
            self._running = job
            try:
                await self._run(job)
            except Exception:  # a callback must never take the agent down
                log.exception("callback %s failed", job.action)
            finally:
                self._running = None

    async def _run(self, job: _Job) -> None:
        log.info("running callback: %s", shlex.join(job.argv))
        try:
            proc = await asyncio.create_subprocess_exec(
                *job.argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, start_new_session=True)
        except OSError as exc:
            log.error("callback %s: cannot start %s: %s", job.action, job.argv[0], exc)
            return
        assert proc.stdout is not None and proc.stderr is not None
        try:
            async with asyncio.timeout(self.timeout):
                await asyncio.gather(self._pipe(job.action, proc.stdout, logging.INFO),
                                     self._pipe(job.action, proc.stderr, logging.WARNING))
                code = await proc.wait()
        except TimeoutError:
            log.error("callback %s timed out after %gs: killing it", job.action, self.timeout)
            await kill_group(proc, _KILL_WAIT)
            return
        except asyncio.CancelledError:
            log.warning("callback %s interrupted: killing it", job.action)
            await asyncio.shield(kill_group(proc, _KILL_WAIT))
            raise
        if code == 0:
            log.info("callback %s finished", job.action)
        else:
            log.warning("callback %s exited with status %s", job.action, code)

    @staticmethod
    async def _pipe(action: str, stream: asyncio.StreamReader, level: int) -> None:
        while True:
            try:
                line = await stream.readline()
            except ValueError:  # a line longer than the stream limit: take what is there
                line = await stream.read(65536)
            if not line:
                return
            log.log(level, "callback %s: %s", action, line.decode(errors="replace").rstrip())


def lifecycle_callbacks(before: tuple[bool, str | None], after: tuple[bool, str | None],
                        last_role: str | None, restarted: bool) -> list[tuple[str, str]]:
    """The callbacks a change of PostgreSQL's ``(running, role)`` from ``before`` to ``after``
    calls for (pure). ``last_role`` is the role it last ran in (across stops); ``restarted``
    that an operator restart ran this cycle.

    A restart: ``on_restart``. A start in the role it last ran in: ``on_start``; in another
    role (a former primary back as replica, a replica started to be promoted is not one:
    it starts as replica): ``on_role_change``. A stop (clean or crash): ``on_stop`` with the
    role it had. A running server changing role (promotion): ``on_role_change``."""
    (was_running, old_role), (running, role) = before, after
    if restarted and running and role is not None:
        return [("on_restart", role)]
    if running and role is not None and not was_running:
        if last_role is not None and last_role != role:
            return [("on_role_change", role)]
        return [("on_start", role)]
    if was_running and not running and old_role is not None:
        return [("on_stop", old_role)]
    if running and was_running and role is not None and old_role is not None \
            and role != old_role:
        return [("on_role_change", role)]
    return []
