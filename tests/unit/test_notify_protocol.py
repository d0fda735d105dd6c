"""sd_notify protocol (pgha.agent.notify) against a real AF_UNIX datagram socket, the
environment hand-off (children never see the variables), and the sample unit file."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgha.agent.notify import Notifier, NotifyEnv, status_line, take_environment
from pgha.core.model import DataState, PgRole, PgState, Tags
from pgha.core.status import AgentStatus

UNIT = Path(__file__).resolve().parents[2] / "configs" / "systemd" / "pgha@.service"


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.setblocking(False)
    yield sock
    sock.close()


def received(sock: socket.socket) -> list[str]:
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


def test_messages_reach_a_path_socket(tmp_path: Path, receiver: socket.socket) -> None:
    n = Notifier(NotifyEnv(str(tmp_path / "notify")))
    n.status("replica, starting")
    n.status("replica, starting")  # unchanged: not sent again
    n.ready()
    n.ready()
    n.status("leader, running")
    n.stopping()
    n.stopping()
    assert received(receiver) == ["STATUS=replica, starting", "READY=1",
                                  "STATUS=leader, running", "STOPPING=1"]
    n.close()


def test_abstract_socket_name() -> None:
    name = f"pgha-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    try:
        n = Notifier(NotifyEnv("@" + name))
        n.ready()
        assert sock.recv(100) == b"READY=1"
    finally:
        sock.close()


def test_without_socket_nothing_happens() -> None:
    n = Notifier(NotifyEnv())
    n.ready()
    n.status("x")
    n.stopping()
    assert not n.enabled and n.sent == 0 and n.watchdog_interval is None


def test_send_errors_are_logged_once_and_never_raised(tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pgha.agent")
    n = Notifier(NotifyEnv(str(tmp_path / "nobody-listens")))
    for _ in range(3):
        assert n.send("WATCHDOG=1") is False
    assert len([r for r in caplog.records if "notification" in r.message]) == 1
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "nobody-listens"))
    try:
        assert n.send("WATCHDOG=1") is True
        assert any("work again" in r.message for r in caplog.records)
    finally:
        sock.close()


def test_take_environment_removes_the_variables() -> None:
    env = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "42",
           "PATH": "/bin"}
    got = take_environment(env, pid=42)
    assert got == NotifyEnv("/run/x", 30_000_000) and env == {"PATH": "/bin"}
    # the watchdog is meant for another process: ignored
    env = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "41"}
    assert take_environment(env, pid=42) == NotifyEnv("/run/x", None) and env == {}
    env = {"WATCHDOG_USEC": "abc"}
    assert take_environment(env, pid=1) == NotifyEnv() and env == {}
    assert Notifier(NotifyEnv("/x", 30_000_000)).watchdog_interval == 15.0


def test_children_do_not_inherit_the_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """A real child started after take_environment (as the agent starts PostgreSQL) has
    none of the variables; the environment otherwise passes on."""
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/pgha-test")
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    monkeypatch.setenv("PGHA_TEST_KEPT", "1")
    take_environment()
    out = subprocess.run([sys.executable, "-c", "import os; print(sorted(os.environ))"],
                         capture_output=True, text=True, check=True).stdout
    assert "PGHA_TEST_KEPT" in out
    assert "NOTIFY_SOCKET" not in out and "WATCHDOG_USEC" not in out


def test_watchdog_pings_only_while_the_loop_is_alive(tmp_path: Path,
                                                     receiver: socket.socket) -> None:
    n = Notifier(NotifyEnv(str(tmp_path / "notify"), 2_000))  # a ping every 1 ms
    answers = iter([True, True, False, False, True])

    def alive() -> bool:
        try:
            return next(answers)
        except StopIteration:
            raise asyncio.CancelledError from None

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(n.watchdog_loop(alive))
    assert received(receiver) == ["WATCHDOG=1"] * 3


def status(role: PgRole | None, holds_lock: bool = False, **details: object) -> AgentStatus:
    pg = PgState(data=DataState.VALID, running=role is not None, accepting=True,
                 role=role or PgRole.REPLICA, upstream="pg1" if role is PgRole.REPLICA else None)
    return AgentStatus("pg2", "demo", Tags(), "", "", pg=pg, pg_details=details,
                       holds_lock=holds_lock)


def test_status_lines() -> None:
    assert status_line(status(PgRole.PRIMARY, holds_lock=True)) == "leader, running"
    assert status_line(status(PgRole.REPLICA, replication_state="streaming")) == (
        "replica, streaming from pg1")
    assert status_line(status(PgRole.REPLICA, replication_state="in archive recovery")) == (
        "replica, in archive recovery")
    assert status_line(status(None)).endswith(", stopped")


# ------------------------------------------------------------------------- the unit file


def unit_settings() -> dict[str, str]:
    out = {}
    for line in UNIT.read_text().splitlines():
        m = re.match(r"^([A-Za-z]+)=(.*)$", line)
        if m:
            out[m[1]] = m[2]
    return out


def test_unit_file_settings() -> None:
    s = unit_settings()
    assert s["Type"] == "notify" and s["NotifyAccess"] == "main"
    assert s["KillMode"] == "process"  # stopping the agent never kills PostgreSQL
    assert s["WatchdogSec"] and s["KillSignal"] == "SIGTERM"
    assert "%i" in s["ExecStart"] and s["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert s["Restart"] == "on-failure" and s["User"] == "postgres"


def test_unit_file_verifies(tmp_path: Path) -> None:
    """``systemd-analyze verify`` offline: the unit is copied with ExecStart pointing at a
    binary that exists here (verify checks that the program exists)."""
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None, "systemd-analyze is not installed"
    text = UNIT.read_text()
    exec_start = unit_settings()["ExecStart"].split()[0]
    unit = tmp_path / "pgha@.service"
    unit.write_text(text.replace(exec_start, "/bin/true"))
    instance = tmp_path / "pgha@demo.service"
    instance.symlink_to(unit)
    done = subprocess.run([analyze, "verify", "--man=no", str(instance)],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "SYSTEMD_LOG_LEVEL": "warning"})
    problems = [line for line in (done.stderr + done.stdout).splitlines()
                if "pgha@" in line]
    assert done.returncode == 0 and not problems, done.stderr + done.stdout
