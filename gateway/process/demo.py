"""`mtls-gateway demo`: dev PKI if missing, the echo upstream, the gateway, ready-to-paste curls."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from yarl import URL

from gateway.base.log import setup as setup_logging
from gateway.pki import devcerts
from gateway.process.echo import start_echo
from gateway.process.eventloop import run_loop
from gateway.process.grpcecho import start_grpc_echo


def _rel(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def _command() -> str:
    """This command as a user can paste it from the current folder: its name when that is on
    PATH, otherwise its path (`.venv/bin/mtls-gateway` from the repository root)."""
    argv0 = Path(sys.argv[0])
    if argv0.name != "mtls-gateway":
        return f"{_rel(Path(sys.executable))} -m gateway"
    found = shutil.which("mtls-gateway")
    if found and Path(found).resolve() == argv0.resolve():
        return "mtls-gateway"
    return _rel(argv0) if argv0.parent != Path() else f"./{argv0}"


def _reachable(host: str) -> str:
    """The host a client on this machine uses for a listener bound to `host`."""
    if host in ("0.0.0.0", "::", "127.0.0.1", "::1", ""):
        return "localhost"
    return host


def _grpc_snippet(certs: Path, host: str, port: int) -> str:
    """A one-line grpcio call with the dev client certificate, ready to paste."""
    files = ", ".join(
        f"{arg}=open({_rel(certs / name)!r}, 'rb').read()"
        for arg, name in (
            ("root_certificates", "ca.pem"),
            ("private_key", "client.key"),
            ("certificate_chain", "client.pem"),
        )
    )
    return (
        f'python -c "import grpc; c = grpc.secure_channel({f"{host}:{port}"!r}, '
        f"grpc.ssl_channel_credentials({files})); "
        "print(c.unary_unary('/demo.Echo/Say')(b'hello', timeout=5))\""
    )


def run_demo(config_path: str, certs_dir: str, loop_kind: str) -> int:
    from gateway.pki.certfiles import load_checked
    from gateway.pki.crlfetch import fetch_missing
    from gateway.process.server import Gateway

    certs = Path(certs_dir)
    if devcerts.missing(certs):
        devcerts.generate(certs)
        print(f"wrote the dev PKI to {_rel(certs)}/", file=sys.stderr)
    cfg, held = load_checked(config_path, fetch_missing)  # a ConfigError is cli's to print
    setup_logging(cfg.logging.level)
    upstream = URL(cfg.upstreams[0].target_specs()[0].url)
    grpc = next((u for u in cfg.upstreams if u.name == "grpc-echo"), None)
    grpc_url = URL(grpc.target_specs()[0].url) if grpc is not None else None

    async def main() -> None:
        runner, _ = await start_echo(upstream.host or "127.0.0.1", upstream.port or 80)
        grpc_server = None
        if grpc_url is not None:
            grpc_server = await start_grpc_echo(grpc_url.host or "127.0.0.1", grpc_url.port or 80)
        gateway = Gateway(cfg, held=held, config_path=config_path)

        def announce() -> None:
            host, port = gateway.listeners[0].address
            name = _reachable(host)
            base = (
                f"curl --cacert {_rel(certs / 'ca.pem')} --cert {_rel(certs / 'client.pem')} "
                f"--key {_rel(certs / 'client.key')}"
            )
            lines = [
                "",
                f"mtls-gateway demo: listening on https://{name}:{port}, echo upstream on {upstream}",
                "",
                "allowed (200, the echo upstream names the client):",
                f"  {base} https://{name}:{port}/hello",
                "denied by the route policy (403 client_cert_not_allowed):",
                f"  {base} https://{name}:{port}/admin",
                "refused at the handshake (no client certificate; see the metrics):",
                f"  curl --cacert {_rel(certs / 'ca.pem')} https://{name}:{port}/hello",
                "why a certificate is accepted or not, step by step:",
                f"  {_command()} explain -c {_rel(Path(config_path))} "
                f"--cert {_rel(certs / 'client-revoked.pem')} --host localhost --path /hello",
            ]
            if grpc_url is not None:
                lines += [
                    f"gRPC (needs `pip install grpcio`; the echo upstream on {grpc_url} sends "
                    "each message back):",
                    f"  {_grpc_snippet(certs, name, port)}",
                ]
            if gateway.admin is not None:
                ahost, aport = gateway.admin.address
                ahost = "127.0.0.1" if ahost in ("0.0.0.0", "::") else ahost
                lines += [
                    "metrics:",
                    f"  curl -s http://{ahost}:{aport}/metrics | grep mtls_gateway_",
                    "reload after editing the config or a certificate (or just save the file):",
                    f"  curl -s -X POST http://{ahost}:{aport}/reload",
                ]
            lines += ["", "Ctrl-C stops the demo.", ""]
            print("\n".join(lines), file=sys.stderr, flush=True)

        try:
            await gateway.serve_until_signalled(on_ready=announce)
        finally:
            if grpc_server is not None:
                grpc_server.close()
            await runner.cleanup()

    try:
        run_loop(main(), loop_kind)
    except OSError as exc:
        print(f"error: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0
