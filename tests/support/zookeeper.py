"""Real ZooKeeper servers (Debian ``zookeeper`` 3.8 jars + a JRE) for tests: one standalone
server (:class:`ZooKeeperServer`) or a three-server ensemble (:class:`ZooKeeperEnsemble`).

:class:`ZooKeeperServer` runs ``java ... org.apache.zookeeper.server.ZooKeeperServerMain`` on
127.0.0.1 with a free client port, its own temporary directory (``zoo.cfg``, ``data/``, log
file) and nothing from ``/etc/zookeeper`` or ``/var/lib/zookeeper``, so it runs as root and as
an unprivileged user alike. Given ``myid`` and ``servers`` (the ensemble's ``server.N`` lines)
it runs ``QuorumPeerMain`` as one member of an ensemble instead.

``tickTime`` is 250 ms and the session timeout range is set explicitly (0.5 s .. 60 s) so
tests can use session timeouts of a second or two (an ensemble adds ``initLimit`` 10 s,
``syncLimit`` 2 s and quick leader elections); the admin HTTP server is off; the four-letter
words ``ruok``, ``srvr``, ``stat``, ``conf``, ``mntr`` and ``cons`` are allowed (readiness
uses ``srvr``: an ensemble member serves only while it is part of a quorum).

``stop()`` is SIGTERM (SIGKILL after a grace period), ``kill()`` SIGKILL, ``start()`` again
reuses the same port and data (sessions survive a restart as far as ZooKeeper allows),
``close()`` stops it and removes the directory. The process is also stopped at interpreter
exit (atexit).

With ``tls=(keystore, truststore)`` (PEM files: the server's unencrypted PKCS#8 key with its
certificate chain, and the CA certificates clients must be signed by) it also serves TLS on
``secure_port`` (Netty connection factory, client certificates required; x509 ids are the
client certificate's subject as Java spells it).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from pgha.cli.localcluster import free_port
from tests.support.managed import ManagedServer

JAVA_DIR = Path(os.environ.get("PGHA_TEST_JAVA_DIR", "/usr/share/java"))
# zookeeper.jar's manifest names its dependencies (jute, netty, slf4j-api, ...) by absolute
# path; slf4j-simple is the logging backend (to the log file, via stderr).
CLASSPATH_JARS = ("zookeeper.jar", "zookeeper-jute.jar", "slf4j-simple.jar")
TLS_JARS = ("netty-codec.jar",)  # the Netty factory needs it; not in zookeeper.jar's manifest
TICK_MS = 250
MIN_SESSION_MS = 2 * TICK_MS
MAX_SESSION_MS = 60_000




def java_bin() -> str | None:
    return os.environ.get("PGHA_TEST_JAVA") or shutil.which("java")


def zookeeper_unavailable(tls: bool = False) -> str | None:
    """None when a ZooKeeper server (``tls``: with TLS) can be started here, else the reason."""
    if java_bin() is None:
        return "java is not installed (the Debian zookeeper package needs a JRE)"
    for jar in CLASSPATH_JARS[:2] + (TLS_JARS if tls else ()):
        if not (JAVA_DIR / jar).is_file():
            return f"{JAVA_DIR / jar} is missing (install the Debian zookeeper package)"
    return None


def four_letter(port: int, word: bytes, timeout: float = 1.0) -> bytes:
    """Send a four-letter command to the server; b"" when it cannot be reached."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(word)
            chunks = []
            while True:
                data = sock.recv(4096)
                if not data:
                    break
                chunks.append(data)
            return b"".join(chunks)
    except OSError:
        return b""


class ZooKeeperServer(ManagedServer):
    """One ZooKeeper server on loopback (see the module docstring): standalone, or, with
    ``myid`` and ``servers`` (``{myid: "127.0.0.1:<quorum port>:<election port>"}``, every
    member of the ensemble, this one included), one member of an ensemble. ``base_dir``: the
    directory to use (created, and removed by ``close()``); a new temporary one by default."""

    def __init__(self, port: int | None = None, *, myid: int | None = None,
                 servers: dict[int, str] | None = None, base_dir: Path | None = None,
                 tls: tuple[Path, Path] | None = None) -> None:
        if (myid is None) != (servers is None) or (servers is not None and myid not in servers):
            raise ValueError("an ensemble member needs myid and servers naming it")
        self.port = port or free_port()
        self.myid = myid
        self.tls = tls
        self.secure_port = free_port(None, {self.port}) if tls else None
        if base_dir is None:
            base_dir = Path(tempfile.mkdtemp(prefix="pgha-zk-"))
        self.base_dir = base_dir
        self.data_dir = self.base_dir / "data"
        self.conf_dir = self.base_dir / "conf"
        self.log_path = self.base_dir / "zookeeper.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.data_dir.mkdir(parents=True)
        self.conf_dir.mkdir()
        quorum = ""
        if servers is not None:
            (self.data_dir / "myid").write_text(f"{myid}\n")
            # initLimit/syncLimit in ticks; peers on loopback see each other's death at once
            quorum = "initLimit=40\nsyncLimit=8\n" + "".join(
                f"server.{sid}={addr}\n" for sid, addr in sorted(servers.items()))
        (self.conf_dir / "zoo.cfg").write_text(
            f"tickTime={TICK_MS}\n"
            f"dataDir={self.data_dir}\n"
            f"clientPort={self.port}\n"
            "clientPortAddress=127.0.0.1\n"
            f"minSessionTimeout={MIN_SESSION_MS}\n"
            f"maxSessionTimeout={MAX_SESSION_MS}\n"
            "maxClientCnxns=0\n"
            "admin.enableServer=false\n"
            "4lw.commands.whitelist=ruok,srvr,stat,conf,mntr,cons\n"
            "autopurge.purgeInterval=0\n"
            + quorum
            + ("" if tls is None else
               f"secureClientPort={self.secure_port}\n"
               "secureClientPortAddress=127.0.0.1\n"
               "serverCnxnFactory=org.apache.zookeeper.server.NettyServerCnxnFactory\n"
               f"ssl.keyStore.location={tls[0]}\nssl.keyStore.type=PEM\n"
               f"ssl.trustStore.location={tls[1]}\nssl.trustStore.type=PEM\n"
               "ssl.clientAuth=need\n")
        )
        atexit.register(self.close)

    @property
    def hosts(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", self.port)]

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def spawn(self) -> None:
        """Start the JVM without waiting for it to serve (no-op while running)."""
        if self.running:
            return
        java = java_bin()
        if java is None:
            raise RuntimeError("java is not installed")
        jars = CLASSPATH_JARS + (TLS_JARS if self.tls else ())
        classpath = ":".join([str(self.conf_dir), *(str(JAVA_DIR / j) for j in jars)])
        args = [
            java,
            "-Xmx256m", "-XX:+UseSerialGC", "-XX:-UsePerfData", "-Xshare:auto",
            "-Djava.awt.headless=true",
            f"-Dzookeeper.log.dir={self.base_dir}",
            "-Dzookeeper.admin.enableServer=false",
            "-Dzookeeper.jmx.log4j.disable=true",
            "-Dorg.slf4j.simpleLogger.defaultLogLevel=info",
            # ensemble: quick leader elections (election connections on loopback, notification
            # back-off capped at 1 s so a restarted peer is noticed at once)
            "-Dzookeeper.cnxTimeout=1000",
            "-Dzookeeper.fastleader.maxNotificationInterval=1000",
            "-Dorg.slf4j.simpleLogger.showDateTime=true",
            f"-Djava.io.tmpdir={self.base_dir}",
            f"-Duser.home={self.base_dir}",
            "-cp", classpath,
            "org.apache.zookeeper.server.ZooKeeperServerMain" if self.myid is None
            else "org.apache.zookeeper.server.quorum.QuorumPeerMain",
            str(self.conf_dir / "zoo.cfg"),
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("ZOO", "JVMFLAGS", "CLIENT_JVMFLAGS", "SERVER_JVMFLAGS"))}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=env, cwd=self.base_dir,
            )

    def serving(self) -> bool:
        """It answers client requests (an ensemble member: it is in a quorum)."""
        return b"Zookeeper version" in four_letter(self.port, b"srvr")

    def mode(self) -> str | None:
        """``standalone``, ``leader`` or ``follower`` while serving, else None."""
        for line in four_letter(self.port, b"srvr").decode(errors="replace").splitlines():
            if line.startswith("Mode:"):
                return line.split(":", 1)[1].strip()
        return None

    def _check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(
                f"zookeeper exited ({self.proc.returncode}):\n{self.log_tail()}"
            )

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.serving():
            self._check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"zookeeper not serving after {timeout}s:\n{self.log_tail()}")
            time.sleep(0.1)

    def start(self, wait: bool = True) -> None:
        self.spawn()
        if wait:
            self.wait_ready()

    async def astart(self, wait: bool = True) -> None:
        """``start()`` without blocking the event loop."""
        await asyncio.to_thread(self.start, wait)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM and wait; SIGKILL if it does not exit within ``timeout``."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.proc = None

    async def astop(self, timeout: float = 10.0) -> None:
        """``stop()`` without blocking the event loop."""
        await asyncio.to_thread(self.stop, timeout)

    def kill(self) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        self.proc = None

    def close(self) -> None:
        """Stop the process and remove the temporary directory (idempotent)."""
        try:
            self.kill()
        finally:
            shutil.rmtree(self.base_dir, ignore_errors=True)
            atexit.unregister(self.close)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""



def _distinct_free_ports(count: int) -> list[int]:
    """``count`` different free TCP ports on 127.0.0.1 (:func:`free_port`)."""
    taken: set[int] = set()
    return [free_port(None, taken) for _ in range(count)]


def client_ports(pid: int) -> set[int]:
    """Local ports of the ESTABLISHED IPv4 TCP connections of process ``pid`` (from /proc;
    empty when the process is gone or not ours to inspect)."""
    try:
        inodes = set()
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                link = os.readlink(fd)
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
        table = Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return set()
    ports = set()
    for line in table:
        fields = line.split()
        if len(fields) > 9 and fields[3] == "01" and fields[9] in inodes:
            ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


class ZooKeeperEnsemble(ManagedServer):
    """``n`` ZooKeeper servers forming one ensemble on loopback (free client, quorum and
    election ports; ``myid`` 1..n), sharing one temporary directory. ``members[i]`` is a
    :class:`ZooKeeperServer` (``kill()``, ``stop()``, ``start(wait=...)``; a restarted member
    rejoins with its data). ``start()`` waits until every member serves (a quorum formed)."""

    def __init__(self, n: int = 3) -> None:
        self.base_dir = Path(tempfile.mkdtemp(prefix="pgha-zk-ensemble-"))
        ports = _distinct_free_ports(3 * n)
        servers = {sid: f"127.0.0.1:{ports[3 * i + 1]}:{ports[3 * i + 2]}"
                   for i, sid in enumerate(range(1, n + 1))}
        self.members = [
            ZooKeeperServer(ports[3 * i], myid=sid, servers=servers,
                            base_dir=self.base_dir / f"zk{sid}")
            for i, sid in enumerate(servers)
        ]
        atexit.register(self.close)

    @property
    def hosts(self) -> list[tuple[str, int]]:
        return [h for m in self.members for h in m.hosts]

    def leader(self) -> int | None:
        """Index of the member that is the ensemble's leader now, None without a quorum."""
        modes = [m.mode() if m.running else None for m in self.members]
        return modes.index("leader") if "leader" in modes else None

    def clients(self, index: int) -> set[int]:
        """Client-side ports of the sessions connected to ``members[index]`` (``cons``)."""
        text = four_letter(self.members[index].port, b"cons").decode(errors="replace")
        return {int(m) for m in re.findall(r"^\s*/127\.0\.0\.1:(\d+)\[", text, re.MULTILINE)}

    def server_of(self, pid: int) -> int | None:
        """Index of the member process ``pid`` holds a client connection to (its local ports
        matched against every member's ``cons``), None when it has none right now."""
        ports = client_ports(pid)
        for i, m in enumerate(self.members):
            if m.running and self.clients(i) & ports:
                return i
        return None

    def start(self, timeout: float = 60.0) -> None:
        for m in self.members:
            m.spawn()
        for m in self.members:
            m.wait_ready(timeout)

    async def astart(self, timeout: float = 60.0) -> None:
        """``start()`` without blocking the event loop."""
        await asyncio.to_thread(self.start, timeout)

    def close(self) -> None:
        """Stop every member and remove the directory (idempotent)."""
        try:
            for m in self.members:
                m.close()
        finally:
            shutil.rmtree(self.base_dir, ignore_errors=True)
            atexit.unregister(self.close)

