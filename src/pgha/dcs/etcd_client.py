"""aetcd client plumbing for :mod:`pgha.dcs.etcd`: channel options, the TLS client, the
``hasleader`` requirement on every request, the error classes, telling grpc.aio's local call
cancellations from real ones, background closing of dropped clients."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aetcd
from aetcd import rpc

from pgha.dcs.base import DCSError

log = logging.getLogger("pgha.dcs")

# gRPC channel options: detect dead connections of idle watch streams, and reconnect quickly
# (gRPC's default reconnect backoff grows to two minutes).
CHANNEL_OPTIONS: dict[str, Any] = {
    "grpc.keepalive_time_ms": 10_000,
    "grpc.keepalive_timeout_ms": 5_000,
    "grpc.http2.max_pings_without_data": 0,
    "grpc.initial_reconnect_backoff_ms": 200,
    "grpc.min_reconnect_backoff_ms": 200,
    "grpc.max_reconnect_backoff_ms": 2_000,
}

REQUIRE_LEADER = ("hasleader", "true")

# Refusals that say nothing about the endpoint's health: keep using it.
REQUEST_ERRORS: tuple[type[Exception], ...] = (
    aetcd.InvalidArgumentError,
    aetcd.PreconditionFailedError,
    aetcd.DuplicateLeaseError,
)
# Everything aetcd / grpc raise for a failed RPC.
CLIENT_ERRORS: tuple[type[Exception], ...] = (aetcd.ClientError, rpc.RpcError, rpc.BaseError)
WATCH_ERRORS: tuple[type[Exception], ...] = (TimeoutError, OSError, *CLIENT_ERRORS)


class TlsClient(aetcd.Client):  # type: ignore[misc]
    """aetcd client over a TLS channel (aetcd itself only opens plaintext channels)."""

    def __init__(self, *args: Any, credentials: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pgha_credentials = credentials
        self._pgha_connect_lock = asyncio.Lock()

    async def connect(self) -> None:
        async with self._pgha_connect_lock:
            if self._connected.is_set():
                return
            target = f"{self._host}:{self._port}"
            channel = rpc.secure_channel(
                target, self._pgha_credentials, options=list(self._options.items())
            )
            self.channel = channel
            if self._username is not None and self._password is not None:
                self.auth_stub = rpc.AuthStub(channel)
                request = rpc.AuthenticateRequest(name=self._username, password=self._password)
                resp = await self.auth_stub.Authenticate(request, timeout=self._timeout)
                self.metadata = (("token", resp.token),)
            self.kvstub = rpc.KVStub(channel)
            self.clusterstub = rpc.ClusterStub(channel)
            self.leasestub = rpc.LeaseStub(channel)
            self.maintenancestub = rpc.MaintenanceStub(channel)
            self._watcher = aetcd.Watcher(
                rpc.WatchStub(channel), timeout=self._timeout, metadata=self.metadata
            )
            self._connected.set()


def read_file(path: str | None) -> bytes | None:
    """The content of the PEM file ``path`` (None for None); DCSError when unreadable."""
    if path is None:
        return None
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise DCSError(f"cannot read etcd TLS file {path}: {exc}") from exc


async def connect_client(client: Any) -> None:
    """Connect ``client`` (no-op when connected) and make every request carry etcd's
    ``hasleader`` requirement: a member cut off from the raft leader then refuses requests and
    cancels watch streams at once (instead of serving stale silence), so we move on to the
    next endpoint."""
    await client.connect()
    metadata = tuple(client.metadata or ())
    if REQUIRE_LEADER not in metadata:
        client.metadata = (*metadata, REQUIRE_LEADER)
        if client._watcher is not None:
            client._watcher._metadata = client.metadata


def set_request_timeout(client: Any, seconds: float) -> None:
    """Make ``client`` (aetcd) give its next requests a deadline of ``seconds``: aetcd reads
    its ``_timeout`` at every request, set once at construction otherwise."""
    if getattr(client, "_timeout", seconds) != seconds:
        client._timeout = seconds


def stray_cancellation() -> bool:
    """Inside ``except CancelledError``: True when the current task is not being cancelled
    (``Task.cancelling() == 0``), i.e. the error comes from grpc.aio, whose awaited call raises
    CancelledError when it was cancelled *locally* -- which ``Channel.close()`` does to every
    call still active on the channel (grpc/aio/_call.py, ``is_locally_cancelled``). False for
    a real cancellation (``task.cancel()``, an expiring ``asyncio.timeout``), which must
    propagate."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() == 0


_CLOSING: set[asyncio.Task[None]] = set()  # background closes of dropped clients


def close_in_background(client: Any) -> None:
    """Close ``client`` without waiting for it (see :meth:`EtcdStore._drop` for why)."""
    task = asyncio.get_running_loop().create_task(_close_quietly(client))
    _CLOSING.add(task)
    task.add_done_callback(_CLOSING.discard)


async def _close_quietly(client: Any) -> None:
    """Close an aetcd client; never raises, never blocks for long."""
    try:
        async with asyncio.timeout(2.0):
            await client.close()
    except Exception as exc:  # best effort
        log.debug("closing etcd client failed: %r", exc)
