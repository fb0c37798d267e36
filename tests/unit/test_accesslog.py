"""The access line, built without logging: the same JSON as the logging formatter's, every
value escaped, written in batches and at flush, and through logging when someone attached a
handler of their own."""

from __future__ import annotations

import asyncio
import io
import json
import logging

from gateway.base.log import EVENT_KEY, access_log
from gateway.observe.accesslog import FLUSH_BYTES, FLUSH_SECONDS, AccessLog

ARGS = dict(
    request_id="0123456789abcdef", listener="public", route="all", method="GET",
    path="/a\u2028b\x00c\"d", protocol="HTTP/2", status=200, upstream="echo", duration=0.00125, upstream_seconds=None,
    dropped=["x-forwarded-client-cert"], peer="127.0.0.1", sni=None,
    subject="CN=\u00e9\u2029\r\nx", sha256="ab" * 32,
)  # fmt: skip


def _log(stream: io.StringIO) -> AccessLog:
    out = AccessLog()
    out.stream = stream
    return out


def test_a_line_is_the_json_of_its_fields_and_never_splits() -> None:
    stream = io.StringIO()
    lines = _log(stream)

    async def log_one() -> None:  # in the event loop, as in the gateway
        lines.request(**ARGS)  # type: ignore[arg-type]
        assert stream.getvalue() == ""  # waiting for its batch
        await asyncio.sleep(FLUSH_SECONDS + 0.1)
        assert stream.getvalue() != ""  # written by the timer

    asyncio.run(log_one())
    text = stream.getvalue()
    assert text.count("\n") == 1 and not any(c in text[:-1] for c in "\u2028\u2029\u0085\r\n")
    doc = json.loads(text)
    assert doc["logger"] == "gateway.access" and doc["msg"] == "request" and doc["level"] == "info"
    assert doc["ts"].endswith("Z") and len(doc["ts"]) == 24
    expected = dict(ARGS, client_subject=ARGS["subject"], client_sha256=ARGS["sha256"])
    expected["dropped_headers"] = expected.pop("dropped")
    expected["duration_ms"], expected["upstream_ms"] = 1.25, None  # seconds, logged as ms
    del expected["subject"], expected["sha256"], expected["duration"], expected["upstream_seconds"]
    assert {k: doc[k] for k in expected} == expected
    assert text.startswith('{"ts": "') and '"msg": "request"' in text  # json.dumps' spacing


def test_lines_are_written_in_batches() -> None:
    stream = io.StringIO()
    lines = _log(stream)
    count = FLUSH_BYTES // 400

    async def log_many() -> None:
        for _ in range(count):
            lines.request(**ARGS)  # type: ignore[arg-type]
        written = stream.getvalue().count("\n")
        assert 0 < written < count  # a full batch went out, the rest waits
        lines.flush()  # as the gateway's stop does

    asyncio.run(log_many())
    assert stream.getvalue().count("\n") == count


def test_an_own_handler_on_the_logger_gets_records() -> None:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    keep, old, was_disabled = Keep(), access_log.level, access_log.disabled
    access_log.addHandler(keep)
    access_log.setLevel(logging.INFO)
    access_log.disabled = False  # (a gateway built by another test may have turned it off)
    try:
        stream = io.StringIO()
        lines = _log(stream)
        assert lines.enabled()
        lines.request(**ARGS)  # type: ignore[arg-type]
        lines.flush()
    finally:
        access_log.removeHandler(keep)
        access_log.setLevel(old)
        access_log.disabled = was_disabled
    assert stream.getvalue() == ""
    (record,) = records
    assert getattr(record, EVENT_KEY)["client_subject"] == ARGS["subject"]
