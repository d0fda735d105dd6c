"""TLS settings read from files, checked key by key, for a configuration reload.

A reload must either apply new TLS settings or keep the running ones and say which key is
wrong. :func:`load_server_tls` and :func:`load_client_tls` read every file a TLS context is
built from, naming the configuration key of the first one that is missing, unreadable or not
PEM (:class:`SettingError`), then build the context the way the agent does at start-up
(:func:`pgha.api.security.server_ssl_context`, :func:`pgha.api.client_tls.ssl_context`).

Each result carries a ``digest`` of the options and of the files' contents: two equal digests
mean nothing changed, a different one means a rotated certificate, key or CA (even under the
same file names, as when a certificate manager rewrites them in place).
:func:`server_digest` / :func:`client_digest` compute it without raising (an unreadable file
counts as its error text), for the settings in force at start-up.
"""

from __future__ import annotations

import hashlib
import json
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pgha.api.client_tls import ssl_context
from pgha.api.security import server_ssl_context
from pgha.config import Config
from pgha.config.models import RestApiConfig, check_ciphers

_PEM_CERT = "-----BEGIN CERTIFICATE-----"


class SettingError(ValueError):
    """A configuration value that cannot be used: ``key`` is its dotted path."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


@dataclass(frozen=True)
class TlsSettings:
    """A built context (None: plain HTTP on the server side) and the digest of its inputs."""

    context: ssl.SSLContext | None
    digest: str


# ----------------------------------------------------------------------------- inputs
def _server_files(restapi: RestApiConfig) -> list[tuple[str, str | None, bool]]:
    """(key, path, holds certificates) of every file the server context reads."""
    if not restapi.certfile:
        return []
    return [("restapi.certfile", restapi.certfile, True),
            ("restapi.keyfile", restapi.keyfile, False),
            ("restapi.cafile", restapi.cafile, True)]


def _server_options(restapi: RestApiConfig) -> dict[str, Any]:
    return {"certfile": restapi.certfile, "keyfile": restapi.keyfile,
            "keyfile_password": restapi.keyfile_password, "cafile": restapi.cafile,
            "verify_client": restapi.verify_client, "ciphers": restapi.ciphers}


def _client_files(config: Config) -> list[tuple[str, str | None, bool]]:
    """(key, path, holds certificates) of every file the client context reads (mirrors
    :func:`pgha.api.client_tls.ssl_context`)."""
    ctl = dict(config.ctl or {})
    rest = config.restapi
    files: list[tuple[str, str | None, bool]] = [
        ("ctl.cacert", ctl.get("cacert"), True) if ctl.get("cacert")
        else ("restapi.cafile", rest.cafile, True)]
    if ctl.get("certfile"):
        files += [("ctl.certfile", ctl.get("certfile"), True),
                  ("ctl.keyfile", ctl.get("keyfile"), False)]
    elif rest.verify_client in ("optional", "required"):
        files += [("restapi.certfile", rest.certfile, True),
                  ("restapi.keyfile", rest.keyfile, False)]
    return files


def _client_options(config: Config) -> dict[str, Any]:
    auth = config.restapi.authentication
    return {"ctl": config.ctl or {}, "cafile": config.restapi.cafile,
            "certfile": config.restapi.certfile, "keyfile": config.restapi.keyfile,
            "keyfile_password": config.restapi.keyfile_password,
            "verify_client": config.restapi.verify_client,
            "auth": [auth.username, auth.password] if auth else None}


def _digest(options: dict[str, Any], contents: Iterable[bytes]) -> str:
    h = hashlib.sha256(json.dumps(options, sort_keys=True, default=str).encode())
    for data in contents:
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return h.hexdigest()


def _read_loose(files: list[tuple[str, str | None, bool]]) -> list[bytes]:
    out = []
    for _, path, _ in files:
        if not path:
            out.append(b"")
            continue
        try:
            with open(path, "rb") as fh:
                out.append(fh.read())
        except OSError as exc:
            out.append(f"<unreadable: {exc}>".encode())
    return out


def _read_strict(files: list[tuple[str, str | None, bool]]) -> list[bytes]:
    out = []
    for key, path, certs in files:
        if not path:
            out.append(b"")
            continue
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            raise SettingError(key, f"cannot read {path}: {exc.strerror or exc}") from None
        if certs and _PEM_CERT.encode() not in data:
            raise SettingError(key, f"{path} holds no PEM certificate")
        out.append(data)
    return out


def server_digest(restapi: RestApiConfig) -> str:
    """The digest of the server's TLS inputs (never raises)."""
    return _digest(_server_options(restapi), _read_loose(_server_files(restapi)))


def client_digest(config: Config) -> str:
    """The digest of the peer client's TLS inputs and credentials (never raises)."""
    return _digest(_client_options(config), _read_loose(_client_files(config)))


# ----------------------------------------------------------------------------- contexts
def _build(files: list[tuple[str, str | None, bool]], build: Any) -> Any:
    """Run ``build()``; a TLS error names the key file's key when there is one (the
    certificates were checked to be PEM already), else the certificate's."""
    try:
        return build()
    except (ssl.SSLError, OSError, ValueError) as exc:
        keys = [k for k, path, certs in files if path and not certs] or \
            [k for k, path, _ in files if path] or ["restapi"]
        raise SettingError(keys[0], f"cannot load the TLS certificate and key: {exc}") from None


def load_server_tls(restapi: RestApiConfig) -> TlsSettings:
    """The server context for ``restapi`` (None without ``certfile``) and its digest;
    SettingError naming the key when a file is missing, unreadable or unusable, or when
    ``ciphers`` selects no cipher (the configuration loader refuses that too)."""
    files = _server_files(restapi)
    contents = _read_strict(files)
    if restapi.certfile and restapi.ciphers:
        try:
            check_ciphers(restapi.ciphers)
        except ValueError as exc:
            raise SettingError("restapi.ciphers", str(exc)) from None
    context = _build(files, lambda: server_ssl_context(restapi))
    return TlsSettings(context, _digest(_server_options(restapi), contents))


def load_client_tls(config: Config) -> TlsSettings:
    """The peer client's context and the digest of its inputs and credentials; SettingError
    naming the key when a file is missing, unreadable or unusable."""
    files = _client_files(config)
    contents = _read_strict(files)
    context = _build(files, lambda: ssl_context(config))
    return TlsSettings(context, _digest(_client_options(config), contents))
