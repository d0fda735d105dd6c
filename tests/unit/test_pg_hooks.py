"""``postgresql.pre_promote`` / ``postgresql.before_stop``: the hook runner (real
subprocesses), the executor around it (a fake PostgreSQL, the in-memory DCS), the agent's
``ttl`` backoff after a failure, and the configuration keys."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from tests.support.agent_stubs import NullSink, OpenLease, StillWorld
from tests.support.fake_pg import FakePostgres

from pgha.agent.cycle import DecisionCycle
from pgha.agent.executor import Executor
from pgha.agent.fencing import before_stop
from pgha.agent.reload import changed_keys, classify
from pgha.config import ConfigError, parse_config
from pgha.core.actions import (
    AcquireLeader,
    Demote,
    PrePromote,
    Promote,
    RestartPostgres,
    StopMode,
    StopPostgres,
)
from pgha.core.model import DataState, HaSettings, PgRole
from pgha.dcs.memory import MemoryBackend, MemoryStore
from pgha.dcs.store import ClusterStore
from pgha.pg.errors import PgError
from pgha.pg.hooks import PgHooks


def hooks(timeout: float = 10.0, **commands: str | None) -> PgHooks:
    return PgHooks(lambda hook: commands.get(hook), timeout=lambda: timeout)


def script(tmp_path: Path, body: str) -> str:
    """A shell command running ``body`` (sh)."""
    path = tmp_path / "hook.sh"
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return shlex.quote(str(path))


# ------------------------------------------------------------------------------- the runner
async def test_success_runs_the_command_without_arguments(tmp_path: Path) -> None:
    marker = tmp_path / "args"
    result = await hooks(pre_promote=script(tmp_path, f'echo "$#" > {marker}')).run(
        "pre_promote")
    assert result is not None and result.ok and result.returncode == 0
    assert marker.read_text().strip() == "0"


async def test_non_zero_exit_is_reported_with_key_and_status(tmp_path: Path) -> None:
    result = await hooks(pre_promote=script(tmp_path, "echo fenced >&2; exit 3")).run(
        "pre_promote")
    assert result is not None and not result.ok and result.returncode == 3
    assert result.describe() == "postgresql.pre_promote exited with status 3"


@pytest.mark.parametrize("command", [None, "", "   "])
async def test_blank_command_is_no_hook(command: str | None) -> None:
    h = hooks(before_stop=command)
    assert not h.configured("before_stop")
    assert await h.run("before_stop") is None


async def test_a_program_that_cannot_start_fails(tmp_path: Path) -> None:
    result = await hooks(pre_promote=str(tmp_path / "missing")).run("pre_promote")
    assert result is not None and not result.ok and result.returncode is None
    assert result.describe().startswith("postgresql.pre_promote could not be started: ")


async def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child"
    body = f"sleep 60 & echo $! > {pidfile}; wait"
    result = await hooks(timeout=1.0, pre_promote=script(tmp_path, body)).run("pre_promote")
    assert result is not None and result.timed_out and not result.ok
    assert result.describe() == "postgresql.pre_promote timed out after 1s: killed"
    child = int(pidfile.read_text())
    for _ in range(100):  # the orphaned child is reaped by init shortly after SIGKILL
        if not _alive(child):
            break
        await asyncio.sleep(0.05)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


async def test_the_event_loop_keeps_running_while_a_hook_runs(tmp_path: Path) -> None:
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    ticker = asyncio.create_task(tick())
    try:
        result = await hooks(before_stop=script(tmp_path, "sleep 0.5")).run("before_stop")
    finally:
        ticker.cancel()
    assert result is not None and result.ok and ticks > 5


async def test_the_command_is_read_at_every_run(tmp_path: Path) -> None:
    commands: dict[str, str | None] = {"pre_promote": "false"}
    h = PgHooks(commands.get, timeout=lambda: 5.0)
    first = await h.run("pre_promote")
    commands["pre_promote"] = "true"  # a reloaded YAML
    second = await h.run("pre_promote")
    assert first is not None and not first.ok and second is not None and second.ok


# ------------------------------------------------------------------------------- the executor
class RecordingPg(FakePostgres):
    """Notes, at each stop, whether the before_stop marker already existed."""

    marker: Path | None = None
    stops: list[tuple[StopMode, bool]]

    async def stop(self, mode: StopMode, timeout: float | None = None) -> bool:
        self.stops.append((mode, self.marker is not None and self.marker.exists()))
        return await super().stop(mode, timeout)


def replica(world: StillWorld, marker: Path | None = None) -> RecordingPg:
    pg = RecordingPg("pg1", world, data=DataState.VALID, running=True, role=PgRole.REPLICA,
                     timeline=1, sysid="7")
    pg.marker, pg.stops = marker, []
    world.pgs["pg1"] = pg
    return pg


async def with_executor(pg: FakePostgres, world: StillWorld, h: PgHooks,
                        actions: list[Any]) -> tuple[bool, Executor, str | None]:
    """Run ``actions``; also returns who holds the leader key afterwards."""
    kv = MemoryStore(MemoryBackend(clock=world.now), ttl=10.0, timeout=2.0)
    async with kv:
        store = ClusterStore(kv, "/service/", "demo", "pg1")
        executor = Executor(pg, store, lease=OpenLease(), status=NullSink(), bootstrap_config={},
                            post_bootstrap=None, pg_ctl_timeout=5, dcs_timeout=1, hooks=h)
        ok = await executor.run(actions)
        view = await store.load()
        return ok, executor, view.leader.name if view.leader is not None else None


async def test_failed_pre_promote_releases_the_lock_and_does_not_promote(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    world = StillWorld()
    pg = replica(world)
    h = hooks(pre_promote=script(tmp_path, "exit 1"))
    with caplog.at_level(logging.ERROR, logger="pgha.executor"):
        ok, executor, holder = await with_executor(
            pg, world, h, [AcquireLeader(), PrePromote(), Promote()])
    assert not ok and executor.pre_promote_failed
    assert pg.role is PgRole.REPLICA and pg.timeline == 1  # never promoted
    assert holder is None  # really released in the DCS
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "postgresql.pre_promote exited with status 1" in errors[0]
    assert "\n" not in errors[0]


async def test_timed_out_pre_promote_is_a_failure(tmp_path: Path) -> None:
    world = StillWorld()
    pg = replica(world)
    h = hooks(timeout=1.0, pre_promote=script(tmp_path, "sleep 60"))
    ok, executor, holder = await with_executor(
        pg, world, h, [AcquireLeader(), PrePromote(), Promote()])
    assert not ok and executor.pre_promote_failed and holder is None
    assert pg.role is PgRole.REPLICA


async def test_successful_pre_promote_promotes(tmp_path: Path) -> None:
    world = StillWorld()
    pg = replica(world)
    marker = tmp_path / "fenced"
    h = hooks(pre_promote=script(tmp_path, f"touch {marker}"))
    ok, executor, holder = await with_executor(
        pg, world, h, [AcquireLeader(), PrePromote(), Promote()])
    assert ok and not executor.pre_promote_failed and marker.exists()
    assert pg.role is PgRole.PRIMARY and holder == "pg1"


async def test_pre_promote_without_a_command_is_a_no_op() -> None:
    world = StillWorld()
    pg = replica(world)
    ok, _, holder = await with_executor(
        pg, world, hooks(), [AcquireLeader(), PrePromote(), Promote()])
    assert ok and pg.role is PgRole.PRIMARY and holder == "pg1"


@pytest.mark.parametrize("action", [StopPostgres(StopMode.FAST), Demote(StopMode.FAST),
                                    RestartPostgres("replica")])
async def test_before_stop_runs_before_the_stop_and_its_failure_is_ignored(
        tmp_path: Path, action: Any) -> None:
    world = StillWorld()
    marker = tmp_path / "before_stop"
    pg = replica(world, marker)
    h = hooks(before_stop=script(tmp_path, f"touch {marker}; exit 7"))
    ok, _, _ = await with_executor(pg, world, h, [action])
    assert ok and pg.stops and pg.stops[0][1]  # the marker existed when the stop began


@pytest.mark.parametrize("action", [StopPostgres(StopMode.IMMEDIATE), Demote(StopMode.IMMEDIATE)])
async def test_before_stop_is_not_run_before_an_immediate_stop(tmp_path: Path,
                                                               action: Any) -> None:
    world = StillWorld()
    marker = tmp_path / "before_stop"
    pg = replica(world, marker)
    h = hooks(before_stop=script(tmp_path, f"touch {marker}"))
    ok, _, _ = await with_executor(pg, world, h, [action])
    assert ok and not pg.running and not marker.exists()


async def test_before_stop_is_not_run_when_postgres_is_not_running(tmp_path: Path) -> None:
    world = StillWorld()
    marker = tmp_path / "before_stop"
    pg = replica(world, marker)
    pg.running = False
    h = hooks(before_stop=script(tmp_path, f"touch {marker}"))
    ok, _, _ = await with_executor(pg, world, h, [StopPostgres(StopMode.FAST)])
    assert ok and not marker.exists()


class Unanswering(RecordingPg):
    async def observe(self) -> Any:
        raise PgError("no answer")


class BusyLease(OpenLease):
    def __init__(self) -> None:
        self.windows: list[float] = []

    def busy(self, seconds: float) -> contextlib.AbstractContextManager[None]:
        self.windows.append(seconds)
        return contextlib.nullcontext()


async def test_before_stop_runs_when_postgres_cannot_be_probed(tmp_path: Path) -> None:
    world = StillWorld()
    marker = tmp_path / "before_stop"
    pg = Unanswering("pg1", world, data=DataState.VALID, running=True, role=PgRole.REPLICA)
    pg.marker, pg.stops = marker, []
    lease = BusyLease()
    await before_stop(hooks(timeout=7.0, before_stop=script(tmp_path, f"touch {marker}")), pg,
                      lease, probe_timeout=1.0)
    assert marker.exists()
    assert lease.windows and lease.windows[0] >= 7.0  # the loop counts as busy, not stuck


# ------------------------------------------------------------------------------- the backoff
class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def monotonic(self) -> float:
        return self.t

    def wall(self) -> float:
        return 1_700_000_000.0 + self.t


def test_the_agent_reports_the_failure_for_ttl_seconds() -> None:
    clock = Clock()
    stages: Any = SimpleNamespace(observer=SimpleNamespace(settings=HaSettings(ttl=30)))
    cycle = DecisionCycle(stages, asyncio.Event(), clock)
    assert not cycle.pre_promote_backoff()
    cycle.pre_promote_failed_at = clock.t
    clock.t += 29.9
    assert cycle.pre_promote_backoff()
    clock.t += 0.2
    assert not cycle.pre_promote_backoff()


# ------------------------------------------------------------------------------- the keys
BASE: dict[str, Any] = {"name": "pg1", "scope": "demo", "etcd3": {"hosts": "127.0.0.1:2379"},
                        "postgresql": {"data_dir": "/tmp/pgha-hooks-test"}}


def config_with(**pg: Any) -> Any:
    data = {**BASE, "postgresql": {**BASE["postgresql"], **pg}}
    return parse_config(data, env={})


@pytest.mark.parametrize("key", ["pre_promote", "before_stop"])
@pytest.mark.parametrize("value", [5, ["/bin/fence"], {"cmd": "x"}, True])
def test_a_value_that_is_not_a_string_is_refused(key: str, value: Any) -> None:
    with pytest.raises(ConfigError) as err:
        config_with(**{key: value})
    text = str(err.value)
    assert f"postgresql.{key}" in text and "\n" not in text


def test_a_command_a_shell_cannot_split_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"postgresql\.pre_promote: a shell cannot split it"):
        config_with(pre_promote="/bin/fence 'unclosed")


def test_a_reload_applies_hook_changes_without_a_restart() -> None:
    old, new = config_with(pre_promote="/bin/a"), config_with(pre_promote="/bin/b")
    assert changed_keys(old, new) == ["postgresql.pre_promote"]
    assert classify("postgresql.pre_promote") == classify("postgresql.before_stop") == "applied"


def test_hook_commands_are_read(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="pgha.config"):
        config = config_with(pre_promote="/bin/fence --now", before_stop="  ")
    assert config.postgresql.pre_promote == "/bin/fence --now"
    assert config.postgresql.before_stop is None
    assert not [r for r in caplog.records if "pre_promote" in r.getMessage()]


async def test_hooks_get_the_agents_environment(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGHA_HOOK_TEST", "seen")
    out = tmp_path / "env"
    result = await hooks(before_stop=script(tmp_path, f'echo "$PGHA_HOOK_TEST" > {out}')).run(
        "before_stop")
    assert result is not None and result.ok and out.read_text().strip() == "seen"
    assert os.environ["PGHA_HOOK_TEST"] == "seen"
