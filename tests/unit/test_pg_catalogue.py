"""The PostgreSQL parameter catalogue: parsing ``postgres --describe-config`` (the real output of
the installed 15, and outputs of 12 to 18 derived from the release notes), the renames in both
directions by major, the judging of values, and reading it from a server binary."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from tests.support.pg_catalogues import DATA, MAJORS, describe_config, version_output

from pgha.config.pg_parameters import (
    ParamCatalogue,
    changed_value_errors,
    judge_parameters,
    parse_describe_config,
    parse_version,
)
from pgha.pg import catalogue as catalogue_mod
from pgha.pg.catalogue import load_catalogue

PG15_BIN = Path("/usr/lib/postgresql/15/bin")


def cat(major: int) -> ParamCatalogue:
    return parse_describe_config(describe_config(major), major, f"fixture {major}")


# ------------------------------------------------------------------------------ parsing

def test_real_15_output_parses_into_typed_specs() -> None:
    text = (DATA / "describe_config_15.txt").read_text()
    c = parse_describe_config(text, 15)
    listed = len([line for line in text.splitlines() if line])
    assert len(c.specs) == listed + 23  # plus the developer options describe-config omits
    keep = c.spec("wal_keep_size")
    assert keep is not None
    assert (keep.context, keep.vartype, keep.unit, keep.min, keep.max) == \
        ("sighup", "integer", "MB", 0, 2 ** 31 - 1)
    shared = c.spec("SHARED_BUFFERS")  # names compare case-insensitively
    assert shared is not None and shared.unit == "8kB" and shared.needs_restart
    assert c.spec("timezone") is not None and c.spec("timezone").vartype == "string"  # type: ignore[union-attr]
    level = c.spec("wal_level")
    assert level is not None and level.enumvals == ("minimal", "replica", "logical")
    assert c.spec("random_page_cost").vartype == "real"  # type: ignore[union-attr]
    assert c.spec("zero_damaged_pages") is not None  # not printed, but settable
    assert c.spec("block_size") is None  # read-only: not printed, not settable
    assert c.needs_restart("max_connections") and not c.needs_restart("work_mem")
    assert not c.needs_restart("wal_keep_size")


def test_parse_rejects_output_without_parameters() -> None:
    with pytest.raises(ValueError):
        parse_describe_config("postgres: could not access the server configuration\n", 15)


@pytest.mark.parametrize(("text", "major"), [
    ("postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n", 15),
    ("postgres (PostgreSQL) 12.22\n", 12),
    ("postgres (PostgreSQL) 18beta1\n", 18),
    ("postgres (PostgreSQL) 17devel\n", 17),
    ("postgres (PostgreSQL) 9.6.24\n", 9),
])
def test_parse_version(text: str, major: int) -> None:
    assert parse_version(text) == major


def test_parse_version_refuses_garbage() -> None:
    with pytest.raises(ValueError):
        parse_version("bash: postgres: command not found")


@pytest.mark.parametrize("major", MAJORS)
def test_fixture_catalogues_follow_the_release_notes(major: int) -> None:
    c = cat(major)
    assert c.major == major
    assert (c.spec("wal_keep_segments") is not None) == (major <= 12)
    assert (c.spec("wal_keep_size") is not None) == (major >= 13)
    assert (c.spec("stats_temp_directory") is not None) == (major <= 14)
    assert (c.spec("force_parallel_mode") is not None) == (major <= 15)
    assert (c.spec("debug_parallel_query") is not None) == (major >= 16)
    assert (c.spec("old_snapshot_threshold") is not None) == (major <= 16)
    assert (c.spec("transaction_timeout") is not None) == (major >= 17)
    assert (c.spec("io_method") is not None) == (major >= 18)
    assert c.needs_restart("autovacuum_max_workers") == (major < 18)


# ------------------------------------------------------------------------------ renames

@pytest.mark.parametrize("major", MAJORS)
def test_wal_keep_segments_and_size_are_written_under_the_majors_name(major: int) -> None:
    from_segments = judge_parameters({"wal_keep_segments": 8}, cat(major))
    from_size = judge_parameters({"wal_keep_size": "1GB"}, cat(major))
    assert not from_segments.invalid and not from_segments.dropped
    if major >= 13:
        assert from_segments.kept == {"wal_keep_size": "128MB"}  # 16 MB a segment
        assert from_size.kept == {"wal_keep_size": "1GB"}
        assert "wal_keep_segments = 8 is written as wal_keep_size = '128MB'" \
            in from_segments.notes[0]
    else:
        assert from_segments.kept == {"wal_keep_segments": 8}
        assert from_size.kept == {"wal_keep_segments": 64}
        assert "wal_keep_size = '1GB' is written as wal_keep_segments = 64" in from_size.notes[0]


@pytest.mark.parametrize(("value", "segments"), [("128MB", 8), (120, 8), ("16MB", 1), ("2GB", 128)])
def test_wal_keep_size_to_segments_rounds_as_patroni(value: object, segments: int) -> None:
    assert judge_parameters({"wal_keep_size": value}, cat(12)).kept == \
        {"wal_keep_segments": segments}


@pytest.mark.parametrize(("name", "value", "minimum"), [
    ("max_connections", 24, "25"), ("max_wal_senders", "2", "3"),
    ("max_replication_slots", 3, "4"), ("max_worker_processes", 1, "2"),
    ("max_locks_per_transaction", 31, "32"), ("wal_keep_size", "15MB", "16MB"),
    ("wal_keep_size", 0, "16MB")])
def test_values_under_the_agents_minimum_are_not_used(name: str, value: object,
                                                       minimum: str) -> None:
    """Patroni's lower bounds for what it puts on the command line: a smaller value is left
    out (the default applies); the bound itself is kept."""
    judged = judge_parameters({name: value}, cat(15))
    assert judged.kept == {}
    assert judged.invalid == {
        name: f"must be at least {minimum} (a smaller value is not used: the default is)"}
    bound = int(minimum.removesuffix("MB"))
    at_bound = f"{bound}MB" if minimum.endswith("MB") else bound
    assert judge_parameters({name: at_bound}, cat(15)).kept == {name: at_bound}
    assert judge_parameters({name: at_bound}, None).kept == {name: at_bound}
    assert judge_parameters({name: value}, None).kept == {}  # the fallback list judges it too


@pytest.mark.parametrize(("major", "winner", "value"), [
    (12, "wal_keep_segments", 4), (13, "wal_keep_size", "1GB"), (15, "wal_keep_size", "1GB"),
    (18, "wal_keep_size", "1GB")])
def test_both_names_given_the_one_valid_for_the_major_wins(major: int, winner: str,
                                                           value: object) -> None:
    judged = judge_parameters({"wal_keep_segments": 4, "WAL_KEEP_SIZE": "1GB"}, cat(major))
    key = winner if winner == "wal_keep_segments" else "WAL_KEEP_SIZE"
    assert judged.kept == {key: value}
    assert len(judged.conflicts) == 1 and f"PostgreSQL {major}" in judged.conflicts[0]


@pytest.mark.parametrize("major", [12, 15])
def test_an_invalid_value_under_the_old_name_is_reported_under_it(major: int) -> None:
    name = "wal_keep_segments" if major >= 13 else "wal_keep_size"
    judged = judge_parameters({name: "lots"}, cat(major))
    assert judged.kept == {} and name in judged.invalid


def test_ssl_ecdh_curve_and_ssl_groups_follow_the_major() -> None:
    assert judge_parameters({"ssl_ecdh_curve": "prime256v1"}, cat(18)).kept == \
        {"ssl_groups": "prime256v1"}
    assert judge_parameters({"ssl_groups": "prime256v1"}, cat(17)).kept == \
        {"ssl_ecdh_curve": "prime256v1"}
    assert judge_parameters({"sort_mem": "4MB"}, cat(15)).kept == {"work_mem": "4MB"}


def test_without_a_major_nothing_is_renamed() -> None:
    judged = judge_parameters({"wal_keep_segments": 8, "wal_keep_size": "1GB"}, None)
    assert judged.kept == {"wal_keep_segments": 8, "wal_keep_size": "1GB"}
    assert not judged.notes and not judged.conflicts


# ------------------------------------------------------------------------------ names

def test_unknown_removed_and_read_only_names_are_dropped_with_the_reason() -> None:
    judged = judge_parameters({"wal_keep_segment": 8, "stats_temp_directory": "/tmp",
                               "block_size": 8192, "pg_stat_statements.max": 500,
                               "force_parallel_mode": "on", "work_mem": "4MB"}, cat(16))
    assert judged.kept == {"pg_stat_statements.max": 500, "work_mem": "4MB"}
    assert judged.dropped == {
        "wal_keep_segment": "unknown parameter for PostgreSQL 16",
        "stats_temp_directory": "removed in PostgreSQL 15",
        "block_size": "read-only parameter",
        "force_parallel_mode": "removed in PostgreSQL 16; use debug_parallel_query",
    }


def test_the_fallback_list_judges_names_and_single_lines_only() -> None:
    judged = judge_parameters({"wal_keep_segment": 1, "max_connections": "many",
                               "work_mem": "a\nb"}, ParamCatalogue.fallback())
    assert judged.kept == {"max_connections": "many"}
    assert judged.dropped == {"wal_keep_segment": "unknown parameter"}
    assert judged.invalid == {"work_mem": "must not contain a newline"}


# ------------------------------------------------------------------------------ values

GOOD = [
    ("shared_buffers", "128MB"), ("shared_buffers", 16384), ("shared_buffers", "1 GB"),
    ("work_mem", "64kB"), ("work_mem", "4MB "), ("max_connections", "0x64"),
    ("max_connections", "100.4"), ("checkpoint_timeout", "5min"), ("checkpoint_timeout", 300),
    ("statement_timeout", "1.5s"), ("random_page_cost", 1.1), ("random_page_cost", "4"),
    ("autovacuum_vacuum_cost_delay", "2ms"), ("hot_standby_feedback", True),
    ("hot_standby_feedback", "ON"), ("hot_standby_feedback", "of"), ("fsync", "t"),
    ("fsync", 1), ("wal_level", "logical"), ("wal_level", "hot_standby"),
    ("synchronous_commit", "REMOTE_APPLY"), ("synchronous_commit", "yes"),
    ("synchronous_commit", False), ("archive_mode", True), ("client_min_messages", "debug"),
    ("default_transaction_isolation", "read committed"), ("timezone", "Europe/Paris"),
    ("log_line_prefix", "%m [%p] "), ("ssl_max_protocol_version", ""),
    ("pg_stat_statements.track", "all"), ("log_min_duration_statement", -1),
]

BAD = [
    ("shared_buffers", "128XB", "invalid unit"), ("shared_buffers", "8", "between 16 and"),
    ("work_mem", "5min", "invalid unit"), ("checkpoint_timeout", "128MB", "invalid unit"),
    ("max_connections", "100MB", "takes no unit"), ("max_connections", "many", "integer"),
    ("max_connections", 0, "between 1 and 262143"), ("max_connections", "08", "takes no unit"),
    ("max_connections", "1e12", "integer range"), ("checkpoint_timeout", "1s", "between 30"),
    ("random_page_cost", "cheap", "number"), ("random_page_cost", "nan", "number"),
    ("hot_standby_feedback", "o", "boolean"), ("hot_standby_feedback", "maybe", "boolean"),
    ("hot_standby_feedback", " on", "boolean"), ("wal_level", "archival", "expected one of"),
    ("wal_level", True, "expected one of"), ("huge_pages", "sometimes", "'off', 'on', 'try'"),
    ("log_line_prefix", "a\nb", "newline"), ("pg_stat_statements.track", "all\n", "newline"),
    ("work_mem", ["4MB"], "single value"), ("work_mem", {"a": 1}, "single value"),
]


@pytest.mark.parametrize(("name", "value"), GOOD)
def test_values_postgresql_accepts(name: str, value: object) -> None:
    judged = judge_parameters({name: value}, cat(15))
    assert judged.kept == {name: value}, judged


@pytest.mark.parametrize(("name", "value", "reason"), BAD)
def test_values_postgresql_rejects(name: str, value: object, reason: str) -> None:
    judged = judge_parameters({name: value}, cat(15))
    assert judged.kept == {}
    assert reason in judged.invalid[name]


def test_values_follow_the_majors_types() -> None:
    assert judge_parameters({"wal_compression": "zstd"}, cat(15)).kept
    assert "boolean" in judge_parameters({"wal_compression": "zstd"}, cat(14)).invalid[
        "wal_compression"]
    assert judge_parameters({"wal_compression": "on"}, cat(14)).kept
    assert judge_parameters({"password_encryption": "on"}, cat(13)).kept
    assert judge_parameters({"password_encryption": "on"}, cat(14)).invalid
    assert judge_parameters({"transaction_timeout": "5min"}, cat(17)).kept
    assert judge_parameters({"io_method": "worker"}, cat(18)).kept
    assert judge_parameters({"log_connections": "receipt,authentication"}, cat(18)).kept
    assert judge_parameters({"log_connections": "receipt"}, cat(17)).invalid


def test_changed_value_errors_judges_only_what_changes() -> None:
    old = {"postgresql": {"parameters": {"work_mem": "lots", "wal_level": "replica"}}}
    new = {"postgresql": {"parameters": {"work_mem": "lots", "wal_level": "logical",
                                         "max_connections": "x", "bogus": 1}}}
    assert changed_value_errors(old, new, cat(15)) == \
        [("postgresql.parameters.max_connections", "expected an integer")]
    assert ("postgresql.parameters.work_mem", "expected an integer") \
        in changed_value_errors(None, new, cat(15))  # None: everything is judged


# ------------------------------------------------------------------------------ the binary

@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    catalogue_mod.clear_cache()


@pytest.mark.skipif(not (PG15_BIN / "postgres").exists(), reason="PostgreSQL 15 not installed")
def test_load_catalogue_asks_the_installed_binary_once() -> None:
    first = load_catalogue(PG15_BIN)
    assert first.major == 15 and first.typed and first.source.endswith("bin/postgres")
    assert first.spec("wal_keep_size") is not None and first.spec("wal_keep_segments") is None
    assert load_catalogue(str(PG15_BIN)) is first  # cached per binary


def fake_binary(tmp: Path, body: str) -> Path:
    script = tmp / "postgres"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    return tmp


def test_a_missing_binary_falls_back_to_the_name_list_with_one_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="pgha.pg")
    first = load_catalogue(tmp_path / "nowhere")
    second = load_catalogue(tmp_path / "nowhere")
    assert not first.typed and first.major is None and second.spec("work_mem") is not None
    assert caplog.text.count("cannot read the parameter catalogue") == 1


def test_a_binary_that_hangs_is_given_up_after_the_timeout(tmp_path: Path) -> None:
    bin_dir = fake_binary(tmp_path, 'case "$1" in --version) echo "postgres (PostgreSQL) 16.2";;'
                                    ' *) exec sleep 30;; esac\n')
    got = load_catalogue(bin_dir, timeout=0.5)
    assert not got.typed and got.major == 16  # the name list, renames by the known major
    assert "did not finish" in got.source
    assert judge_parameters({"wal_keep_segments": 2}, got).kept == {"wal_keep_size": "32MB"}


def test_a_binary_with_unparsable_output_falls_back(tmp_path: Path) -> None:
    bin_dir = fake_binary(tmp_path, 'echo "hello"\n')
    got = load_catalogue(bin_dir)
    assert not got.typed and got.major is None


def test_the_cache_notices_a_new_binary(tmp_path: Path) -> None:
    lines = describe_config(12).replace("\n", "\\n")
    script = (f'case "$1" in --version) printf "{version_output(12)}";; '
              f'*) printf "%b" "{lines}";; esac\n')
    bin_dir = fake_binary(tmp_path, script)
    assert load_catalogue(bin_dir).major == 12
    fake_binary(tmp_path, script.replace("12.4", "13.4"))
    os.utime(bin_dir / "postgres", ns=(1, 1))  # another modification time
    assert load_catalogue(bin_dir).major == 13
