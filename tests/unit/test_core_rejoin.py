"""The rejoin plan (``pgha.core.rejoin``): every observation under every setting.

DESIGN.md safety rules 4 and 9: diverged (or possibly diverged) data never follows as is, and
data is only wiped when it is empty or when the operator consented:
``remove_data_directory_on_diverged_timelines`` for diverged data that may not be rewound,
``remove_data_directory_on_rewind_failure`` after pg_rewind or crash recovery failed.
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
# (use_pg_rewind, remove_data_directory_on_rewind_failure, ..._on_diverged_timelines)
SETTINGS = list(itertools.product([False, True], repeat=3))


def plan(reason: RejoinReason, rewind: bool, remove: bool,
         diverged: bool = False) -> RejoinPlan:
    return rejoin_plan(reason, use_pg_rewind=rewind, remove_on_rewind_failure=remove,
                       remove_on_diverged=diverged)


def _diverged_step(rewind: bool, diverged: bool) -> RejoinStep:
    return REWIND if rewind else RECLONE if diverged else WAIT


# (reason, use_pg_rewind, remove_on_rewind_failure, remove_on_diverged) -> step
EXPECTED: dict[tuple[RejoinReason, bool, bool, bool], RejoinStep] = {
    **{(R.DATA_EMPTY, *s): RECLONE for s in SETTINGS},
    **{(R.DATA_INVALID, *s): WAIT for s in SETTINGS},
    **{(R.CRASH_RECOVERY_FAILED, rw, rm, dv): RECLONE if rm else WAIT
       for rw, rm, dv in SETTINGS},
    **{(R.CRASH_RECOVERY_INCOMPLETE, *s): WAIT for s in SETTINGS},
    **{(R.NOT_DIVERGED, *s): FOLLOW for s in SETTINGS},
    **{(R.DIVERGED, rw, rm, dv): _diverged_step(rw, dv) for rw, rm, dv in SETTINGS},
    **{(R.DIVERGENCE_UNKNOWN, rw, rm, dv): REWIND if rw else WAIT for rw, rm, dv in SETTINGS},
    **{(R.REWIND_FAILED, rw, rm, dv): RECLONE if rm else WAIT for rw, rm, dv in SETTINGS},
}


def test_every_observation_and_setting_is_covered() -> None:
    assert {key[0] for key in EXPECTED} == set(RejoinReason)
    assert len(EXPECTED) == len(RejoinReason) * len(SETTINGS)


@pytest.mark.parametrize(("reason", "rewind", "remove", "diverged"), sorted(EXPECTED))
def test_step(reason: RejoinReason, rewind: bool, remove: bool, diverged: bool) -> None:
    p = plan(reason, rewind, remove, diverged)
    assert p.step is EXPECTED[reason, rewind, remove, diverged]
    assert p.reason is reason
    assert p.message


@pytest.mark.parametrize(("rewind", "remove", "diverged"), SETTINGS)
def test_diverged_data_never_follows_as_is(rewind: bool, remove: bool, diverged: bool) -> None:
    for reason in (R.DIVERGED, R.DIVERGENCE_UNKNOWN, R.CRASH_RECOVERY_FAILED,
                   R.CRASH_RECOVERY_INCOMPLETE, R.REWIND_FAILED):
        assert plan(reason, rewind, remove, diverged).step is not FOLLOW


@pytest.mark.parametrize(("rewind", "remove", "diverged"), SETTINGS)
def test_data_is_wiped_only_with_consent(rewind: bool, remove: bool, diverged: bool) -> None:
    for reason in RejoinReason:
        if plan(reason, rewind, remove, diverged).step is RECLONE:
            assert reason is R.DATA_EMPTY or remove or diverged, reason
    for reason in (R.DIVERGENCE_UNKNOWN, R.CRASH_RECOVERY_INCOMPLETE, R.DATA_INVALID):
        assert plan(reason, rewind, remove, diverged).step is not RECLONE


def test_diverged_without_rewind_tells_the_operator_what_to_do() -> None:
    message = plan(R.DIVERGED, False, True, False).message
    assert "remove_data_directory_on_diverged_timelines" in message
    assert "use_pg_rewind" in message and "pgha reinit" in message


def test_rewind_failure_wipes_only_with_consent() -> None:
    refused = plan(R.REWIND_FAILED, True, False)
    assert refused.step is WAIT
    assert "remove_data_directory_on_rewind_failure is off" in refused.message
    assert plan(R.REWIND_FAILED, True, True).step is RECLONE


def test_failed_crash_recovery_keeps_data_without_consent() -> None:
    for rewind in (False, True):
        p = plan(R.CRASH_RECOVERY_FAILED, rewind, False, True)
        assert p.step is WAIT and "not re-cloning" in p.message


def test_reclone_after_failed_crash_recovery_confirms_the_leader_first() -> None:
    # the leader was not contacted yet: never wipe data we cannot replace
    for rewind in (False, True):
        assert plan(R.CRASH_RECOVERY_FAILED, rewind, True).confirm_leader_first
    for (reason, rewind, remove, diverged), step in EXPECTED.items():
        if reason is not R.CRASH_RECOVERY_FAILED:
            p = plan(reason, rewind, remove, diverged)
            assert not p.confirm_leader_first, (reason, step)


def test_messages_used_in_the_log() -> None:
    assert plan(R.DIVERGED, True, False).message == "diverged from the leader"
    assert plan(R.DIVERGENCE_UNKNOWN, True, False).message == "divergence unknown"
    assert plan(R.DIVERGED, False, False, True).message == ("diverged from the leader, "
        "use_pg_rewind is off and remove_data_directory_on_diverged_timelines is on")
    assert plan(R.DATA_EMPTY, False, False).message == "data directory is empty"
    assert plan(R.DATA_INVALID, False, False).message.startswith(
        "data directory is not a valid cluster; not touching it")


def test_data_reason() -> None:
    assert data_reason(DataState.EMPTY) is R.DATA_EMPTY
    assert data_reason(DataState.INVALID) is R.DATA_INVALID
    assert data_reason(DataState.VALID) is None


@pytest.mark.parametrize(("verdict", "reason"), [
    (True, R.DIVERGED), (False, R.NOT_DIVERGED), (None, R.DIVERGENCE_UNKNOWN),
])
def test_divergence_reason(verdict: bool | None, reason: RejoinReason) -> None:
    assert divergence_reason(verdict) is reason
