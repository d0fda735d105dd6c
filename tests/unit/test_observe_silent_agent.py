"""The observer's view of a member whose agent does not answer (found by the chaos campaign):
its PostgreSQL is asked directly, and a server that accepts writes is a running primary, also
after the member's keys expired with its dead agent's session -- found through the last
leader seen, or (an agent restarted after the keys expired, found by the simulation) through
the upstream our replica streams from."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import pytest

from pgha.agent import observe
from pgha.agent.observe import Observer
from pgha.core.actions import Upstream
from pgha.core.model import ClusterView, HaSettings, Leader, Member, PeerStatus
from pgha.core.standby import REMOTE
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


def observer(peers: Peers, upstream: Upstream | None = None) -> Observer:
    store = ClusterStore(MemoryStore(MemoryBackend(), ttl=30, timeout=2.0), "/service/", "demo",
                         "m0")
    pg = SimpleNamespace(settings=None, current_upstream=lambda: upstream)
    return Observer(store, pg, peers, HaSettings(ttl=8))  # type: ignore[arg-type]


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


async def test_a_restarted_agent_asks_the_upstream_its_replica_streams_from(
        asked: dict[str, Any]) -> None:
    """No last leader in memory (the agent restarted after the leader's keys expired): the
    upstream recorded in our data directory is asked; a writable one is a running primary."""
    url = "postgres://m1:5432/postgres"
    obs = observer(Peers({"m2": None}), upstream=Upstream("m1", url))
    asked["writable"][url] = 99
    statuses = await obs.peer_statuses(view(None, "m0", "m2"))
    assert url in asked["asked"]
    m1 = statuses["m1"]
    assert m1 is not None and m1.is_running_primary and m1.agent_silent
    assert m1.wal_position == 99 and m1.timeline is None
    # a listed upstream is a member like any other; with a leader nobody vanished is looked for
    asked["asked"].clear()
    await obs.peer_statuses(view("m2", "m0", "m2"))
    assert url not in asked["asked"]


async def test_a_standby_clusters_remote_primary_is_not_a_vanished_member(
        asked: dict[str, Any]) -> None:
    """A standby leader streams from the remote primary, writable by design (and with the
    same system identifier): it must not keep the standby cluster out of its leader race."""
    url = "postgres://10.0.0.9:5433/postgres"
    obs = observer(Peers({"m2": None}), upstream=Upstream(REMOTE, url))
    asked["writable"][url] = 99
    statuses = await obs.peer_statuses(view(None, "m0", "m2"))
    assert url not in asked["asked"] and REMOTE not in statuses


async def test_the_upstream_and_the_last_leader_are_asked_once_when_they_are_one(
        asked: dict[str, Any]) -> None:
    url = "postgres://m1:5432/postgres"
    obs = observer(Peers({}), upstream=Upstream("m1", url))
    obs.last_leader = member("m1")
    await obs.peer_statuses(view(None, "m0"))
    assert list(asked["asked"]) == [url]


async def test_every_member_seen_and_no_longer_listed_is_asked_while_the_lock_is_free(
        asked: dict[str, Any]) -> None:
    """A member that became leader while we were cut off (never seen as leader by us), whose
    agent then died: its keys expired, but its member key was seen before."""
    obs = observer(Peers({}))
    obs.last_leader = member("m1")
    obs.known_members = {"m1": member("m1"), "m2": member("m2"), "m0": member("m0")}
    asked["writable"]["postgres://m2:5432/postgres"] = 7
    statuses = await obs.peer_statuses(view(None, "m0"))
    assert list(asked["asked"]) == ["postgres://m1:5432/postgres", "postgres://m2:5432/postgres"]
    m2 = statuses["m2"]
    assert m2 is not None and m2.agent_silent and m2.timeline == 3
    assert statuses.get("m1") is None


async def test_the_leader_named_in_the_status_key_is_asked_by_an_agent_that_never_saw_it(
        asked: dict[str, Any]) -> None:
    """A fresh agent (no memory, no upstream) after every key of the leader expired: the
    ``status`` key, which has no lease, still names the leader's server."""
    obs = observer(Peers({}))
    url = "postgres://m1:5432/postgres"
    asked["writable"][url] = 5
    v = replace(view(None, "m0"), status_leader=("m1", url))
    statuses = await obs.peer_statuses(v)
    assert list(asked["asked"]) == [url]
    m1 = statuses["m1"]
    assert m1 is not None and m1.agent_silent and m1.wal_position == 5


async def test_the_status_key_names_its_writer_and_survives_the_session() -> None:
    backend = MemoryBackend()
    kv = MemoryStore(backend, ttl=30, timeout=2.0)
    store = ClusterStore(kv, "/service/", "demo", "m1")
    async with kv:
        await store.write_status(42, conn_url="postgres://m1:5432/postgres")
        assert (await store.load()).status_leader == ("m1", "postgres://m1:5432/postgres")
    other = MemoryStore(backend, ttl=30, timeout=2.0)
    async with other:  # m1's session is closed: the status key stays
        view = await ClusterStore(other, "/service/", "demo", "m2").load()
    assert view.status_leader == ("m1", "postgres://m1:5432/postgres") and view.optime == 42
