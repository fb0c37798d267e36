"""Session resumption bounded by renewing the server context: real handshakes in memory."""

from __future__ import annotations

import contextlib
import shutil
import ssl
import time
from functools import partial
from pathlib import Path

import pytest

from gateway.base.log import EVENT_KEY
from gateway.config.listener import TlsConfig
from gateway.pki.tls import ServerContexts, server_context


def _server(pki: Path, **kw: object) -> ServerContexts:
    cfg = _config(pki, **kw)
    return ServerContexts(partial(server_context, cfg, "listeners[0].tls"), cfg, "listeners[0].tls")


def _config(pki: Path, **kw: object) -> TlsConfig:
    return TlsConfig.model_validate(
        {
            "cert": str(pki / "server.pem"),
            "key": str(pki / "server.key"),
            "client_ca": [str(pki / "ca.pem")],
            **kw,
        }
    )


def _handshake(
    server: ServerContexts, client: ssl.SSLContext, session: ssl.SSLSession | None = None
) -> tuple[ssl.SSLSession | None, bool]:
    """One full exchange over memory BIOs, closed properly (close_notify) like the gateway does."""
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    c = client.wrap_bio(c_in, c_out, server_hostname="localhost", session=session)
    s = server.current().wrap_bio(s_in, s_out, server_side=True)
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


def test_a_context_is_renewed_once_its_cache_holds_session_cache_sessions(
    pki: Path, client: ssl.SSLContext
) -> None:
    server = _server(pki, session_cache=4)
    first = server.current()
    assert first.options & ssl.OP_NO_TICKET
    sessions = [_handshake(server, client)[0] for _ in range(7)]
    assert first.session_stats()["number"] == 4 and server.built == 2
    assert server.current() is not first
    assert server.current().session_stats()["number"] == 3
    assert _handshake(server, client, sessions[-1])[1] is True
    assert _handshake(server, client, sessions[0])[1] is False  # its context is gone


def test_session_cache_zero_keeps_stateless_tickets(pki: Path, client: ssl.SSLContext) -> None:
    server = _server(pki, session_cache=0)
    assert not server.current().options & ssl.OP_NO_TICKET
    session, _ = _handshake(server, client)
    assert session is not None and session.has_ticket
    assert _handshake(server, client, session)[1] is True
    assert server.current().session_stats()["number"] == 0  # nothing kept on the server
    assert server.built == 1


@pytest.mark.parametrize("cache", [0, 16], ids=["tickets", "cache"])
def test_sessions_do_not_resume_after_session_timeout(
    pki: Path, client: ssl.SSLContext, cache: int
) -> None:
    server = _server(pki, session_cache=cache, session_timeout="1s")
    session, _ = _handshake(server, client)
    assert _handshake(server, client, session)[1] is True
    time.sleep(1.1)
    assert _handshake(server, client, session)[1] is False
    assert server.built == 2


def test_a_context_that_cannot_be_renewed_is_kept_and_logged(
    pki: Path, tmp_path: Path, client: ssl.SSLContext, caplog: pytest.LogCaptureFixture
) -> None:
    for name in ("server.pem", "server.key", "ca.pem"):
        shutil.copy(pki / name, tmp_path / name)
    server = _server(tmp_path, session_timeout="1s")
    first = server.current()
    (tmp_path / "server.pem").unlink()
    time.sleep(1.1)
    assert server.current() is first and server.built == 1
    (record,) = [r for r in caplog.records if "cannot renew the TLS context" in r.getMessage()]
    assert getattr(record, EVENT_KEY)["config"] == "listeners[0].tls"
    assert "server.pem" in getattr(record, EVENT_KEY)["detail"]
    assert server.current() is first  # not retried at once: one line, not one per connection
    assert len([r for r in caplog.records if "cannot renew" in r.getMessage()]) == 1
    assert _handshake(server, client)[1] is False  # and it still serves
