"""The repository promises: README quickstart, Dockerfile shape, demo config validity."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_readme_shows_both_commands_first() -> None:
    head = "\n".join((ROOT / "README.md").read_text().splitlines()[:20])
    assert "make demo" in head and "make test" in head


def test_readme_troubleshooting_covers_every_reason() -> None:
    from gateway.reasons import HandshakeReason

    text = (ROOT / "README.md").read_text()
    missing = [r.value for r in HandshakeReason if f"| `{r.value}` |" not in text]
    assert not missing, f"README troubleshooting lacks {missing}"


def test_dockerfile_runs_non_root_with_healthcheck_and_no_keys() -> None:
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    bases = [line.split()[1] for line in lines if line.startswith("FROM")]
    assert bases and all(base.endswith("-slim") for base in bases)
    assert any(line.startswith("USER ") and line.split()[1] not in ("root", "0") for line in lines)
    assert any(line.startswith("HEALTHCHECK") for line in lines)
    assert 'CMD ["run", "-c", "/etc/mtls-gateway/gateway.yaml"]' in lines
    copies = [line for line in lines if line.startswith(("COPY", "ADD"))]
    assert copies and not any("certs" in c or ".key" in c or ".pem" in c for c in copies)
    assert "certs-dev" in (ROOT / ".dockerignore").read_text()


def test_ci_runs_the_readme_test_command() -> None:
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_threat_model_points_at_real_tests() -> None:
    """Every test file and test named in THREAT_MODEL.md exists (so the page cannot rot)."""
    import re

    root = Path(__file__).resolve().parents[2]
    text = (root / "THREAT_MODEL.md").read_text()
    refs = re.findall(r"`((?:tests/[\w/]+/)?test_\w+\.py)(?:::(\w+))?", text)
    assert len(refs) >= 15
    for file, name in refs:
        matches = list(root.glob(file if file.startswith("tests/") else f"tests/**/{file}"))
        assert matches, f"THREAT_MODEL.md names {file}, which does not exist"
        if name:
            stem = name.rstrip("*").rstrip("_")
            assert any(f"def {stem}" in m.read_text() for m in matches), f"{file}::{name}"
    for heading in ("spoofed identity", "policy bypass", "resource exhaustion", "downgrade",
                    "key exposure", "log injection", "upstream impersonation"):  # fmt: skip
        assert heading in text.lower(), heading


def test_the_request_path_runs_compiled_where_a_compiler_is() -> None:
    """`make test` compiles the modules setup.py lists (mypyc): a build that fell back to plain
    Python quietly would leave the suite testing what the image does not ship."""
    import shutil

    import pytest

    import gateway

    if not (shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("no C compiler here: plain Python by design")
    assert gateway.compiled()
    assert not gateway.stale_builds()


def test_a_module_changed_after_it_was_compiled_is_named(tmp_path: Path) -> None:
    import os

    from gateway import stale_builds

    for name in ("fresh", "stale"):
        (tmp_path / f"{name}.py").write_text("x = 1\n")
        (tmp_path / f"{name}.cpython-311-x86_64-linux-gnu.so").write_bytes(b"")
    os.utime(tmp_path / "stale.py", (2_000_000_000, 2_000_000_000))  # edited after the build
    assert stale_builds(tmp_path) == ["stale.py"]
