"""The agent's memory of its recent decisions (``GET /decisions``, ``pgha why``).

:class:`DecisionLog` keeps, in memory and bounded (:data:`DEFAULT_SIZE` records, the oldest
dropped first), the decisions that changed something or refused to:

* a decision that ran an action beyond the leader's housekeeping (the caller says so:
  ``acted``), or whose reason code or role differs from the newest record's;
* every refusal of the free lock (:data:`pgha.core.decision.RACE_REFUSALS`).

A decision with the same reason code and message as the newest record is a repeat: it only
bumps that record's ``count`` and ``last_seen`` and replaces the inputs it was taken on
(standings, timeline, position, lag, leader) with the latest ones; it is not a new record.
Times are wall-clock epoch seconds taken by the agent (the core never reads a clock).
Records are replaced, never mutated, so a snapshot handed out stays as it was.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from pgha.core.decision import RACE_REFUSALS, Decision
from pgha.core.explain import Standing

DEFAULT_SIZE = 200


def iso(wall: float) -> str:
    """Epoch seconds as ISO 8601 in UTC, to the millisecond."""
    return datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class DecisionRecord:
    """One recorded decision and the inputs it was taken on (see the module docstring)."""

    time: float  # first seen (wall clock)
    last_seen: float
    count: int
    reason: str
    message: str
    actions: tuple[str, ...]
    role: str
    timeline: int | None
    position: int | None  # this member's WAL position
    lag: int | None  # bytes behind the last known leader position
    leader: str | None  # the leader key's holder in the view decided on
    standings: tuple[Standing, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"time": iso(self.time), "last_seen": iso(self.last_seen), "count": self.count,
                "reason": self.reason, "message": self.message, "actions": list(self.actions),
                "role": self.role, "timeline": self.timeline, "wal_position": self.position,
                "lag": self.lag, "leader": self.leader,
                "standings": [s.to_json() for s in self.standings]}

    def describe(self) -> str:
        """One line for the log: reason, message, and each standing's summary."""
        text = f"{self.reason}: {self.message}"
        if self.standings:
            text += "; standings: " + "; ".join(f"{s.name} {s.summary}"
                                                for s in self.standings)
        return text


class DecisionLog:
    """See the module docstring. Only the decision loop writes it."""

    def __init__(self, size: int = DEFAULT_SIZE) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        self._records: deque[DecisionRecord] = deque(maxlen=size)

    def note(self, decision: Decision, *, acted: bool, wall: float, role: str,
             timeline: int | None, position: int | None, lag: int | None,
             leader: str | None, standings: tuple[Standing, ...] = ()
             ) -> DecisionRecord | None:
        """Record ``decision`` when it is worth keeping; returns the new record, or None when
        the decision was a repeat (the newest record bumped) or not kept."""
        newest = self._records[-1] if self._records else None
        reason = decision.reason.value
        if newest is not None and (newest.reason, newest.message) == (reason, decision.message):
            self._records[-1] = replace(
                newest, last_seen=wall, count=newest.count + 1, timeline=timeline,
                position=position, lag=lag, leader=leader, standings=standings)
            return None
        changed = newest is None or (newest.reason, newest.role) != (reason, role)
        if not (acted or changed or decision.reason in RACE_REFUSALS):
            return None
        record = DecisionRecord(
            time=wall, last_seen=wall, count=1, reason=reason, message=decision.message,
            actions=tuple(type(a).__name__ for a in decision.actions), role=role,
            timeline=timeline, position=position, lag=lag, leader=leader,
            standings=standings)
        self._records.append(record)
        return record

    def records(self) -> tuple[DecisionRecord, ...]:
        """Every record, oldest first."""
        return tuple(self._records)

    def to_json(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The newest ``limit`` records (None: all) as JSON, oldest first."""
        records: Sequence[DecisionRecord] = self.records()
        if limit is not None:
            records = records[max(0, len(records) - limit):] if limit > 0 else ()
        return [r.to_json() for r in records]
