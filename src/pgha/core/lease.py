"""Lease rules that must hold even when ``decide`` cannot run (DESIGN.md safety rule 2).

Pure functions over monotonic timestamps given by the caller: the keep-alive task of the agent
asks them whether to renew the lease, whether the decision loop is overdue, and what the
fail-closed backstop must do when it is.
"""

from __future__ import annotations

from pgha.core.actions import StopMode, StopPostgres
from pgha.core.decision import Decision, Reason, decision
from pgha.core.model import HaSettings, PgRole, PgState, safety_margin_for


def confirmed_until(lease_deadline: float | None, failsafe_deadline: float | None,
                    ) -> float | None:
    """The later of the lease deadline and the failsafe deadline (None: neither is known)."""
    known = [d for d in (lease_deadline, failsafe_deadline) if d is not None]
    return max(known) if known else None


def loop_is_alive(settings: HaSettings, heartbeat: float, busy_until: float,
                  now: float) -> bool:
    """The decision loop completed a cycle recently enough to renew the lease on its behalf:
    within one sleep plus one cycle whose DCS read and PostgreSQL probe both ran into their
    timeouts (plus the peer fetch), or it is inside a long action that announced itself
    (``busy_until``)."""
    limit = max(settings.ttl / 2, settings.loop_wait + 2 * settings.retry_timeout + 2.0)
    return now - heartbeat < limit or now < busy_until


def decision_overdue(until: float | None, decided_at: float, now: float) -> bool:
    """The lease (and any failsafe confirmation) ran out at ``until`` and the decision loop
    has not decided since: ``decided_at``, the ``now`` its last ``decide`` ran with, is before
    ``until``. Only a decision taken at or after ``until`` saw the lease as run out (and chose
    the demotion); one taken earlier, however shortly before, did not, and the cycle after it
    may be stuck before its own ``decide``. Then the loop cannot demote the primary itself."""
    if until is None or now < until:
        return False  # no lease to be late on (decide demotes such a primary), or not late
    return decided_at < until


def _writable(pg: PgState) -> bool:
    return pg.running and pg.role is PgRole.PRIMARY


def backstop(pg: PgState, paused: bool, until: float | None, now: float) -> Decision | None:
    """The verdict when the decision loop is failing or stuck: a writable primary whose lease
    is not confirmed any more (``until`` passed or unknown) is stopped at once (immediate
    mode), unless the cluster is paused. None: nothing to do."""
    if until is not None and now < until:
        return None
    if paused or not _writable(pg):
        return None
    return decision(Reason.LEASE_BACKSTOP,
                    "decision loop failing and lease unconfirmed: stopping PostgreSQL",
                    StopPostgres(StopMode.IMMEDIATE))


def watchdog_armed(pg: PgState, holds_lock: bool, until: float | None, paused: bool,
                   stopping: bool, now: float) -> bool:
    """Whether the watchdog device must be armed: PostgreSQL runs as a primary that we lead,
    the cluster is not paused and the agent is not stopping. We lead while we hold the lock,
    and also while the lease (or failsafe confirmation) ending at ``until`` is still valid
    although the DCS could not be read: such a primary keeps taking writes until then, so if
    the agent dies meanwhile only the device stops it before another member may promote."""
    leads = holds_lock or (until is not None and now < until)
    return leads and _writable(pg) and not paused and not stopping


def dcs_budget(settings: HaSettings, pg: PgState, until: float | None, now: float) -> float:
    """Seconds a DCS call of the decision loop may take: ``retry_timeout``, but for a writable
    primary no longer than its lease is confirmed, so a hanging store never keeps the loop
    from demoting it in time (at least 50 ms)."""
    budget = settings.retry_timeout
    if until is not None and _writable(pg):
        budget = min(budget, max(0.05, until - now))
    return budget


def keepalive_interval(ttl: float, retry_timeout: float) -> float:
    """Seconds between keep-alives of a session granted for ``ttl``:
    ``min(ttl/4, max(m/2, L - R - min(m/4, 0.5)))`` with ``m`` the safety margin,
    ``L = ttl - m`` the lease a success confirms and ``R = retry_timeout`` (at least 0.25 s).

    Why it is safe (DESIGN.md rule 2, the lease counted from the SENT time): after a success
    sent at ``t0`` the lease runs to ``t0 + L``; the next attempt is sent at ``t0 + I`` and
    answers, or is abandoned, by ``t0 + I + R``. ``I <= L - R - min(m/4, 0.5)`` lets it finish
    with slack before the deadline; ``I <= ttl/4`` matches what the watchdog timeout
    (``ttl - m``) and the simulator assume and, when ``retry_timeout`` obeys
    ``R <= ttl/2 - m`` (ttl 20, R up to 5), also lets one attempt fail and the next still
    confirm in time (``2I + R <= L``). ``m/2`` is the floor for short TTLs where the other
    bounds collapse. Only the lease's renewal rate depends on this: the deadline itself, the
    backstop and the fail-closed demotion are unchanged. ttl 20 / R 3 gives 5 s (12 per
    minute; it was ``min(ttl/4, m/2)`` = 2.5 s before)."""
    margin = safety_margin_for(ttl)
    lease = ttl - margin
    interval = min(ttl / 4, max(margin / 2, lease - retry_timeout - min(margin / 4, 0.5)))
    return max(0.25, interval)
