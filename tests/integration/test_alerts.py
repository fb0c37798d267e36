"""Every shipped alert fires when its condition happens: the real gateway under `--workers 2`,
scraped by a real Prometheus that loads deploy/prometheus/alerts.yaml. Each condition is
provoked the way it happens in production (a short-lived certificate, a CA being rotated out,
a CRL close to its nextUpdate, a client about to expire, a burst of unknown-CA clients, a
broken config sent by SIGHUP and by POST /reload, the gateway gone), and Prometheus, reading
the series as it scraped them, must report the alert pending or firing."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization

from gateway.pki import devcerts
from tests.harness import (
    EchoServer,
    client_context,
    dev_root,
    free_port,
    issue_server,
    request,
    write_config,
)

pytestmark = [
    pytest.mark.process,
    pytest.mark.skipif(
        shutil.which("prometheus") is None, reason="prometheus not installed (Debian: prometheus)"
    ),
]

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "mtls-gateway.json"
PEM = serialization.Encoding.PEM


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def _active_alerts(prom: int) -> dict[str, str]:
    """Alert name -> state (pending: the condition holds, waiting out `for`; firing)."""
    try:
        doc = _get_json(f"http://127.0.0.1:{prom}/api/v1/alerts")
    except OSError:
        return {}
    return {a["labels"]["alertname"]: a["state"] for a in doc["data"]["alerts"]}


def _wait_for(check: Any, seconds: float) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.25)
    return check()


def _refused_handshake(port: int, ctx: ssl.SSLContext) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
                tls.recv(100)  # TLS 1.3: the rejection arrives after the handshake
        except (ssl.SSLError, OSError):
            pass


def _dashboard_queries_answer(prom: int) -> None:
    """Every query of the Grafana dashboard is valid PromQL, and those about what just
    happened return data from the real gateway."""
    dash = json.loads(DASHBOARD.read_text())
    queries = {a["name"]: a["expr"] for a in dash["annotations"]["list"]}
    queries |= {
        f"{p['title']} {t['refId']}": t["expr"] for p in dash["panels"] for t in p["targets"]
    }
    empty = []
    for title, expr in queries.items():
        expr = expr.replace("$instance", ".*").replace("$__rate_interval", "1m")
        query = urllib.parse.urlencode({"query": expr.replace("$__range", "5m")})
        doc = _get_json(f"http://127.0.0.1:{prom}/api/v1/query?{query}")
        assert doc["status"] == "success", (title, doc)
        if not doc["data"]["result"]:
            empty.append(title)
    # nothing of these happened: no OCSP, no denial, no re-check, no reload succeeded, no CRL
    # download, no worker restart
    quiet = {"OCSP checks by result A", "Connections closed on re-check A", "Reloads",
             "Policy denials by route and reason A", "Reloads B",
             "Process memory and worker restarts B"}  # fmt: skip
    assert set(empty) <= quiet, empty


def _answers(port: int, certs: Path) -> bool:
    try:
        return request(port, "/", certs, "client").status == 200
    except OSError:
        return False


def _pki(pki: Path, out: Path) -> None:
    """A server certificate with 10 days left; a client CA with 20 days left beside the dev
    root; CRLs, the root's 12 hours from nextUpdate; a client certificate with 3 days left."""
    now = dt.datetime.now(dt.UTC)
    for name in (
        "ca.pem",
        "client.pem",
        "client.key",
        "client-untrusted.pem",
        "client-untrusted.key",
    ):
        shutil.copy(pki / name, out / name)
    issue_server(pki, out, "server", days=10)
    root = dev_root(pki)
    leaving = devcerts.issue(
        devcerts.name("leaving client CA"), ca=True, not_after=now + dt.timedelta(days=20)
    )
    (out / "bundle.pem").write_bytes((pki / "ca.pem").read_bytes() + devcerts.pem(leaving.cert))
    crls = devcerts.make_crl(root, [], next_update_days=0.5).public_bytes(PEM)
    crls += devcerts.make_crl(leaving, []).public_bytes(PEM)
    (out / "crl.pem").write_bytes(crls)
    soon = devcerts.issue(
        devcerts.name("client-soon", ou="clients"), root, not_after=now + dt.timedelta(days=3)
    )
    devcerts.write_issued(out, "client-soon", soon, p12=False)


def test_every_alert_fires_against_the_real_gateway_under_two_workers(
    tmp_path: Path, pki: Path
) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    _pki(pki, certs)
    prom_port = free_port()
    with (
        EchoServer() as echo,
        (tmp_path / "gateway.log").open("wb") as gateway_log,
        (tmp_path / "prometheus.log").open("wb") as prometheus_log,
    ):
        path, port, admin = write_config(tmp_path, pki, echo.port, reload={"watch": False})
        doc = yaml.safe_load(path.read_text())
        doc["listeners"][0]["tls"].update(
            cert=str(certs / "server.pem"),
            key=str(certs / "server.key"),
            client_ca=[str(certs / "bundle.pem")],
            crl=[str(certs / "crl.pem")],
        )
        good = yaml.safe_dump(doc)
        path.write_text(good)
        gateway = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "-c", str(path), "--workers", "2"],
            stdout=gateway_log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        (tmp_path / "prometheus.yml").write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(ALERTS)],
                    "scrape_configs": [
                        {
                            "job_name": "mtls-gateway",
                            "static_configs": [{"targets": [f"127.0.0.1:{admin}"]}],
                        }
                    ],
                }
            )
        )
        prometheus = subprocess.Popen(
            ["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{prom_port}"],
            stdout=subprocess.DEVNULL, stderr=prometheus_log,
        )  # fmt: skip
        try:
            assert _wait_for(lambda: _answers(port, certs), 30)
            # a few scrapes of the healthy gateway: only the certificate alerts hold
            certificate_alerts = {
                "MtlsGatewayServerCertificateExpiring",
                "MtlsGatewayServerCertificateExpiryCritical",
                "MtlsGatewayCaCertificateExpiring",
                "MtlsGatewayCrlNextUpdateNear",
            }
            # (until the first scrape of the started gateway, `up` may be 0: Absent pending)
            before = _wait_for(lambda: set(_active_alerts(prom_port)) == certificate_alerts, 30)
            assert before, _active_alerts(prom_port)

            # unknown-CA clients after the start: a spike, and over 20% of handshakes failing
            untrusted = client_context(certs, "client-untrusted")
            for _ in range(200):
                _refused_handshake(port, untrusted)
            for _ in range(40):
                assert request(port, "/", certs, "client-soon").status == 200
            # a broken config, by SIGHUP and by POST /reload: the supervisor refuses both
            path.write_text(good.replace("listeners:", "listenerz:"))
            gateway.send_signal(signal.SIGHUP)
            post = urllib.request.Request(f"http://127.0.0.1:{admin}/reload", method="POST")
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(post, timeout=30)
            assert refused.value.code == 422
            refused.value.close()
            traffic_alerts = {
                "MtlsGatewayClientCertificatesExpiring",
                "MtlsGatewayHandshakeFailureRatioHigh",
                "MtlsGatewayRejectionReasonSpikeAfterDeploy",
                "MtlsGatewayReloadFailed",
            }
            fired = _wait_for(lambda: traffic_alerts <= set(_active_alerts(prom_port)), 30)
            assert fired, _active_alerts(prom_port)
            _dashboard_queries_answer(prom_port)

            gateway.send_signal(signal.SIGTERM)  # the gateway is gone
            assert gateway.wait(30) == 0
            absent = _wait_for(lambda: "MtlsGatewayAbsent" in _active_alerts(prom_port), 30)
            assert absent, _active_alerts(prom_port)
        finally:
            for proc in (gateway, prometheus):
                if proc.poll() is None:
                    proc.terminate()
                    try:
                        proc.wait(15)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait(5)
