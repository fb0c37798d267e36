"""What the gateway authorizes is what the upstream executes, against real origin servers.

For each origin (origins.py), the gateway runs in front of it with nested routes: `/api/admin`
(a policy the test client does not pass), `/api` (accepts `;` path parameters, forwards the
client's identity), `/public` and `/`. The corpus (corpus.py) goes through the gateway, and for
every request the gateway forwarded, the origin's own view must agree with the gateway's:

- the path the origin routes on, matched against the gateway's route table, lands on the route
  the gateway decided on (so the admin policy can never be skipped);
- the origin saw exactly the gateway's identity headers, none of the client's;
- the origin read exactly the body the client sent.

`make differential` runs it (CI too); the origins start from the test, on loopback."""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.config.load import parse_config
from gateway.http.headers import sf_binary
from gateway.request.routing import Router
from tests.differential.corpus import FORGED, Case, corpus
from tests.differential.origins import NGINX_NAMES, ORIGINS, origin
from tests.harness import base_config, client_context, running

pytestmark = pytest.mark.differential

CORPUS_SIZE = 2000
OURS = {"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-request-id"}
FORWARDED_IDENTITY = {"client-cert", "x-forwarded-client-cert"}
FORGED_NAMES = {name.lower() for name in FORGED}


def _routes() -> list[dict[str, Any]]:
    return [
        {
            "name": "admin",
            "match": {"path_prefix": "/api/admin"},
            "upstream": "echo",
            "policy": {"allow": [{"san_uri": ["spiffe://dev.local/client-intermediate"]}]},
        },
        {
            "name": "api",
            "match": {"path_prefix": "/api", "path_parameters": True},
            "upstream": "echo",
            "policy": {"allow": "any"},
            "forward_identity": ["rfc9440", "xfcc"],
        },
        {
            "name": "public",
            "match": {"path_prefix": "/public"},
            "upstream": "echo",
            "policy": {"allow": "any"},
        },
        {
            "name": "root",
            "match": {"path_prefix": "/"},
            "upstream": "echo",
            "policy": {"allow": "any"},
        },
    ]


class _AccessLines(logging.Handler):
    """The gateway's access lines (in process), by request id: the route it decided on."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.routes: dict[str, str] = {}

    def emit(self, record: logging.LogRecord) -> None:
        fields = getattr(record, "event", {})
        if "request_id" in fields:
            self.routes[fields["request_id"]] = fields.get("route", "")


class _Client:
    """Keep-alive HTTPS with the test client's certificate; reconnects after a close."""

    def __init__(self, port: int, pki: Path) -> None:
        self._ctx = client_context(pki)
        self._port = port
        self._conn: http.client.HTTPSConnection | None = None

    def send(self, case: Case) -> tuple[int, dict[str, str], bytes]:
        if self._conn is None:
            self._conn = http.client.HTTPSConnection(
                "localhost", self._port, context=self._ctx, timeout=30
            )
        conn = self._conn
        try:
            conn.putrequest(case.method, case.target, skip_host=True, skip_accept_encoding=True)
            conn.putheader("Host", case.host)
            for name, value in case.headers:
                conn.putheader(name, value)
            if case.body is not None:
                if case.chunked:
                    conn.putheader("Transfer-Encoding", "chunked")
                else:
                    conn.putheader("Content-Length", str(len(case.body)))
            conn.endheaders()
            if case.body is not None:
                if case.chunked:
                    conn.send(b"".join(_chunks(case.body)))
                else:
                    conn.send(case.body)
            resp = conn.getresponse()
            data = resp.read()
            status, headers = resp.status, {k.lower(): v for k, v in resp.getheaders()}
            if resp.will_close:
                self.close()
            return status, headers, data
        except (OSError, http.client.HTTPException):
            self.close()
            raise

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _brief(case: Case) -> str:
    body = f" body {len(case.body)}{' chunked' if case.chunked else ''}" if case.body else ""
    return f"{case.method} {case.target!r} Host {case.host!r} {case.headers}{body}"


def _chunks(body: bytes) -> list[bytes]:
    out = [b"%x\r\n%s\r\n" % (len(body[i : i + 4096]), body[i : i + 4096])
           for i in range(0, len(body), 4096)]  # fmt: skip
    return [*out, b"0\r\n\r\n"]


def _seen(name: str, data: bytes) -> tuple[str, list[tuple[str, str]], int | None, str | None]:
    """(routed path, headers, body length, body SHA-256) as the origin reported them."""
    if name == "nginx":
        lines = [line.partition(": ") for line in data.decode().splitlines()]
        fields = {k: v for k, _, v in lines}
        headers = [(n, fields[n]) for n in NGINX_NAMES if fields.get(n)]
        length = fields.get("content-length")
        return fields["path"], headers, int(length) if length else None, None
    doc = json.loads(data)
    headers = [(k.lower().replace("_", "-"), v) for k, v in doc["headers"]]
    return doc["path"], headers, doc["body_len"], doc["body_sha256"]


@pytest.mark.parametrize("name", ORIGINS)
def test_the_origin_executes_what_the_gateway_authorized(
    name: str, pki: Path, tmp_path: Path
) -> None:
    client_der = _client_der(pki)
    with origin(name, tmp_path) as port:
        if port is None:
            pytest.skip(f"{name} is not installed (.ci/run installs it)")

        def config(_echo: int) -> dict[str, Any]:
            doc = base_config(pki, port)
            doc["routes"] = _routes()
            doc["logging"] = {"level": "warning", "access_log": True}
            return doc

        table = Router(parse_config(config(0), pki).routes)
        access = _AccessLines()
        logger = logging.getLogger("gateway.access")
        old_level = logger.level
        logger.setLevel(logging.INFO)
        logger.addHandler(access)
        started = time.monotonic()
        problems: list[str] = []
        forwarded = 0
        try:
            with running(config, pki) as gw:
                client = _Client(gw.port, pki)
                previous = ""
                for case in corpus(CORPUS_SIZE, gw.port):
                    try:
                        status, headers, data = client.send(case)
                    except (OSError, http.client.HTTPException) as exc:
                        problems.append(f"{_brief(case)}: no answer ({exc!r}) after {previous}")
                        continue
                    previous = f"{_brief(case)} -> {status} {headers.get('connection', '')}"
                    if status != 200 or b'"error"' in data[:20]:
                        continue  # the gateway refused it (or the origin did): nothing ran
                    forwarded += 1
                    problems += _disagreements(name, case, headers, data, access, table, client_der)
                client.close()
        finally:
            logger.removeHandler(access)
            logger.setLevel(old_level)
        elapsed = time.monotonic() - started
        print(f"\n{name}: {CORPUS_SIZE} requests, {forwarded} forwarded, {elapsed:.1f} s")
        assert forwarded > CORPUS_SIZE // 4, "too few requests reached the origin to compare"
        assert not problems, f"{len(problems)} disagreements:\n" + "\n".join(problems[:20])


def _disagreements(
    name: str,
    case: Case,
    headers: dict[str, str],
    data: bytes,
    access: _AccessLines,
    table: Router,
    client_der: bytes,
) -> list[str]:
    where = _brief(case)
    request_id = headers.get("x-request-id", "")
    route = access.routes.get(request_id)
    if route is None:
        return [f"{where}: no access line for request id {request_id!r}"]
    path, seen, body_len, body_sha = _seen(name, data)
    out = []
    try:
        executed = table.match(None, path, case.method).name
    except Exception as exc:
        executed = f"no route ({exc})"
    if executed != route:
        out.append(
            f"{where}: the gateway decided {route!r}, the origin routed {path!r} ({executed})"
        )
    # judged by the corpus's own names and values, not by the gateway's rules under test
    identity = [(k, v) for k, v in seen if k in OURS | FORWARDED_IDENTITY | FORGED_NAMES]
    expected = OURS | (FORWARDED_IDENTITY if route == "api" else set())
    if sorted(k for k, _ in identity) != sorted(expected):
        out.append(
            f"{where}: the origin saw identity fields {identity}, expected {sorted(expected)}"
        )
    values = dict(identity)
    forged = [(k, v) for k, v in seen if v == "forged"]
    if values.get("x-forwarded-for", "127.0.0.1") != "127.0.0.1" or forged:
        out.append(f"{where}: a forged identity value reached the origin: {forged or identity}")
    tenants = sum(1 for _, v in seen if v == "t1")
    valid = sum(1 for k, _ in case.headers if k == "X-Tenant")
    if tenants != valid:
        out.append(f"{where}: {tenants} X-Tenant values reached the origin, {valid} validly named")
    if route == "api" and values.get("client-cert") not in (None, sf_binary(client_der)):
        out.append(f"{where}: Client-Cert is not the client's certificate")
    sent = case.body or b""
    if body_len is not None and case.method not in ("GET", "DELETE") and body_len != len(sent):
        out.append(f"{where}: the origin read {body_len} body bytes, the client sent {len(sent)}")
    if (
        body_sha is not None
        and body_len == len(sent)
        and body_sha != hashlib.sha256(sent).hexdigest()
    ):
        out.append(f"{where}: the origin read another body than the client sent")
    return out


def _client_der(pki: Path) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    return x509.load_pem_x509_certificate((pki / "client.pem").read_bytes()).public_bytes(
        Encoding.DER
    )
