"""``GET /patroni`` carries Patroni's health fields of the agent itself: ``watchdog_failed``
(a required watchdog that cannot be armed), ``logger_queue_size`` (a log backlog above normal)
and ``logger_records_lost``; each only when it has something to say, as in Patroni. They come
from the real watchdog and the real logging through the decision cycle's publish."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

from tests.unit.api_support import Source, api, replica_status

from pgha.agent import logsetup
from pgha.agent.logsetup import AgentLogging, logger_backlog
from pgha.agent.watchdog import LeaderWatchdog
from pgha.config.log import LogConfig
from pgha.config.models import WatchdogConfig
from pgha.core.status import NORMAL_LOG_BACKLOG


async def patroni_json(**fields: object) -> dict[str, object]:
    async with api(Source(replace(replica_status(), **fields))) as client:  # type: ignore[arg-type]
        resp = await client.get("/patroni")
        body: dict[str, object] = json.loads(await resp.text())
    return body


async def test_healthy_agent_shows_none_of_them() -> None:
    body = await patroni_json()
    assert not {"watchdog_failed", "logger_queue_size", "logger_records_lost"} & set(body)


async def test_failed_watchdog_and_log_backlog_are_shown() -> None:
    body = await patroni_json(watchdog_failed=True, logger=(NORMAL_LOG_BACKLOG + 5, 3))
    assert body["watchdog_failed"] is True
    assert body["logger_queue_size"] == NORMAL_LOG_BACKLOG + 5
    assert body["logger_records_lost"] == 3
    body = await patroni_json(logger=(NORMAL_LOG_BACKLOG, 0))
    assert "logger_queue_size" not in body and "logger_records_lost" not in body


def test_required_watchdog_without_a_device_is_failed(tmp_path: Path) -> None:
    """What the cycle publishes as ``watchdog_failed``: ``not usable()``."""
    missing = str(tmp_path / "no-such-watchdog")
    required = LeaderWatchdog(WatchdogConfig(mode="required", device=missing), ttl=lambda: 30.0)
    automatic = LeaderWatchdog(WatchdogConfig(mode="automatic", device=missing),
                               ttl=lambda: 30.0)
    assert not required.usable()
    assert automatic.usable()  # automatic never keeps a member out: not "failed"


def test_logger_backlog_reads_the_installed_logging(tmp_path: Path) -> None:
    root = logging.getLogger()
    handlers, level, active = root.handlers[:], root.level, logsetup.active()
    with open(tmp_path / "stderr", "w") as stream:
        logs = AgentLogging.install(LogConfig(), stream=stream, exclusive=False)
        try:
            logs.handler.records_lost = 4
            assert logger_backlog() == (logs.queue_size, 4)
        finally:
            logs.stop()
            root.handlers[:] = handlers
            root.setLevel(level)
            logsetup._active = active
