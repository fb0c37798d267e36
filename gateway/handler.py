"""The per-request pipeline: normalise, route, SNI check, policy, forward, log and count."""

from __future__ import annotations

import time
from collections.abc import Callable

from gateway.activity import Activity
from gateway.errors import DownstreamError, HttpError, PayloadTooLarge
from gateway.headers import ClientContext, upstream_headers
from gateway.http1 import Answer, Request, Response, json_error, request_ids
from gateway.listener import ConnectionTracker, ConnInfo
from gateway.log import access_log, event, policy_log, proxy_log, server_log
from gateway.metrics import Metrics
from gateway.proxy import BodyLimit
from gateway.reasons import POLICY_ERROR_CODES
from gateway.routing import normalise_host, normalise_target, rewrite_prefix
from gateway.runtime import CompiledRoute, Snapshot
from gateway.websocket import is_upgrade, proxy_websocket

KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"})


class Misdirected(DownstreamError):
    status = 421
    code = "misdirected_request"


class BadRequest(DownstreamError):
    status = 400
    code = "bad_request"


def check_head(request: Request) -> None:
    """What the HTTP parser lets through but a gateway must not forward."""
    if request.method == "CONNECT":
        raise BadRequest("CONNECT is not served: the gateway is not an open proxy")
    hosts = request.headers.getall("Host", ())
    if len(hosts) != 1:
        raise BadRequest("no Host header" if not hosts else "more than one Host header")
    te = request.headers.getall("Transfer-Encoding", ())
    if te and (len(te) > 1 or te[0].strip().lower() != "chunked"):
        raise BadRequest(f"Transfer-Encoding {', '.join(te)!r}: only a single chunked is accepted")


def check_body_length(request: Request, max_body: int, on_body_limit: Callable[[], None]) -> None:
    """413 before anything is forwarded when the announced body is too large."""
    length = request.content_length
    if length is not None and length > max_body:
        on_body_limit()
        raise PayloadTooLarge(f"Content-Length {length} over the limit of {max_body} bytes")


class PolicyDenied(DownstreamError):
    status = 403
    code = "client_cert_not_allowed"


def error_response(err: HttpError, route: str | None, request_id: str) -> Response:
    return json_error(err.status, err.code, request_id, route)


class Pipeline:
    """Handles every request of one listener against the current snapshot."""

    def __init__(
        self, snapshot: Callable[[], Snapshot], metrics: Metrics, activity: Activity | None = None
    ) -> None:
        self._snapshot = snapshot
        self._metrics = metrics
        self._activity = activity or Activity()
        self.tracker: ConnectionTracker | None = None  # set once the listener is wired
        self._series: dict[
            tuple[str, str, int], tuple[Callable[[], None], Callable[[float], None]]
        ] = {}
        self._body_limit_hits: dict[str, Callable[[], None]] = {}

    async def __call__(self, request: Request) -> Answer:
        started = time.perf_counter()
        request_id = request_ids.next()
        assert self.tracker is not None
        conn = self.tracker.conns.get(request.protocol)
        if conn is not None and conn.gate is not None and await conn.gate is not None:
            # rejected after the handshake (strict profile, OCSP): the listener counts and
            # logs it and drops the connection; nothing is served on it
            if request.transport is not None:
                request.transport.abort()
            return Response(403)
        route: CompiledRoute | None = None
        upstream_name = ""
        upstream_seconds: float | None = None
        response: Answer
        try:
            snap = self._snapshot()
            if conn is None:  # the connection closed while the request was queued
                raise DownstreamError("connection gone", code="connection_closed")
            limits = snap.limits[conn.listener]
            check_head(request)
            request_id = snap.request_id(request, conn.peer_ip) or request_id
            target = normalise_target(request.raw_path)
            host = normalise_host(request.headers.get("Host"))
            if conn.sni is not None and host is not None and host != conn.sni:
                raise Misdirected(f"SNI {conn.sni!r} but Host {host!r}")
            route = snap.routes[snap.router.match(host, target.path, request.method).name]
            decision = route.policy.decide(conn.identity)
            if not decision.allowed:
                assert decision.reason is not None
                self._metrics.policy_denials.labels(route.config.name, decision.reason.value).inc()
                subject = conn.identity.subject if conn.identity else "no certificate"
                detail = decision.detail
                if subject not in detail:
                    detail = f"{subject}: {detail}"
                self._activity.denial(
                    route.config.name, decision.reason.value, conn.peer_ip, detail
                )
                policy_log.info(
                    "request denied by policy",
                    extra=event(
                        request_id=request_id,
                        route=route.config.name,
                        reason=decision.reason.value,
                        detail=decision.detail,
                        **_client_fields(conn),
                    ),
                )
                raise PolicyDenied(decision.detail, code=POLICY_ERROR_CODES[decision.reason])
            rc = route.config
            max_body = rc.max_request_body or limits.max_request_body
            check_body_length(request, max_body, self._limit_hit(conn.listener))
            upstream = route.upstream
            upstream_name = upstream.name
            ctx = ClientContext(conn.peer_ip, host, conn.identity, conn.chain, request_id)
            headers = upstream_headers(request.headers, ctx, rc.forward_identity)
            path = target.encoded
            if rc.strip_prefix or rc.rewrite_prefix is not None:
                path = rewrite_prefix(path, rc.match.path_prefix, rc.rewrite_prefix or "")
            if rc.websocket and is_upgrade(request):
                response = await proxy_websocket(request, upstream, path, target.query, headers)
            else:
                body_limit = BodyLimit(max_body, self._limit_hit(conn.listener))
                response, upstream_seconds = await upstream.forward(
                    request, path, target.query, headers, request_id, body_limit, route.timeouts
                )
        except HttpError as err:
            if err.status >= 500:
                proxy_log.warning(
                    "upstream error",
                    extra=event(
                        request_id=request_id,
                        upstream=upstream_name,
                        error=err.code,
                        kind=err.kind,
                        detail=err.detail,
                    ),
                )
            error = error_response(err, route.config.name if route else None, request_id)
            if isinstance(err, PayloadTooLarge | BadRequest):
                error.force_close()  # the body was not (entirely) read
            response = error
        except (
            Exception
        ):  # a gateway bug: logged with its traceback, counted, JSON 500 to the client
            server_log.exception(
                "unhandled error in request pipeline", extra=event(request_id=request_id)
            )
            response = error_response(
                HttpError("internal error"), route.config.name if route else None, request_id
            )
        self._account(
            request, response, route, conn, request_id, upstream_name, upstream_seconds, started
        )
        return response

    def _limit_hit(self, listener: str) -> Callable[[], None]:
        hit = self._body_limit_hits.get(listener)
        if hit is None:
            hit = self._body_limit_hits[listener] = self._metrics.limits_hit.labels(
                listener, "body_size"
            ).inc
        return hit

    def _account(
        self,
        request: Request,
        response: Answer,
        route: CompiledRoute | None,
        conn: ConnInfo | None,
        request_id: str,
        upstream: str,
        upstream_seconds: float | None,
        started: float,
    ) -> None:
        elapsed = time.perf_counter() - started
        route_name = route.config.name if route else ""
        method = request.method if request.method in KNOWN_METHODS else "OTHER"
        key = (route_name, method, response.status)
        series = self._series.get(key)
        if series is None:  # label lookups are slow: one per (route, method, status), once
            series = self._series[key] = (
                self._metrics.requests.labels(route_name, method, str(response.status)).inc,
                self._metrics.request_duration.labels(route_name).observe,
            )
        series[0]()
        series[1](elapsed)
        if access_log.disabled:  # logging would still build the record before dropping it
            return
        access_log.info(
            "request",
            extra=event(
                request_id=request_id,
                listener=conn.listener if conn else "",
                route=route_name,
                method=request.method,
                path=request.raw_path[:2048],
                status=response.status,
                upstream=upstream,
                duration_ms=round(elapsed * 1000, 3),
                upstream_ms=_ms(upstream_seconds),
                **(_client_fields(conn) if conn else {}),
            ),
        )


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def _client_fields(conn: ConnInfo) -> dict[str, str | None]:
    ident = conn.identity
    return {
        "peer": conn.peer_ip,
        "sni": conn.sni,
        "client_subject": ident.subject if ident else None,
        "client_sha256": ident.sha256 if ident else None,
    }
