"""HTTP client of the members' REST API, as the operator commands use it.

Why aiohttp rather than urllib in a thread: it is already a dependency (the API server uses
it), it puts one total timeout on each request including connect and TLS handshake, and several
members can be asked concurrently in one event loop (``version``, ``pause --wait``) without a
thread per request.

Contract:

- the base URL of a member is its published ``api_url`` without the trailing ``/patroni``;
- unsafe methods (POST, PUT, PATCH, DELETE) carry HTTP Basic credentials: the ``ctl`` section's
  ``authentication`` {username, password} when present, else ``restapi.authentication``; GETs
  carry them only to a member that answered a GET without them with 401 (repeated once with
  them, and sent with them for the rest of the command); credentials over plain http log one
  warning per member (:class:`pgha.api.client_tls.PeerAuth`);
- TLS: CA file ``ctl.cacert`` (else ``restapi.cafile``), client certificate ``ctl.certfile`` /
  ``ctl.keyfile`` (else ``restapi.certfile``/``keyfile`` when ``restapi.verify_client`` is
  set), no verification with ``ctl.insecure: true`` or the global ``-k``;
- every request is bounded by its timeout; connection errors and timeouts raise
  :class:`RestError` (the caller decides whether that is fatal). Any HTTP answer, whatever its
  status, is returned as a :class:`Reply`.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from pgha.api.client_tls import PeerAuth, basic_auth, credentials, send, ssl_context
from pgha.config import ClusterAccess
from pgha.core.model import Member

if TYPE_CHECKING:  # imported when a request is made, not by every command
    import aiohttp

__all__ = ["Call", "Reply", "RestClient", "RestError", "api_base", "basic_auth", "call_all",
           "credentials", "ssl_context"]

DEFAULT_TIMEOUT = 10.0


class RestError(Exception):
    """The member could not be asked: no api_url, connection refused, TLS failure, timeout."""


@dataclass(frozen=True)
class Reply:
    """An HTTP answer: status code and body text."""

    status: int
    text: str

    def json(self) -> Any:
        """The body as JSON, or None when it is not JSON."""
        try:
            return json.loads(self.text)
        except ValueError:
            return None

    def reason(self) -> str:
        """The body as one line (for error messages)."""
        return " ".join(self.text.split()) or "(no details)"


def api_base(api_url: str) -> str:
    """``http://h:8008/patroni`` -> ``http://h:8008``."""
    base = api_url.rstrip("/")
    if base.endswith("/patroni"):
        base = base[: -len("/patroni")]
    return base


class RestClient:
    """Use as ``async with RestClient(config) as api: await api.request(member, ...)``."""

    def __init__(self, config: ClusterAccess, *, insecure: bool = False,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        self.auth = PeerAuth(credentials(config))
        self.timeout = timeout
        self._config = config
        self._insecure = insecure
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        import aiohttp

        try:
            context = ssl_context(self._config, self._insecure)
        except (OSError, ssl.SSLError) as exc:
            raise RestError(f"cannot load the TLS files of the ctl section: {exc}") from exc
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context))
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(self, member: Member, method: str, path: str, body: Any = None,
                      timeout: float | None = None) -> Reply:
        """``method`` ``path`` on ``member``'s API with an optional JSON ``body``; at most
        ``timeout`` seconds (default: the client's, for both attempts when a GET is repeated
        with credentials after a 401). Raises RestError when there is no answer."""
        import aiohttp

        if self._session is None:
            raise RuntimeError("RestClient used outside 'async with'")
        if not member.api_url:
            raise RestError(f"member {member.name} publishes no api_url")
        url = api_base(member.api_url) + path
        method = method.upper()
        try:
            status, data = await send(self._session, self.auth, method, url,
                                      timeout=timeout or self.timeout, body=body)
            return Reply(status, data.decode(errors="replace"))
        except (aiohttp.ClientError, TimeoutError, ssl.SSLError) as exc:
            detail = str(exc) or ("timed out" if isinstance(exc, TimeoutError)
                                  else type(exc).__name__)
            raise RestError(f"{method} {url}: {detail}") from exc

    async def status(self, member: Member, timeout: float | None = None) -> dict[str, Any]:
        """``GET /patroni`` of ``member`` as a dict. Raises RestError (also for a non-JSON
        answer)."""
        reply = await self.request(member, "GET", "/patroni", timeout=timeout)
        data = reply.json()
        if not isinstance(data, dict):
            raise RestError(f"{member.name}: /patroni answered {reply.status} without JSON")
        return data


@dataclass(frozen=True)
class Call:
    """One request for :func:`call_all`."""

    member: Member
    method: str
    path: str
    body: Any = None


async def call_all(config: ClusterAccess, calls: list[Call], *, insecure: bool = False,
                   timeout: float = DEFAULT_TIMEOUT) -> list[Reply | RestError]:
    """Send every call concurrently, each under ``timeout``; the answers (or the RestError
    of a member that did not answer) in the order of ``calls``."""
    async def one(api: RestClient, c: Call) -> Reply | RestError:
        try:
            return await api.request(c.member, c.method, c.path, c.body)
        except RestError as exc:
            return exc

    try:
        async with RestClient(config, insecure=insecure, timeout=timeout) as api:
            return list(await asyncio.gather(*(one(api, c) for c in calls)))
    except RestError as exc:  # TLS files unusable: every call fails the same way
        return [exc for _ in calls]
