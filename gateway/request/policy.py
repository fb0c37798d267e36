"""Route policy: compiled allow/deny matchers and a fail-closed decision with a named reason."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from operator import attrgetter
from typing import Final

from gateway.base.bounded import Bounded
from gateway.base.reasons import PolicyReason
from gateway.config.model import EKU_NAMES, Matcher, Policy
from gateway.pki.identity import Identity

_OID_NAMES: Final = {oid: name for name, oid in EKU_NAMES.items()}


def eku_name(oid: str) -> str:
    return _OID_NAMES.get(oid, oid)


@dataclass(frozen=True)
class Decision:
    """Allowed, or denied with a reason; `detail` is for logs only, never for the client."""

    allowed: bool
    reason: PolicyReason | None = None
    detail: str = ""


def glob_to_regex(pattern: str, separator: str | None) -> re.Pattern[str]:
    """`*` matches within one `separator`-delimited label, `**` across; the rest is literal."""
    one = f"[^{re.escape(separator)}]*" if separator else ".*"
    out = []
    for i, part in enumerate(pattern.split("**")):
        if i:
            out.append(".*")
        out.append(one.join(re.escape(p) for p in part.split("*")))
    return re.compile("".join(out), re.DOTALL)


class ValueMatcher:
    """One field's accepted values: exact strings, globs and `re:` (anchored) expressions."""

    def __init__(
        self, values: Iterable[str], separator: str | None = None, fold_case: bool = False
    ):
        self._fold = fold_case
        exact: set[str] = set()
        patterns: list[re.Pattern[str]] = []
        for v in values:
            if v.startswith("re:"):
                patterns.append(re.compile(v[3:], re.IGNORECASE if fold_case else 0))
            elif "*" in v:
                p = glob_to_regex(v.lower() if fold_case else v, separator)
                patterns.append(p)
            else:
                exact.add(v.lower() if fold_case else v)
        self._exact = frozenset(exact)
        self._patterns = tuple(patterns)

    def one(self, candidate: str) -> bool:
        c = candidate.lower() if self._fold else candidate
        return c in self._exact or any(p.fullmatch(c) for p in self._patterns)

    def any(self, candidates: Iterable[str]) -> bool:
        return any(self.one(c) for c in candidates)

    def every(self, candidates: Iterable[str]) -> bool:
        """At least one candidate, and each matches."""
        seen = False
        for c in candidates:
            if not self.one(c):
                return False
            seen = True
        return seen


Getter = Callable[[Identity], Iterable[str]]


@dataclass(frozen=True)
class FieldPredicate:
    """True when the values of one certificate field match the configured values: any of them
    (SANs, and every field of a deny entry), or each of them (`every`: a subject or issuer
    attribute in an allow entry, so that `CN: admin` does not admit `CN=admin + CN=mallory`).
    Both fail closed."""

    getter: Getter
    matcher: ValueMatcher
    every: bool = False

    def __call__(self, ident: Identity) -> bool:
        values = self.getter(ident)
        return self.matcher.every(values) if self.every else self.matcher.any(values)


@dataclass(frozen=True)
class NameAttr:
    """Getter for one subject/issuer attribute (e.g. subject CN)."""

    which: str
    attr: str

    def __call__(self, ident: Identity) -> tuple[str, ...]:
        return ident.attrs(self.which).get(self.attr, ())


def _serial(i: Identity) -> tuple[str, ...]:
    return (i.serial,)


def _sha256(i: Identity) -> tuple[str, ...]:
    return (i.sha256,)


def _spki(i: Identity) -> tuple[str, ...]:
    return (i.spki_sha256,)


# field -> (getter, glob separator, case-insensitive)
_FIELDS: Final[dict[str, tuple[Getter, str | None, bool]]] = {
    "san_dns": (attrgetter("san_dns"), ".", True),
    "san_uri": (attrgetter("san_uri"), "/", False),
    "san_email": (attrgetter("san_email"), None, False),
    "san_ip": (attrgetter("san_ip"), None, True),
    "serial": (_serial, None, True),
    "fingerprint_sha256": (_sha256, None, True),
    "spki_sha256": (_spki, None, True),
}


def _compile_entry(entry: Matcher, allow: bool) -> tuple[FieldPredicate, ...]:
    preds: list[FieldPredicate] = []
    for which in ("subject", "issuer"):
        names = getattr(entry, which)
        if names is not None:
            for attr, values in names.items():
                preds.append(FieldPredicate(NameAttr(which, attr), ValueMatcher(values), allow))
    for name, (getter, sep, fold) in _FIELDS.items():
        values = getattr(entry, name)
        if values is not None:
            preds.append(FieldPredicate(getter, ValueMatcher(values, sep, fold)))
    return tuple(preds)


class RoutePolicy:
    """A route's policy compiled once at config load; `decide` is called per request."""

    def __init__(self, policy: Policy, path: str = "policy") -> None:
        self._path = path
        self._decisions: Bounded[str, Decision] = Bounded(4096)
        self.require_client_cert = policy.require_client_cert
        self._required_eku = policy.required_eku
        self._deny = tuple(_compile_entry(e, allow=False) for e in policy.deny)
        self._allow_any = policy.allow in ("any", None)
        self._allow = (
            ()
            if isinstance(policy.allow, str) or policy.allow is None
            else tuple(_compile_entry(e, allow=True) for e in policy.allow)
        )

    def decide(self, ident: Identity | None) -> Decision:
        """The verdict for a client; it depends on the certificate alone, so it is kept per
        certificate (the policy is rebuilt, cache and all, by a reload)."""
        if ident is None:
            return self._decide(None)
        decision = self._decisions.get(ident.sha256)
        if decision is None:
            decision = self._decisions.put(ident.sha256, self._decide(ident))
        return decision

    def _decide(self, ident: Identity | None) -> Decision:
        if ident is None:
            if self.require_client_cert:
                return Decision(
                    False, PolicyReason.NO_CLIENT_CERT, "no client certificate presented"
                )
            return Decision(True, None, "anonymous client admitted (require_client_cert: false)")
        for j, preds in enumerate(self._deny):
            if all(p(ident) for p in preds):
                return Decision(False, PolicyReason.DENIED, f"matched {self._path}.deny[{j}]")
        for oid in self._required_eku:
            if not ident.has_eku:
                return Decision(
                    False,
                    PolicyReason.EKU_MISSING,
                    f"leaf has no extendedKeyUsage extension; route requires {eku_name(oid)}",
                )
            if oid not in ident.ekus:
                have = ", ".join(eku_name(o) for o in ident.ekus) or "none"
                return Decision(
                    False, PolicyReason.EKU_MISSING, f"leaf EKUs [{have}] lack {eku_name(oid)}"
                )
        if self._allow_any:
            return Decision(True, None, f"{self._path}.allow is any")
        for j, preds in enumerate(self._allow):
            if all(p(ident) for p in preds):
                return Decision(True, None, f"matched {self._path}.allow[{j}]")
        return Decision(
            False,
            PolicyReason.NOT_ALLOWED,
            f"no entry of {self._path}.allow matches {ident.subject!r}" + _multi_valued(ident),
        )


def _multi_valued(ident: Identity) -> str:
    """Why a certificate with a repeated subject attribute matched no allow entry."""
    repeated = [
        f"{attr}={'+'.join(values)}"
        for attr, values in ident.subject_attrs.items()
        if len(values) > 1
    ]
    if not repeated:
        return ""
    return (
        f" (the subject repeats {', '.join(repeated)}: an allow rule on an attribute matches "
        "only when every value of it matches)"
    )
