"""Upstreams that speak HTTP/2 (`protocol: h2c`, or `h2` over TLS agreed by ALPN), against a real
HTTP/2 origin (tests/h2origin.py): requests multiplexed over a bounded number of connections,
the head translated (pseudo-fields, `te: trailers`), trailers relayed, flow control holding an
answer the client does not read, a client that leaves resetting its stream, a dropped
connection answered 502 and replaced, ALPN refused named as such, health checks over HTTP/2."""

from __future__ import annotations

import json
import socket
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tests.h2origin import H2Origin
from tests.harness import base_config, client_context, request, running, sample

UP = "mtls_gateway_upstream_requests_total"


def _config(pki: Path, echo: int, origin: H2Origin, **upstream: Any) -> dict[str, Any]:
    cfg = base_config(pki, echo)
    scheme = "https" if origin.tls is not None else "http"
    cfg["upstreams"] = [
        {"name": "h2", "url": f"{scheme}://localhost:{origin.port}",
         "protocol": "h2" if origin.tls is not None else "h2c", **upstream},
    ]  # fmt: skip
    cfg["routes"] = [{"name": "all", "upstream": "h2", "policy": {"allow": "any"},
                      "forward_identity": ["xfcc"]}]  # fmt: skip
    return cfg


def _requests(gw: Any, route: str) -> float:
    """The requests a route has counted (each once it ended), whatever their status."""
    return sum(
        value
        for (name, labels), value in gw.metrics().items()
        if name == "mtls_gateway_requests_total" and ("route", route) in labels
    )


def _origin_tls(pki: Path) -> ssl.SSLContext:
    """The origin's TLS: it demands a client certificate from the dev CA (the gateway's own)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki / "server.pem", pki / "server.key")
    ctx.load_verify_locations(pki / "ca.pem")
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def test_requests_share_a_bounded_number_of_connections(pki: Path) -> None:
    """40 requests at once to an origin that allows 5 streams per connection, with at most 2
    connections: every one is answered, on no more than 2 connections and 5 streams each."""
    with (
        H2Origin(max_streams=5) as origin,
        running(lambda echo: _config(pki, echo, origin, max_connections=2), pki) as gw,
        ThreadPoolExecutor(max_workers=40) as pool,
    ):
        replies = list(pool.map(lambda i: request(gw.port, f"/slow?ms=200&i={i}", pki), range(40)))
        assert [r.status for r in replies] == [200] * 40
        assert all(r.body == b"slow" for r in replies)
        assert origin.connections <= 2, origin.connections
        assert origin.peak_streams <= 5, origin.peak_streams
        assert sample(gw.metrics(), UP, upstream="h2", outcome="ok") == 40


def test_the_head_is_translated_and_trailers_come_back(pki: Path) -> None:
    with (
        H2Origin() as origin,
        running(lambda echo: _config(pki, echo, origin), pki) as gw,
    ):
        reply = request(
            gw.port, "/echo?q=1", pki, method="POST", body=b"payload",
            headers=[("Connection", "keep-alive"), ("X-Custom", "v"), ("TE", "trailers")],
        )  # fmt: skip
        assert reply.status == 200, reply
        doc = json.loads(reply.body)
        head = doc["head"]
        assert head[":method"] == "POST" and head[":path"] == "/echo?q=1"
        assert head[":scheme"] == "http" and head[":authority"] == f"localhost:{gw.port}"
        assert head["te"] == "trailers" and head["x-custom"] == "v"
        assert head["content-length"] == "7" and doc["body"] == "payload"
        assert "connection" not in head and "host" not in head
        assert "URI=spiffe://dev.local/client" in head["x-forwarded-client-cert"]


def test_an_answer_the_client_does_not_read_is_held_by_flow_control(pki: Path) -> None:
    """An endless answer to a client that reads nothing: the origin can send only what the
    windows allow (the gateway acknowledges what its client took), not the whole stream; when
    the client leaves, its stream is reset at once."""
    with (
        H2Origin() as origin,
        running(lambda echo: _config(pki, echo, origin), pki) as gw,
    ):
        raw = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        tls = client_context(pki).wrap_socket(raw, server_hostname="localhost")
        tls.sendall(b"GET /big HTTP/1.1\r\nHost: localhost\r\n\r\n")
        tls.recv(1024)  # the head has come; from now on nothing is read
        time.sleep(2)
        held = origin.big_sent
        time.sleep(1)
        assert origin.big_sent == held, "the origin kept sending to a client that reads nothing"
        assert held < 8 * 1024 * 1024, held
        tls.close()
        deadline = time.monotonic() + 3
        while not origin.resets and time.monotonic() < deadline:
            time.sleep(0.05)
        assert origin.resets, "the client left but its upstream stream was not reset"
        # and the exchange ended with it (it is counted when it ends), not at the idle timeout
        while not _requests(gw, "all") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _requests(gw, "all") == 1


def test_a_dropped_connection_is_502_and_the_next_request_gets_a_new_one(pki: Path) -> None:
    with (
        H2Origin() as origin,
        running(lambda echo: _config(pki, echo, origin), pki) as gw,
    ):
        dropped = request(gw.port, "/drop", pki, method="POST", body=b"x")
        assert dropped.status == 502, dropped
        assert request(gw.port, "/after", pki).status == 200
        assert origin.connections == 2
        assert sample(gw.metrics(), UP, upstream="h2", outcome="reset") == 1


def test_h2_over_tls_is_agreed_by_alpn_or_refused_with_the_reason(pki: Path) -> None:
    """h2 over the upstream's TLS options (its CA, the gateway's client certificate for an
    origin that demands one); an origin that picks another protocol by ALPN is a TLS error."""
    tls_up = {
        "tls": {
            "ca": [str(pki / "ca.pem")],
            "client_cert": str(pki / "client.pem"),
            "client_key": str(pki / "client.key"),
        }
    }
    with (
        H2Origin(tls=_origin_tls(pki)) as origin,
        running(lambda echo: _config(pki, echo, origin, **tls_up), pki) as gw,
    ):
        reply = request(gw.port, "/echo", pki)
        assert reply.status == 200 and json.loads(reply.body)["head"][":scheme"] == "https"
    with (
        H2Origin(tls=_origin_tls(pki), alpn=("http/1.1",)) as origin,
        running(lambda echo: _config(pki, echo, origin, **tls_up), pki) as gw,
    ):
        refused = request(gw.port, "/echo", pki)
        assert refused.status == 502, refused
        assert sample(gw.metrics(), UP, upstream="h2", outcome="tls_error") == 1


def test_health_checks_speak_http2_to_an_http2_upstream(pki: Path) -> None:
    health = {"health": {"path": "/health", "interval": "100ms", "unhealthy_threshold": 1,
                         "healthy_threshold": 1}}  # fmt: skip
    with (
        H2Origin() as origin,
        running(lambda echo: _config(pki, echo, origin, **health), pki) as gw,
    ):
        assert request(gw.port, "/x", pki).status == 200
        origin.health_status = 503
        deadline = time.monotonic() + 5
        while request(gw.port, "/x", pki).status != 503 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert request(gw.port, "/x", pki).status == 503
        assert any(path == "/health" for _, path, _ in origin.requests)


def test_goaway_lets_the_answer_finish_and_the_next_request_opens_a_new_connection(
    pki: Path,
) -> None:
    with (
        H2Origin() as origin,
        running(lambda echo: _config(pki, echo, origin), pki) as gw,
    ):
        last = request(gw.port, "/goaway", pki)
        assert last.status == 200 and last.body == b"last", last
        assert request(gw.port, "/after", pki).status == 200
        assert origin.connections == 2


def test_a_refused_stream_is_retried_on_another_target(pki: Path) -> None:
    """REFUSED_STREAM says the upstream never processed the request: a GET goes to the next
    target, and the client never sees the refusal."""
    with (
        H2Origin(refuse=True) as refusing,
        H2Origin() as origin,
        running(
            lambda echo: _config(
                pki, echo, origin,
                targets=[f"http://localhost:{refusing.port}", f"http://localhost:{origin.port}"],
                url=None,
            ),
            pki,
        ) as gw,
    ):  # fmt: skip
        for i in range(4):  # round robin: the refusing target comes first at least twice
            reply = request(gw.port, f"/r/{i}", pki)
            assert reply.status == 200 and reply.body == b"ok", reply
        assert len(refusing.requests) >= 2
        assert sample(gw.metrics(), UP, upstream="h2", outcome="retry") >= 2


def test_h2c_to_an_http1_server_is_502_bad_response(pki: Path) -> None:
    """A misconfigured upstream (h2c to a server that speaks only HTTP/1.1) is named for what
    it is: the answer to HTTP/2's preface is not HTTP/2."""

    def config(echo: int) -> dict[str, Any]:
        cfg = base_config(pki, echo)
        cfg["upstreams"][0]["protocol"] = "h2c"
        return cfg

    with running(config, pki) as gw:
        reply = request(gw.port, "/x", pki)
        assert reply.status == 502, reply
        assert sample(gw.metrics(), UP, upstream="echo", outcome="bad_response") == 1


def test_answers_to_clients_that_pause_give_the_session_its_window_back(pki: Path) -> None:
    """Bytes held back from a client that stopped reading (its reader full, so not
    acknowledged) go back to the session's window when its answer ends: six clients that each
    stall an endless answer and leave, one after another on one connection, and the next
    request still gets its answer at once. Held bytes that were never given back would have
    shut the session's 1 MiB window after about four."""
    with (
        H2Origin() as origin,
        running(
            lambda echo: _config(pki, echo, origin, max_connections=1, timeouts={"headers": "3s"}),
            pki,
        ) as gw,
    ):
        for i in range(6):
            raw = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            tls = client_context(pki).wrap_socket(raw, server_hostname="localhost")
            tls.sendall(b"GET /big HTTP/1.1\r\nHost: localhost\r\n\r\n")
            tls.recv(1024)  # the head came; nothing more is read
            sent = -1
            while sent != origin.big_sent:  # until the windows stop the origin
                sent = origin.big_sent
                time.sleep(0.3)
            tls.close()
            deadline = time.monotonic() + 3
            while len(origin.resets) <= i and time.monotonic() < deadline:
                time.sleep(0.05)
        started = time.monotonic()
        assert request(gw.port, "/after", pki).status == 200
        assert time.monotonic() - started < 2
        assert origin.connections == 1
