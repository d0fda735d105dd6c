"""The example VIP callback (configs/callbacks/vip.sh) run by dash against fake ip/arping."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "configs" / "callbacks" / "vip.sh"
DASH = shutil.which("dash") or "/bin/sh"

FAKE_IP = """#!/bin/sh
# fake `ip`: addresses of one device kept in $FAKE_STATE, changes logged to $FAKE_LOG
case "$1 $2" in
    "-o addr") [ -f "$FAKE_STATE" ] || exit 0
               while read -r a; do echo "2: eth1  inet $a scope global"; done < "$FAKE_STATE" ;;
    "addr add") echo "$3" >> "$FAKE_STATE"; echo "ip add $3 $5" >> "$FAKE_LOG" ;;
    "addr del") grep -vxF "$3" "$FAKE_STATE" > "$FAKE_STATE.new"; mv "$FAKE_STATE.new" "$FAKE_STATE"
                echo "ip del $3 $5" >> "$FAKE_LOG" ;;
    *) echo "fake ip: unexpected $*" >&2; exit 9 ;;
esac
"""
FAKE_ARPING = """#!/bin/sh
echo "arping $*" >> "$FAKE_LOG"
"""


@pytest.fixture
def fake(tmp_path: Path) -> dict[str, str]:
    for name, body in (("ip", FAKE_IP), ("arping", FAKE_ARPING)):
        (tmp_path / name).write_text(body)
        (tmp_path / name).chmod(0o755)
    return {"PATH": "/usr/bin:/bin", "FAKE_STATE": str(tmp_path / "state"),
            "FAKE_LOG": str(tmp_path / "log"), "PGHA_VIP_IP_CMD": str(tmp_path / "ip"),
            "PGHA_VIP_ARPING": str(tmp_path / "arping"), "PGHA_VIP_IFACE": "eth1"}


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DASH, str(SCRIPT), *args], env=env, capture_output=True, text=True,
                          timeout=30, check=False)


def log(env: dict[str, str]) -> list[str]:
    path = Path(env["FAKE_LOG"])
    return path.read_text().splitlines() if path.exists() else []


def test_primary_gets_the_vip_once_and_others_drop_it(fake: dict[str, str]) -> None:
    vip = "--vip=10.9.8.7/24"
    assert run(fake, vip, "on_role_change", "primary", "batman").returncode == 0
    assert log(fake) == ["ip add 10.9.8.7/24 eth1", "arping -q -U -c 3 -I eth1 10.9.8.7"]
    again = run(fake, vip, "on_start", "primary", "batman")
    assert again.returncode == 0 and "already on eth1" in again.stdout
    assert len(log(fake)) == 2  # idempotent
    assert run(fake, vip, "on_role_change", "demoted", "batman").returncode == 0
    assert log(fake)[-1] == "ip del 10.9.8.7/24 eth1"
    assert run(fake, vip, "on_stop", "replica", "batman").returncode == 0
    assert len(log(fake)) == 3  # nothing to remove


def test_on_stop_of_primary_removes_it_and_env_configures(fake: dict[str, str]) -> None:
    env = {**fake, "PGHA_VIP": "10.1.1.1", "PGHA_VIP_ARPING": ""}
    assert run(env, "on_restart", "primary", "s").returncode == 0
    assert log(env) == ["ip add 10.1.1.1/32 eth1"]  # no prefix: /32; arping disabled
    assert run(env, "on_stop", "primary", "s").returncode == 0
    assert log(env)[-1] == "ip del 10.1.1.1/32 eth1"


def test_bad_usage(fake: dict[str, str]) -> None:
    assert run(fake, "on_start", "primary", "s").returncode == 2  # no VIP
    assert run(fake, "--vip=10.0.0.1/24", "on_start", "primary").returncode == 2
    assert run(fake, "--nope", "on_start", "primary", "s").returncode == 2
    assert run(fake, "--vip=10.0.0.1/24", "on_bogus", "primary", "s").returncode == 2
    assert log(fake) == []
