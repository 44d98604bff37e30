"""The compiled kernels' cache does not depend on the folder physgrad lies in."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from physgrad import _numba_cache

numba = pytest.importorskip("numba")
ROOT = Path(__file__).resolve().parents[1]


def test_cache_folder_is_the_path_inside_the_package():
    pkg = Path(_numba_cache.__file__).resolve().parent
    sub = _numba_cache.cache_subpath(pkg / "layered" / "kernels" / "numba_cpu.py")
    assert sub == os.path.join("physgrad-kernels", "physgrad", "layered", "kernels")
    assert _numba_cache.cache_subpath("/somewhere/else/physgrad/layered/kernels/numba_cpu.py") is None
    assert _numba_cache.install() and _numba_cache.install()  # idempotent
    from numba.core import caching
    impl = getattr(caching, "CacheImpl", None) or caching._CacheImpl
    assert sum(getattr(c, "_physgrad", False) for c in impl._locator_classes) == 1



def test_the_sources_of_compiled_callees_join_the_callers_stamp(tmp_path, monkeypatch):
    """``numba_cpu``'s pass over ``W1`` compiles ``pulsing.device_row`` in, and ``pulsing`` the random streams
    of ``streams.py``: a change to ``pulsing.py`` or ``streams.py`` alone must invalidate the callers' cache
    entries (numba itself checks only the caller's file)."""
    import hashlib
    import inspect

    from numba.core import caching, config

    from physgrad.devices import pulsing, streams
    from physgrad.layered.kernels import numba_cpu

    monkeypatch.setattr(config, "CACHE_DIR", str(tmp_path))
    assert _numba_cache.install()
    impl = getattr(caching, "CacheImpl", None) or caching._CacheImpl
    locator = next(c for c in impl._locator_classes if getattr(c, "_physgrad", False))
    f = numba_cpu._cep_batch.py_func
    stamp = locator.from_function(f, inspect.getfile(f)).get_source_stamp()
    assert isinstance(stamp, tuple)
    assert stamp[1] == hashlib.sha256(Path(pulsing.__file__).read_bytes()).hexdigest()
    assert stamp[2] == hashlib.sha256(Path(streams.__file__).read_bytes()).hexdigest()
    g = pulsing._drift_kernel.py_func  # pulsing compiles the random streams in: their source joins its stamp
    pstamp = locator.from_function(g, inspect.getfile(g)).get_source_stamp()
    assert pstamp[1] == stamp[2]
    h = streams._fill.py_func  # a file without compiled callees elsewhere: numba's own stamp
    assert not isinstance(locator.from_function(h, inspect.getfile(h)).get_source_stamp(), tuple)


PROBE = """
import sys
import numpy as np
import physgrad
from physgrad.devices import pulsing
assert physgrad.__file__.startswith(sys.argv[1]), physgrad.__file__
g, n, nu, tp = np.ones(3), np.ones(3, np.int64), np.full(1, 0.1), np.zeros(1)
pulsing._drift_kernel(g, n, nu, tp, 1.0, 2.0, np.empty(3), np.empty(3))
st = pulsing._drift_kernel.stats
print(sum(st.cache_hits.values()), sum(st.cache_misses.values()))
"""


def test_a_copy_of_the_package_in_another_folder_reuses_the_compiled_kernel(tmp_path):
    """Two copies of the package in different folders, one NUMBA_CACHE_DIR: the first process compiles
    a device kernel (a cache miss), the second loads it (a hit, no miss)."""
    cache = tmp_path / "cache"
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache)}
    counts = []
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        subprocess.run(["cp", "-r", str(ROOT / "physgrad"), str(folder)], check=True)
        env["PYTHONPATH"] = str(folder)
        out = subprocess.run([sys.executable, "-c", PROBE, str(folder)], env=env, cwd=folder, capture_output=True,
                             text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        counts.append(tuple(int(v) for v in out.stdout.split()))
    assert counts[0] == (0, 1) and counts[1] == (1, 0), counts
    assert [p.name for p in cache.iterdir()] == ["physgrad-kernels"]
