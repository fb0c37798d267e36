"""The committed JSON Schema matches the config model, and agrees with the loader on real files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from gateway.base.errors import ConfigError
from gateway.config.load import parse_config
from gateway.config.schema import config_schema, config_schema_text, duration_text
from tests.harness import base_config

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "config" / "schema.json"


def test_committed_schema_is_in_sync() -> None:
    assert COMMITTED.read_text() == config_schema_text(), (
        "config/schema.json is stale: run `mtls-gateway schema > config/schema.json`"
    )


def _objects(node: Any) -> list[dict[str, Any]]:
    found = []
    if isinstance(node, dict):
        if node.get("type") == "object":
            found.append(node)
        for value in node.values():
            found += _objects(value)
    elif isinstance(node, list):
        for item in node:
            found += _objects(item)
    return found


def test_every_object_is_closed_and_every_key_described() -> None:
    schema = config_schema()
    defs = schema["$defs"]
    for obj in _objects(schema):
        assert obj.get("additionalProperties") is False, obj.get("title")
        for key, prop in obj.get("properties", {}).items():
            ref = prop.get("$ref") or next(
                (a["$ref"] for a in prop.get("anyOf", []) if "$ref" in a), None
            )
            described = "description" in prop or (
                ref is not None and "description" in defs[ref.rsplit("/", 1)[1]]
            )
            assert described, f"{obj.get('title')}.{key} has no description"


@pytest.mark.parametrize("path", sorted((ROOT / "config").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_validate(path: Path) -> None:
    jsonschema.validate(yaml.safe_load(path.read_text()), config_schema())


def test_test_baseline_validates() -> None:
    jsonschema.validate(base_config(Path("/pki"), 9000), config_schema())


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (lambda d: d["listeners"][0]["tls"].update(handshake_timeout="10"), "does not match"),
        (lambda d: d["listeners"][0]["tls"].update(ciphers="x"), "Additional properties"),
        (lambda d: d["listeners"][0]["tls"].update(client_auth="maybe"), "is not one of"),
        (lambda d: d["routes"][0]["policy"].update(allow="everyone"), "'any' was expected"),
        (lambda d: d.update(routes=[]), "should be non-empty"),
    ],
)
def test_schema_rejects_what_the_loader_rejects(change: Any, fragment: str) -> None:
    doc = base_config(Path("/pki"), 9000)
    change(doc)
    with pytest.raises(jsonschema.ValidationError) as err:
        jsonschema.validate(doc, config_schema())
    assert fragment in str(err.value.message) or fragment in str(err.value)
    with pytest.raises(ConfigError):  # the loader refuses it too
        parse_config(doc, "/pki")


def test_duration_defaults_read_like_yaml() -> None:
    assert [duration_text(s) for s in (0.5, 10.0, 300.0, 3600.0, 86400.0 * 28)] == [
        "500ms", "10s", "5m", "1h", "28d",
    ]  # fmt: skip
    text = json.dumps(config_schema())
    assert '"default": 3600.0' not in text
