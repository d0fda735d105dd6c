"""Capped exponential backoff for actions that keep failing (DESIGN.md safety rule 9).

The core decides the same action again on every cycle while its cause persists (an empty data
directory is cloned, a stopped replica is started, a diverged former primary is rejoined). When
that action fails for a reason that does not go away by itself (the leader's pg_hba refuses us,
a certificate is missing, the data needs an operator), re-running it on every cycle would hammer
the leader and fill the log. :class:`RetryGate` spaces the attempts.

Contract:

* Gated actions: :data:`GATED` (clone, rejoin, start, and the copy of logical slots from the
  leader, which fails for as long as the leader's slot needs WAL older than this replica
  holds; not the operator's restart and re-initialise, which run once per request and report
  their outcome). Each attempt is keyed by the action's kind and its target (the upstream or
  leader member), so a new leader is tried at once, whatever the backoff against the previous
  one.
* After the n-th consecutive failure of a key the next attempt is allowed ``base * 2**(n-1)``
  seconds later, at most ``cap``. A success clears the key.
* A key the core no longer decides (:meth:`RetryGate.forget_except`) is cleared: its failure is
  no longer the member's state.
* :meth:`RetryGate.failure` is the most recent failure still pending, for ``GET /patroni``, the
  member key (``pgha list``) and the metrics; its ``error`` is the failing action's last error
  line as logged by the layer that ran it (:class:`ErrorCapture`).

Timestamps come from the injected :class:`~pgha.agent.clock.Clock`; nothing here does IO.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType

from pgha.agent.clock import Clock
from pgha.core.actions import Action, CloneReplica, CopyLogicalSlots, Rejoin, StartPostgres
from pgha.core.status import ActionFailure

GATED: dict[type, str] = {
    CloneReplica: "clone",
    Rejoin: "rejoin",
    StartPostgres: "start",
    CopyLogicalSlots: "copy_slots",
}
"""Action type -> the name used in logs, ``GET /patroni`` and the metrics' ``action`` label."""

_Key = tuple[str, str]


def _key(action: Action) -> _Key | None:
    kind = GATED.get(type(action))
    if kind is None:
        return None
    match action:
        case CloneReplica(source=source):
            return kind, source.name if source is not None else ""
        case Rejoin(leader=leader):
            return kind, leader.name
        case StartPostgres(upstream=upstream):
            return kind, upstream.name if upstream is not None else ""
        case CopyLogicalSlots(source=source):
            return kind, source.name
    return kind, ""


@dataclass
class _Record:
    failures: int
    first_failed_at: float  # wall
    last_error: str
    retry_at: float  # monotonic
    retry_at_wall: float


class RetryGate:
    """Backoff per (action kind, target); see the module docstring."""

    def __init__(self, clock: Clock, base: float = 1.0, cap: float = 60.0) -> None:
        self.clock = clock
        self.base = base
        self.cap = cap
        self._records: dict[_Key, _Record] = {}
        self._latest: _Key | None = None

    @staticmethod
    def kind(action: Action) -> str | None:
        """The gated kind of ``action`` (``"clone"``, ...), None when it is not gated."""
        return GATED.get(type(action))

    def wait_left(self, action: Action) -> float:
        """Seconds until ``action`` may run again; 0 when it may run now."""
        key = _key(action)
        record = self._records.get(key) if key is not None else None
        if record is None:
            return 0.0
        return max(0.0, record.retry_at - self.clock.monotonic())

    def record(self, action: Action, ok: bool, error: str = "") -> float | None:
        """Count the outcome of an attempt of a gated ``action`` (ignored otherwise). Returns
        the seconds until the next attempt after a failure, None after a success."""
        key = _key(action)
        if key is None:
            return None
        if ok:
            self._records.pop(key, None)
            return None
        previous = self._records.get(key)
        failures = previous.failures + 1 if previous is not None else 1
        delay = float(min(self.cap, self.base * 2.0 ** (failures - 1)))
        wall = self.clock.wall()
        self._records[key] = _Record(
            failures=failures,
            first_failed_at=previous.first_failed_at if previous is not None else wall,
            last_error=error or "failed", retry_at=self.clock.monotonic() + delay,
            retry_at_wall=wall + delay)
        self._latest = key
        return delay

    def forget_except(self, actions: Sequence[Action]) -> None:
        """Drop the records of keys none of ``actions`` (this cycle's decision) has."""
        keep = {k for k in map(_key, actions) if k is not None}
        for key in [k for k in self._records if k not in keep]:
            del self._records[key]

    def failure(self) -> ActionFailure | None:
        """The most recently failed key still pending (else any pending one), or None."""
        key = self._latest if self._latest in self._records else next(iter(self._records), None)
        if key is None:
            return None
        r = self._records[key]
        return ActionFailure(action=key[0], target=key[1], error=r.last_error,
                             failures=r.failures, since=r.first_failed_at,
                             retry_at=r.retry_at_wall)

    def failing_kinds(self) -> set[str]:
        """The kinds with a pending failure (for the ``pgha_action_failing`` gauge)."""
        return {kind for kind, _ in self._records}


class ErrorCapture(logging.Handler):
    """``with ErrorCapture() as cap: ...`` remembers the last ERROR (else WARNING) line logged
    under ``pgha`` while the block runs: the cause of a failed action in the words of the layer
    that met it (``pg_basebackup: exit 1: FATAL: ...``)."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.error = ""
        self.warning = ""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # a malformed log call must not break the action
            return
        if record.levelno >= logging.ERROR:
            self.error = text
        else:
            self.warning = text

    @property
    def last(self) -> str:
        return self.error or self.warning

    def __enter__(self) -> ErrorCapture:
        logging.getLogger("pgha").addHandler(self)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        logging.getLogger("pgha").removeHandler(self)
