"""ZooKeeperStore with ``zookeeper.auth_data`` and ``zookeeper.set_acls`` against a real
ZooKeeper 3.8: the store is built from the YAML section (``ZooKeeperStore.from_config``) with
a digest user's credentials and an ACL giving only that user ALL.

The DCS contract suite (tests/integration/test_dcs_contract.py) runs again here on such
stores (its test functions are imported; the ``dcs`` and ``clients`` fixtures below replace
the suite's). Then: every znode the store created carries exactly that ACL (kazoo
``get_acls``), an unauthenticated client (raw kazoo, or a pgha store without ``auth_data``)
can neither read nor write them, another digest user neither, and ``world:anyone: [READ]``
opens reading only.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import kazoo.exceptions as kx
import pytest
from kazoo.client import KazooClient
from kazoo.security import OPEN_ACL_UNSAFE, make_digest_acl_credential
from tests.integration.test_dcs_contract import (  # noqa: F401  (collected again here)
    NAMESPACE,
    Clients,
    test_acquire_is_exclusive,
    test_cas_conflicts_are_reported_not_overwritten,
    test_close_removes_ephemeral_keys_at_once,
    test_garbage_values_are_logged_and_ignored,
    test_get_prefix_scope_and_revisions,
    test_initialize_semantics,
    test_leader_key_session_and_rebind,
    test_session_expiry_removes_keys,
    test_session_switch_leaves_a_key_that_is_not_ours,
    test_session_switch_moves_keys_without_a_gap,
    test_survives_server_restart,
    test_watch_ends_when_store_closes,
    test_watch_sees_leader_deleted,
)
from tests.support.dcs_servers import ZooKeeperDcs
from tests.support.zookeeper import zookeeper_unavailable

from pgha.dcs.base import DCSError
from pgha.dcs.store import ClusterStore
from pgha.dcs.zookeeper import ZooKeeperStore

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(120),
    pytest.mark.skipif(zookeeper_unavailable() is not None,
                       reason=str(zookeeper_unavailable())),
]

USER, PASSWORD = "pgha", "s3cret"
DIGEST_ID = make_digest_acl_credential(USER, PASSWORD)  # "pgha:<base64 sha1>"
ALL = 31  # READ|WRITE|CREATE|DELETE|ADMIN


@pytest.fixture(scope="module")
def dcs() -> Iterator[ZooKeeperDcs]:
    """Stores authenticated as USER, creating znodes only USER may access."""
    server = ZooKeeperDcs(auth_data={"digest": f"{USER}:{PASSWORD}"},
                          set_acls={f"digest:{DIGEST_ID}": ["ALL"]})
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
async def clients(dcs: ZooKeeperDcs) -> AsyncIterator[Clients]:
    c = Clients(dcs)
    try:
        yield c
    finally:
        await c.close_all()


@pytest.fixture
async def raw(dcs: ZooKeeperDcs) -> AsyncIterator[Any]:
    """``raw(auth)``: a started plain kazoo client (``auth``: its auth_data), stopped at the
    end."""
    started: list[KazooClient] = []

    async def make(auth: list[tuple[str, str]] | None = None) -> KazooClient:
        client = KazooClient(hosts=f"127.0.0.1:{dcs.server.port}", auth_data=auth)
        started.append(client)
        await asyncio.to_thread(client.start, 10)
        return client

    yield make
    for client in started:
        await asyncio.to_thread(client.stop)
        await asyncio.to_thread(client.close)


def _tree(client: KazooClient, root: str) -> list[str]:
    out, todo = [], [root]
    while todo:
        path = todo.pop()
        out.append(path)
        todo += [f"{path}/{c}" for c in client.get_children(path)]
    return out


async def _populated(clients: Clients) -> ClusterStore:
    """A store that wrote a leader, a member, initialize, config, status and history."""
    store = await clients.new("pg1")
    assert await store.claim_initialize()
    assert await store.acquire_leader()
    await store.touch_member({"role": "primary", "state": "running"})
    await store.write_status(7)
    return store


async def test_created_znodes_carry_the_acl(clients: Clients, raw: Any) -> None:
    store = await _populated(clients)
    prefix = store.key("")
    owner = await raw([("digest", f"{USER}:{PASSWORD}")])
    paths = await asyncio.to_thread(_tree, owner, prefix.rstrip("/"))
    assert {store.key(k) for k in ("leader", "initialize", "members/pg1")} <= set(paths)
    for path in [*paths, NAMESPACE.rstrip("/")]:
        acls, _ = await asyncio.to_thread(owner.get_acls, path)
        assert [(a.id.scheme, a.id.id, a.perms) for a in acls] == [
            ("digest", DIGEST_ID, ALL)], path


@pytest.mark.parametrize("auth", [None, [("digest", f"{USER}:wrong")], [("digest", "other:x")]],
                         ids=["anonymous", "wrong-password", "other-user"])
async def test_others_can_neither_read_nor_write(clients: Clients, raw: Any,
                                                 auth: Any) -> None:
    store = await _populated(clients)
    leader, scope = store.key("leader"), store.key("").rstrip("/")
    other = await raw(auth)
    attempts = {
        "get": lambda: other.get(leader),
        "children": lambda: other.get_children(scope),
        "set": lambda: other.set(leader, b"intruder"),
        "create": lambda: other.create(f"{scope}/intruder", b"x"),
        "delete": lambda: other.delete(leader),
        "set_acls": lambda: other.set_acls(leader, OPEN_ACL_UNSAFE),
    }
    for what, attempt in attempts.items():
        with pytest.raises(kx.NoAuthError):
            await asyncio.to_thread(attempt)
            pytest.fail(f"{what} allowed")
    view = await store.load()  # nothing changed
    assert view.leader is not None and view.leader.name == "pg1"
    # a pgha store without the credentials cannot read the cluster either
    kv = ZooKeeperStore.from_config({"hosts": [f"127.0.0.1:{clients.server.server.port}"],
                                     **({"auth_data": dict(auth)} if auth else {})},
                                    ttl=clients.ttl, timeout=2.0)
    try:
        await kv.connect()
        with pytest.raises(DCSError, match="NoAuth"):
            await ClusterStore(kv, NAMESPACE, clients.scope, "intruder").load()
    finally:
        await kv.close()


async def test_world_read_opens_reading_only(dcs: ZooKeeperDcs, raw: Any) -> None:
    acls = {f"digest:{DIGEST_ID}": ["all"], "world:anyone": ["read"]}
    kv = ZooKeeperStore.from_config(dcs.section(set_acls=acls), ttl=4.0, timeout=2.0)
    await kv.connect()
    try:
        store = ClusterStore(kv, NAMESPACE, f"world-{uuid.uuid4().hex[:8]}", "pg1")
        assert await store.acquire_leader()
        anonymous = await raw()
        data, _ = await asyncio.to_thread(anonymous.get, store.key("leader"))
        assert data == b"pg1"
        with pytest.raises(kx.NoAuthError):
            await asyncio.to_thread(anonymous.set, store.key("leader"), b"intruder")
        acl, _ = await asyncio.to_thread(anonymous.get_acls, store.key("leader"))
        # ZooKeeper shows a digest's hash only to a caller with ADMIN: "pgha:x" here
        assert {(a.id.scheme, a.id.id.split(":")[0], a.perms) for a in acl} == {
            ("digest", USER, ALL), ("world", "anyone", 1)}
    finally:
        await kv.close()
