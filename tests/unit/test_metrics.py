"""The metrics registry (text format 0.0.4) and the instrumented KVStore wrapper."""

from __future__ import annotations

import asyncio
import math
import shutil
from collections.abc import AsyncIterator

import pytest
from tests.support.prom import parse, promtool_problems

from pgha.agent.metrics import DCS_OPERATIONS, AgentMetrics
from pgha.api.prometheus import Registry, escape_label_value, format_value
from pgha.dcs.base import DCSError, WatchEvent
from pgha.dcs.instrumented import InstrumentedKV
from pgha.dcs.memory import MemoryBackend, MemoryStore

needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool is not installed (Debian package prometheus; scripts/setup installs it)")


# --------------------------------------------------------------------------- registry format


def test_counter_and_gauge_render_with_help_type_and_const_labels() -> None:
    r = Registry()
    c = r.counter("x_events_total", "Events seen.")
    g = r.gauge("x_temperature", "Current temperature.", labels=("room",))
    c.only.inc()
    c.only.inc(2)
    g.labels("kitchen").set(21.5)
    g.labels(room="cellar").set(-3)
    text = r.render({"scope": "demo", "name": "pg1"})
    assert text == (
        "# HELP x_events_total Events seen.\n"
        "# TYPE x_events_total counter\n"
        'x_events_total{scope="demo",name="pg1"} 3\n'
        "# HELP x_temperature Current temperature.\n"
        "# TYPE x_temperature gauge\n"
        'x_temperature{scope="demo",name="pg1",room="kitchen"} 21.5\n'
        'x_temperature{scope="demo",name="pg1",room="cellar"} -3\n'
    )


def test_histogram_buckets_are_cumulative_with_inf_sum_and_count() -> None:
    r = Registry()
    h = r.histogram("x_seconds", "Durations.", labels=("op",), buckets=(0.1, 1, 10))
    for value in (0.05, 0.1, 0.5, 3, 3, 100):
        h.labels("get").observe(value)
    h.labels("put")  # created, never observed
    doc = parse(r.render({"scope": "s", "name": "n"}))
    assert doc.types["x_seconds"] == "histogram"
    buckets = [(lb["le"], v) for lb, v in doc.values("x_seconds_bucket") if lb["op"] == "get"]
    assert buckets == [("0.1", 2), ("1.0", 3), ("10.0", 5), ("+Inf", 6)]  # le is inclusive
    assert doc.value("x_seconds_count", op="get") == 6
    assert doc.value("x_seconds_sum", op="get") == pytest.approx(106.65)
    assert [v for lb, v in doc.values("x_seconds_bucket") if lb["op"] == "put"] == [0, 0, 0, 0]
    assert doc.value("x_seconds_count", op="put") == 0
    for labels, _ in doc.values("x_seconds_bucket"):
        assert list(labels)[:2] == ["scope", "name"] and list(labels)[-1] == "le"


def test_label_values_and_help_are_escaped() -> None:
    r = Registry()
    g = r.gauge("x_info", 'Help with a \\ backslash,\na newline and "quotes".', labels=("v",))
    nasty = 'a\\b"c\nd'
    g.labels(nasty).set(1)
    text = r.render({"scope": 'sc"ope', "name": "n\\1"})
    assert '# HELP x_info Help with a \\\\ backslash,\\na newline and "quotes".\n' in text
    assert 'x_info{scope="sc\\"ope",name="n\\\\1",v="a\\\\b\\"c\\nd"} 1\n' in text
    doc = parse(text)
    assert doc.values("x_info") == [({"scope": 'sc"ope', "name": "n\\1", "v": nasty}, 1)]
    assert escape_label_value("plain") == "plain"


def test_values_are_formatted_exactly() -> None:
    assert format_value(0) == "0"
    assert format_value(2**62 + 1) == "4611686018427387905"  # WAL positions stay exact
    assert format_value(1.0) == "1"
    assert format_value(0.25) == "0.25"
    assert format_value(math.inf) == "+Inf"
    assert format_value(-math.inf) == "-Inf"
    assert format_value(math.nan) == "NaN"
    assert format_value(True) == "1"


def test_gauge_function_is_read_at_render_and_failures_give_nan() -> None:
    r = Registry()
    g = r.gauge("x_left", "Seconds left.")
    box = [5.0]
    g.only.set_function(lambda: box[0])
    assert parse(r.render()).value("x_left") == 5.0
    box[0] = 2.5
    assert parse(r.render()).value("x_left") == 2.5

    def broken() -> float:
        raise RuntimeError("boom")

    g.only.set_function(broken)
    assert math.isnan(parse(r.render()).value("x_left"))


def test_invalid_definitions_and_updates_are_refused() -> None:
    r = Registry()
    r.counter("x_total", "x")
    with pytest.raises(ValueError, match="already registered"):
        r.gauge("x_total", "again")
    with pytest.raises(ValueError, match="invalid metric name"):
        r.gauge("1bad", "x")
    with pytest.raises(ValueError, match="invalid label name"):
        r.gauge("x_ok", "x", labels=("__reserved",))
    with pytest.raises(ValueError, match="invalid label name"):
        r.histogram("x_h", "x", labels=("le",))
    with pytest.raises(ValueError, match="increasing"):
        r.histogram("x_h2", "x", buckets=(1, 1))
    c = r.counter("y_total", "y", labels=("op",))
    with pytest.raises(ValueError, match="takes labels"):
        c.labels("a", "b")
    with pytest.raises(ValueError, match="has labels"):
        _ = c.only
    with pytest.raises(ValueError, match="only increase"):
        c.labels("a").inc(-1)


def test_agent_metrics_expose_every_pgha_metric_from_the_start() -> None:
    m = AgentMetrics()
    doc = parse(m.render({"scope": "demo", "name": "pg1"}))
    assert doc.types == {
        "pgha_decision_loop_duration_seconds": "histogram",
        "pgha_dcs_request_duration_seconds": "histogram",
        "pgha_dcs_request_errors_total": "counter",
        "pgha_dcs_requests_total": "counter",
        "pgha_promotions_total": "counter",
        "pgha_demotions_total": "counter",
        "pgha_failovers_total": "counter",
        "pgha_leader_lease_seconds_left": "gauge",
        "pgha_action_failures_total": "counter",
        "pgha_action_failing": "gauge",
    }
    assert set(doc.help) == set(doc.types)
    assert {lb["operation"] for lb, _ in doc.values("pgha_dcs_request_errors_total")} == \
        set(DCS_OPERATIONS)
    assert {lb["operation"] for lb, _ in doc.values("pgha_dcs_request_duration_seconds_count")} \
        == set(DCS_OPERATIONS) - {"watch"}
    for _, labels, _ in doc.samples:
        assert labels["scope"] == "demo" and labels["name"] == "pg1"


def test_promotions_count_failovers_only_when_nobody_asked() -> None:
    m = AgentMetrics()
    m.record_promotion(requested=False)
    m.record_promotion(requested=True)
    m.record_promotion(requested=False)
    doc = parse(m.render())
    assert doc.value("pgha_promotions_total") == 3
    assert doc.value("pgha_failovers_total") == 2


def test_cycle_timer_observes_failed_cycles_but_not_cancellation() -> None:
    m = AgentMetrics()
    with m.time_cycle():
        pass
    with pytest.raises(RuntimeError), m.time_cycle():
        raise RuntimeError("cycle bug")
    with pytest.raises(asyncio.CancelledError), m.time_cycle():
        raise asyncio.CancelledError
    assert parse(m.render()).value("pgha_decision_loop_duration_seconds_count") == 2


@needs_promtool
def test_registry_output_passes_promtool() -> None:
    m = AgentMetrics()
    m.decision_loop.only.observe(0.02)
    m.dcs_duration.labels("put").observe(0.004)
    m.dcs_errors.labels("keepalive").inc()
    m.record_promotion(requested=False)
    assert promtool_problems(m.render({"scope": "demo", "name": 'we"ird\\name'})) == []


# --------------------------------------------------------------------------- InstrumentedKV


async def test_instrumented_kv_times_calls_and_counts_errors() -> None:
    backend = MemoryBackend()
    m = AgentMetrics()
    kv = InstrumentedKV(MemoryStore(backend, ttl=7.0, timeout=2.0), m.dcs_duration,
                        m.dcs_errors, m.dcs_requests)
    assert (kv.ttl, kv.timeout, kv.session_ttl) == (7.0, 2.0, 7.0)
    async with kv:
        assert await kv.create("/s/d/leader", b"pg1", ephemeral=True)
        assert kv.session_id is not None
        assert not await kv.create("/s/d/leader", b"pg2")  # lost race: not an error
        assert await kv.put("/s/d/config", b"{}")
        snap = await kv.get_prefix("/s/d/")
        assert set(snap.items) == {"/s/d/leader", "/s/d/config"}
        await kv.keepalive()
        assert await kv.delete("/s/d/config")
        backend.fail = True
        with pytest.raises(DCSError):
            await kv.get_prefix("/s/d/")
        backend.fail = False
    doc = parse(m.render())
    counts = {lb["operation"]: v for lb, v in doc.values("pgha_dcs_request_duration_seconds_count")}
    assert counts == {"connect": 1, "get_prefix": 2, "create": 2, "put": 1, "delete": 1,
                      "keepalive": 1}
    errors = {lb["operation"]: v for lb, v in doc.values("pgha_dcs_request_errors_total")}
    assert errors == {"connect": 0, "get_prefix": 1, "create": 0, "put": 0, "delete": 0,
                      "keepalive": 0, "watch": 0}
    sent = {lb["operation"]: v for lb, v in doc.values("pgha_dcs_requests_total")}
    assert sent == {"connect": 1, "get_prefix": 2, "create": 2, "put": 1, "delete": 1,
                    "keepalive": 1, "watch": 0}


async def test_instrumented_kv_counts_abandoned_calls_and_watch_errors() -> None:
    backend = MemoryBackend()
    m = AgentMetrics()
    inner = MemoryStore(backend)
    kv = InstrumentedKV(inner, m.dcs_duration, m.dcs_errors)
    async with kv:
        start = (await kv.get_prefix("/s/")).revision
        events = kv.watch("/s/", start)
        await kv.put("/s/a", b"1")
        event = await asyncio.wait_for(anext(events), 5)
        assert (event.key, event.deleted) == ("/s/a", False)
        await events.aclose()  # type: ignore[attr-defined]

        async def hang() -> None:
            await asyncio.Event().wait()

        async def broken_watch(prefix: str, start_revision: int) -> AsyncIterator[WatchEvent]:
            yield WatchEvent(start_revision + 1, "/s/b")
            raise DCSError("watch stream lost")

        inner.watch = broken_watch  # type: ignore[method-assign]
        seen = []
        with pytest.raises(DCSError):
            async for event in kv.watch("/s/", 0):
                seen.append(event.key)
        assert seen == ["/s/b"]

        inner.keepalive = hang  # type: ignore[method-assign]
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await kv.keepalive()
    doc = parse(m.render())
    assert doc.value("pgha_dcs_request_errors_total", operation="keepalive") == 1
    assert doc.value("pgha_dcs_request_duration_seconds_count", operation="keepalive") == 1
    assert doc.value("pgha_dcs_request_errors_total", operation="watch") == 1
