"""The start-up check that no live agent already runs under our member name. Like Patroni, an
agent that finds one refuses to start: ``Can't start; there is already a node named '<name>'
running`` (logged CRITICAL, exit status 1).

What counts as alive: our ``members/<name>`` key exists in the DCS (it is bound to a session,
so it is there only while the agent that wrote it lives or its session has not expired yet)
AND something answers at the ``api_url`` it publishes:

* any HTTP answer (whatever the status), asked with the cluster's REST client TLS settings
  (CA file, client certificate: :func:`pgha.api.client_tls.ssl_context`), so a member whose
  REST API requires client certificates is recognised;
* or a TCP connection that is accepted but whose TLS handshake or HTTP exchange then fails or
  stalls: a process listens at that member's REST address and refuses us (a certificate we
  cannot present, a hung API) - starting a second agent under its name is the unsafe side.

Not alive: nothing accepts the connection (refused, unreachable host, unknown name, connect
timeout), or a plain-HTTP connection closed or reset without a byte of answer -- what a TCP
proxy, load balancer or port forward in front of a dead agent does (found by the chaos
campaign, whose links are such proxies). That is the usual restart after the agent was killed,
whose member key lingers until its session expires (the leader key it may hold is then
rebound: DESIGN.md safety rule 7).

The caller runs the check before its own REST API listens, so an answer at our own
``api_url`` (same ``connect_address``, another ``listen`` port) is another process, never us.
"""

from __future__ import annotations

import logging
import ssl
from urllib.parse import urlsplit

import aiohttp

from pgha.api.client_tls import ssl_context
from pgha.config import Config

log = logging.getLogger("pgha.agent")


def duplicate_message(name: str) -> str:
    """Patroni's refusal, word for word."""
    return f"Can't start; there is already a node named '{name}' running"


def _client_tls(config: Config) -> ssl.SSLContext:
    try:
        return ssl_context(config)
    except (OSError, ssl.SSLError, ValueError) as exc:
        # the REST server would fail on the same files; a handshake we cannot complete
        # still shows whether something listens there
        log.warning("REST client TLS settings unusable for the name check (%s); checking "
                    "without a client certificate", exc)
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx


async def api_answers(url: str, config: Config, timeout: float) -> str | None:
    """How the REST API at ``url`` shows a live process (see the module docstring), or None
    when nothing accepts a connection there. Never raises for network errors."""
    if urlsplit(url).scheme not in ("http", "https"):
        return None
    limits = aiohttp.ClientTimeout(total=timeout, sock_connect=timeout)
    connector = aiohttp.TCPConnector(ssl=_client_tls(config), force_close=True)
    async with aiohttp.ClientSession(connector=connector, timeout=limits) as session:
        try:
            async with session.get(url, allow_redirects=False) as resp:
                return f"its REST API at {url} answered HTTP {resp.status}"
        except aiohttp.ClientSSLError as exc:
            return f"its REST API at {url} accepted the connection, TLS failed: {exc}"
        except aiohttp.ConnectionTimeoutError:
            return None
        except aiohttp.ClientConnectorError:
            return None  # refused, unreachable, unknown name
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            if urlsplit(url).scheme == "https":
                # a TLS server that refuses our certificate closes the same way: alive
                return f"its REST API at {url} accepted the connection, then: {exc}"
            # plain HTTP closed (or reset) without a byte of answer: what a TCP proxy or port
            # forward does when nothing runs behind it; a live agent answers or stalls
            log.info("REST API at %s closed the connection without answering (%s): no agent "
                     "there", url, exc or type(exc).__name__)
            return None
        except (aiohttp.ClientError, TimeoutError) as exc:
            what = str(exc) or type(exc).__name__
            return f"its REST API at {url} accepted the connection, then: {what}"
