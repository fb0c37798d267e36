"""Loading the configuration: YAML -> the frozen model of `config`, with every problem
named by its YAML path (pydantic's errors translated, then the checks that span sections:
names that must exist or be unique, routes that must reach an upstream)."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from gateway.base.errors import ConfigError, ConfigProblem
from gateway.config.model import GatewayConfig

_HIDDEN_LOC = {"__any__", "__list__", "__url__", "__file__"}


def _loc_to_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if part in _HIDDEN_LOC:
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _model_at(loc: tuple[int | str, ...], tp: Any = None) -> type[BaseModel] | None:
    """The model class whose fields apply at `loc` (used to list the allowed keys)."""
    tp = GatewayConfig if tp is None else tp
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        if not loc:
            return tp
        head = loc[0]
        if not isinstance(head, str) or head not in tp.model_fields:
            return None
        return _model_at(loc[1:], tp.model_fields[head].annotation)
    if loc and loc[0] in _HIDDEN_LOC:
        loc = loc[1:]
    origin = typing.get_origin(tp)
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if origin in (tuple, list) and loc and isinstance(loc[0], int):
        return _model_at(loc[1:], args[0]) if args else None
    for arg in args:
        found = _model_at(loc, arg)
        if found is not None:
            return found
    return None


def _problems_from(exc: ValidationError) -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        path = _loc_to_path(loc)
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            parent = _model_at(loc[:-1])
            allowed = ", ".join(parent.model_fields) if parent else "see the config reference"
            msg = f"unknown key {loc[-1]!r}; allowed keys here: {allowed}"
        elif err["type"] == "missing":
            msg = "required key is missing"
        elif "input" in err and err["type"] != "value_error":
            msg = f"{msg} (got {err['input']!r})"
        problems.append(ConfigProblem(path, msg))
    return problems


def _semantic_problems(cfg: GatewayConfig) -> list[ConfigProblem]:
    """Cross-field rules pydantic cannot see: unique names, references, fail-closed policy."""
    problems: list[ConfigProblem] = []
    for section in ("listeners", "upstreams", "routes"):
        seen: dict[str, int] = {}
        for i, item in enumerate(getattr(cfg, section)):
            if item.name in seen:
                problems.append(
                    ConfigProblem(
                        f"{section}[{i}].name",
                        f"duplicate name {item.name!r} (also {section}[{seen[item.name]}])",
                    )
                )
            seen.setdefault(item.name, i)
    binds: dict[str, str] = {}
    for i, lst in enumerate(cfg.listeners):
        if lst.tls.client_auth != "none" and not lst.tls.client_ca:
            problems.append(
                ConfigProblem(
                    f"listeners[{i}].tls.client_ca",
                    f"client_auth is {lst.tls.client_auth!r} but no trust bundle is given; "
                    "list the CA file(s) that issue client certificates",
                )
            )
        if not lst.bind.endswith(":0"):
            if lst.bind in binds:
                problems.append(
                    ConfigProblem(
                        f"listeners[{i}].bind", f"{lst.bind} is already used by {binds[lst.bind]}"
                    )
                )
            binds[lst.bind] = f"listeners[{i}]"
    if cfg.admin is not None and cfg.admin.bind in binds:
        problems.append(
            ConfigProblem(
                "admin.bind", f"{cfg.admin.bind} is already used by {binds[cfg.admin.bind]}"
            )
        )
    upstreams = {u.name for u in cfg.upstreams}
    problems += _upstream_problems(cfg)
    if cfg.admin is not None and isinstance(cfg.admin.ready_requires_upstreams, tuple):
        for j, name in enumerate(cfg.admin.ready_requires_upstreams):
            if name not in upstreams:
                problems.append(
                    ConfigProblem(
                        f"admin.ready_requires_upstreams[{j}]", f"unknown upstream {name!r}"
                    )
                )
    all_none = all(lst.tls.client_auth == "none" for lst in cfg.listeners)
    for i, route in enumerate(cfg.routes):
        if route.upstream not in upstreams:
            problems.append(
                ConfigProblem(
                    f"routes[{i}].upstream",
                    f"unknown upstream {route.upstream!r}; defined: {', '.join(sorted(upstreams))}",
                )
            )
        pol = route.policy
        if pol.require_client_cert and pol.allow is None:
            problems.append(
                ConfigProblem(
                    f"routes[{i}].policy.allow",
                    "a route that requires a client certificate must say who may pass: "
                    "`allow: any` (every verified client) or a list of matchers",
                )
            )
        elif isinstance(pol.allow, tuple) and not pol.allow:
            problems.append(
                ConfigProblem(
                    f"routes[{i}].policy.allow",
                    "an empty allow list admits nobody; write `allow: any` or list matchers",
                )
            )
        for where, entries in (("allow", pol.allow), ("deny", pol.deny)):
            if not isinstance(entries, tuple):
                continue
            for j, entry in enumerate(entries):
                if not entry.model_fields_set:
                    problems.append(
                        ConfigProblem(
                            f"routes[{i}].policy.{where}[{j}]",
                            "an empty matcher would match every certificate; name at least one "
                            "field (subject, san_uri, fingerprint_sha256, ...)",
                        )
                    )
        if pol.require_client_cert and all_none:
            problems.append(
                ConfigProblem(
                    f"routes[{i}].policy.require_client_cert",
                    "every listener has client_auth: none, so no request could ever pass",
                )
            )
    return problems


def _upstream_problems(cfg: GatewayConfig) -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []
    for i, up in enumerate(cfg.upstreams):
        where = f"upstreams[{i}]"
        if (up.url is None) == (not up.targets):
            problems.append(
                ConfigProblem(
                    f"{where}.url",
                    "give either `url` (one target) or `targets` (several), not both",
                )
            )
        if (up.tls.client_cert is None) != (up.tls.client_key is None):
            problems.append(ConfigProblem(f"{where}.tls", "client_cert and client_key go together"))
        https = [t.url for t in up.target_specs() if t.url.startswith("https://")]
        if https and len(https) != len(up.target_specs()):
            problems.append(
                ConfigProblem(f"{where}.targets", "mix of http:// and https:// targets")
            )
        elif up.protocol == "h2c" and https:
            problems.append(
                ConfigProblem(
                    f"{where}.protocol",
                    "h2c is HTTP/2 in clear, to http:// targets; for https:// targets use h2",
                )
            )
        elif up.protocol == "h2" and up.target_specs() and not https:
            problems.append(
                ConfigProblem(
                    f"{where}.protocol",
                    "h2 is HTTP/2 over TLS, to https:// targets; for http:// targets use h2c",
                )
            )
    protocols = {u.name: u.protocol for u in cfg.upstreams}
    for i, route in enumerate(cfg.routes):
        if route.websocket and protocols.get(route.upstream, "h1") != "h1":
            problems.append(
                ConfigProblem(
                    f"routes[{i}].websocket",
                    f"WebSocket upgrades need an HTTP/1.1 upstream; {route.upstream!r} has "
                    f"protocol {protocols[route.upstream]}",
                )
            )
        if route.strip_prefix and route.rewrite_prefix is not None:
            problems.append(
                ConfigProblem(
                    f"routes[{i}].rewrite_prefix", "use strip_prefix or rewrite_prefix, not both"
                )
            )
    return problems


def parse_config(data: Any, base_dir: str | Path = ".") -> GatewayConfig:
    """Validate an already-parsed YAML document; raise ConfigError with every problem."""
    if not isinstance(data, dict):
        raise ConfigError("the configuration must be a YAML mapping (listeners, upstreams, routes)")
    try:
        cfg = GatewayConfig.model_validate(data, context={"base_dir": str(base_dir)})
    except ValidationError as exc:
        raise ConfigError(_problems_from(exc)) from None
    problems = _semantic_problems(cfg)
    if problems:
        raise ConfigError(problems)
    return cfg


def load_config(path: str | Path) -> GatewayConfig:
    """Read and validate a YAML file; relative file paths resolve against its folder."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {p}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p} is not UTF-8 text") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{p} is not valid YAML{where}: {problem}") from None
    return parse_config(data, p.resolve().parent)


def check_admin_unchanged(old: GatewayConfig, new: GatewayConfig) -> None:
    """A reload cannot move the admin port (it serves the reload itself)."""
    before = old.admin.bind if old.admin else None
    after = new.admin.bind if new.admin else None
    if before != after:
        raise ConfigError(
            f"changing the admin address ({before} -> {after}) needs a restart", "admin.bind"
        )
