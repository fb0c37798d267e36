"""A real browser: headless Chromium with the dev client's PKCS#12 in its NSS database and the
AutoSelectCertificateForUrls policy, through the gateway to the echo upstream; the same without
a certificate; and a screenshot of the admin status page.

Skipped (with the reason) where Chromium or NSS's tools are missing: `make e2e-browser`
installs them. Chromium never gets to wait for a certificate dialog: every run has a timeout,
and the page content is checked, not the exit code."""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.base.log import EVENT_KEY
from tests.harness import RunningGateway, base_config, running

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
POLICY_DIR = Path("/etc/chromium/policies/managed")
ROOT = Path(__file__).resolve().parents[2]

_MISSING = [
    what
    for what, found in (
        ("chromium", CHROMIUM),
        ("certutil (libnss3-tools)", shutil.which("certutil")),
        ("pk12util (libnss3-tools)", shutil.which("pk12util")),
    )
    if found is None
]
if _MISSING:
    pytest.skip(
        f"not installed: {', '.join(_MISSING)} (`make e2e-browser` installs them)",
        allow_module_level=True,
    )


def _nssdb(home: Path, pki: Path, with_client: bool) -> None:
    """$HOME/.pki/nssdb with the dev CA trusted and, optionally, the dev client's .p12."""
    db = home / ".pki" / "nssdb"
    db.mkdir(parents=True)
    sql = f"sql:{db}"

    def run(*args: str) -> None:
        subprocess.run(args, check=True, capture_output=True, timeout=60)

    run("certutil", "-d", sql, "-N", "--empty-password")
    run(
        "certutil",
        "-d",
        sql,
        "-A",
        "-n",
        "mtls-gateway dev CA",
        "-t",
        "C,,",
        "-i",
        str(pki / "ca.pem"),
    )
    if with_client:
        password = home / "p12-password"
        password.write_text("changeit\n")  # the dev PKI's documented password, from a file
        run("pk12util", "-d", sql, "-i", str(pki / "client.p12"), "-w", str(password))


def _chromium(home: Path, *args: str, timeout: float = 60) -> str:
    """Run headless Chromium as the given HOME; returns stdout (a DOM dump)."""
    cmd = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={home / 'profile'}",
        *args,
    ]  # fmt: skip
    env = {**os.environ, "HOME": str(home)}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    return proc.stdout


@pytest.fixture(scope="module")
def gateway(pki: Path) -> Iterator[RunningGateway]:
    def config(port: int) -> dict[str, Any]:
        doc = base_config(pki, port, client_auth="optional")
        doc["routes"] = [
            {
                "name": "browser",
                "upstream": "echo",
                "policy": {
                    "require_client_cert": True,
                    "allow": [{"san_uri": "spiffe://dev.local/*"}],
                },
                "forward_identity": ["xfcc"],
            }
        ]
        doc["logging"] = {"level": "info", "access_log": True}
        return doc

    with running(config, pki) as gw:
        yield gw


class _Protocols(logging.Handler):
    """The protocol of each access line (`HTTP/2`, `HTTP/1.1`)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append(getattr(record, EVENT_KEY)["protocol"])


@pytest.fixture(scope="module")
def auto_select(gateway: RunningGateway) -> Iterator[None]:
    """Chromium's managed policy: present the matching certificate to the gateway unasked."""
    try:
        POLICY_DIR.mkdir(parents=True, exist_ok=True)
        policy = POLICY_DIR / "mtls-gateway-e2e.json"
        rule = json.dumps({"pattern": f"https://localhost:{gateway.port}", "filter": {}})
        policy.write_text(json.dumps({"AutoSelectCertificateForUrls": [rule]}))
    except PermissionError:
        pytest.skip(f"cannot write Chromium's managed policy into {POLICY_DIR} (needs root)")
    try:
        yield
    finally:
        policy.unlink(missing_ok=True)


@pytest.mark.parametrize(
    ("with_client", "shown", "absent"),
    [
        # the echo upstream's answer, with the XFCC header naming the client
        (True, ['"path": "/hello"', "URI=spiffe://dev.local/client"], '"error"'),
        # no certificate in the browser: the gateway's rejection
        (False, ['"error": "client_cert_required"'], "spiffe://dev.local/client"),
    ],
    ids=["with-certificate", "without-certificate"],
)
def test_browser_through_the_gateway(
    gateway: RunningGateway,
    auto_select: None,
    pki: Path,
    tmp_path: Path,
    with_client: bool,
    shown: list[str],
    absent: str,
) -> None:
    _nssdb(tmp_path, pki, with_client=with_client)
    logger, protocols = logging.getLogger("gateway.access"), _Protocols()
    old = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(protocols)
    try:
        dom = _chromium(tmp_path, "--dump-dom", f"https://localhost:{gateway.port}/hello")
    finally:
        logger.removeHandler(protocols)
        logger.setLevel(old)
    for text in shown:
        assert text in dom, dom[:2000]
    assert absent not in dom
    assert protocols.seen and set(protocols.seen) == {"HTTP/2"}  # ALPN: the browser chose h2


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_status_page_in_the_browser(
    gateway: RunningGateway, pki: Path, tmp_path: Path, auto_select: None
) -> None:
    _nssdb(tmp_path, pki, with_client=False)
    url = f"http://127.0.0.1:{gateway.admin_port}/"
    dom = _chromium(tmp_path, "--dump-dom", url)
    for text in ("mtls-gateway", "Listeners", "browser", "allows SAN URI spiffe://dev.local/*",
                 "Certificates", "Recent rejections", "no_client_cert", "Upstreams, ", "p99",
                 "1 of 1 healthy"):  # fmt: skip
        assert text in dom, text
    shot = tmp_path / "status-page.png"
    _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,1000", "--hide-scrollbars", url)
    assert _png_size(shot) == (1280, 1000)
    if os.environ.get("UPDATE_SCREENSHOT"):
        (ROOT / "docs").mkdir(exist_ok=True)
        shutil.copy(shot, ROOT / "docs" / "status-page.png")
