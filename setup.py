"""The request path compiled to C with mypyc, where a compiler is at hand.

Each module below is plain, type-checked Python; mypyc turns it into a C extension that runs
the same code faster (BENCHMARKS.md). Without a C compiler, or with
MTLS_GATEWAY_COMPILE=0, the package installs and runs as plain Python, only slower."""

from __future__ import annotations

import os
import sys

from setuptools import setup

# the modules every proxied request runs through
COMPILED = [
    "accesslog",
    "attempts",
    "bounded",
    "bytestream",
    "h1messages",
    "h1reader",
    "h1response",
    "connections",
    "deadlines",
    "exchange",
    "handler",
    "headers",
    "http1",
    "listener",
    "policy",
    "proxy",
    "routing",
    "tally",
    "targets",
    "tlsconn",
    "upstreamconn",
    "upstreampool",
]


def _extensions() -> list:  # type: ignore[type-arg]
    if os.environ.get("MTLS_GATEWAY_COMPILE", "1") == "0":
        return []
    try:
        from mypyc.build import mypycify

        extensions = mypycify(
            [f"gateway/{name}.py" for name in COMPILED],
            opt_level="3",
            group_name="gateway.request_path",
        )
    except (Exception, SystemExit) as exc:  # no mypyc, or the type check failed (no deps)
        print(f"mtls-gateway: not compiled ({exc}); running as plain Python", file=sys.stderr)
        return []
    for ext in extensions:
        ext.optional = True  # no C compiler: the plain Python modules are used
    return extensions


setup(ext_modules=_extensions())
