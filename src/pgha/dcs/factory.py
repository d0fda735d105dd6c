"""Backend selection: the DCS section present in the configuration picks the store.

Each backend's modules are imported only when that backend is configured. etcd is reached over
its JSON gateway with aiohttp (:mod:`pgha.dcs.etcd_http`) unless the environment variable
``PGHA_ETCD_CLIENT=grpc`` selects the gRPC client (:mod:`pgha.dcs.etcd`, aetcd + grpcio), or
the configuration has both a client certificate and a username: etcd's gateway refuses the
login of a client that presents a certificate, so that combination gets gRPC unless
``PGHA_ETCD_CLIENT=http`` insists.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from pgha.config import ClusterAccess, ConfigError
from pgha.dcs.base import KVStore

ETCD_CLIENT_ENV = "PGHA_ETCD_CLIENT"


def etcd_client_kind(env: Mapping[str, str] | None = None, *,
                     cert_and_login: bool = False) -> str:
    """``"http"`` or ``"grpc"``, from :data:`ETCD_CLIENT_ENV`; when it is unset, ``"grpc"``
    if ``cert_and_login`` (a client certificate and a username are configured), else
    ``"http"``. ConfigError for any other value."""
    default = "grpc" if cert_and_login else "http"
    value = (os.environ if env is None else env).get(ETCD_CLIENT_ENV, default).strip().lower()
    if value in ("", "http", "json", "gateway"):
        return "http"
    if value == "grpc":
        return "grpc"
    raise ConfigError([(ETCD_CLIENT_ENV, f"unknown etcd client {value!r}: use http or grpc")])


def open_kv(config: ClusterAccess, *, ttl: float, timeout: float) -> KVStore:
    """A not-yet-connected KVStore for the configured DCS (use it as ``async with``).

    Raises ConfigError for a DCS kind this build does not support yet.
    """
    kind = config.dcs_kind()
    if kind == "etcd" and config.etcd is not None:
        etcd = config.etcd
        store_class: type[KVStore]
        if etcd_client_kind(cert_and_login=bool(etcd.cert and etcd.username)) == "grpc":
            from pgha.dcs.etcd import EtcdStore

            store_class = EtcdStore
        else:
            from pgha.dcs.etcd_http import EtcdHttpStore

            store_class = EtcdHttpStore
        return store_class(
            etcd.endpoints(), ttl=ttl, timeout=timeout, username=etcd.username,
            password=etcd.password, ca_cert=etcd.cacert, cert_key=etcd.key, cert_cert=etcd.cert,
        )
    if kind == "consul" and config.consul is not None:
        from pgha.dcs.consul import ConsulStore

        try:
            return ConsulStore.from_config(config.consul, ttl=ttl, timeout=timeout)
        except ValueError as exc:
            raise ConfigError([("consul", str(exc))]) from exc
    if kind == "zookeeper" and config.zookeeper is not None:
        from pgha.dcs.zookeeper import ZooKeeperStore

        try:
            return ZooKeeperStore.from_config(config.zookeeper, ttl=ttl, timeout=timeout)
        except ValueError as exc:
            raise ConfigError([("zookeeper", str(exc))]) from exc
    raise ConfigError([(kind, f"the {kind} backend is not available yet; use etcd3")])
