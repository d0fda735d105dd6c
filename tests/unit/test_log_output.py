"""The ``log`` section applied (:mod:`pgha.agent.logsetup`): plain and JSON lines, tracebacks,
per-logger levels, the log file's rotation and permissions, the bounded queue and the
heartbeat deduplication. Each test installs the real two-step logging on a text stream and
reads what the writer thread wrote after :meth:`AgentLogging.close` drained it."""

from __future__ import annotations

import io
import json
import logging
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pgha.agent import logsetup
from pgha.agent.logsetup import AgentLogging, HeartbeatDedup
from pgha.config.log import LogConfig

Install = Callable[..., tuple[AgentLogging, io.StringIO]]
TOUCHED = ("t", "t.noisy", "pgha.dcs", "aiohttp.access")


@pytest.fixture
def install(restore_root_logging: None) -> Iterator[Install]:
    made: list[AgentLogging] = []

    def make(stream: io.StringIO | None = None, **log: Any) -> tuple[AgentLogging, io.StringIO]:
        out = stream if stream is not None else io.StringIO()
        logs = AgentLogging.install(LogConfig(**log), stream=out, exclusive=False)
        made.append(logs)
        return logs, out

    yield make
    for logs in made:
        logs.close()
    for name in TOUCHED:
        logging.getLogger(name).setLevel(logging.NOTSET)


def lines(logs: AgentLogging, out: io.StringIO) -> list[str]:
    logs.close()
    return out.getvalue().splitlines()


def test_plain_lines_follow_format_and_dateformat(install: Install) -> None:
    logs, out = install(format="%(asctime)s|%(levelname)s|%(name)s|%(message)s",
                        dateformat="day-%%")
    logging.getLogger("t").info("hello %s", "world")
    logging.getLogger("t").debug("not at INFO")
    assert lines(logs, out) == ["day-%|INFO|t|hello world"]


def test_default_plain_line_names_the_logger(install: Install) -> None:
    logs, out = install()
    logging.getLogger("t").warning("careful")
    (line,) = lines(logs, out)
    assert line.endswith(" WARNING t: careful")


class Opaque:
    def __str__(self) -> str:
        return "opaque!"


def test_json_lines_carry_static_fields_and_every_extra(install: Install) -> None:
    logs, out = install(type="json", dateformat="D", static_fields={"cluster": "batman",
                                                                    "dc": 2})
    logging.getLogger("t").info(
        "decision %s: %s", "leader_healthy", "all good",
        extra={"reason": "leader_healthy", "role": "primary", "timeline": 3, "lag": None,
               "members": ["a", "b"], "blob": Opaque(), "ratio": float("nan")})
    (line,) = lines(logs, out)
    assert json.loads(line) == {
        "asctime": "D", "levelname": "INFO", "name": "t",
        "message": "decision leader_healthy: all good", "cluster": "batman", "dc": 2,
        "reason": "leader_healthy", "role": "primary", "timeline": 3, "lag": None,
        "members": ["a", "b"], "blob": "opaque!", "ratio": "nan"}


def test_json_format_as_list_with_renames(install: Install) -> None:
    logs, out = install(type="json", dateformat="D",
                        format=["asctime", {"levelname": "level", "name": "logger"},
                                "message"])
    logging.getLogger("t").error("broken")
    (line,) = lines(logs, out)
    record = json.loads(line)
    assert record == {"asctime": "D", "level": "ERROR", "logger": "t", "message": "broken"}
    assert list(record) == ["asctime", "level", "logger", "message"]


def test_json_format_as_string_of_fields(install: Install) -> None:
    logs, out = install(type="json", format="%(levelname)s %(message)s %(process)d")
    logging.getLogger("t").info("x")
    (line,) = lines(logs, out)
    assert set(json.loads(line)) == {"levelname", "message", "process"}


def _fail(logger: logging.Logger) -> None:
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        logger.exception("it failed")


def test_json_exception_text_is_a_field(install: Install) -> None:
    logs, out = install(type="json")
    _fail(logging.getLogger("t"))
    (line,) = lines(logs, out)
    record = json.loads(line)
    assert record["message"] == "it failed"
    assert record["exc_info"].startswith("Traceback") and "ZeroDivisionError" in \
        record["exc_info"]


def test_traceback_by_default(install: Install) -> None:
    logs, out = install()
    _fail(logging.getLogger("t"))
    text = "\n".join(lines(logs, out))
    assert "it failed\nTraceback (most recent call last):" in text


def test_traceback_level_debug_hides_tracebacks_unless_debug_logging(
        install: Install) -> None:
    logs, out = install(traceback_level="DEBUG", format="%(levelname)s %(message)s")
    _fail(logging.getLogger("t"))
    assert lines(logs, out) == ["ERROR it failed (ZeroDivisionError: division by zero)"]
    logs, out = install(traceback_level="DEBUG", level="DEBUG")
    _fail(logging.getLogger("t"))
    assert "Traceback" in "\n".join(lines(logs, out))


def test_per_logger_levels_and_their_removal(install: Install) -> None:
    logs, out = install(format="%(name)s %(message)s",
                        loggers={"pgha.dcs": "DEBUG", "t.noisy": "ERROR"})
    logging.getLogger("pgha.dcs").debug("dcs detail")
    logging.getLogger("t.noisy").warning("hidden")
    logging.getLogger("t").debug("hidden too")
    assert logging.getLogger("aiohttp.access").level == logging.WARNING
    logs.reconfigure(LogConfig(format="%(name)s %(message)s"))
    logging.getLogger("t.noisy").warning("shown now")
    logging.getLogger("pgha.dcs").debug("hidden now")
    assert lines(logs, out) == ["pgha.dcs dcs detail", "t.noisy shown now"]


def test_log_dir_rotates_keeping_file_num_files_with_mode(install: Install,
                                                          tmp_path: Path) -> None:
    logdir = tmp_path / "logs" / "pgha"
    logs, _ = install(dir=str(logdir), file_size=300, file_num=2, mode=0o600,
                      format="%(message)s")
    for i in range(60):
        logging.getLogger("t").info("line %03d %s", i, "x" * 40)
    logs.close()
    names = sorted(p.name for p in logdir.iterdir())
    assert names == ["pgha.log", "pgha.log.1", "pgha.log.2"]
    for path in logdir.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert path.stat().st_size <= 300
    assert (logdir / "pgha.log").read_text().splitlines()[-1].startswith("line 059 ")
    kept = "".join((logdir / n).read_text() for n in ("pgha.log.2", "pgha.log.1", "pgha.log"))
    assert "line 000 " not in kept  # the oldest were removed


class BlockedStream(io.StringIO):
    """A destination that blocks its first write until released."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def write(self, text: str) -> int:
        self.entered.set()
        if not self.release.wait(30):
            raise RuntimeError("never released")
        return super().write(text)


def test_full_queue_drops_counts_and_reports(install: Install) -> None:
    stream = BlockedStream()
    logs, out = install(stream, max_queue_size=2, format="%(levelname)s %(message)s")
    log = logging.getLogger("t")
    log.info("first")
    assert stream.entered.wait(30)  # the writer holds "first"; the queue is empty
    for i in range(10):
        log.info("burst %d", i)  # two fit, eight are dropped, the caller never waits
    assert logs.records_lost == 8
    stream.release.set()
    for _ in range(3000):
        if logs.queue_size == 0:
            break
        threading.Event().wait(0.01)
    log.info("after")
    assert lines(logs, out) == [
        "INFO first", "INFO burst 0", "INFO burst 1",
        "WARNING logging queue was full: 8 log record(s) were dropped", "INFO after"]


def test_heartbeat_dedup_writes_a_line_again_when_it_changes_or_after_a_while(
        install: Install) -> None:
    logs, out = install(deduplicate_heartbeat_logs=True, format="%(message)s")
    agent = logging.getLogger("pgha.agent")
    for _ in range(3):
        agent.info("decision %s: %s [actions: %s]", "leader_healthy", "ok", "none")
        agent.info("reload requested")  # other lines are never dropped
    agent.info("decision %s: %s [actions: %s]", "demote", "lost lock", "Demote")
    agent.info("decision %s: %s [actions: %s]", "leader_healthy", "ok", "none")
    logging.getLogger("t").info("decision elsewhere")
    logging.getLogger("t").info("decision elsewhere")
    assert lines(logs, out) == [
        "decision leader_healthy: ok [actions: none]", "reload requested",
        "reload requested", "reload requested", "decision demote: lost lock [actions: Demote]",
        "decision leader_healthy: ok [actions: none]", "decision elsewhere",
        "decision elsewhere"]


def test_heartbeat_dedup_repeats_after_the_interval() -> None:
    now = [0.0]
    dedup = HeartbeatDedup(clock=lambda: now[0], repeat_after=600)

    def passes() -> bool:
        return dedup.filter(logging.LogRecord("pgha.agent", logging.INFO, "", 0,
                                              "decision %s", ("x",), None))

    assert [passes(), passes()] == [True, False]
    now[0] = 599.0
    assert not passes()
    now[0] = 600.0
    assert passes() and not passes()
    assert dedup.suppressed == 3


def test_dedup_off_by_default(install: Install) -> None:
    logs, out = install(format="%(message)s")
    for _ in range(2):
        logging.getLogger("pgha.agent").info("decision %s", "same")
    assert lines(logs, out) == ["decision same", "decision same"]


def test_stop_writes_out_the_queue_then_logs_directly(install: Install) -> None:
    stream = BlockedStream()
    logs, out = install(stream, format="%(message)s")
    logging.getLogger("t").info("queued 1")
    assert stream.entered.wait(30)
    logging.getLogger("t").info("queued 2")
    stream.release.set()
    logs.stop()  # waits for the writer
    assert out.getvalue().splitlines() == ["queued 1", "queued 2"]
    logging.getLogger("t").info("after stop")  # straight to the destination
    assert out.getvalue().splitlines()[-1] == "after stop"


def test_stop_does_not_hang_on_a_stuck_destination(install: Install,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logsetup, "STOP_TIMEOUT", 0.1)
    stream = BlockedStream()
    logs, out = install(stream, format="%(message)s")
    logging.getLogger("t").info("stuck")
    assert stream.entered.wait(30)
    logs.stop()  # returns although the writer cannot finish
    logging.getLogger("t").info("dropped")  # not routed to the stuck destination
    stream.release.set()
    assert "dropped" not in out.getvalue()
