"""Unit tests for the pure divergence rule."""

from __future__ import annotations

import pytest

from pgha.core.timeline import diverged

SWITCH = 0x3000148  # timeline 1 ended at 0/3000148


def test_same_timeline_can_follow() -> None:
    assert diverged(2, 0x5000000, 2, [(1, SWITCH)]) is False
    assert diverged(1, 0x5000000, 1, []) is False


def test_clean_switch_checkpoint_before_switch_point_follows() -> None:
    # old primary's shutdown checkpoint starts before the end of that record (= switch point)
    assert diverged(1, SWITCH - 0x70, 2, [(1, SWITCH)]) is False


def test_record_at_or_after_switch_point_diverged() -> None:
    assert diverged(1, SWITCH, 2, [(1, SWITCH)]) is True
    assert diverged(1, SWITCH + 0x1000, 2, [(1, SWITCH)]) is True


def test_older_ancestor_timeline() -> None:
    history = [(1, 0x3000148), (2, 0x5000200), (3, 0x7000000)]
    assert diverged(2, 0x5000100, 4, history) is False
    assert diverged(2, 0x5000200, 4, history) is True
    assert diverged(1, 0x2000000, 4, history) is False


def test_timeline_not_in_lineage_diverged() -> None:
    # leader went 1 -> 2 -> 4; we are on the sibling timeline 3
    assert diverged(3, 0x4000000, 4, [(1, 0x3000148), (2, 0x5000000)]) is True


def test_local_timeline_after_leader_diverged() -> None:
    assert diverged(3, 0x1000, 2, [(1, SWITCH)]) is True


@pytest.mark.parametrize(
    ("local_tl", "local_lsn", "leader_tl", "history"),
    [
        (1, 0x1000, 2, []),  # history unknown
        (0, 0x1000, 2, [(1, SWITCH)]),
        (1, -1, 2, [(1, SWITCH)]),
        (1, 0x1000, 0, []),
    ],
)
def test_unknown(local_tl: int, local_lsn: int, leader_tl: int,
                 history: list[tuple[int, int]]) -> None:
    assert diverged(local_tl, local_lsn, leader_tl, history) is None
