"""The watchdog device (pgha.agent.watchdog) against a fake device at the IO seam, and the
write path against a real file stand-in."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

import pytest
from tests.support.fake_watchdog import FakeDevice

from pgha.agent.watchdog import (
    LeaderWatchdog,
    OsDeviceIO,
    watchdog_timeout,
)
from pgha.config.models import WatchdogConfig


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(mode: str = "automatic", ttl: float = 30.0, margin: float = 5,
         device: str = "/dev/watchdog") -> tuple[LeaderWatchdog, FakeDevice, Clock]:
    fake, clock = FakeDevice(), Clock()
    wd = LeaderWatchdog(WatchdogConfig(mode=mode, device=device, safety_margin=margin),
                        ttl=lambda: ttl, io=fake, clock=clock)
    return wd, fake, clock


def test_timeout_rule() -> None:
    assert watchdog_timeout(30, 5) == 25
    assert watchdog_timeout(21, -1) == 10  # -1: ttl / 2
    assert watchdog_timeout(20.5, 5) == 15


def test_arm_feed_and_magic_close() -> None:
    wd, fake, clock = make()
    wd.follow(True)
    assert fake.calls[:3] == [("open", 0), ("settimeout", 25), ("keepalive", 0)]
    assert wd.state == "armed" and wd.timeout == 25
    wd.follow(True)  # already armed, same ttl: nothing
    wd.keepalive(clock.now - 1.0)  # a keep-alive sent 1 s ago: fed
    wd.keepalive(clock.now - 5.0)  # sent 5 s ago (>= ttl - timeout): the key may expire first
    assert fake.names().count("keepalive") == 2
    wd.follow(False)
    assert fake.names()[-2:] == ["write-V", "close"] and not fake.open_fds
    assert wd.state == "disarmed"
    wd.keepalive(clock.now)  # not armed: nothing
    assert fake.names().count("keepalive") == 2


def test_ttl_change_sets_the_timeout_again() -> None:
    ttl = [30.0]
    fake = FakeDevice()
    wd = LeaderWatchdog(WatchdogConfig(mode="required"), ttl=lambda: ttl[0], io=fake)
    wd.arm()
    ttl[0] = 20.0
    wd.follow(True)
    assert [c for c in fake.calls if c[0] == "settimeout"] == [("settimeout", 25),
                                                               ("settimeout", 15)]


def test_off_never_touches_the_device() -> None:
    wd, fake, _ = make(mode="off")
    assert wd.arm() and wd.usable()
    wd.follow(True)
    wd.keepalive(0)
    wd.disarm()
    assert fake.calls == [] and wd.state == "off"


def test_required_open_failure_refuses_with_backoff(caplog: pytest.LogCaptureFixture) -> None:
    wd, fake, clock = make(mode="required")
    fake.fail_open = OSError(errno.ENOENT, "No such file or directory")
    assert wd.arm() is False and wd.state == "failed"
    assert wd.usable() is False  # in backoff
    assert wd.arm() is False  # not retried inside the backoff
    clock.now += 1.5
    assert wd.arm() is False  # retried once, backoff doubles
    clock.now += 1.5
    assert wd.arm() is False  # still inside the 2 s backoff
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "refusing the leader lock" in warnings[0].message
    fake.fail_open = None
    clock.now += 10
    assert wd.arm() is True and wd.state == "armed" and wd.usable()


def test_automatic_open_failure_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    wd, fake, _ = make(mode="automatic")
    fake.fail_open = OSError(errno.EACCES, "Permission denied")
    assert wd.arm() is True and wd.usable() is True and wd.state == "failed"
    assert "going on without it" in caplog.text


def test_required_usable_needs_a_writable_device(tmp_path: Path) -> None:
    wd, _, _ = make(mode="required", device=str(tmp_path / "missing"))
    assert wd.usable() is False
    (tmp_path / "dev").write_bytes(b"")
    wd, _, _ = make(mode="required", device=str(tmp_path / "dev"))
    assert wd.usable() is True
    wd, _, _ = make(mode="required", device=str(tmp_path / "dev"), ttl=5, margin=5)
    assert wd.usable() is False  # timeout 0 s makes no sense


def test_driver_taking_a_zero_timeout_is_a_failure() -> None:
    wd, fake, _ = make(mode="required")
    fake.timeout_cap = 0
    assert wd.arm() is False and fake.names()[-2:] == ["write-V", "close"]


def test_stand_in_file_is_fed_by_writes(tmp_path: Path) -> None:
    """A regular file refuses the watchdog ioctls (ENOTTY): it is fed by writes and closed
    with the magic 'V', through the real system calls."""
    dev = tmp_path / "watchdog"
    dev.write_bytes(b"")
    wd = LeaderWatchdog(WatchdogConfig(mode="required", device=str(dev)), ttl=lambda: 30.0,
                        io=OsDeviceIO())
    assert wd.arm() is True and wd.by_write
    wd.keepalive(wd.clock())
    wd.disarm()
    assert dev.read_bytes() == b"11V"


def test_fifo_without_reader_does_not_block(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    wd = LeaderWatchdog(WatchdogConfig(mode="automatic", device=str(fifo)), ttl=lambda: 30.0)
    assert wd.arm() is True and wd.state == "failed"  # ENXIO at once, no hang


@pytest.mark.parametrize(("ttl", "margin", "advice"), [
    (10.0, 5, 2),  # fires 5 s after a renewal; pgha itself demotes 7.5 s after it
    (10.0, 2.5, 2),  # whole seconds: 7 s, still before 7.5 s
    (10.0, 2, None),
    (30.0, 5, None),  # 25 s: the same point as pgha's own deadline
    (30.0, -1, 5),  # ttl / 2
])
def test_timeout_before_the_agents_own_deadline_is_warned(
        caplog: pytest.LogCaptureFixture, ttl: float, margin: float, advice: int | None) -> None:
    wd, _, _ = make(ttl=ttl, margin=margin)
    with caplog.at_level(logging.WARNING, logger="pgha.agent"):
        wd.follow(True)
    assert wd.armed
    if advice is None:
        assert "a DCS outage" not in caplog.text
    else:
        assert "a DCS outage longer than" in caplog.text
        assert f"set watchdog.safety_margin to {advice} or less" in caplog.text
