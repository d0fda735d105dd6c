"""JSON encoding of etcd v3 gateway requests and replies (``/v3/...``), and error mapping.

The gateway speaks the gRPC messages as JSON: ``bytes`` fields are base64 strings, 64-bit
integers are decimal strings, and fields at their zero value are omitted from replies.
"""

from __future__ import annotations

import base64
from typing import Any

from pgha.dcs.base import KeyValue

# gRPC status codes the gateway reports in ``{"code": N, "error"|"message": ...}`` bodies.
CODE_INVALID_ARGUMENT = 3
CODE_FAILED_PRECONDITION = 9
CODE_UNAUTHENTICATED = 16
CODE_NOT_FOUND = 5
REQUEST_CODES = frozenset({CODE_INVALID_ARGUMENT, CODE_FAILED_PRECONDITION, CODE_NOT_FOUND})


def b64(data: bytes | str) -> str:
    """``data`` (str as UTF-8) as the gateway's base64 text."""
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def unb64(text: str | None) -> bytes:
    """Bytes of a base64 field (b"" when omitted)."""
    return base64.b64decode(text) if text else b""


def as_int(value: Any) -> int:
    """An int64 field (decimal string or number; 0 when omitted)."""
    return int(value) if value is not None else 0


def prefix_end(prefix: bytes) -> bytes:
    """The ``range_end`` covering every key starting with ``prefix``."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"  # every key


def range_request(prefix: str, *, count_only: bool = False) -> dict[str, Any]:
    raw = prefix.encode()
    body: dict[str, Any] = {"key": b64(raw), "range_end": b64(prefix_end(raw))}
    if count_only:
        body["count_only"] = True
    return body


def put_request(key: str, value: bytes, lease: int | None) -> dict[str, Any]:
    body: dict[str, Any] = {"key": b64(key), "value": b64(value)}
    if lease:
        body["lease"] = str(lease)
    return body


def compare_create_absent(key: str) -> dict[str, Any]:
    return {"target": "CREATE", "result": "EQUAL", "key": b64(key), "create_revision": "0"}


def compare_mod(key: str, revision: int) -> dict[str, Any]:
    return {"target": "MOD", "result": "EQUAL", "key": b64(key), "mod_revision": str(revision)}


def compare_value(key: str, value: bytes) -> dict[str, Any]:
    return {"target": "VALUE", "result": "EQUAL", "key": b64(key), "value": b64(value)}


def txn_request(compare: list[dict[str, Any]], success: list[dict[str, Any]]) -> dict[str, Any]:
    return {"compare": compare, "success": success, "failure": []}


def key_value(kv: dict[str, Any]) -> KeyValue:
    """A KeyValue from a gateway ``mvccpb.KeyValue`` object."""
    lease = as_int(kv.get("lease"))
    return KeyValue(
        unb64(kv.get("key")).decode("utf-8", "replace"), unb64(kv.get("value")),
        as_int(kv.get("mod_revision")), lease != 0, f"{lease:x}" if lease else None,
    )


def header_revision(reply: dict[str, Any]) -> int:
    return as_int((reply.get("header") or {}).get("revision"))


class GatewayError(Exception):
    """An error reply of the gateway: ``code`` is the gRPC status code (0 if unknown)."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message or f"HTTP {status}")
        self.status = status
        self.code = code

    @property
    def invalid_token(self) -> bool:
        text = str(self).lower()
        return (self.code == CODE_UNAUTHENTICATED and "token" in text) or "auth token" in text

    @property
    def lease_not_found(self) -> bool:
        return "lease not found" in str(self)

    @property
    def request_level(self) -> bool:
        """A refusal of this request, not a failure of the endpoint."""
        return self.code in REQUEST_CODES or self.lease_not_found or 400 <= self.status < 500


def error_of(status: int, body: Any) -> GatewayError:
    """The GatewayError for an HTTP ``status`` with parsed JSON ``body`` (or anything else)."""
    if isinstance(body, dict):
        inner = body.get("error")
        if isinstance(inner, dict):  # streaming endpoints wrap the status
            body = inner
            inner = body.get("message")
        message = str(body.get("message") or inner or "")
        return GatewayError(status, as_int(body.get("code")), message)
    return GatewayError(status, 0, str(body)[:200])
