"""The JSON Schema of the config file, generated from the config model (for editors and CI)."""

from __future__ import annotations

import json
from typing import Any

from gateway import __version__
from gateway.config.model import GatewayConfig
from gateway.config.values import DURATION_PATTERN

SCHEMA_ID = "https://mtls-gateway.invalid/schema/config.json"
_UNITS = (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0))


def duration_text(seconds: float) -> str:
    """3600.0 -> "1h", 0.5 -> "500ms": a model default as the user would write it."""
    for unit, size in _UNITS:
        if seconds >= size and (seconds / size).is_integer():
            return f"{int(seconds / size)}{unit}"
    return f"{round(seconds * 1000)}ms"


def _fix_durations(node: Any) -> None:
    """Duration fields are numbers inside the model but strings in YAML: show defaults so."""
    if isinstance(node, dict):
        if node.get("pattern") == DURATION_PATTERN and isinstance(node.get("default"), float):
            node["default"] = duration_text(node["default"])
        for key, value in node.items():
            if key == "default" and isinstance(value, dict):
                _fix_default_object(value, node)
            _fix_durations(value)
    elif isinstance(node, list):
        for item in node:
            _fix_durations(item)


def _fix_default_object(default: dict[str, Any], prop: dict[str, Any]) -> None:
    """Nested defaults (e.g. `ocsp: {...}`) carry durations as numbers too."""
    for key in (
        "cache_ttl", "timeout", "connect", "read", "debounce", "refresh", "header_timeout",
        "keepalive_timeout",
    ):  # fmt: skip
        if isinstance(default.get(key), float):
            default[key] = duration_text(default[key])


def config_schema() -> dict[str, Any]:
    schema = GatewayConfig.model_json_schema(mode="validation")
    _fix_durations(schema)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": f"mtls-gateway {__version__} configuration",
        **{k: v for k, v in schema.items() if k != "title"},
    }


def config_schema_text() -> str:
    return json.dumps(config_schema(), indent=2, sort_keys=False) + "\n"
