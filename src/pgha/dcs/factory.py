"""Backend selection: the DCS section present in the configuration picks the store."""

from __future__ import annotations

from pgha.config import ClusterAccess, ConfigError
from pgha.dcs.base import KVStore


def open_kv(config: ClusterAccess, *, ttl: float, timeout: float) -> KVStore:
    """A not-yet-connected KVStore for the configured DCS (use it as ``async with``).

    Raises ConfigError for a DCS kind this build does not support yet.
    """
    kind = config.dcs_kind()
    if kind == "etcd" and config.etcd is not None:
        from pgha.dcs.etcd import EtcdStore

        etcd = config.etcd
        return EtcdStore(
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
