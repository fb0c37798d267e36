"""The configuration: its model, value types, loading with YAML paths, and its JSON Schema."""
