"""The requests of the differential harness: hand-written attacks on routing, hosts and identity
headers, then generated mutations of them (a seeded random walk, so every run sends the same
corpus and a failure names a request that can be sent again)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

# Paths that have slipped past a route somewhere: dot segments in every encoding, path
# parameters (servlet containers strip them from every segment), encoded separators, case.
ATTACK_PATHS = [
    "/api/admin", "/api/admin/users", "/api;x/admin/users", "/api;/admin", "/api%3B/admin",
    "/api/;/admin", "/api/;x/admin", "/api//;/admin", "/api;;/admin", "/api/x/../admin",
    "/api/%2e%2e/api/admin", "/api/.%2e/api/admin", "/public/../api/admin", "/public/..;/api/admin",
    "/public/%2e%2e%2fapi/admin", "/api/ADMIN", "/API/admin", "/api/admin;jsessionid=1",
    "/api/admin%2f", "/api%2fadmin", "/api/adm%69n", "/api/%61dmin", "//api//admin",
    "/api/./admin", "/api/admin/.", "/api/admin/..", "/api/admin%00", "/api/admin%20",
    "/api/admin.json", "/api/admin~", "/api/admin/%2e", "/api/%c0%ae%c0%ae/admin",
    "/api/items;v=2", "/api;v=2/items", "/api/items", "/public/x", "/public;x/y", "/",
    "/api/caf%C3%A9", "/api/a+b", "/api/%25", "/api/%252e%252e/admin", "/api/admin?x=/api",
]  # fmt: skip

SEGMENTS = [
    "api", "admin", "public", "items", "x", "API", "Admin", ".", "..", "", ";", ";x", "api;x",
    "admin;jsessionid=1", "%3B", "%3b", "api%3Bx", "%2e", "%2e%2e", ".%2e", "%2E%2e", "%61dmin",
    "ad%6Din", "%2F", "%5C", "a%20b", "caf%C3%A9", "%25", "%252e", "+", "~", "a+b", "..;", ".;",
    "%00", "%zz", "%C0%AE", "*", "@", ":", "!", "$", "&", "'", "(", ")", ",", "=", "%3A", "%40",
]  # fmt: skip

# identity fields a client might forge, and spellings servers may read as the same name
FORGED = [
    "X-Forwarded-Client-Cert", "Client-Cert", "Client-Cert-Chain", "X-SSL-Client-S-DN",
    "X-SSL-Client-Cert", "SSL-Client-Cert", "X-Forwarded-User", "X-Forwarded-Email",
    "X-Forwarded-Groups", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto",
    "X-Forwarded-Prefix", "X-Forwarded-Uri", "Forwarded", "X-Real-IP", "Remote-User",
    "X-Remote-User", "X-Auth-Request-User", "X-Client-Verify", "X-Request-Id", "X-Original-URL",
]  # fmt: skip

HOSTS_OK = ["localhost", "LOCALHOST", "localhost.", "localhost:{port}", "Localhost.:{port}"]
HOSTS_BAD = ["localhost, admin.localhost", "localhost,x", "", ":1", "admin@localhost",
             "localhost:99999", "localhost/api", "[::1", "other.example"]  # fmt: skip


@dataclass
class Case:
    method: str
    target: str
    host: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes | None = None
    chunked: bool = False


def _spell(rng: random.Random, name: str) -> str:
    """The same field name as a client might write it: case, and `_` for `-`."""
    out = "".join(c.upper() if rng.random() < 0.5 else c.lower() for c in name)
    if rng.random() < 0.4:
        out = out.replace("-", "_")
    return out


def _path(rng: random.Random) -> str:
    if rng.random() < 0.35:
        base = rng.choice(ATTACK_PATHS)
        if rng.random() < 0.5:  # mutate one segment of a known attack
            parts = base.split("/")
            i = rng.randrange(1, len(parts)) if len(parts) > 1 else 0
            parts[i] = rng.choice(SEGMENTS)
            base = "/".join(parts) or "/"
        return base if base.startswith("/") else "/" + base
    segments = [rng.choice(SEGMENTS) for _ in range(rng.randint(1, 5))]
    if rng.random() < 0.5:
        segments.insert(0, "api")
    path = "/" + "/".join(segments)
    if rng.random() < 0.15:
        path = "/" + path
    if rng.random() < 0.15:
        path += "?q=" + rng.choice(["1", "%2e%2e", "/api/admin", "a;b"])
    return path


def corpus(size: int, port: int, seed: int = 20261206) -> list[Case]:
    """`size` requests: every attack path once, then generated ones."""
    rng = random.Random(seed)
    cases = [Case("GET", path, f"localhost:{port}") for path in ATTACK_PATHS]
    while len(cases) < size:
        host = rng.choice(HOSTS_OK if rng.random() < 0.9 else HOSTS_BAD).format(port=port)
        method = rng.choice(["GET", "GET", "POST", "PUT", "DELETE"])
        headers = [(_spell(rng, rng.choice(FORGED)), "forged") for _ in range(rng.randint(0, 4))]
        if rng.random() < 0.2:
            headers.append((rng.choice(["X-Tenant", "X_Tenant", "x.tenant"]), "t1"))
        body = None
        chunked = False
        if method in ("POST", "PUT"):
            body = rng.randbytes(rng.choice([0, 1, 100, 5000, 70000]))
            chunked = rng.random() < 0.3
        cases.append(Case(method, _path(rng), host, headers, body, chunked))
    return cases
