"""The Consul emulator's HTTP semantics (tests/support/consul_emulator.py), checked over HTTP
with a plain aiohttp client: KV with indexes, CAS, acquire/release, lock-delay, sessions with
TTL invalidation at 2 * TTL, blocking queries, transactions, token and datacenter checks."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from tests.support.consul_emulator import ConsulEmulator, parse_duration

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def emulator() -> Iterator[ConsulEmulator]:
    with ConsulEmulator() as emu:
        yield emu


class Api:
    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        self.http = http
        self.base = base
        self.prefix = f"t{uuid.uuid4().hex[:8]}/"  # keys of one test

    async def call(self, method: str, path: str, data: Any = None, **params: Any
                   ) -> tuple[int, dict[str, str], Any]:
        if isinstance(data, list | dict):
            data = json.dumps(data)
        async with self.http.request(method, self.base + path, data=data,
                                     params={k: str(v) for k, v in params.items()}) as resp:
            text = await resp.text()
            try:
                body = json.loads(text) if text else None
            except ValueError:
                body = text
            return resp.status, dict(resp.headers), body

    def key(self, name: str) -> str:
        return self.prefix + name

    async def put(self, name: str, value: bytes = b"v", **params: Any) -> Any:
        status, _, body = await self.call("PUT", f"/v1/kv/{self.key(name)}", value, **params)
        assert status == 200, body
        return body

    async def get(self, name: str, **params: Any) -> tuple[int, int, Any]:
        status, headers, body = await self.call("GET", f"/v1/kv/{self.key(name)}", **params)
        return status, int(headers["X-Consul-Index"]), body

    async def session(self, **body: Any) -> str:
        status, _, answer = await self.call("PUT", "/v1/session/create", body or None)
        assert status == 200, answer
        return str(answer["ID"])


@pytest.fixture
async def api(emulator: ConsulEmulator) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as http:
        yield Api(http, emulator.url)


def test_parse_duration() -> None:
    assert parse_duration("5s") == 5.0
    assert parse_duration("100ms") == pytest.approx(0.1)
    assert parse_duration("1m30s") == 90.0
    assert parse_duration("1.5h") == 5400.0
    assert parse_duration("0") == 0.0
    for bad in ("", "5", "s", "5x", "1m 2s"):
        with pytest.raises(ValueError):
            parse_duration(bad)


async def test_kv_entries_and_indexes(api: Api) -> None:
    assert await api.put("a", b"one") is True
    status, index, body = await api.get("a")
    assert status == 200 and len(body) == 1
    entry = body[0]
    assert entry["Key"] == api.key("a") and base64.b64decode(entry["Value"]) == b"one"
    assert entry["CreateIndex"] == entry["ModifyIndex"] == index and entry["LockIndex"] == 0
    assert "Session" not in entry
    await api.put("a", b"two")
    _, index2, body = await api.get("a")
    assert index2 > index and body[0]["CreateIndex"] == index
    await api.put("a", b"two")  # no change: the entry keeps its ModifyIndex
    assert (await api.get("a"))[1] == index2
    await api.put("b", b"")
    _, _, body = await api.get("b")
    assert body[0]["Value"] is None  # empty values are null, as in Consul
    status, missing_index, body = await api.get("missing")
    assert status == 404 and missing_index >= 1 and body is None
    status, rindex, body = await api.get("", recurse=1)
    assert status == 200 and [e["Key"] for e in body] == [api.key("a"), api.key("b")]
    assert rindex == max(e["ModifyIndex"] for e in body)
    status, _, _ = await api.call("GET", f"/v1/kv/{api.key('nothing/')}", recurse=1)
    assert status == 404
    status, _, _ = await api.call("PUT", "/v1/kv//lead", b"x")
    assert status == 400


async def test_index_is_monotonic(emulator: ConsulEmulator, api: Api) -> None:
    seen = [emulator.index]
    for step in range(3):
        await api.put("m", str(step).encode())
        sid = await api.session(TTL="10s")
        assert await api.put("m", b"x", cas=1) is False  # failed CAS still takes an index
        await api.call("PUT", f"/v1/session/destroy/{sid}")
        seen.append(emulator.index)
    assert seen == sorted(set(seen)), seen
    _, before, _ = await api.get("m")
    await api.call("DELETE", f"/v1/kv/{api.key('m')}")
    _, after, _ = await api.get("", recurse=1)
    assert after > before  # the tombstone's index counts for the prefix


async def test_cas(api: Api) -> None:
    assert await api.put("c", b"1", cas=0) is True
    assert await api.put("c", b"2", cas=0) is False  # cas=0 is create-only
    _, index, _ = await api.get("c")
    assert await api.put("c", b"3", cas=index + 100) is False
    assert await api.put("c", b"3", cas=index) is True
    assert await api.put("nope", b"3", cas=index) is False  # missing key, index != 0
    _, _, body = await api.get("c")
    assert base64.b64decode(body[0]["Value"]) == b"3"
    status, _, text = await api.call("PUT", f"/v1/kv/{api.key('c')}", b"4", cas=0,
                                     acquire="x")
    assert status == 400 and "Conflicting flags" in text


async def test_delete(api: Api) -> None:
    await api.put("d1")
    await api.put("d2")
    _, index, _ = await api.get("d1")
    path = f"/v1/kv/{api.key('d1')}"
    assert (await api.call("DELETE", path, cas=index + 1))[2] is False
    assert (await api.call("DELETE", path, cas=index))[2] is True
    # Consul answers true to a CAS delete of a key that does not exist
    assert (await api.call("DELETE", path, cas=index))[2] is True
    assert (await api.call("DELETE", f"/v1/kv/{api.prefix}", recurse=1))[2] is True
    assert (await api.get("", recurse=1))[0] == 404
    assert (await api.call("DELETE", path, cas=1, recurse=1))[0] == 400


async def test_acquire_and_release(api: Api) -> None:
    s1, s2 = await api.session(TTL="10s"), await api.session(TTL="10s")
    assert await api.put("l", b"a", acquire=s1) is True
    _, _, body = await api.get("l")
    assert body[0]["Session"] == s1 and body[0]["LockIndex"] == 1
    assert await api.put("l", b"b", acquire=s2) is False  # held by another session
    assert await api.put("l", b"c", acquire=s1) is True  # the holder may write again
    _, _, body = await api.get("l")
    assert body[0]["LockIndex"] == 1 and base64.b64decode(body[0]["Value"]) == b"c"
    await api.put("l", b"plain")  # a plain PUT keeps the holder
    assert (await api.get("l"))[2][0]["Session"] == s1
    assert await api.put("l", b"x", release=s2) is False
    assert await api.put("l", b"released", release=s1) is True
    _, _, body = await api.get("l")
    assert "Session" not in body[0] and base64.b64decode(body[0]["Value"]) == b"released"
    assert await api.put("l", b"b", acquire=s2) is True
    assert (await api.get("l"))[2][0]["LockIndex"] == 2
    unknown = str(uuid.uuid4())
    status, _, text = await api.call("PUT", f"/v1/kv/{api.key('u')}", b"x", acquire=unknown)
    assert status == 500 and "invalid session" in text


async def test_lock_delay(emulator: ConsulEmulator, api: Api) -> None:
    s1 = await api.session(TTL="10s", LockDelay="5s", Behavior="release")
    s2 = await api.session(TTL="10s")
    assert await api.put("ld", b"a", acquire=s1)
    await api.call("PUT", f"/v1/session/destroy/{s1}")
    _, _, body = await api.get("ld")
    assert "Session" not in body[0]  # released, not deleted
    assert await api.put("ld", b"b", acquire=s2) is False  # within the lock-delay
    ops = [{"KV": {"Verb": "lock", "Key": api.key("ld"), "Value": "", "Session": s2}}]
    status, _, answer = await api.call("PUT", "/v1/txn", ops)
    assert status == 409 and "lock delay" in answer["Errors"][0]["What"]
    await api.put("ld", b"plain")  # other writes are not delayed
    emulator.advance(5.1)
    assert await api.put("ld", b"b", acquire=s2) is True


async def test_session_create_validation(api: Api) -> None:
    for body in ({"TTL": "5s"}, {"TTL": "86401s"}, {"Behavior": "keep"},
                 {"LockDelay": "61s"}, {"Checks": ["service:x"]}):
        status, _, _ = await api.call("PUT", "/v1/session/create", body)
        assert status == 500, body
    status, _, _ = await api.call("PUT", "/v1/session/create", {"LockDelay": "20"})
    assert status == 400  # a duration string needs a unit
    sid = await api.session(name="n", ttl="10s", lockdelay="0.001s", behavior="delete",
                            checks=[])  # lowercase keys, as py-consul sends them
    status, headers, info = await api.call("GET", f"/v1/session/info/{sid}")
    assert status == 200 and int(headers["X-Consul-Index"]) >= info[0]["CreateIndex"]
    assert info[0]["TTL"] == "10s" and info[0]["LockDelay"] == 1_000_000
    assert info[0]["Behavior"] == "delete" and info[0]["NodeChecks"] == []
    sid = await api.session(LockDelay=15)  # small numbers are seconds
    assert (await api.call("GET", f"/v1/session/info/{sid}"))[2][0]["LockDelay"] == 15 * 10**9
    assert (await api.call("GET", f"/v1/session/info/{uuid.uuid4()}"))[2] == []


async def test_session_invalidated_at_twice_the_ttl(emulator: ConsulEmulator,
                                                    api: Api) -> None:
    sid = await api.session(TTL="10s", Behavior="delete", LockDelay="0s")
    assert await api.put("e", b"x", acquire=sid)
    emulator.advance(19.9)
    assert (await api.get("e"))[0] == 200
    status, _, renewed = await api.call("PUT", f"/v1/session/renew/{sid}")
    assert status == 200 and renewed[0]["ID"] == sid
    emulator.advance(19.9)
    assert (await api.get("e"))[0] == 200  # the renewal re-armed 2 * TTL
    _, before, _ = await api.get("", recurse=1)
    emulator.advance(0.2)
    assert (await api.get("e"))[0] == 404  # behavior delete
    _, after, _ = await api.get("", recurse=1)
    assert after > before
    status, _, text = await api.call("PUT", f"/v1/session/renew/{sid}")
    assert status == 404 and sid in text
    assert sid not in emulator.sessions()


async def test_session_expires_in_real_time(api: Api, emulator: ConsulEmulator) -> None:
    """The reaper runs on its own (no request needed): a blocked query wakes up."""
    sid = await api.session(TTL="10s", Behavior="delete")
    assert await api.put("rt", b"x", acquire=sid)
    _, index, _ = await api.get("rt")
    emulator._offset += 19.95  # no expire() call: the 50 ms reaper must notice
    started = time.monotonic()
    status, new_index, _ = await api.get("rt", index=index, wait="5s")
    assert status == 404 and new_index > index
    assert time.monotonic() - started < 2


async def test_blocking_query_returns_on_change(api: Api) -> None:
    await api.put("w/a", b"1")
    _, index, _ = await api.get("w/", recurse=1)

    async def later() -> None:
        await asyncio.sleep(0.3)
        await api.put("other", b"elsewhere")  # outside the prefix: keeps blocking
        await asyncio.sleep(0.2)
        await api.put("w/b", b"2")

    writer = asyncio.create_task(later())
    started = time.monotonic()
    status, new_index, body = await api.get("w/", recurse=1, index=index, wait="10s")
    elapsed = time.monotonic() - started
    await writer
    assert status == 200 and new_index > index and len(body) == 2
    assert 0.4 < elapsed < 5


async def test_blocking_query_times_out_with_the_same_index(api: Api) -> None:
    await api.put("t/a", b"1")
    _, index, _ = await api.get("t/a")
    started = time.monotonic()
    status, same, _ = await api.get("t/a", index=index, wait="300ms")
    assert status == 200 and same == index
    assert 0.25 < time.monotonic() - started < 3
    status, _, text = await api.call("GET", f"/v1/kv/{api.key('t/a')}", index=index,
                                     wait="soon")
    assert status == 400 and "wait" in text
    # an older index answers at once
    started = time.monotonic()
    assert (await api.get("t/a", index=index - 1, wait="5s"))[1] == index
    assert time.monotonic() - started < 1


async def test_txn_is_all_or_nothing(api: Api) -> None:
    await api.put("x", b"1")
    val = base64.b64encode(b"new").decode()
    ops = [{"KV": {"Verb": "set", "Key": api.key("y"), "Value": val}},
           {"KV": {"Verb": "check-not-exists", "Key": api.key("x")}}]
    status, _, answer = await api.call("PUT", "/v1/txn", ops)
    assert status == 409 and answer["Results"] is None
    assert answer["Errors"][0]["OpIndex"] == 1 and "exists" in answer["Errors"][0]["What"]
    assert (await api.get("y"))[0] == 404  # rolled back
    sid = await api.session(TTL="10s")
    ops = [{"KV": {"Verb": "check-not-exists", "Key": api.key("y")}},
           {"KV": {"Verb": "lock", "Key": api.key("y"), "Value": val, "Session": sid}},
           {"KV": {"Verb": "get", "Key": api.key("x")}}]
    status, _, answer = await api.call("PUT", "/v1/txn", ops)
    assert status == 200 and answer["Errors"] is None
    locked, got = answer["Results"]
    assert locked["KV"]["Session"] == sid and locked["KV"]["Value"] is None
    assert base64.b64decode(got["KV"]["Value"]) == b"1"
    _, _, body = await api.get("y")
    index = body[0]["ModifyIndex"]
    ops = [{"KV": {"Verb": "check-index", "Key": api.key("y"), "Index": index + 1}},
           {"KV": {"Verb": "delete", "Key": api.key("y")}}]
    assert (await api.call("PUT", "/v1/txn", ops))[0] == 409
    ops[0]["KV"]["Index"] = index
    assert (await api.call("PUT", "/v1/txn", ops))[0] == 200
    assert (await api.get("y"))[0] == 404
    ops = [{"KV": {"Verb": "lock", "Key": api.key("z"), "Value": val,
                   "Session": str(uuid.uuid4())}}]
    status, _, answer = await api.call("PUT", "/v1/txn", ops)
    assert status == 409 and "invalid session" in answer["Errors"][0]["What"]


async def test_tombstones_reaped_index_goes_backwards(emulator: ConsulEmulator,
                                                       api: Api) -> None:
    await api.put("r/a")
    await api.put("r/b")
    await api.call("DELETE", f"/v1/kv/{api.key('r/b')}")
    _, with_tombstone, _ = await api.get("r/", recurse=1)
    emulator.reap_tombstones()
    _, without, body = await api.get("r/", recurse=1)
    assert without < with_tombstone and without == body[0]["ModifyIndex"]


async def test_token_and_datacenter() -> None:
    async with ConsulEmulator(acl_token="secret") as emu, aiohttp.ClientSession() as http:
        url = f"{emu.url}/v1/kv/k"
        async with http.put(url, data=b"x") as resp:
            assert resp.status == 403
        async with http.put(url, data=b"x", headers={"X-Consul-Token": "secret"}) as resp:
            assert resp.status == 200
        async with http.get(url, params={"token": "secret", "dc": "dc1"}) as resp:
            assert resp.status == 200
        async with http.get(url, params={"token": "secret", "dc": "eu"}) as resp:
            assert resp.status == 500 and "datacenter" in await resp.text()


async def test_stop_start_keeps_state_and_rearms_sessions() -> None:
    async with ConsulEmulator() as emu, aiohttp.ClientSession() as http:
        api = Api(http, emu.url)
        sid = await api.session(TTL="10s", Behavior="delete")
        assert await api.put("k", b"x", acquire=sid)
        emu.advance(15)
        await emu.astop()
        with pytest.raises(aiohttp.ClientConnectionError):
            await api.get("k")
        await emu.astart()
        emu.advance(15)  # 30 s after the last renewal, but 15 s after the new "leader" began
        status, _, body = await api.get("k")
        assert status == 200 and body[0]["Session"] == sid
        emu.advance(5.1)
        assert (await api.get("k"))[0] == 404
        await api.put("kept")
        await emu.astop(lose_state=True)  # like a restarted ``consul agent -dev``
        await emu.astart()
        assert (await api.get("kept"))[0] == 404
        assert emu.sessions() == {}
