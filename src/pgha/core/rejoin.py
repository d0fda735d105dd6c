"""The rejoin plan: what to do with a stopped former primary's data before it follows (pure).

The rejoin procedure (:mod:`pgha.pg.rejoin`) observes the data step by step and asks
:func:`rejoin_plan` after each observation that needs a choice; the answer is one of

* ``FOLLOW``: the data is a prefix of the leader's history: start it as a replica as is;
* ``REWIND``: run pg_rewind against the leader (``use_pg_rewind``); if that fails, ask again
  with :attr:`RejoinReason.REWIND_FAILED`;
* ``RECLONE``: wipe the data directory and clone it from the leader;
* ``WAIT_FOR_OPERATOR``: change nothing and leave PostgreSQL stopped; the message says why and
  what the operator can do. The agent retries the rejoin with capped backoff, so a transient
  cause (an unreadable pg_controldata, a crash recovery still running) clears by itself.

DESIGN.md safety rules 4 and 9: diverged data, or data whose divergence is unknown, never
follows as is; data is wiped only with the operator's consent: when it is empty, when it
diverged and ``remove_data_directory_on_diverged_timelines`` is set (pg_rewind not allowed), or
when pg_rewind (or the crash recovery that must precede it) failed and
``remove_data_directory_on_rewind_failure`` is set. An unknown divergence or an incomplete crash
recovery is never a reason to wipe.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pgha.core.model import DataState


class RejoinStep(StrEnum):
    FOLLOW = "follow"
    REWIND = "rewind"
    RECLONE = "reclone"
    WAIT_FOR_OPERATOR = "wait_for_operator"


class RejoinReason(StrEnum):
    """What the rejoin procedure observed (the plan's reason code)."""

    DATA_EMPTY = "data_empty"  # nothing to keep: clone
    DATA_INVALID = "data_invalid"  # not a readable cluster: an operator must look
    CRASH_RECOVERY_FAILED = "crash_recovery_failed"  # single-user crash recovery failed
    CRASH_RECOVERY_INCOMPLETE = "crash_recovery_incomplete"  # did not finish, or could not run
    NOT_DIVERGED = "not_diverged"  # a prefix of the leader's history
    DIVERGED = "diverged"  # left the leader's lineage
    DIVERGENCE_UNKNOWN = "divergence_unknown"  # not decidable: treated as diverged
    REWIND_FAILED = "rewind_failed"  # pg_rewind ran and failed


@dataclass(frozen=True)
class RejoinPlan:
    """The next step, the observation that led to it, and why (for the log)."""

    step: RejoinStep
    reason: RejoinReason
    message: str
    confirm_leader_first: bool = False
    """RECLONE before the leader was contacted: make sure it answers before wiping, so an
    unreachable leader never leaves this member without data."""


def data_reason(state: DataState) -> RejoinReason | None:
    """The plan's reason for a data directory that is not a valid cluster; None when it is
    one (crash recovery and the divergence check come next)."""
    if state is DataState.EMPTY:
        return RejoinReason.DATA_EMPTY
    if state is DataState.INVALID:
        return RejoinReason.DATA_INVALID
    return None


def divergence_reason(verdict: bool | None) -> RejoinReason:
    """The plan's reason for a :func:`pgha.core.timeline.diverged` verdict (None: unknown)."""
    if verdict is None:
        return RejoinReason.DIVERGENCE_UNKNOWN
    return RejoinReason.DIVERGED if verdict else RejoinReason.NOT_DIVERGED


def rejoin_plan(reason: RejoinReason, *, use_pg_rewind: bool, remove_on_rewind_failure: bool,
                remove_on_diverged: bool = False) -> RejoinPlan:
    """The step for ``reason`` under ``use_pg_rewind``,
    ``remove_data_directory_on_rewind_failure`` (``remove_on_rewind_failure``) and
    ``remove_data_directory_on_diverged_timelines`` (``remove_on_diverged``)."""
    match reason:
        case RejoinReason.DATA_EMPTY:
            return RejoinPlan(RejoinStep.RECLONE, reason, "data directory is empty")
        case RejoinReason.DATA_INVALID:
            return _wait(reason, "data directory is not a valid cluster; not touching it "
                         "(fix it, or run `pgha reinit` to re-clone)")
        case RejoinReason.CRASH_RECOVERY_FAILED:
            # handled like data that pg_rewind could not repair
            if not remove_on_rewind_failure:
                return _wait(reason, "crash recovery failed; not re-cloning "
                             "(remove_data_directory_on_rewind_failure is off; "
                             "`pgha reinit` re-clones)")
            return RejoinPlan(RejoinStep.RECLONE, reason, "crash recovery failed",
                              confirm_leader_first=True)
        case RejoinReason.CRASH_RECOVERY_INCOMPLETE:
            return _wait(reason, "crash recovery did not complete; will try again")
        case RejoinReason.NOT_DIVERGED:
            return RejoinPlan(RejoinStep.FOLLOW, reason, "can follow")
        case RejoinReason.DIVERGED | RejoinReason.DIVERGENCE_UNKNOWN:
            known = reason is RejoinReason.DIVERGED
            why = "diverged from the leader" if known else "divergence unknown"
            if use_pg_rewind:
                return RejoinPlan(RejoinStep.REWIND, reason, why)
            if known and remove_on_diverged:
                return RejoinPlan(RejoinStep.RECLONE, reason, f"{why}, use_pg_rewind is off "
                                  "and remove_data_directory_on_diverged_timelines is on")
            if not known:
                return _wait(reason, f"{why} and use_pg_rewind is off; will check again")
            return _wait(reason, f"{why}; not starting it: set use_pg_rewind or "
                         "remove_data_directory_on_diverged_timelines, or run `pgha reinit`")
        case RejoinReason.REWIND_FAILED:
            if remove_on_rewind_failure:
                return RejoinPlan(RejoinStep.RECLONE, reason, "pg_rewind failed")
            return _wait(reason, "pg_rewind failed and remove_data_directory_on_rewind_failure "
                         "is off (`pgha reinit` re-clones)")


def _wait(reason: RejoinReason, why: str) -> RejoinPlan:
    return RejoinPlan(RejoinStep.WAIT_FOR_OPERATOR, reason, why)
