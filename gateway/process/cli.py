"""Command line: run, check, dev-certs, demo. The only module that exits the process."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from gateway import __version__
from gateway.base.errors import ConfigError
from gateway.base.log import setup as setup_logging
from gateway.config.model import GatewayConfig
from gateway.pki import devcerts
from gateway.pki.certfiles import HeldCert, load_checked
from gateway.pki.crlfetch import fetch_missing
from gateway.process.eventloop import run_loop

EXIT_OK, EXIT_RUNTIME, EXIT_CONFIG = 0, 1, 2


def _fail(message: str, code: int) -> int:
    print(message, file=sys.stderr)
    return code


def _config_error(path: str, exc: ConfigError) -> int:
    lines = [f"{path}: invalid configuration ({len(exc.problems)} problem(s)):"]
    lines += [f"  {p}" for p in exc.problems]
    return _fail("\n".join(lines), EXIT_CONFIG)


def cmd_run(args: argparse.Namespace) -> int:
    try:
        cfg, held = load_checked(args.config, fetch_missing)
    except ConfigError as exc:
        return _config_error(args.config, exc)
    setup_logging(cfg.logging.level)
    if args.pid_file and not args.worker:
        try:
            with _pid_file(Path(args.pid_file)):
                return _serve(args, cfg, held)
        except OSError as exc:
            return _fail(f"error: pid file {args.pid_file}: {exc.strerror or exc}", EXIT_RUNTIME)
    return _serve(args, cfg, held)


@contextlib.contextmanager
def _pid_file(path: Path) -> Iterator[None]:
    """This process's pid in `path` while it serves (the supervisor's under --workers: the one
    SIGHUP and SIGTERM go to), removed when it exits."""
    import os

    path.write_text(f"{os.getpid()}\n", encoding="ascii")
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def _serve(args: argparse.Namespace, cfg: GatewayConfig, held: list[HeldCert]) -> int:
    if args.workers > 1 and not args.worker:
        from gateway.process.supervisor import Supervisor

        async def supervise() -> None:
            await Supervisor(cfg, args.config, args.workers, args.loop, held).run()

        try:
            run_loop(supervise(), args.loop)
        except OSError as exc:
            return _fail(f"error: {exc.strerror or exc}", EXIT_RUNTIME)
        return EXIT_OK

    from gateway.process.server import Gateway

    async def main() -> None:
        gateway = Gateway(
            cfg,
            held=held,
            config_path=args.config,
            serve_admin=not args.worker,
            state_file=_worker_state_file() if args.worker else None,
        )
        orphan_watch = None
        if args.worker:
            orphan_watch = asyncio.get_running_loop().create_task(_exit_with_supervisor())
        try:
            await gateway.serve_until_signalled(on_ready=_tell_supervisor if args.worker else None)
        finally:
            if orphan_watch is not None:
                orphan_watch.cancel()

    try:
        run_loop(main(), args.loop)
    except OSError as exc:
        return _fail(f"error: {exc.strerror or exc}", EXIT_RUNTIME)
    except ConfigError as exc:
        return _config_error(args.config, exc)
    return EXIT_OK


def _worker_state_file() -> Path | None:
    """Where this worker shares what it serves with the supervisor's admin port."""
    import os

    from gateway.ops.workerstate import state_file
    from gateway.process.supervisor import MULTIPROC_ENV

    metrics_dir = os.environ.get(MULTIPROC_ENV)
    return state_file(metrics_dir, os.getpid()) if metrics_dir else None


def _tell_supervisor() -> None:
    """A worker is serving: one byte on the pipe the supervisor gave it."""
    import os

    from gateway.process.supervisor import READY_FD_ENV

    fd = os.environ.get(READY_FD_ENV)
    if fd:
        os.write(int(fd), b"1")
        os.close(int(fd))


async def _exit_with_supervisor() -> None:
    """A worker whose supervisor died (even by SIGKILL) drains and exits like on SIGTERM."""
    import os
    import signal

    parent = os.getppid()
    while True:  # the kernel tells no one; a cheap poll of the parent pid does
        await asyncio.sleep(1.0)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)
            return


def _default_workers() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cmd_check(args: argparse.Namespace) -> int:
    from gateway.config.load import load_config
    from gateway.pki.certfiles import check_files, key_permission_problems

    try:
        cfg = load_config(args.config)
        problems = fetch_missing(cfg)
        more, held = check_files(cfg)
        if problems or more:
            raise ConfigError(problems + more)
    except ConfigError as exc:
        return _config_error(args.config, exc)
    for warning in key_permission_problems(cfg, honour_allow=False):
        print(f"warning: {warning}", file=sys.stderr)
    from gateway.observe.metrics import Metrics
    from gateway.request.serving import build_snapshot

    try:  # OpenSSL must accept every file too
        build_snapshot(cfg, Metrics())
    except ConfigError as exc:
        return _config_error(args.config, exc)
    print(
        f"{args.config}: OK ({len(cfg.listeners)} listener(s), {len(cfg.upstreams)} upstream(s), "
        f"{len(cfg.routes)} route(s), {len(held)} certificate(s) checked)"
    )
    return EXIT_OK


def _password(path: str | None, env: str | None) -> str | None:
    """A secret from a file (first line) or an environment variable; never from argv."""
    import os

    from gateway.process.explain import InputError

    if path is not None:
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or exc
            raise InputError(f"cannot read the password file {path}: {reason}") from None
        return lines[0] if lines else ""
    if env is not None:
        if env not in os.environ:
            raise InputError(f"environment variable {env} is not set")
        return os.environ[env]
    return None


def cmd_explain(args: argparse.Namespace) -> int:
    import datetime as dt
    import json

    from gateway.config.load import load_config
    from gateway.process.explain import InputError, explain, read_client_cert, render

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        return _config_error(args.config, exc)
    at = None
    if args.at:
        try:
            at = dt.datetime.fromisoformat(args.at.replace("Z", "+00:00"))
        except ValueError:
            return _fail(
                f"--at {args.at!r}: write an ISO time like 2026-12-01T00:00:00Z", EXIT_CONFIG
            )
        if at.tzinfo is None:
            at = at.replace(tzinfo=dt.UTC)
    try:
        password = _password(args.password_file, args.password_env)
        leaf, chain = read_client_cert(args.cert, password, args.chain or [])
        out = explain(
            cfg,
            leaf,
            chain,
            listener=args.listener,
            route=args.route,
            host=args.host,
            path=args.path,
            method=args.method,
            online=args.online,
            at=at,
        )
    except InputError as exc:
        return _fail(f"error: {exc}", EXIT_CONFIG)
    except ConfigError as exc:
        return _config_error(args.config, exc)
    if args.json:
        print(json.dumps(out.as_dict(), indent=2))
    else:
        print(render(out, args.cert))
    return EXIT_OK if out.allowed else EXIT_RUNTIME


def cmd_schema(_args: argparse.Namespace) -> int:
    from gateway.config.schema import config_schema_text

    sys.stdout.write(config_schema_text())
    return EXIT_OK


def cmd_dev_certs(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if not args.force and not devcerts.missing(out):
        print(f"{out}: dev PKI already present (use --force to replace it)")
        return EXIT_OK
    devcerts.generate(out, extra_hosts=args.host or ())
    print(f"{out}: wrote the dev PKI (see {out / 'README.md'}); never use it outside development")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from gateway.process.demo import run_demo

    try:
        return run_demo(args.config, args.certs, args.loop)
    except ConfigError as exc:
        return _config_error(args.config, exc)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mtls-gateway", description="mTLS edge gateway")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run the gateway in the foreground")
    p.add_argument("-c", "--config", required=True, help="YAML config file")
    p.add_argument(
        "--loop",
        choices=("auto", "uvloop", "asyncio"),
        default="auto",
        help="event loop (auto: uvloop when installed)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=_default_workers(),
        help="worker processes sharing the ports (default: one per usable CPU); 1 runs in-process",
    )
    p.add_argument(
        "--pid-file",
        metavar="FILE",
        help="write the pid to signal (SIGHUP reloads, SIGTERM drains) here; removed on exit",
    )
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("check", help="validate a config and every file it references")
    p.add_argument("-c", "--config", required=True, help="YAML config file")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser(
        "explain",
        help="would this client certificate get through, and why (exit 0 allowed, 1 denied)",
    )
    p.add_argument("-c", "--config", required=True, help="YAML config file")
    p.add_argument("--cert", required=True, help="client certificate: PEM, DER or PKCS#12")
    p.add_argument(
        "--password-file", help="file holding the PKCS#12 password (never on the command line)"
    )
    p.add_argument(
        "--password-env", metavar="VAR", help="environment variable holding the PKCS#12 password"
    )
    p.add_argument("--chain", action="append", help="intermediates the client sends (repeatable)")
    p.add_argument("--listener", help="listener name (default: the first)")
    p.add_argument("--route", help="route name")
    p.add_argument("--host", help="request host (with --path: find the route like the gateway)")
    p.add_argument("--path", help="request path")
    p.add_argument("--method", default="GET", help="request method (default GET)")
    p.add_argument("--online", action="store_true", help="query the OCSP responder")
    p.add_argument("--at", help="evaluate at this time (ISO 8601, default now)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("schema", help="print the JSON Schema of the config file")
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser("dev-certs", help="write the development PKI")
    p.add_argument("--out", required=True, help="directory to write into")
    p.add_argument("--host", action="append", help="extra SAN for the server cert (repeatable)")
    p.add_argument("--force", action="store_true", help="replace an existing dev PKI")
    p.set_defaults(func=cmd_dev_certs)

    p = sub.add_parser("demo", help="dev certs + echo upstream + gateway on config/demo.yaml")
    p.add_argument("-c", "--config", default="config/demo.yaml")
    p.add_argument("--certs", default="certs-dev", help="where the dev PKI lives")
    p.add_argument("--loop", choices=("auto", "uvloop", "asyncio"), default="auto")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        code = 130
    return code


def entry() -> None:
    sys.exit(main())
