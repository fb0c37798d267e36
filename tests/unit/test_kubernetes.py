"""The Kubernetes manifests: valid against the API schemas (offline), and consistent with each
other and with the gateway's own config and drain timing."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from gateway.config import parse_config

K8S = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
VERSION = "1.30.0"


def _docs() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def _kind(kind: str) -> dict[str, Any]:
    return next(d for d in _docs() if d["kind"] == kind)


@pytest.mark.parametrize(
    "doc",
    [d for d in _docs() if not d["apiVersion"].startswith("cert-manager")],
    ids=lambda d: d["kind"],
)
def test_manifest_is_valid_for_the_api(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, VERSION, strict=True)


def test_kustomization_lists_every_manifest() -> None:
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}


def test_certificate_example_is_well_formed() -> None:
    cert = _kind("Certificate")
    spec = cert["spec"]
    assert spec["secretName"] == "mtls-gateway-tls"
    assert "server auth" in spec["usages"] and spec["dnsNames"]
    hours = lambda v: int(v.rstrip("h"))  # noqa: E731
    assert hours(spec["renewBefore"]) >= 28 * 24, "renew before the gateway's 28-day warning"


def _gateway_config() -> Any:
    text = _kind("ConfigMap")["data"]["gateway.yaml"]
    return parse_config(yaml.safe_load(text), "/etc/mtls-gateway/config")


def test_configmap_holds_a_valid_gateway_config() -> None:
    cfg = _gateway_config()
    assert cfg.admin is not None and cfg.admin.bind.endswith(":9901")


def test_deployment_matches_the_config_and_the_drain() -> None:
    deploy = _kind("Deployment")
    pod = deploy["spec"]["template"]["spec"]
    container = pod["containers"][0]
    cfg = _gateway_config()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["admin"] == int(cfg.admin.bind.rsplit(":", 1)[1])
    assert ports["https"] == int(cfg.listeners[0].bind.rsplit(":", 1)[1])
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pod["terminationGracePeriodSeconds"] > pre_stop + cfg.shutdown_timeout
    assert "replicas" not in deploy["spec"], "the HPA owns the replica count"
    assert _kind("HorizontalPodAutoscaler")["spec"]["minReplicas"] >= 2
    # readiness is not tied to one upstream: with externalTrafficPolicy Local, one upstream
    # down would take every pod out of the load balancer
    assert cfg.admin is not None and cfg.admin.ready_requires_upstreams is False
    # every file the config names is on a mounted volume
    mounts = [m["mountPath"] for m in container["volumeMounts"]]
    lst = cfg.listeners[0]
    for file in [lst.tls.cert, lst.tls.key, *lst.tls.client_ca]:
        assert any(file.startswith(m + "/") for m in mounts), file
    config_arg = container["args"][container["args"].index("-c") + 1]
    assert any(config_arg.startswith(m + "/") for m in mounts)
    secrets = {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    assert _kind("Certificate")["spec"]["secretName"] in secrets


def test_pdb_hpa_and_service_select_the_deployment() -> None:
    labels = _kind("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert _kind("PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert _kind("Service")["spec"]["selector"].items() <= labels.items()
    hpa = _kind("HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"]["name"] == _kind("Deployment")["metadata"]["name"]
    assert hpa["minReplicas"] > _kind("PodDisruptionBudget")["spec"]["minAvailable"]
    assert re.fullmatch(r"\d+", str(hpa["maxReplicas"]))


def test_the_validator_catches_a_broken_manifest() -> None:
    """The check above can fail: a misspelt field in the Deployment is refused."""
    deploy = _kind("Deployment")
    deploy["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deploy, VERSION, strict=True)


def test_only_the_monitoring_namespace_reaches_the_admin_port() -> None:
    policy = _kind("NetworkPolicy")["spec"]
    labels = _kind("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    assert policy["policyTypes"] == ["Ingress"]
    container = _kind("Deployment")["spec"]["template"]["spec"]["containers"][0]
    names = {p["name"] for p in container["ports"]}
    by_port: dict[str, list[Any]] = {}
    for rule in policy["ingress"]:
        for port in rule["ports"]:
            assert port["port"] in names
            by_port.setdefault(port["port"], []).append(rule.get("from"))
    assert by_port["https"] == [None]  # every client may try; mTLS decides
    (admin_from,) = by_port["admin"]
    assert admin_from == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]


OPERATOR = K8S / "prometheus-operator"


def test_the_prometheusrule_is_generated_from_the_alert_rules() -> None:
    """One source: deploy/prometheus/alerts.yaml (`make k8s-rules` regenerates the manifest)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "prometheusrule", K8S.parent / "prometheus" / "prometheusrule.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (OPERATOR / "prometheusrule.yaml").read_text() == module.render(), "run make k8s-rules"
    rule = yaml.safe_load((OPERATOR / "prometheusrule.yaml").read_text())
    alerts = yaml.safe_load((K8S.parent / "prometheus" / "alerts.yaml").read_text())
    assert rule["kind"] == "PrometheusRule" and rule["spec"]["groups"] == alerts["groups"]


def test_the_podmonitor_scrapes_the_admin_port_as_the_alerts_job() -> None:
    monitor = yaml.safe_load((OPERATOR / "podmonitor.yaml").read_text())
    pod = _kind("Deployment")["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    # the job label comes from the pod label jobLabel names: the job the alert rules expect
    assert labels[monitor["spec"]["jobLabel"]] == "mtls-gateway"
    alerts = (K8S.parent / "prometheus" / "alerts.yaml").read_text()
    assert 'job="mtls-gateway"' in alerts
    ports = {p["name"] for p in pod["spec"]["containers"][0]["ports"]}
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "admin" and "admin" in ports and endpoint["path"] == "/metrics"
    listed = set(yaml.safe_load((OPERATOR / "kustomization.yaml").read_text())["resources"])
    assert listed == {p.name for p in OPERATOR.glob("*.yaml")} - {"kustomization.yaml"}
