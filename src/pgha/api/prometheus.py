"""A small Prometheus metrics registry: counters, gauges and histograms with labels, rendered in
the Prometheus text exposition format 0.0.4.

Why not ``prometheus_client``: pgha needs three metric types, labels and the text format; the
library brings a process-global default registry, locks for threads pgha does not have, and its
own HTTP server, none of which the agent (one asyncio event loop, aiohttp already serving the
REST API) wants. This module is the part pgha uses, in one file, with no dependency.

Contracts:

* Not thread-safe: every update and every render happens on the agent's event loop.
* Updating a metric is O(1) (a histogram observation is O(number of buckets)); rendering is
  O(series) and does no IO, so ``GET /metrics`` is cheap to scrape every few seconds.
* Names and label names are validated when a metric is created (ValueError); label values are
  any text and are escaped on output (``\\``, ``"`` and newlines).
* Every family is rendered with ``# HELP`` and ``# TYPE`` lines, even before its first update:
  unlabelled counters and gauges show 0, labelled families show the label sets created so far
  (create them up front with :meth:`Family.labels` to expose zeros).
* ``const_labels`` passed to :meth:`Registry.render` (pgha passes ``scope`` and ``name``) come
  first on every sample, before the metric's own labels.
"""

from __future__ import annotations

import bisect
import itertools
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Generic, TypeVar

_NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

#: Default histogram buckets in seconds, from 1 ms to 60 s.
DEFAULT_BUCKETS: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                      1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def escape_label_value(value: str) -> str:
    """Escape a label value for the text format: backslash, double quote, line feed."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    """Escape a HELP text: backslash and line feed (quotes stay as they are)."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    """A sample value: integers without a fraction (exact even beyond 2**53, as WAL positions
    can be), floats in Python's shortest round-trip form, and ``+Inf``/``-Inf``/``NaN``."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


def format_labels(pairs: Iterable[tuple[str, str]]) -> str:
    """``{a="x",b="y"}`` with escaped values, or the empty string for no labels."""
    body = ",".join(f'{k}="{escape_label_value(v)}"' for k, v in pairs)
    return f"{{{body}}}" if body else ""


def _check_name(name: str) -> None:
    if not _NAME_RE.match(name):
        raise ValueError(f"invalid metric name {name!r}")


def _check_label_names(names: Sequence[str], reserved: Sequence[str] = ()) -> None:
    for label in names:
        if not _LABEL_RE.match(label) or label.startswith("__") or label in reserved:
            raise ValueError(f"invalid label name {label!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate label names in {names!r}")


class Counter:
    """A monotonically increasing value (one labelled series)."""

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount`` (must not be negative: ValueError)."""
        if amount < 0:
            raise ValueError("a counter can only increase")
        self.value += amount


class Gauge:
    """A value that goes up and down, or is computed by a function at render time."""

    def __init__(self) -> None:
        self.value = 0.0
        self._function: Callable[[], float] | None = None

    def set(self, value: float) -> None:
        self.value = value

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount

    def set_function(self, function: Callable[[], float]) -> None:
        """Read the value from ``function`` at every render. It must be cheap and must not do
        IO; if it raises, the sample is rendered as NaN."""
        self._function = function

    def get(self) -> float:
        if self._function is None:
            return self.value
        try:
            return self._function()
        except Exception:
            return math.nan


class Histogram:
    """Observations counted into fixed buckets (upper bounds, ``le``), with sum and count."""

    def __init__(self, buckets: Sequence[float]) -> None:
        self.bounds = tuple(buckets)
        self.counts = [0] * len(self.bounds)  # per bucket, not cumulative
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        """Count one observation (seconds, for the pgha histograms)."""
        i = bisect.bisect_left(self.bounds, value)
        if i < len(self.counts):
            self.counts[i] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """``(le, observations <= le)`` for every bucket, ending with ``(+Inf, count)``."""
        out: list[tuple[float, int]] = []
        running = 0
        for bound, n in zip(self.bounds, self.counts, strict=True):
            running += n
            out.append((bound, running))
        out.append((math.inf, self.count))
        return out


M = TypeVar("M", bound=Counter | Gauge | Histogram)


class Family(Generic[M]):
    """One metric name with its HELP, TYPE and one child per label-value combination."""

    def __init__(self, name: str, help_text: str, kind: str, label_names: Sequence[str],
                 factory: Callable[[], M]) -> None:
        self.name = name
        self.help = help_text
        self.kind = kind
        self.label_names = tuple(label_names)
        self._factory = factory
        self._children: dict[tuple[str, ...], M] = {}
        if not self.label_names:
            self._children[()] = factory()

    def labels(self, *values: str, **by_name: str) -> M:
        """The child for these label values (positional, or by name); created on first use.
        ValueError when the values do not match the family's label names."""
        if by_name:
            if values or set(by_name) != set(self.label_names):
                raise ValueError(f"{self.name} takes labels {self.label_names}")
            values = tuple(by_name[n] for n in self.label_names)
        if len(values) != len(self.label_names):
            raise ValueError(f"{self.name} takes labels {self.label_names}")
        key = tuple(str(v) for v in values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._factory()
        return child

    @property
    def only(self) -> M:
        """The single child of an unlabelled family."""
        if self.label_names:
            raise ValueError(f"{self.name} has labels {self.label_names}: use labels()")
        return self._children[()]

    def render(self, const: Sequence[tuple[str, str]], out: list[str]) -> None:
        """Append this family's exposition lines to ``out``."""
        out.append(f"# HELP {self.name} {escape_help(self.help)}")
        out.append(f"# TYPE {self.name} {self.kind}")
        for key, child in self._children.items():
            pairs = [*const, *zip(self.label_names, key, strict=True)]
            if isinstance(child, Histogram):
                for bound, n in child.cumulative():
                    le = format_labels([*pairs, ("le", _format_bound(bound))])
                    out.append(f"{self.name}_bucket{le} {n}")
                labels = format_labels(pairs)
                out.append(f"{self.name}_sum{labels} {format_value(child.sum)}")
                out.append(f"{self.name}_count{labels} {child.count}")
            elif isinstance(child, Gauge):
                out.append(f"{self.name}{format_labels(pairs)} {format_value(child.get())}")
            else:
                out.append(f"{self.name}{format_labels(pairs)} {format_value(child.value)}")


F = TypeVar("F", bound=Family[Any])


def _format_bound(bound: float) -> str:
    if math.isinf(bound):
        return "+Inf"
    return repr(float(bound))


class Registry:
    """The agent's metrics. Create each family once (a name may be registered only once:
    ValueError), update its children, and :meth:`render` them all."""

    def __init__(self) -> None:
        self._families: dict[str, Family[Any]] = {}

    def _add(self, family: F) -> F:
        _check_name(family.name)
        if family.name in self._families:
            raise ValueError(f"metric {family.name!r} is already registered")
        self._families[family.name] = family
        return family

    def counter(self, name: str, help_text: str, labels: Sequence[str] = ()) -> Family[Counter]:
        """A counter family; by convention ``name`` ends with ``_total``."""
        _check_label_names(labels)
        return self._add(Family(name, help_text, "counter", labels, Counter))

    def gauge(self, name: str, help_text: str, labels: Sequence[str] = ()) -> Family[Gauge]:
        _check_label_names(labels)
        return self._add(Family(name, help_text, "gauge", labels, Gauge))

    def histogram(self, name: str, help_text: str, labels: Sequence[str] = (),
                  buckets: Sequence[float] = DEFAULT_BUCKETS) -> Family[Histogram]:
        """A histogram family. ``buckets`` must be strictly increasing finite upper bounds
        (``+Inf`` is always added); ``le`` may not be a label name."""
        _check_label_names(labels, reserved=("le",))
        bounds = tuple(float(b) for b in buckets)
        if not bounds or any(math.isinf(b) or math.isnan(b) for b in bounds) or \
                any(a >= b for a, b in itertools.pairwise(bounds)):
            raise ValueError(f"histogram {name!r}: buckets must be increasing finite numbers")
        return self._add(Family(name, help_text, "histogram", labels,
                                lambda: Histogram(bounds)))

    def render(self, const_labels: Mapping[str, str] | None = None) -> str:
        """Every family in registration order, as exposition text ending with a newline."""
        const = list((const_labels or {}).items())
        out: list[str] = []
        for family in self._families.values():
            family.render(const, out)
        return "\n".join(out) + "\n" if out else ""
