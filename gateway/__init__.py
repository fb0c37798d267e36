"""mTLS edge gateway: terminate TLS, verify client certificates, apply route policy, forward."""

from __future__ import annotations

import os
import sys
from importlib.machinery import SOURCE_SUFFIXES, FileFinder, SourceFileLoader
from pathlib import Path

__version__ = "0.1.0"

_HERE = Path(__file__).resolve().parent


def stale_builds(package: Path = _HERE) -> list[str]:
    """The modules whose source changed after they were compiled (setup.py, `make compile`):
    Python would load the compiled module and run the old code."""
    stale = []
    for built in sorted(package.glob("*.so")):
        source = package / (built.name.split(".", 1)[0] + ".py")
        if source.exists() and source.stat().st_mtime > built.stat().st_mtime:
            stale.append(source.name)
    return stale


def compiled() -> bool:
    """Whether the request path runs compiled (mypyc) rather than as plain Python."""
    from gateway import proxy

    return not proxy.__file__.endswith(".py")


if os.environ.get("MTLS_GATEWAY_PLAIN") == "1":
    # the documented fallback, even where the modules are compiled: this package's modules are
    # found as source only (`make test-plain`; child processes inherit the variable)
    for _entry in __path__:
        sys.path_importer_cache[_entry] = FileFinder(_entry, (SourceFileLoader, SOURCE_SUFFIXES))
elif (_HERE.parent / "setup.py").exists() and (_stale := stale_builds()):
    # a source checkout (an installed package is built from the sources it ships)
    raise ImportError(
        f"gateway/{', '.join(_stale)} changed after it was compiled: run `make compile` "
        "(or delete gateway/*.so to run as plain Python)"
    )
