"""CallbackRunner with small shell scripts that record their arguments (no PostgreSQL)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from pgha.pg.callbacks import CallbackRunner
from pgha.pg.process import pid_alive

pytestmark = pytest.mark.timeout(60)


def script(tmp: Path, name: str, body: str) -> str:
    path = tmp / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def until(check: object, what: str, timeout: float = 20.0) -> None:
    """Poll a zero-argument callable until it is true (fails the test after ``timeout``)."""
    assert callable(check)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def test_arguments_and_order(tmp_path: Path) -> None:
    out = tmp_path / "calls"
    cmd = script(tmp_path, "cb.sh", f'echo "$*" >> {out}\n')
    async with CallbackRunner({"on_start": cmd, "on_role_change": f"{cmd} 'two words'",
                               "on_stop": cmd}, "batman") as runner:
        assert runner.fire("on_start", "replica")
        assert runner.fire("on_role_change", "primary")
        assert runner.fire("on_stop", "primary")
        await runner.wait_idle()
    assert lines(out) == ["on_start replica batman", "two words on_role_change primary batman",
                          "on_stop primary batman"]


async def test_one_at_a_time(tmp_path: Path) -> None:
    out = tmp_path / "calls"
    cmd = script(tmp_path, "cb.sh",
                 f'echo "begin $1" >> {out}\nsleep 0.2\necho "end $1" >> {out}\n')
    async with CallbackRunner({"on_start": cmd, "on_reload": cmd, "on_stop": cmd}, "s") as runner:
        for action in ("on_start", "on_reload", "on_stop"):
            runner.fire(action, "primary")
        await runner.wait_idle()
    assert lines(out) == ["begin on_start", "end on_start", "begin on_reload", "end on_reload",
                          "begin on_stop", "end on_stop"]


async def test_queued_callback_of_same_action_is_superseded(tmp_path: Path) -> None:
    out, gate, started = tmp_path / "calls", tmp_path / "gate", tmp_path / "started"
    blocker = script(tmp_path, "block.sh",
                     f'echo "$*" >> {out}\ntouch {started}\n'
                     f'while [ ! -e {gate} ]; do sleep 0.02; done\n')
    cmd = script(tmp_path, "cb.sh", f'echo "$*" >> {out}\n')
    async with CallbackRunner({"on_role_change": blocker, "on_reload": cmd}, "s") as runner:
        runner.fire("on_role_change", "replica")  # starts and blocks on the gate
        await until(started.exists, "first callback to start")
        runner.fire("on_role_change", "demoted")  # queued ...
        runner.fire("on_reload", "primary")
        runner.fire("on_role_change", "primary")  # ... and replaced by this one, at the end
        gate.touch()
        await runner.wait_idle()
    assert lines(out) == ["on_role_change replica s", "on_reload primary s",
                          "on_role_change primary s"]


async def test_timeout_kills_the_process_group(tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    child = tmp_path / "child.pid"
    after = tmp_path / "after"
    slow = script(tmp_path, "slow.sh", f"sleep 60 &\necho $! > {child}\nwait\n")
    cmd = script(tmp_path, "cb.sh", f"touch {after}\n")
    caplog.set_level(logging.INFO, logger="pgha.callbacks")
    async with CallbackRunner({"on_start": slow, "on_stop": cmd}, "s", timeout=0.5) as runner:
        runner.fire("on_start", "primary")
        runner.fire("on_stop", "primary")
        await runner.wait_idle()
    assert "callback on_start timed out" in caplog.text
    pid = int(child.read_text())
    await until(lambda: not pid_alive(pid), "the callback's child to die")
    assert after.exists()  # the queue went on after the timeout


async def test_output_logged_line_by_line(tmp_path: Path,
                                          caplog: pytest.LogCaptureFixture) -> None:
    cmd = script(tmp_path, "cb.sh", 'echo "hello $2"\necho second\necho oops >&2\nexit 3\n')
    caplog.set_level(logging.INFO, logger="pgha.callbacks")
    async with CallbackRunner({"on_reload": cmd}, "s") as runner:
        runner.fire("on_reload", "replica")
        await runner.wait_idle()
    messages = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert (logging.INFO, "callback on_reload: hello replica") in messages
    assert (logging.INFO, "callback on_reload: second") in messages
    assert (logging.WARNING, "callback on_reload: oops") in messages
    assert (logging.WARNING, "callback on_reload exited with status 3") in messages


async def test_exit_waits_briefly_then_kills_and_drops_the_queue(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    child, quick_out = tmp_path / "child.pid", tmp_path / "quick"
    slow = script(tmp_path, "slow.sh", f"sleep 60 &\necho $! > {child}\nwait\n")
    quick = script(tmp_path, "quick.sh", f'echo "$1" >> {quick_out}\n')
    caplog.set_level(logging.INFO, logger="pgha.callbacks")
    async with CallbackRunner({"on_stop": quick, "on_start": slow, "on_reload": quick}, "s",
                              stop_grace=0.3) as runner:
        runner.fire("on_stop", "primary")  # runs within the grace period
        runner.fire("on_start", "primary")
        runner.fire("on_reload", "primary")  # still queued when the grace period ends
        await until(child.exists, "slow callback to start")
    assert lines(quick_out) == ["on_stop"]
    pid = int(child.read_text())
    await until(lambda: not pid_alive(pid), "the running callback to be killed")
    assert "callbacks not run at shutdown: on_reload primary" in caplog.text
    assert not runner.fire("on_stop", "primary")  # closed


async def test_fire_never_raises(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "calls"
    cmd = script(tmp_path, "cb.sh", f'echo "$*" >> {out}\n')
    runner = CallbackRunner({"on_start": cmd, "on_stop": "'unbalanced",
                             "on_reload": str(tmp_path / "missing"), "on_restart": None,
                             "on_bogus": cmd}, "s")
    assert "ignoring unknown callbacks: on_bogus" in caplog.text
    assert not runner.fire("on_start", "primary")  # not entered yet
    async with runner:
        assert not runner.fire("on_restart", "primary")  # not configured
        assert not runner.fire("on_start", "leader")  # unknown role
        assert not runner.fire("on_nothing", "primary")  # unknown action
        assert not runner.fire("on_stop", "primary")  # command cannot be parsed
        assert runner.fire("on_reload", "primary")  # program missing: logged, queue goes on
        assert runner.fire("on_start", "standby_leader")
        await runner.wait_idle()
    assert lines(out) == ["on_start standby_leader s"]
    assert "cannot start" in caplog.text


async def test_update_changes_commands(tmp_path: Path) -> None:
    out = tmp_path / "calls"
    one = script(tmp_path, "one.sh", f'echo "one $1" >> {out}\n')
    two = script(tmp_path, "two.sh", f'echo "two $1" >> {out}\n')
    async with CallbackRunner({"on_start": one}, "s") as runner:
        runner.fire("on_start", "primary")
        await runner.wait_idle()
        runner.update({"on_start": two, "on_stop": None})
        runner.fire("on_start", "primary")
        assert not runner.fire("on_stop", "primary")
        await runner.wait_idle()
    assert lines(out) == ["one on_start", "two on_start"]
