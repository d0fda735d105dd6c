"""Tags are published as configured (member key, GET /patroni, peers' view of them): a
``failover_priority`` set next to ``nofailover: true`` is kept, with a warning that
``nofailover`` wins, which it does in every decision."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from typing import Any

import pytest
from tests.unit.api_support import Source, api, replica_status

from pgha.agent.local_config import tags_of
from pgha.agent.peers import parse_peer_status
from pgha.config import parse_config
from pgha.core.model import Member, Tags
from pgha.dcs.codec import dumps, loads, member_from_json, member_to_json


def configured(tags: dict[str, Any]) -> Tags:
    config = parse_config({"scope": "demo", "name": "pg2", "etcd": {"host": "127.0.0.1:2379"},
                           "postgresql": {"data_dir": "/tmp/none", "bin_dir": "/tmp"},
                           "tags": tags}, {})
    return tags_of(config)


@pytest.mark.parametrize(("yaml_tags", "published"), [
    ({"nofailover": True, "failover_priority": 1},
     {"nofailover": True, "failover_priority": 1}),
    ({"nofailover": True, "failover_priority": 3, "zone": "eu-1"},
     {"nofailover": True, "failover_priority": 3, "zone": "eu-1"}),
    ({"nofailover": False, "failover_priority": 2},
     {"nofailover": False, "failover_priority": 2}),
    ({"failover_priority": 1}, {"failover_priority": 1}),
    ({"nofailover": False, "noloadbalance": False, "clonefrom": False}, {}),
    ({"nosync": True, "sync_priority": 1}, {"nosync": True, "sync_priority": 1}),
    ({}, {}),
], ids=["conflict-default-priority", "conflict-priority-3", "both-false", "priority-only",
        "false-flags", "nosync-conflict", "none"])
def test_published_as_configured(yaml_tags: dict[str, Any], published: dict[str, Any]) -> None:
    tags = configured(yaml_tags)
    assert tags.to_json() == published
    status = replace(replica_status(), tags=tags)
    assert status.to_member_json().get("tags", {}) == published
    assert status.to_patroni_json().get("tags", {}) == published
    # the DCS round trip and a peer's reading of GET /patroni keep them as they are
    member = member_from_json("pg2", loads(dumps(member_to_json(Member("pg2", tags=tags)))))
    assert member.tags.to_json() == published
    peer = parse_peer_status("pg2", status.to_patroni_json())
    assert peer is not None and peer.tags.to_json() == published


@pytest.mark.parametrize("priority", [1, 5])
def test_nofailover_wins_with_a_warning(caplog: pytest.LogCaptureFixture,
                                        priority: int) -> None:
    caplog.set_level(logging.WARNING, logger="pgha.config")
    tags = configured({"nofailover": True, "failover_priority": priority})
    warnings = [r.getMessage() for r in caplog.records if r.name == "pgha.config"]
    assert len(warnings) == 1
    assert "nofailover" in warnings[0] and f"failover_priority is {priority}" in warnings[0]
    assert "nofailover wins" in warnings[0]
    assert not tags.can_be_leader
    member = member_from_json("pg2", member_to_json(Member("pg2", tags=tags)))
    assert not member.tags.can_be_leader


def test_no_warning_without_a_conflict(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="pgha.config")
    configured({"nofailover": True})
    configured({"nofailover": False, "failover_priority": 2})
    configured({"nofailover": True, "failover_priority": 0})
    assert not [r for r in caplog.records if r.name == "pgha.config"]


async def test_get_patroni_serves_the_configured_tags() -> None:
    tags = configured({"nofailover": True, "failover_priority": 1})
    async with api(Source(replace(replica_status(), tags=tags))) as client:
        resp = await client.get("/patroni")
        body = json.loads(await resp.text())
    assert body["tags"] == {"nofailover": True, "failover_priority": 1}
