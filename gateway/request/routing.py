"""Request-target normalisation and route matching (first match wins), pure and cheap."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote

from gateway.base.bounded import Bounded
from gateway.base.errors import BadPath, BadRequest, MethodNotAllowed, NoRoute
from gateway.config.model import RouteConfig


@dataclass(frozen=True)
class Target:
    """A normalised request target: `path` is decoded (for matching), `encoded` goes upstream."""

    path: str
    encoded: str
    query: str  # raw, without '?'


# Characters that may stand unescaped in a path segment (RFC 3986 pchar minus '%').
_PCHAR_SAFE: Final = "!$&'()*+,;=:@~"
_FAST: Final = re.compile(r"^(?:/[A-Za-z0-9\-_~!$&'()*+,;=:@.]+)*/?$")
_FORBIDDEN_ENCODED: Final = re.compile(r"%(2f|5c|00)", re.IGNORECASE)
_PERCENT: Final = re.compile(r"%(?![0-9A-Fa-f]{2})")


# Targets seen recently, normalised: most clients ask for the same few paths again and again.
# Bounded in count (paths with ids in them cost a normalisation, never memory) and in size (a
# long target is normalised every time): at most ~4 MiB.
_SEEN_MAX: Final = 4096
_SEEN: Final[Bounded[str, Target]] = Bounded(_SEEN_MAX)
_SEEN_LONGEST: Final = 256


def normalise_target(raw: str) -> Target:
    """Resolve dot segments, merge slashes, decode; reject what could smuggle a path."""
    target = _SEEN.get(raw)
    if target is None:
        target = _normalise(raw)
        if len(raw) <= _SEEN_LONGEST:
            _SEEN.put(raw, target)
    return target


def _normalise(raw: str) -> Target:
    path, _, query = raw.partition("?")
    if not path.startswith("/"):
        raise BadPath(f"request target {raw[:100]!r} is not an absolute path")
    if "#" in raw:
        raise BadPath("request target contains a fragment")
    if _FAST.match(path) and "//" not in path and "/." not in path:
        return Target(path, path, query)
    if "\\" in path or any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        raise BadPath("backslash or control character in path")
    if _FORBIDDEN_ENCODED.search(path):
        raise BadPath("encoded '/', '\\' or NUL in path")
    if _PERCENT.search(path):
        raise BadPath("malformed percent-encoding in path")
    try:
        decoded = _percent_decode(path)
    except UnicodeDecodeError:
        raise BadPath("percent-encoded bytes in path are not valid UTF-8") from None
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in decoded):
        raise BadPath("encoded control character in path")
    segments: list[str] = []
    parts = decoded.split("/")[1:]
    for i, seg in enumerate(parts):
        last = i == len(parts) - 1
        if ";" in seg and seg.partition(";")[0] in (".", ".."):
            # `..;x` is a dot segment to servers that strip path parameters (Tomcat, Spring)
            raise BadPath("dot segment with path parameters ('..;') in path")
        if seg == "..":
            if segments:
                segments.pop()
            if last:
                segments.append("")
        elif seg == ".":
            if last:
                segments.append("")
        elif seg or last:
            segments.append(seg)
    norm = "/" + "/".join(segments)
    encoded = "/" + "/".join(quote(s, safe=_PCHAR_SAFE) for s in segments)
    return Target(norm, encoded, query)


def encode_path(decoded: str) -> str:
    """The encoded form of a normalised path, segment by segment (as `Target.encoded`)."""
    return "/".join(quote(s, safe=_PCHAR_SAFE) for s in decoded.split("/"))


def rewrite_prefix(encoded: str, prefix: str, replacement: str) -> str:
    """Replace the matched route prefix of an encoded path (`strip_prefix` is replacement "")."""
    head = encode_path(prefix.rstrip("/"))
    rest = encoded[len(head) :] if head and encoded.startswith(head) else encoded
    new = replacement.rstrip("/") + rest
    return new if new.startswith("/") else "/" + new


def _percent_decode(path: str) -> str:
    if "%" not in path:
        return path
    out = bytearray()
    i = 0
    raw = path.encode("utf-8")
    while i < len(raw):
        if raw[i] == 0x25:  # '%'
            out.append(int(raw[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(raw[i])
            i += 1
    return out.decode("utf-8", "strict")


# RFC 9110 Host: uri-host [ ":" port ]; a name is dot-separated labels (an optional final dot),
# an IPv6 address is in brackets. A list, a user part, an empty host or a bad port is refused.
_AUTHORITY: Final = re.compile(
    r"(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9_\-]+(?:\.[A-Za-z0-9_\-]+)*\.?))(?::([0-9]{0,5}))?"
)


# the hosts of valid Host fields already parsed: clients send the same few over and over
_HOSTS: Final[Bounded[str, str]] = Bounded(1024)


def parse_host(value: str) -> str:
    """The host a request's Host field names, as routes and SNI compare it (`Example.COM.:8443`
    -> `example.com`, `[::1]:8443` -> `::1`); BadRequest unless it is one valid authority."""
    known = _HOSTS.get(value)
    if known is not None:
        return known
    return _HOSTS.put(value, _parse_host(value))


def _parse_host(value: str) -> str:
    m = _AUTHORITY.fullmatch(value.strip(" \t"))
    if m is None or (m.group(3) and int(m.group(3)) > 65535):
        raise BadRequest(f"Host {value[:100]!r} is not one valid host[:port]")
    if m.group(1) is not None:
        try:
            return str(ipaddress.IPv6Address(m.group(1)))
        except ValueError:
            raise BadRequest(f"Host {value[:100]!r} is not a valid IPv6 address") from None
    return m.group(2).lower().rstrip(".")


def normalise_host(host: str | None) -> str | None:
    """`Example.COM.:8443` -> `example.com`; `[::1]:8443` -> `::1`; None when absent/empty."""
    if not host:
        return None
    h = host.strip()
    if h.startswith("["):
        end = h.find("]")
        return h[1:end].lower() if end > 0 else None
    if h.count(":") == 1:
        h = h.split(":", 1)[0]
    return h.lower().rstrip(".") or None


def _prefix_matches(prefix: str, path: str) -> bool:
    if prefix == "/" or path == prefix:
        return True
    if prefix.endswith("/"):
        return path.startswith(prefix)
    return path.startswith(prefix) and path[len(prefix)] in "/;"


def _host_matches(pattern: str, host: str | None) -> bool:
    if host is None:
        return False
    if pattern.startswith("*."):
        suffix = pattern[1:]
        return host.endswith(suffix) and "." not in host[: -len(suffix)] and len(host) > len(suffix)
    return host == pattern


def without_parameters(path: str) -> str:
    """The path as a servlet container routes it: every segment's `;parameters` removed, then
    the empty segments that leaves merged (`/api;x/admin`, `/api/;/admin` -> `/api/admin`)."""
    segments = [seg.partition(";")[0] for seg in path.split("/")[1:]]
    kept = [seg for i, seg in enumerate(segments) if seg or i == len(segments) - 1]
    return "/" + "/".join(kept)


class Router:
    """First matching route wins; a path match with the wrong method answers 405."""

    def __init__(self, routes: tuple[RouteConfig, ...]) -> None:
        self._routes = routes

    def route(self, host: str | None, path: str, method: str) -> RouteConfig:
        """The route for a normalised, decoded path. A `;` in it (sent as is or as %3B) is a
        path parameter to servlet containers (Tomcat, Jetty strip it from every segment) and data
        to most other servers: the path is refused unless the route it matches says
        `path_parameters: true` and it matches the same route without its parameters too."""
        route = self.match(host, path, method)
        if ";" not in path:
            return route
        if not route.match.path_parameters:
            raise BadPath(
                f"';' (a path parameter to servlet containers) in path; route {route.name!r} "
                "does not set match.path_parameters"
            )
        try:
            stripped = self.match(host, without_parameters(path), method)
        except (NoRoute, MethodNotAllowed):
            stripped = None
        if stripped is not route:
            raise BadPath(
                f"path matches route {route.name!r} but "
                + (f"route {stripped.name!r}" if stripped else "no route")
                + " without its ';' parameters"
            )
        return route

    def match(self, host: str | None, path: str, method: str) -> RouteConfig:
        path_hit = False
        for route in self._routes:
            m = route.match
            if m.host is not None and not _host_matches(m.host, host):
                continue
            if not _prefix_matches(m.path_prefix, path):
                continue
            if m.methods is not None and method not in m.methods:
                path_hit = True
                continue
            return route
        if path_hit:
            raise MethodNotAllowed(f"no route for {method} {path}")
        raise NoRoute(f"no route for host {host!r} path {path!r}")
