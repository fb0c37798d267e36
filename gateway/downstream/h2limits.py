"""What one HTTP/2 client may spend, and what each way of overspending is called: the budgets of
stream resets (rapid reset, CVE-2023-44487) and of control frames (SETTINGS and PING floods)
per window of time, and the `limits_hit_total{limit}` name of each protocol error the `h2`
library raises (too many streams, a header list over its bound, a CONTINUATION flood). Pure:
`http2` asks, and acts."""

from __future__ import annotations

from typing import Final

import h2.exceptions

WINDOW_SECONDS: Final = 10.0  # the budgets below are per this many seconds


class Budget:
    """At most `allowed` events in any window of `WINDOW_SECONDS` (counted per window: cheap,
    and within a factor of two of a sliding count)."""

    __slots__ = ("_allowed", "_count", "_since")

    def __init__(self, allowed: int) -> None:
        self._allowed = allowed
        self._count = 0
        self._since = 0.0

    def spend(self, now: float) -> bool:
        """Count one; False once this window's allowance is spent."""
        if now - self._since >= WINDOW_SECONDS:
            self._since = now
            self._count = 0
        self._count += 1
        return self._count <= self._allowed


def limit_of(exc: h2.exceptions.ProtocolError) -> str:
    """The limit a client's protocol error is counted under."""
    if isinstance(exc, h2.exceptions.TooManyStreamsError):
        return "h2_streams"
    if isinstance(exc, h2.exceptions.DenialOfServiceError):
        return "h2_header_list"  # an HPACK bomb: the decoded head outgrew its bound
    if "continuation" in str(exc).lower():
        return "h2_continuation"  # a head in more CONTINUATION frames than h2 holds
    if isinstance(exc, h2.exceptions.FlowControlError):
        return "h2_flow_control"
    return "h2_protocol"
