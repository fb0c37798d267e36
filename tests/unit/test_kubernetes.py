"""The Kubernetes manifests: valid against the API schemas (offline), and consistent with each
other and with the gateway's own config and drain timing."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from gateway.config.load import parse_config

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


CRDS = Path(__file__).resolve().parents[1] / "data" / "crds"  # PROVENANCE.md says from where
CORE = ("v1", "apps/v1", "policy/v1", "autoscaling/v2", "networking.k8s.io/v1")


@pytest.mark.parametrize(
    "doc", [d for d in _docs() if d["apiVersion"] in CORE], ids=lambda d: d["kind"]
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


def _custom_resources() -> list[dict[str, Any]]:
    docs = [d for d in _docs() if d["apiVersion"] not in CORE]
    for path in sorted(OPERATOR.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def _crd_problems(doc: dict[str, Any]) -> list[str]:
    """What the API server would refuse or silently drop: JSON Schema errors against the
    published schema of the kind, and fields the schema does not know (pruned on apply)."""
    import jsonschema

    schemas = [json.loads(p.read_text()) for p in CRDS.glob("*.json")]
    schema = next(
        s["openAPIV3Schema"]
        for s in schemas
        if s["apiVersion"] == doc["apiVersion"] and s["kind"] == doc["kind"]
    )
    validator = jsonschema.Draft7Validator(schema)
    problems = [f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(doc)]
    return problems + _unknown_fields(doc, schema, "")


def _unknown_fields(value: Any, schema: dict[str, Any], where: str) -> list[str]:
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    if isinstance(value, dict):
        if where == ".metadata":  # ObjectMeta: the core schema's business
            return []
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        out = []
        for key, item in value.items():
            if props is not None and key in props:
                out += _unknown_fields(item, props[key], f"{where}.{key}")
            elif isinstance(extra, dict):
                out += _unknown_fields(item, extra, f"{where}.{key}")
            elif props is not None and extra is None:
                out.append(f"{where}.{key}: unknown field")
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [
            p
            for i, v in enumerate(value)
            for p in _unknown_fields(v, schema["items"], f"{where}[{i}]")
        ]
    return []


@pytest.mark.parametrize("doc", _custom_resources(), ids=lambda d: d["kind"])
def test_custom_resources_are_valid_for_their_published_schemas(doc: dict[str, Any]) -> None:
    assert _crd_problems(doc) == []


def test_the_crd_check_catches_broken_custom_resources() -> None:
    """It can fail: a wrong type, a missing required field, a misspelt field."""
    bundle = _kind("Bundle")
    bundle["spec"]["target"]["configMap"]["key"] = 7
    assert any("7 is not of type 'string'" in p for p in _crd_problems(bundle))
    monitor = yaml.safe_load((OPERATOR / "podmonitor.yaml").read_text())
    monitor["spec"]["podMetricsEndpoints"][0]["intervall"] = "15s"
    assert any("intervall: unknown field" in p for p in _crd_problems(monitor))
    cert = _kind("Certificate")
    del cert["spec"]["secretName"]
    assert any("'secretName' is a required property" in p for p in _crd_problems(cert))


def test_the_client_ca_comes_from_the_trust_manager_bundle() -> None:
    bundle = _kind("Bundle")["spec"]
    pod = _kind("Deployment")["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "client-ca"]
    assert volume["configMap"]["name"] == _kind("Bundle")["metadata"]["name"]
    assert volume["configMap"]["items"] == [{"key": bundle["target"]["configMap"]["key"],
                                             "path": "ca.crt"}]  # fmt: skip
    (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "client-ca"]
    assert _gateway_config().listeners[0].tls.client_ca == (f"{mount['mountPath']}/ca.crt",)


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
