"""The admin port's status surfaces: /status, /certs and the HTML page, against a real gateway."""

from __future__ import annotations

import json
import re
import shutil
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from gateway.pki import devcerts
from tests.harness import base_config, dev_root, issue_server, request, running


def _get(port: int, path: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
        return resp.status, resp.headers["Content-Type"], resp.read().decode()


@pytest.fixture(scope="module")
def certs(pki: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The dev PKI plus a server cert with 10 days left and a client with HTML in its CN."""
    out = tmp_path_factory.mktemp("status-certs")
    for name in ("ca.pem", "client.pem", "client.key", "client-revoked.pem", "client-revoked.key"):
        shutil.copy(pki / name, out / name)
    issue_server(pki, out, "server-short", days=10)
    evil = devcerts.issue(
        devcerts.name("<script>alert(1)</script>", ou="clients"),
        dev_root(pki),
        sans=[x509.UniformResourceIdentifier("spiffe://dev.local/evil")],
    )
    devcerts.write_issued(out, "client-evil", evil, p12=False)
    return out


@pytest.fixture(scope="module")
def gateway(pki: Path, certs: Path):
    def config(port: int) -> dict[str, Any]:
        doc = base_config(
            pki,
            port,
            cert=str(certs / "server-short.pem"),
            key=str(certs / "server-short.key"),
            crl=[str(pki / "crl.pem")],
        )
        doc["routes"] = [
            {
                "name": "admin-api",
                "match": {"path_prefix": "/admin", "methods": ["GET"]},
                "upstream": "echo",
                "policy": {
                    "required_eku": ["clientAuth"],
                    "allow": [{"san_uri": "spiffe://dev.local/admin", "subject": {"O": "Example"}}],
                },
            },
            {"name": "all", "upstream": "echo", "policy": {"allow": "any"}},
        ]
        # a second listener with the same CA and CRLs: each is listed once, with both names
        doc["listeners"].append({**doc["listeners"][0], "name": "internal", "bind": "127.0.0.1:0"})
        return doc

    with running(config, pki) as gw:
        yield gw


def test_status_is_ghostunnel_shaped(gateway) -> None:
    code, ctype, body = _get(gateway.admin_port, "/status")
    doc = json.loads(body)
    assert code == 200 and ctype.startswith("application/json")
    assert doc["ok"] is True and doc["status"] == "ok" and doc["message"] == "listening"
    assert doc["version"] == "0.1.0" and doc["uptime_seconds"] >= 0
    assert doc["listeners"]["public"] == f"127.0.0.1:{gateway.port}"
    assert set(doc["listeners"]) == {"public", "internal"}


def test_certs_lists_everything_held(gateway) -> None:
    certs = json.loads(_get(gateway.admin_port, "/certs")[2])["certificates"]
    kinds = {(c["kind"], c["name"]) for c in certs}
    assert {
        ("server", "public"),
        ("ca", "mtls-gateway dev root CA"),
        ("crl", "mtls-gateway dev root CA"),
        ("crl", "mtls-gateway dev intermediate CA"),
    } <= kinds
    server = next(c for c in certs if c["kind"] == "server")
    assert 9.9 < server["days_until_expiration"] < 10.1
    assert re.fullmatch(r"[0-9a-f]+", server["serial_number"])
    assert server["issuer"] == "O=mtls-gateway dev,CN=mtls-gateway dev root CA"
    assert certs == sorted(certs, key=lambda c: c["days_until_expiration"])
    # held by both listeners, listed once
    root = [c for c in certs if c["kind"] == "ca" and c["name"] == "mtls-gateway dev root CA"]
    assert len(root) == 1 and root[0]["listeners"] == ["public", "internal"]
    assert len([c for c in certs if c["kind"] == "crl"]) == 2
    assert len({(c["kind"], c["name"], c["serial_number"]) for c in certs}) == len(certs)


def test_html_page_tells_the_story(gateway, certs: Path) -> None:
    assert request(gateway.port, "/admin/x", certs, "client").status == 403
    assert request(gateway.port, "/admin/x", certs, "client-evil").status == 403
    with pytest.raises(OSError):
        request(gateway.port, "/", certs, "client-revoked")
    time.sleep(0.2)
    code, ctype, page = _get(gateway.admin_port, "/")
    assert code == 200 and ctype.startswith("text/html")
    assert "http://" not in page and "https://" not in page and "<script" not in page.lower()
    # routes and policies in words
    assert "any host /admin (GET)" in page
    assert (
        "client certificate required; leaf must list EKU clientAuth; allows SAN URI "
        "spiffe://dev.local/admin and subject O Example"
    ) in page.replace(
        "subject O Example and SAN URI spiffe://dev.local/admin",
        "SAN URI spiffe://dev.local/admin and subject O Example",
    )
    assert "allows any verified client" in page
    # certificate expiry colours: 10 days left is critical
    assert re.search(r'<td class="days-critical">9\.\d|<td class="days-critical">10\.0', page)
    assert '<td class="days-ok">3650.0</td>' in page  # the root CA
    # handshake results and denials over the last minutes, the recent rejections
    assert re.search(r"<td>revoked</td><td class=\"bad\">\d+</td>", page)
    assert re.search(r"<td>admin-api</td><td>not_allowed</td><td>[2-9]</td>", page)
    # RFC 4514 text of the CN, then HTML-escaped: shown, never executed
    assert "CN=\\&lt;script\\&gt;alert(1)\\&lt;/script\\&gt;" in page
    assert '<td>handshake</td><td>public</td><td class="bad">revoked</td>' in page


def test_the_page_shows_each_routes_traffic_and_the_upstreams_health(gateway, certs) -> None:
    for i in range(5):
        assert request(gateway.port, f"/traffic/{i}", certs, "client").status == 200
    assert request(gateway.port, "/admin/y", certs, "client").status == 403
    time.sleep(0.2)
    page = _get(gateway.admin_port, "/")[2]
    rows: dict[str, list[str]] = {}  # by first cell, the first such row (routes come first)
    for row in page.split("<tr>"):
        cells = re.findall(r"<td[^>]*>([^<]*)</td>", row)
        if cells:
            rows.setdefault(cells[0], cells)
    # route, match, upstream, requests, 2xx, 3xx, 4xx, 5xx, p50, p99, policy
    admin, every = rows["admin-api"], rows["all"]
    assert int(every[3]) >= 5 and int(every[4]) >= 5 and every[7] == "0"
    assert int(admin[6]) >= 1 and int(admin[3]) == int(admin[6])
    assert every[8].endswith(" ms") and every[9].endswith(" ms")
    assert float(every[8][:-3]) <= float(every[9][:-3]) < 1000
    assert rows["echo"][1] == "http/1.1"  # what the upstream speaks
    assert rows["echo"][2] == "1 of 1 healthy" and rows["echo"][3] == "-"
    assert "ok " in rows["echo"][4]  # the window's outcomes
    # the certificates table: each once, with the listeners holding it
    every_row = [re.findall(r"<td[^>]*>([^<]*)</td>", row) for row in page.split("<tr>")]
    root = [c for c in every_row if c[1:3] == ["ca", "mtls-gateway dev root CA"]]
    assert len(root) == 1 and root[0][0] == "public, internal"
    # the listeners table: what each offers by ALPN
    assert rows["public"][2] == "h2, http/1.1", rows["public"]


def test_admin_port_defaults_to_loopback() -> None:
    from gateway.config.model import AdminConfig

    assert AdminConfig().bind.startswith("127.0.0.1:")
