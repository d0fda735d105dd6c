"""A network namespace an unprivileged test can change addresses in.

:class:`NetNS` starts ``unshare -rn sleep infinity`` (a new user namespace mapping the caller
to root, and a new network namespace owned by it) and enters it with
``nsenter --preserve-credentials -U -n -t <pid>``: commands run that way have CAP_NET_ADMIN
there and nowhere else. Processes of the test itself stay in the machine's namespaces. The
namespace (with every interface and address in it) goes away when the holder and everything
started in it are gone; ``close()`` kills the holder.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from types import TracebackType
from typing import Self

UNSHARE = shutil.which("unshare") or "/usr/bin/unshare"
NSENTER = shutil.which("nsenter") or "/usr/bin/nsenter"
IP = shutil.which("ip") or "/usr/sbin/ip"


class NetNS:
    """``prefix`` runs a command inside; ``ip(...)`` runs ``ip`` there and returns its output
    (CalledProcessError on failure)."""

    def __init__(self) -> None:
        self.holder: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def open(self) -> None:
        self.holder = subprocess.Popen([UNSHARE, "-rn", "sleep", "infinity"],
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        mine = os.readlink("/proc/self/ns/net")
        deadline = time.monotonic() + 10
        while True:
            try:
                # unshare execs sleep once both namespaces exist and the uid map is written
                if (os.readlink(f"/proc/{self.holder.pid}/ns/net") != mine
                        and os.readlink(f"/proc/{self.holder.pid}/exe").endswith("sleep")):
                    break
            except OSError:
                pass
            if self.holder.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError("unshare -rn did not create a namespace (user namespaces "
                                   "disabled for unprivileged users?)")
            time.sleep(0.02)
        self.ip("link", "set", "lo", "up")

    def close(self) -> None:
        if self.holder is None:
            return
        if self.holder.poll() is None:
            self.holder.send_signal(signal.SIGKILL)
        self.holder.wait(10)
        self.holder = None

    @property
    def prefix(self) -> list[str]:
        """The command line that runs the rest of it inside the namespace."""
        assert self.holder is not None, "namespace not open"
        return [NSENTER, "--preserve-credentials", "-U", "-n", "-t", str(self.holder.pid)]

    def ip(self, *args: str) -> str:
        return subprocess.run([*self.prefix, IP, *args], capture_output=True, text=True,
                              timeout=10, check=True).stdout

    def add_interface(self, name: str, address: str | None = None) -> None:
        """A bridge with no ports, up, with ``address`` (ADDR/PREFIX) when given: the one kind
        of device an unprivileged namespace can create without kernel modules loaded (dummy
        and veth need theirs)."""
        self.ip("link", "add", name, "type", "bridge")
        self.ip("link", "set", name, "up")
        if address is not None:
            self.ip("addr", "add", address, "dev", name)

    def holders(self, address: str) -> set[str]:
        """The interfaces that carry ``address`` (no prefix length)."""
        out = self.ip("-o", "addr", "show", "to", address)
        return {line.split()[1] for line in out.splitlines() if line.strip()}
