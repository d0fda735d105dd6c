"""configs/monitoring: the Prometheus alerting rules pass ``promtool check rules`` and their
unit tests (``promtool test rules``), and every metric and label name the rules and the Grafana
dashboard query is one pgha serves at ``GET /metrics`` (taken from a real rendering of the
Patroni gauges and the agent's registry), so a renamed metric breaks this test, not a
production alert."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.support.prom import parse
from tests.unit.api_support import primary_status, replica_status

from pgha.agent.metrics import AgentMetrics
from pgha.api.metrics import render_metrics

MONITORING = Path(__file__).resolve().parents[2] / "configs" / "monitoring"
RULES = MONITORING / "pgha-alerts.yml"
RULE_TESTS = MONITORING / "pgha-alerts.test.yml"
DASHBOARD = MONITORING / "pgha-dashboard.json"

#: Series Prometheus makes itself for every target, and the labels the scrape adds.
SCRAPE_METRICS = {"up"}
SCRAPE_LABELS = {"job", "instance"}
#: Alerts about a whole cluster (no member label to name).
CLUSTER_ALERTS = {"PghaNoLeader", "PghaClusterPausedLong"}
SEVERITIES = {"critical", "warning", "info"}

needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool is not installed (Debian package prometheus; scripts/setup installs it)")

_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
             "group_left", "group_right", "inf", "nan"}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{([^{}]*)\}")
_MATCHER_LABEL = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)")
_IDENT = re.compile(r"(?<![\w.$])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")


def promql_names(expr: str) -> tuple[set[str], set[str]]:
    """``(metric names, label names)`` a PromQL expression refers to: identifiers that are not
    functions, aggregations or keywords are metric names; label names come from label
    matchers and from by/without/on/ignoring/group_left/group_right clauses. Grafana's
    ``$variables`` only appear in strings and ranges, which are dropped."""
    labels: set[str] = set()
    text = _STRING.sub('""', expr)
    for body in _MATCHERS.findall(text):
        labels.update(_MATCHER_LABEL.findall(body))
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    for body in _GROUPING.findall(text):
        labels.update(n.strip() for n in body.split(",") if n.strip())
    text = _GROUPING.sub(" ", text)
    metrics = {m.group(1) for m in _IDENT.finditer(text)
               if m.group(2) is None and m.group(1).lower() not in _KEYWORDS}
    return metrics, labels


def exported() -> tuple[set[str], set[str]]:
    """Metric names (histograms as their _bucket/_sum/_count series) and label names in a
    real ``GET /metrics`` rendering of a primary and a replica, plus what the scrape adds."""
    names, labels = set(SCRAPE_METRICS), set(SCRAPE_LABELS)
    for status in (primary_status(), replica_status()):
        doc = parse(render_metrics(status, AgentMetrics()))
        for name, sample_labels, _ in doc.samples:
            names.add(name)
            labels.update(sample_labels)
    return names, labels


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    doc = json.loads(DASHBOARD.read_text())
    assert isinstance(doc, dict)
    return doc


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]


def grafana_to_promql(expr: str) -> str:
    """A dashboard query as Prometheus would get it (variables substituted)."""
    return expr.replace("$__rate_interval", "1m").replace("$scope", ".*") \
        .replace("$member", ".*")


def test_promql_names_finds_metrics_and_labels() -> None:
    metrics, labels = promql_names(
        'histogram_quantile(0.99, sum by (le, operation) (rate(a_b_bucket{scope=~"$x", '
        'name!="y"}[$__rate_interval]))) > 1e3 and on (job) c_total offset 5m '
        'or max_over_time(d[10m:1m]) * 0.5 - ignoring (instance) group_left (name) e')
    assert metrics == {"a_b_bucket", "c_total", "d", "e"}
    assert labels == {"le", "operation", "scope", "name", "job", "instance"}


def test_rules_and_dashboard_use_only_exported_metrics_and_labels() -> None:
    names, labels = exported()
    assert {"patroni_primary", "pgha_dcs_request_duration_seconds_bucket",
            "pgha_maximum_lag_on_failover_bytes", "pgha_leader_lease_seconds_left"} <= names
    exprs = [("rule " + r["alert"], r["expr"]) for r in rules()]
    exprs += [("dashboard", e) for e in dashboard_exprs()]
    variables = [v["definition"] for v in dashboard()["templating"]["list"]]
    exprs += [("variable", re.sub(r"^label_values\((.*), *(\w+)\)$", r"\1", v))
              for v in variables]
    used_metrics: set[str] = set()
    for where, expr in exprs:
        metrics, used_labels = promql_names(expr)
        assert metrics, f"{where}: no metric in {expr!r}"
        assert metrics <= names, f"{where}: not exported: {sorted(metrics - names)}"
        assert used_labels <= labels, f"{where}: no such label: {sorted(used_labels - labels)}"
        used_metrics |= metrics
    for v in variables:  # the label a variable lists must exist too
        label = re.search(r", *(\w+)\)$", v)
        assert label is not None and label.group(1) in labels, v
    # every rule's annotations name only labels its series carry
    for rule in rules():
        for text in rule["annotations"].values():
            assert set(re.findall(r"\$labels\.(\w+)", text)) <= labels, text


def test_every_alert_has_a_severity_and_names_its_cluster_and_member() -> None:
    seen = set()
    for rule in rules():
        name = rule["alert"]
        assert name not in seen, f"{name} twice"
        seen.add(name)
        assert rule["labels"]["severity"] in SEVERITIES, name
        for key in ("summary", "description"):
            text = rule["annotations"][key]
            assert "{{ $labels.scope }}" in text, f"{name} {key}"
            if name not in CLUSTER_ALERTS:
                assert "{{ $labels.name }}" in text, f"{name} {key}"
    assert {"PghaNoLeader", "PghaMultipleLeaders", "PghaReplicationLagOverFailoverLimit",
            "PghaPendingRestart", "PghaDcsRequestErrors", "PghaLeaderLeaseNearExpiry",
            "PghaMemberDown", "PghaClusterPausedLong"} <= seen


def test_rule_tests_show_every_alert_firing_and_not_firing() -> None:
    doc = yaml.safe_load(RULE_TESTS.read_text())
    assert doc["rule_files"] == [RULES.name]
    fired, quiet = set(), set()
    names = exported()[0]
    for group in doc["tests"]:
        for case in group["alert_rule_test"]:
            (fired if case["exp_alerts"] else quiet).add(case["alertname"])
        for series in group["input_series"]:
            metric = series["series"].split("{", 1)[0]
            assert metric in names, f"input series of an unexported metric {metric}"
    alerts = {r["alert"] for r in rules()}
    assert fired == alerts, f"never shown firing: {sorted(alerts - fired)}"
    assert quiet == alerts, f"never shown quiet: {sorted(alerts - quiet)}"


@needs_promtool
def test_promtool_checks_the_rules() -> None:
    proc = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(rules())} rules found" in proc.stdout


@needs_promtool
def test_promtool_unit_tests_of_the_rules_pass() -> None:
    proc = subprocess.run(["promtool", "test", "rules", RULE_TESTS.name], cwd=MONITORING,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


@needs_promtool
def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses each dashboard query (variables substituted) as a recording rule."""
    exprs = dashboard_exprs()
    doc = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"pgha:dashboard_query_{i}", "expr": grafana_to_promql(e)}
        for i, e in enumerate(exprs)]}]}
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(doc))
    proc = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in proc.stdout


def test_dashboard_is_importable_with_a_panel_per_key_signal() -> None:
    doc = dashboard()
    assert isinstance(doc["schemaVersion"], int) and doc["schemaVersion"] >= 30
    assert doc["uid"] and doc["title"]
    inputs = {i["name"]: i for i in doc["__inputs"]}
    assert inputs["DS_PROMETHEUS"]["type"] == "datasource"
    assert inputs["DS_PROMETHEUS"]["pluginId"] == "prometheus"
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert set(variables) >= {"scope", "member"}
    for v in variables.values():
        assert v["datasource"]["uid"] == "${DS_PROMETHEUS}"
    assert "$scope" in variables["member"]["definition"]
    panels = doc["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in panels:
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${DS_PROMETHEUS}", p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${DS_PROMETHEUS}", p["title"]
            if p["type"] != "stat":  # per member, filtered by both variables
                assert "$member" in t["expr"] or "by (scope)" in t["expr"], p["title"]
    signals = {  # key signal -> a metric its panel must query
        "role": "patroni_primary", "lag": "patroni_xlog_replayed_location",
        "lag limit": "pgha_maximum_lag_on_failover_bytes",
        "timeline": "patroni_postgres_timeline", "leader changes": "pgha_promotions_total",
        "DCS latency": "pgha_dcs_request_duration_seconds_bucket",
        "DCS errors": "pgha_dcs_request_errors_total",
        "loop duration": "pgha_decision_loop_duration_seconds_bucket",
        "pending restart": "patroni_pending_restart", "pause": "patroni_is_paused",
        "lease": "pgha_leader_lease_seconds_left",
    }
    queried = [promql_names(e)[0] for e in dashboard_exprs()]
    for signal, metric in signals.items():
        assert any(metric in q for q in queried), f"no panel for {signal} ({metric})"
