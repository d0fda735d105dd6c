"""Real Patroni 4.1 members beside pgha ones, for the migration tests.

A :class:`MixedCluster` is a :class:`~pgha.cli.localcluster.LocalCluster` whose members each
have ONE Patroni YAML file (written once by :meth:`MixedCluster.prepare`) that both agents
read: ``start_as(name, "patroni")`` runs ``patroni <file>`` from Patroni's own virtualenv
(``PGHA_PATRONI_VENV``, default ``/opt/pgha/patroni-venv``), ``start_as(name, "pgha")`` runs
``pgha run <file>`` from this checkout. Both agents log into the member's log file, each
start preceded by a banner line naming the agent, so :func:`tests.support.cluster.dump_logs`
shows the whole history of a node. Data directories, sockets and logs live under the
cluster's base directory; ports are free ports; the DCS is the caller's etcd (v3 API, the
``etcd3:`` section). Every process is stopped by ``stop_all()`` / leaving the ``with`` block,
as for a LocalCluster.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pgha.cli.localcluster import LocalCluster, MemberProc
from tests.support.cluster import PG_BIN, SRC

PATRONI_VENV = Path(os.environ.get("PGHA_PATRONI_VENV", "/opt/pgha/patroni-venv"))
PATRONI = PATRONI_VENV / "bin" / "patroni"
PATRONICTL = PATRONI_VENV / "bin" / "patronictl"

Kind = Literal["patroni", "pgha"]


def patroni_available() -> bool:
    return os.access(PATRONI, os.X_OK) and os.access(PATRONICTL, os.X_OK)


def patroni_env() -> dict[str, str]:
    """The environment for Patroni's processes: ours without PYTHONPATH (Patroni runs from its
    own virtualenv) and without any PATRONI_*/PGHA_* override."""
    return {k: v for k, v in os.environ.items()
            if k != "PYTHONPATH" and not k.startswith(("PATRONI", "PGHA_"))}


@dataclass
class MixedCluster(LocalCluster):
    """``kinds[name]`` is the agent currently (or last) run for member ``name``; members start
    as Patroni. ``etcd_hosts`` is the DCS (``host:port`` list) written into every file."""

    etcd_hosts: list[str] = field(default_factory=list)
    kinds: dict[str, Kind] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.dcs_section = {"etcd3": {"hosts": list(self.etcd_hosts)}}
        self.bin_dir = str(PG_BIN)
        pythonpath = os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH")) if p)
        self.env = {"PYTHONPATH": pythonpath}

    def member_config(self, m: MemberProc) -> dict[str, Any]:
        """A plain Patroni 4.1 configuration: what a Patroni user has on the node today. The
        socket directory is the member's folder (the test clients connect there)."""
        cfg = super().member_config(m)
        boot = cfg["bootstrap"]
        cfg["postgresql"]["pg_hba"] = boot.pop("pg_hba")
        cfg["postgresql"]["use_unix_socket"] = True
        cfg["log"] = {"level": "INFO"}
        return cfg

    def start(self, name: str) -> MemberProc:
        return self.start_as(name, self.kinds.get(name, "patroni"))

    def start_as(self, name: str, kind: Kind) -> MemberProc:
        """Start member ``name``'s agent of ``kind`` on its configuration file (no-op while an
        agent runs)."""
        m = self.procs[name]
        if m.alive:
            return m
        self.kinds[name] = kind
        if kind == "patroni":
            args = [str(PATRONI), str(m.config_path)]
            env = patroni_env()
        else:
            args = [self.python, "-m", self.agent_module, "run", str(m.config_path)]
            env = {**os.environ, **self.env}
        env["PYTHONUNBUFFERED"] = "1"
        with open(m.log_path, "ab") as log:
            log.write(f"===== {time.strftime('%H:%M:%S')} {kind} starts =====\n".encode())
            log.flush()
            m.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env,
                                      start_new_session=True)
        return m

    def kill_agent_only(self, name: str) -> int | None:
        """SIGKILL the agent and leave PostgreSQL running (an operator who stops the Patroni
        service with ``KillMode=process``); returns the postmaster's pid."""
        self.kill_agent(name)
        return self.procs[name].postmaster_pid()

    def replace(self, name: str, kind: Kind, keep_postgres: bool = False) -> MemberProc:
        """Stop member ``name``'s agent -- SIGTERM (the agent stops PostgreSQL) or, with
        ``keep_postgres``, SIGKILL of the agent alone -- and start an agent of ``kind`` on the
        same data directory and the same configuration file."""
        if keep_postgres:
            self.kill_agent_only(name)
        else:
            self.stop(name)
        return self.start_as(name, kind)

    def stop_all(self) -> None:
        """As LocalCluster's, plus a last SIGKILL to every process group that is left."""
        procs = [m.proc for m in self.procs.values() if m.proc is not None]
        super().stop_all()
        for proc in procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)


def write_ctl_config(path: Path, etcd_hosts: list[str]) -> Path:
    """A patronictl configuration holding only the DCS section (pgha's operator commands read
    it as well)."""
    path.write_text(json.dumps({"etcd3": {"hosts": etcd_hosts}}))
    return path


def patronictl(config: Path, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """``patronictl -c CONFIG ARGS`` (Patroni's own ctl)."""
    return subprocess.run([str(PATRONICTL), "-c", str(config), *args], capture_output=True,
                          text=True, timeout=timeout, check=False, env=patroni_env())


def pgha_cli(config: Path, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """``pgha -c CONFIG ARGS`` from this checkout."""
    pythonpath = os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, "-m", "pgha.cli.main", "-c", str(config), *args],
                          capture_output=True, text=True, timeout=timeout, check=False,
                          env={**os.environ, "PYTHONPATH": pythonpath})


def listing(result: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    """``list -f json`` output (either ctl) by member name."""
    assert result.returncode == 0, result.stdout + result.stderr
    rows = json.loads(result.stdout)
    assert isinstance(rows, list)
    return {str(r["Member"]): r for r in rows}


def dynamic_defaults() -> Mapping[str, Any]:
    """Timings Patroni accepts (ttl >= 20, retry_timeout >= 3) and that keep tests short."""
    return {"ttl": 20, "loop_wait": 2, "retry_timeout": 3}
