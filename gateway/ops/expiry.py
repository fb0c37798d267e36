"""What the gateway holds expires: each certificate's notAfter (and each CRL's nextUpdate) as
a gauge, and one warning per certificate per remaining day once inside its warning window."""

from __future__ import annotations

import time

from prometheus_client import Gauge

from gateway.base.log import event, server_log
from gateway.pki.certfiles import HeldCert

CHECK_SECONDS = 3600.0


def publish(gauge: Gauge, held: list[HeldCert], clear: bool) -> None:
    """Set the expiry gauge of every certificate held (`clear` first where the series of a
    certificate no longer held can be dropped: not under --workers, whose files overwrite)."""
    if clear:
        gauge.clear()
    for cert in held:
        gauge.labels(cert.kind, cert.name, cert.serial).set(cert.not_after)


class ExpiryWarnings:
    """Logs `... is near` / `... has passed` once per certificate per remaining day."""

    def __init__(self) -> None:
        self._warned: set[tuple[str, str, int]] = set()

    def check(self, held: list[HeldCert]) -> None:
        now = time.time()
        for cert in held:
            left = cert.not_after - now
            if left >= cert.warn_before:
                continue
            key = (cert.kind, cert.name, int(left // 86400))
            if key in self._warned:
                continue
            self._warned.add(key)
            what = "CRL next update" if cert.kind == "crl" else "certificate expiry"
            server_log.warning(
                f"{what} is near" if left > 0 else f"{what} has passed",
                extra=event(
                    kind=cert.kind,
                    name=cert.name,
                    subject=cert.subject,
                    not_after=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(cert.not_after)),
                    days_left=round(left / 86400, 2),
                ),
            )
