"""The streaming watch of :class:`~pgha.dcs.etcd_http.EtcdHttpStore`: ``POST /v3/watch`` with a
``create_request``; the gateway answers with a chunked stream of JSON objects, one a line.

Liveness: the gateway sends no pings and etcd's progress notifications come only every
10 minutes by default, so a frozen endpoint cannot be told from a quiet cluster by the stream.
After :data:`SILENCE` seconds without a line the watch probes the same endpoint with a
count-only range request under the store's timeout, unless that endpoint answered another call
of the store (the agent's lease keep-alive, every few seconds) within the last ``SILENCE``
seconds: an answer keeps the stream, a failure is a gap (reconnect to the next endpoint, resume
after the last revision, ``WatchEvent(key=None)``). A frozen endpoint is thus noticed within
``2 * SILENCE + timeout`` seconds, and an agent whose keep-alives reach the watch's endpoint
sends no probe at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any, Protocol

import aiohttp

from pgha.dcs import etcd_json as J
from pgha.dcs.base import DCSError, WatchEvent

log = logging.getLogger("pgha.dcs")

SILENCE = 10.0  # seconds without a stream line before the endpoint is probed


class EtcdHttpStore(Protocol):
    """What the watch needs of :class:`pgha.dcs.etcd_http.EtcdHttpStore`."""

    endpoints: list[tuple[str, int]]
    timeout: float
    closed_event: asyncio.Event
    watch_readers: set[asyncio.Task[None]]

    @property
    def closed(self) -> bool: ...
    @property
    def endpoint(self) -> tuple[str, int]: ...
    def url(self, index: int, path: str) -> str: ...
    def http(self) -> aiohttp.ClientSession: ...
    def forget_token(self) -> None: ...
    def answered_within(self, index: int, seconds: float) -> bool: ...
    async def auth_headers(self, index: int) -> dict[str, str]: ...
    async def call(self, what: str, path: str, body: dict[str, Any],
                   lease: int | None = None) -> dict[str, Any]: ...


class _Gap(Exception):
    """The stream ended or failed: reconnect and resume."""


class _Compacted(Exception):
    """The resume revision is compacted."""


async def _read_lines(resp: aiohttp.ClientResponse, queue: asyncio.Queue[bytes | None]) -> None:
    try:
        async for line in resp.content:
            if line.strip():
                queue.put_nowait(line)
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        log.debug("etcd watch stream failed: %s", exc)
    finally:
        queue.put_nowait(None)


async def _probe(store: EtcdHttpStore, index: int, prefix: str) -> None:
    """One count-only range on endpoint ``index``; _Gap if it does not answer in time."""
    try:
        async with asyncio.timeout(store.timeout):
            headers = await store.auth_headers(index)
            async with store.http().post(store.url(index, "/v3/kv/range"), headers=headers,
                                         json=J.range_request(prefix, count_only=True)) as resp:
                if resp.status != 200:
                    raise _Gap(f"probe answered HTTP {resp.status}")
                await resp.read()
    except (TimeoutError, aiohttp.ClientError, OSError, J.GatewayError) as exc:
        raise _Gap(f"endpoint silent and probe failed: {exc or type(exc).__name__}") from exc


def _events(line: bytes) -> list[WatchEvent]:
    """The events of one stream line; _Compacted/_Gap for a cancellation or an error."""
    data = json.loads(line)
    if not isinstance(data, dict):
        raise _Gap("unexpected stream line")
    if "error" in data:
        raise _Gap(str(J.error_of(200, data)))
    result: dict[str, Any] = data.get("result") or {}
    if result.get("canceled"):
        if J.as_int(result.get("compact_revision")):
            raise _Compacted()
        raise _Gap(f"watch canceled: {result.get('cancel_reason') or 'no reason'}")
    out = []
    for event in result.get("events") or []:
        kv = J.key_value(event.get("kv") or {})
        deleted = event.get("type") == "DELETE"
        out.append(WatchEvent(kv.revision, kv.key, deleted=deleted, kv=None if deleted else kv))
    return out


async def watch(store: EtcdHttpStore, prefix: str, start_revision: int
                ) -> AsyncIterator[WatchEvent]:
    """Changes under ``prefix`` after ``start_revision``, in revision order. On a stream error,
    disconnect or silent endpoint it reconnects (next endpoint, backoff 0.1 s doubling to 2 s)
    and resumes after the last revision seen, first yielding ``WatchEvent(last, key=None)``. If
    that revision was compacted it yields ``WatchEvent(current, key=None)`` and resumes from the
    current revision. Ends when the store is closed or the consumer stops iterating."""
    last = start_revision
    index = store.endpoints.index(store.endpoint)
    backoff = 0.1
    resync = compacted = False
    while not store.closed:
        reader: asyncio.Task[None] | None = None
        resp: aiohttp.ClientResponse | None = None
        try:
            if compacted:
                reply = await store.call("get", "/v3/kv/range",
                                         J.range_request(prefix, count_only=True))
                current = J.header_revision(reply)
                log.warning("etcd watch of %s: revision %d compacted, resuming at %d",
                            prefix, last + 1, current)
                last, compacted, resync = current, False, True
            request = J.range_request(prefix)
            request.update(start_revision=str(last + 1), progress_notify=True)
            async with asyncio.timeout(store.timeout):
                headers = await store.auth_headers(index)
                resp = await store.http().post(
                    store.url(index, "/v3/watch"), json={"create_request": request},
                    headers=headers, timeout=aiohttp.ClientTimeout(total=None))
                if resp.status != 200:
                    body = await resp.text()
                    if resp.status == 401 or "token" in body:
                        store.forget_token()
                    raise _Gap(f"HTTP {resp.status}: {body[:200]}")
            queue: asyncio.Queue[bytes | None] = asyncio.Queue()
            reader = asyncio.create_task(_read_lines(resp, queue))
            store.watch_readers.add(reader)
            if store.closed:
                return
            backoff = 0.1
            if resync:
                resync = False
                yield WatchEvent(last, None)
            while True:
                try:
                    async with asyncio.timeout(SILENCE):
                        line = await queue.get()
                except TimeoutError:
                    if not store.answered_within(index, SILENCE):
                        await _probe(store, index, prefix)
                    continue
                if line is None:
                    raise _Gap("stream ended")
                for event in _events(line):
                    last = max(last, event.revision)
                    yield event
        except _Compacted:
            compacted = True
        except (_Gap, DCSError, TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
            if not store.closed:  # the first failure of a series at INFO, then DEBUG
                log.log(logging.INFO if backoff == 0.1 else logging.DEBUG,
                        "etcd watch of %s on %s:%d failed: %s", prefix,
                        *store.endpoints[index], str(exc) or exc.__class__.__name__)
        finally:
            if reader is not None:
                store.watch_readers.discard(reader)
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
            if resp is not None:
                resp.close()
        if store.closed:
            return
        resync = True
        if not compacted:
            index = (index + 1) % len(store.endpoints)
            try:
                async with asyncio.timeout(backoff):
                    await store.closed_event.wait()
            except TimeoutError:
                pass
            backoff = min(2.0, backoff * 2)
