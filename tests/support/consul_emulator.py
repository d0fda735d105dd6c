"""A Consul emulator for tests: the parts of Consul's documented HTTP API that
:class:`pgha.dcs.consul.ConsulStore` relies on, served by aiohttp on a free loopback port.

It is NOT Consul. It implements, on one node with one datacenter (``dc1``):

* a raft-like global index: every write that Consul would commit through raft (KV writes
  including failed CAS, transactions with a write, session create/destroy/invalidation) takes
  the next index; a session renew does not. Entries carry ``CreateIndex``, ``ModifyIndex``,
  ``LockIndex``, ``Flags`` and ``Session``; an update that changes nothing keeps the entry's
  ``ModifyIndex`` (as Consul does). Deleted keys leave tombstones (index of the deletion)
  until :meth:`ConsulEmulator.reap_tombstones`;
* ``X-Consul-Index`` on every KV read, computed like Consul: a key's ``ModifyIndex``; for a
  recursive read the highest ``ModifyIndex``/tombstone index under the prefix, else the index
  of the last KV change (never 0);
* blocking queries: ``?index=N`` (N > 0) waits until the answer's index exceeds N or
  ``?wait`` passes (Go duration such as ``5s``/``100ms``; default 5 min, capped at 10 min; no
  jitter), then answers with whatever is current (the same index on a timeout);
* ``/v1/kv/<key>``: GET (``recurse``; 404 when nothing matches), PUT (``cas`` with 0 =
  create-only, ``acquire``, ``release``, ``flags``; combining cas/acquire/release is a 400
  "Conflicting flags" as in Consul), DELETE (``recurse``, ``cas``; like Consul a CAS delete of
  a missing key answers true). A PUT on a key held by a session keeps the holder;
* ``/v1/txn`` with KV operations (set, cas, lock, unlock, get, get-tree, check-index,
  check-session, check-not-exists, delete, delete-tree, delete-cas): all or nothing, 200 with
  ``Results`` or 409 with ``Errors`` (``OpIndex``, ``What``);
* sessions (``/v1/session/create|renew|destroy|info|list``): TTL between 10 s and 24 h (else
  500), ``Behavior`` release/delete, ``LockDelay`` (duration string or number; below 1000 it
  means seconds; at most 60 s), checks accepted only as ``serfHealth``, which never fails.
  **Invalidation rule:** a session with a TTL is invalidated exactly ``2 * TTL`` after its
  creation or last renewal - the moment Consul's own timer fires (Consul promises at least
  TTL and arms ``TTL * 2``) - checked every 50 ms and before every request. Invalidation and
  destroy delete (``delete``) or release (``release``) the keys the session holds and start
  the lock-delay of each: acquiring such a key (``acquire`` or a txn ``lock``) fails until it
  ends. Acquiring a key held by another session fails; a write naming an unknown session is a
  500 ``invalid session "<id>"`` (``KV PUT``) or a txn error with that text;
* ACL token: ``X-Consul-Token`` header or ``?token=``; when the emulator has ``acl_token``
  every request must carry it (else 403). ``?dc=`` other than the emulator's is a 500.

Time: sessions and lock-delays run on ``time.monotonic() + offset``; :meth:`advance` moves the
offset (tests of a 10 s minimum TTL need not sleep). ``stop()``/``kill()`` close the listener
and every connection (clients get "connection refused"); by default the state is KEPT, as by a
Consul server with a data directory, and ``start()`` re-arms every session timer at its full
``2 * TTL`` as a newly elected Consul leader does. ``stop(lose_state=True)`` (or
``ConsulEmulator(keep_state=False)``) forgets everything like a restarted ``consul agent -dev``.
The emulator runs in a thread of its own with its own event loop, so sync and async tests use
it alike.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import dataclasses
import json
import re
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web

from pgha.cli.localcluster import free_port
from pgha.dcs.base import KVStore
from tests.support.dcs_servers import ServedDcs

T = TypeVar("T")

TTL_MIN, TTL_MAX = 10.0, 86400.0
MAX_LOCK_DELAY = 60.0
DEFAULT_WAIT, MAX_WAIT = 300.0, 600.0
REAP_INTERVAL = 0.05
MAX_TXN_OPS = 128
_WRITE_VERBS = {"set", "cas", "lock", "unlock", "delete", "delete-tree", "delete-cas"}
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
          "h": 3600.0}
_DURATION = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")




def parse_duration(text: str) -> float:
    """Seconds of a Go duration (``1m30s``, ``100ms``, ``0``); ValueError otherwise."""
    sign, body = (-1.0, text[1:]) if text.startswith("-") else (1.0, text.removeprefix("+"))
    if body == "0":
        return 0.0
    pos, total = 0, 0.0
    while pos < len(body):
        match = _DURATION.match(body, pos)
        if match is None:
            raise ValueError(f"invalid duration {text!r}")
        total += float(match[1]) * _UNITS[match[2]]
        pos = match.end()
    if not body:
        raise ValueError(f"invalid duration {text!r}")
    return sign * total


class ConsulError(Exception):
    """An error answer: HTTP ``status`` with ``text`` (or a txn error message)."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


@dataclass(frozen=True)
class Entry:
    key: str
    value: bytes
    flags: int
    create_index: int
    modify_index: int
    lock_index: int
    session: str = ""

    def to_json(self, with_value: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "LockIndex": self.lock_index, "Key": self.key, "Flags": self.flags,
            "Value": base64.b64encode(self.value).decode() if with_value and self.value
            else None,
            "CreateIndex": self.create_index, "ModifyIndex": self.modify_index,
        }
        if self.session:
            data["Session"] = self.session
        return data

    def same(self, other: Entry) -> bool:
        return (self.value, self.flags, self.session, self.lock_index) == (
            other.value, other.flags, other.session, other.lock_index)


@dataclass
class Session:
    id: str
    name: str
    lock_delay: float
    behavior: str
    ttl: float
    ttl_text: str
    checks: list[str]
    create_index: int
    deadline: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"ID": self.id, "Name": self.name, "Node": "consul-emulator",
                "LockDelay": int(self.lock_delay * 1e9), "Behavior": self.behavior,
                "TTL": self.ttl_text, "NodeChecks": list(self.checks), "ServiceChecks": None,
                "CreateIndex": self.create_index, "ModifyIndex": self.create_index}


class State:
    """The data of the emulated server. Used only on the emulator's event loop."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.index = 1  # raft index
        self.kv_index = 0  # last index that changed a key or a tombstone
        self.kv: dict[str, Entry] = {}
        self.tombstones: dict[str, int] = {}
        self.sessions: dict[str, Session] = {}
        self.lock_delays: dict[str, float] = {}
        self.changed = asyncio.Event()

    def next_index(self) -> int:
        self.index += 1
        return self.index

    def notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    # -- indexes -------------------------------------------------------------------------------

    def key_index(self, key: str) -> int:
        entry = self.kv.get(key)
        return entry.modify_index if entry is not None else max(1, self.kv_index)

    def prefix_index(self, prefix: str) -> int:
        if not prefix:
            return max(1, self.kv_index)
        found = [e.modify_index for k, e in self.kv.items() if k.startswith(prefix)]
        found += [i for k, i in self.tombstones.items() if k.startswith(prefix)]
        return max(found) if found else max(1, self.kv_index)

    # -- KV primitives (``idx`` is the raft index of the write) ------------------------------

    def _store(self, entry: Entry, idx: int) -> Entry:
        old = self.kv.get(entry.key)
        if old is not None and old.same(entry):
            return old
        entry = dataclasses.replace(entry, modify_index=idx)
        self.kv[entry.key] = entry
        self.tombstones.pop(entry.key, None)
        self.kv_index = idx
        return entry

    def set(self, key: str, value: bytes, flags: int, idx: int) -> Entry:
        old = self.kv.get(key)
        return self._store(Entry(key, value, flags, old.create_index if old else idx, idx,
                                 old.lock_index if old else 0, old.session if old else ""), idx)

    def cas(self, key: str, value: bytes, flags: int, index: int, idx: int) -> Entry | None:
        old = self.kv.get(key)
        if (old is None and index != 0) or (old is not None and old.modify_index != index):
            return None
        return self.set(key, value, flags, idx)

    def lock(self, key: str, value: bytes, flags: int, session: str, idx: int) -> Entry | None:
        if not session:
            raise ConsulError(500, "missing session")
        if session not in self.sessions:
            raise ConsulError(500, f'invalid session "{session}"')
        old = self.kv.get(key)
        if old is None:
            create, lock_index = idx, 1
        elif old.session == session:
            create, lock_index = old.create_index, old.lock_index
        elif old.session:
            return None
        else:
            create, lock_index = old.create_index, old.lock_index + 1
        return self._store(Entry(key, value, flags, create, idx, lock_index, session), idx)

    def unlock(self, key: str, value: bytes, flags: int, session: str, idx: int
               ) -> Entry | None:
        if not session:
            raise ConsulError(500, "missing session")
        old = self.kv.get(key)
        if old is None or old.session != session:
            return None
        return self._store(dataclasses.replace(old, value=value, flags=flags, session=""), idx)

    def delete(self, key: str, idx: int) -> None:
        if self.kv.pop(key, None) is not None:
            self.tombstones[key] = idx
            self.kv_index = idx

    def delete_tree(self, prefix: str, idx: int) -> None:
        for key in [k for k in self.kv if k.startswith(prefix)]:
            self.delete(key, idx)

    def delete_cas(self, key: str, index: int, idx: int) -> bool:
        old = self.kv.get(key)
        if old is None or old.modify_index != index:
            return old is None  # Consul: a CAS delete of a missing key "succeeds"
        self.delete(key, idx)
        return True

    def lock_delayed(self, key: str) -> bool:
        until = self.lock_delays.get(key)
        return until is not None and until > self.clock()

    # -- sessions --------------------------------------------------------------------------------

    def arm(self, session: Session) -> None:
        session.deadline = self.clock() + 2 * session.ttl if session.ttl else None

    def invalidate(self, session_id: str) -> bool:
        session = self.sessions.pop(session_id, None)
        if session is None:
            return False
        idx = self.next_index()
        now = self.clock()
        for key, entry in list(self.kv.items()):
            if entry.session != session_id:
                continue
            if session.lock_delay > 0:
                self.lock_delays[key] = now + session.lock_delay
            if session.behavior == "delete":
                self.delete(key, idx)
            else:
                self.kv[key] = dataclasses.replace(entry, session="", modify_index=idx)
                self.kv_index = idx
        self.notify()
        return True

    def expire(self) -> None:
        now = self.clock()
        for sid, session in list(self.sessions.items()):
            if session.deadline is not None and session.deadline <= now:
                self.invalidate(sid)


def _lower_keys(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ConsulError(400, "Request decode failed: expected a JSON object")
    return {str(k).lower(): v for k, v in data.items()}


def _lock_delay(raw: Any) -> float:
    if isinstance(raw, str):
        seconds = parse_duration(raw)
        return seconds if seconds * 1e9 >= 1000 else seconds * 1e9  # tiny = seconds
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        return float(raw) if raw < 1000 else raw / 1e9
    raise ValueError("LockDelay must be a duration")


def _uint(request: web.Request, name: str) -> int | None:
    if name not in request.query:
        return None
    try:
        value = int(request.query[name])
    except ValueError:
        raise ConsulError(400, f"Invalid {name}: {request.query[name]!r}") from None
    if value < 0:
        raise ConsulError(400, f"Invalid {name}: {value}")
    return value


class ConsulEmulator:
    """The emulated Consul agent+server (see the module docstring). ``start()`` serves on
    ``127.0.0.1:port``; ``stop()``/``kill()`` take it away; ``close()`` ends it for good."""

    def __init__(self, *, port: int | None = None, acl_token: str | None = None,
                 datacenter: str = "dc1", keep_state: bool = True) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.acl_token = acl_token
        self.datacenter = datacenter
        self.keep_state = keep_state
        self.requests = 0  # requests served, for counting
        self._offset = 0.0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name=f"consul-emulator-{self.port}")
        self._thread.start()
        self._closed = False
        self._runner: web.AppRunner | None = None
        self._reaper: asyncio.Task[None] | None = None
        self.state: State = self._call(self._new_state())
        atexit.register(self.close)

    # -- thread plumbing -------------------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coro.close()
            raise RuntimeError("the Consul emulator is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    def clock(self) -> float:
        return time.monotonic() + self._offset

    async def _new_state(self) -> State:
        return State(self.clock)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._runner is not None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        self._call(self._start())

    def stop(self, *, lose_state: bool | None = None) -> None:
        lose = (not self.keep_state) if lose_state is None else lose_state
        self._call(self._stop(lose))

    def kill(self) -> None:
        self.stop()

    def close(self) -> None:
        if self._closed:
            return
        try:
            self._call(self._stop(False))
        finally:
            self._closed = True
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            if not self._thread.is_alive():
                self._loop.close()

    async def astart(self) -> None:
        await asyncio.to_thread(self.start)

    async def astop(self, *, lose_state: bool | None = None) -> None:
        await asyncio.to_thread(lambda: self.stop(lose_state=lose_state))

    def __enter__(self) -> ConsulEmulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> ConsulEmulator:
        await self.astart()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.close)

    async def _start(self) -> None:
        if self._runner is not None:
            return
        app = web.Application(middlewares=[self._middleware])
        app.router.add_route("*", "/v1/kv/{key:.*}", self._kv)
        app.router.add_put("/v1/txn", self._txn)
        app.router.add_put("/v1/session/create", self._session_create)
        app.router.add_put("/v1/session/renew/{id}", self._session_renew)
        app.router.add_put("/v1/session/destroy/{id}", self._session_destroy)
        app.router.add_get("/v1/session/info/{id}", self._session_info)
        app.router.add_get("/v1/session/list", self._session_list)
        app.router.add_get("/v1/status/leader", self._leader)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.05)  # 0 = no limit
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        for session in self.state.sessions.values():  # a new leader re-arms every timer
            self.state.arm(session)
        self._reaper = asyncio.create_task(self._reap())

    async def _stop(self, lose_state: bool) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        if lose_state:
            self.state.notify()
            self.state = State(self.clock)

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(REAP_INTERVAL)
            self.state.expire()

    # -- test hooks (thread-safe) --------------------------------------------------------------

    def _on_loop(self, fn: Callable[[], T]) -> T:
        async def run() -> T:
            return fn()
        return self._call(run())

    def advance(self, seconds: float) -> None:
        """Move the emulator's clock forward (sessions expire, lock-delays end)."""
        def run() -> None:
            self._offset += seconds
            self.state.expire()
        self._on_loop(run)

    def reap_tombstones(self) -> None:
        """Forget deleted keys' tombstones (Consul does so after a while): the index of a
        prefix may then go backwards."""
        self._on_loop(self.state.tombstones.clear)

    def dump(self) -> dict[str, Entry]:
        return self._on_loop(lambda: dict(self.state.kv))

    def sessions(self) -> dict[str, Session]:
        return self._on_loop(lambda: {k: dataclasses.replace(s)
                                      for k, s in self.state.sessions.items()})

    @property
    def index(self) -> int:
        return self._on_loop(lambda: self.state.index)

    # -- HTTP ----------------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request,
                          handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                          ) -> web.StreamResponse:
        self.requests += 1
        self.state.expire()
        try:
            token = request.headers.get("X-Consul-Token") or request.query.get("token")
            if self.acl_token is not None and token != self.acl_token:
                raise ConsulError(403, "Permission denied")
            dc = request.query.get("dc")
            if dc and dc != self.datacenter:
                raise ConsulError(500, "No path to datacenter")
            return await handler(request)
        except ConsulError as exc:
            return web.Response(status=exc.status, text=exc.text)

    def _json(self, data: Any, status: int = 200, index: int | None = None) -> web.Response:
        headers = {"X-Consul-KnownLeader": "true", "X-Consul-LastContact": "0"}
        if index is not None:
            headers["X-Consul-Index"] = str(index)
        return web.Response(status=status, text=json.dumps(data), headers=headers,
                            content_type="application/json")

    async def _block(self, request: web.Request, current: Callable[[], int]) -> None:
        """Wait as a blocking query does (see the module docstring)."""
        min_index = _uint(request, "index")
        if not min_index:
            return
        wait = DEFAULT_WAIT
        if "wait" in request.query:
            try:
                wait = parse_duration(request.query["wait"])
            except ValueError:
                raise ConsulError(400, "Invalid wait time") from None
        deadline = asyncio.get_running_loop().time() + min(max(wait, 0.0), MAX_WAIT)
        while current() <= min_index:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return
            try:
                async with asyncio.timeout(remaining):
                    await self.state.changed.wait()
            except TimeoutError:
                return

    async def _kv(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        q = request.query
        state = self.state
        if key.startswith("/"):
            raise ConsulError(400, "key must not begin with a '/'")
        if request.method == "GET":
            recurse = "recurse" in q
            if not key and not recurse:
                raise ConsulError(400, "Missing key name")
            if recurse:
                await self._block(request, lambda: self.state.prefix_index(key))
                state = self.state
                entries = [e for k, e in sorted(state.kv.items()) if k.startswith(key)]
                index = state.prefix_index(key)
            else:
                await self._block(request, lambda: self.state.key_index(key))
                state = self.state
                found = state.kv.get(key)
                entries = [found] if found is not None else []
                index = state.key_index(key)
            if not entries:
                return web.Response(status=404, headers={"X-Consul-Index": str(index)})
            return self._json([e.to_json() for e in entries], index=index)
        if request.method == "PUT":
            if not key:
                raise ConsulError(400, "Missing key name")
            if sum(f in q for f in ("cas", "acquire", "release")) > 1:
                raise ConsulError(400, f"Conflicting flags: {q}")
            value = await request.read()
            flags = _uint(request, "flags") or 0
            cas = _uint(request, "cas")
            if "acquire" in q and state.lock_delayed(key):
                return self._json(False)
            idx = state.next_index()
            if cas is not None:
                ok = state.cas(key, value, flags, cas, idx) is not None
            elif "acquire" in q:
                ok = state.lock(key, value, flags, q["acquire"], idx) is not None
            elif "release" in q:
                ok = state.unlock(key, value, flags, q["release"], idx) is not None
            else:
                ok = state.set(key, value, flags, idx) is not None
            state.notify()
            return self._json(ok)
        if request.method == "DELETE":
            if "recurse" in q and "cas" in q:
                raise ConsulError(400, f"Conflicting flags: {q}")
            cas = _uint(request, "cas")
            if not key and "recurse" not in q:
                raise ConsulError(400, "Missing key name")
            idx = state.next_index()
            ok = True
            if "recurse" in q:
                state.delete_tree(key, idx)
            elif cas is not None:
                ok = state.delete_cas(key, cas, idx)
            else:
                state.delete(key, idx)
            state.notify()
            return self._json(ok)
        raise ConsulError(405, f"method {request.method} not allowed")

    async def _txn(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read() or b"null")
        except ValueError:
            raise ConsulError(400, "Failed to parse body") from None
        if not isinstance(body, list):
            raise ConsulError(400, "Failed to parse body: expected a list of operations")
        if len(body) > MAX_TXN_OPS:
            raise ConsulError(413, "Transaction contains too many operations")
        ops: list[dict[str, Any]] = []
        for item in body:
            item = _lower_keys(item)
            if set(item) != {"kv"}:
                raise ConsulError(400, "the emulator supports KV operations only")
            op = _lower_keys(item["kv"])
            try:
                op["value"] = base64.b64decode(op.get("value") or "", validate=True)
            except ValueError:
                raise ConsulError(400, "Failed to parse body: Value is not base64") from None
            op.setdefault("key", "")
            ops.append(op)
        state = self.state
        errors = [{"OpIndex": i,
                   "What": f"failed to lock key {json.dumps(op['key'])} due to lock delay"}
                  for i, op in enumerate(ops)
                  if str(op.get("verb")) == "lock" and state.lock_delayed(op["key"])]
        if errors:
            return self._json({"Results": None, "Errors": errors}, status=409)
        writes = any(str(op.get("verb")) in _WRITE_VERBS for op in ops)
        idx = state.next_index() if writes else state.index
        saved = (dict(state.kv), dict(state.tombstones), state.kv_index)
        results: list[dict[str, Any]] = []
        for i, op in enumerate(ops):
            try:
                results += self._txn_op(state, op, idx)
            except ConsulError as exc:
                errors.append({"OpIndex": i, "What": exc.text})
        if errors:
            state.kv, state.tombstones, state.kv_index = saved
            return self._json({"Results": None, "Errors": errors}, status=409)
        if writes:
            state.notify()
        return self._json({"Results": results, "Errors": None}, index=None)

    @staticmethod
    def _txn_op(state: State, op: dict[str, Any], idx: int) -> list[dict[str, Any]]:
        verb, key = str(op.get("verb")), str(op["key"])
        value, flags = op["value"], int(op.get("flags") or 0)
        index, session = int(op.get("index") or 0), str(op.get("session") or "")
        entry: Entry | None = None

        def fail(what: str) -> ConsulError:
            return ConsulError(409, what.replace("KEY", json.dumps(key)))

        if verb == "set":
            entry = state.set(key, value, flags, idx)
        elif verb == "cas":
            if (entry := state.cas(key, value, flags, index, idx)) is None:
                raise fail("failed to set key KEY, index is stale")
        elif verb == "lock":
            if (entry := state.lock(key, value, flags, session, idx)) is None:
                raise fail("failed to lock key KEY, lock is already held")
        elif verb == "unlock":
            if (entry := state.unlock(key, value, flags, session, idx)) is None:
                raise fail("failed to unlock key KEY, lock isn't held, or is held by another "
                           "session")
        elif verb == "get":
            if (entry := state.kv.get(key)) is None:
                raise fail("key KEY doesn't exist")
            return [{"KV": entry.to_json()}]
        elif verb == "get-tree":
            return [{"KV": e.to_json()} for k, e in sorted(state.kv.items())
                    if k.startswith(key)]
        elif verb == "check-index":
            if (entry := state.kv.get(key)) is None:
                raise fail("failed to check index, key KEY doesn't exist")
            if entry.modify_index != index:
                raise fail(f"failed index check for key KEY, current modify index "
                           f"{entry.modify_index} != {index}")
        elif verb == "check-session":
            if (entry := state.kv.get(key)) is None:
                raise fail("failed to check session, key KEY doesn't exist")
            if entry.session != session:
                raise fail(f"failed session check for key KEY, current session "
                           f"{entry.session!r} != {session!r}")
        elif verb == "check-not-exists":
            if key in state.kv:
                raise fail("key KEY exists")
        elif verb == "delete":
            state.delete(key, idx)
        elif verb == "delete-tree":
            state.delete_tree(key, idx)
        elif verb == "delete-cas":
            if not state.delete_cas(key, index, idx):
                raise fail("failed to delete key KEY, index is stale")
        else:
            raise fail(f"unknown KV verb {verb!r}")
        return [] if entry is None else [{"KV": entry.to_json(with_value=False)}]

    async def _session_create(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            data = _lower_keys(json.loads(raw)) if raw.strip() else {}
        except ValueError:
            raise ConsulError(400, "Request decode failed") from None
        state = self.state
        try:
            lock_delay = _lock_delay(data["lockdelay"]) if "lockdelay" in data else 15.0
            ttl_text = str(data.get("ttl") or "")
            ttl = parse_duration(ttl_text) if ttl_text else 0.0
        except ValueError as exc:
            raise ConsulError(400, f"Request decode failed: {exc}") from None
        if ttl and not TTL_MIN <= ttl <= TTL_MAX:
            raise ConsulError(500, f"Invalid Session TTL '{ttl_text}', must be between "
                                   f"[{TTL_MIN:g}s={TTL_MAX:g}s]")
        if lock_delay > MAX_LOCK_DELAY:
            raise ConsulError(500, f"Invalid Lock Delay '{lock_delay}s', must be at most 60s")
        behavior = str(data.get("behavior") or "release")
        if behavior not in ("release", "delete"):
            raise ConsulError(500, f"Invalid Behavior setting '{behavior}'")
        checks = data.get("nodechecks", data.get("checks", ["serfHealth"]))
        if not isinstance(checks, list) or any(c != "serfHealth" for c in checks):
            raise ConsulError(500, f"Missing check registration: {checks!r}")
        session = Session(str(uuid.uuid4()), str(data.get("name") or ""), lock_delay, behavior,
                          ttl, ttl_text, list(checks), state.next_index())
        state.arm(session)
        state.sessions[session.id] = session
        return self._json({"ID": session.id})

    async def _session_renew(self, request: web.Request) -> web.Response:
        sid = request.match_info["id"]
        session = self.state.sessions.get(sid)
        if session is None:
            raise ConsulError(404, f"Session id '{sid}' not found")
        self.state.arm(session)
        return self._json([session.to_json()], index=self.state.index)

    async def _session_destroy(self, request: web.Request) -> web.Response:
        self.state.invalidate(request.match_info["id"])
        return self._json(True)

    async def _session_info(self, request: web.Request) -> web.Response:
        session = self.state.sessions.get(request.match_info["id"])
        found = [session.to_json()] if session is not None else []
        return self._json(found, index=self.state.index)

    async def _session_list(self, request: web.Request) -> web.Response:
        return self._json([s.to_json() for s in self.state.sessions.values()],
                          index=self.state.index)

    async def _leader(self, request: web.Request) -> web.Response:
        return self._json("127.0.0.1:8300")


class ConsulEmulatorDcs(ServedDcs):
    """Registry adapter (:class:`tests.support.dcs_servers.DcsServer`) of a running emulator.
    ``contract_ttl`` 20: the session TTL is then 10 s, Consul's minimum."""

    kind = "consul"
    contract_ttl = 20.0

    def __init__(self) -> None:
        self.server = ConsulEmulator()
        self.server.start()

    def make_kv(self, ttl: float, timeout: float) -> KVStore:
        from pgha.dcs.consul import ConsulStore

        return ConsulStore(self.server.host, self.server.port, ttl=ttl, timeout=timeout)

    def config_section(self) -> dict[str, Any]:
        return {"consul": {"host": f"{self.server.host}:{self.server.port}"}}


def main(argv: list[str] | None = None) -> None:
    """``python -m tests.support.consul_emulator [--port N] [--acl-token T]``: serve until
    SIGTERM/SIGINT (used to stand in for a ``consul`` binary in the harness's own test)."""
    import argparse
    import signal

    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--port", type=int, default=8500)
    parser.add_argument("--acl-token")
    args = parser.parse_args(argv)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    emulator = ConsulEmulator(port=args.port, acl_token=args.acl_token, keep_state=False)
    emulator.start()
    try:
        while not done.wait(0.5):
            pass
    finally:
        emulator.close()


if __name__ == "__main__":
    main()
