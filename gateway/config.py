"""YAML configuration -> frozen, validated model; every problem names its YAML path."""

from __future__ import annotations

import ipaddress
import re
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
)

from gateway.errors import ConfigError, ConfigProblem

# --------------------------------------------------------------------------- value types

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any) -> float:
    """`500ms`, `10s`, `5m`, `1h`, `28d` -> seconds."""
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return float(m.group(1)) * _UNITS[m.group(2)]
    raise ValueError(f"{value!r} is not a duration; write it like 500ms, 10s, 5m, 1h or 28d")


Duration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]


def _resolve_path(value: Any, info: ValidationInfo) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{value!r} is not a file path")
    base = (info.context or {}).get("base_dir")
    p = Path(value).expanduser()
    if not p.is_absolute() and base is not None:
        p = Path(base) / p
    return str(p)


FilePath = Annotated[str, BeforeValidator(_resolve_path)]


def parse_bind(value: Any) -> str:
    """`host:port` with an IPv4 address, `[IPv6]` or a host name; port 0 picks a free port."""
    if not isinstance(value, str) or ":" not in value:
        raise ValueError(f"{value!r} is not host:port (e.g. 127.0.0.1:8443 or [::1]:8443)")
    host, _, port = value.rpartition(":")
    if host.startswith("["):
        if not host.endswith("]"):
            raise ValueError(f"{value!r}: unbalanced brackets around the IPv6 address")
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError(f"{value!r}: {host[1:-1]!r} is not an IPv6 address") from None
    elif not host or not re.fullmatch(r"[A-Za-z0-9.\-]+", host):
        raise ValueError(f"{value!r}: {host!r} is not an IPv4 address or host name")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value!r}: port must be a number from 0 to 65535")
    return value


Bind = Annotated[str, BeforeValidator(parse_bind)]

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}$"
Name = Annotated[str, Field(pattern=_NAME)]


def _as_values(value: Any) -> tuple[str, ...]:
    """A matcher value: one string or a list of strings; `re:` patterns must compile."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise ValueError(f"{value!r} must be a string or a non-empty list of strings")
    out: list[str] = []
    for item in items:
        if isinstance(item, int) and not isinstance(item, bool):
            item = str(item)
        if not isinstance(item, str) or not item:
            raise ValueError(f"{item!r} is not a non-empty string")
        if item.startswith("re:"):
            try:
                re.compile(item[3:])
            except re.error as exc:
                raise ValueError(f"{item!r} is not a valid regular expression: {exc}") from None
        out.append(item)
    return tuple(out)


Values = Annotated[tuple[str, ...], BeforeValidator(_as_values)]


def _hex_values(length: int | None) -> Any:
    def check(values: tuple[str, ...]) -> tuple[str, ...]:
        out = []
        for v in values:
            h = v.replace(":", "").lower()
            if h.startswith("0x"):
                h = h[2:]
            if not re.fullmatch(r"[0-9a-f]+", h) or (length is not None and len(h) != length):
                want = f"{length} hex digits" if length else "hex digits"
                raise ValueError(f"{v!r} is not {want} (colons allowed)")
            out.append(h if length else h.lstrip("0") or "0")
        return tuple(out)

    return AfterValidator(check)


HexDigest = Annotated[Values, _hex_values(64)]
HexSerial = Annotated[Values, _hex_values(None)]

EKU_NAMES: dict[str, str] = {
    "serverAuth": "1.3.6.1.5.5.7.3.1",
    "clientAuth": "1.3.6.1.5.5.7.3.2",
    "codeSigning": "1.3.6.1.5.5.7.3.3",
    "emailProtection": "1.3.6.1.5.5.7.3.4",
    "timeStamping": "1.3.6.1.5.5.7.3.8",
    "OCSPSigning": "1.3.6.1.5.5.7.3.9",
}


def _eku_oid(value: Any) -> str:
    if isinstance(value, str):
        if value in EKU_NAMES:
            return EKU_NAMES[value]
        if re.fullmatch(r"[0-2](\.\d+)+", value):
            return value
    raise ValueError(f"{value!r} is not an EKU; use one of {', '.join(EKU_NAMES)} or a dotted OID")


EkuOid = Annotated[str, BeforeValidator(_eku_oid)]


def _host(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a host name")
    h = value.strip().lower().rstrip(".")
    label = r"(\*|[a-z0-9]([a-z0-9\-]*[a-z0-9])?)"
    if not re.fullmatch(rf"{label}(\.[a-z0-9]([a-z0-9\-]*[a-z0-9])?)*", h) and not _is_ip(h):
        raise ValueError(
            f"{value!r} is not a host name (letters, digits, '-', '.', optionally '*.' first)"
        )
    return h


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


def _path_prefix(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError(f"{value!r} must start with '/'")
    parts = value.split("/")
    if "//" in value or "." in parts or ".." in parts or "%" in value or "\\" in value:
        raise ValueError(
            f"{value!r} is not a normalised path (no '//', '.', '..', '%' or '\\'); "
            "routes match the normalised request path"
        )
    return value


def _upstream_url(value: Any) -> str:
    if isinstance(value, str) and re.fullmatch(
        r"http://[A-Za-z0-9.\-]+(:\d{1,5})?(/[^?#\s]*)?", value
    ):
        return value
    if isinstance(value, str) and re.fullmatch(
        r"http://\[[0-9A-Fa-f:.]+\](:\d{1,5})?(/[^?#\s]*)?", value
    ):
        return value
    raise ValueError(
        f"{value!r} is not an upstream URL; write http://host:port or http://host:port/base-path "
        "(https upstreams are not supported yet)"
    )


def _method(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z]+", value):
        raise ValueError(f"{value!r} is not an HTTP method name")
    return value.upper()


# --------------------------------------------------------------------------- the model


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _http_url(value: Any) -> str:
    if isinstance(value, str) and re.fullmatch(r"https?://[^\s/?#]+(/[^\s#]*)?", value):
        return value
    raise ValueError(f"{value!r} is not an http:// or https:// URL")


HttpUrl = Annotated[str, BeforeValidator(_http_url)]


class CrlUrl(Model):
    """A CRL fetched over HTTP on a schedule; the last good copy is kept in `cache`."""

    url: HttpUrl
    cache: FilePath = Field(description="file holding the last good copy (written atomically)")
    refresh: Duration = 3600.0
    timeout: Duration = 10.0


def _crl_tag(value: Any) -> str:
    return "__url__" if isinstance(value, dict) else "__file__"


CrlSource = Annotated[
    Annotated[FilePath, Tag("__file__")] | Annotated[CrlUrl, Tag("__url__")],
    Discriminator(_crl_tag),
]


class OcspConfig(Model):
    """OCSP status of client certificates, checked after the handshake, before any request."""

    mode: Literal["off", "soft", "hard"] = "off"
    responder_url: HttpUrl | None = None
    cache_ttl: Duration = 300.0
    timeout: Duration = 2.0


class TlsConfig(Model):
    cert: FilePath = Field(description="server certificate chain (PEM): leaf first")
    key: FilePath = Field(description="private key of the server certificate (PEM)")
    client_ca: tuple[FilePath, ...] = Field(default=(), description="trust bundles (PEM)")
    client_auth: Literal["require", "optional", "none"] = "require"
    min_version: Literal["1.2", "1.3"] = "1.2"
    handshake_timeout: Duration = 10.0
    crl: tuple[CrlSource, ...] = Field(default=(), description="CRL files (PEM/DER) or URLs")
    allow_missing_crl: bool = Field(
        default=False,
        description="start even when a CA of client_ca has no CRL (its clients fail crl_error)",
    )
    ocsp: OcspConfig = OcspConfig()
    verify_profile: Literal["openssl", "strict"] = "openssl"
    expiry_warning: Duration = Field(
        default=28 * 86400.0, description="warn when the server certificate has less than this left"
    )
    crl_warning: Duration = Field(
        default=86400.0, description="warn when a CRL's nextUpdate is closer than this"
    )


class ListenerConfig(Model):
    name: Name
    bind: Bind
    tls: TlsConfig


class UpstreamTimeouts(Model):
    connect: Duration = 5.0
    read: Duration = Field(default=30.0, description="max wait for each read from the upstream")


class UpstreamConfig(Model):
    name: Name
    url: Annotated[str, BeforeValidator(_upstream_url)]
    timeouts: UpstreamTimeouts = UpstreamTimeouts()
    max_connections: int = Field(default=100, ge=1, le=100000)


class RouteMatch(Model):
    host: Annotated[str, BeforeValidator(_host)] | None = None
    path_prefix: Annotated[str, BeforeValidator(_path_prefix)] = "/"
    methods: tuple[Annotated[str, BeforeValidator(_method)], ...] | None = None


class NameMatch(Model):
    """Distinguished-name attributes; each value is exact, a glob, or `re:` + regex."""

    CN: Values | None = None
    O: Values | None = None  # noqa: E741
    OU: Values | None = None
    C: Values | None = None
    L: Values | None = None
    ST: Values | None = None
    emailAddress: Values | None = None
    serialNumber: Values | None = None

    def items(self) -> Iterable[tuple[str, tuple[str, ...]]]:
        return ((k, v) for k, v in self.__dict__.items() if v is not None)


class Matcher(Model):
    """One allow/deny entry: every field given must match (AND)."""

    subject: NameMatch | None = None
    issuer: NameMatch | None = None
    san_dns: Values | None = None
    san_uri: Values | None = None
    san_email: Values | None = None
    san_ip: Values | None = None
    serial: HexSerial | None = None
    fingerprint_sha256: HexDigest | None = None
    spki_sha256: HexDigest | None = None


def _allow_tag(value: Any) -> str:
    return "__any__" if isinstance(value, str) else "__list__"


def _any(value: Any) -> str:
    if value != "any":
        raise ValueError(f"{value!r} is not allowed; write `any` or a list of matchers")
    return "any"


AllowSpec = Annotated[
    Annotated[Literal["any"], BeforeValidator(_any), Tag("__any__")]
    | Annotated[tuple[Matcher, ...], Tag("__list__")],
    Discriminator(_allow_tag),
]


class Policy(Model):
    require_client_cert: bool = True
    required_eku: tuple[EkuOid, ...] = ()
    allow: AllowSpec | None = None
    deny: tuple[Matcher, ...] = ()


class RouteConfig(Model):
    name: Name
    match: RouteMatch = RouteMatch()
    upstream: Name
    policy: Policy = Policy()
    forward_identity: tuple[Literal["rfc9440", "xfcc"], ...] = ()


class AdminConfig(Model):
    bind: Bind = "127.0.0.1:9901"


class ReloadConfig(Model):
    watch: bool = Field(default=True, description="reload when a referenced file changes")
    debounce: Duration = 0.5


class LoggingConfig(Model):
    level: Literal["debug", "info", "warning", "error"] = "info"
    access_log: bool = True


def _non_empty(items: tuple[Any, ...]) -> tuple[Any, ...]:
    if not items:
        raise ValueError("must list at least one entry")
    return items


class GatewayConfig(Model):
    listeners: Annotated[tuple[ListenerConfig, ...], AfterValidator(_non_empty)]
    upstreams: Annotated[tuple[UpstreamConfig, ...], AfterValidator(_non_empty)]
    routes: Annotated[tuple[RouteConfig, ...], AfterValidator(_non_empty)]
    admin: AdminConfig | None = AdminConfig()
    logging: LoggingConfig = LoggingConfig()
    reload: ReloadConfig = ReloadConfig()
    shutdown_timeout: Duration = 30.0


# --------------------------------------------------------------------------- loading

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
