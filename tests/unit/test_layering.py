"""The layering rule of docs/architecture.md: pure modules import no I/O stack; lower layers never import higher."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "gateway"

LAYER = {
    "errors": 0,
    "bounded": 0,
    "log": 0,
    "reasons": 0,
    "config": 1,
    "configload": 1,
    "configupstream": 1,
    "configtypes": 1,
    "identity": 1,
    "devcerts": 1,
    "certfiles": 1,
    "crl": 1,
    "verify": 2,
    "chainsteps": 2,
    "strictprofile": 2,
    "routing": 2,
    "policy": 2,
    "tls": 2,
    "metrics": 2,
    "activity": 2,
    "headers": 2,
    "targets": 3,
    "health": 3,
    "proxy": 3,
    "exchange": 3,
    "attempts": 3,
    "websocket": 3,
    "tlsconn": 2,
    "upstreamconn": 2,
    "upstreampool": 2,
    "bytestream": 2,
    "deadlines": 2,
    "tally": 2,
    "accesslog": 0,
    "procstats": 2,
    "tlsrecords": 1,
    "traffic": 2,
    "http1": 3,
    "h1messages": 3,
    "h1reader": 3,
    "h1response": 2,
    "listener": 3,
    "connections": 3,
    "ocsp": 3,
    "opensslcheck": 3,
    "admission": 3,
    "echo": 3,
    "watch": 3,
    "crlfetch": 3,
    "runtime": 4,
    "recheck": 4,
    "handler": 4,
    "admin": 4,
    "status": 4,
    "statuspage": 4,
    "server": 5,
    "supervisor": 5,
    "workerstate": 4,
    "expiry": 3,
    "eventloop": 5,
    "demo": 6,
    "explain": 5,
    "schema": 5,
    "cli": 6,
    "__main__": 6,
    "__init__": 0,
}
PURE = {
    "h1reader",
    "h1response",
    "tlsrecords",
    "chainsteps",
    "strictprofile",
    "config",
    "configtypes",
    "identity",
    "routing",
    "policy",
    "reasons",
    "errors",
}
IO_MODULES = {"asyncio", "ssl", "aiohttp", "socket", "uvloop"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_every_module_has_a_layer() -> None:
    assert {p.stem for p in PKG.glob("*.py")} == set(LAYER)


def test_layers() -> None:
    problems = []
    for path in PKG.glob("*.py"):
        me = path.stem
        for name in _imports(path):
            top = name.split(".")[0]
            if me in PURE and top in IO_MODULES:
                problems.append(f"{me} is pure but imports {name}")
            if name.startswith("gateway."):
                other = name.split(".")[1]
                if LAYER[other] > LAYER[me]:
                    problems.append(
                        f"{me} (layer {LAYER[me]}) imports {other} (layer {LAYER[other]})"
                    )
    assert not problems, problems


def test_every_module_has_a_docstring() -> None:
    for path in PKG.glob("*.py"):
        assert ast.get_docstring(ast.parse(path.read_text())), (
            f"{path.name} needs a one-line docstring"
        )


def _gateway_imports(path: Path) -> set[str]:
    """The package's modules `path` imports, at the top or inside a function alike."""
    out = set()
    tree = ast.parse(path.read_text())
    typing_only = {  # `if TYPE_CHECKING:` imports name types; nothing is imported at run time
        id(n)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and ast.unparse(block.test).endswith("TYPE_CHECKING")
        for n in ast.walk(block)
    }
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module == "gateway":
            out |= {a.name for a in node.names if a.name in LAYER}  # from gateway import x
        elif isinstance(node, ast.ImportFrom | ast.Import):
            names = (
                [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            )
            out |= {n.split(".")[1] for n in names if n and n.startswith("gateway.")}
    return out - {path.stem}


def test_no_import_cycle() -> None:
    """No two modules import each other, directly or round a loop (function-level imports
    count: a cycle hidden in a function is still one)."""
    graph = {p.stem: _gateway_imports(p) for p in PKG.glob("*.py") if p.stem != "__init__"}
    graph = {me: deps - {"__init__"} for me, deps in graph.items()}
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
