"""The house as drawn: import-linter's contracts (.importlinter) hold, and library modules hold no CLI."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold():
    """Layers (cli -> applications -> learning -> minimizers -> energies -> circuit -> types), no cycles."""
    pytest.importorskip("importlinter")
    r = subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
                        "sys.exit(lint_imports_command())"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 broken" in r.stdout


def test_argparse_and_main_only_in_the_cli_package():
    """Library modules hold no argparse and no main(): commands live in physgrad/cli/ (one module each)."""
    offenders = []
    for path in (ROOT / "physgrad").rglob("*.py"):
        rel = path.relative_to(ROOT / "physgrad")
        if rel.parts[0] == "cli" or rel.name == "__main__.py":
            continue
        text = path.read_text()
        if re.search(r"^\s*import argparse|^def main\(", text, re.M):
            offenders.append(str(rel))
    assert offenders == []


def test_no_reference_outside_the_repository():
    """No library module looks for the development box's ../shared folder."""
    hits = [str(p.relative_to(ROOT)) for p in (ROOT / "physgrad").rglob("*.py") if "shared/data" in p.read_text()]
    assert hits == []


@pytest.mark.parametrize("module", ["physgrad", "verification"])
def test_python_dash_m_entry_points(module):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert "usage:" in r.stdout


def test_no_machine_specific_paths_in_committed_files():
    """Committed files name no folder of one machine (a workspace, a home folder): commands and configs in
    reports use placeholders (<data>, <runs>) or environment variables ($PHYSGRAD_DATA). Checks every text
    file git tracks."""
    root = Path(__file__).resolve().parents[1]
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout: the committed files cannot be listed")
    pattern = re.compile(rb"(?<![\w.<$])/(?:work|root|home)/\w")
    here = Path(__file__).resolve()
    bad = []
    for name in listed.stdout.decode().split("\0"):
        path = root / name
        if not name or path.resolve() == here or path.suffix in (".png", ".gz", ".npz", ".npy", ".pdf"):
            continue
        try:
            data = path.read_bytes()
        except OSError:
            continue
        if b"\0" in data[:4096]:
            continue  # binary
        for k, line in enumerate(data.splitlines(), 1):
            if pattern.search(line):
                bad.append(f"{name}:{k}: {line.decode(errors='replace').strip()[:100]}")
    assert not bad, bad[:10]


def test_top_level_holds_only_the_project_files():
    """The repository's root holds packages, folders and the project's configuration only: a scratch
    script left at the top (one importing from a temporary folder once landed here) fails this test."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout: the committed files cannot be listed")
    top = {name for name in listed.stdout.decode().split("\0") if name and "/" not in name}
    allowed = {".gitignore", ".importlinter", "README.md", "pyproject.toml", "setup.cfg"}
    assert top <= allowed, sorted(top - allowed)
