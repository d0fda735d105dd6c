"""The ZooKeeper authentication keys: ``zookeeper.auth_data`` and ``zookeeper.set_acls``.

Contract (pure, no IO): :func:`auth_data` turns ``auth_data`` into kazoo's ``auth_data`` list of
``(scheme, credential)`` pairs; it takes a mapping ``{scheme: credential}`` (Patroni's shape,
one credential per scheme) or a list of such mappings (several credentials of one scheme).
:func:`set_acls` turns ``set_acls`` (``{principal: [permission, ...]}``) into ``(scheme, id,
permissions)`` triples: a principal is an x509 name (``CN=...``, as in Patroni) unless it starts
with one of :data:`SCHEMES` and a colon (``digest:user:base64-sha1``, ``sasl:name``,
``ip:10.0.0.0/8``, ``world:anyone``, ``x509:CN=...``), an extension of pgha. Permissions are
names of :data:`PERMISSIONS`, in any case. Both raise ValueError with a one-line message that
does not name the key (:func:`check` adds the key path); None or an empty value is "not set".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

PERMISSIONS = ("READ", "WRITE", "CREATE", "DELETE", "ADMIN", "ALL")
SCHEMES = ("digest", "sasl", "ip", "world", "auth", "x509")

Acl = tuple[str, str, frozenset[str]]


def _text(value: Any, what: str) -> str:  # the value is not shown: it may be a secret
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what}: expected non-empty text, got "
                         + ("empty text" if isinstance(value, str) else type(value).__name__))
    return value.strip()


def auth_data(value: Any) -> list[tuple[str, str]]:
    """``(scheme, credential)`` pairs from a mapping or a list of mappings (see module doc)."""
    if value is None:
        return []
    items: list[Any] = [value] if isinstance(value, Mapping) else value
    if not isinstance(items, list) or not all(isinstance(i, Mapping) for i in items):
        raise ValueError("expected a mapping of scheme: credential (e.g. digest: user:password)"
                         " or a list of such mappings")
    return [(_text(scheme, "scheme"), _text(cred, f"credential of {scheme}"))
            for item in items for scheme, cred in item.items()]


def _principal(text: str) -> tuple[str, str]:
    scheme, sep, ident = text.partition(":")
    if sep and scheme.lower() in SCHEMES:
        if not ident and scheme.lower() not in ("auth",):
            raise ValueError(f"{text!r}: the {scheme} id is empty")
        return scheme.lower(), ident
    return "x509", text


def set_acls(value: Any) -> list[Acl]:
    """``(scheme, id, permissions)`` per principal of a ``{principal: [permission, ...]}``
    mapping (see module doc)."""
    if value is None:
        return []
    if not isinstance(value, Mapping):
        raise ValueError("expected a mapping of principal: [permission, ...] "
                         "(e.g. CN=node1: [ALL])")
    out: list[Acl] = []
    for principal, perms in value.items():
        scheme, ident = _principal(_text(principal, "principal"))
        if not isinstance(perms, list) or not perms:
            raise ValueError(f"{principal}: expected a non-empty list of permissions "
                             f"({', '.join(PERMISSIONS)}), got {perms!r}")
        names = frozenset(str(p).strip().upper() for p in perms)
        if unknown := sorted(n for n in names if n not in PERMISSIONS):
            raise ValueError(f"{principal}: unknown permission {unknown[0]!r} (expected one "
                             f"of {', '.join(PERMISSIONS)})")
        out.append((scheme, ident, names))
    return out


def check(section: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(key path, message)`` for each refused ``auth_data``/``set_acls``/``key_password``
    value of the ``zookeeper`` section."""
    out: list[tuple[str, str]] = []
    for name, parse in (("auth_data", auth_data), ("set_acls", set_acls)):
        try:
            parse(section.get(name))
        except ValueError as exc:
            out.append((f"zookeeper.{name}", str(exc)))
    password = section.get("key_password")
    if password is not None and not isinstance(password, str):
        out.append(("zookeeper.key_password", f"expected text, got {type(password).__name__}"
                    " (quote it in YAML)"))
    return out
