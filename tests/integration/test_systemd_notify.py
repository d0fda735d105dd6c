"""End to end: a real agent started the way systemd starts a ``Type=notify`` unit with
``WatchdogSec`` (NOTIFY_SOCKET and WATCHDOG_USEC in its environment) notifies a test socket:
READY=1 once its member key exists, STATUS lines, WATCHDOG=1 pings that keep coming,
STOPPING=1 on SIGTERM; the postmaster it starts has none of the variables.

No timing is asserted; waits only bound how long the test may take.
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import tempfile
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.cluster import dump_logs, new_cluster, primary_of, wait_until

pytestmark = pytest.mark.integration


def member_key_exists(etcd_endpoint: str, name: str) -> bool:
    """Whether ``/service/demo/members/<name>`` is in etcd (its v3 JSON gateway)."""
    key = base64.b64encode(f"/service/demo/members/{name}".encode()).decode()
    req = urllib.request.Request(f"http://{etcd_endpoint}/v3/kv/range",
                                 data=json.dumps({"key": key}).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=5) as resp:
        return int(json.loads(resp.read()).get("count", 0)) > 0


class Receiver:
    """A datagram socket collecting notifications; on READY=1 it asks etcd whether the
    member key exists at that moment."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.2)
        self.messages: list[str] = []
        self.key_at_ready: bool | None = None
        self.etcd: str | None = None
        self.done = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.done:
            try:
                text = self.sock.recv(4096).decode()
            except TimeoutError:
                continue
            self.messages.append(text)
            if text == "READY=1" and self.etcd is not None:
                self.key_at_ready = member_key_exists(self.etcd, "pg1")

    def count(self, message: str) -> int:
        return sum(1 for m in list(self.messages) if m == message)

    def close(self) -> None:
        self.done = True
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="pgha-sd-", dir="/tmp"))  # AF_UNIX paths are short
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_agent_notifies_systemd(tmp_path: Path, short_dir: Path) -> None:
    receiver = Receiver(str(short_dir / "notify"))
    cluster = new_cluster(tmp_path / "c", members=1)
    try:
        with cluster:
            m = cluster.procs["pg1"]
            assert cluster.etcd is not None
            receiver.etcd = cluster.etcd.endpoint
            cluster.env = {**cluster.env, "NOTIFY_SOCKET": str(short_dir / "notify"),
                           "WATCHDOG_USEC": "1000000"}  # a ping every 0.5 s
            cluster.start("pg1")
            try:
                wait_until(lambda: receiver.count("READY=1") > 0, 120, "READY=1")
                wait_until(lambda: primary_of(cluster), 60, "pg1 running as primary")
                wait_until(lambda: "STATUS=leader, running" in receiver.messages, 30,
                           "STATUS=leader, running")
                pings = receiver.count("WATCHDOG=1")
                wait_until(lambda: receiver.count("WATCHDOG=1") >= pings + 4, 30,
                           "WATCHDOG=1 pings keep coming")
                pid = m.postmaster_pid()
                assert pid is not None
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                names = {e.split(b"=", 1)[0] for e in environ if e}
                assert b"PGDATA" in names or b"PATH" in names  # we did read its environment
                assert not names & {b"NOTIFY_SOCKET", b"WATCHDOG_USEC", b"WATCHDOG_PID"}
                cluster.stop("pg1")
            except Exception:
                dump_logs(cluster)
                raise
    finally:
        receiver.close()
    msgs = receiver.messages
    assert receiver.count("READY=1") == 1
    assert receiver.key_at_ready is True
    assert msgs.index("READY=1") < msgs.index("STATUS=leader, running")
    assert receiver.count("STOPPING=1") == 1
    assert msgs.index("STOPPING=1") > msgs.index("STATUS=leader, running")
    assert all(m.startswith(("READY=1", "STATUS=", "WATCHDOG=1", "STOPPING=1")) for m in msgs)
