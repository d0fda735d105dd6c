"""Pure helpers of :mod:`pgha.dcs.zookeeper` over a tree of znodes as read (path -> data and
stat, None for a missing znode): which znodes are keys, their revisions, and the
:class:`~pgha.dcs.base.KeyValue` of a key -- built here for ``get_prefix`` and the watch alike,
so a key delivered by the watch equals the key as read."""

from __future__ import annotations

from typing import Any

from pgha.dcs.base import KeyValue

Node = tuple[bytes, Any]  # data, ZnodeStat


def parent(path: str) -> str:
    return path.rsplit("/", 1)[0] or "/"


def relevant(path: str, prefix: str) -> bool:  # under ``prefix`` or on the way to it
    return path.startswith(prefix) or prefix.startswith(path.rstrip("/") + "/")


def keys(nodes: dict[str, Node | None], prefix: str) -> dict[str, Node]:
    return {p: n for p, n in sorted(nodes.items()) if n is not None and p.startswith(prefix)
            and (n[0] != b"" or n[1].cversion == 0)}


def zxids(nodes: dict[str, Node | None]) -> dict[str, tuple[int, int] | None]:
    return {p: None if n is None else (n[1].mzxid, n[1].pzxid) for p, n in nodes.items()}


def revision(nodes: dict[str, Node | None]) -> int:
    return int(max([0, *(max(n[1].mzxid, n[1].pzxid) for n in nodes.values() if n is not None)]))


def key_value(path: str, node: Node) -> KeyValue:
    data, stat = node
    owner = int(stat.ephemeralOwner)
    return KeyValue(path, data, int(stat.mzxid), owner != 0, f"{owner:x}" if owner else None)
