"""Typed errors: configuration faults (with YAML paths) and HTTP faults split by who is at fault."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ConfigProblem:
    """One problem in a configuration: where (a YAML path such as `listeners[0].bind`) and what."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(Exception):
    """A configuration that cannot be used; carries every problem found, not just the first."""

    def __init__(self, problems: list[ConfigProblem] | ConfigProblem | str, path: str = "") -> None:
        if isinstance(problems, str):
            problems = [ConfigProblem(path, problems)]
        elif isinstance(problems, ConfigProblem):
            problems = [problems]
        self.problems: tuple[ConfigProblem, ...] = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class HttpError(Exception):
    """An error answered to the client as JSON `{"error": code, ...}` with `status`."""

    status = 500
    code = "internal_error"

    def __init__(
        self,
        detail: str = "",
        *,
        code: str | None = None,
        status: int | None = None,
        kind: str = "",
    ):
        super().__init__(detail or self.code)
        self.detail = detail
        self.kind = kind  # e.g. which timeout (connect, headers, idle, total): for the log
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status


class DownstreamError(HttpError):
    """The client is at fault (4xx)."""

    status = 400
    code = "bad_request"


# Every HTTP error class lives here, in a module that stays plain Python: mypyc (setup.py) would
# not keep a compiled subclass's class-level `status` and `code`.


class BadRequest(DownstreamError):
    status = 400
    code = "bad_request"


class BadPath(DownstreamError):
    status = 400
    code = "bad_path"


class PolicyDenied(DownstreamError):
    status = 403
    code = "client_cert_not_allowed"


class NoRoute(DownstreamError):
    status = 404
    code = "no_route"


class MethodNotAllowed(DownstreamError):
    status = 405
    code = "method_not_allowed"


class RequestTimeout(DownstreamError):
    """The request body did not arrive in time (limits.body_timeout, body_min_rate)."""

    status = 408
    code = "request_timeout"


class PayloadTooLarge(DownstreamError):
    status = 413
    code = "request_too_large"


class Misdirected(DownstreamError):
    status = 421
    code = "misdirected_request"


class ClientClosed(DownstreamError):
    """The client left before its answer (nginx's 499): nobody reads the answer; it is counted
    and logged as the client's outcome, never as the upstream's."""

    status = 499
    code = "client_closed_request"


class UpstreamError(HttpError):
    """The upstream is at fault (502/504)."""

    status = 502
    code = "upstream_unavailable"


class NoHealthyTarget(UpstreamError):
    status = 503
    code = "upstream_unavailable"


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"
