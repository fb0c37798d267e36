"""`make ab OLD=<rev or tree>`: the CPU per request of two builds of the gateway, side by side.

Both gateways run at the same time, pinned to the same CPU, each paced at the same rate by its
own `paced.js` on the other CPU; the figure is the ratio of their CPU-seconds (NEW / OLD). A
slower or faster moment of the host then touches both alike: on the benchmark machine one build
measured 0.35-0.61 CPU at one rate from one run to the next, while this ratio, for a build
against a copy of itself, stayed within 0.98-1.02. Use it to tell what a change buys when that
is a few percent (BENCHMARKS.md, round 6).

OLD is a git revision of this checkout (exported and compiled in a temporary directory) or a
tree: a checkout with the package compiled in place (`make compile`). NEW defaults to this
checkout, compiled by `make ab`.
usage: python bench/ab.py OLD [NEW_TREE]
env: AB_RATE (requests/s each, default 2000), AB_ROUNDS (default 6), AB_SECONDS (default 6),
AB_LOG (off: no access log, the default; on: both log every request; new: only NEW does, to
price the access log: `AB_LOG=new make ab OLD=HEAD`). Logged lines go to a file."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from run import (
    GATEWAY_CPU,
    LOAD_CPU,
    NGINX_ORIGIN,
    ROOT,
    Server,
    autocannon,
    ensure_tools,
    free_port,
    gateway_config,
    log,
    paced,
)

RATE = float(os.environ.get("AB_RATE", "2000"))
LOG = os.environ.get("AB_LOG", "off")
ROUNDS = int(os.environ.get("AB_ROUNDS", "6"))
SECONDS = float(os.environ.get("AB_SECONDS", "6"))


def build(rev: str, into: Path) -> Path:
    """The gateway at git revision `rev`, compiled in place under `into`."""
    into.mkdir()
    files = ["gateway", "setup.py", "pyproject.toml"]
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, *files], capture_output=True, check=False
    )
    if archive.returncode != 0:
        raise SystemExit(f"ab: {rev!r} is neither a tree nor a revision: {archive.stderr!r}")
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    log(f"compiling {rev} in {into}…")
    subprocess.run(
        [sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
        cwd=into,
        check=True,
        capture_output=True,
    )
    return into


def main(argv: list[str]) -> int:
    if not 1 <= len(argv) <= 2:
        raise SystemExit(__doc__)
    work = Path(tempfile.mkdtemp(prefix="mtls-ab-"))
    old = Path(argv[0])
    trees = {
        "old": old.resolve() if old.is_dir() else build(argv[0], work / "old-tree"),
        "new": Path(argv[1]).resolve() if len(argv) > 1 else ROOT,
    }
    for name, tree in trees.items():
        if not (tree / "gateway" / "__init__.py").is_file():
            raise SystemExit(f"ab: the {name} tree {tree} has no gateway package")
    ensure_tools()
    sys.path.insert(0, str(ROOT))
    from gateway.pki import devcerts

    pki = devcerts.generate(work / "pki")
    origin_port = free_port()
    (work / "origin.conf").write_text(NGINX_ORIGIN.format(dir=work, port=origin_port))
    servers: list[Server] = []
    try:
        nginx = shutil.which("nginx") or "nginx"
        origin_cmd = [nginx, "-c", str(work / "origin.conf"), "-g", "daemon off;"]
        servers.append(Server("origin", origin_cmd, LOAD_CPU, origin_port, work / "origin.log"))
        gateways: dict[str, Server] = {}
        for name, tree in trees.items():
            port, admin = free_port(), free_port()
            config = work / f"{name}.yaml"
            doc = gateway_config(pki, port, admin, origin_port)
            if LOG == "on" or (LOG == "new" and name == "new"):
                doc["logging"] = {"level": "info", "access_log": True}
            config.write_text(json.dumps(doc))
            # run from the tree, with it first on the path: `-m` puts the working directory
            # before PYTHONPATH, so the tree's own (compiled) package is the one that runs
            cmd = ["env", "-C", str(tree), f"PYTHONPATH={tree}", sys.executable, "-m", "gateway"]
            cmd += ["run"]
            cmd += ["-c", str(config)]
            gateways[name] = Server(name, cmd, GATEWAY_CPU, port, work / f"{name}.log")
            servers.append(gateways[name])
            autocannon(port, pki, 2)  # warm up pools, caches, session tickets
        ratios = []
        for rnd in range(ROUNDS):
            before = {name: srv.cpu_seconds() for name, srv in gateways.items()}
            with ThreadPoolExecutor(len(gateways)) as pool:
                runs = {
                    name: pool.submit(paced, srv.port, pki, SECONDS, RATE)
                    for name, srv in gateways.items()
                }
                p99 = {name: run.result()["p99"] for name, run in runs.items()}
            cpu = {name: srv.cpu_seconds() - before[name] for name, srv in gateways.items()}
            ratios.append(cpu["new"] / cpu["old"] if cpu["old"] else float("nan"))
            log(
                f"round {rnd + 1}/{ROUNDS}: CPU-seconds old {cpu['old']:.3f}, new "
                f"{cpu['new']:.3f}, new/old {ratios[-1]:.3f} (p99 old {p99['old']:.2f} ms, "
                f"new {p99['new']:.2f} ms)"
            )
    finally:
        for srv in reversed(servers):
            srv.stop()
    shutil.rmtree(work, ignore_errors=True)
    ratios.sort()
    print(
        f"CPU per request, new / old, at {RATE:.0f} req/s each: median "
        f"{statistics.median(ratios):.3f} (rounds: {', '.join(f'{r:.3f}' for r in ratios)})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
