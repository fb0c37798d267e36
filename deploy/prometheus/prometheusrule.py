"""Writes deploy/kubernetes/prometheus-operator/prometheusrule.yaml from alerts.yaml, the one
source of the alert rules (`make k8s-rules`; a test fails when the two differ)."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "kubernetes" / "prometheus-operator" / "prometheusrule.yaml"
HEADER = """\
# Generated from deploy/prometheus/alerts.yaml by `make k8s-rules`: edit that file, not this one.
# For the Prometheus Operator; a Prometheus without it loads alerts.yaml itself.
"""


def render() -> str:
    groups = yaml.safe_load((HERE / "alerts.yaml").read_text())["groups"]
    doc = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "mtls-gateway",
            "labels": {"app.kubernetes.io/name": "mtls-gateway"},
        },
        "spec": {"groups": groups},
    }
    return HEADER + yaml.safe_dump(doc, sort_keys=False, width=100)


if __name__ == "__main__":
    OUT.write_text(render())
    sys.stdout.write(f"wrote {OUT}\n")
