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
