"""``pgha.pg.rejoin.rejoin`` carries out the core's rejoin plan: a fake PostgreSQL records the
calls, so every path is checked without a server (``tests/integration/test_pg_rejoin.py``
runs the real thing)."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

import pgha.pg.rejoin as rejoin_module
from pgha.core.actions import StopMode, Upstream
from pgha.core.model import DataState
from pgha.pg.errors import PgError

LEADER = Upstream("pg2", "postgres://pg2.example:5432/postgres")


def controldata(timeline: int, lsn: str) -> dict[str, str]:
    return {"Latest checkpoint's TimeLineID": str(timeline), "Latest checkpoint location": lsn}


@dataclass
class FakePg:
    data: DataState = DataState.VALID
    running: bool = False
    remove_on_failure: bool = False
    remove_on_diverged: bool = False
    local_rewind: bool | None = None
    crash_ok: bool | None = True
    control: dict[str, str] = field(default_factory=lambda: controldata(1, "0/3000028"))
    checkpoint_error: bool = False
    rewind_ok: bool = True
    calls: list[str] = field(default_factory=list)

    @property
    def settings(self) -> Any:
        return SimpleNamespace(remove_data_directory_on_rewind_failure=self.remove_on_failure,
                               remove_data_directory_on_diverged_timelines=self.remove_on_diverged,
                               use_pg_rewind=self.local_rewind)

    def is_running(self) -> bool:
        return self.running

    def data_state(self) -> DataState:
        return self.data

    async def stop(self, mode: StopMode, timeout: float | None = None) -> bool:
        self.calls.append(f"stop {mode}")
        self.running = False
        return True

    async def start(self, role: str, upstream: Upstream | None) -> bool:
        self.calls.append(f"start {role}")
        return True

    async def wipe(self) -> None:
        self.calls.append("wipe")

    async def clone(self, source: Upstream) -> bool:
        self.calls.append("clone")
        return True

    async def crash_recover(self) -> bool | None:
        self.calls.append("crash_recover")
        return self.crash_ok

    async def controldata(self) -> dict[str, str]:
        return self.control

    async def ensure_source_checkpointed(self, source: Upstream) -> None:
        if self.checkpoint_error:
            raise PgError("no checkpoint")

    async def rewind(self, source: Upstream) -> bool:
        self.calls.append("rewind")
        return self.rewind_ok


@pytest.fixture
def leader_history(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The leader's (timeline, history) answer; set ``[PgError(...)]`` for an unreachable
    leader. Defaults: timeline 2, timeline 1 ended at 0/3000000 (the local checkpoint at
    0/3000028 is past it: diverged)."""
    answer: list[Any] = [(2, [(1, 0x3000000)])]

    async def fake(settings: Any, leader: Upstream) -> tuple[int, list[tuple[int, int]]]:
        if isinstance(answer[0], Exception):
            raise answer[0]
        return answer[0]  # type: ignore[no-any-return]

    monkeypatch.setattr(rejoin_module, "source_timeline_history", fake)
    return answer


async def run(pg: FakePg, use_pg_rewind: bool) -> bool:
    return await rejoin_module.rejoin(pg, LEADER, use_pg_rewind)  # type: ignore[arg-type]


async def test_not_diverged_follows_as_is(leader_history: list[Any]) -> None:
    leader_history[0] = (2, [(1, 0x4000000)])
    pg = FakePg(running=True)
    assert await run(pg, use_pg_rewind=True)
    assert pg.calls == ["stop fast", "crash_recover", "start replica"]


async def test_diverged_is_rewound(leader_history: list[Any]) -> None:
    pg = FakePg()
    assert await run(pg, use_pg_rewind=True)
    assert pg.calls == ["crash_recover", "rewind", "start replica"]


async def test_diverged_without_rewind_is_left_stopped_without_consent(
        leader_history: list[Any]) -> None:
    pg = FakePg(remove_on_failure=True)  # consent for rewind failures only: not enough
    assert not await run(pg, use_pg_rewind=False)
    assert pg.calls == ["crash_recover"]


async def test_diverged_without_rewind_is_recloned_with_consent(
        leader_history: list[Any]) -> None:
    pg = FakePg(remove_on_diverged=True)
    assert await run(pg, use_pg_rewind=False)
    assert pg.calls == ["crash_recover", "wipe", "clone", "start replica"]


@pytest.mark.parametrize(("dynamic", "local", "calls"), [
    (False, True, ["crash_recover", "rewind", "start replica"]),
    (True, False, ["crash_recover"]),
])
async def test_local_use_pg_rewind_wins(leader_history: list[Any], dynamic: bool, local: bool,
                                        calls: list[str]) -> None:
    pg = FakePg(local_rewind=local)
    await run(pg, use_pg_rewind=dynamic)
    assert pg.calls == calls


async def test_unknown_divergence_without_rewind_never_wipes(leader_history: list[Any]) -> None:
    leader_history[0] = (2, [])
    pg = FakePg(remove_on_diverged=True, remove_on_failure=True)
    assert not await run(pg, use_pg_rewind=False)
    assert pg.calls == ["crash_recover"]


async def test_inconclusive_crash_recovery_changes_nothing(leader_history: list[Any]) -> None:
    pg = FakePg(crash_ok=None, remove_on_failure=True, remove_on_diverged=True)
    assert not await run(pg, use_pg_rewind=False)
    assert pg.calls == ["crash_recover"]


async def test_unknown_divergence_counts_as_diverged(leader_history: list[Any]) -> None:
    leader_history[0] = (2, [])  # a later timeline without history: undecidable
    pg = FakePg()
    assert await run(pg, use_pg_rewind=True)
    assert "rewind" in pg.calls


@pytest.mark.parametrize(("remove", "ok", "calls"), [
    (False, False, ["crash_recover", "rewind"]),
    (True, True, ["crash_recover", "rewind", "wipe", "clone", "start replica"]),
])
async def test_rewind_failure(leader_history: list[Any], remove: bool, ok: bool,
                              calls: list[str]) -> None:
    pg = FakePg(rewind_ok=False, remove_on_failure=remove)
    assert await run(pg, use_pg_rewind=True) is ok
    assert pg.calls == calls


async def test_unconfirmed_leader_checkpoint_changes_nothing(
        leader_history: list[Any]) -> None:
    pg = FakePg(checkpoint_error=True, remove_on_failure=True)
    assert not await run(pg, use_pg_rewind=True)
    assert pg.calls == ["crash_recover"]


async def test_unreachable_leader_changes_nothing(leader_history: list[Any]) -> None:
    leader_history[0] = PgError("connection refused")
    pg = FakePg()
    assert not await run(pg, use_pg_rewind=False)
    assert pg.calls == ["crash_recover"]


async def test_empty_data_is_cloned(leader_history: list[Any]) -> None:
    pg = FakePg(data=DataState.EMPTY)
    assert await run(pg, use_pg_rewind=True)
    assert pg.calls == ["wipe", "clone", "start replica"]


async def test_invalid_data_is_left_to_the_operator(leader_history: list[Any]) -> None:
    pg = FakePg(data=DataState.INVALID)
    assert not await run(pg, use_pg_rewind=False)
    assert pg.calls == []


@pytest.mark.parametrize(("rewind", "remove", "leader_up", "ok", "calls"), [
    (True, False, True, False, ["crash_recover"]),  # keep the data: operator
    (False, False, True, False, ["crash_recover"]),  # no consent without rewind either
    (False, True, True, True, ["crash_recover", "wipe", "clone", "start replica"]),
    (True, True, True, True, ["crash_recover", "wipe", "clone", "start replica"]),
    (True, True, False, False, ["crash_recover"]),  # never wipe with the leader gone
])
async def test_failed_crash_recovery(leader_history: list[Any], rewind: bool, remove: bool,
                                     leader_up: bool, ok: bool, calls: list[str]) -> None:
    if not leader_up:
        leader_history[0] = PgError("connection refused")
    pg = FakePg(crash_ok=False, remove_on_failure=remove)
    assert await run(pg, use_pg_rewind=rewind) is ok
    assert pg.calls == calls
