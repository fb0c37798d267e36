"""What the gateway does for gRPC calls (HTTP/2, `content-type: application/grpc…`): their
`grpc-timeout` bounds the exchange, and a call the gateway answers itself gets a Trailers-Only
response: `:status`
200 with `grpc-status` and `grpc-message` (the error code and the request id), so the client's
library reports a gRPC status instead of a transport failure: a policy denial is 7
PERMISSION_DENIED, an unreachable upstream 14 UNAVAILABLE, a timeout 4 DEADLINE_EXCEEDED. The
answer's `outcome` stays the HTTP status the gateway decided, for metrics and the access log."""

from __future__ import annotations

from typing import Final

from gateway.downstream.messages import Request, Response

# the gateway's HTTP status -> the gRPC status code (grpc/doc/statuscodes.md)
GRPC_STATUS: Final = {
    400: 3,  # INVALID_ARGUMENT
    403: 7,  # PERMISSION_DENIED
    404: 12,  # UNIMPLEMENTED: no route
    405: 12,
    408: 4,  # DEADLINE_EXCEEDED
    413: 8,  # RESOURCE_EXHAUSTED
    414: 3,
    421: 3,
    431: 3,
    500: 13,  # INTERNAL
    502: 14,  # UNAVAILABLE
    503: 14,
    504: 4,
}
UNKNOWN: Final = 2
UNAUTHENTICATED: Final = 16  # a route that requires a client certificate, and none came


def is_grpc(request: Request) -> bool:
    if request.version != (2, 0):
        return False
    for name, value in request.fields:
        if name == "content-type":
            return value.startswith("application/grpc")
    return False


def grpc_message(text: str) -> str:
    """`grpc-message`'s percent-encoding: printable ASCII but `%` as it is, the rest as UTF-8
    bytes in %XX."""
    out = []
    for byte in text.encode("utf-8"):
        out.append(chr(byte) if 0x20 <= byte <= 0x7E and byte != 0x25 else f"%{byte:02X}")
    return "".join(out)


# grpc-timeout's units (the gRPC over HTTP/2 protocol): hours to nanoseconds
_UNITS: Final = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


def grpc_deadline(request: Request) -> float | None:
    """The seconds a gRPC call's `grpc-timeout` gives it (None: no call, no valid field)."""
    if not is_grpc(request):
        return None
    for name, value in request.fields:
        if name == "grpc-timeout":
            digits, unit = value[:-1], value[-1:]
            if 0 < len(digits) <= 8 and digits.isdigit() and unit in _UNITS:
                return int(digits) * _UNITS[unit]
            return None
    return None


def _code(status: int, code: str) -> int:
    if code == "client_cert_required":
        return UNAUTHENTICATED
    return GRPC_STATUS.get(status, UNKNOWN)


def grpc_error(status: int, code: str, request_id: str) -> Response:
    """The Trailers-Only answer to a gRPC call the gateway refuses with `status`."""
    answer = Response(
        200,
        headers=[
            ("content-type", "application/grpc"),
            ("grpc-status", str(_code(status, code))),
            ("grpc-message", grpc_message(f"{code} (request {request_id})")),
            ("x-request-id", request_id),
        ],
    )
    answer.outcome = status
    return answer
