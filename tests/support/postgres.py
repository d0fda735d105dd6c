"""One throwaway PostgreSQL server for tests (no agent): ``initdb`` with password
(scram-sha-256) authentication for the superuser, started with ``pg_ctl`` on a free loopback
port and a private socket directory, stopped (``-m immediate``) on ``close()``, on leaving the
``with`` block, and at interpreter exit. PostgreSQL refuses to run as root: run the tests as
an unprivileged user (see DESIGN.md section 3)."""

from __future__ import annotations

import atexit
import os
import subprocess
from pathlib import Path
from types import TracebackType
from typing import Self

from pgha.config import default_bin_dir
from tests.support.etcd import free_port


def postgres_available() -> bool:
    return os.access(Path(default_bin_dir()) / "initdb", os.X_OK) and os.geteuid() != 0


class LocalPostgres:
    def __init__(self, base: Path, user: str = "postgres", password: str = "secret") -> None:
        self.bin = Path(default_bin_dir())
        self.data = base / "data"
        self.sockets = base / "sockets"
        self.user = user
        self.password = password
        self.port = free_port()
        self._started = False

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def start(self) -> None:
        self.sockets.mkdir(parents=True, exist_ok=True)
        pwfile = self.data.parent / "pwfile"
        pwfile.write_text(self.password + "\n")
        subprocess.run([str(self.bin / "initdb"), "-D", str(self.data), "-U", self.user,
                        "--pwfile", str(pwfile), "--auth", "scram-sha-256", "-E", "UTF8",
                        "--no-sync"], check=True, capture_output=True, timeout=120)
        atexit.register(self.close)
        self._started = True
        options = f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options,
                        "-l", str(self.data.parent / "postgres.log"), "-w", "-t", "60",
                        "start"], check=True, capture_output=True, timeout=90)

    def close(self) -> None:
        if not self._started:
            return
        self._started = False
        subprocess.run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                        "-w", "-t", "30", "stop"], check=False, capture_output=True, timeout=60)
