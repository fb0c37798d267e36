"""mTLS edge gateway: terminate TLS, verify client certificates, apply route policy, forward."""

from __future__ import annotations

import importlib.util
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
    for built in sorted(package.glob("*/*.so")):
        source = built.parent / (built.name.split(".", 1)[0] + ".py")
        if source.exists() and source.stat().st_mtime > built.stat().st_mtime:
            stale.append(str(source.relative_to(package)))
    return stale


def compiled() -> bool:
    """Whether the request path runs compiled (mypyc) rather than as plain Python: which file
    its modules load from, asked without importing them."""
    spec = importlib.util.find_spec("gateway.request.proxy")
    return spec is not None and not str(spec.origin).endswith(".py")


if os.environ.get("MTLS_GATEWAY_PLAIN") == "1":
    # the documented fallback, even where the modules are compiled: this package's modules are
    # found as source only (`make test-plain`; child processes inherit the variable)
    for _entry in __path__:
        for _folder in [Path(_entry), *(p for p in Path(_entry).iterdir() if p.is_dir())]:
            sys.path_importer_cache[str(_folder)] = FileFinder(
                str(_folder), (SourceFileLoader, SOURCE_SUFFIXES)
            )
elif (_HERE.parent / "setup.py").exists() and (_stale := stale_builds()):
    # a source checkout (an installed package is built from the sources it ships)
    raise ImportError(
        f"gateway/{', '.join(_stale)} changed after it was compiled: run `make compile` "
        "(or delete gateway/*/*.so to run as plain Python)"
    )
