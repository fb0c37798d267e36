"""Closed connections leave nothing behind: their protocol and transport objects are freed, on
both event loops, compiled (setup.py) or not. A cycle the garbage collector cannot see (a
compiled class's attribute it does not traverse) once kept every connection alive."""

from __future__ import annotations

import contextlib
import gc
import http.client
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.harness import base_config, client_context, request, running


def _live(module: str, name: str) -> int:
    gc.collect()
    return sum(
        1 for o in gc.get_objects() if type(o).__name__ == name and type(o).__module__ == module
    )


def _settles(check: Callable[[], bool], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


@pytest.mark.parametrize("use_uvloop", [False, True], ids=["asyncio", "uvloop"])
def test_closed_connections_are_freed(pki: Path, use_uvloop: bool) -> None:
    with running(lambda port: base_config(pki, port), pki, use_uvloop) as gw:
        for i in range(30):  # a connection each: handshake, one request, close
            assert request(gw.port, f"/n/{i}", pki).status == 200
        refused = 0
        for _ in range(10):  # no client certificate: the handshake fails
            with contextlib.suppress(OSError, http.client.HTTPException):
                request(gw.port, "/", pki, cert=None)
                continue
            refused += 1
        assert refused == 10
        assert _live("gateway.upstream.connection", "Connection") >= 1  # the kept-alive pool
        assert _settles(
            lambda: (
                _live("gateway.downstream.tlsconn", "TlsTransport") == 0
                and _live("gateway.downstream.http1", "Http1Connection") == 0
            )
        ), (
            _live("gateway.downstream.tlsconn", "TlsTransport"),
            _live("gateway.downstream.http1", "Http1Connection"),
        )
    # stopped: the pool's connections are closed and freed too
    assert _settles(lambda: _live("gateway.upstream.connection", "Connection") == 0)


@pytest.mark.parametrize("use_uvloop", [False, True], ids=["asyncio", "uvloop"])
def test_a_closed_connection_lets_go_of_its_tls_context_at_once(
    pki: Path, use_uvloop: bool
) -> None:
    """A connection's SSL object holds its context, and with it the context's whole session
    cache: a listener that renews its context (`session_cache` full) must not keep the old
    ones until the collector happens to walk the closed connections' cycles. No gc.collect()
    here: the contexts are counted through weak references."""
    import ssl
    import weakref

    from gateway.pki import tls

    contexts: weakref.WeakSet[ssl.SSLContext] = weakref.WeakSet()
    current = tls.ServerContexts.current

    def recording(self: tls.ServerContexts) -> ssl.SSLContext:
        ctx = current(self)
        contexts.add(ctx)
        return ctx

    tls.ServerContexts.current = recording  # type: ignore[method-assign]
    gc.disable()  # the collector must not be what frees them
    try:
        with running(lambda port: base_config(pki, port, session_cache=4), pki, use_uvloop) as gw:
            close = [("Connection", "close")]  # the gateway closes first: its session stays
            for i in range(40):  # a new session each: a new context every 4 connections
                assert request(gw.port, f"/n/{i}", pki, headers=close).status == 200
            assert _settles(lambda: len(contexts) <= 2), len(contexts)
    finally:
        gc.enable()
        tls.ServerContexts.current = current  # type: ignore[method-assign]


def test_requests_leave_no_memory_behind(pki: Path) -> None:
    """Memory the gateway's own code allocates for a request is all released after it, compiled
    or not: a compiled `bytes + bytes` once leaked every answer's head (messages.BYTES_CONCAT).
    Kept-alive requests with bodies both ways, counted by tracemalloc in the gateway's
    process (the test's echo upstream keeps a line per request; that is not counted)."""
    import tracemalloc

    def held() -> int:
        # compiled code has no frames of its own: what it allocates is traced to the event
        # loop's frame that called it, so everything counts but the client and the echo
        snapshot = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, f) for f in ("*/echo.py", "*/http/client.py", __file__)]
        )
        return sum(stat.size for stat in snapshot.statistics("filename"))

    with running(lambda port: base_config(pki, port), pki) as gw:
        conn = http.client.HTTPSConnection("localhost", gw.port, context=client_context(pki))
        try:

            def requests(n: int) -> None:
                for i in range(n):
                    conn.request("POST", f"/n/{i % 10}", body=b"x" * 100)
                    answer = conn.getresponse()
                    assert answer.status == 200 and answer.read()

            requests(200)  # caches, pools and lazily made objects settle
            tracemalloc.start()
            try:
                requests(100)
                before = held()
                requests(2000)
                grown = held() - before
            finally:
                tracemalloc.stop()
        finally:
            conn.close()
    assert grown < 20_000, f"{grown} bytes more after 2,000 requests"
