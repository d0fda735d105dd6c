"""Replication slots of one member: which should exist, where copies move to, what the leader
publishes (pure).

Rules (Patroni's, PostgreSQL 11 and later):

* **Member slots.** Every member that streams gets a physical slot named after it
  (:func:`~pgha.core.actions.slot_name`) on its upstream. With ``member_slots_ttl > 0`` every
  member that may become primary keeps the slots of all other streaming members (so WAL a
  replica needs survives a failover), plus those of members that left less than
  ``member_slots_ttl`` ago (the leader tracks them and publishes them as ``retain_slots``); a
  ``nofailover`` member keeps only the slots of members that stream from it
  (``replicatefrom``). With ``member_slots_ttl: 0`` the leader keeps slots of the members that
  stream from it and a replica those of members cascading from it. ``nostream`` members get
  none, anywhere.
* **Permanent slots** (``slots`` in the dynamic configuration; ``name: null`` or ``0`` is a
  physical slot; ``{type: logical, database, plugin}`` a logical one) exist on the leader and
  on every member that may become primary, except a ``nofailover`` member. A member that
  does not stream from the leader's WAL directly or through streaming parents (``nostream``
  somewhere on its path) keeps only the physical ones: without hot standby feedback a
  logical copy is unsafe. A permanent physical slot named after this member is skipped. A
  slot whose name is a member's slot name is that member's slot.
* **Ignored slots** (``ignore_slots``: rules of ``name``/``type``/``database``/``plugin``, a
  slot matching every field a rule sets is ignored) are never created nor dropped.
* Anything else found on the server, inactive, is dropped (not in pause); a wanted slot found
  with another type/database/plugin, or ``lost``, is dropped and created again.
* **Copies.** Replicas advance their copies of permanent and member slots to the positions
  the leader publishes in ``status`` (for a cascading member's slot, to that member's own
  position when later). Logical slots cannot be created on a standby before PostgreSQL 17:
  missing logical copies are copied from the leader (:class:`CopyLogicalSlots`) once the
  leader has them. The leader advances only the slots of members that stream from someone
  else (their slot on the leader is otherwise never used).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pgha.core.actions import SlotSpec, SyncSlots, slot_name
from pgha.core.model import ClusterView, LocalState, Member, ObservedSlot, PgState, Tags

PHYSICAL, LOGICAL = "physical", "logical"
SLOT_NAME = re.compile(r"^[a-z0-9_]{1,63}$")
SLOT_HEADROOM = 2  # max_replication_slots beyond the wanted slots (a clone's temporary slot)
DEFAULT_MAX_SLOTS = 10


@dataclass(frozen=True)
class IgnoreRule:
    """One ``ignore_slots`` entry: a slot is ignored when every field set here equals it."""

    name: str | None = None
    type: str | None = None
    database: str | None = None
    plugin: str | None = None

    def matches(self, slot: ObservedSlot | SlotSpec) -> bool:
        return all(want is None or want == have for want, have in (
            (self.name, slot.name), (self.type, slot.type),
            (self.database, slot.database), (self.plugin, slot.plugin)))


def permanent_slot(name: str, value: Any) -> SlotSpec | str:
    """The slot a ``slots`` entry defines, or why it is invalid (one line, starting with the
    entry's path below ``slots``). ``null``/``0``/``{}`` is physical; without ``type``, an
    entry naming both ``database`` and ``plugin`` is logical."""
    where = str(name)
    if not isinstance(name, str) or not SLOT_NAME.match(name):
        return (f"{where}: a slot name may only contain lower-case letters, digits and "
                "underscores (at most 63)")
    if value is None or value == 0 or value == {}:
        return SlotSpec(name)
    if not isinstance(value, Mapping):
        return f"{where}: expected a mapping such as {{type: physical}}, got {value!r}"
    kind = value.get("type")
    database, plugin = value.get("database"), value.get("plugin")
    if kind is None:
        kind = LOGICAL if database and plugin else PHYSICAL
    if kind == PHYSICAL:
        return SlotSpec(name)
    if kind != LOGICAL:
        return f"{where}.type: must be physical or logical, got {kind!r}"
    for key, text in (("database", database), ("plugin", plugin)):
        if not isinstance(text, str) or not text:
            return f"{where}.{key}: a logical slot needs its {key}"
    return SlotSpec(name, LOGICAL, database, plugin)


def slot_cluster_type(value: Any) -> str | None:
    """The entry's ``cluster_type`` (``primary``/``standby``), None when unset."""
    kind = value.get("cluster_type") if isinstance(value, Mapping) else None
    return kind if isinstance(kind, str) else None


def permanent_slots(config: Mapping[str, Any] | None) -> dict[str, SlotSpec]:
    """The valid permanent slots of the DCS ``config`` (invalid entries left out: the
    observer logs them) for the kind of cluster it configures: in a primary cluster those not
    marked ``cluster_type: standby``; in a standby cluster (a ``standby_cluster`` section)
    the physical ones not marked ``cluster_type: primary`` (a standby cluster has no logical
    slots, as in Patroni)."""
    raw = (config or {}).get("slots")
    if not isinstance(raw, Mapping):
        return {}
    standby = bool((config or {}).get("standby_cluster"))
    out: dict[str, SlotSpec] = {}
    for name, value in raw.items():
        spec = permanent_slot(name, value)
        if not isinstance(spec, SlotSpec):
            continue
        kind = slot_cluster_type(value)
        if (standby and spec.type == PHYSICAL and kind != "primary") \
                or (not standby and kind != "standby"):
            out[spec.name] = spec
    return out


def ignore_rule(index: int, value: Any) -> IgnoreRule | str:
    """An ``ignore_slots`` entry, or why it is invalid (one line, starting with the entry's
    path below ``ignore_slots``: ``[<index>]``)."""
    where = f"[{index}]"
    if not isinstance(value, Mapping):
        return f"{where}: expected a mapping of name/type/database/plugin, got {value!r}"
    unknown = sorted(str(k) for k in value if k not in ("name", "type", "database", "plugin"))
    if unknown:
        return f"{where}.{unknown[0]}: unknown field (name, type, database, plugin)"
    fields: dict[str, str | None] = {}
    for key in ("name", "type", "database", "plugin"):
        item = value.get(key)
        if item is not None and not isinstance(item, str):
            return f"{where}.{key}: expected a string, got {item!r}"
        fields[key] = item
    if fields["type"] not in (None, PHYSICAL, LOGICAL):
        return f"{where}.type: must be physical or logical, got {fields['type']!r}"
    if not any(fields.values()):
        return f"{where}: an empty rule would ignore every slot; name at least one field"
    return IgnoreRule(**fields)


def ignore_rules(config: Mapping[str, Any] | None) -> tuple[IgnoreRule, ...]:
    """The valid ``ignore_slots`` rules of the DCS ``config``."""
    raw = (config or {}).get("ignore_slots")
    if not isinstance(raw, list):
        return ()
    rules = (ignore_rule(i, v) for i, v in enumerate(raw))
    return tuple(r for r in rules if isinstance(r, IgnoreRule))


def config_problems(config: Mapping[str, Any] | None) -> list[str]:
    """One line per invalid ``slots``/``ignore_slots`` entry of ``config`` (each naming its
    key); empty when all is well."""
    out: list[str] = []
    raw = (config or {}).get("slots")
    if raw is not None and not isinstance(raw, Mapping):
        out.append(f"slots: expected a mapping of slot name to definition, got {raw!r}")
    elif isinstance(raw, Mapping):
        out += ["slots." + p for n, v in raw.items() if isinstance(p := permanent_slot(n, v), str)]
    rules = (config or {}).get("ignore_slots")
    if rules is not None and not isinstance(rules, list):
        out.append(f"ignore_slots: expected a list of rules, got {rules!r}")
    elif isinstance(rules, list):
        out += ["ignore_slots" + q for i, v in enumerate(rules)
                if isinstance(q := ignore_rule(i, v), str)]
    return out


def slot_on_primary(view: ClusterView, name: str, tags: Tags) -> str | None:
    """The slot on the primary that carries this member's WAL stream: its own when it
    streams from the leader, that of the first cascading parent that does when it
    streams through ``replicatefrom`` members; None when ``nostream`` is set on the way (or
    the ``replicatefrom`` chain loops)."""
    seen: set[str] = set()
    while True:
        seen.add(name)
        if tags.nostream:
            return None
        parent = view.members.get(tags.replicatefrom) \
            if tags.replicatefrom and tags.replicatefrom != name else None
        if parent is None:
            return slot_name(name)
        if parent.name in seen:
            return None
        name, tags = parent.name, parent.tags


@dataclass(frozen=True)
class SlotPlan:
    """This member's slots: ``wanted`` (name -> what it must be), ``positions`` (name ->
    the LSN a copy must reach at least), ``ignore`` (never touched). ``managed`` is False
    when ``use_slots`` is off: then no slot is created, dropped or advanced."""

    wanted: Mapping[str, SlotSpec] = field(default_factory=dict)
    positions: Mapping[str, int] = field(default_factory=dict)
    ignore: tuple[IgnoreRule, ...] = ()
    managed: bool = True

    def ignored(self, slot: ObservedSlot | SlotSpec) -> bool:
        return any(rule.matches(slot) for rule in self.ignore)


def _retained(view: ClusterView, local: LocalState, now: float, leader: bool) -> set[str]:
    """Slot names of members that left less than ``member_slots_ttl`` ago: as last seen by
    this agent (the observer seeds that from the ``status`` key's ``retain_slots``), and on
    a replica also the leader's ``retain_slots``."""
    ttl = view.settings.member_slots_ttl
    names = {slot_name(n) for n, seen in local.member_seen.items() if now - seen < ttl}
    if not leader:
        names |= {slot_name(n) for n in view.retain_slots}
    return names


def _member_position(member: Member) -> int | None:
    known = [p for p in (member.xlog_location, member.replay_lsn, member.receive_lsn)
             if p is not None]
    return max(known) if known else None


def _member_slots(view: ClusterView, local: LocalState, now: float,
                  leader: bool) -> dict[str, Member | None]:
    """Member slot name -> the member (None for a retained slot of a member gone)."""
    me = local.name
    streaming = {n: m for n, m in view.members.items() if n != me and not m.tags.nostream}
    if view.settings.member_slots_ttl > 0:
        if local.tags.nofailover:
            chosen = [m for m in streaming.values() if m.tags.replicatefrom == me]
        else:
            chosen = list(streaming.values())
    elif leader:
        chosen = [m for m in streaming.values() if not m.tags.replicatefrom
                  or m.tags.replicatefrom == me or m.tags.replicatefrom not in view.members]
    else:
        leader_name = view.leader.name if view.leader else None
        chosen = [m for m in streaming.values()
                  if m.tags.replicatefrom == me and m.name != leader_name]
    out: dict[str, Member | None] = {slot_name(m.name): m for m in chosen}
    if view.settings.member_slots_ttl > 0 and not local.tags.nofailover:
        gone = {slot_name(n) for n, m in view.members.items() if m.tags.nostream}
        for name in _retained(view, local, now, leader) - gone:
            out.setdefault(name, None)
    out.pop(slot_name(me), None)
    return out


def slot_plan(view: ClusterView, local: LocalState, now: float, leader: bool) -> SlotPlan:
    """The slots this member keeps (``leader``: it holds or is taking the lock). Empty when
    ``use_slots`` is off: then pgha leaves slots alone."""
    if not view.settings.use_slots:
        return SlotPlan(managed=False)
    members = _member_slots(view, local, now, leader)
    wanted: dict[str, SlotSpec] = {name: SlotSpec(name) for name in members}
    if not local.tags.nofailover:
        streams = slot_on_primary(view, local.name, local.tags) is not None
        own = slot_name(local.name)
        for name, spec in permanent_slots(view.config).items():
            if spec.type == PHYSICAL:
                if name != own:
                    wanted.setdefault(name, spec)
            elif (leader or streams) and name not in members and name != own:
                wanted[name] = spec
    positions: dict[str, int] = {}
    if leader:
        for name, member in members.items():  # cascading members: never streams from us
            if member is not None and member.tags.replicatefrom \
                    and member.tags.replicatefrom != local.name \
                    and (pos := _member_position(member)) is not None:
                positions[name] = pos
    else:
        for name in wanted:
            known = [view.status_slots.get(name)]
            member = members.get(name)
            if member is not None and member.tags.replicatefrom:
                known.append(_member_position(member))
            if (best := max((p for p in known if p is not None), default=None)) is not None:
                positions[name] = best
    return SlotPlan(wanted, positions, ignore_rules(view.config))


def slot_matches(spec: SlotSpec, slot: ObservedSlot) -> bool:
    """``slot`` is what ``spec`` asks for: same type, and for a logical slot the same
    database and plugin."""
    if spec.type != slot.type:
        return False
    return spec.type == PHYSICAL or (spec.database, spec.plugin) == (slot.database, slot.plugin)


def sync_slots(plan: SlotPlan, observed: Iterable[ObservedSlot], primary: bool,
               paused: bool) -> SyncSlots | None:
    """What :class:`SyncSlots` must do to bring ``observed`` in line with ``plan``; None when
    nothing. Ignored slots are never touched. In pause nothing is dropped. Logical slots are
    created only on a primary (a replica copies them: :func:`logical_to_copy`); logical slots
    are advanced only on a replica (on a primary their consumer moves them)."""
    if not plan.managed:
        return None
    have = {s.name: s for s in observed}
    drop: list[str] = []
    for name, slot in sorted(have.items()):
        if plan.ignored(slot) or slot.active or paused:
            continue
        spec = plan.wanted.get(name)
        if spec is None or not slot_matches(spec, slot) or slot.lost:
            drop.append(name)
    create = [spec for name, spec in sorted(plan.wanted.items())
              if (name not in have or name in drop) and not plan.ignored(spec)
              and (spec.type == PHYSICAL or primary)]
    advance: list[tuple[str, int]] = []
    for name, target in sorted(plan.positions.items()):
        found, spec = have.get(name), plan.wanted.get(name)
        if found is None or spec is None or name in drop or found.active \
                or plan.ignored(found):
            continue
        if primary and spec.type == LOGICAL:
            continue
        if found.position is not None and found.position < target:
            advance.append((name, target))
    if not (drop or create or advance):
        return None
    return SyncSlots(tuple(create), tuple(drop), tuple(advance))


def logical_to_copy(view: ClusterView, plan: SlotPlan,
                    observed: Iterable[ObservedSlot]) -> tuple[SlotSpec, ...]:
    """Wanted logical slots this replica lacks (or holds with other properties) that the
    leader has already published a position for (so it has created them)."""
    have = {s.name: s for s in observed}
    out = []
    for name, spec in sorted(plan.wanted.items()):
        if spec.type != LOGICAL or plan.ignored(spec) or name not in view.status_slots:
            continue
        slot = have.get(name)
        if slot is None or not slot_matches(spec, slot) or slot.lost:
            out.append(spec)
    return tuple(out)


def status_slots(view: ClusterView, local: LocalState, now: float,
                 plan: SlotPlan | None = None) -> tuple[dict[str, int], tuple[str, ...]]:
    """What the leader publishes in ``status``: the position of each of its permanent and
    member slots (with its own slot name at its own WAL position, so the replicas keep WAL
    for it as a future replica) and ``retain_slots``: the slot names of the members (itself
    included) and of members gone less than ``member_slots_ttl`` ago, permanent slots and
    ``nostream`` members (they have no slot) left out. Both empty when ``use_slots`` is off.
    ``plan``: the leader's :func:`slot_plan` of the same arguments when already computed."""
    if not view.settings.use_slots:
        return {}, ()
    plan = plan if plan is not None else slot_plan(view, local, now, leader=True)
    out = {s.name: s.position for s in local.pg.slots or ()
           if s.name in plan.wanted and s.position is not None}
    own = slot_name(local.name)
    if local.pg.wal_position is not None and view.settings.member_slots_ttl > 0:
        out[own] = local.pg.wal_position
    for name, position in plan.positions.items():  # cascading members' own positions
        out[name] = max(out.get(name, 0), position)
    retain: tuple[str, ...] = ()
    if view.settings.member_slots_ttl > 0:
        permanent = set(permanent_slots(view.config))
        archive_only = {slot_name(n) for n, m in view.members.items() if m.tags.nostream}
        names = {slot_name(n) for n in view.members} | _retained(view, local, now, True)
        retain = tuple(sorted((names | {own}) - permanent - archive_only))
    return out, retain


def slot_parameters(view: ClusterView, local: LocalState, now: float) -> dict[str, Any]:
    """PostgreSQL parameters this member's slots need, to be forced over the user's values:
    ``wal_level: logical`` wherever permanent logical slots are configured or a logical slot
    exists on this server (PostgreSQL refuses to start with one below ``logical``);
    ``hot_standby_feedback: on`` on a member that keeps logical copies or that a member
    keeping them cascades from (the primary must not remove catalog rows the copies need);
    ``max_replication_slots`` at least the wanted slots plus headroom."""
    out: dict[str, Any] = {}
    if not view.settings.use_slots:
        return out
    logical_config = any(s.type == LOGICAL for s in permanent_slots(view.config).values())
    if logical_config or any(s.type == LOGICAL for s in local.pg.slots or ()):
        out["wal_level"] = "logical"
    plans = [slot_plan(view, local, now, leader) for leader in (True, False)]
    if _feedback_needed(view, local.name, local.tags, now, local, set(), plans[1]):
        out["hot_standby_feedback"] = True
    ignored = sum(1 for s in local.pg.slots or () if plans[0].ignored(s))
    needed = max(len(p.wanted) for p in plans) + ignored + SLOT_HEADROOM
    if needed > DEFAULT_MAX_SLOTS:
        out["max_replication_slots"] = needed
    return out


def _feedback_needed(view: ClusterView, name: str, tags: Tags, now: float,
                     local: LocalState, seen: set[str], plan: SlotPlan | None = None) -> bool:
    """``plan``: ``name``'s replica :func:`slot_plan` when already computed (it reads only
    the name, tags and ``member_seen`` of its LocalState)."""
    seen.add(name)
    if plan is None:
        me = LocalState(name=name, tags=tags, member_seen=local.member_seen)
        plan = slot_plan(view, me, now, leader=False)
    if any(s.type == LOGICAL for s in plan.wanted.values()):
        return True
    if slot_on_primary(view, name, tags) is None:
        return False
    leader = view.leader.name if view.leader else None
    return any(_feedback_needed(view, m.name, m.tags, now, local, seen)
               for m in view.members.values()
               if m.tags.replicatefrom == name and m.name != leader and m.name not in seen)


def failsafe_slots(pg: PgState, name: str) -> dict[str, int]:
    """The slot positions a primary sends with ``POST /failsafe`` while the DCS is down (the
    ``status`` key cannot carry them): every slot on its server, and its own slot name at
    its WAL position."""
    out = {s.name: s.position for s in pg.slots or () if s.position is not None}
    if pg.wal_position is not None:
        out[slot_name(name)] = pg.wal_position
    return out
