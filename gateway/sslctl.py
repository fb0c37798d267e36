"""The server-side session cache of an `ssl.SSLContext`, through the OpenSSL library that
Python's `ssl` module itself uses (its size and timeout have no Python API).

Why a cache instead of stateless tickets: a TLS 1.3 ticket carries the whole session, client
certificate included, encrypted under a key that lives as long as the context. Resuming one
means decrypting it and parsing the certificate again, and issuing the next one means
encrypting it again, which costs the server several times the CPU of looking the session up
in its cache (BENCHMARKS.md). The cache also gives
forward secrecy that tickets do not: a session lives in this process's memory for at most
`session_timeout`, not in every client's ticket under one long-lived key. It costs memory (each
cached session holds the parsed client certificate), bounded by `session_cache`.

Only the size and the timeout are set here, with OpenSSL's documented `SSL_CTX_ctrl` and
`SSL_CTX_set_timeout`. The `SSL_CTX *` is the first field of CPython's `SSLContext` object,
after the object header; the pointer is checked against the context's verify mode before
anything is written. When that check fails (another Python implementation or layout), the
context keeps stateless tickets and `configure_sessions` says so."""

from __future__ import annotations

import ctypes
import platform
import ssl
import sys
from functools import cache

_SSL_CTRL_SET_SESS_CACHE_SIZE = 42
_SSL_CTRL_GET_SESS_CACHE_SIZE = 43
# ssl.CERT_* -> SSL_VERIFY_* flags as CPython sets them (NONE, PEER, PEER|FAIL_IF_NO_PEER_CERT)
_VERIFY_FLAGS = {ssl.CERT_NONE: 0, ssl.CERT_OPTIONAL: 1, ssl.CERT_REQUIRED: 3}


# CPython versions whose `PySSLContext` starts with the `SSL_CTX *` (Modules/_ssl.c); a newer
# one falls back to tickets until it is checked and added here
_KNOWN_LAYOUT = ((3, 11), (3, 12), (3, 13), (3, 14))


@cache
def _libssl() -> ctypes.CDLL | None:
    """The libssl that the `_ssl` extension is linked against (symbols resolve through it)."""
    if platform.python_implementation() != "CPython" or sys.version_info[:2] not in _KNOWN_LAYOUT:
        return None
    try:
        import _ssl

        lib = ctypes.CDLL(_ssl.__file__)
        lib.SSL_CTX_ctrl.restype = ctypes.c_long
        lib.SSL_CTX_ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
        lib.SSL_CTX_set_timeout.restype = ctypes.c_long
        lib.SSL_CTX_set_timeout.argtypes = [ctypes.c_void_p, ctypes.c_long]
        lib.SSL_CTX_get_verify_mode.restype = ctypes.c_int
        lib.SSL_CTX_get_verify_mode.argtypes = [ctypes.c_void_p]
    except (OSError, AttributeError):
        return None
    return lib


def _ssl_ctx(lib: ctypes.CDLL, ctx: ssl.SSLContext) -> int | None:
    """The context's `SSL_CTX *`, or None when it cannot be confirmed."""
    if type(ctx).__basicsize__ <= object.__basicsize__:
        return None
    pointer = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
    if not pointer:
        return None
    probe = ssl.CERT_OPTIONAL if ctx.verify_mode == ssl.CERT_REQUIRED else ssl.CERT_REQUIRED
    original = ctx.verify_mode
    try:  # two different modes set from Python must both read back through the pointer
        for mode in (probe, original):
            ctx.verify_mode = mode
            if lib.SSL_CTX_get_verify_mode(pointer) != _VERIFY_FLAGS[mode]:
                return None
    finally:
        ctx.verify_mode = original
    return pointer


def configure_sessions(ctx: ssl.SSLContext, size: int, timeout: float) -> str | None:
    """Resumption for a server context: a server-side cache of `size` sessions that resume for
    `timeout` seconds, or stateless tickets (with the same lifetime) when `size` is 0.
    Returns None when that is what was set up, else why not: the context then keeps
    stateless tickets with OpenSSL's defaults."""
    ctx.num_tickets = 1  # clients keep the latest; OpenSSL's default of two costs a second one
    lib = _libssl()
    pointer = _ssl_ctx(lib, ctx) if lib is not None else None
    if lib is None or pointer is None:
        return "OpenSSL's SSL_CTX of this Python's ssl module cannot be reached"
    lib.SSL_CTX_set_timeout(pointer, max(1, round(timeout)))  # tickets' lifetime too
    if size == 0:
        return None
    lib.SSL_CTX_ctrl(pointer, _SSL_CTRL_SET_SESS_CACHE_SIZE, size, None)
    if lib.SSL_CTX_ctrl(pointer, _SSL_CTRL_GET_SESS_CACHE_SIZE, 0, None) != size:
        return "the session cache did not take its size"
    ctx.options |= ssl.OP_NO_TICKET  # TLS 1.3 tickets become ids into the cache
    return None
