"""Golden scenarios: replay every script in tests/sim/golden/ and compare the decisions.

``PGHA_GOLDEN_UPDATE=1`` rewrites the files with the decisions of the current code instead
(review the diff: the files document behaviour). Format: tests/sim/golden/README.md.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.sim.scenario import golden_files, run_script

GOLDEN = Path(__file__).parent / "golden"


@pytest.mark.parametrize("path", golden_files(GOLDEN), ids=lambda p: p.stem)
def test_golden_scenario(path: Path) -> None:
    recorded = path.read_text()
    replayed = run_script(recorded)
    if os.environ.get("PGHA_GOLDEN_UPDATE") == "1":
        path.write_text(replayed)
        return
    assert replayed == recorded, (
        f"{path.name}: decisions differ from the recorded ones; if the change is intended, "
        "rerun with PGHA_GOLDEN_UPDATE=1 and review the diff")


def test_replay_is_deterministic() -> None:
    text = (GOLDEN / "failover.txt").read_text()
    assert run_script(text) == run_script(text)


def test_every_required_scenario_exists() -> None:
    names = {p.stem for p in golden_files(GOLDEN)}
    assert {"bootstrap", "failover", "postmaster_crash", "switchover", "rejoin_rewind",
            "dcs_loss", "sync_failover", "quorum_failover", "strict_blocking",
            "agent_death"} <= names
