"""x509-limbo (tests/data/x509-limbo) through `gateway.verify.verify_chain`, strict profile.

Which cases count:
- relevant: every CLIENT case, and every SERVER case whose verdict does not hang on the peer
  name (a client certificate is not matched against a host name). Left out: `webpki::san::*`
  and `webpki::cn::*` (host name matching), `rfc5280::ca-as-leaf-wrong-san` (the SAN names
  another host), `rfc5280::san::ip-in-dns` and `rfc5280::san::underscore-dns` (the peer name's
  syntax).
- core: the relevant cases without a `pedantic-*` feature.

Each case is verified as its own trust store says, at its `validation_time`, for the EKUs it
lists (none listed: no requirement), with its CRLs and `max_chain_depth`.

`python -m tests.limbo` prints the per-category table docs/verification.md carries."""

from __future__ import annotations

import datetime as dt
import json
import warnings
from collections import Counter
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from cryptography import x509

from gateway.config.model import EKU_NAMES
from gateway.pki.verify import MAX_DEPTH, verify_chain

LIMBO = Path(__file__).resolve().parent / "data" / "x509-limbo" / "limbo.json"
EKUS = {**EKU_NAMES, "anyExtendedKeyUsage": "2.5.29.37.0"}  # limbo's names -> OIDs
NAME_BOUND = (
    "webpki::san::",
    "webpki::cn::",
    "rfc5280::ca-as-leaf-wrong-san",
    "rfc5280::san::ip-in-dns",
    "rfc5280::san::underscore-dns",
)


@dataclass(frozen=True)
class Result:
    id: str
    expected_ok: bool
    ok: bool
    detail: str
    pedantic: bool

    @property
    def passed(self) -> bool:
        return self.ok == self.expected_ok

    @property
    def category(self) -> str:
        return self.id.split("::")[0]


def relevant(case: dict[str, object]) -> bool:
    name_bound = str(case["id"]).startswith(NAME_BOUND)
    return case["validation_kind"] == "CLIENT" or not name_bound


def _certs(pems: object) -> list[x509.Certificate]:
    assert isinstance(pems, list)
    return [x509.load_pem_x509_certificate(p.encode()) for p in pems]


def run_case(case: dict[str, object]) -> Result:
    features = [str(f) for f in case.get("features") or []]  # type: ignore[attr-defined]
    expected_ok = case["expected_result"] == "SUCCESS"
    pedantic = any(f.startswith("pedantic-") for f in features)
    with warnings.catch_warnings():  # cryptography warns about the malformed ones it reads
        warnings.simplefilter("ignore")
        try:
            leaf = x509.load_pem_x509_certificate(str(case["peer_certificate"]).encode())
            trusted = _certs(case["trusted_certs"])
            sent = _certs(case["untrusted_intermediates"])
        except ValueError as exc:  # unreadable: the verdict is a rejection
            return Result(str(case["id"]), expected_ok, False, f"unreadable: {exc}", pedantic)
        when = case.get("validation_time")
        crl_pems = case.get("crls") or []
        depth = case.get("max_chain_depth")
        verdict = verify_chain(
            leaf, sent, trusted,
            dt.datetime.fromisoformat(str(when)) if when else None,
            required_ekus=[EKUS[str(e)] for e in case["extended_key_usage"]],  # type: ignore[attr-defined]
            crls=[x509.load_pem_x509_crl(str(c).encode()) for c in crl_pems] if crl_pems else None,  # type: ignore[attr-defined]
            profile="strict",
            max_depth=int(depth) if isinstance(depth, int) else MAX_DEPTH,
        )  # fmt: skip
    return Result(str(case["id"]), expected_ok, verdict.ok, verdict.detail, pedantic)


@cache
def results() -> tuple[Result, ...]:
    cases = json.loads(LIMBO.read_text())["testcases"]
    return tuple(run_case(c) for c in cases if relevant(c))


def table(rows: tuple[Result, ...]) -> str:
    """Per category: relevant cases, core cases passed, pedantic cases passed, and invalid
    chains accepted (core / pedantic)."""
    cats = sorted({r.category for r in rows})
    out = [
        "| category | relevant | core passed | pedantic passed | invalid accepted (core / pedantic) |",
        "|---|---|---|---|---|",
    ]

    def line(name: str, rs: list[Result]) -> str:
        core = [r for r in rs if not r.pedantic]
        ped = [r for r in rs if r.pedantic]
        bad = Counter(
            "pedantic" if r.pedantic else "core" for r in rs if r.ok and not r.expected_ok
        )
        ped_text = f"{sum(r.passed for r in ped)} / {len(ped)}" if ped else "-"
        return (
            f"| {name} | {len(rs)} | {sum(r.passed for r in core)} / {len(core)} | {ped_text} "
            f"| {bad['core']} / {bad['pedantic']} |"
        )

    for cat in cats:
        out.append(line(f"`{cat}`", [r for r in rows if r.category == cat]))
    out.append(line("**all**", list(rows)))
    return "\n".join(out)


if __name__ == "__main__":
    rows = results()
    core = [r for r in rows if not r.pedantic]
    print(table(rows))
    print()
    print(f"core: {sum(r.passed for r in core)} of {len(core)}")
    for r in rows:
        if not r.passed:
            print(f"- {r.id} ({'pedantic' if r.pedantic else 'core'}): {r.detail}")
