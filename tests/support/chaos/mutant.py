"""``python -m tests.support.chaos.mutant run CONFIG``: a pgha agent with one deliberate defect,
named by ``PGHA_CHAOS_MUTATION``, to show that the campaign's checkers catch it.

Mutations (each breaks one safety rule of DESIGN.md; everything else is the real agent):

* ``no-fail-closed``: a primary whose lease is not confirmed keeps running as a writable
  primary -- ``decide``'s fail-closed verdict (``lease_unconfirmed``) is replaced by "do
  nothing" and the lease keeper's backstop never stops PostgreSQL (safety rule 2). A leader cut
  off from the DCS then stays writable while another member is promoted: split brain.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from pgha.agent import cycle
from pgha.core import lease
from pgha.core.decide import decide
from pgha.core.decision import Decision, Reason

MUTATIONS = ("no-fail-closed",)


def _no_fail_closed() -> None:
    def mutated_decide(*args: Any, **kwargs: Any) -> Decision:
        verdict = decide(*args, **kwargs)
        if verdict.reason is Reason.LEASE_UNCONFIRMED:
            return Decision((), Reason.DCS_UNREACHABLE_LEASE_VALID,
                            "MUTANT: lease unconfirmed, staying primary")
        return verdict

    def no_backstop(*args: Any, **kwargs: Any) -> None:
        return None

    cycle.decide = mutated_decide  # type: ignore[assignment]
    lease.backstop = no_backstop  # type: ignore[assignment]


def main() -> None:
    name = os.environ.get("PGHA_CHAOS_MUTATION", "")
    if name == "no-fail-closed":
        _no_fail_closed()
    else:
        sys.exit(f"PGHA_CHAOS_MUTATION: unknown mutation {name!r}: one of {', '.join(MUTATIONS)}")
    print(f"chaos mutant: {name}", file=sys.stderr, flush=True)
    from pgha.cli.main import app

    app()


if __name__ == "__main__":
    main()
