"""A watchdog device stand-in at :class:`pgha.agent.watchdog.DeviceIO`'s seam: it records
every call and keeps the timeout a driver would."""

from __future__ import annotations

from pgha.agent.watchdog import WDIOC_GETTIMEOUT, WDIOC_KEEPALIVE, WDIOC_SETTIMEOUT


class FakeDevice:
    """Records every call; ``fail_open`` makes opens fail; ``timeout_cap`` mimics a driver
    that takes a shorter timeout than asked."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self.fail_open: OSError | None = None
        self.timeout = 60
        self.timeout_cap: int | None = None
        self.open_fds: set[int] = set()

    def open(self, path: str) -> int:
        if self.fail_open is not None:
            raise self.fail_open
        fd = 100 + len(self.calls)
        self.open_fds.add(fd)
        self.calls.append(("open", 0))
        return fd

    def ioctl(self, fd: int, request: int, arg: int) -> int:
        assert fd in self.open_fds
        if request == WDIOC_SETTIMEOUT:
            self.timeout = arg if self.timeout_cap is None else min(arg, self.timeout_cap)
            self.calls.append(("settimeout", arg))
            return self.timeout
        if request == WDIOC_GETTIMEOUT:
            return self.timeout
        assert request == WDIOC_KEEPALIVE
        self.calls.append(("keepalive", 0))
        return 0

    def write(self, fd: int, data: bytes) -> None:
        assert fd in self.open_fds
        self.calls.append(("write-" + data.decode(), 0))

    def close(self, fd: int) -> None:
        self.open_fds.remove(fd)
        self.calls.append(("close", 0))

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]
