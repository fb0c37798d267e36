"""The layering rule of docs/architecture.md: pure modules import no I/O stack; a lower folder
never imports a higher one, nor a folder its sibling; lower layers never import higher."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "gateway"

LAYER = {
    "base.errors": 0,
    "base.bounded": 0,
    "base.log": 0,
    "base.reasons": 0,
    "config.model": 1,
    "config.load": 1,
    "config.upstream": 1,
    "config.listener": 1,
    "config.values": 1,
    "pki.identity": 1,
    "pki.devcerts": 1,
    "pki.certfiles": 1,
    "pki.crl": 1,
    "pki.verify": 2,
    "pki.chainsteps": 2,
    "pki.strictprofile": 2,
    "request.routing": 2,
    "request.policy": 2,
    "request.grpccalls": 3,
    "pki.tls": 2,
    "observe.metrics": 2,
    "observe.activity": 2,
    "http.headers": 2,
    "upstream.targets": 3,
    "upstream.health": 3,
    "request.proxy": 3,
    "request.exchange": 3,
    "request.answer": 3,
    "request.attempts": 3,
    "request.websocket": 3,
    "downstream.tlsconn": 2,
    "upstream.connection": 2,
    "upstream.pool": 2,
    "upstream.h2session": 2,
    "upstream.h2pool": 2,
    "upstream.h2call": 2,
    "http.bytestream": 2,
    "base.deadlines": 2,
    "observe.tally": 2,
    "observe.accesslog": 0,
    "observe.procstats": 2,
    "pki.tlsrecords": 1,
    "observe.traffic": 2,
    "downstream.http1": 3,
    "downstream.http2": 3,
    "downstream.h2stream": 3,
    "downstream.h2limits": 3,
    "downstream.messages": 3,
    "downstream.h1writer": 3,
    "downstream.h1reader": 3,
    "upstream.h1response": 2,
    "downstream.listener": 3,
    "downstream.connections": 3,
    "pki.ocsp": 3,
    "pki.opensslcheck": 3,
    "downstream.admission": 3,
    "process.echo": 3,
    "process.grpcecho": 3,
    "process.watch": 3,
    "pki.crlfetch": 3,
    "request.serving": 4,
    "downstream.recheck": 4,
    "request.handler": 4,
    "ops.admin": 4,
    "ops.status": 4,
    "ops.statuspage": 4,
    "process.server": 5,
    "process.supervisor": 5,
    "ops.workerstate": 4,
    "ops.expiry": 3,
    "process.eventloop": 5,
    "process.demo": 6,
    "process.explain": 5,
    "config.schema": 5,
    "process.cli": 6,
    "__main__": 6,
    "__init__": 0,
}
PURE = {
    "downstream.h1reader",
    "downstream.h1writer",
    "downstream.h2limits",
    "upstream.h1response",
    "pki.tlsrecords",
    "pki.chainsteps",
    "pki.strictprofile",
    "config.model",
    "config.listener",
    "config.values",
    "pki.identity",
    "request.routing",
    "request.policy",
    "request.grpccalls",
    "base.reasons",
    "base.errors",
}
# the folders in the order a request meets them, lowest first; folders of one rank are
# siblings that never import each other (the two directions of HTTP)
FOLDERS = {
    "base": 0,
    "config": 1,
    "observe": 2,
    "pki": 3,
    "http": 4,
    "downstream": 5,
    "upstream": 5,
    "request": 6,
    "ops": 7,
    "process": 8,
}
IO_MODULES = {"asyncio", "ssl", "aiohttp", "socket", "uvloop"}


def _modules() -> dict[str, Path]:
    """Every module of the package by its dotted name below `gateway` ("request.exchange");
    a folder's own `__init__` is its docstring only."""
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG).with_suffix("")
        if rel.name == "__init__" and len(rel.parts) > 1:
            continue
        out[".".join(rel.parts)] = path
    return out


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _gateway_imports(path: Path, typing_too: bool = False) -> set[str]:
    """The package's modules `path` imports, at the top or inside a function alike (and with
    `typing_too`, the names imported for type annotations only)."""
    out = set()
    tree = ast.parse(path.read_text())
    typing_only = {  # `if TYPE_CHECKING:` imports name types; nothing is imported at run time
        id(n)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and ast.unparse(block.test).endswith("TYPE_CHECKING")
        for n in ast.walk(block)
    }
    for node in ast.walk(tree):
        if id(node) in typing_only and not typing_too:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gateway"):
            base = node.module.removeprefix("gateway").lstrip(".")
            for alias in node.names:  # `from gateway.pki import crl` imports pki.crl
                full = f"{base}.{alias.name}" if base else alias.name
                out.add(full if full in LAYER else base or "__init__")
        elif isinstance(node, ast.Import):
            out |= {
                a.name.removeprefix("gateway.") for a in node.names if a.name.startswith("gateway.")
            }
    me = ".".join(path.relative_to(PKG).with_suffix("").parts)
    return out - {me}


def test_every_module_has_a_layer_and_a_folder() -> None:
    assert set(_modules()) == set(LAYER)
    folders = {p.name for p in PKG.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders == set(FOLDERS)
    assert all(name.count(".") == 1 for name in LAYER if not name.startswith("__"))


def test_layers() -> None:
    problems = []
    for me, path in _modules().items():
        for name in _imports(path):
            if me in PURE and name.split(".")[0] in IO_MODULES:
                problems.append(f"{me} is pure but imports {name}")
        for other in _gateway_imports(path):
            if LAYER[other] > LAYER[me]:
                problems.append(f"{me} (layer {LAYER[me]}) imports {other} (layer {LAYER[other]})")
    assert not problems, problems


def test_a_lower_folder_never_imports_a_higher_one() -> None:
    """Type annotations included: the tree reads like a request's path, bottom to top."""
    problems = []
    for me, path in _modules().items():
        if me.startswith("__"):
            continue
        mine = me.split(".")[0]
        for other in _gateway_imports(path, typing_too=True) - {"__init__"}:
            theirs = other.split(".")[0]
            if theirs != mine and FOLDERS[theirs] >= FOLDERS[mine]:
                problems.append(f"{me} ({mine}) imports {other} ({theirs})")
    assert not problems, problems


def test_every_module_has_a_docstring() -> None:
    for path in PKG.rglob("*.py"):
        assert ast.get_docstring(ast.parse(path.read_text())), (
            f"{path.relative_to(PKG)} needs a one-line docstring"
        )


def test_no_import_cycle() -> None:
    """No two modules import each other, directly or round a loop (function-level imports
    count: a cycle hidden in a function is still one)."""
    graph = {me: _gateway_imports(p) - {"__init__"} for me, p in _modules().items()}
    graph.pop("__init__")
    seen: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(me: str, path: list[str]) -> None:
        seen[me] = 1
        for dep in sorted(graph.get(me, ())):
            if seen.get(dep) == 1:
                cycles.append([*path[path.index(dep) :], dep])
            elif dep not in seen:
                visit(dep, [*path, dep])
        seen[me] = 2

    for module in sorted(graph):
        if module not in seen:
            visit(module, [module])
    assert cycles == []


def test_every_module_keeps_to_400_lines() -> None:
    """A module owns one thing; one that outgrows this is split by what it owns."""
    long = {
        name: n
        for name, path in _modules().items()
        if (n := len(path.read_text().splitlines())) > 400
    }
    assert not long, long
