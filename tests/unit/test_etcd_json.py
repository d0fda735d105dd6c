"""Encoding of etcd gateway requests/replies and the error mapping (pgha.dcs.etcd_json), and the
etcd client selection of the factory."""

from __future__ import annotations

import pytest

from pgha.config import ConfigError
from pgha.dcs import etcd_json as J
from pgha.dcs.base import KeyValue
from pgha.dcs.etcd_watch import _Compacted, _events, _Gap
from pgha.dcs.factory import etcd_client_kind


def test_prefix_end() -> None:
    assert J.prefix_end(b"/service/a/") == b"/service/a0"
    assert J.prefix_end(b"a\xff") == b"b"
    assert J.prefix_end(b"\xff\xff") == b"\0"


def test_range_and_put_requests() -> None:
    assert J.range_request("/a/") == {"key": J.b64("/a/"), "range_end": J.b64("/a0")}
    assert J.range_request("/a/", count_only=True)["count_only"] is True
    assert J.put_request("k", b"v", None) == {"key": "aw==", "value": "dg=="}
    assert J.put_request("k", b"v", 255)["lease"] == "255"


def test_compares() -> None:
    assert J.compare_create_absent("k")["create_revision"] == "0"
    assert J.compare_mod("k", 7) == {"target": "MOD", "result": "EQUAL", "key": "aw==",
                                     "mod_revision": "7"}
    assert J.compare_value("k", b"x")["value"] == J.b64(b"x")


def test_key_value_decodes_omitted_fields() -> None:
    kv = J.key_value({"key": J.b64("/a"), "mod_revision": "12"})
    assert kv == KeyValue("/a", b"", 12, False, None)
    kv = J.key_value({"key": J.b64("/a"), "value": J.b64(b"v"), "mod_revision": "3",
                      "lease": "16"})
    assert kv.ephemeral and kv.session == "10"


def test_errors() -> None:
    err = J.error_of(401, {"error": "etcdserver: invalid auth token", "code": 16})
    assert err.invalid_token and err.request_level
    err = J.error_of(404, {"error": "etcdserver: requested lease not found", "code": 5})
    assert err.lease_not_found
    streamed = J.error_of(200, {"error": {"grpc_code": 5, "http_code": 404, "code": 5,
                                          "message": "etcdserver: requested lease not found"}})
    assert streamed.lease_not_found
    assert not J.error_of(503, {"error": "etcdserver: no leader", "code": 14}).request_level
    assert str(J.error_of(502, "<html>")) == "<html>"


def test_watch_events() -> None:
    put = {"kv": {"key": J.b64("/a"), "value": J.b64(b"1"), "mod_revision": "5"}}
    delete = {"type": "DELETE", "kv": {"key": J.b64("/b"), "mod_revision": "6"}}
    events = _events(b'{"result":{"events":[%s,%s]}}' % (
        str(put).replace("'", '"').encode(), str(delete).replace("'", '"').encode()))
    assert [(e.revision, e.key, e.deleted) for e in events] == [(5, "/a", False), (6, "/b", True)]
    assert events[0].kv == KeyValue("/a", b"1", 5) and events[1].kv is None
    assert _events(b'{"result":{"created":true}}') == []
    with pytest.raises(_Compacted):
        _events(b'{"result":{"canceled":true,"compact_revision":"4"}}')
    with pytest.raises(_Gap):
        _events(b'{"error":{"code":14,"message":"unavailable"}}')


def test_client_selection() -> None:
    assert etcd_client_kind({}) == "http"
    assert etcd_client_kind({"PGHA_ETCD_CLIENT": "GRPC"}) == "grpc"
    # the gateway refuses a login over a client-certificate connection: gRPC unless told
    assert etcd_client_kind({}, cert_and_login=True) == "grpc"
    assert etcd_client_kind({"PGHA_ETCD_CLIENT": "http"}, cert_and_login=True) == "http"
    with pytest.raises(ConfigError):
        etcd_client_kind({"PGHA_ETCD_CLIENT": "carrier-pigeon"})
