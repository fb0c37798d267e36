"""The repository promises: README quickstart, Dockerfile shape, demo config validity."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_readme_shows_both_commands_first() -> None:
    head = "\n".join((ROOT / "README.md").read_text().splitlines()[:20])
    assert "make demo" in head and "make test" in head


def test_readme_troubleshooting_covers_every_reason() -> None:
    from gateway.base.reasons import HandshakeReason

    text = (ROOT / "docs" / "operations.md").read_text()
    missing = [r.value for r in HandshakeReason if f"| `{r.value}` |" not in text]
    assert not missing, f"docs/operations.md's troubleshooting lacks {missing}"


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
    import os
    import shutil

    import pytest

    import gateway

    if os.environ.get("MTLS_GATEWAY_PLAIN") == "1":  # `make test-plain`: the fallback, for real
        assert not gateway.compiled()
        return
    if not (shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("no C compiler here: plain Python by design")
    assert gateway.compiled()
    assert not gateway.stale_builds()


def test_a_module_changed_after_it_was_compiled_is_named(tmp_path: Path) -> None:
    import os

    from gateway import stale_builds

    (tmp_path / "request").mkdir()  # the compiled modules live in the package's folders
    for name in ("fresh", "stale"):
        (tmp_path / "request" / f"{name}.py").write_text("x = 1\n")
        (tmp_path / "request" / f"{name}.cpython-311-x86_64-linux-gnu.so").write_bytes(b"")
    os.utime(tmp_path / "request" / "stale.py", (2_000_000_000, 2_000_000_000))  # edited later
    assert stale_builds(tmp_path) == ["request/stale.py"]


def test_readme_config_is_valid_and_its_links_exist() -> None:
    """The README's own-upstream config parses as the gateway reads it, and every page it links
    to is in the repository."""
    import re

    import yaml

    from gateway.config.load import parse_config

    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    assert blocks
    for block in blocks:
        cfg = parse_config(yaml.safe_load(block), base_dir="/etc/mtls-gateway")
        assert cfg.routes[0].policy.allow  # fails closed: an allow list, not `any`
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if not target.startswith("http"):
            assert (ROOT / target).exists(), f"README links to {target}, which does not exist"


def test_docker_config_passes_check_with_the_dev_pki(tmp_path: Path, pki: Path) -> None:
    """config/docker.yaml as the README mounts it: /etc/mtls-gateway/gateway.yaml beside certs/."""
    import shutil

    from gateway.pki.certfiles import load_checked

    shutil.copytree(pki, tmp_path / "certs")
    shutil.copy(ROOT / "config" / "docker.yaml", tmp_path / "gateway.yaml")
    cfg, _ = load_checked(tmp_path / "gateway.yaml")
    # a container's loopback cannot be published
    assert all(lst.bind.startswith("0.0.0.0:") for lst in cfg.listeners)
    assert str(cfg.admin.bind).startswith("0.0.0.0:")


def test_the_example_config_parses_as_the_gateway_reads_it() -> None:
    """config/example.yaml shows every option: each must be one the model takes."""
    import yaml

    from gateway.config.load import parse_config

    cfg = parse_config(
        yaml.safe_load((ROOT / "config" / "example.yaml").read_text()),
        base_dir="/etc/mtls-gateway",
    )
    assert cfg.listeners[0].limits.max_concurrent_streams == 100
