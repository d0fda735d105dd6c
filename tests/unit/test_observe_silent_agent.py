"""The observer's view of a member whose agent does not answer (found by the chaos campaign):
its PostgreSQL is asked directly, and a server that accepts writes is a running primary, also
after the member's keys expired with its dead agent's session."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from pgha.agent import observe
from pgha.agent.observe import Observer
from pgha.core.model import ClusterView, HaSettings, Leader, Member, PeerStatus
from pgha.dcs.memory import MemoryBackend, MemoryStore
from pgha.dcs.store import ClusterStore


class Peers:
    def __init__(self, answers: dict[str, PeerStatus | None]) -> None:
        self.answers = answers

    async def statuses(self, view: ClusterView, timeout: float) -> dict[str, PeerStatus | None]:
        return {n: self.answers.get(n) for n in view.members if n != "m0"}


def member(name: str) -> Member:
    return Member(name, conn_url=f"postgres://{name}:5432/postgres", role="replica",
                  state="running", timeline=3)


def view(leader: str | None, *names: str) -> ClusterView:
    return ClusterView(leader=Leader(leader, 1, "s") if leader else None,
                       members={n: member(n) for n in names}, initialize="7000")


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Which servers were asked (conn_url -> system id expected); ``writable`` answers."""
    calls: dict[str, Any] = {"asked": {}, "writable": {}}

    async def fake(settings: Any, conn_url: str, timeout: float, system_id: str | None
                   ) -> int | None:
        calls["asked"][conn_url] = system_id
        return calls["writable"].get(conn_url)

    monkeypatch.setattr(observe, "remote_writable_position", fake)
    return calls


def observer(peers: Peers) -> Observer:
    store = ClusterStore(MemoryStore(MemoryBackend(), ttl=30, timeout=2.0), "/service/", "demo",
                         "m0")
    return Observer(store, SimpleNamespace(settings=None), peers,  # type: ignore[arg-type]
                    HaSettings(ttl=8))


async def test_the_last_leader_whose_keys_expired_is_asked_directly(asked: dict[str, Any]
                                                                    ) -> None:
    obs = observer(Peers({"m2": None}))
    obs.last_leader = member("m1")
    asked["writable"]["postgres://m1:5432/postgres"] = 1234
    statuses = await obs.peer_statuses(view(None, "m0", "m2"))
    assert asked["asked"] == {"postgres://m1:5432/postgres": "7000",
                              "postgres://m2:5432/postgres": "7000"}
    m1 = statuses["m1"]
    assert m1 is not None and m1.is_running_primary and m1.agent_silent
    assert m1.wal_position == 1234 and m1.timeline == 3
    assert statuses["m2"] is None  # asked, not writable: unreachable as before


async def test_answering_agents_and_a_held_lock_ask_no_server(asked: dict[str, Any]) -> None:
    up = PeerStatus("m2", "replica", "running", 10, 3)
    obs = observer(Peers({"m2": up}))
    obs.last_leader = member("m1")
    assert await obs.peer_statuses(view("m2", "m0", "m2")) == {"m2": up}
    assert asked["asked"] == {}  # a leader holds the lock: the old one is not looked for
    assert await obs.peer_statuses(view(None, "m0", "m1", "m2")) == {"m1": None, "m2": up}
    # m1 is listed again (its agent came back but did not answer): its server is asked
    assert list(asked["asked"]) == ["postgres://m1:5432/postgres"]


async def test_the_last_leader_is_remembered_from_the_views() -> None:
    obs = observer(Peers({}))
    kv = obs.store.kv
    async with kv:
        assert await obs.store.acquire_leader()
        await obs.store.touch_member({"conn_url": "postgres://m0/x"})
        v = await obs.dcs_view(2.0)
    assert v is not None and obs.last_leader is not None and obs.last_leader.name == "m0"
