"""The registry data: every key of Patroni's documented configuration and its status in pgha.

Contract: :data:`LOCAL` (the local YAML) and :data:`DYNAMIC` (``bootstrap.dcs``, the DCS
``config`` key, ``PATCH /config``) list :class:`Key` entries by dotted path; ``*`` stands for
any name at that level. Data only; the functions that use it are in :mod:`pgha.config.keys`.
A key is ``implemented`` only when some layer of pgha acts on it (not merely declared in a
model). Statuses: ``implemented``; ``planned`` (not supported yet, ``issue`` will implement
it); ``never`` (pgha will not implement it); ``ignored`` (no effect in pgha, e.g. threads).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

OK, PLANNED, NEVER, IGNORED = "implemented", "planned", "never", "ignored"

_OFF = ("false", "off", "no", "0")


@dataclass(frozen=True)
class Key:
    """One configuration key. ``default`` is the documented default as text ("" = none);
    ``inert`` lists values (normalised, see :func:`pgha.config.keys.normalise`) for which a key
    that is not implemented changes nothing, so no warning is given; ``free`` marks a mapping
    or list whose content is not checked; ``env`` marks keys Patroni also reads from a
    ``PATRONI_*`` variable; ``dynamic_section`` (only ``bootstrap.dcs``) holds a dynamic
    configuration."""

    path: str
    default: str = ""
    status: str = OK
    note: str = ""
    issue: int | None = None
    inert: tuple[str, ...] | Callable[[Any], bool] = ()
    free: bool = False
    env: bool = False
    dynamic_section: bool = False

    @property
    def name(self) -> str:
        return self.path.rsplit(".", 1)[-1]

    @property
    def parent(self) -> str:
        return self.path.rpartition(".")[0]


def _k(path: str, default: str = "", status: str = OK, note: str = "", **kw: Any) -> Key:
    return Key(path, default, status, note, **kw)


def _p(path: str, issue: int | None, note: str, default: str = "", **kw: Any) -> Key:
    return Key(path, default, PLANNED, note, issue, **kw)


def _n(path: str, note: str, default: str = "", **kw: Any) -> Key:
    return Key(path, default, NEVER, note, **kw)


_AUTH = ("sslmode", "sslkey", "sslpassword", "sslcert", "sslrootcert", "sslcrl", "sslcrldir",
         "sslnegotiation", "gssencmode", "channel_binding")
_BINARIES = ("pg_ctl", "initdb", "pg_controldata", "pg_basebackup", "postgres", "pg_isready",
             "pg_rewind")
_ROLES = {"superuser": "postgres", "replication": "replicator", "rewind": "rewind_user"}


def _etcd(section: str) -> list[Key]:
    s = section
    return [
        _k(s, note="etcd v3 API (gRPC gateway); `etcd` and `etcd3` are the same section"),
        _k(f"{s}.host", "127.0.0.1:2379", env=True),
        _k(f"{s}.hosts", note="list or comma-separated string", env=True),
        _k(f"{s}.url", note="its host and port (TLS is used when cacert is set)", env=True),
        _p(f"{s}.protocol", None, "TLS to etcd is used exactly when cacert is set", "http",
           inert=("http",), env=True),
        _k(f"{s}.username", env=True),
        _k(f"{s}.password", env=True),
        _k(f"{s}.cacert", env=True),
        _k(f"{s}.cert", env=True),
        _k(f"{s}.key", env=True),
        _k(f"{s}.use_proxies", "false", note="pgha always uses the listed endpoints as given "
           "(no topology discovery), as with use_proxies: true", env=True),
        _p(f"{s}.proxy", None, "etcd proxy URL; list the endpoints in hosts", env=True),
        _p(f"{s}.srv", None, "DNS SRV discovery; list the endpoints in hosts", env=True),
        _p(f"{s}.srv_suffix", None, "DNS SRV discovery", env=True),
    ]


_ROLE_KEYS = [k for role, user in _ROLES.items() for k in (
    _k(f"postgresql.authentication.{role}", note=f"the {role} role"),
    _k(f"postgresql.authentication.{role}.username", user, env=True),
    _k(f"postgresql.authentication.{role}.password", env=True),
    *(_k(f"postgresql.authentication.{role}.{opt}", note="libpq connection option", env=True)
      for opt in _AUTH))]

LOCAL: tuple[Key, ...] = (
    # -------------------------------------------------------------- global
    _k("name", note="member name, unique in the cluster; no '/', '..' or NUL", env=True),
    _k("scope", note="cluster name", env=True),
    _k("namespace", "/service/", env=True),
    Key("thread_pool_size", "5", IGNORED, "pgha runs on one asyncio event loop, no thread pool"),
    Key("thread_stack_size", "512kB", IGNORED, "pgha starts no threads of its own"),
    # -------------------------------------------------------------- log
    _k("log", note="logging of the agent: records are queued in memory and written by a "
       "separate thread to stderr and, with log.dir, to a file; a reload applies every key"),
    _k("log.level", "INFO", note="DEBUG, INFO, WARNING, ERROR or CRITICAL", env=True),
    _k("log.traceback_level", "ERROR", note="a traceback is written only when the logger is "
       "enabled for this level (DEBUG: only with log.level DEBUG); otherwise the line ends "
       "with the exception's one-line description", env=True),
    _k("log.type", "plain", note="plain (lines per log.format) or json: one JSON object per "
       "line, keys named after the record attributes as in Patroni (asctime, levelname, name, "
       "message; rename them with the list form of log.format), then static_fields, every "
       "extra field of the record (the decision line's reason, role, ...) and exc_info (the "
       "traceback)", env=True),
    _k("log.format", "%(asctime)s %(levelname)s %(name)s: %(message)s", note="plain: a "
       "%-style format of LogRecord attributes (pgha's default adds the logger name to "
       "Patroni's); json: the same string, or a list of attribute names and {name: new name} "
       "renames, giving the fields in order", env=True),
    _k("log.dateformat", note="strftime format of asctime (default: Python's, "
       "2024-01-31 12:00:00,123)", env=True),
    _k("log.static_fields", note="json: constant fields added to every line, after the "
       "format's fields", free=True, env=True),
    _k("log.max_queue_size", "1000", note="records waiting to be written; when full, records "
       "are dropped and counted, and the count is logged once there is room", env=True),
    _k("log.dir", note="pgha writes pgha.log there (Patroni: patroni.log), as well as stderr; "
       "created if missing", env=True),
    _k("log.mode", note="permissions of the log files, e.g. 0640 (default: from the umask)",
       env=True),
    _k("log.file_num", "4", note="rotated files kept (pgha.log.1 ... pgha.log.N)", env=True),
    _k("log.file_size", "25000000", note="bytes after which pgha.log is rotated (0: never)",
       env=True),
    _k("log.loggers", note="levels of single loggers, e.g. {pgha.dcs: DEBUG, aiohttp: "
       "WARNING}; aiohttp.access is WARNING unless named", free=True, env=True),
    _k("log.deduplicate_heartbeat_logs", "false", note="the per-cycle `decision ...` line is "
       "written only when it differs from the previous one, or 10 minutes after it was last "
       "written", env=True),
    # -------------------------------------------------------------- bootstrap
    _k("bootstrap", note="used by the member that initializes a new cluster"),
    Key("bootstrap.dcs", note="the dynamic configuration written to the DCS at bootstrap "
        "(see the dynamic keys below)", dynamic_section=True),
    _k("bootstrap.method", "initdb", note="initdb, or the name of a custom method section "
       "(`bootstrap.<method>`) run instead; methods are not chained"),
    _k("bootstrap.<method>", note="a custom bootstrap method, the section bootstrap.method "
       "names; its command restores a cluster into the empty data directory, then pgha "
       "recovers it, promotes it and goes on as after initdb (roles, pg_hba, post_bootstrap); a "
       "method section bootstrap.method does not name is not used (warning)"),
    _k("bootstrap.<method>.command", note="run with `--scope=<scope> --datadir=<data_dir>` "
       "and `--key=value` for each extra key of the section (split as a shell would, no "
       "shell; PGPASSFILE set); a non-zero exit fails the bootstrap"),
    _k("bootstrap.<method>.no_params", "false", note="pass the command no argument of pgha's"),
    _k("bootstrap.<method>.keep_existing_recovery_conf", "false", note="recover with the "
       "recovery.signal/standby.signal and the recovery settings in postgresql.auto.conf "
       "that the command left (else they are removed; the settings go after the "
       "promotion either way)"),
    _k("bootstrap.<method>.recovery_conf", note="recovery settings of the restored cluster "
       "until it is promoted (restore_command, recovery_target_time, recovery_target_action "
       "promote or pause, ...); a target or a restore_command starts targeted archive "
       "recovery", free=True),
    _k("bootstrap.<method>.*", note="any other key: passed to the command as `--key=value`"),
    _k("bootstrap.initdb", note="initdb options: switches and {option: value} items", free=True),
    _k("bootstrap.post_bootstrap", note="script run after initdb with a superuser URL"),
    _k("bootstrap.post_init", note="older name of post_bootstrap"),
    _k("bootstrap.users", note="roles created after initdb (removed in Patroni 4.0)", free=True),
    _k("bootstrap.pg_hba", note="pg_hba lines of a new cluster (older Patroni)", free=True),
    # -------------------------------------------------------------- DCS sections
    *_etcd("etcd"), *_etcd("etcd3"),
    _k("consul", note="Consul (one agent, normally the local one)"),
    *(_k(f"consul.{k}", d, env=True) for k, d in (
        ("host", "127.0.0.1:8500"), ("url", ""), ("port", "8500"), ("scheme", "http"),
        ("token", ""), ("verify", "true"), ("cacert", ""), ("cert", ""), ("key", ""),
        ("dc", ""), ("consistency", "default"))),
    _p("consul.checks", None, "session health checks", "[]", free=True, env=True),
    _p("consul.register_service", None, "service registration", "false", inert=_OFF, env=True),
    _p("consul.service_tags", None, "service registration", "[]", free=True, env=True),
    _p("consul.service_check_interval", None, "service registration", "5s", env=True),
    _p("consul.service_check_tls_server_name", None, "service registration", env=True),
    _k("zookeeper", note="ZooKeeper ensemble"),
    _k("zookeeper.hosts", note="list or comma-separated string of host[:port]", env=True),
    _k("zookeeper.use_ssl", "false", env=True),
    _k("zookeeper.cacert", env=True),
    _k("zookeeper.cert", env=True),
    _k("zookeeper.key", env=True),
    _k("zookeeper.verify", "true", env=True),
    _k("zookeeper.key_password", note="password of an encrypted client key", env=True),
    _k("zookeeper.set_acls", note="ACL of every znode pgha creates: {principal: [READ, WRITE, "
       "CREATE, DELETE, ADMIN or ALL]}; a principal is an x509 name (`CN=...`) or, in pgha "
       "also, `scheme:id` for the schemes digest, sasl, ip, world, auth and x509",
       free=True, env=True),
    _k("zookeeper.auth_data", note="credentials sent on every connection: {scheme: "
       "credential} (e.g. `digest: user:password`) or, in pgha also, a list of such mappings",
       free=True, env=True),
    _n("exhibitor", "Exhibitor is not supported: use zookeeper with the ensemble's hosts",
       free=True),
    _n("kubernetes", "the Kubernetes DCS is not supported: use etcd, Consul or ZooKeeper",
       free=True),
    _n("raft", "Patroni's Raft DCS (deprecated) is not supported", free=True),
    _n("citus", "Citus clusters are not supported", free=True),
    # -------------------------------------------------------------- postgresql
    _k("postgresql", note="the local PostgreSQL instance"),
    _k("postgresql.listen", "127.0.0.1:5432", note="host[,host...]:port; a wildcard host "
       "needs connect_address", env=True),
    _k("postgresql.connect_address", note="host:port other members use (default: listen)",
       env=True),
    _p("postgresql.proxy_address", None, "published proxy_url", env=True),
    _k("postgresql.data_dir", env=True),
    _k("postgresql.config_dir", "data_dir", note="where pgha keeps postgresql.conf, "
       "postgresql.base.conf, pg_hba.conf and pg_ident.conf (e.g. Debian's "
       "/etc/postgresql/15/main); PostgreSQL is started with `--config-file` there and "
       "`data_directory` set to data_dir; an original postgresql.conf found there (else "
       "initdb's, moved out of data_dir) becomes postgresql.base.conf; a change needs an agent "
       "restart", env=True),
    _k("postgresql.bin_dir", "directory of pg_ctl on PATH", env=True),
    _k("postgresql.bin_name", note="file names of the PostgreSQL programs, looked up in "
       "bin_dir (an absolute path is used as is); with an empty bin_dir a plain name is "
       "looked up on PATH and bin_dir becomes the directory of pg_ctl (under its configured "
       "name), symlinks resolved. A renamed postgres is passed to pg_ctl start with -p; "
       "initdb runs the postgres beside it. pgha never runs pg_isready"),
    *(_k(f"postgresql.bin_name.{b}", b, note="its file name in bin_dir") for b in _BINARIES),
    _k("postgresql.pgpass", "~/.pgpass_pgha_<name>", env=True),
    _k("postgresql.authentication", note="the roles pgha connects as"),
    *_ROLE_KEYS,
    _k("postgresql.callbacks", note="scripts run as `cmd action role scope`"),
    *(_k(f"postgresql.callbacks.{c}") for c in (
        "on_start", "on_stop", "on_restart", "on_reload", "on_role_change")),
    _k("postgresql.parameters", note="PostgreSQL parameters (unknown names and values "
       "PostgreSQL would refuse are dropped with a warning; as in Patroni, the parameters passed "
       "on the command line - max_connections, max_wal_senders, max_replication_slots, "
       "max_worker_processes, max_locks_per_transaction, max_prepared_transactions, wal_level, "
       "wal_keep_size, track_commit_timestamp, wal_log_hints - are ignored here with a warning: "
       "set them in the dynamic configuration)", free=True),
    _k("postgresql.pg_hba", note="lines of pg_hba.conf", free=True),
    _k("postgresql.pg_ident", "[]", note="lines of pg_ident.conf (wins over the dynamic "
       "`postgresql.pg_ident`); written and PostgreSQL reloaded when they change, unless "
       "`parameters.ident_file` is set; with no lines a pg_ident.conf pgha did not write is "
       "left alone", free=True),
    _k("postgresql.custom_conf", note="a base configuration file the generated "
       "postgresql.conf includes instead of postgresql.base.conf (initdb's file is then "
       "not kept); never modified by pgha; a relative path is relative to config_dir; "
       "a missing file is an error naming the key (absolute: at load; relative: "
       "before each start)"),
    _k("postgresql.create_replica_methods", "[basebackup]", note="replica creation methods "
       "tried in order until one succeeds: the built-in `basebackup` (pg_basebackup) and "
       "custom methods, each defined by its section `postgresql.<method>` (`command`, "
       "`no_params`, `keep_data`, `no_leader`/`no_master`, extra keys passed as "
       "`--key=value`)", free=True),
    _k("postgresql.basebackup", note="pg_basebackup options: a list of switches and "
       "{option: value} items, or a mapping (`max-rate`, `checkpoint`, `waldir`, ...); "
       "the data directory, WAL method, format and connection options are pgha's",
       free=True),
    _k("postgresql.recovery_conf", note="recovery settings written on replicas "
       "(restore_command, archive_cleanup_command, recovery_min_apply_delay, ...); pgha "
       "manages primary_conninfo, primary_slot_name and recovery_target_timeline", free=True),
    _k("postgresql.pg_ctl_timeout", "60"),
    _k("postgresql.use_pg_rewind", "the dynamic value", note="a local value overrides the "
       "dynamic one"),
    Key("postgresql.use_slots", "true", IGNORED, "a cluster-wide setting: set it in the "
        "dynamic configuration"),
    _k("postgresql.remove_data_directory_on_rewind_failure", "false"),
    _k("postgresql.remove_data_directory_on_diverged_timelines", "false",
       note="re-clone a diverged member when pg_rewind is off; else it stays stopped"),
    _k("postgresql.use_unix_socket", "false", note="the agent's own connections over the "
       "socket (else TCP to localhost or the first listen address)"),
    Key("postgresql.use_unix_socket_repl", "false", IGNORED, "pgha opens no replication "
        "connection to its own server"),
    _k("postgresql.rewind", note="extra pg_rewind options, in the forms of "
       "`postgresql.basebackup` (`- debug`, `- restore-target-wal`, `- config-file: ...`), "
       "appended to pgha's command line; the target data directory, source, "
       "write-recovery-conf, dry-run, help and version options are refused", free=True),
    _k("postgresql.pre_promote", note="fencing command run (shlex-split, no arguments) "
       "after the leader lock is won and before the promotion, for at most `ttl` seconds; "
       "a non-zero exit, a failure to start or a timeout: no promotion, the leader lock is "
       "released and the member stays out of the leader race for `ttl` seconds"),
    _k("postgresql.before_stop", note="command run (shlex-split, no arguments) right before "
       "pgha stops a running PostgreSQL (clean stop, restart, switchover, re-initialise, "
       "demotion to a standby cluster), for at most `ttl` seconds; its exit status is only "
       "logged. Not run before an immediate demotion (fail-closed: writes stop first)"),
    # -------------------------------------------------------------- restapi, ctl
    _k("restapi", note="the REST API"),
    _k("restapi.listen", "127.0.0.1:8008", note="a wildcard host needs connect_address",
       env=True),
    _k("restapi.connect_address", note="host:port other members use (default: listen)",
       env=True),
    _k("restapi.authentication", note="Basic auth of unsafe methods"),
    _k("restapi.authentication.username", env=True),
    _k("restapi.authentication.password", env=True),
    _k("restapi.certfile", env=True),
    _k("restapi.keyfile", env=True),
    _k("restapi.keyfile_password", env=True),
    _k("restapi.cafile", env=True),
    _k("restapi.verify_client", "none", env=True),
    _k("restapi.allowlist", env=True, free=True),
    _k("restapi.allowlist_include_members", "false", env=True),
    _k("restapi.ciphers", note="OpenSSL cipher list of the HTTPS server (TLS 1.2 and older: "
       "TLS 1.3 suites stay OpenSSL's); one matching no cipher is an error", env=True),
    _k("restapi.http_extra_headers", note="header name -> value, added to every response",
       free=True, env=True),
    _k("restapi.https_extra_headers", note="added to every response over HTTPS, after "
       "http_extra_headers", free=True, env=True),
    _k("restapi.request_queue_size", "128", note="listen backlog of the REST API sockets. "
       "Patroni's default is 5; pgha keeps aiohttp's 128: with 5, 42 of 60 connections opened "
       "in bursts of 20 waited for a SYN retransmission, 1 s (benchmarks/api_backlog.py)",
       env=True),
    _k("restapi.server_tokens", "original", note="Server header: original (aiohttp's), "
       "minimal (pgha/<version>), productonly (pgha); any case", env=True),
    _k("ctl", note="operator commands' access to the REST API"),
    _k("ctl.insecure", "false", env=True),
    _k("ctl.cacert", note="default: restapi.cafile", env=True),
    _k("ctl.certfile", env=True),
    _k("ctl.keyfile", env=True),
    _k("ctl.keyfile_password", env=True),
    _k("ctl.authentication", note="default: restapi.authentication"),
    _k("ctl.authentication.username", env=True),
    _k("ctl.authentication.password", env=True),
    # -------------------------------------------------------------- watchdog, tags
    _k("watchdog", note="the Linux watchdog device, armed while this member leads a running "
       "primary; read at start"),
    _k("watchdog.mode", "automatic", note="off, automatic (arm it when possible, warn when "
       "not) or required (no leader lock without it)"),
    _k("watchdog.device", "/dev/watchdog"),
    _k("watchdog.safety_margin", "5", note="timeout = ttl - safety_margin; -1: ttl / 2"),
    _k("tags", note="member tags; other keys are custom tags (free-form)"),
    _k("tags.nofailover", "false"),
    _k("tags.failover_priority", "1"),
    _k("tags.noloadbalance", "false"),
    _k("tags.clonefrom", "false"),
    _k("tags.replicatefrom", note="cascading: stream from that member"),
    _k("tags.nosync", "false", note="never a synchronous standby nor a quorum voter"),
    _k("tags.sync_priority", "1", note="higher first; 0 = never synchronous"),
    _k("tags.nostream", "false", note="archive-only replica: never streams, replays through "
       "restore_command, gets no slot"),
    _k("tags.*", note="custom tag (any name)", free=True),
)


DYNAMIC: tuple[Key, ...] = (
    _k("ttl", "30", note="leader lock TTL (s)"),
    _k("loop_wait", "10"),
    _k("retry_timeout", "10"),
    _k("maximum_lag_on_failover", "1048576"),
    _k("primary_start_timeout", "300"),
    _k("master_start_timeout", "300", note="older name of primary_start_timeout"),
    _k("check_timeline", "false"),
    _k("failsafe_mode", "false"),
    _k("pause", "false", note="maintenance mode (pgha pause / resume)"),
    _k("member_slots_ttl", "30min"),
    _p("primary_race_backoff", None, "leader race backoff (Patroni master)", "0",
       inert=("0",)),
    _k("primary_stop_timeout", "0",
       note="synchronous mode: a primary's clean stop turns immediate after this many seconds"),
    _k("max_timelines_history", "0", note="the leader keeps the last N entries of the DCS "
       "`history` key when it records a promotion; 0 keeps them all"),
    _k("synchronous_mode", "off", note="off, on (true) or quorum"),
    _k("synchronous_mode_strict", "false",
       note="never acknowledge a commit without a synchronous standby"),
    _k("synchronous_node_count", "1"),
    _k("maximum_lag_on_syncnode", "-1", note="bytes; -1: no limit"),
    _k("slots", note="permanent slots: {name: {type: physical}} or {type: logical, database, "
       "plugin}; on the leader and on every member that may become primary, logical ones "
       "copied to replicas and advanced there", free=True),
    _k("ignore_slots", note="list of {name, type, database, plugin} rules: matching slots are "
       "never created or dropped", free=True),
    _k("standby_cluster", note="this cluster replicates from a remote primary: the lock "
       "holder is a standby leader that never promotes"),
    _k("standby_cluster.host", note="the remote primary (one host: put a load balancer or a "
       "VIP in front of several)"),
    _k("standby_cluster.port", "5432"),
    _k("standby_cluster.primary_slot_name", note="slot on the remote (created by the operator)"),
    *(_k(f"standby_cluster.{k}", note="recovery setting of the standby leader") for k in (
        "restore_command", "archive_cleanup_command", "recovery_min_apply_delay")),
    _k("standby_cluster.create_replica_methods", note="how a new member of the standby "
       "cluster is created from the remote: basebackup or postgresql.<method> sections",
       free=True),
    _k("postgresql", note="cluster-wide PostgreSQL settings"),
    _k("postgresql.use_pg_rewind", "false"),
    _k("postgresql.use_slots", "true"),
    _k("postgresql.parameters", note="PostgreSQL parameters (unknown names and values "
       "PostgreSQL would refuse are dropped with a warning; as in Patroni, max_connections < 25, "
       "max_wal_senders < 3, max_replication_slots < 4, max_worker_processes < 2, "
       "max_locks_per_transaction < 32 and wal_keep_size < 16MB give the default)", free=True),
    _k("postgresql.pg_hba", free=True),
    _k("postgresql.pg_ident", note="lines of pg_ident.conf, unless the local "
       "`postgresql.pg_ident` has some; a list PostgreSQL rejects (PostgreSQL 15+) is "
       "replaced by the previous one", free=True),
    _k("postgresql.recovery_conf", note="recovery settings written on replicas "
       "(restore_command, archive_cleanup_command, recovery_min_apply_delay, ...); pgha "
       "manages primary_conninfo, primary_slot_name and recovery_target_timeline", free=True),
    *(_p(f"postgresql.{k}_{role}", None, "role-specific settings (Patroni master)", free=True)
      for k in ("parameters", "pg_hba", "pg_ident", "pg_hosts")
      for role in ("primary", "replica", "standby_leader")),
    _p("postgresql.pg_hosts", None, "pg_hosts.conf (PostgreSQL 19)", free=True),
)
