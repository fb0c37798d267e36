"""Expiry visibility: gauges for what the gateway holds, the warning for a server certificate
near its end, and the remaining-life histogram of presented client certificates."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from tests.harness import (
    EchoServer,
    GatewayProcess,
    expiry,
    issue_server,
    request,
    sample,
    scrape,
    write_config,
)

pytestmark = pytest.mark.process
EXPIRY = "mtls_gateway_certificate_expiry_timestamp_seconds"


@pytest.mark.parametrize(("warning", "warned"), [("28d", True), ("5d", False)])
def test_server_certificate_near_expiry_is_logged(
    tmp_path: Path, pki: Path, warning: str, warned: bool
) -> None:
    issue_server(pki, tmp_path / "certs", "short", days=10)
    with EchoServer() as echo:
        path, port, admin = write_config(tmp_path, pki, echo.port)
        doc = yaml.safe_load(path.read_text())
        tls = doc["listeners"][0]["tls"]
        tls["cert"] = str(tmp_path / "certs" / "short.pem")
        tls["key"] = str(tmp_path / "certs" / "short.key")
        tls["expiry_warning"] = warning
        path.write_text(yaml.safe_dump(doc))
        with GatewayProcess(path, admin) as gw:
            lines = [json.loads(x) for x in gw.logs().splitlines() if x.startswith("{")]
            near = [x for x in lines if x["msg"] == "certificate expiry is near"]
            server = [x for x in near if x["kind"] == "server"]
            assert bool(server) == warned, near
            if warned:
                assert server[0]["name"] == "public" and 9.9 < server[0]["days_left"] < 10.1
                assert server[0]["level"] == "warning"
            (gauge,) = expiry(scrape(admin), "server", "public").values()
            assert abs(gauge - (time.time() + 10 * 86400)) < 120

            assert request(port, "/x", pki, "client").status == 200
            metrics = scrape(admin)
            count = sample(metrics, "mtls_gateway_client_certificate_remaining_seconds_count")
            total = sample(metrics, "mtls_gateway_client_certificate_remaining_seconds_sum")
            assert count == 1
            assert 363 * 86400 < total < 366 * 86400  # the dev client has about a year left
            within_90d = sample(
                metrics, "mtls_gateway_client_certificate_remaining_seconds_bucket", le="7776000.0"
            )
            assert within_90d == 0


def test_two_cas_with_one_name_are_two_series(tmp_path: Path, pki: Path) -> None:
    """A re-keyed CA next to the old one, both named alike: each keeps its own expiry series
    (by serial), so the CA-expiry alert sees the one that ends first."""
    import datetime as dt

    from gateway.pki import devcerts

    now = dt.datetime.now(dt.UTC)
    name = devcerts.name("clients CA")
    short = devcerts.issue(name, ca=True, not_after=now + dt.timedelta(days=20))
    long = devcerts.issue(name, ca=True, not_after=now + dt.timedelta(days=3650))
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(
        devcerts.pem(short.cert) + devcerts.pem(long.cert) + (pki / "ca.pem").read_bytes()
    )
    with EchoServer() as echo:
        path, _, admin = write_config(tmp_path, pki, echo.port)
        doc = yaml.safe_load(path.read_text())
        doc["listeners"][0]["tls"]["client_ca"] = [str(bundle)]
        path.write_text(yaml.safe_dump(doc))
        with GatewayProcess(path, admin):
            series = expiry(scrape(admin), "ca", "clients CA")
    assert sorted(series) == sorted(f"{c.cert.serial_number:x}" for c in (short, long)), series
    assert abs(min(series.values()) - (now.timestamp() + 20 * 86400)) < 120
