"""Prometheus alert rules and the Grafana dashboard: well-formed, and only about real metrics."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.observe.metrics import Metrics
from gateway.observe.procstats import Process, ProcessCollector

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "mtls-gateway.json"
METRIC = re.compile(r"\bmtls_gateway_[a-z_]+")


def exported() -> set[str]:
    """Every sample name the gateway's registry (or the supervisor's) can produce."""
    names: set[str] = set()
    supervisor = ProcessCollector(lambda: [Process("worker", "0", os.getpid())], restarts=True)
    for family in [*Metrics().registry.collect(), *supervisor.collect()]:
        if family.type == "counter":
            names |= {family.name + "_total", family.name + "_created"}
        elif family.type == "histogram":
            names |= {family.name + s for s in ("_bucket", "_count", "_sum", "_created")}
        else:
            names.add(family.name)
    return names


RUNBOOKS = ROOT / "docs" / "operations.md"


def _runbook_anchors() -> set[str]:
    anchors = set()
    for line in RUNBOOKS.read_text().splitlines():
        if line.startswith("#"):
            text = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^a-z0-9 \-]", "", text).replace(" ", "-"))
    return anchors


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_alert_rules_are_complete() -> None:
    rules = _rules()
    names = {r["alert"] for r in rules}
    assert {
        "MtlsGatewayServerCertificateExpiring",
        "MtlsGatewayServerCertificateExpiryCritical",
        "MtlsGatewayCrlNextUpdateNear",
        "MtlsGatewayCrlExpired",
        "MtlsGatewayHandshakeFailureRatioHigh",
        "MtlsGatewayRejectionReasonSpikeAfterDeploy",
        "MtlsGatewayClientCertificatesExpiring",
        "MtlsGatewayReloadFailed",
        "MtlsGatewayAbsent",
    } <= names
    anchors = _runbook_anchors()
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        ann = rule["annotations"]
        assert ann["summary"] and ann["description"], rule["alert"]
        page, anchor = ann["runbook_url"].split("#", 1)
        assert page.endswith("/docs/operations.md"), f"{rule['alert']}: runbook_url {page}"
        assert anchor in anchors, f"{rule['alert']}: docs/operations.md has no heading #{anchor}"
        used = set(METRIC.findall(rule["expr"]))
        assert used <= exported(), f"{rule['alert']} uses unknown metrics {used - exported()}"
        assert used or "up{" in rule["expr"], rule["alert"]


@pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool not installed (Debian: prometheus); the structural check above still ran",
)
def test_promtool_checks_and_unit_tests_the_rules() -> None:
    check = subprocess.run(
        ["promtool", "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in check.stdout
    test = subprocess.run(
        ["promtool", "test", "rules", "alerts_test.yaml"],
        capture_output=True, text=True, timeout=60, cwd=ALERTS.parent,
    )  # fmt: skip
    assert test.returncode == 0, test.stdout + test.stderr
    tested = set(re.findall(r"alertname: (\w+)", (ALERTS.parent / "alerts_test.yaml").read_text()))
    assert tested == {r["alert"] for r in _rules()} - {
        "MtlsGatewayCaCertificateExpiring"
    } or tested >= {r["alert"] for r in _rules() if r["labels"]["severity"] == "critical"}


def _exprs(node: Any) -> list[str]:
    out = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                out.append(value)
            else:
                out += _exprs(value)
    elif isinstance(node, list):
        for item in node:
            out += _exprs(item)
    return out


def test_dashboard_queries_only_exported_metrics() -> None:
    dash = json.loads(DASHBOARD.read_text())
    titles = {p["title"] for p in dash["panels"]}
    assert {
        "Handshakes by result",
        "Handshake failures by reason",
        "Requests by route and code class",
        "Request latency percentiles",
        "Active connections",
        "Upstream health: requests by outcome",
        "Certificate expiry (days left)",
        "Client certificates presented: remaining life",
        "Limits hit",
        "Handshake latency percentiles",
        "Session resumption ratio",
        "Process memory and worker restarts",
    } <= titles
    annotations = {a["name"]: a["expr"] for a in dash["annotations"]["list"]}
    assert 'result="failure"' in annotations["Failed reloads"]
    exprs = _exprs(dash)
    assert len(exprs) >= len(dash["panels"])
    for expr in exprs:
        used = set(METRIC.findall(expr))
        assert used, expr
        assert used <= exported(), f"unknown metrics {used - exported()} in {expr}"
    for p in dash["panels"]:
        assert p["targets"], p["title"]
        assert {"x", "y", "w", "h"} <= set(p["gridPos"]), p["title"]
