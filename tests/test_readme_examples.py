"""The README's Python examples run (each ```python block, in order, as one script per block)."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def test_the_readme_has_python_examples():
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(index, monkeypatch, tmp_path):
    code = BLOCKS[index]
    if "sklearn" in code:
        pytest.importorskip("sklearn", reason="scikit-learn is not installed: pip install 'physgrad[sklearn]'")
    monkeypatch.chdir(ROOT)  # examples may read physgrad/examples/...
    exec(compile(code, f"README.md python block {index + 1}", "exec"), {"__name__": f"readme_{index}"})
