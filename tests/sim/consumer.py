"""A logical replication consumer reading the permanent slot ``cdc`` on whichever member is
primary, for the slot invariant of the simulation.

The consumer confirms, as time passes, a position :data:`READ_LAG` behind the primary's WAL (it
reads the changes late); the highest position it ever confirmed is what it may skip on
reconnecting. A promoted member's copy of ``cdc`` must never be past that position: the copy
is what the consumer continues from after the failover, and changes between what it
confirmed and where the copy stands would be lost to it.
"""

from __future__ import annotations

from dataclasses import replace

from tests.support.fake_pg import FakePostgres

SLOT = "cdc"
SLOT_CONFIG = {SLOT: {"type": "logical", "database": "postgres", "plugin": "test_decoding"}}
READ_LAG = 500_000  # bytes: how far behind the primary's WAL the consumer confirms


class LogicalConsumer:
    """State owned: ``confirmed``, the highest position confirmed on any primary (None
    before the first)."""

    def __init__(self) -> None:
        self.confirmed: int | None = None

    def read(self, primary: FakePostgres) -> None:
        """Confirm up to :data:`READ_LAG` behind ``primary``'s WAL, if it has the slot (never
        back)."""
        slot = primary.slots.get(SLOT)
        if slot is None or slot.type != "logical":
            return
        position = max(slot.position or 0, primary.wal - READ_LAG)
        primary.slots[SLOT] = replace(slot, position=position)
        self.confirmed = max(self.confirmed or 0, position)

    def check_promoted(self, pg: FakePostgres) -> str | None:
        """Why ``pg``'s copy of the slot breaks the invariant as it promotes, or None."""
        copy = pg.slots.get(SLOT)
        if copy is None or copy.position is None or self.confirmed is None:
            return None
        if copy.position > self.confirmed:
            return (f"{pg.name} promoted with its copy of {SLOT} at {copy.position}, past the "
                    f"{self.confirmed} its consumer confirmed: changes between are lost to it")
        return None
