"""The per-request pipeline: normalise, route, SNI check, policy, forward, log and count."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Final

from gateway.base.errors import (
    BadRequest,
    DownstreamError,
    HttpError,
    Misdirected,
    PayloadTooLarge,
    PolicyDenied,
)
from gateway.base.log import event, policy_log, proxy_log, server_log
from gateway.base.reasons import POLICY_ERROR_CODES
from gateway.downstream.connections import ConnInfo
from gateway.downstream.messages import (
    Answer,
    Request,
    Response,
    StreamResponse,
    json_error,
    request_ids,
)
from gateway.http.headers import IDENTITY, ClientContext, HeaderRules, upstream_headers
from gateway.observe.accesslog import PROTOCOLS, access_lines
from gateway.observe.activity import Activity
from gateway.observe.metrics import Metrics
from gateway.request.attempts import BodyLimit, TimeoutLimits
from gateway.request.grpccalls import grpc_deadline, grpc_error, is_grpc
from gateway.request.policy import Decision
from gateway.request.proxy import Upstream
from gateway.request.routing import normalise_target, parse_host, rewrite_prefix
from gateway.request.serving import CompiledRoute, ServingConfig
from gateway.request.websocket import is_upgrade
from gateway.upstream.connection import UpstreamResponse

KNOWN_METHODS: Final = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"}
)


def check_head(request: Request) -> None:
    """What the HTTP parser lets through but a gateway must not forward."""
    if request.method == "CONNECT":
        raise BadRequest("CONNECT is not served: the gateway is not an open proxy")
    if request.host_count != 1:
        raise BadRequest(
            "no Host header" if not request.host_count else "more than one Host header"
        )
    te = request.transfer_encoding
    if te and (len(te) > 1 or te[0].strip().lower() != "chunked"):
        raise BadRequest(f"Transfer-Encoding {', '.join(te)!r}: only a single chunked is accepted")
    if request.upgrade and request.body_exists:
        # the parser stops at an upgrade's head: a body would be read as the tunnel's bytes
        raise BadRequest("an Upgrade request with a body is not served")


def check_body_length(request: Request, max_body: int, on_body_limit: Callable[[], None]) -> None:
    """413 before anything is forwarded when the announced body is too large."""
    length = request.content_length
    if length is not None and length > max_body:
        on_body_limit()
        raise PayloadTooLarge(f"Content-Length {length} over the limit of {max_body} bytes")


def error_response(
    err: HttpError, route: str | None, request_id: str, request: Request
) -> Response:
    """The JSON error, or for a gRPC call its Trailers-Only answer (`grpccalls`)."""
    if is_grpc(request):
        return grpc_error(err.status, err.code, request_id)
    return json_error(err.status, err.code, request_id, route)


def _timeouts(job: _Job) -> TimeoutLimits:
    """The route's timeouts, within a gRPC call's own deadline."""
    assert job.route is not None
    deadline = grpc_deadline(job.request)
    timeouts = job.route.timeouts
    return timeouts if deadline is None else timeouts.within(deadline)


class _Job:
    """One request through the pipeline: what its answer is accounted with. A request the
    upstream sent at once tells it how that ended (`done`, `failed`)."""

    __slots__ = (
        "conn",
        "dropped",
        "headers",
        "max_body",
        "path",
        "pipeline",
        "query",
        "request",
        "request_id",
        "route",
        "started",
        "upstream",
        "websocket",
    )

    def __init__(self, pipeline: RequestHandler, request: Request, conn: ConnInfo | None) -> None:
        self.started = time.perf_counter()
        self.pipeline = pipeline
        self.request = request
        self.conn = conn
        self.request_id = request_ids.next()
        self.route: CompiledRoute | None = None
        self.upstream: Upstream | None = None
        # worked out by RequestHandler._front
        self.path = ""
        self.query = ""
        self.headers: list[tuple[str, str]] = []
        self.dropped: list[str] = []  # request fields request_headers kept from the upstream
        self.max_body = 0
        self.websocket = False  # a WebSocket upgrade on a route that allows it

    def done(self, answer: Response | StreamResponse, upstream_seconds: float | None) -> None:
        self.pipeline._finish(self, answer, upstream_seconds)

    def failed(self, exc: Exception) -> None:
        self.pipeline._finish(self, self.pipeline._error_answer(self, exc), None)

    def stream(self, upstream: UpstreamResponse, upstream_seconds: float) -> bool:
        return False  # nothing awaits it: the exchange relays in a task of its own


class RequestHandler:
    """Handles every request of one listener against the current snapshot.

    The usual request (routed, allowed, no body still arriving, an idle upstream connection)
    goes out at once and is answered from the upstream connection's callback, without a task;
    the rest (bodies, WebSocket, a new upstream connection, retries, a pending post-handshake
    check) take the general path, a coroutine per request."""

    def __init__(
        self,
        snapshot: Callable[[], ServingConfig],
        metrics: Metrics,
        activity: Activity | None = None,
    ) -> None:
        self._snapshot = snapshot
        self._metrics = metrics
        self._activity = activity or Activity()
        self._series: dict[
            tuple[str, str, int], tuple[Callable[[], None], Callable[[float], None]]
        ] = {}
        self._body_limit_hits: dict[str, Callable[[], None]] = {}

    def __call__(self, request: Request) -> Awaitable[Answer] | None:
        protocol = request.protocol
        conn = None if protocol.closed else protocol.info  # None: gone while it was queued
        job = _Job(self, request, conn)
        if conn is None or not conn.passed():
            return self._serve(job, fronted=False)
        try:
            self._front(job)
        except Exception as exc:
            self._finish(job, self._error_answer(job, exc), None)
            return None
        upstream = job.upstream
        assert upstream is not None and job.route is not None
        if job.websocket or not upstream.send_now(
            request, job.path, job.query, job.headers, job.request_id, _timeouts(job), job
        ):
            return self._serve(job, fronted=True)
        return None

    async def _serve(self, job: _Job, fronted: bool) -> Answer:
        """The general path: whatever needs waiting for (a post-handshake check, a body, a
        connection, a WebSocket)."""
        request, conn = job.request, job.conn
        if conn is not None and conn.gate is not None and await conn.gate is not None:
            # rejected after the handshake (strict profile, OCSP): the listener counts and
            # logs it and drops the connection; nothing is served on it
            if request.transport is not None:
                request.transport.abort()
            return Response(403)
        upstream_seconds: float | None = None
        response: Answer
        try:
            if not fronted:
                self._front(job)
            upstream, route = job.upstream, job.route
            assert upstream is not None and route is not None
            assert job.conn is not None
            body_limit = BodyLimit(job.max_body, self._limit_hit(job.conn.listener))
            response, upstream_seconds = await upstream.forward(
                request,
                job.path,
                job.query,
                job.headers,
                job.request_id,
                body_limit,
                _timeouts(job),
                self._snapshot().header_rules,
                job.websocket,
            )
        except Exception as exc:
            response = self._error_answer(job, exc)
        self._account(job, response, upstream_seconds)
        return response

    def _front(self, job: _Job) -> None:
        """Check, route, decide and prepare what goes upstream (and whether it opens a
        WebSocket tunnel); raises the HttpError that answers the request otherwise."""
        request, conn = job.request, job.conn
        snap = self._snapshot()
        if conn is None:  # the connection closed while the request was queued
            raise DownstreamError("connection gone", code="connection_closed")
        limits = conn.limits  # the listener's, as they were when the connection was accepted
        check_head(request)
        if snap.trusted_id_sources:  # else the client's X-Request-Id is never taken
            job.request_id = snap.request_id(request, conn.peer_ip) or job.request_id
        target = normalise_target(request.raw_path)
        host = parse_host(request.host or "")  # check_head: exactly one Host field
        if conn.sni is not None and host != conn.sni:
            raise Misdirected(f"SNI {conn.sni!r} but Host {host!r}")
        job.route = route = snap.routes[snap.router.route(host, target.path, request.method).name]
        decision = route.policy.decide(conn.identity)
        if not decision.allowed:
            self._denied(job, route, conn, decision)
        rc = route.config
        job.max_body = max_body = rc.max_request_body or limits.max_request_body
        check_body_length(request, max_body, self._limit_hit(conn.listener))
        job.upstream = route.upstream
        ctx = ClientContext(conn.peer_ip, host, conn.identity, conn.chain, job.request_id)
        job.headers = upstream_headers(
            request.fields,
            request.names,
            request.connection,
            request.host,
            ctx,
            rc.forward_identity,
            snap.header_rules,
            job.dropped,
        )
        if job.dropped:
            self._count_dropped(conn.listener, job.dropped, snap.header_rules)
        path = target.encoded
        if rc.strip_prefix or rc.rewrite_prefix is not None:
            path = rewrite_prefix(path, rc.match.path_prefix, rc.rewrite_prefix or "")
        job.path, job.query = path, target.query
        job.websocket = rc.websocket and is_upgrade(request)

    def _count_dropped(self, listener: str, dropped: list[str], rules: HeaderRules) -> None:
        """Identity look-alikes and invalid names kept from the upstream (the access line
        names them)."""
        identity = sum(1 for name in dropped if rules.verdict(name) == IDENTITY)
        counter = self._metrics.headers_dropped
        if identity:
            counter.labels(listener, "identity").inc(identity)
        if identity < len(dropped):
            counter.labels(listener, "invalid_name").inc(len(dropped) - identity)

    def _denied(self, job: _Job, route: CompiledRoute, conn: ConnInfo, decision: Decision) -> None:
        """Count and log a policy denial, then raise the 403 that answers it."""
        assert decision.reason is not None
        self._metrics.policy_denials.labels(route.config.name, decision.reason.value).inc()
        subject = conn.identity.subject if conn.identity else "no certificate"
        detail = decision.detail
        if subject not in detail:
            detail = f"{subject}: {detail}"
        self._activity.denial(route.config.name, decision.reason.value, conn.peer_ip, detail)
        policy_log.info(
            "request denied by policy",
            extra=event(
                request_id=job.request_id,
                route=route.config.name,
                reason=decision.reason.value,
                detail=decision.detail,
                **_client_fields(conn),
            ),
        )
        raise PolicyDenied(decision.detail, code=POLICY_ERROR_CODES[decision.reason])

    def _error_answer(self, job: _Job, exc: Exception) -> Response:
        """The JSON error that answers a failed request; upstream faults and bugs logged."""
        route = job.route.config.name if job.route else None
        if not isinstance(exc, HttpError):  # a gateway bug: logged with its traceback
            server_log.error(
                "unhandled error in request pipeline",
                exc_info=exc,
                extra=event(request_id=job.request_id),
            )
            return error_response(HttpError("internal error"), route, job.request_id, job.request)
        if exc.status >= 500:
            proxy_log.warning(
                "upstream error",
                extra=event(
                    request_id=job.request_id,
                    upstream=job.upstream.name if job.upstream else "",
                    error=exc.code,
                    kind=exc.kind,
                    detail=exc.detail,
                ),
            )
        error = error_response(exc, route, job.request_id, job.request)
        if isinstance(exc, PayloadTooLarge | BadRequest):
            error.force_close()  # the body was not (entirely) read
        return error

    def _finish(
        self, job: _Job, answer: Response | StreamResponse, upstream_seconds: float | None
    ) -> None:
        """A request answered without a task: counted, logged, written."""
        try:
            self._account(job, answer, upstream_seconds)
        except Exception:  # a gateway bug: logged, and the answer still goes out
            server_log.exception(
                "unhandled error accounting a request", extra=event(request_id=job.request_id)
            )
        job.request.protocol.respond(job.request, answer)

    def _limit_hit(self, listener: str) -> Callable[[], None]:
        hit = self._body_limit_hits.get(listener)
        if hit is None:
            hit = self._body_limit_hits[listener] = self._metrics.limits_hit.labels(
                listener, "body_size"
            ).inc
        return hit

    def _account(self, job: _Job, response: Answer, upstream_seconds: float | None) -> None:
        elapsed = time.perf_counter() - job.started
        request, route, conn = job.request, job.route, job.conn
        route_name = route.config.name if route else ""
        method = request.method if request.method in KNOWN_METHODS else "OTHER"
        key = (route_name, method, response.outcome)
        series = self._series.get(key)
        if series is None:  # label lookups are slow: one per (route, method, status), once
            tally, code = self._metrics.tally, str(response.outcome)
            series = self._series[key] = (
                tally.counter(self._metrics.requests.labels(route_name, method, code)).inc,
                tally.histogram(self._metrics.request_duration.labels(route_name)).observe,
            )
        series[0]()
        series[1](elapsed)
        if not access_lines.enabled():
            return
        ident = conn.identity if conn else None
        access_lines.request(
            job.request_id,
            conn.listener if conn else "",
            route_name,
            request.method,
            request.raw_path[:2048],
            PROTOCOLS.get(request.version, "HTTP/0.9"),
            response.outcome,
            job.upstream.name if job.upstream else "",
            elapsed,
            upstream_seconds,
            job.dropped or None,
            conn.peer_ip if conn else None,
            conn.sni if conn else None,
            ident.subject if ident else None,
            ident.sha256 if ident else None,
        )


def _client_fields(conn: ConnInfo) -> dict[str, str | None]:
    ident = conn.identity
    return {
        "peer": conn.peer_ip,
        "sni": conn.sni,
        "client_subject": ident.subject if ident else None,
        "client_sha256": ident.sha256 if ident else None,
    }
