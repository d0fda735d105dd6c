"""Headers the REST API adds to every response it sends (``restapi.server_tokens``,
``restapi.http_extra_headers``, ``restapi.https_extra_headers``).

Contract of :meth:`ResponseHeaders.on_prepare` (aiohttp's ``on_response_prepare`` signal, so
it covers every answer of the application: health checks, 401/403/503, HEAD and OPTIONS):

1. ``Server``: ``server_tokens`` ``original`` leaves aiohttp's own value
   (``Python/<x.y> aiohttp/<version>``); ``minimal`` sends ``pgha/<version>``; ``productonly``
   sends ``pgha``. (Patroni's ``Minimal`` is ``Patroni/<version>``, its ``ProductOnly``
   ``Patroni``: pgha names itself.)
2. ``http_extra_headers`` on every response; on a connection that uses TLS also
   ``https_extra_headers``, which win over an ``http_extra_headers`` entry of the same name
   (Patroni sends both sets over HTTPS too). Whether the connection uses TLS is read from the
   connection itself, so connections opened before a reload switched HTTPS on or off get the
   set that matches them.
3. An extra header replaces a header of the same name the response already has (``Server``
   included); names and values were checked when the configuration was loaded.

:meth:`ResponseHeaders.configure` (a configuration reload) takes effect from the next response
on; a response never sees a mix of both configurations.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

from pgha import __version__
from pgha.config.models import RestApiConfig

PRODUCT = "pgha"

__all__ = ["PRODUCT", "ResponseHeaders", "server_header"]


def server_header(server_tokens: str) -> str | None:
    """The ``Server`` value for a (validated, lower-case) ``server_tokens``; None: aiohttp's
    own."""
    return {"minimal": f"{PRODUCT}/{__version__}", "productonly": PRODUCT}.get(server_tokens)


@dataclass(frozen=True)
class _Settings:
    server: str | None = None
    http: dict[str, str] = field(default_factory=dict)
    https: dict[str, str] = field(default_factory=dict)


class ResponseHeaders:
    """See the module docstring."""

    def __init__(self, restapi: RestApiConfig | None = None) -> None:
        self._settings = _Settings()
        self.configure(restapi)

    def configure(self, restapi: RestApiConfig | None) -> None:
        if restapi is None:
            self._settings = _Settings()
            return
        self._settings = _Settings(
            server_header(restapi.server_tokens), dict(restapi.http_extra_headers),
            {**restapi.http_extra_headers, **restapi.https_extra_headers})

    async def on_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        settings = self._settings
        if settings.server is not None:
            response.headers["Server"] = settings.server
        for name, value in (settings.https if request.secure else settings.http).items():
            response.headers[name] = value
