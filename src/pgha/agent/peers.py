"""Calls to peers' REST APIs: ``GET /patroni`` statuses before a leader race (DESIGN.md
safety rule 3) and failsafe confirmations (``POST /failsafe``).

All peers are asked in parallel, each under a short timeout, with no retries (except the one
repeat with credentials after a 401, within the same timeout). A peer that does not answer, or
answers with something that is not a status, maps to None ("unreachable"); the core then
ignores it.

Credentials (``restapi.authentication``) go with ``POST /failsafe`` and, only to a peer that
answered a GET with 401, with GETs (:class:`pgha.api.client_tls.PeerAuth`); a ``GET /patroni``
to whatever ``api_url`` a member key names carries none otherwise.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self

import aiohttp

from pgha.api.client_tls import PeerAuth, basic_auth, send, ssl_context
from pgha.api.tls_files import TlsSettings, client_digest, load_client_tls
from pgha.config import Config
from pgha.core.model import ClusterView, Member, PeerStatus, Tags

log = logging.getLogger("pgha.agent.peers")


def parse_peer_status(name: str, data: Any) -> PeerStatus | None:
    """Reduce a ``/patroni`` JSON body to a PeerStatus; None when it is not one."""
    if not isinstance(data, Mapping):
        return None
    xlog = data.get("xlog")
    position: int | None = None
    if isinstance(xlog, Mapping):
        values = [xlog.get(k) for k in ("location", "received_location", "replayed_location")]
        ints = [v for v in values if isinstance(v, int) and not isinstance(v, bool)]
        position = max(ints) if ints else None
    timeline = data.get("timeline")
    raw_tags = data.get("tags")
    try:
        tags = Tags.from_json(raw_tags) if isinstance(raw_tags, Mapping) else Tags()
    except ValueError:
        tags = Tags()
    return PeerStatus(
        name=name,
        role=str(data.get("role", "")),
        state=str(data.get("state", "")),
        wal_position=position,
        timeline=timeline if isinstance(timeline, int) else None,
        tags=tags,
    )


async def _fetch_one(session: aiohttp.ClientSession, auth: PeerAuth, name: str, url: str,
                     timeout: float) -> PeerStatus | None:
    try:
        _, body = await send(session, auth, "GET", url, timeout=timeout)
        data = json.loads(body)
    except (aiohttp.ClientError, TimeoutError, ValueError, ssl.SSLError) as exc:
        log.debug("peer %s (%s) unreachable: %s", name, url, exc)
        return None
    return parse_peer_status(name, data)


async def fetch_peer_statuses(
    session: aiohttp.ClientSession, auth: PeerAuth, view: ClusterView, me: str,
    timeout: float = 2.0,
) -> dict[str, PeerStatus | None]:
    """Statuses of every member in ``view`` except ``me`` that publishes an ``api_url``."""
    targets = {n: m.api_url for n, m in view.members.items() if n != me and m.api_url}
    if not targets:
        return {}
    results = await asyncio.gather(
        *(_fetch_one(session, auth, n, url, timeout) for n, url in targets.items())
    )
    return dict(zip(targets, results, strict=True))


def failsafe_url(api_url: str) -> str:
    """``http://h:8008/patroni`` -> ``http://h:8008/failsafe``."""
    base = api_url[: -len("/patroni")] if api_url.endswith("/patroni") else api_url.rstrip("/")
    return f"{base}/failsafe"


async def _confirm_one(session: aiohttp.ClientSession, auth: PeerAuth, name: str, url: str,
                       body: Mapping[str, Any], timeout: float) -> bool:
    try:
        status, answer = await send(session, auth, "POST", url, timeout=timeout, body=body)
    except (aiohttp.ClientError, TimeoutError, ssl.SSLError) as exc:
        log.warning("failsafe: %s (%s) did not confirm: %s", name, url, exc or "timed out")
        return False
    if status != 200:
        log.warning("failsafe: %s (%s) did not confirm: %s %s", name, url, status,
                    " ".join(answer.decode(errors="replace").split())[:200])
    return status == 200


async def failsafe_round(session: aiohttp.ClientSession, auth: PeerAuth,
                         members: Mapping[str, str], me: str,
                         body: Mapping[str, Any], timeout: float) -> bool:
    """POST ``/failsafe`` to every member of ``members`` (``{name: api_url}``) except ``me``,
    in parallel; True only when every one of them answered 200 (each such member promises not
    to take over for ``ttl``). An empty list confirms nothing."""
    targets = {n: failsafe_url(u) for n, u in members.items() if n != me and u}
    if not targets:
        return False
    answers = await asyncio.gather(
        *(_confirm_one(session, auth, n, url, body, timeout) for n, url in targets.items()))
    return all(answers)


class PeerClient:
    """The agent's HTTP client to its peers' REST APIs: one aiohttp session with the cluster's
    client TLS settings, opened while entered, and ``restapi.authentication`` sent where
    :class:`PeerAuth` decides (the peers that demanded them for GETs are remembered across
    reloads). Every call is bounded by its ``timeout``; failures map to None / False.

    A configuration reload goes in two steps: :meth:`prepare` reads and checks the new TLS
    files (SettingError naming the key, nothing changed), :meth:`commit` replaces the session
    when the certificates, CA or credentials changed (calls already running finish on the old
    one; the agent makes none while it reloads)."""

    def __init__(self, config: Config, name: str) -> None:
        self.config = config
        self.name = name
        self._session: aiohttp.ClientSession | None = None
        self._digest: str | None = None
        self.auth = PeerAuth(None)  # credentials set on entering and on commit

    def _use_credentials(self, config: Config) -> None:
        auth = config.restapi.authentication
        self.auth.header = basic_auth(auth.username, auth.password) if auth else None

    def _new_session(self, context: ssl.SSLContext | None) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=context if context is not None else True))

    async def __aenter__(self) -> Self:
        self._use_credentials(self.config)
        self._session = self._new_session(ssl_context(self.config))
        self._digest = client_digest(self.config)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def prepare(self, config: Config) -> TlsSettings:
        """The client TLS settings of a re-read ``config`` (see :func:`load_client_tls`)."""
        return load_client_tls(config)

    async def commit(self, config: Config, tls: TlsSettings) -> bool:
        """Use ``config`` from now on; True when the session was replaced (new certificate,
        key, CA, verification or credentials); the credentials themselves are used from the
        next call on either way."""
        self.config = config
        self._use_credentials(config)
        if tls.digest == self._digest:
            return False
        self._digest = tls.digest
        if self._session is None:
            return False
        old, self._session = self._session, self._new_session(tls.context)
        await old.close()
        return True

    async def statuses(self, view: ClusterView, timeout: float) -> dict[str, PeerStatus | None]:
        """Every other member's status (None: unreachable); empty when not entered."""
        if self._session is None:
            return {}
        return await fetch_peer_statuses(self._session, self.auth, view, self.name, timeout)

    async def status_of(self, member: Member, timeout: float) -> PeerStatus | None:
        """One member's status (None: unreachable, no ``api_url``, or not entered)."""
        if self._session is None or not member.api_url:
            return None
        return await _fetch_one(self._session, self.auth, member.name, member.api_url, timeout)

    async def failsafe_round(self, members: Mapping[str, str], body: Mapping[str, Any],
                             timeout: float) -> bool:
        """See :func:`failsafe_round`; False when not entered."""
        if self._session is None:
            return False
        return await failsafe_round(self._session, self.auth, members, self.name, body, timeout)
