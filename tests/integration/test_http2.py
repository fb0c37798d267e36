"""HTTP/2 on a listener (`http2: true`): negotiated by ALPN, every stream through the same
routes, policy, identity headers and limits as an HTTP/1.1 request; real curl clients."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from gateway.base.log import EVENT_KEY
from tests.h2client import H2Client
from tests.harness import EchoServer, base_config, cert_args, curl, running, sample


def _h2_config(pki: Path, port: int, **extra: Any) -> dict[str, Any]:
    cfg = base_config(pki, port)
    cfg["listeners"][0]["http2"] = True
    cfg["listeners"][0].update(extra)
    return cfg


def test_curl_negotiates_h2_and_the_request_goes_through_the_pipeline(pki: Path) -> None:
    with EchoServer() as up, running(lambda _: _h2_config(pki, up.port), pki) as gw:
        out = curl(
            "--http2",
            *cert_args(pki),
            "-w",
            "\n%{http_version} %{http_code}",
            f"https://localhost:{gw.port}/hello?x=1",
        )
        assert out.returncode == 0, out.stderr
        body, _, tail = out.stdout.rpartition("\n")
        assert tail == "2 200", (tail, out.stderr)
        echoed = json.loads(body)
        assert echoed["path"] == "/hello" and echoed["query"] == "x=1", echoed


def _routes(cfg: dict[str, Any]) -> dict[str, Any]:
    cfg["routes"] = [
        {
            "name": "admin",
            "match": {"path_prefix": "/admin"},
            "upstream": "echo",
            "policy": {"allow": [{"subject": {"CN": "nobody"}}]},
        },
        {
            "name": "api",
            "match": {"path_prefix": "/"},
            "upstream": "echo",
            "policy": {"allow": "any"},
            "forward_identity": ["xfcc"],
        },
    ]
    return cfg


def test_streams_get_the_same_routes_policy_and_identity_headers(pki: Path) -> None:
    with (
        EchoServer() as up,
        running(lambda _: _routes(_h2_config(pki, up.port)), pki) as gw,
        H2Client(gw.port, pki) as client,
    ):
        denied = client.get("/admin/users")
        assert (
            denied.status == 403 and json.loads(denied.body)["error"] == "client_cert_not_allowed"
        )
        ok = client.get("/orders", extra=[("x-forwarded-client-cert", "By=forged")])
        assert ok.status == 200, ok
        seen = dict((k.lower(), v) for k, v in json.loads(ok.body)["headers"])
        assert seen["host"] == "localhost"  # :authority is the Host
        assert "forged" not in seen["x-forwarded-client-cert"]
        assert "CN=client" in seen["x-forwarded-client-cert"]
        assert ok.header("x-request-id")
        # both on the one connection, each counted as a request
        m = gw.metrics()
        assert (
            sample(m, "mtls_gateway_requests_total", route="admin", method="GET", code="403") == 1
        )
        assert sample(m, "mtls_gateway_requests_total", route="api", method="GET", code="200") == 1
        active = {
            p: sample(m, "mtls_gateway_connections_active", listener="public", protocol=p)
            for p in ("HTTP/2", "HTTP/1.1")
        }
        assert active == {"HTTP/2": 1, "HTTP/1.1": 0}, active


def test_many_streams_share_one_connection(pki: Path) -> None:
    with EchoServer() as up, running(lambda _: _h2_config(pki, up.port), pki) as gw:
        urls = [f"https://localhost:{gw.port}/n/{i}" for i in range(40)]
        out = curl(
            "--http2",
            "--parallel",
            "--parallel-max",
            "40",
            *cert_args(pki),
            "-w",
            "%{http_version} %{http_code} %{num_connects}\n",
            "-o",
            "/dev/null",
            *[a for url in urls for a in (url, "-o", "/dev/null")][:-2],
        )
        assert out.returncode == 0, out.stderr
        lines = out.stdout.split()
        results = [tuple(lines[i : i + 3]) for i in range(0, len(lines), 3)]
        assert len(results) == 40
        assert {(v, s) for v, s, _ in results} == {("2", "200")}
        assert sum(int(n) for _, _, n in results) == 1  # one connection carried all 40


def test_bodies_both_ways_keep_their_bytes(pki: Path, tmp_path: Path) -> None:
    payload = bytes(range(256)) * 8192  # 2 MiB: more than any window
    (tmp_path / "up.bin").write_bytes(payload)
    with EchoServer() as up, running(lambda _: _h2_config(pki, up.port), pki) as gw:
        out = curl(
            "--http2",
            *cert_args(pki),
            "--data-binary",
            f"@{tmp_path / 'up.bin'}",
            f"https://localhost:{gw.port}/upload",
        )
        assert out.returncode == 0, out.stderr
        echoed = json.loads(out.stdout)
        assert echoed["body_bytes"] == len(payload)
        assert echoed["body_sha256"] == hashlib.sha256(payload).hexdigest()
        with H2Client(gw.port, pki) as client:  # a body without a length: chunked upstream
            sid = client.headers("/upload", method="POST", end=False)
            client.data(sid, payload[:300_000], end=True)
            ans = client.wait(sid)
            assert ans.status == 200 and json.loads(ans.body)["body_bytes"] == 300_000
            down = client.get("/bytes/3000000")
            assert down.status == 200 and len(down.body) == 3_000_000
            assert down.body[:512] == bytes(range(256)) * 2


def test_malformed_or_oversized_heads_are_refused_on_their_stream(pki: Path) -> None:
    with EchoServer() as up, running(lambda _: _h2_config(pki, up.port), pki) as gw:
        for bad in ([("host", "evil.example")], [("connection", "close")], [("Upper", "x")]):
            with H2Client(gw.port, pki) as client:  # malformed: the connection ends (GOAWAY)
                ans = client.get("/x", extra=bad)
                assert ans.status == 0 and client.terminated is not None, (bad, ans)
                assert client.terminated.error_code == 1  # PROTOCOL_ERROR
        assert (
            sample(
                gw.metrics(),
                "mtls_gateway_limits_hit_total",
                listener="public",
                limit="h2_protocol",
            )
            == 3
        )
        with H2Client(gw.port, pki) as client:  # within the limits: refused on its stream
            big = client.get("/x", extra=[("x-big", "a" * 9000)])
            assert big.status == 431, big
            plain = client.get("/x", scheme="http")
            assert plain.status == 400, plain
            after = client.get("/still-served")  # the connection carries on
            assert after.status == 200
        assert up.seen == ["GET /still-served"]


def test_a_listener_without_http2_stays_on_http1(pki: Path) -> None:
    with EchoServer() as up, running(lambda _: _h2_config(pki, up.port, http2=False), pki) as gw:
        out = curl(
            "--http2",
            *cert_args(pki),
            "-o",
            "/dev/null",
            "-w",
            "%{http_version}",
            f"https://localhost:{gw.port}/",
        )
        assert out.stdout == "1.1", out


def test_a_stream_whose_body_never_comes_gets_408_and_others_go_on(pki: Path) -> None:
    limits = {"body_timeout": "1s", "body_min_rate": 0}
    with (
        EchoServer() as up,
        running(lambda _: _h2_config(pki, up.port, limits=limits), pki) as gw,
        H2Client(gw.port, pki) as client,
    ):
        stalled = client.headers(
            "/upload", method="POST", extra=[("content-length", "10")], end=False
        )
        client.data(stalled, b"abc")  # 3 of the 10 bytes, then nothing
        assert client.get("/meanwhile").status == 200  # the connection serves others meanwhile
        ans = client.wait(stalled, timeout=5)
        assert ans.status == 408 and json.loads(ans.body)["error"] == "request_timeout", ans
        assert (
            sample(
                gw.metrics(),
                "mtls_gateway_limits_hit_total",
                listener="public",
                limit="body_timeout",
            )
            == 1
        )


def test_nghttp_multiplexes_requests_with_a_client_certificate(pki: Path) -> None:
    """nghttp (nghttp2's client), 20 requests on one connection with the dev client
    certificate: each answered 200 by the echo, which names the client."""
    nghttp = shutil.which("nghttp")
    if nghttp is None:
        pytest.skip("nghttp is not installed (Debian: nghttp2-client; .ci/run installs it)")
    with EchoServer() as up, running(lambda _: _routes(_h2_config(pki, up.port)), pki) as gw:
        out = subprocess.run(
            [nghttp, "-v", "-m", "20", "--cert", str(pki / "client.pem"), "--key", str(pki / "client.key"),
             f"https://localhost:{gw.port}/orders"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert out.stdout.count(":status: 200") == 20, out.stdout[-2000:]
        assert out.stdout.count("CN=client") >= 20  # the XFCC the echo saw, in its body
        assert len(up.seen) == 20


def test_the_access_line_names_the_protocol(pki: Path) -> None:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    def config(_: int) -> dict[str, Any]:
        cfg = _h2_config(pki, up.port)
        cfg["logging"] = {"level": "info", "access_log": True}
        return cfg

    logger, keep = logging.getLogger("gateway.access"), Keep(logging.INFO)
    old = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(keep)
    try:
        with EchoServer() as up, running(config, pki) as gw:
            for version in ("--http2", "--http1.1"):
                out = curl(version, *cert_args(pki), f"https://localhost:{gw.port}/p{version[2:]}")
                assert out.returncode == 0, out.stderr
    finally:
        logger.removeHandler(keep)
        logger.setLevel(old)
    fields = [getattr(r, EVENT_KEY) for r in records]
    seen = {f["path"]: f["protocol"] for f in fields}
    assert seen == {"/phttp2": "HTTP/2", "/phttp1.1": "HTTP/1.1"}, seen
