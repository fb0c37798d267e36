"""Property tests: arbitrary input to the pure parsers and matchers raises nothing but the
documented errors, and the matchers keep their promises."""

from __future__ import annotations

import contextlib
import datetime as dt
import re
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.base.errors import ConfigError
from gateway.config.load import parse_config
from gateway.pki import crl
from gateway.pki.identity import parse_identity
from gateway.pki.verify import verify_chain
from gateway.request.policy import ValueMatcher, glob_to_regex

label = st.text(alphabet="abcxyz-", min_size=1, max_size=6)
json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
keys = st.sampled_from(
    [
        "listeners",
        "upstreams",
        "routes",
        "admin",
        "logging",
        "reload",
        "tls",
        "policy",
        "allow",
        "x",
    ]
)


@given(st.dictionaries(keys, json_like, max_size=6))
@settings(max_examples=300)
def test_config_loader_raises_only_config_errors(doc: dict[str, Any]) -> None:
    try:
        parse_config(doc, "/etc/gw")
    except ConfigError as exc:
        assert exc.problems and all(p.message for p in exc.problems)


@given(json_like)
def test_config_loader_rejects_any_non_mapping_document(doc: Any) -> None:
    try:
        parse_config(doc, "/etc/gw")
    except ConfigError:
        return
    raise AssertionError("a non-mapping document was accepted")


@given(st.text(max_size=30), st.text(max_size=30), st.sampled_from([None, ".", "/"]))
def test_glob_never_raises_and_exact_text_matches_itself(
    pattern: str, value: str, sep: str | None
) -> None:
    rx = glob_to_regex(pattern, sep)
    rx.fullmatch(value)
    if "*" not in pattern:
        assert bool(rx.fullmatch(value)) == (pattern == value)
    assert ValueMatcher([pattern], sep).any([pattern]) or pattern.startswith("re:")


@given(st.lists(label, min_size=2, max_size=4))
def test_single_star_never_crosses_a_separator(labels: list[str]) -> None:
    host = ".".join(labels)
    assert ValueMatcher(["*." + labels[-1]], ".").any([host]) == (len(labels) == 2)
    assert ValueMatcher(["**." + labels[-1]], ".").any([host])


@given(st.text(max_size=20))
def test_regex_values_are_anchored(value: str) -> None:
    m = ValueMatcher(["re:a+"])
    assert m.any([value]) == bool(re.fullmatch("a+", value))


@given(st.binary(max_size=400))
@settings(max_examples=300)
def test_certificate_and_crl_parsers_raise_only_value_error(data: bytes) -> None:
    for parse in (parse_identity, crl.parse_crls):
        with contextlib.suppress(ValueError):  # the documented error; anything else fails
            parse(data)
    verdict = verify_chain(data, data, data, at=dt.datetime(2030, 1, 1, tzinfo=dt.UTC))
    assert not verdict.ok and verdict.reason is not None
