"""``postgres --describe-config`` output of PostgreSQL 12 to 18, for the catalogue tests.

Only PostgreSQL 15 is installable here: ``data/describe_config_15.txt`` is the real output of the
installed ``/usr/lib/postgresql/15/bin/postgres --describe-config``. The other majors are derived
from it with the parameters each release added, removed or changed, as its release notes (and the
"Server Configuration" chapter of its documentation) list them. Rows carry what describe-config
prints: name, context, group, type, default, min, max (the descriptions are left empty).
"""

from __future__ import annotations

from pathlib import Path

DATA = Path(__file__).parent / "data"
MAJORS = (12, 13, 14, 15, 16, 17, 18)

Row = tuple[str, str, str, str, str]  # name, context, type, min, max

_INT = str(2 ** 31 - 1)

# parameters first present in a major (relative to the one before)
ADDED: dict[int, tuple[Row, ...]] = {
    13: (
        ("autovacuum_vacuum_insert_scale_factor", "sighup", "REAL", "0", "100"),
        ("autovacuum_vacuum_insert_threshold", "sighup", "INTEGER", "-1", _INT),
        ("enable_incremental_sort", "user", "BOOLEAN", "", ""),
        ("hash_mem_multiplier", "user", "REAL", "1", "1000"),
        ("log_min_duration_sample", "superuser", "INTEGER", "-1", _INT),
        ("log_parameter_max_length", "superuser", "INTEGER", "-1", "1073741823"),
        ("log_parameter_max_length_on_error", "user", "INTEGER", "-1", "1073741823"),
        ("log_statement_sample_rate", "superuser", "REAL", "0", "1"),
        ("logical_decoding_work_mem", "user", "INTEGER", "64", _INT),
        ("maintenance_io_concurrency", "user", "INTEGER", "0", "1000"),
        ("max_slot_wal_keep_size", "sighup", "INTEGER", "-1", _INT),
        ("wal_keep_size", "sighup", "INTEGER", "0", _INT),
        ("wal_receiver_create_temp_slot", "sighup", "BOOLEAN", "", ""),
        ("wal_skip_threshold", "user", "INTEGER", "0", _INT),
    ),
    14: (
        ("client_connection_check_interval", "user", "INTEGER", "0", _INT),
        ("compute_query_id", "superuser", "ENUM", "", ""),
        ("default_toast_compression", "user", "ENUM", "", ""),
        ("enable_async_append", "user", "BOOLEAN", "", ""),
        ("enable_memoize", "user", "BOOLEAN", "", ""),
        ("huge_page_size", "postmaster", "INTEGER", "0", _INT),
        ("idle_session_timeout", "user", "INTEGER", "0", _INT),
        ("log_recovery_conflict_waits", "sighup", "BOOLEAN", "", ""),
        ("min_dynamic_shared_memory", "postmaster", "INTEGER", "0", _INT),
        ("recovery_init_sync_method", "sighup", "ENUM", "", ""),
        ("ssl_crl_dir", "sighup", "STRING", "", ""),
        ("track_wal_io_timing", "superuser", "BOOLEAN", "", ""),
        ("vacuum_failsafe_age", "user", "INTEGER", "0", "2100000000"),
        ("vacuum_multixact_failsafe_age", "user", "INTEGER", "0", "2100000000"),
    ),
    15: (
        ("archive_library", "sighup", "STRING", "", ""),
        ("log_startup_progress_interval", "sighup", "INTEGER", "0", _INT),
        ("recovery_prefetch", "sighup", "ENUM", "", ""),
        ("recursive_worktable_factor", "user", "REAL", "0.001", "1e+06"),
        ("stats_fetch_consistency", "user", "ENUM", "", ""),
        ("wal_decode_buffer_size", "postmaster", "INTEGER", "65536", "1073741823"),
    ),
    16: (
        ("createrole_self_grant", "user", "STRING", "", ""),
        ("enable_presorted_aggregate", "user", "BOOLEAN", "", ""),
        ("gss_accept_delegation", "sighup", "BOOLEAN", "", ""),
        ("icu_validation_level", "user", "ENUM", "", ""),
        ("max_parallel_apply_workers_per_subscription", "sighup", "INTEGER", "0", "1024"),
        ("reserved_connections", "postmaster", "INTEGER", "0", "262143"),
        ("scram_iterations", "user", "INTEGER", "1", _INT),
        ("vacuum_buffer_usage_limit", "user", "INTEGER", "0", "16777216"),
    ),
    17: (
        ("allow_alter_system", "sighup", "BOOLEAN", "", ""),
        ("commit_timestamp_buffers", "postmaster", "INTEGER", "0", "131072"),
        ("enable_group_by_reordering", "user", "BOOLEAN", "", ""),
        ("event_triggers", "superuser", "BOOLEAN", "", ""),
        ("io_combine_limit", "user", "INTEGER", "1", "32"),
        ("max_notify_queue_pages", "postmaster", "INTEGER", "64", _INT),
        ("multixact_member_buffers", "postmaster", "INTEGER", "16", "131072"),
        ("multixact_offset_buffers", "postmaster", "INTEGER", "16", "131072"),
        ("notify_buffers", "postmaster", "INTEGER", "16", "131072"),
        ("serializable_buffers", "postmaster", "INTEGER", "16", "131072"),
        ("subtransaction_buffers", "postmaster", "INTEGER", "0", "131072"),
        ("summarize_wal", "sighup", "BOOLEAN", "", ""),
        ("sync_replication_slots", "sighup", "BOOLEAN", "", ""),
        ("synchronized_standby_slots", "sighup", "STRING", "", ""),
        ("transaction_buffers", "postmaster", "INTEGER", "0", "131072"),
        ("transaction_timeout", "user", "INTEGER", "0", _INT),
        ("wal_summary_keep_time", "sighup", "INTEGER", "0", "35791394"),
    ),
    18: (
        ("autovacuum_vacuum_max_threshold", "sighup", "INTEGER", "-1", _INT),
        ("autovacuum_worker_slots", "postmaster", "INTEGER", "1", "262143"),
        ("enable_distinct_reordering", "user", "BOOLEAN", "", ""),
        ("enable_self_join_elimination", "user", "BOOLEAN", "", ""),
        ("extension_control_path", "superuser", "STRING", "", ""),
        ("file_copy_method", "user", "ENUM", "", ""),
        ("idle_replication_slot_timeout", "sighup", "INTEGER", "0", _INT),
        ("io_max_combine_limit", "postmaster", "INTEGER", "1", "128"),
        ("io_max_concurrency", "postmaster", "INTEGER", "-1", "1024"),
        ("io_method", "postmaster", "ENUM", "", ""),
        ("io_workers", "sighup", "INTEGER", "1", "32"),
        ("log_lock_failures", "superuser", "BOOLEAN", "", ""),
        ("max_active_replication_origins", "postmaster", "INTEGER", "0", "262143"),
        ("md5_password_warnings", "user", "BOOLEAN", "", ""),
        ("oauth_validator_libraries", "sighup", "STRING", "", ""),
        ("ssl_groups", "sighup", "STRING", "", ""),
        ("ssl_tls13_ciphers", "sighup", "STRING", "", ""),
        ("track_cost_delay_timing", "superuser", "BOOLEAN", "", ""),
        ("vacuum_max_eager_freeze_failure_rate", "user", "REAL", "0", "1"),
        ("vacuum_truncate", "user", "BOOLEAN", "", ""),
    ),
}

# parameters a major no longer has, with their row in the majors before
REMOVED: dict[int, tuple[Row, ...]] = {
    13: (("wal_keep_segments", "sighup", "INTEGER", "0", _INT),),
    14: (("operator_precedence_warning", "user", "BOOLEAN", "", ""),
         ("vacuum_cleanup_index_scale_factor", "user", "REAL", "0", "1e+10")),
    15: (("stats_temp_directory", "sighup", "STRING", "", ""),),
    16: (("promote_trigger_file", "sighup", "STRING", "", ""),
         ("vacuum_defer_cleanup_age", "sighup", "INTEGER", "0", "1000000")),
    17: (("db_user_namespace", "sighup", "BOOLEAN", "", ""),
         ("old_snapshot_threshold", "postmaster", "INTEGER", "-1", "86400")),
    18: (("ssl_ecdh_curve", "sighup", "STRING", "", ""),),  # renamed ssl_groups
}

# parameters whose row changed in a major: (row from that major on, row before it)
CHANGED: dict[int, tuple[tuple[Row, Row], ...]] = {
    15: ((("wal_compression", "superuser", "ENUM", "", ""),
          ("wal_compression", "superuser", "BOOLEAN", "", "")),),
    18: ((("autovacuum_max_workers", "sighup", "INTEGER", "1", "262143"),
          ("autovacuum_max_workers", "postmaster", "INTEGER", "1", "262143")),
         (("log_connections", "sighup", "STRING", "", ""),
          ("log_connections", "superuser-backend", "BOOLEAN", "", ""))),
}


def _line(row: Row) -> str:
    name, context, kind, low, high = row
    return "\t".join((name, context, "", kind, "", low, high, "", ""))


def describe_config(major: int) -> str:
    """The describe-config output of ``major`` (15: the real one)."""
    rows: dict[str, str] = {}
    for line in (DATA / "describe_config_15.txt").read_text().splitlines():
        rows[line.split("\t", 1)[0]] = line
    if major < 15:
        for release in range(15, major, -1):  # undo 15, 14, ... down to major + 1
            for row in ADDED.get(release, ()):
                rows.pop(row[0], None)
            for row in REMOVED.get(release, ()):
                rows[row[0]] = _line(row)
            for _new, old in CHANGED.get(release, ()):
                rows[old[0]] = _line(old)
    for release in range(16, major + 1):
        for row in ADDED.get(release, ()):
            rows[row[0]] = _line(row)
        for row in REMOVED.get(release, ()):
            rows.pop(row[0], None)
        for new, _old in CHANGED.get(release, ()):
            rows[new[0]] = _line(new)
    return "".join(line + "\n" for line in sorted(rows.values(), key=str.lower))


def version_output(major: int) -> str:
    """``postgres --version`` of ``major``."""
    return f"postgres (PostgreSQL) {major}.4\n"
