"""The pure parts of replication-slot handling in the PostgreSQL layer: slot names, the error
classification, the parameters slots need, recovery settings and nostream replicas in
postgresql.conf, the copied state files, and the fake the simulation uses."""

from __future__ import annotations

import logging
import os
import stat
import struct
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from tests.support.agent_stubs import StillWorld
from tests.support.fake_pg import FakePostgres

from pgha.config import Config, parse_config
from pgha.core.actions import SlotSpec, SyncSlots, Upstream
from pgha.core.model import DataState, ObservedSlot, PgRole
from pgha.pg import conf
from pgha.pg.conf import (
    effective_parameters,
    effective_wal_level,
    managed_parameters,
    render_postgresql_conf,
    slot_overrides,
)
from pgha.pg.dynconf import DynamicConfigApplier
from pgha.pg.errors import PgError
from pgha.pg.from_config import pg_settings
from pgha.pg.postgres import Postgres
from pgha.pg.settings import PgSettings, PgUser
from pgha.pg.slotcopy import (
    SLOT_MAGIC,
    oldest_segment_start,
    remove_slots,
    state_restart_lsn,
    write_state,
)
from pgha.pg.slots import (
    creation_problem,
    ensure_own_slot,
    valid_database,
    valid_slot_name,
    wal_gone,
)

UP = Upstream("node-0", "postgres://10.0.0.5:5433/postgres")
LOGICAL = {"wal_level": "logical", "hot_standby_feedback": True, "max_replication_slots": 14}


def settings(tmp: Path, **changes: Any) -> PgSettings:
    base = PgSettings(
        name="Node-1", scope="demo", data_dir=tmp / "data", bin_dir=Path("/bin"),
        listen_host="0.0.0.0", port=5432, connect_host="db1", superuser=PgUser("postgres", "s"),
        replication=PgUser("repl", "r"), rewind=PgUser("rewind", None),
        parameters={}, pg_hba=(), initdb_options=(), bootstrap_users={},
        pgpass=tmp / "pgpass", socket_dir=tmp)
    return replace(base, **changes)


@pytest.fixture(autouse=True)
def _fresh_warnings() -> None:
    conf._said.clear()


def test_slot_names_and_databases() -> None:
    for good in ("a", "node_1", "x" * 63, "0abc"):
        assert valid_slot_name(good)
    for bad in ("", "A", "node-1", "x" * 64, "a b", "a'b", "é", None, 3):
        assert not valid_slot_name(bad)
    assert valid_database("app") and valid_database("My App")
    assert not valid_database("") and not valid_database("x" * 64)
    assert not valid_database("a\0b") and not valid_database(None)


def test_error_classification_on_postgresql_15_texts() -> None:
    # the messages PostgreSQL 15 gives (seen in tests/integration/test_pg_slots.py)
    assert wal_gone('replication slot "ph" cannot be advanced')
    assert wal_gone("requested WAL segment 000000010000000000000003 has already been removed")
    assert not wal_gone('replication slot "ld" is active for PID 1234')
    assert not wal_gone("cannot advance replication slot to 0/1, minimum is 0/30202B0")
    spec = SlotSpec("ld", "logical", "app", "test_decoding")
    assert "wal_level is not logical" in creation_problem(
        spec, "logical decoding requires wal_level >= logical")
    assert creation_problem(spec, 'database "app" does not exist') == \
        "cannot be created: database 'app' does not exist"
    assert creation_problem(spec, "boom") == "cannot be created: boom"


def test_slot_overrides_raise_and_never_lower() -> None:
    assert slot_overrides({}, LOGICAL) == LOGICAL
    assert slot_overrides({"hot_standby_feedback": "off", "wal_level": "replica",
                           "max_replication_slots": 12}, LOGICAL) == LOGICAL
    user = {"hot_standby_feedback": "on", "wal_level": "logical", "max_replication_slots": 20}
    assert slot_overrides(user, LOGICAL) == {}
    assert slot_overrides({}, {"max_replication_slots": 4}) == {}  # the floor is higher
    assert slot_overrides({}, {"wal_level": "replica", "hot_standby_feedback": False}) == {}
    assert slot_overrides({"max_replication_slots": "x"}, {"max_replication_slots": 11}) == \
        {"max_replication_slots": 11}
    assert slot_overrides({}, {}) == {}


def test_slot_parameters_win_in_postgresql_conf(tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pgha.pg")
    s = settings(tmp_path, parameters={"hot_standby_feedback": False, "wal_level": "minimal",
                                       "max_replication_slots": 12},
                 slot_parameters=LOGICAL)
    for role, upstream in (("primary", None), ("replica", UP)):
        params = managed_parameters(s, role, upstream)
        assert params["hot_standby_feedback"] is True
        assert params["wal_level"] == "logical"
        assert params["max_replication_slots"] == 14
    assert caplog.text.count("wal_level = 'logical': needed by the replication slots") == 1
    assert effective_wal_level(s) == "logical"
    assert effective_parameters(s)["max_replication_slots"] == 14
    more = replace(s, parameters={"max_replication_slots": 30})
    assert managed_parameters(more, "primary", None)["max_replication_slots"] == 30
    assert effective_wal_level(replace(s, slot_parameters={})) == "replica"


def test_nostream_replica_never_streams(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    s = settings(tmp_path, nostream=True)
    params = managed_parameters(s, "replica", UP)
    assert params["primary_conninfo"] == "" and params["primary_slot_name"] == ""
    assert params["recovery_target_timeline"] == "latest"
    assert "no restore_command" in caplog.text
    streaming = managed_parameters(replace(s, nostream=False), "replica", UP)
    assert "host=10.0.0.5" in streaming["primary_conninfo"]
    assert streaming["primary_slot_name"] == "node_1"


def test_recovery_conf_on_replicas_only(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    s = settings(tmp_path, nostream=True, parameters={"restore_command": "false"},
                 recovery_conf={"restore_command": "cp /arch/%f %p",
                                "Recovery_Min_Apply_Delay": "5min",
                                "primary_conninfo": "host=evil", "primary_slot_name": "x",
                                "recovery_target_timeline": "1", "standby_mode": "on",
                                "port": 1, "bad name": 1, "archive_cleanup_command": None})
    replica = managed_parameters(s, "replica", UP)
    assert replica["restore_command"] == "cp /arch/%f %p"  # over the user's parameter
    assert replica["recovery_min_apply_delay"] == "5min"
    assert replica["primary_conninfo"] == "" and replica["primary_slot_name"] == ""
    assert replica["recovery_target_timeline"] == "latest" and replica["port"] == 5432
    assert "standby_mode" not in replica and "archive_cleanup_command" not in replica
    assert "no restore_command" not in caplog.text
    text = render_postgresql_conf(s, "replica", UP)
    assert "restore_command = 'cp /arch/%f %p'" in text
    primary = managed_parameters(s, "primary", None)
    assert primary["restore_command"] == "false"  # the user's parameter: recovery_conf not
    assert "recovery_min_apply_delay" not in primary
    for name in ("primary_conninfo", "primary_slot_name", "recovery_target_timeline",
                 "standby_mode", "port"):
        assert caplog.text.count(f"postgresql.recovery_conf.{name} is managed by pgha") == 1
    managed_parameters(s, "replica", UP)
    assert caplog.text.count("recovery_conf.primary_conninfo is managed") == 1  # once


def config(tmp: Path, recovery: dict[str, Any], dyn_recovery: dict[str, Any] | None,
           **extra: Any) -> Config:
    dyn: dict[str, Any] = {"postgresql": {"recovery_conf": dyn_recovery}} if dyn_recovery \
        else {}
    return parse_config({
        "scope": "demo", "name": "n1", "etcd3": {"hosts": ["127.0.0.1:2379"]},
        "bootstrap": {"dcs": dyn},
        "postgresql": {"listen": "127.0.0.1:5432", "data_dir": str(tmp / "data"),
                       "bin_dir": "/usr/lib/postgresql/15/bin", "pgpass": str(tmp / "pgpass"),
                       "recovery_conf": recovery},
        **extra,
    }, env={})


def test_recovery_conf_and_nostream_from_the_configuration(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = config(tmp_path, {"restore_command": "cp /local/%f %p", "bogus_setting": 1,
                            "primary_slot_name": "mine"},
                 {"restore_command": "cp /dyn/%f %p", "recovery_min_apply_delay": "1min",
                  "recovery_min_apply_delay_x": 3},
                 tags={"nostream": True})
    s = pg_settings(cfg, cfg.bootstrap.dcs)
    assert s.nostream
    assert dict(s.recovery_conf) == {"restore_command": "cp /local/%f %p",
                                     "recovery_min_apply_delay": "1min",
                                     "primary_slot_name": "mine"}  # conf.py ignores the last
    assert "postgresql.recovery_conf.bogus_setting" in caplog.text
    assert "recovery_min_apply_delay_x" in caplog.text
    plain = config(tmp_path, {}, None)
    assert not pg_settings(plain, plain.bootstrap.dcs).nostream
    assert pg_settings(plain, plain.bootstrap.dcs).recovery_conf == {}


async def test_applier_keeps_the_last_slot_parameters(tmp_path: Path) -> None:
    cfg = config(tmp_path, {}, None)
    pg = Postgres(pg_settings(cfg, cfg.bootstrap.dcs))
    applier = DynamicConfigApplier(pg, cfg)
    await applier.apply(None)
    assert pg.settings.slot_parameters == {}
    await applier.apply(None, slot_parameters=LOGICAL)
    assert pg.settings.slot_parameters == LOGICAL
    await applier.apply({"ttl": 30})  # None: kept
    assert pg.settings.slot_parameters == LOGICAL
    applier.set_local_config(cfg)
    await applier.apply(None)  # a re-read YAML keeps them too
    assert pg.settings.slot_parameters == LOGICAL
    await applier.apply(None, slot_parameters={})
    assert pg.settings.slot_parameters == {}


def fake_state(restart_lsn: int, size: int = 200, magic: int = SLOT_MAGIC) -> bytes:
    data = bytearray(size)
    struct.pack_into("=I", data, 0, magic)
    struct.pack_into("=Q", data, 96, restart_lsn)
    return bytes(data)


def test_copied_state_helpers(tmp_path: Path) -> None:
    assert state_restart_lsn(fake_state(0x301FE98)) == 0x301FE98
    assert state_restart_lsn(fake_state(0)) is None
    assert state_restart_lsn(fake_state(5, magic=1)) is None
    assert state_restart_lsn(b"short") is None
    names = ["000000020000000100000003", "000000010000000000000004"]
    assert oldest_segment_start(names, 16 << 20) == 4 * (16 << 20)
    assert oldest_segment_start(["000000010000000100000002"], 16 << 20) == (1 << 32) + (32 << 20)
    assert oldest_segment_start([], 16 << 20) is None


def test_write_state_replaces_a_slot_crash_safely(tmp_path: Path) -> None:
    root = tmp_path / "pg_replslot"
    root.mkdir()
    (root / "ld").mkdir()
    (root / "ld" / "xid-1.spill").write_text("old")
    (root / "ld.tmp").mkdir()  # left over by an earlier crash
    write_state(tmp_path, "ld", b"new state")
    assert sorted(p.name for p in root.iterdir()) == ["ld"]
    assert sorted(p.name for p in (root / "ld").iterdir()) == ["state"]
    assert (root / "ld" / "state").read_bytes() == b"new state"
    assert stat.S_IMODE(os.stat(root / "ld").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(root / "ld" / "state").st_mode) == 0o600
    with pytest.raises(ValueError):
        write_state(tmp_path, "../escape", b"x")
    remove_slots(tmp_path, ["ld", "../x", "absent"])
    assert list(root.iterdir()) == []


async def test_fake_postgres_slots() -> None:
    world = StillWorld()
    a = FakePostgres("a", world, data=DataState.VALID, running=True, role=PgRole.PRIMARY,
                     sysid="1", segments=((1, 5000),))
    b = FakePostgres("b", world, data=DataState.VALID, running=True, role=PgRole.REPLICA,
                     sysid="1", segments=((1, 4000),), upstream="a")
    world.pgs.update(a=a, b=b)
    spec = SlotSpec("ld", "logical", "app", "test_decoding")
    assert await a.sync_slots(SyncSlots(create=(SlotSpec("b"), SlotSpec("stale"), spec))) == {}
    assert await a.sync_slots(SyncSlots(drop=("b", "stale"))) == {
        "b": "not dropped: it is in use"}
    seen = {s.name: s for s in (await a.observe()).slots or ()}
    assert set(seen) == {"b", "ld"} and seen["b"].active and seen["b"].position == 4000
    assert seen["ld"] == ObservedSlot("ld", "logical", "app", "test_decoding", position=5000)
    assert "standby" in (await b.sync_slots(SyncSlots(create=(spec,))))["ld"]
    assert not await b.copy_logical_slots(Upstream("a", "postgres://a"),
                                          (replace(spec, plugin="pgoutput"),))
    assert await b.copy_logical_slots(Upstream("a", "postgres://a"), (spec,))
    assert await b.sync_slots(SyncSlots(create=(SlotSpec("a"),),
                                        advance=(("ld", 6000),))) == {}
    assert b.slots["ld"].position == 5000  # never past our WAL (nor backwards)
    b.slots["a"] = replace(b.slots["a"], lost=True)
    b.slots["ld"] = replace(b.slots["ld"], lost=True)
    assert await b.sync_slots(SyncSlots(advance=(("a", 4000), ("ld", 5000)))) == {
        "a": "recreated: its WAL was removed", "ld": "dropped: its WAL was removed"}
    assert set(b.slots) == {"a"} and not b.slots["a"].lost
    b.crash()
    assert (await b.observe()).slots is None
    with pytest.raises(PgError):
        await b.sync_slots(SyncSlots())


async def test_ensure_own_slot_does_nothing_for_a_nostream_member(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    nowhere = Upstream("node-0", "postgres://127.0.0.1:1/postgres")  # refuses connections
    await ensure_own_slot(settings(tmp_path, nostream=True), nowhere)
    assert "could not create slot" not in caplog.text
    await ensure_own_slot(settings(tmp_path), nowhere)
    assert "could not create slot node_1 on node-0" in caplog.text
