"""Pure parts of the status page: activity windows, expiry colours, policies in words."""

from __future__ import annotations

from gateway.config.model import Policy
from gateway.observe.activity import Activity
from gateway.ops.status import describe_policy
from gateway.ops.statuspage import _days_class


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def test_activity_counts_a_sliding_window_and_keeps_recent_rejections() -> None:
    clock = Clock()
    act = Activity(minutes=3, keep=2, clock=clock)
    act.handshake("public", "ok")
    act.handshake("public", "expired", "10.0.0.1:5", "cert expired")
    act.denial("api", "not_allowed", "10.0.0.2", "CN=x")
    clock.now += 60
    act.handshake("public", "ok")
    act.handshake("public", "unknown_ca", "10.0.0.3:7", "no issuer")
    assert act.handshakes() == {"ok": 2, "expired": 1, "unknown_ca": 1}
    assert act.denials() == {("api", "not_allowed"): 1}
    assert [r.reason for r in act.recent()] == ["unknown_ca", "not_allowed"]  # newest first, 2 kept
    clock.now += 3 * 60  # the first minute leaves the window
    assert act.handshakes() == {}
    act.handshake("public", "ok")
    assert act.handshakes() == {"ok": 1}


def test_expiry_colours() -> None:
    assert _days_class(5) == "days-critical"
    assert _days_class(13.9) == "days-critical"
    assert _days_class(14) == "days-warn"
    assert _days_class(27.9) == "days-warn"
    assert _days_class(28) == "days-ok"


def test_policies_in_words() -> None:
    p = Policy.model_validate(
        {
            "required_eku": ["clientAuth", "1.2.3.4"],
            "allow": [
                {"san_uri": ["spiffe://a/*", "spiffe://b"]},
                {"subject": {"CN": "x", "O": "Y"}},
            ],
            "deny": [{"serial": "0a"}],
        }
    )
    assert describe_policy(p) == (
        "client certificate required; denies serial a; leaf must list EKU clientAuth, 1.2.3.4; "
        "allows SAN URI spiffe://a/* or spiffe://b | subject CN x and subject O Y"
    )
    anon = Policy.model_validate({"require_client_cert": False})
    assert describe_policy(anon) == "anonymous clients admitted; allows any verified client"
