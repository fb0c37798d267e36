"""An exchange's answer on its way to the client: in one piece when the whole of it came with
its head (the usual small one), else relayed as it streams under the route's idle and total
timeouts, its trailers after it. The upstream's hop-by-hop fields are dropped and the request's
id is added."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.base.log import event, proxy_log
from gateway.downstream.messages import Response, StreamResponse
from gateway.http.headers import response_drop
from gateway.upstream.connection import ConnectionLost, UpstreamResponse
from gateway.upstream.h1response import BadResponse

if TYPE_CHECKING:
    from gateway.request.exchange import Exchange


def response_headers(
    ex: Exchange, upstream: UpstreamResponse
) -> tuple[list[tuple[str, str]], frozenset[str]]:
    """The response headers to send on, and the fields dropped from them (and its trailers)."""
    # a chunked answer stays chunked (to an HTTP/1.1 client), so its trailers can follow it
    drop = response_drop(upstream.chunked, upstream.connection)
    pairs = [(k, v) for k, v in upstream.headers if k.lower() not in drop]
    pairs.append(("X-Request-Id", ex.request_id))
    return pairs, drop


def whole_answer(ex: Exchange, upstream: UpstreamResponse) -> Response | None:
    """The answer in one piece when the whole of it is here already: the usual small one, and
    an answer that ended with its head (gRPC's Trailers-Only, whose status is in its head, must
    end on that head). A chunked body or trailers stream on as they came."""
    if not upstream.complete or ex.request.method == "HEAD":
        return None
    if upstream.content_length is None and (upstream.trailers or upstream.body.size):
        return None
    headers, _ = response_headers(ex, upstream)
    ex.upstream.count("ok")
    return Response(
        upstream.status, reason=upstream.reason, headers=headers, body=upstream.take_body()
    )


async def relay(ex: Exchange, upstream: UpstreamResponse) -> StreamResponse:
    """Relay an answer that streams; an upstream that fails or stalls once its head went out
    cuts the client's connection (the only honest signal left)."""
    request = ex.request
    headers, drop = response_headers(ex, upstream)
    out = StreamResponse(upstream.status, reason=upstream.reason, headers=headers)
    out.content_length = upstream.content_length
    kind = "reset"
    try:
        await out.prepare(request)
        while True:
            wait, kind = ex.chunk_wait()
            chunk = await upstream.read(wait)
            kind = "reset"
            if not chunk:
                break
            await out.write(chunk)
        await out.write_eof([(k, v) for k, v in upstream.trailers if k.lower() not in drop])
    except (TimeoutError, ConnectionLost, BadResponse) as exc:
        out.force_close()
        out.finished = True
        if request.protocol.closed:  # the client left: its leaving ended the upstream read
            return out
        if not isinstance(exc, TimeoutError):
            kind = "reset"
        ex.upstream.count("reset" if kind == "reset" else "timeout")
        proxy_log.warning(
            "upstream failed mid-response",
            extra=event(upstream=ex.upstream.name, kind=kind, error=repr(exc)),
        )
        if request.transport is not None:
            request.transport.abort()
        return out
    ex.upstream.count("ok")
    return out
