"""The ``zookeeper`` section's options besides ``hosts``: authentication, ACLs and TLS.

Contract (pure, no IO): :func:`auth_data` turns ``auth_data`` into kazoo's ``auth_data`` list of
``(scheme, credential)`` pairs; it takes a mapping ``{scheme: credential}`` (Patroni's shape,
one credential per scheme) or a list of such mappings (several credentials of one scheme).
:func:`set_acls` turns ``set_acls`` (``{principal: [permission, ...]}``) into ``(scheme, id,
permissions)`` triples: a principal is an x509 name (``CN=...``, as in Patroni) unless it starts
with one of :data:`SCHEMES` and a colon (``digest:user:base64-sha1``, ``sasl:name``,
``ip:10.0.0.0/8``, ``world:anyone``, ``x509:CN=...``), an extension of pgha. Permissions are
names of :data:`PERMISSIONS`, in any case. :func:`flag` reads ``use_ssl``/``verify`` (text
from the environment included). These raise ValueError with a one-line message that does not
name the key; :func:`check` lists ``(key path, message)`` and :func:`store_options` (the
store's keyword arguments) raises the first of them. None or an empty value is "not set".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

PERMISSIONS = ("READ", "WRITE", "CREATE", "DELETE", "ADMIN", "ALL")
SCHEMES = ("digest", "sasl", "ip", "world", "auth", "x509")

Acl = tuple[str, str, frozenset[str]]
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


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


def flag(value: Any, default: bool) -> bool:
    """``use_ssl``/``verify``: a bool, or text as the environment gives it (true/false,
    yes/no, on/off, 1/0); None is ``default``."""
    if value is None or isinstance(value, bool):
        return default if value is None else value
    text = str(value).strip().lower()
    if text not in _TRUE + _FALSE:
        raise ValueError(f"expected true or false, got {value!r}")
    return text in _TRUE


def check(section: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(key path, message)`` for each refused ``auth_data``/``set_acls``/``key_password``/
    ``use_ssl``/``verify`` value of the ``zookeeper`` section."""
    out: list[tuple[str, str]] = []
    for name in ("use_ssl", "verify"):
        try:
            flag(section.get(name), False)
        except ValueError as exc:
            out.append((f"zookeeper.{name}", str(exc)))
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


def store_options(section: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments of :class:`pgha.dcs.zookeeper.ZooKeeperStore` but ``hosts``
    from the ``zookeeper`` section; ValueError naming the first refused key."""
    if errors := check(section):
        raise ValueError(": ".join(errors[0]))
    get = section.get
    return {"auth": auth_data(get("auth_data")), "acl": set_acls(get("set_acls")),
            "use_ssl": flag(get("use_ssl"), False), "verify_certs": flag(get("verify"), True),
            "ca": get("cacert"), "certfile": get("cert"), "keyfile": get("key"),
            "keyfile_password": get("key_password")}
