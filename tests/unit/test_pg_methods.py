"""Command lines of custom methods (:mod:`pgha.pg.methods`)."""

from __future__ import annotations

import pytest

from pgha.pg.methods import method_argv


def test_bootstrap_method_gets_scope_datadir_and_its_extra_keys() -> None:
    argv = method_argv("/usr/bin/restore --verbose", scope="batman", data_dir="/pg/data",
                       extra={"command": "x", "no_params": False, "recovery_conf": {},
                              "keep_existing_recovery_conf": True, "backup": "latest",
                              "retries": 3, "fast": True})
    assert argv == ["/usr/bin/restore", "--verbose", "--scope=batman", "--datadir=/pg/data",
                    "--backup=latest", "--retries=3", "--fast=True"]


def test_replica_method_gets_role_and_connstring_and_no_params_gets_nothing() -> None:
    argv = method_argv("copy-backup", scope="s", data_dir="/d", extra={"no_leader": True},
                       role="replica", connstring="host=a port=5432 user=replicator")
    assert argv == ["copy-backup", "--scope=s", "--datadir=/d", "--role=replica",
                    "--connstring=host=a port=5432 user=replicator"]
    assert method_argv("copy-backup 'a b'", scope="s", data_dir="/d", extra={"x": 1},
                       no_params=True) == ["copy-backup", "a b"]


@pytest.mark.parametrize("command", ["", "   ", "unclosed 'quote"])
def test_unusable_commands_are_refused(command: str) -> None:
    with pytest.raises(ValueError):
        method_argv(command, scope="s", data_dir="/d", extra={})
