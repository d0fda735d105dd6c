"""pgha's own metrics of one agent, on the registry of :mod:`pgha.api.prometheus` (the
Patroni-compatible gauges are computed from the published status by :mod:`pgha.api.metrics`).

One instance per agent, created before the DCS client, the executor and the REST API, which all
update it. Not thread-safe: every update happens on the agent's event loop.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from types import TracebackType

from pgha.api.prometheus import Histogram, Registry

#: The KVStore calls timed by :class:`pgha.dcs.instrumented.InstrumentedKV` (``operation``).
DCS_OPERATIONS: tuple[str, ...] = ("connect", "get_prefix", "create", "put", "delete",
                                   "keepalive", "watch")

#: The actions retried with backoff (:data:`pgha.agent.retry.GATED`), the ``action`` label.
ACTION_KINDS: tuple[str, ...] = ("clone", "rejoin", "start", "copy_slots")

_LOOP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                 300.0)
_DCS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                5.0, 10.0)


class AgentMetrics:
    """pgha's own metrics (the Patroni-compatible gauges are computed from the published
    status by :mod:`pgha.api.metrics` instead). One instance per agent, created before the
    DCS client, the executor and the REST API, which all update it."""

    def __init__(self) -> None:
        r = self.registry = Registry()
        self.decision_loop = r.histogram(
            "pgha_decision_loop_duration_seconds",
            "Duration of one decision cycle (observe, decide, execute, publish), including "
            "the actions it ran and cycles that failed with an error.", buckets=_LOOP_BUCKETS)
        self.dcs_duration = r.histogram(
            "pgha_dcs_request_duration_seconds",
            "Duration of DCS requests by operation, answered or failed (the watch, a "
            "long-lived stream, is not timed).", labels=("operation",), buckets=_DCS_BUCKETS)
        self.dcs_errors = r.counter(
            "pgha_dcs_request_errors_total",
            "DCS requests that failed (store unreachable or refusing, timed out, or abandoned "
            "by the agent at its retry_timeout), by operation. A lost compare-and-set is not "
            "an error.", labels=("operation",))
        self.dcs_requests = r.counter(
            "pgha_dcs_requests_total",
            "DCS requests sent, by operation, answered or not (a watch counts once per "
            "opening of the stream; a session grant counts as keepalive).",
            labels=("operation",))
        for op in DCS_OPERATIONS:
            self.dcs_errors.labels(op)
            self.dcs_requests.labels(op)
            if op != "watch":
                self.dcs_duration.labels(op)
        self.promotions = r.counter(
            "pgha_promotions_total", "Successful promotions of the local PostgreSQL to primary.")
        self.demotions = r.counter(
            "pgha_demotions_total",
            "Demotions: the local primary stopped because it must not stay writable (lease "
            "not confirmed, another leader, ...). Clean shutdowns are not counted.")
        self.failovers = r.counter(
            "pgha_failovers_total",
            "Promotions that no operator requested (no switchover/failover request in the "
            "DCS): the leader lock was free because the previous leader was lost or left.")
        self.lease_seconds_left = r.gauge(
            "pgha_leader_lease_seconds_left",
            "Seconds until the leader lease this member holds must be renewed before it "
            "demotes itself (ttl minus safety margin, counted from the last keep-alive sent); "
            "0 when it does not hold the leader lock.")

        self.action_failures = r.counter(
            "pgha_action_failures_total",
            "Failed attempts of the actions retried with backoff (clone, rejoin, start), by "
            "action.", labels=("action",))
        self.action_failing = r.gauge(
            "pgha_action_failing",
            "1 while the last attempt of the action failed and it is being retried with "
            "backoff (GET /patroni last_error says why), else 0.", labels=("action",))
        for kind in ACTION_KINDS:
            self.action_failures.labels(kind)
            self.action_failing.labels(kind).set(0)

    def record_action(self, kind: str, ok: bool, failing: set[str]) -> None:
        """An attempt of a retried action ended; ``failing`` are the kinds still failing."""
        if not ok:
            self.action_failures.labels(kind).inc()
        for name in ACTION_KINDS:
            self.action_failing.labels(name).set(1 if name in failing else 0)

    def record_promotion(self, requested: bool) -> None:
        """Count a successful promotion; ``requested`` when an operator's switchover or
        failover request asked for it (otherwise it is also counted as a failover)."""
        self.promotions.only.inc()
        if not requested:
            self.failovers.only.inc()

    def time_cycle(self) -> _Timer:
        """``with metrics.time_cycle(): ...`` observes the block's duration in the
        decision-loop histogram, also when the block raises an Exception (not on cancellation:
        that is a shutdown, not a cycle)."""
        return _Timer(self.decision_loop.only)

    def render(self, const_labels: Mapping[str, str] | None = None) -> str:
        return self.registry.render(const_labels)


class _Timer:
    def __init__(self, histogram: Histogram) -> None:
        self.histogram = histogram
        self.started = 0.0

    def __enter__(self) -> None:
        self.started = time.monotonic()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None or issubclass(exc_type, Exception):
            self.histogram.observe(time.monotonic() - self.started)
