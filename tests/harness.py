"""Test helpers: a real gateway + echo upstream on 127.0.0.1 in a background loop, real clients."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import ssl
import subprocess
import threading
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from gateway.config.load import parse_config
from gateway.pki import devcerts
from gateway.pki.certfiles import check_files
from gateway.process.echo import SEEN, start_echo
from gateway.process.server import Gateway

ConfigFactory = Callable[[int], dict[str, Any]]  # echo port -> config document


async def _closed_sockets_released() -> None:
    """Closed transports close their sockets in callbacks queued for the next loop iteration:
    run those before the loop stops, or the sockets are left to the garbage collector (and its
    ResourceWarning lands in whichever test happens to run then)."""
    for _ in range(3):
        await asyncio.sleep(0)


class RunningGateway:
    """A gateway and an echo upstream served by one event loop in a daemon thread."""

    def __init__(self, make_config: ConfigFactory, base_dir: Path, use_uvloop: bool = False):
        self._make_config = make_config
        self._base_dir = base_dir
        self._uvloop = use_uvloop
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.gateway: Gateway | None = None
        self.echo_port = 0
        self.echo_seen: list[str] = []
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        if self._uvloop:
            import uvloop

            self.loop = uvloop.new_event_loop()
        else:
            self.loop = asyncio.new_event_loop()
        try:
            self.loop.run_until_complete(self._serve())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
        finally:
            self.loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        runner, self.echo_port = await start_echo()
        self.echo_seen = runner.app[SEEN]
        try:
            cfg = parse_config(self._make_config(self.echo_port), self._base_dir)
            problems, held = check_files(cfg)
            assert not problems, problems
            self.gateway = Gateway(cfg, held=held)
            await self.gateway.start()
            self._ready.set()
            await self._stop.wait()
            await self.gateway.stop(drain_seconds=2)
        finally:
            await runner.cleanup()
            await _closed_sockets_released()

    def start(self) -> RunningGateway:
        self._thread.start()
        if not self._ready.wait(20):
            raise TimeoutError("gateway did not start")
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        if self.loop is not None and self._stop is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(15)

    @property
    def port(self) -> int:
        assert self.gateway is not None
        return self.gateway.listeners[0].address[1]

    def listener_port(self, index: int) -> int:
        assert self.gateway is not None
        return self.gateway.listeners[index].address[1]

    @property
    def admin_port(self) -> int:
        assert self.gateway is not None and self.gateway.admin is not None
        return self.gateway.admin.address[1]

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return scrape(self.admin_port)


@contextmanager
def running(
    make_config: ConfigFactory, base_dir: Path, use_uvloop: bool = False
) -> Iterator[RunningGateway]:
    gw = RunningGateway(make_config, base_dir, use_uvloop).start()
    try:
        yield gw
    finally:
        gw.stop()


def scrape(admin_port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """All samples on /metrics as {(name, sorted labels): value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def sample(
    metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float], metric: str, **labels: str
) -> float:
    return metrics.get((metric, tuple(sorted(labels.items()))), 0.0)


def client_context(
    pki: Path, cert: str | None = "client", *, server_ca: bool = True
) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem") if server_ca else None)
    if cert is not None:
        ctx.load_cert_chain(pki / f"{cert}.pem", pki / f"{cert}.key")
    return ctx


class Reply:
    def __init__(self, status: int, headers: dict[str, str], body: bytes):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)

    def upstream_headers(self) -> list[tuple[str, str]]:
        """The headers the echo upstream received."""
        return [(k, v) for k, v in self.json()["headers"]]


def request(
    port: int,
    path: str,
    pki: Path,
    cert: str | None = "client",
    *,
    method: str = "GET",
    headers: list[tuple[str, str]] | None = None,
    body: bytes | None = None,
    server_name: str = "localhost",
) -> Reply:
    """One HTTPS request with a client certificate; `headers` are sent verbatim (repeats allowed)."""
    ctx = client_context(pki, cert)
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    conn._tunnel_host = None
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn.sock = ctx.wrap_socket(sock, server_hostname=server_name)
    conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
    names = {k.lower() for k, _ in headers or []}
    if "host" not in names:
        conn.putheader("Host", f"{server_name}:{port}")
    for k, v in headers or []:
        conn.putheader(k, v)
    if body is not None:
        conn.putheader("Content-Length", str(len(body)))
    try:
        conn.endheaders(body)
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)


def cert_args(pki: Path, cert: str = "client") -> list[str]:
    """curl options: trust the dev CA and present `cert`."""
    return [
        "--cacert",
        str(pki / "ca.pem"),
        "--cert",
        str(pki / f"{cert}.pem"),
        "--key",
        str(pki / f"{cert}.key"),
    ]


def curl(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "-sS", *args], capture_output=True, text=True, timeout=timeout)


def base_config(pki: Path, echo_port: int, **listener_tls: Any) -> dict[str, Any]:
    """A valid baseline: one listener (require), one echo upstream, a catch-all route."""
    tls = {
        "cert": str(pki / "server.pem"),
        "key": str(pki / "server.key"),
        "client_ca": [str(pki / "ca.pem")],
        "client_auth": "require",
        "handshake_timeout": "1s",
    }
    tls.update(listener_tls)
    return {
        "listeners": [{"name": "public", "bind": "127.0.0.1:0", "tls": tls}],
        "upstreams": [{"name": "echo", "url": f"http://127.0.0.1:{echo_port}"}],
        "routes": [{"name": "all", "upstream": "echo", "policy": {"allow": "any"}}],
        "admin": {"bind": "127.0.0.1:0"},
        "logging": {"level": "warning", "access_log": False},
    }


class EchoServer:
    """The echo upstream alone, in its own loop thread (for process-level tests)."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None, app: Any = None) -> None:
        self.port = 0
        self._ssl = ssl_context
        self._app = app  # another aiohttp Application to serve instead of the echo
        self.seen: list[str] = []
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(
            target=self._loop.run_until_complete, args=(self._serve(),), daemon=True
        )

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        if self._app is not None:
            from aiohttp import web

            runner = web.AppRunner(self._app, access_log=None, handle_signals=False)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=self._ssl)
            await site.start()
            self.port = runner.addresses[0][1]
        else:
            runner, self.port = await start_echo(ssl_context=self._ssl)
            self.seen = runner.app[SEEN]
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()
        await _closed_sockets_released()

    def __enter__(self) -> EchoServer:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        self._loop.close()


class GatewayProcess:
    """The real `mtls-gateway run` command on a config file written by the test."""

    def __init__(self, config_path: Path, admin_port: int, nofile: int | None = None):
        self.config_path = config_path
        self.admin_port = admin_port
        self.nofile = nofile  # RLIMIT_NOFILE for the gateway process
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = config_path.with_suffix(".log")

    def _limit_files(self) -> None:
        import resource

        assert self.nofile is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))

    def logs(self) -> str:
        """Everything the gateway wrote (stdout and stderr) so far."""
        return self.log_path.read_text(errors="replace")

    def __enter__(self) -> GatewayProcess:
        import sys
        import time

        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gateway",
                    "run",
                    "-c",
                    str(self.config_path),
                    "--workers",
                    "1",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=self._limit_files if self.nofile else None,
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited {self.proc.returncode}: {self.logs()}")
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.admin_port}/readyz", timeout=1
                ) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        raise TimeoutError("gateway not ready")

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def peak_rss_kib(self) -> int:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise RuntimeError("no VmHWM")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(
    tmp_path: Path, pki: Path, echo_port: int, **changes: Any
) -> tuple[Path, int, int]:
    """The baseline config on free ports, written to `tmp_path/gateway.yaml` for the real command."""
    import yaml

    cfg = base_config(pki, echo_port)
    port, admin = free_port(), free_port()
    cfg["listeners"][0]["bind"] = f"127.0.0.1:{port}"
    cfg["admin"]["bind"] = f"127.0.0.1:{admin}"
    cfg["logging"] = {"level": "info", "access_log": True}
    cfg.update(changes)
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, port, admin


def dev_root(pki: Path) -> devcerts.Issued:
    """The dev root CA with its key, to issue extra certificates and CRLs in tests."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = serialization.load_pem_private_key((pki / "ca.key").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return devcerts.Issued(x509.load_pem_x509_certificate((pki / "ca.pem").read_bytes()), key)


HANDSHAKES = "mtls_gateway_tls_handshakes_total"
EXPIRY = "mtls_gateway_certificate_expiry_timestamp_seconds"


def handshake_counts(
    metrics: Callable[[], dict[tuple[str, tuple[tuple[str, str], ...]], float]],
) -> dict[str, float]:
    """tls_handshakes_total of listener `public` by result."""
    return {
        labels[1][1]: v
        for (name, labels), v in metrics().items()
        if name == HANDSHAKES and labels[0] == ("listener", "public")
    }


def wait_delta(
    metrics: Callable[[], dict[tuple[str, tuple[tuple[str, str], ...]], float]],
    before: dict[str, float],
    want: dict[str, float],
) -> dict[str, float]:
    """Poll (up to 5 s) until the handshake counts moved by exactly `want`; return the change."""
    import time

    deadline = time.monotonic() + 5
    while True:
        after = handshake_counts(metrics)
        got = {
            k: after.get(k, 0) - before.get(k, 0)
            for k in set(after) | set(before)
            if after.get(k, 0) != before.get(k, 0)
        }
        if got == want or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def issue_server(pki: Path, out: Path, stem: str, days: float = 365) -> int:
    """A fresh server cert for localhost/127.0.0.1 from the dev root; returns its serial."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    item = devcerts.issue(
        devcerts.name("localhost"),
        dev_root(pki),
        eku=[ExtendedKeyUsageOID.SERVER_AUTH],
        sans=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
        not_after=dt.datetime.now(dt.UTC) + dt.timedelta(days=days),
    )
    out.mkdir(parents=True, exist_ok=True)
    devcerts.write_issued(out, stem, item, p12=False)
    return int(item.cert.serial_number)


def refused(port: int) -> bool:
    """True when nothing accepts connections on 127.0.0.1:`port` any more."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def expiry(
    metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float], kind: str, name: str
) -> dict[str, float]:
    """certificate_expiry_timestamp_seconds of (kind, name), one value per serial."""
    out = {}
    for (metric, labels), value in metrics.items():
        fields = dict(labels)
        if metric == EXPIRY and fields["kind"] == kind and fields["name"] == name:
            out[fields.get("serial", "")] = value
    return out
