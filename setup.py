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
    "base/bounded",
    "base/deadlines",
    "downstream/connections",
    "downstream/messages",
    "downstream/h1reader",
    "downstream/h1writer",
    "downstream/http1",
    "downstream/http2",
    "downstream/h2stream",
    "downstream/h2limits",
    "downstream/listener",
    "downstream/tlsconn",
    "http/bytestream",
    "http/headers",
    "observe/accesslog",
    "observe/tally",
    "request/answer",
    "request/attempts",
    "request/exchange",
    "request/grpccalls",
    "request/handler",
    "request/policy",
    "request/proxy",
    "request/routing",
    "upstream/connection",
    "upstream/h1response",
    "upstream/pool",
    "upstream/targets",
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
