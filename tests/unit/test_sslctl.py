"""The session cache of a server context, sized through OpenSSL: real handshakes in memory."""

from __future__ import annotations

import contextlib
import ssl
import time
from pathlib import Path

import pytest

from gateway import sslctl
from gateway.config import TlsConfig
from gateway.log import EVENT_KEY
from gateway.tls import server_context


def _server(pki: Path, **kw: object) -> ssl.SSLContext:
    cfg = TlsConfig.model_validate(
        {
            "cert": str(pki / "server.pem"),
            "key": str(pki / "server.key"),
            "client_ca": [str(pki / "ca.pem")],
            **kw,
        }
    )
    return server_context(cfg, "listeners[0].tls")


def _handshake(
    server: ssl.SSLContext, client: ssl.SSLContext, session: ssl.SSLSession | None = None
) -> tuple[ssl.SSLSession | None, bool]:
    """One full exchange over memory BIOs, closed properly (close_notify) like the gateway does."""
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    c = client.wrap_bio(c_in, c_out, server_hostname="localhost", session=session)
    s = server.wrap_bio(s_in, s_out, server_side=True)
    done_c = done_s = False
    while not (done_c and done_s):
        done_c = done_c or _step(c)
        s_in.write(c_out.read())
        done_s = done_s or _step(s)
        c_in.write(s_out.read())
    s.write(b"ok")
    c_in.write(s_out.read())
    assert c.read(2) == b"ok"  # the client has read the session ticket too
    with contextlib.suppress(ssl.SSLWantReadError):
        s.unwrap()  # close_notify sent; the peer's is not awaited
    return c.session, c.session_reused


def _step(obj: ssl.SSLObject) -> bool:
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        return False
    return True


@pytest.fixture()
def client(pki: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    ctx.load_cert_chain(pki / "client.pem", pki / "client.key")
    return ctx


def test_the_cache_holds_at_most_session_cache_sessions(pki: Path, client: ssl.SSLContext) -> None:
    server = _server(pki, session_cache=4)
    assert server.options & ssl.OP_NO_TICKET
    sessions = [_handshake(server, client)[0] for _ in range(7)]
    stats = server.session_stats()
    assert stats["number"] <= 4 and stats["cache_full"] >= 3, stats
    assert _handshake(server, client, sessions[-1])[1] is True
    assert _handshake(server, client, sessions[0])[1] is False  # evicted


def test_session_cache_zero_keeps_stateless_tickets(pki: Path, client: ssl.SSLContext) -> None:
    server = _server(pki, session_cache=0)
    assert not server.options & ssl.OP_NO_TICKET
    session, _ = _handshake(server, client)
    assert session is not None and session.has_ticket
    assert _handshake(server, client, session)[1] is True
    assert server.session_stats()["number"] == 0  # nothing kept on the server


@pytest.mark.parametrize("cache", [0, 16], ids=["tickets", "cache"])
def test_sessions_do_not_resume_after_session_timeout(
    pki: Path, client: ssl.SSLContext, cache: int
) -> None:
    server = _server(pki, session_cache=cache, session_timeout="1s")
    session, _ = _handshake(server, client)
    assert _handshake(server, client, session)[1] is True
    session, _ = _handshake(server, client)
    time.sleep(2.1)  # OpenSSL counts whole seconds
    assert _handshake(server, client, session)[1] is False


def test_without_the_library_the_context_keeps_tickets_and_says_so(
    pki: Path,
    client: ssl.SSLContext,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(sslctl, "_libssl", lambda: None)
    server = _server(pki, session_cache=16)
    assert not server.options & ssl.OP_NO_TICKET
    (record,) = [
        r for r in caplog.records if "TLS session cache or timeout not settable" in r.getMessage()
    ]
    assert getattr(record, EVENT_KEY)["config"] == "listeners[0].tls.session_cache"
    session, _ = _handshake(server, client)
    assert _handshake(server, client, session)[1] is True
