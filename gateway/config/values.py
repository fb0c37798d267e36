"""Value types of the config: durations, paths, binds, matcher values, EKUs, hosts, URLs.

Each is a validator (turns YAML input into the model's value or raises ValueError with a message
that says what is allowed) plus the JSON Schema an editor sees for it."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
)

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


DURATION_PATTERN = r"^\s*[0-9]+(\.[0-9]+)?\s*(ms|s|m|h|d)\s*$"
Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    Field(gt=0),
    WithJsonSchema(
        {"type": "string", "pattern": DURATION_PATTERN, "examples": ["500ms", "10s", "5m"]}
    ),
]


_SIZE = re.compile(r"^\s*(\d+)\s*(B|KB|MB|GB|KiB|MiB|GiB)?\s*$")
_SIZE_UNITS = {
    None: 1, "B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3,
    "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3,
}  # fmt: skip
SIZE_PATTERN = r"^\s*[0-9]+\s*(B|KB|MB|GB|KiB|MiB|GiB)?\s*$"


def parse_size(value: Any) -> int:
    """`8190`, `64KiB`, `10MiB`, `1GiB` -> bytes."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str):
        m = _SIZE.match(value)
        if m:
            return int(m.group(1)) * _SIZE_UNITS[m.group(2)]
    raise ValueError(f"{value!r} is not a size; write bytes or e.g. 64KiB, 10MiB, 1GiB")


def _size_schema(minimum: int) -> WithJsonSchema:
    return WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": minimum},
                {"type": "string", "pattern": SIZE_PATTERN},
            ],
            "examples": ["64KiB", "10MiB"],
        }
    )


Size = Annotated[int, BeforeValidator(parse_size), Field(gt=0), _size_schema(1)]
SizeOrZero = Annotated[int, BeforeValidator(parse_size), Field(ge=0), _size_schema(0)]  # 0: none


def _resolve_path(value: Any, info: ValidationInfo) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{value!r} is not a file path")
    base = (info.context or {}).get("base_dir")
    p = Path(value).expanduser()
    if not p.is_absolute() and base is not None:
        p = Path(base) / p
    return str(p)


FilePath = Annotated[
    str, BeforeValidator(_resolve_path), WithJsonSchema({"type": "string", "minLength": 1})
]


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


Bind = Annotated[
    str,
    BeforeValidator(parse_bind),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-]+):[0-9]{1,5}$",
            "examples": ["127.0.0.1:8443", "[::1]:8443"],
        }
    ),
]

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


def _one_or_many(item: dict[str, Any]) -> WithJsonSchema:
    return WithJsonSchema({"anyOf": [item, {"type": "array", "items": item, "minItems": 1}]})


Values = Annotated[
    tuple[str, ...], BeforeValidator(_as_values), _one_or_many({"type": "string", "minLength": 1})
]


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


HexDigest = Annotated[
    Values,
    _hex_values(64),
    _one_or_many({"type": "string", "pattern": "^(0x)?([0-9A-Fa-f]{2}:?){31}[0-9A-Fa-f]{2}$"}),
]
HexSerial = Annotated[
    Values, _hex_values(None), _one_or_many({"type": "string", "pattern": "^(0x)?[0-9A-Fa-f:]+$"})
]

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


EkuOid = Annotated[
    str,
    BeforeValidator(_eku_oid),
    WithJsonSchema(
        {"anyOf": [{"enum": list(EKU_NAMES)}, {"type": "string", "pattern": r"^[0-2](\.[0-9]+)+$"}]}
    ),
]


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
        r"https?://[A-Za-z0-9.\-]+(:\d{1,5})?(/[^?#\s]*)?", value
    ):
        return value
    if isinstance(value, str) and re.fullmatch(
        r"https?://\[[0-9A-Fa-f:.]+\](:\d{1,5})?(/[^?#\s]*)?", value
    ):
        return value
    raise ValueError(
        f"{value!r} is not an upstream URL; write http(s)://host:port or "
        "http(s)://host:port/base-path"
    )


def _method(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z]+", value):
        raise ValueError(f"{value!r} is not an HTTP method name")
    return value.upper()


def _http_url(value: Any) -> str:
    if isinstance(value, str) and re.fullmatch(r"https?://[^\s/?#]+(/[^\s#]*)?", value):
        return value
    raise ValueError(f"{value!r} is not an http:// or https:// URL")


HttpUrl = Annotated[
    str, BeforeValidator(_http_url), WithJsonSchema({"type": "string", "pattern": "^https?://"})
]


def _cidr(value: Any) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except (ValueError, TypeError):
        raise ValueError(f"{value!r} is not an IP network (e.g. 10.0.0.0/8 or 127.0.0.1)") from None


Cidr = Annotated[
    str,
    BeforeValidator(_cidr),
    WithJsonSchema({"type": "string", "examples": ["10.0.0.0/8", "127.0.0.1/32"]}),
]

HostName = Annotated[
    str,
    BeforeValidator(_host),
    WithJsonSchema({"type": "string", "examples": ["api.example.internal", "*.example.internal"]}),
]
PathPrefix = Annotated[
    str, BeforeValidator(_path_prefix), WithJsonSchema({"type": "string", "pattern": "^/"})
]
Method = Annotated[
    str, BeforeValidator(_method), WithJsonSchema({"type": "string", "pattern": "^[A-Za-z]+$"})
]
UpstreamUrl = Annotated[
    str,
    BeforeValidator(_upstream_url),
    WithJsonSchema(
        {"type": "string", "pattern": "^https?://", "examples": ["http://127.0.0.1:9000"]}
    ),
]


class Model(BaseModel):
    """The base of every section of the configuration: unknown keys are errors, and a loaded
    configuration cannot change."""

    model_config = ConfigDict(extra="forbid", frozen=True)
