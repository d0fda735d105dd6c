"""Test helpers for Prometheus: a strict reader of the text exposition format (so tests assert
on parsed samples, not on substrings), ``promtool check metrics``, and a real Prometheus server
started on a free port with its own temporary storage."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import yaml

from pgha.cli.localcluster import free_port, wait_tcp

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')

Labels = tuple[tuple[str, str], ...]


@dataclass
class Exposition:
    """Parsed exposition text: HELP and TYPE per family, samples in order."""

    help: dict[str, str] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)

    def values(self, name: str) -> list[tuple[dict[str, str], float]]:
        return [(labels, value) for n, labels, value in self.samples if n == name]

    def value(self, metric: str, /, **labels: str) -> float:
        """The one sample of ``metric`` whose labels include ``labels``."""
        found = [v for lb, v in self.values(metric)
                 if all(lb.get(k) == want for k, want in labels.items())]
        assert len(found) == 1, f"{metric}{labels}: {len(found)} samples"
        return found[0]


def _unescape(value: str) -> str:
    out, i = [], 0
    while i < len(value):
        c = value[i]
        if c == "\\":
            nxt = value[i + 1]
            out.append({"n": "\n", "\\": "\\", '"': '"'}[nxt])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def parse_labels(text: str) -> dict[str, str]:
    body = text[1:-1]
    labels: dict[str, str] = {}
    pos = 0
    while pos < len(body):
        m = _LABEL.match(body, pos)
        assert m is not None, f"bad label set {text!r} at {pos}"
        assert m.group(1) not in labels, f"duplicate label in {text!r}"
        labels[m.group(1)] = _unescape(m.group(2))
        pos = m.end()
    return labels


def parse(text: str) -> Exposition:
    """Parse text format 0.0.4; AssertionError on anything malformed."""
    assert text.endswith("\n"), "exposition must end with a newline"
    out = Exposition()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, doc = line[7:].partition(" ")
            assert name not in out.help, f"second HELP for {name}"
            out.help[name] = doc
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped"), line
            assert name not in out.types, f"second TYPE for {name}"
            out.types[name] = kind
        else:
            m = _SAMPLE.match(line)
            assert m is not None, f"bad sample line {line!r}"
            labels = parse_labels(m.group(2)) if m.group(2) else {}
            out.samples.append((m.group(1), labels, float(m.group(3))))
    return out


# Lint findings promtool reports on purpose: Patroni declares these WAL positions as counters
# without the ``_total`` suffix, and pgha keeps Patroni's names and types for its dashboards.
PATRONI_COUNTER_LINTS = frozenset(
    f'{name} counter metrics should have "_total" suffix'
    for name in ("patroni_xlog_location", "patroni_xlog_received_location",
                 "patroni_xlog_replayed_location"))


def promtool_problems(text: str) -> list[str]:
    """Run ``promtool check metrics`` on ``text``; return its lint findings (empty: clean).
    A parse error (exit code 1) fails the calling test."""
    promtool = shutil.which("promtool")
    assert promtool is not None
    proc = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode in (0, 3), f"promtool failed ({proc.returncode}): {proc.stderr}"
    lines = (proc.stdout + proc.stderr).splitlines()
    return [line.strip() for line in lines if line.strip()]


class PrometheusServer:
    """``/usr/bin/prometheus`` on a free loopback port, scraping ``targets`` (``host:port``)
    every ``interval`` seconds, with its storage in ``base``. Stopped on exit."""

    def __init__(self, base: Path, targets: list[str], interval: float = 1.0) -> None:
        self.base = base
        self.targets = targets
        self.interval = interval
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = base / "prometheus.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Self:
        binary = shutil.which("prometheus")
        assert binary is not None
        self.base.mkdir(parents=True, exist_ok=True)
        interval = f"{int(self.interval * 1000)}ms"
        config = {
            "global": {"scrape_interval": interval, "scrape_timeout": interval,
                       "evaluation_interval": interval},
            "scrape_configs": [{"job_name": "pgha", "metrics_path": "/metrics",
                                "static_configs": [{"targets": self.targets}]}],
        }
        cfg = self.base / "prometheus.yml"
        cfg.write_text(yaml.safe_dump(config))
        self.port = free_port()
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [binary, f"--config.file={cfg}", f"--storage.tsdb.path={self.base / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}",
                 "--log.level=info"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        if not wait_tcp("127.0.0.1", self.port, 30):
            self.__exit__(None, None, None)
            raise RuntimeError(f"prometheus did not listen; log:\n{self.log()}")
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def query(self, promql: str) -> list[dict[str, Any]]:
        """``/api/v1/query`` result vector (empty when nothing matches)."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=5) as resp:
            body = json.loads(resp.read())
        assert body["status"] == "success", body
        result = body["data"]["result"]
        assert isinstance(result, list)
        return result

    def scalar(self, promql: str) -> float | None:
        """The single value of an instant query, None when it returns no series."""
        result = self.query(promql)
        if not result:
            return None
        assert len(result) == 1, result
        return float(result[0]["value"][1])

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"prometheus not ready; log:\n{self.log()}")
