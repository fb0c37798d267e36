"""What session resumption costs the server, in-process over memory BIOs (no sockets, no loop).

    python -m bench.sessions [--sessions N]

For stateless tickets (`session_cache: 0`) and the server-side cache (`session_cache: N`):
the server's CPU per full and per resumed handshake, and the memory that 20,480 more clients
leave behind: with a cache that keeps them all (what OpenSSL's default cache, which Python
cannot size, would hold) and with the default bound (`session_cache: 2048`, kept by
renewing the context)."""

from __future__ import annotations

import argparse
import contextlib
import gc
import resource
import ssl
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

from gateway.config.listener import TlsConfig
from gateway.pki.devcerts import generate
from gateway.pki.tls import ServerContexts, server_context


def _rss_kib() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _drive(server: ssl.SSLObject, client: ssl.SSLObject, bios: tuple[ssl.MemoryBIO, ...]) -> float:
    """Run the handshake; returns the server's CPU seconds (process time while it steps)."""
    c_in, c_out, s_in, s_out = bios
    spent = 0.0
    done_c = done_s = False
    while not (done_c and done_s):
        done_c = done_c or _step(client)
        s_in.write(c_out.read())
        t = time.process_time()
        done_s = done_s or _step(server)
        spent += time.process_time() - t
        c_in.write(s_out.read())
    server.write(b"ok")
    c_in.write(s_out.read())
    client.read(2)  # the client takes its ticket
    for side in (server, client):  # closed properly, or OpenSSL forgets the session
        with contextlib.suppress(ssl.SSLWantReadError):
            side.unwrap()
    return spent


def _step(obj: ssl.SSLObject) -> bool:
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        return False
    return True


def _one(
    contexts: ServerContexts,
    client_ctx: ssl.SSLContext,
    session: ssl.SSLSession | None,
    keep: bool = False,
) -> tuple[float, ssl.SSLSession | None, bool]:
    """One handshake; the client's session only when `keep` (CPython's getter of
    `SSLObject.session` leaks a few KiB a call, which would count as the server's)."""
    bios = (ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO())
    c = client_ctx.wrap_bio(bios[0], bios[1], server_hostname="localhost", session=session)
    s = contexts.current().wrap_bio(bios[2], bios[3], server_side=True)
    spent = _drive(s, c, bios)
    return spent, c.session if keep else None, c.session_reused


def measure(pki: Path, cache: int, sessions: int, rounds: int) -> dict[str, float]:
    cfg = TlsConfig.model_validate(
        {
            "cert": str(pki / "server.pem"),
            "key": str(pki / "server.key"),
            "client_ca": [str(pki / "ca.pem")],
            "session_cache": cache,
            "session_timeout": "1h",
        }
    )
    contexts = ServerContexts(partial(server_context, cfg, "tls"), cfg, "tls")
    client_ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    client_ctx.load_cert_chain(pki / "client.pem", pki / "client.key")
    full = [_one(contexts, client_ctx, None) for _ in range(rounds)]
    kept = _one(contexts, client_ctx, None, keep=True)[1]
    resumed = [_one(contexts, client_ctx, kept) for _ in range(rounds)]
    assert all(r[2] for r in resumed), "sessions did not resume"
    gc.collect()
    before = _rss_kib()
    for _ in range(sessions):
        _one(contexts, client_ctx, None)  # only the server may keep the session
    gc.collect()
    grown = _rss_kib() - before
    return {
        "full_ms": 1000 * sum(f[0] for f in full) / rounds,
        "resumed_ms": 1000 * sum(r[0] for r in resumed) / rounds,
        "kept": contexts.current().session_stats()["number"],
        "rss_per_session_kib": grown / sessions,
        "rss_mib": grown / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=20480)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--mode", choices=["tickets", "cache"])
    parser.add_argument("--cache", type=int, default=0, help="session_cache (0: all sessions)")
    args = parser.parse_args()
    if (
        args.mode is None
    ):  # each mode in a process of its own, so that one's heap is not the other's
        for mode, cache in (("tickets", 0), ("cache", 0), ("cache", 2048)):
            argv = ["--sessions", str(args.sessions), "--rounds", str(args.rounds)]
            argv += ["--mode", mode, "--cache", str(cache)]
            subprocess.run([sys.executable, "-m", "bench.sessions", *argv], check=True)
        return
    with tempfile.TemporaryDirectory() as tmp:
        pki = Path(tmp)
        generate(pki)
        cache = args.cache or args.sessions + 2 * args.rounds + 2
        cache = 0 if args.mode == "tickets" else cache
        r = measure(pki, cache, args.sessions, args.rounds)
    print(
        f"{args.mode} {cache or '':6} server CPU full {r['full_ms']:.3f} ms, resumed {r['resumed_ms']:.3f} ms;"
        f" {args.sessions} more clients: {r['kept']:.0f} sessions kept,"
        f" RSS +{r['rss_mib']:.1f} MiB ({r['rss_per_session_kib']:.1f} KiB per client);"
        f" peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MiB"
    )


if __name__ == "__main__":
    main()
