"""REST API unsafe methods: bodies parsed into commands, outcomes answered as is, malformed
bodies refused with 400 and nothing submitted."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from tests.unit.api_support import Source, api, cluster_view, primary_status, replica_status

from pgha.api import handlers
from pgha.core.commands import (
    CancelRestart,
    CancelSwitchover,
    Command,
    Outcome,
    PatchConfig,
    Reinitialize,
    ReplaceConfig,
    Restart,
    Switchover,
)

FUTURE = "2099-01-01T03:00:00+00:00"
FUTURE_DT = datetime(2099, 1, 1, 3, 0, tzinfo=UTC)


async def send(method: str, path: str, body: Any = None, *, raw: bytes | None = None,
               source: Source | None = None) -> tuple[int, str, Source]:
    source = source or Source(primary_status(view=cluster_view(config={"ttl": 30})))
    async with api(source) as client:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        resp = await client.request(method, path, data=data)
        return resp.status, await resp.text(), source


# --------------------------------------------------------------------------- valid bodies


@pytest.mark.parametrize(("method", "path", "body", "command"), [
    ("POST", "/switchover", {"leader": "pg1"}, Switchover(leader="pg1")),
    ("POST", "/switchover", {"leader": "pg1", "candidate": "pg2"},
     Switchover(leader="pg1", candidate="pg2")),
    ("POST", "/switchover", {"leader": "pg1", "member": "pg2", "extra": [1]},
     Switchover(leader="pg1", candidate="pg2")),
    ("POST", "/switchover", {"leader": "pg1", "candidate": None, "scheduled_at": None},
     Switchover(leader="pg1")),
    ("POST", "/switchover", {"leader": "pg1", "candidate": "pg2", "scheduled_at": FUTURE},
     Switchover(leader="pg1", candidate="pg2", scheduled_at=FUTURE_DT)),
    ("POST", "/switchover", {"leader": "pg1", "scheduled_at": "2099-01-01T05:00:00+02:00"},
     Switchover(leader="pg1", scheduled_at=FUTURE_DT)),
    ("POST", "/switchover", {"leader": "pg1", "scheduled_at": "2099-01-01T03:00:00Z"},
     Switchover(leader="pg1", scheduled_at=FUTURE_DT)),
    ("POST", "/failover", {"candidate": "pg2"}, Switchover(candidate="pg2", failover=True)),
    ("POST", "/failover", {"candidate": "pg2", "leader": "pg1"},
     Switchover(leader="pg1", candidate="pg2", failover=True)),
    ("POST", "/failover", {"member": "pg2"}, Switchover(candidate="pg2", failover=True)),
    ("DELETE", "/switchover", None, CancelSwitchover()),
    ("POST", "/restart", None, Restart()),
    ("POST", "/restart", {}, Restart()),
    ("POST", "/restart", {"restart_pending": True, "role": "master",
                          "postgres_version": "15.4", "timeout": 30, "schedule": FUTURE},
     Restart(restart_pending=True, role="primary", postgres_version="15.4", timeout=30.0,
             schedule=FUTURE_DT)),
    ("POST", "/restart", {"role": "any", "timeout": "5min", "postgres_version": "16"},
     Restart(timeout=300.0, postgres_version="16")),
    ("POST", "/restart", {"role": "replica", "timeout": 2.5}, Restart(role="replica",
                                                                     timeout=2.5)),
    ("DELETE", "/restart", None, CancelRestart()),
    ("POST", "/reinitialize", None, Reinitialize()),
    ("POST", "/reinitialize", {"force": True, "from_leader": True},
     Reinitialize(force=True, from_leader=True)),
    ("POST", "/reinitialize", {"from-leader": True}, Reinitialize(from_leader=True)),
    ("PATCH", "/config", {"ttl": 20, "postgresql": {"parameters": {"work_mem": "8MB"}}},
     PatchConfig(patch={"ttl": 20, "postgresql": {"parameters": {"work_mem": "8MB"}}})),
    ("PATCH", "/config", {"pause": None}, PatchConfig(patch={"pause": None})),
    ("PUT", "/config", {"ttl": 30, "loop_wait": 5}, ReplaceConfig(config={"ttl": 30,
                                                                        "loop_wait": 5})),
], ids=lambda v: v if isinstance(v, str) else None)
async def test_valid_body_is_submitted_as_a_command(method: str, path: str, body: Any,
                                                    command: Command) -> None:
    code, text, source = await send(method, path, body)
    assert (code, text) == (200, "done")
    assert source.commands == [command]


async def test_reload_is_submitted_and_any_body_ignored() -> None:
    source = Source(replica_status(), default=Outcome(202, "reload scheduled"))
    code, text, _ = await send("POST", "/reload", raw=b"garbage", source=source)
    assert (code, text) == (202, "reload scheduled")
    assert len(source.commands) == 1 and type(source.commands[0]).__name__ == "Reload"


@pytest.mark.parametrize("outcome", [
    Outcome(202, "switchover scheduled"), Outcome(412, "no good candidates have been found"),
    Outcome(503, "switchover failed"), Outcome(400, "Can't schedule switchover in pause"),
])
async def test_outcome_code_and_message_answered_as_is(outcome: Outcome) -> None:
    source = Source(primary_status(), default=outcome)
    code, text, _ = await send("POST", "/switchover", {"leader": "pg1"}, source=source)
    assert (code, text) == (outcome.code, outcome.message)


async def test_outcome_data_is_answered_as_json() -> None:
    source = Source(primary_status(), default=Outcome(200, "ignored", {"ttl": 20}))
    async with api(source) as client:
        resp = await client.patch("/config", json={"ttl": 20})
        assert resp.status == 200
        assert resp.content_type == "application/json"
        assert await resp.json() == {"ttl": 20}


async def test_an_agent_that_does_not_answer_gets_503(monkeypatch: pytest.MonkeyPatch) -> None:
    release = asyncio.Event()

    class Stuck(Source):
        async def submit(self, command: Command) -> Outcome:
            self.commands.append(command)
            await release.wait()
            return Outcome(200, "late")

    monkeypatch.setattr(handlers, "submit_timeout", lambda status: 0.05)
    source = Stuck(primary_status())
    code, text, _ = await send("DELETE", "/restart", source=source)
    assert code == 503
    assert "no answer from the agent" in text
    assert source.commands == [CancelRestart()]
    release.set()


def test_submit_timeout_covers_a_switchover_wait() -> None:
    assert handlers.submit_timeout(primary_status(view=None)) >= 60
    status = primary_status()
    assert handlers.submit_timeout(status) >= 3 * max(10, status.view.settings.loop_wait)


# --------------------------------------------------------------------------- bad bodies

PAST = (datetime.now(UTC) - timedelta(hours=1)).isoformat()


@pytest.mark.parametrize(("method", "path", "raw", "reason"), [
    ("POST", "/switchover", b"", "required"),
    ("POST", "/switchover", b"not json", "not valid JSON"),
    ("POST", "/switchover", b"[1]", "JSON object"),
    ("POST", "/switchover", b'"pg1"', "JSON object"),
    ("POST", "/switchover", b"{}", "leader is required"),
    ("POST", "/switchover", b'{"leader": 1}', "leader must be a string"),
    ("POST", "/switchover", b'{"leader": ""}', "leader must not be empty"),
    ("POST", "/switchover", b'{"leader": "pg1", "candidate": ["pg2"]}', "candidate"),
    ("POST", "/switchover", b'{"leader": "pg1", "candidate": "pg1"}', "is the current leader"),
    ("POST", "/switchover", b'{"leader": "pg1", "candidate": "pg2", "member": "pg3"}',
     "different members"),
    ("POST", "/switchover", b'{"leader": "pg1", "scheduled_at": "2099-01-01T03:00:00"}',
     "timezone"),
    ("POST", "/switchover", b'{"leader": "pg1", "scheduled_at": "tomorrow"}', "ISO 8601"),
    ("POST", "/switchover", b'{"leader": "pg1", "scheduled_at": 4102444800}', "string"),
    ("POST", "/switchover", b'{"leader": "pg1", "scheduled_at": "%s"}' % PAST.encode(),
     "in the past"),
    ("POST", "/switchover", b'{"leader": NaN}', "not valid JSON"),
    ("POST", "/switchover", b"\xff\xfe", "not valid JSON"),
    ("POST", "/switchover", b"[" * 100000, "not valid JSON"),
    ("POST", "/failover", b"", "Failover could be performed only to a specific candidate"),
    ("POST", "/failover", b'{"leader": "pg1"}',
     "Failover could be performed only to a specific candidate"),
    ("POST", "/failover", b'{"candidate": "pg2", "scheduled_at": "2099-01-01T03:00:00Z"}',
     "cannot be scheduled"),
    ("POST", "/failover", b'{"candidate": 2}', "candidate must be a string"),
    ("POST", "/restart", b"[]", "JSON object"),
    ("POST", "/restart", b'{"restart_pending": "yes"}', "restart_pending must be true or false"),
    ("POST", "/restart", b'{"role": "leader"}', "role must be one of"),
    ("POST", "/restart", b'{"role": 1}', "role must be a string"),
    ("POST", "/restart", b'{"postgres_version": "fifteen"}', "postgres_version"),
    ("POST", "/restart", b'{"postgres_version": 15}', "postgres_version must be a string"),
    ("POST", "/restart", b'{"timeout": 0}', "timeout must be positive"),
    ("POST", "/restart", b'{"timeout": -5}', "timeout must be positive"),
    ("POST", "/restart", b'{"timeout": true}', "timeout must be a number"),
    ("POST", "/restart", b'{"timeout": "soon"}', "timeout must be a number"),
    ("POST", "/restart", b'{"timeout": 1e999}', "timeout must be positive"),
    ("POST", "/restart", b'{"timeout": 1%s}' % (b"0" * 400), "timeout is too large"),
    ("POST", "/restart", b'{"timeout": "1%s"}' % (b"0" * 400), "timeout"),
    ("POST", "/restart", b'{"schedule": "2099-01-01 03:00"}', "timezone"),
    ("POST", "/restart", b'{"schedule": "%s"}' % PAST.encode(), "in the past"),
    ("POST", "/reinitialize", b'{"force": 1}', "force must be true or false"),
    ("POST", "/reinitialize", b'{"from_leader": "true"}', "from_leader must be true or false"),
    ("POST", "/reinitialize", b"{", "not valid JSON"),
    ("PATCH", "/config", b"", "required"),
    ("PATCH", "/config", b"[]", "JSON object"),
    ("PATCH", "/config", b"null", "JSON object"),
    ("PATCH", "/config", b'{"ttl": "long"}', "ttl"),
    ("PATCH", "/config", b'{"ttl": 1}', "ttl"),
    ("PATCH", "/config", b'{"ttl": 0}', "ttl: Input should be greater than or equal to 5"),
    ("PATCH", "/config", b'{"retry_timeout": 0}',
     "retry_timeout: Input should be greater than or equal to 1"),
    ("PUT", "/config", b'{"ttl": 0}', "ttl: Input should be greater than or equal to 5"),
    ("PUT", "/config", b'{"retry_timeout": 0}',
     "retry_timeout: Input should be greater than or equal to 1"),
    ("PATCH", "/config", b'{"synchronous_mode": "maybe"}', "synchronous_mode"),
    ("PATCH", "/config", b'{"postgresql": {"use_slots": "x"}}', "postgresql.use_slots"),
    ("PUT", "/config", b"", "required"),
    ("PUT", "/config", b"3", "JSON object"),
    ("PUT", "/config", b'{"loop_wait": []}', "loop_wait"),
], ids=lambda v: v if isinstance(v, str) and len(v) < 40 else None)
async def test_bad_body_is_400_with_a_reason_and_nothing_submitted(
        method: str, path: str, raw: bytes, reason: str) -> None:
    code, text, source = await send(method, path, raw=raw)
    assert code == 400
    assert reason in text
    assert source.commands == []


@pytest.mark.parametrize("depth", [900, 990, 5000])
async def test_deeply_nested_patch_is_never_a_server_error(depth: int) -> None:
    code, _, source = await send("PATCH", "/config", raw=b'{"a":' * depth + b"1" + b"}" * depth)
    assert code in (200, 400)
    assert (code == 200) == bool(source.commands)


async def test_patch_is_checked_against_the_current_config() -> None:
    # the current config alone is fine; the patched result breaks ttl >= 5
    source = Source(primary_status(view=cluster_view(config={"ttl": 30, "loop_wait": 10})))
    code, _, _ = await send("PATCH", "/config", {"loop_wait": 5}, source=source)
    assert code == 200
    code, text, _ = await send("PATCH", "/config", {"ttl": 2}, source=source)
    assert (code, "ttl" in text) == (400, True)
    assert source.commands == [PatchConfig(patch={"loop_wait": 5})]


async def test_patch_without_a_known_config_is_left_to_the_agent() -> None:
    source = Source(primary_status(view=None), default=Outcome(503, "no config in the DCS"))
    code, text, _ = await send("PATCH", "/config", {"ttl": 20}, source=source)
    assert (code, text) == (503, "no config in the DCS")


def test_timestamps_with_other_offsets_are_kept_aware() -> None:
    from pgha.api.bodies import parse_switchover

    cmd = parse_switchover(b'{"leader": "a", "scheduled_at": "2099-06-01T12:00:00-05:00"}')
    assert cmd.scheduled_at == datetime(2099, 6, 1, 12, tzinfo=timezone(timedelta(hours=-5)))
    now = datetime(2099, 6, 1, 18, tzinfo=UTC)
    with pytest.raises(ValueError, match="in the past"):
        parse_switchover(b'{"leader": "a", "scheduled_at": "2099-06-01T12:00:00-05:00"}',
                         now=lambda: now)
