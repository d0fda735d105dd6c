"""The rejoin plan (``pgha.core.rejoin``): every observation under every setting.

DESIGN.md safety rules 4 and 9: diverged (or possibly diverged) data never follows as is, and
data is only wiped when it is empty, when ``use_pg_rewind`` is off (re-cloning is then how a
diverged former primary rejoins), or when ``remove_data_directory_on_rewind_failure`` allows it.
"""

from __future__ import annotations

import itertools

import pytest

from pgha.core.model import DataState
from pgha.core.rejoin import (
    RejoinPlan,
    RejoinReason,
    RejoinStep,
    data_reason,
    divergence_reason,
    rejoin_plan,
)

FOLLOW, REWIND, RECLONE, WAIT = (RejoinStep.FOLLOW, RejoinStep.REWIND, RejoinStep.RECLONE,
                                 RejoinStep.WAIT_FOR_OPERATOR)
R = RejoinReason
SETTINGS = list(itertools.product([False, True], repeat=2))  # (use_pg_rewind, remove)


def plan(reason: RejoinReason, rewind: bool, remove: bool) -> RejoinPlan:
    return rejoin_plan(reason, use_pg_rewind=rewind, remove_on_rewind_failure=remove)


# (reason, use_pg_rewind, remove_data_directory_on_rewind_failure) -> step
EXPECTED: dict[tuple[RejoinReason, bool, bool], RejoinStep] = {
    **{(R.DATA_EMPTY, rw, rm): RECLONE for rw, rm in SETTINGS},
    **{(R.DATA_INVALID, rw, rm): WAIT for rw, rm in SETTINGS},
    (R.CRASH_RECOVERY_FAILED, False, False): RECLONE,
    (R.CRASH_RECOVERY_FAILED, False, True): RECLONE,
    (R.CRASH_RECOVERY_FAILED, True, False): WAIT,
    (R.CRASH_RECOVERY_FAILED, True, True): RECLONE,
    **{(R.NOT_DIVERGED, rw, rm): FOLLOW for rw, rm in SETTINGS},
    **{(r, rw, rm): REWIND if rw else RECLONE
       for r in (R.DIVERGED, R.DIVERGENCE_UNKNOWN) for rw, rm in SETTINGS},
    **{(R.REWIND_FAILED, rw, rm): RECLONE if rm else WAIT for rw, rm in SETTINGS},
}


def test_every_observation_and_setting_is_covered() -> None:
    assert {key[0] for key in EXPECTED} == set(RejoinReason)
    assert len(EXPECTED) == len(RejoinReason) * len(SETTINGS)


@pytest.mark.parametrize(("reason", "rewind", "remove"), sorted(EXPECTED))
def test_step(reason: RejoinReason, rewind: bool, remove: bool) -> None:
    p = plan(reason, rewind, remove)
    assert p.step is EXPECTED[reason, rewind, remove]
    assert p.reason is reason
    assert p.message


@pytest.mark.parametrize(("rewind", "remove"), SETTINGS)
def test_diverged_data_never_follows_as_is(rewind: bool, remove: bool) -> None:
    for reason in (R.DIVERGED, R.DIVERGENCE_UNKNOWN, R.CRASH_RECOVERY_FAILED,
                   R.REWIND_FAILED):
        assert plan(reason, rewind, remove).step is not FOLLOW


def test_rewind_failure_wipes_only_with_consent() -> None:
    refused = plan(R.REWIND_FAILED, True, False)
    assert refused.step is WAIT
    assert "remove_data_directory_on_rewind_failure is off" in refused.message
    assert plan(R.REWIND_FAILED, True, True).step is RECLONE


def test_failed_crash_recovery_keeps_data_when_rewind_is_on_without_consent() -> None:
    p = plan(R.CRASH_RECOVERY_FAILED, True, False)
    assert p.step is WAIT and "not re-cloning" in p.message


def test_reclone_after_failed_crash_recovery_confirms_the_leader_first() -> None:
    # the leader was not contacted yet: never wipe data we cannot replace
    for rewind, remove in [(False, False), (False, True), (True, True)]:
        assert plan(R.CRASH_RECOVERY_FAILED, rewind, remove).confirm_leader_first
    for (reason, rewind, remove), step in EXPECTED.items():
        if reason is not R.CRASH_RECOVERY_FAILED:
            assert not plan(reason, rewind, remove).confirm_leader_first, (reason, step)


def test_messages_used_in_the_log() -> None:
    assert plan(R.DIVERGED, True, False).message == "diverged from the leader"
    assert plan(R.DIVERGENCE_UNKNOWN, True, False).message == "divergence unknown"
    assert plan(R.DIVERGED, False, False).message == \
        "diverged from the leader and use_pg_rewind is off"
    assert plan(R.DATA_EMPTY, False, False).message == "data directory is empty"
    assert plan(R.DATA_INVALID, False, False).message == \
        "data directory is not a valid cluster; not touching it"


def test_data_reason() -> None:
    assert data_reason(DataState.EMPTY) is R.DATA_EMPTY
    assert data_reason(DataState.INVALID) is R.DATA_INVALID
    assert data_reason(DataState.VALID) is None


@pytest.mark.parametrize(("verdict", "reason"), [
    (True, R.DIVERGED), (False, R.NOT_DIVERGED), (None, R.DIVERGENCE_UNKNOWN),
])
def test_divergence_reason(verdict: bool | None, reason: RejoinReason) -> None:
    assert divergence_reason(verdict) is reason
