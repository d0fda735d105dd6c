"""Work that rides along with a decision every cycle (pure): the leader's ``status`` (WAL
position, slot positions), its synchronous replication plan and slot maintenance, and a
healthy replica's slot copies (:mod:`pgha.core.slots`).

Ordering: the status comes first (a failing later action must never leave
``maximum_lag_on_failover`` judged against a stale position), then synchronous replication,
then the slots.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from pgha.core.actions import Action, CopyLogicalSlots, PublishStatus
from pgha.core.decision import Decision, Reason
from pgha.core.decision import decision as _d
from pgha.core.decision import upstream_of as _upstream
from pgha.core.model import ClusterView, LocalState, Member, PgRole
from pgha.core.slots import SlotPlan, logical_to_copy, slot_plan, status_slots
from pgha.core.slots import sync_slots as slot_sync
from pgha.core.sync import plan as sync_plan


def leader_housekeeping(view: ClusterView, local: LocalState, now: float) -> list[Action]:
    """The leader's work every cycle, after what the decision is about: publish our WAL
    position first (a failing later action must never leave ``maximum_lag_on_failover``
    judged against a stale position), then synchronous replication (a running primary only:
    a member that promotes in this cycle has nothing observed to plan from yet, and
    :func:`pgha.core.sync.before_promote` already ran), then the replication slots."""
    failsafe = None
    if view.settings.failsafe_mode:
        wanted = {n: m.api_url for n, m in view.members.items() if m.api_url}
        if wanted != dict(view.failsafe or {}):
            failsafe = wanted
    plan = slot_plan(view, local, now, leader=True)
    actions: list[Action] = [leader_status(view, local, now, failsafe, plan)]
    if local.pg.running and local.pg.accepting and local.pg.role is PgRole.PRIMARY:
        actions += sync_plan(view, local).actions
    return actions + leader_slots(view, local, now, plan)


def leader_status(view: ClusterView, local: LocalState, now: float,
                   failsafe: Mapping[str, str] | None = None,
                   plan: SlotPlan | None = None) -> PublishStatus:
    """``plan``: the leader's :func:`slot_plan` when already computed (also below)."""
    slots, retain = status_slots(view, local, now, plan)
    return PublishStatus(failsafe, local.pg.wal_position, slots, retain)


def leader_slots(view: ClusterView, local: LocalState, now: float,
                 plan: SlotPlan | None = None) -> list[Action]:
    """The leader's slot work (:mod:`pgha.core.slots`; nothing dropped in pause)."""
    if local.pg.slots is None:
        return []
    plan = plan if plan is not None else slot_plan(view, local, now, leader=True)
    work = slot_sync(plan, local.pg.slots, primary=True, paused=view.settings.pause)
    return [work] if work is not None else []


def replica_slots(view: ClusterView, local: LocalState, now: float,
                   leader: Member) -> Decision | tuple[Action, ...]:
    """A healthy replica's slot housekeeping: missing logical copies are copied from a
    running leader first (a restart, so its own decision); else the copies are created,
    dropped and advanced (:mod:`pgha.core.slots`)."""
    if local.pg.slots is None or view.settings.pause:
        return ()
    plan = slot_plan(view, local, now, leader=False)
    missing = logical_to_copy(view, plan, local.pg.slots)
    if missing and leader.is_running_primary and leader.conn_url:
        names = ", ".join(s.name for s in missing)
        return _d(Reason.COPY_LOGICAL_SLOTS,
                  f"copying logical slot(s) {names} from {leader.name} (restarts PostgreSQL)",
                  CopyLogicalSlots(_upstream(leader), missing))
    work = slot_sync(plan, local.pg.slots, primary=False, paused=False)
    return (work,) if work is not None else ()


def failsafe_replica_slots(view: ClusterView, local: LocalState, now: float) -> list[Action]:
    """While the DCS is down, a replica that a failsafe primary asked keeps advancing its
    copies to the positions that primary sent (``failsafe_slots``); nothing is dropped or
    copied from a view that may be stale."""
    if not local.failsafe_primary or not local.failsafe_slots or local.pg.slots is None:
        return []
    plan = slot_plan(replace(view, status_slots=local.failsafe_slots), local, now, leader=False)
    work = slot_sync(plan, local.pg.slots, primary=False, paused=True)
    return [work] if work is not None else []
