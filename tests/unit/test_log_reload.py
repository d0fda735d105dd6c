"""The ``log`` section at run time: a reload applies all of it (or refuses a value it cannot
use, naming the key, keeping the running logging), and ``pgha run`` writes out every queued
line before it exits, the exit reason included, on a fatal exit and on a clean stop (the
real process, JSON lines in ``log.dir``/pgha.log)."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from tests.support.etcd import free_port
from tests.unit.test_agent_reload import Agent, agent  # noqa: F401  (the fixture)
from typer.testing import CliRunner

import pgha
from pgha.agent import lifecycle, logsetup
from pgha.agent.logsetup import AgentLogging
from pgha.cli import daemon
from pgha.cli.main import app
from pgha.errors import AgentFatal

pytestmark = pytest.mark.usefixtures("restore_root_logging")


@pytest.fixture
def installed(agent: Agent) -> Iterator[tuple[AgentLogging, io.StringIO]]:  # noqa: F811
    out = io.StringIO()
    logs = AgentLogging.install(agent.local.config.log, stream=out, exclusive=False)
    yield logs, out
    logs.close()


async def test_reload_switches_plain_to_json(
        agent: Agent, installed: tuple[AgentLogging, io.StringIO],  # noqa: F811
        caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    logs, out = installed
    caplog.set_level(logging.INFO)
    logging.getLogger("t").info("before")
    agent.write(log={"type": "json", "static_fields": {"cluster": "demo"},
                     "dir": str(tmp_path / "logs")})
    assert await agent.reloader.reload(None, "replica")
    logging.getLogger("t").info("after", extra={"role": "replica"})
    logs.close()
    text = out.getvalue().splitlines()
    assert text[0].endswith(" INFO t: before")
    records = [json.loads(line) for line in text if line.startswith("{")]
    assert text[-len(records):] == [json.dumps(r) for r in records]  # plain, then only JSON
    assert {"message": "reload: applied: log.dir, log.static_fields, log.type", "name":
            "pgha.agent", "cluster": "demo"}.items() <= records[0].items()
    assert records[-1]["message"] == "after" and records[-1]["role"] == "replica"
    in_file = (tmp_path / "logs" / "pgha.log").read_text().splitlines()
    assert json.loads(in_file[-1]) == records[-1]


@pytest.mark.parametrize(("log", "error"), [
    ({"type": "xml"}, "reload: log.type: must be plain or json; keeping the running "
                      "configuration"),
    ({"dir": "FILE"}, "reload: log.dir: cannot write pgha.log in FILE: "),
])
async def test_reload_refuses_a_bad_log_value_and_keeps_logging(
        agent: Agent, installed: tuple[AgentLogging, io.StringIO],  # noqa: F811
        caplog: pytest.LogCaptureFixture, tmp_path: Path, log: dict[str, Any],
        error: str) -> None:
    logs, out = installed
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    log = {k: str(not_a_dir) if v == "FILE" else v for k, v in log.items()}
    error = error.replace("FILE", str(not_a_dir))
    caplog.set_level(logging.INFO)
    agent.write(log={"type": "json", **log})
    assert not await agent.reloader.reload(None, "replica")
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].startswith(error), errors
    assert "\n" not in errors[0]
    logging.getLogger("t").info("still plain")
    logs.close()
    assert out.getvalue().splitlines()[-1].endswith(" INFO t: still plain")
    assert agent.local.config.log.type == "plain"


# ------------------------------------------------------------------------- pgha run

def write_config(tmp_path: Path, **log: Any) -> Path:
    config = tmp_path / "pgha.yml"
    config.write_text(yaml.safe_dump({
        "scope": "demo", "name": "pg1",
        "etcd": {"host": f"127.0.0.1:{free_port()}"},  # nothing listens there
        "restapi": {"listen": f"127.0.0.1:{free_port()}"},
        "postgresql": {"listen": f"127.0.0.1:{free_port()}", "data_dir": str(tmp_path / "data"),
                       "bin_dir": "/usr/lib/postgresql/15/bin"},
        "bootstrap": {"dcs": {"ttl": 10, "loop_wait": 1, "retry_timeout": 2}},
        "log": {"dir": str(tmp_path / "logs"), **log}}))
    return config


class SlowStderr(io.StringIO):
    """A slow terminal: the writer thread falls far behind the agent."""

    def write(self, text: str) -> int:
        time.sleep(0.005)
        return super().write(text)


class FailingAgent:
    """Stands in for the agent: logs a burst, then ends the way a fatal error does."""

    def __init__(self, config: Any, path: Path) -> None:
        pass

    async def run(self) -> None:
        for i in range(200):
            logging.getLogger("pgha.agent").info("busy %d", i)
        raise AgentFatal("the exit reason")


def test_fatal_exit_writes_out_every_queued_line(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lifecycle, "Agent", FailingAgent)
    monkeypatch.setattr(sys, "stderr", SlowStderr())
    config = write_config(tmp_path, type="json")
    with pytest.raises(typer.Exit) as info:
        daemon.run(config)
    assert info.value.exit_code == 1
    assert logsetup.active() is None
    last = json.loads((tmp_path / "logs" / "pgha.log").read_text().splitlines()[-1])
    assert (last["levelname"], last["message"]) == ("CRITICAL", "the exit reason")
    assert sys.stderr.getvalue().splitlines()[-1] == json.dumps(last)


def test_pgha_run_writes_json_lines_to_log_dir(tmp_path: Path) -> None:
    config = write_config(tmp_path, type="json", static_fields={"app": "pgha"},
                          format=["asctime", {"levelname": "level"}, "name", "message"])
    env = {**os.environ, "PYTHONPATH": str(Path(pgha.__file__).resolve().parents[1])}
    for var in [v for v in env if v.startswith(("PATRONI_", "PGHA_"))]:
        del env[var]
    logfile = tmp_path / "logs" / "pgha.log"
    proc = subprocess.Popen([sys.executable, "-m", "pgha.cli.main", "run", str(config)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if logfile.exists() and '"message": "decision ' in logfile.read_text():
                break
            time.sleep(0.1)
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr.decode()[-2000:]
    records = [json.loads(line) for line in logfile.read_text().splitlines()]
    assert all(set(r) >= {"asctime", "level", "name", "message", "app"} for r in records)
    assert any(r["message"].startswith("decision ") for r in records)
    assert records[-1]["message"] == "agent stopped"  # the last line is not lost
    assert stderr.decode().splitlines()[-1] == json.dumps(records[-1])


def test_pgha_run_refuses_a_log_dir_it_cannot_write(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    config = write_config(tmp_path, dir=str(blocker / "logs"))
    result = CliRunner().invoke(app, ["run", str(config)])
    assert result.exit_code == 2, result.output
    (line,) = [x.strip() for x in result.stderr.splitlines() if x.strip().startswith("log.")]
    assert line.startswith(f"log.dir: cannot write pgha.log in {blocker / 'logs'}: ")
    assert "Traceback" not in result.output
