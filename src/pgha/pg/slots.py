"""Physical replication slots on the primary."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from pgha.core.actions import Upstream, slot_name
from pgha.pg.errors import PgError
from pgha.pg.probe import Connection, remote_connection
from pgha.pg.settings import PgSettings

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


async def ensure_own_slot(settings: PgSettings, upstream: Upstream) -> None:
    """Create this member's physical slot on ``upstream`` if it is missing, so the replica can
    stream at once instead of waiting for the leader's next slot sync (the WAL receiver would
    otherwise retry only every ``wal_retrieve_retry_interval``). Best effort: failures are
    logged, never raised; the leader's slot sync creates the slot anyway."""
    if not settings.use_slots:
        return
    name = slot_name(settings.name)
    try:
        async with remote_connection(settings, upstream.conn_url) as conn:
            await conn.execute(
                "SELECT pg_create_physical_replication_slot($1, true) WHERE NOT EXISTS "
                "(SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)", name,
                timeout=SLOT_TIMEOUT)
    except Exception as exc:
        log.warning("could not create slot %s on %s: %s", name, upstream.name, exc)
