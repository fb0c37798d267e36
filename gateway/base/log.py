"""Logger names and the JSON-lines formatter used for every log the gateway writes."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

ROOT = "gateway"
ACCESS = "gateway.access"  # one line per request
TLS = "gateway.tls"  # handshake failures
POLICY = "gateway.policy"  # policy denials
PROXY = "gateway.proxy"  # upstream faults
CONFIG = "gateway.config"  # load / validation
SERVER = "gateway.server"  # lifecycle

access_log = logging.getLogger(ACCESS)
tls_log = logging.getLogger(TLS)
policy_log = logging.getLogger(POLICY)
proxy_log = logging.getLogger(PROXY)
config_log = logging.getLogger(CONFIG)
server_log = logging.getLogger(SERVER)

EVENT_KEY = "event"  # pass structured fields as `extra={EVENT_KEY: {...}}`
HANDLER: logging.StreamHandler[Any] | None = None  # where `setup` sends the logs


def event(**fields: Any) -> dict[str, dict[str, Any]]:
    """Build the `extra=` argument that carries structured fields into a JSON log line."""
    return {EVENT_KEY: fields}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, then the record's structured fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, EVENT_KEY, None)
        if isinstance(fields, dict):
            out.update(fields)
        if record.exc_info and record.levelno >= logging.ERROR:
            out["exc"] = self.formatException(record.exc_info)
        return one_line(json.dumps(out, default=str, ensure_ascii=False))


def one_line(line: str) -> str:
    """A JSON log line that line readers cannot split: JSON allows U+2028, U+2029 and NEL
    raw, and a certificate (or a request path) can carry them; they become escapes."""
    for sep in ("\u2028", "\u2029", "\u0085"):
        if sep in line:
            line = line.replace(sep, f"\\u{ord(sep):04x}")
    return line


def setup(level: str = "info", stream: Any = None) -> None:
    """Send every gateway log (and aiohttp's) to `stream` (stdout) as JSON lines."""
    global HANDLER
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter())
    HANDLER = handler  # the access log (accesslog.py) writes its batches to its stream
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # watchfiles says "N changes detected" at INFO: with stdout in a watched folder each such
    # line would be a change of its own. The gateway logs the reloads it makes
    logging.getLogger("watchfiles").setLevel(logging.WARNING)
