"""Facts about PostgreSQL parameters that ``postgres --describe-config`` does not print.

Pure data, used by :mod:`pgha.config.pg_parameters`; sources: ``pg_settings`` of a stock
PostgreSQL 15 (Debian build) and the release notes of PostgreSQL 12 to 18.

* :data:`UNITS`: the base unit of each integer/real parameter that has one (``pg_settings.unit``);
  a value with a unit suffix is only valid for these, and the range check needs the unit.
* :func:`enum_values`: the visible values of each enum parameter (``pg_settings.enumvals``) for a
  major version; the hidden spellings PostgreSQL also accepts are added by the judging code.
* :data:`UNLISTED`: parameters that can be set in postgresql.conf but that ``--describe-config``
  leaves out (developer options, ``application_name``...), with the majors that have them.
* :data:`REMOVED`: parameters removed in a major (and what replaced them), for the warning.
* :data:`KNOWN_PG_PARAMETERS`: every name of majors 12 to 18, the fallback when the server
  binary cannot be asked.
"""

from __future__ import annotations

from collections.abc import Mapping

_PG15 = """
allow_in_place_tablespaces allow_system_table_mods application_name archive_cleanup_command
archive_command archive_library archive_mode archive_timeout array_nulls authentication_timeout
autovacuum autovacuum_analyze_scale_factor autovacuum_analyze_threshold
autovacuum_freeze_max_age autovacuum_max_workers autovacuum_multixact_freeze_max_age
autovacuum_naptime autovacuum_vacuum_cost_delay autovacuum_vacuum_cost_limit
autovacuum_vacuum_insert_scale_factor autovacuum_vacuum_insert_threshold
autovacuum_vacuum_scale_factor autovacuum_vacuum_threshold autovacuum_work_mem
backend_flush_after backslash_quote backtrace_functions bgwriter_delay bgwriter_flush_after
bgwriter_lru_maxpages bgwriter_lru_multiplier block_size bonjour bonjour_name bytea_output
check_function_bodies checkpoint_completion_target checkpoint_flush_after checkpoint_timeout
checkpoint_warning client_connection_check_interval client_encoding client_min_messages
cluster_name commit_delay commit_siblings compute_query_id config_file constraint_exclusion
cpu_index_tuple_cost cpu_operator_cost cpu_tuple_cost cursor_tuple_fraction data_checksums
data_directory data_directory_mode data_sync_retry DateStyle db_user_namespace deadlock_timeout
debug_assertions debug_discard_caches debug_pretty_print debug_print_parse debug_print_plan
debug_print_rewritten default_statistics_target default_table_access_method default_tablespace
default_text_search_config default_toast_compression default_transaction_deferrable
default_transaction_isolation default_transaction_read_only dynamic_library_path
dynamic_shared_memory_type effective_cache_size effective_io_concurrency enable_async_append
enable_bitmapscan enable_gathermerge enable_hashagg enable_hashjoin enable_incremental_sort
enable_indexonlyscan enable_indexscan enable_material enable_memoize enable_mergejoin
enable_nestloop enable_parallel_append enable_parallel_hash enable_partition_pruning
enable_partitionwise_aggregate enable_partitionwise_join enable_seqscan enable_sort
enable_tidscan escape_string_warning event_source exit_on_error extension_destdir
external_pid_file extra_float_digits force_parallel_mode from_collapse_limit fsync
full_page_writes geqo geqo_effort geqo_generations geqo_pool_size geqo_seed geqo_selection_bias
geqo_threshold gin_fuzzy_search_limit gin_pending_list_limit hash_mem_multiplier hba_file
hot_standby hot_standby_feedback huge_page_size huge_pages ident_file
idle_in_transaction_session_timeout idle_session_timeout ignore_checksum_failure
ignore_invalid_pages ignore_system_indexes in_hot_standby integer_datetimes IntervalStyle jit
jit_above_cost jit_debugging_support jit_dump_bitcode jit_expressions jit_inline_above_cost
jit_optimize_above_cost jit_profiling_support jit_provider jit_tuple_deforming
join_collapse_limit krb_caseins_users krb_server_keyfile lc_collate lc_ctype lc_messages
lc_monetary lc_numeric lc_time listen_addresses lo_compat_privileges local_preload_libraries
lock_timeout log_autovacuum_min_duration log_checkpoints log_connections log_destination
log_directory log_disconnections log_duration log_error_verbosity log_executor_stats
log_file_mode log_filename log_hostname log_line_prefix log_lock_waits log_min_duration_sample
log_min_duration_statement log_min_error_statement log_min_messages log_parameter_max_length
log_parameter_max_length_on_error log_parser_stats log_planner_stats log_recovery_conflict_waits
log_replication_commands log_rotation_age log_rotation_size log_startup_progress_interval
log_statement log_statement_sample_rate log_statement_stats log_temp_files log_timezone
log_transaction_sample_rate log_truncate_on_rotation logging_collector logical_decoding_work_mem
maintenance_io_concurrency maintenance_work_mem max_connections max_files_per_process
max_function_args max_identifier_length max_index_keys max_locks_per_transaction
max_logical_replication_workers max_parallel_maintenance_workers max_parallel_workers
max_parallel_workers_per_gather max_pred_locks_per_page max_pred_locks_per_relation
max_pred_locks_per_transaction max_prepared_transactions max_replication_slots
max_slot_wal_keep_size max_stack_depth max_standby_archive_delay max_standby_streaming_delay
max_sync_workers_per_subscription max_wal_senders max_wal_size max_worker_processes
min_dynamic_shared_memory min_parallel_index_scan_size min_parallel_table_scan_size min_wal_size
old_snapshot_threshold parallel_leader_participation parallel_setup_cost parallel_tuple_cost
password_encryption plan_cache_mode port post_auth_delay pre_auth_delay primary_conninfo
primary_slot_name promote_trigger_file quote_all_identifiers random_page_cost
recovery_end_command recovery_init_sync_method recovery_min_apply_delay recovery_prefetch
recovery_target recovery_target_action recovery_target_inclusive recovery_target_lsn
recovery_target_name recovery_target_time recovery_target_timeline recovery_target_xid
recursive_worktable_factor remove_temp_files_after_crash restart_after_crash restore_command
restrict_nonsystem_relation_kind row_security search_path segment_size seq_page_cost
server_encoding server_version server_version_num session_preload_libraries
session_replication_role shared_buffers shared_memory_size shared_memory_size_in_huge_pages
shared_memory_type shared_preload_libraries ssl ssl_ca_file ssl_cert_file ssl_ciphers
ssl_crl_dir ssl_crl_file ssl_dh_params_file ssl_ecdh_curve ssl_key_file ssl_library
ssl_max_protocol_version ssl_min_protocol_version ssl_passphrase_command
ssl_passphrase_command_supports_reload ssl_prefer_server_ciphers standard_conforming_strings
statement_timeout stats_fetch_consistency superuser_reserved_connections synchronize_seqscans
synchronous_commit synchronous_standby_names syslog_facility syslog_ident
syslog_sequence_numbers syslog_split_messages tcp_keepalives_count tcp_keepalives_idle
tcp_keepalives_interval tcp_user_timeout temp_buffers temp_file_limit temp_tablespaces TimeZone
timezone_abbreviations trace_notify trace_recovery_messages trace_sort track_activities
track_activity_query_size track_commit_timestamp track_counts track_functions track_io_timing
track_wal_io_timing transaction_deferrable transaction_isolation transaction_read_only
transform_null_equals unix_socket_directories unix_socket_group unix_socket_permissions
update_process_title vacuum_cost_delay vacuum_cost_limit vacuum_cost_page_dirty
vacuum_cost_page_hit vacuum_cost_page_miss vacuum_defer_cleanup_age vacuum_failsafe_age
vacuum_freeze_min_age vacuum_freeze_table_age vacuum_multixact_failsafe_age
vacuum_multixact_freeze_min_age vacuum_multixact_freeze_table_age wal_block_size wal_buffers
wal_compression wal_consistency_checking wal_decode_buffer_size wal_init_zero wal_keep_size
wal_level wal_log_hints wal_receiver_create_temp_slot wal_receiver_status_interval
wal_receiver_timeout wal_recycle wal_retrieve_retry_interval wal_segment_size wal_sender_timeout
wal_skip_threshold wal_sync_method wal_writer_delay wal_writer_flush_after work_mem xmlbinary
xmloption zero_damaged_pages
"""

_OTHER_RELEASES = (
    # PostgreSQL 12 (replaced by wal_keep_size in 13)
    "wal_keep_segments",
    # PostgreSQL 12 and 13
    "operator_precedence_warning vacuum_cleanup_index_scale_factor",
    # PostgreSQL 12 to 14
    "stats_temp_directory",
    # added in PostgreSQL 16
    "createrole_self_grant debug_io_direct debug_logical_replication_streaming"
    " debug_parallel_query enable_presorted_aggregate gss_accept_delegation icu_validation_level"
    " max_parallel_apply_workers_per_subscription reserved_connections scram_iterations"
    " send_abort_for_crash send_abort_for_kill vacuum_buffer_usage_limit",
    # added in PostgreSQL 17
    "allow_alter_system commit_timestamp_buffers enable_group_by_reordering event_triggers"
    " huge_pages_status io_combine_limit max_notify_queue_pages multixact_member_buffers"
    " multixact_offset_buffers notify_buffers serializable_buffers subtransaction_buffers"
    " summarize_wal sync_replication_slots synchronized_standby_slots"
    " trace_connection_negotiation transaction_buffers transaction_timeout wal_summary_keep_time",
    # added in PostgreSQL 18
    "autovacuum_vacuum_max_threshold autovacuum_worker_slots enable_distinct_reordering"
    " enable_self_join_elimination extension_control_path file_copy_method"
    " idle_replication_slot_timeout io_max_combine_limit io_max_concurrency io_method io_workers"
    " log_lock_failures max_active_replication_origins md5_password_warnings"
    " oauth_validator_libraries ssl_groups ssl_tls13_ciphers track_cost_delay_timing"
    " vacuum_max_eager_freeze_failure_rate vacuum_truncate",
)

_READ_ONLY = """
block_size data_checksums data_directory_mode debug_assertions huge_pages_status in_hot_standby
integer_datetimes lc_collate lc_ctype max_function_args max_identifier_length max_index_keys
num_os_semaphores segment_size server_encoding server_version server_version_num
shared_memory_size shared_memory_size_in_huge_pages ssl_library wal_block_size wal_segment_size
"""

READ_ONLY: frozenset[str] = frozenset(_READ_ONLY.split())
"""Internal (read-only) parameters: PostgreSQL refuses to start when postgresql.conf sets one."""

KNOWN_PG_PARAMETERS: frozenset[str] = frozenset(
    name.lower() for name in " ".join((_PG15, *_OTHER_RELEASES)).split()) - READ_ONLY
"""Lower-cased names of the settable core parameters of majors 12 to 18 (the fallback list)."""

_UNITS = {
    "B": "log_parameter_max_length log_parameter_max_length_on_error track_activity_query_size"
         " wal_decode_buffer_size",
    "kB": "autovacuum_work_mem gin_pending_list_limit huge_page_size log_rotation_size"
          " log_temp_files logical_decoding_work_mem maintenance_work_mem max_stack_depth"
          " temp_file_limit wal_skip_threshold work_mem vacuum_buffer_usage_limit",
    "8kB": "backend_flush_after bgwriter_flush_after checkpoint_flush_after effective_cache_size"
           " min_parallel_index_scan_size min_parallel_table_scan_size shared_buffers"
           " temp_buffers wal_buffers wal_writer_flush_after commit_timestamp_buffers"
           " multixact_member_buffers multixact_offset_buffers notify_buffers"
           " serializable_buffers subtransaction_buffers transaction_buffers io_combine_limit"
           " io_max_combine_limit",
    "MB": "max_slot_wal_keep_size max_wal_size min_dynamic_shared_memory min_wal_size"
          " wal_keep_size",
    "ms": "autovacuum_vacuum_cost_delay bgwriter_delay client_connection_check_interval"
          " deadlock_timeout idle_in_transaction_session_timeout idle_session_timeout"
          " lock_timeout log_autovacuum_min_duration log_min_duration_sample"
          " log_min_duration_statement log_startup_progress_interval max_standby_archive_delay"
          " max_standby_streaming_delay recovery_min_apply_delay statement_timeout"
          " tcp_user_timeout vacuum_cost_delay wal_receiver_timeout wal_retrieve_retry_interval"
          " wal_sender_timeout wal_writer_delay transaction_timeout",
    "s": "archive_timeout authentication_timeout autovacuum_naptime checkpoint_timeout"
         " checkpoint_warning post_auth_delay pre_auth_delay tcp_keepalives_idle"
         " tcp_keepalives_interval wal_receiver_status_interval idle_replication_slot_timeout",
    "min": "log_rotation_age old_snapshot_threshold wal_summary_keep_time",
}

UNITS: Mapping[str, str] = {name: unit for unit, names in _UNITS.items()
                            for name in names.split()}
"""Base unit of each integer/real parameter that accepts a unit (lower-case names)."""

_LEVELS = ("debug5", "debug4", "debug3", "debug2", "debug1")
_SERVER_LEVELS = (*_LEVELS, "info", "notice", "warning", "error", "log", "fatal", "panic")
_ISOLATION = ("serializable", "repeatable read", "read committed", "read uncommitted")

ENUMS: Mapping[str, tuple[str, ...]] = {
    "archive_mode": ("always", "on", "off"),
    "backslash_quote": ("safe_encoding", "on", "off"),
    "bytea_output": ("escape", "hex"),
    "client_min_messages": (*_LEVELS, "log", "notice", "warning", "error"),
    "compute_query_id": ("auto", "regress", "on", "off"),
    "constraint_exclusion": ("partition", "on", "off"),
    "debug_logical_replication_streaming": ("buffered", "immediate"),
    "debug_parallel_query": ("off", "on", "regress"),
    "default_toast_compression": ("pglz", "lz4"),
    "default_transaction_isolation": _ISOLATION,
    "dynamic_shared_memory_type": ("posix", "sysv", "mmap"),
    "file_copy_method": ("copy", "clone"),
    "force_parallel_mode": ("off", "on", "regress"),
    "huge_pages": ("off", "on", "try"),
    "icu_validation_level": ("disabled", *_LEVELS, "log", "notice", "warning", "error"),
    "intervalstyle": ("postgres", "postgres_verbose", "sql_standard", "iso_8601"),
    "io_method": ("sync", "worker", "io_uring"),
    "log_error_verbosity": ("terse", "default", "verbose"),
    "log_min_error_statement": _SERVER_LEVELS,
    "log_min_messages": _SERVER_LEVELS,
    "log_statement": ("none", "ddl", "mod", "all"),
    "password_encryption": ("md5", "scram-sha-256"),
    "plan_cache_mode": ("auto", "force_generic_plan", "force_custom_plan"),
    "recovery_init_sync_method": ("fsync", "syncfs"),
    "recovery_prefetch": ("off", "on", "try"),
    "recovery_target_action": ("pause", "promote", "shutdown"),
    "session_replication_role": ("origin", "replica", "local"),
    "shared_memory_type": ("sysv", "mmap"),
    "ssl_max_protocol_version": ("", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"),
    "ssl_min_protocol_version": ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"),
    "stats_fetch_consistency": ("none", "cache", "snapshot"),
    "synchronous_commit": ("local", "remote_write", "remote_apply", "on", "off"),
    "syslog_facility": tuple(f"local{i}" for i in range(8)),
    "trace_recovery_messages": (*_LEVELS, "log", "notice", "warning", "error"),
    "track_functions": ("none", "pl", "all"),
    "wal_compression": ("pglz", "lz4", "zstd", "on", "off"),
    "wal_level": ("minimal", "replica", "logical"),
    "wal_sync_method": ("fsync", "fdatasync", "open_sync", "open_datasync"),
    "xmlbinary": ("base64", "hex"),
    "xmloption": ("content", "document"),
}
"""Visible values of each enum parameter (PostgreSQL 15 unless :func:`enum_values` says
otherwise), lower-case names."""

_HIDDEN: Mapping[str, tuple[str, ...]] = {
    "wal_level": ("archive", "hot_standby"),
}
_BOOL_WORDS = ("true", "false", "yes", "no", "1", "0")


def enum_values(name: str, major: int | None) -> tuple[str, ...] | None:
    """The visible values of enum ``name`` (lower-case) in PostgreSQL ``major``; None when the
    enum is not known here (then any value is accepted)."""
    values = ENUMS.get(name)
    if values is None or (name == "wal_compression" and major is not None and major < 15):
        return None
    if name == "compute_query_id" and major is not None and major < 15:
        return ("auto", "on", "off")
    return values


def hidden_enum_values(name: str, visible: tuple[str, ...], major: int | None) -> tuple[str, ...]:
    """The spellings PostgreSQL also accepts for enum ``name`` without listing them: the
    boolean words where on/off are values, ``debug`` beside ``debug2``, the old wal_level
    names, and (before 14) the boolean spellings of password_encryption."""
    out = list(_HIDDEN.get(name, ()))
    if "on" in visible and "off" in visible:
        out.extend(_BOOL_WORDS)
    if "debug2" in visible:
        out.append("debug")
    if name == "password_encryption" and major is not None and major < 14:
        out.extend(("on", "true", "yes", "1"))
    return tuple(out)


# (name, context, type, unit, min, max, first major, last major or None)
UnlistedSpec = tuple[str, str, str, str | None, float | None, float | None, int, int | None]

UNLISTED: tuple[UnlistedSpec, ...] = (
    ("allow_in_place_tablespaces", "superuser", "bool", None, None, None, 15, None),
    ("allow_system_table_mods", "superuser", "bool", None, None, None, 12, None),
    ("application_name", "user", "string", None, None, None, 12, None),
    ("backtrace_functions", "superuser", "string", None, None, None, 13, None),
    ("debug_discard_caches", "superuser", "integer", None, 0, 0, 14, None),
    ("debug_io_direct", "postmaster", "string", None, None, None, 16, None),
    ("debug_logical_replication_streaming", "user", "enum", None, None, None, 16, None),
    ("debug_parallel_query", "user", "enum", None, None, None, 16, None),
    ("force_parallel_mode", "user", "enum", None, None, None, 12, 15),
    ("ignore_checksum_failure", "superuser", "bool", None, None, None, 12, None),
    ("ignore_invalid_pages", "postmaster", "bool", None, None, None, 13, None),
    ("ignore_system_indexes", "backend", "bool", None, None, None, 12, None),
    ("jit_debugging_support", "superuser-backend", "bool", None, None, None, 12, None),
    ("jit_dump_bitcode", "superuser", "bool", None, None, None, 12, None),
    ("jit_expressions", "user", "bool", None, None, None, 12, None),
    ("jit_profiling_support", "superuser-backend", "bool", None, None, None, 12, None),
    ("jit_tuple_deforming", "user", "bool", None, None, None, 12, None),
    ("post_auth_delay", "backend", "integer", "s", 0, 2147, 12, None),
    ("pre_auth_delay", "sighup", "integer", "s", 0, 60, 12, None),
    ("remove_temp_files_after_crash", "sighup", "bool", None, None, None, 14, None),
    ("restrict_nonsystem_relation_kind", "user", "string", None, None, None, 12, None),
    ("send_abort_for_crash", "sighup", "bool", None, None, None, 16, None),
    ("send_abort_for_kill", "sighup", "bool", None, None, None, 16, None),
    ("trace_connection_negotiation", "postmaster", "bool", None, None, None, 17, None),
    ("trace_notify", "user", "bool", None, None, None, 12, None),
    ("trace_recovery_messages", "sighup", "enum", None, None, None, 12, 16),
    ("trace_sort", "user", "bool", None, None, None, 12, None),
    ("wal_consistency_checking", "superuser", "string", None, None, None, 12, None),
    ("zero_damaged_pages", "superuser", "bool", None, None, None, 12, None),
)
"""Settable parameters that ``--describe-config`` does not print (flagged not-in-sample)."""

REMOVED: Mapping[str, tuple[int, str | None]] = {
    "wal_keep_segments": (13, "wal_keep_size"),
    "operator_precedence_warning": (14, None),
    "vacuum_cleanup_index_scale_factor": (14, None),
    "stats_temp_directory": (15, None),
    "force_parallel_mode": (16, "debug_parallel_query"),
    "promote_trigger_file": (16, "pg_promote()"),
    "vacuum_defer_cleanup_age": (16, None),
    "lc_collate": (16, None),
    "lc_ctype": (16, None),
    "db_user_namespace": (17, None),
    "old_snapshot_threshold": (17, None),
    "trace_recovery_messages": (17, None),
}
"""Parameters removed in a major: ``name -> (first major without it, replacement or None)``."""
