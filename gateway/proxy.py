"""Upstream forwarding with one pooled aiohttp client per upstream: headers, streaming, errors."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import StreamReader, web
from multidict import CIMultiDict
from yarl import URL

from gateway.config import UpstreamConfig
from gateway.errors import PayloadTooLarge, UpstreamError
from gateway.identity import Identity
from gateway.log import event, proxy_log
from gateway.metrics import Metrics

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authenticate",
        "proxy-authorization",
        "expect",
    }
)

# Headers that carry a client's identity or origin: never trusted from outside (anti-spoofing).
IDENTITY_HEADERS = frozenset(
    {
        "client-cert",
        "client-cert-chain",
        "x-forwarded-client-cert",
        "x-client-cert",
        "x-ssl-client-cert",
        "x-ssl-client-dn",
        "x-ssl-client-verify",
        "ssl-client-cert",
        "ssl-client-verify",
        "x-client-verify",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-forwarded-port",
        "forwarded",
        "x-real-ip",
        "x-request-id",
    }
)

_SKIP_REQUEST = HOP_BY_HOP | IDENTITY_HEADERS
_SKIP_RESPONSE = HOP_BY_HOP | {"content-length"}


class BodyLimit:
    """Counts a streamed request body; stops it (and remembers) past `limit` bytes."""

    def __init__(self, limit: int, on_hit: Callable[[], None]) -> None:
        self.limit = limit
        self.exceeded = False
        self._on_hit = on_hit

    async def wrap(self, stream: StreamReader) -> AsyncIterator[bytes]:
        total = 0
        async for chunk in stream.iter_any():
            total += len(chunk)
            if total > self.limit:
                self.exceeded = True
                self._on_hit()
                raise PayloadTooLarge(f"request body over {self.limit} bytes")
            yield chunk


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"


@dataclass(frozen=True)
class ClientContext:
    """What the proxy needs to know about the downstream connection."""

    peer_ip: str
    host: str | None
    identity: Identity | None
    chain: tuple[bytes, ...]  # DER of intermediates above the leaf, when known
    request_id: str


def _connection_tokens(values: Sequence[str]) -> set[str]:
    return {t.strip().lower() for v in values for t in v.split(",") if t.strip()}


def sf_binary(der: bytes) -> str:
    """RFC 8941 byte sequence: `:base64:`."""
    return ":" + base64.b64encode(der).decode("ascii") + ":"


def _xfcc_quote(value: str) -> str:
    if any(c in value for c in ',;="'):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


def xfcc(ident: Identity) -> str:
    """Envoy's X-Forwarded-Client-Cert element: Hash, Subject, URI and DNS of the leaf."""
    parts = [f"Hash={ident.sha256}", f"Subject={_xfcc_quote(ident.subject)}"]
    parts += [f"URI={_xfcc_quote(u)}" for u in ident.san_uri]
    parts += [f"DNS={_xfcc_quote(d)}" for d in ident.san_dns]
    return ";".join(parts)


def upstream_headers(
    request: web.BaseRequest, ctx: ClientContext, forward_identity: tuple[str, ...]
) -> CIMultiDict[str]:
    """Copy the request's end-to-end headers, drop identity look-alikes, then set ours."""
    drop = _SKIP_REQUEST
    conn = request.headers.getall("Connection", ())
    if conn:
        drop = drop | _connection_tokens(conn)
    headers: CIMultiDict[str] = CIMultiDict()
    for key, value in request.headers.items():
        if key.lower() not in drop:
            headers.add(key, value)
    headers["X-Forwarded-For"] = ctx.peer_ip
    headers["X-Forwarded-Proto"] = "https"
    if ctx.host:
        headers["X-Forwarded-Host"] = request.headers.get("Host", ctx.host)
    headers["X-Request-Id"] = ctx.request_id
    ident = ctx.identity
    if ident is not None:
        if "rfc9440" in forward_identity:
            headers["Client-Cert"] = sf_binary(ident.der)
            if ctx.chain:
                headers["Client-Cert-Chain"] = ", ".join(sf_binary(c) for c in ctx.chain)
        if "xfcc" in forward_identity:
            headers["X-Forwarded-Client-Cert"] = xfcc(ident)
    return headers


class Upstream:
    """One upstream: its base URL, its keep-alive pool and its outcome counters."""

    def __init__(self, cfg: UpstreamConfig, metrics: Metrics) -> None:
        self.name = cfg.name
        base = URL(cfg.url)
        self._origin = f"{base.scheme}://{base.raw_authority}"
        self._base_path = base.raw_path.rstrip("/")
        self._metrics = metrics
        self._timeout = aiohttp.ClientTimeout(
            total=None,
            connect=cfg.timeouts.connect,
            sock_connect=cfg.timeouts.connect,
            sock_read=cfg.timeouts.read,
        )
        self._limit = cfg.max_connections
        self._session: aiohttp.ClientSession | None = None
        self.config = cfg
        self.inflight = 0  # requests between forward() and the end of the relayed body

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._limit, keepalive_timeout=30, ttl_dns_cache=60
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
                trust_env=False,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def close_when_idle(self, deadline: float) -> None:
        """Close the pool once no request uses it (retired by a reload), at most `deadline` s."""
        waited = 0.0
        while self.inflight and waited < deadline:
            await asyncio.sleep(0.1)
            waited += 0.1
        await self.close()

    def url_for(self, encoded_path: str, query: str) -> URL:
        text = self._origin + self._base_path + encoded_path + (f"?{query}" if query else "")
        return URL(text, encoded=True)

    def _count(self, outcome: str) -> None:
        self._metrics.upstream_requests.labels(self.name, outcome).inc()

    async def forward(
        self,
        request: web.BaseRequest,
        url: URL,
        headers: CIMultiDict[str],
        request_id: str,
        body_limit: BodyLimit | None = None,
    ) -> tuple[web.StreamResponse, float]:
        """Send the request and stream the answer back; map upstream faults to 502/504.

        Returns the response and how long the upstream took to send its headers. A body
        without Content-Length is counted while it streams: past `body_limit`, 413."""
        data: Any = request.content if request.body_exists else None
        if data is not None and body_limit is not None and request.content_length is None:
            data = body_limit.wrap(request.content)
        if data is not None and request.headers.get("Expect", "").lower() == "100-continue":
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        started = time.perf_counter()
        self.inflight += 1
        try:
            return await self._forward(request, url, headers, request_id, data, started)
        except UpstreamError:
            if body_limit is not None and body_limit.exceeded:
                raise PayloadTooLarge(
                    f"request body over {body_limit.limit} bytes (chunked)"
                ) from None
            raise
        finally:
            self.inflight -= 1

    async def _forward(
        self,
        request: web.BaseRequest,
        url: URL,
        headers: CIMultiDict[str],
        request_id: str,
        data: Any,
        started: float,
    ) -> tuple[web.StreamResponse, float]:
        try:
            upstream = await self.session.request(
                request.method,
                url,
                headers=headers,
                data=data,
                allow_redirects=False,
            )
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            self._count("timeout")
            raise UpstreamTimeout(
                f"{self.name}: no answer in time ({type(exc).__name__})"
            ) from None
        except aiohttp.ClientConnectorError as exc:
            self._count("connect_error")
            raise UpstreamError(f"{self.name}: cannot connect: {exc.os_error}") from None
        except aiohttp.ClientResponseError as exc:
            self._count("bad_response")
            raise UpstreamError(f"{self.name}: invalid response: {exc.message}") from None
        except (aiohttp.ClientError, OSError) as exc:
            self._count("reset")
            raise UpstreamError(f"{self.name}: connection failed: {exc!r}") from None
        headers_after = time.perf_counter() - started
        self._metrics.upstream_duration.labels(self.name).observe(headers_after)
        try:
            return await self._relay(request, upstream, request_id), headers_after
        finally:
            upstream.release()

    async def _relay(
        self, request: web.BaseRequest, upstream: aiohttp.ClientResponse, request_id: str
    ) -> web.StreamResponse:
        drop = _SKIP_RESPONSE
        conn = upstream.headers.getall("Connection", ())
        if conn:
            drop = drop | _connection_tokens(conn)
        out = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for key, value in upstream.headers.items():
            if key.lower() not in drop:
                out.headers.add(key, value)
        out.headers["X-Request-Id"] = request_id
        if upstream.content_length is not None:
            out.content_length = upstream.content_length
        try:
            await out.prepare(request)
            async for chunk in upstream.content.iter_any():
                await out.write(chunk)
        except (TimeoutError, aiohttp.ClientError) as exc:
            # Headers are gone already: the only honest signal left is to cut the connection.
            self._count("reset")
            proxy_log.warning(
                "upstream failed mid-response",
                extra=event(upstream=self.name, error=repr(exc)),
            )
            if request.transport is not None:
                request.transport.abort()
            return out
        self._count("ok")
        return out
