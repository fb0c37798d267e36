"""The gateway's refusals as gRPC statuses: which calls are gRPC, the code each status maps
to, and grpc-message's percent-encoding."""

from __future__ import annotations

from gateway.downstream.messages import ClientStream, Request
from gateway.request.attempts import TimeoutLimits
from gateway.request.grpccalls import grpc_deadline, grpc_error, grpc_message, is_grpc


def _request(version: tuple[int, int], content_type: str) -> Request:
    fields = [("host", "a"), ("content-type", content_type)]
    return Request(ClientStream(), "POST", "/pkg.Svc/Call", version, fields, True, False)


def test_only_http2_calls_with_a_grpc_content_type_are_grpc() -> None:
    assert is_grpc(_request((2, 0), "application/grpc"))
    assert is_grpc(_request((2, 0), "application/grpc+proto"))
    assert not is_grpc(_request((2, 0), "application/json"))
    assert not is_grpc(_request((1, 1), "application/grpc"))  # gRPC needs HTTP/2


def test_a_refusal_is_a_trailers_only_answer_with_its_status() -> None:
    for status, code in ((403, "7"), (502, "14"), (503, "14"), (504, "4"), (418, "2")):
        answer = grpc_error(status, "some_error", "ab12")
        fields = dict(answer.headers)
        assert answer.status == 200 and answer.body == b"" and answer.outcome == status
        assert fields["content-type"] == "application/grpc"
        assert fields["grpc-status"] == code
        assert fields["grpc-message"] == "some_error (request ab12)"


def test_no_client_certificate_is_unauthenticated_not_denied() -> None:
    assert dict(grpc_error(403, "client_cert_required", "x").headers)["grpc-status"] == "16"
    assert dict(grpc_error(403, "client_cert_not_allowed", "x").headers)["grpc-status"] == "7"


def test_grpc_message_is_percent_encoded() -> None:
    assert grpc_message("a b") == "a b"
    assert grpc_message("100%") == "100%25"
    assert grpc_message("caf\u00e9\n") == "caf%C3%A9%0A"


def test_grpc_timeout_is_the_calls_deadline() -> None:
    def call(value: str) -> Request:
        request = _request((2, 0), "application/grpc")
        request.fields.append(("grpc-timeout", value))
        return request

    assert grpc_deadline(call("300m")) == 0.3
    assert grpc_deadline(call("2S")) == 2.0
    assert grpc_deadline(call("1H")) == 3600.0
    assert grpc_deadline(call("123456789S")) is None  # at most 8 digits
    assert grpc_deadline(call("10x")) is None
    assert grpc_deadline(_request((2, 0), "application/grpc")) is None  # none given
    limits = TimeoutLimits(connect=5.0, headers=30.0, idle=60.0, total=None).within(0.3)
    assert limits == TimeoutLimits(connect=0.3, headers=0.3, idle=0.3, total=0.3)
