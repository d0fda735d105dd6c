"""Timeline divergence rule (pure: no IO, no clock).

A timeline history (the leader's ``<timeline>.history`` file, or the DCS ``history`` key) is a
sequence of ``(timeline, switch_lsn)`` pairs: timeline ``timeline`` ended at ``switch_lsn``, and its
successor in the leader's lineage starts at exactly that LSN. WAL of ``timeline`` *before*
``switch_lsn`` is shared with the leader; any WAL byte of ``timeline`` at or after ``switch_lsn``
was never part of the leader's history.

``local_lsn`` must be a position *inside the last WAL record the local data contains* — in practice
the START of that record. For a cleanly stopped (or single-user crash-recovered) former primary
the last record is its shutdown checkpoint, whose start pg_controldata prints as
``Latest checkpoint location``. The switch point is the END of the last record the promoted
replica replayed, so in the clean-switch case (old primary stopped fast, its shutdown checkpoint
streamed and replayed, then the replica promoted) ``checkpoint start < switch_lsn`` and the old
primary may follow. If the old primary wrote anything the new leader never replayed, its last
record starts at or after the switch point. Because the two WAL streams are byte-identical before
the switch point and the switch point is a record boundary, a record starting before the switch
point also ends at or before it, so ``local_lsn < switch_lsn`` is exact, not a heuristic.

For a stopped replica the caller passes the later of its latest checkpoint start and
``minRecoveryPoint - 1`` (the last byte its data pages may reflect).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def diverged(local_timeline: int, local_lsn: int, leader_timeline: int,
             history: Sequence[tuple[int, int]]) -> bool | None:
    """Whether local data at ``(local_timeline, local_lsn)`` left the leader's lineage.

    ``history`` is the leader's list of ``(timeline, switch_lsn)`` ancestors of
    ``leader_timeline`` (empty for timeline 1).

    * True: the local data must be rewound or re-cloned before it streams from the leader:
      it is on a timeline after the leader's, on a timeline that is not an ancestor of the
      leader's, or it went to or past the point where the leader's lineage left its timeline.
    * False: the local data is a prefix of the leader's WAL history; it can follow with
      ``recovery_target_timeline = 'latest'``.
    * None: not decidable (invalid numbers, or the leader is on a later timeline but its
      history is empty/missing). Callers treat None like True.
    """
    if local_timeline < 1 or leader_timeline < 1 or local_lsn < 0:
        return None
    if local_timeline > leader_timeline:
        return True
    if local_timeline == leader_timeline:
        return False
    switch_points = [lsn for timeline, lsn in history if timeline == local_timeline]
    if not switch_points:
        if not history:
            return None
        # The leader's lineage is complete in its history file: our timeline is not in it.
        return True
    return local_lsn >= min(switch_points)


def trim_history(entries: Sequence[T], keep: int) -> list[T]:
    """The last ``keep`` of ``entries`` (the DCS ``history`` list, oldest first), as the
    ``max_timelines_history`` setting asks; ``keep <= 0`` keeps them all."""
    return list(entries[-keep:]) if keep > 0 else list(entries)
