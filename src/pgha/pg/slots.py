"""Physical replication slots on the primary."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from pgha.core.actions import slot_name
from pgha.pg.errors import PgError
from pgha.pg.probe import Connection

log = logging.getLogger("pgha.pg")

SLOT_TIMEOUT = 10.0


def wanted_slots(keep: Iterable[str], own_name: str) -> frozenset[str]:
    """Slot names for ``keep`` (member or slot names; ``slot_name`` is idempotent on slot
    names), without our own member's slot."""
    own = slot_name(own_name)
    return frozenset(slot_name(name) for name in keep if name) - {own, ""}


async def sync_slots(conn: Connection, keep: frozenset[str]) -> None:
    """Create the missing physical slots of ``keep`` (reserving WAL at once) and drop inactive
    physical slots not in ``keep``. Logical and active slots are never dropped. A slot that
    became active between the listing and the drop is left alone (logged). Raises PgError when
    the listing or a creation fails."""
    try:
        rows = await conn.fetch("SELECT slot_name, slot_type, active FROM pg_replication_slots",
                                timeout=SLOT_TIMEOUT)
    except Exception as exc:
        raise PgError(f"listing replication slots failed: {exc}") from exc
    existing = {str(r["slot_name"]): (str(r["slot_type"]), bool(r["active"])) for r in rows}
    for name in sorted(keep - existing.keys()):
        try:
            await conn.execute("SELECT pg_create_physical_replication_slot($1, true)", name,
                               timeout=SLOT_TIMEOUT)
        except Exception as exc:
            raise PgError(f"creating replication slot {name} failed: {exc}") from exc
        log.info("created physical replication slot %s", name)
    for name, (kind, active) in sorted(existing.items()):
        if kind != "physical" or active or name in keep:
            continue
        try:
            await conn.execute("SELECT pg_drop_replication_slot($1)", name, timeout=SLOT_TIMEOUT)
        except Exception as exc:  # e.g. became active meanwhile
            log.warning("could not drop replication slot %s: %s", name, exc)
            continue
        log.info("dropped physical replication slot %s", name)
