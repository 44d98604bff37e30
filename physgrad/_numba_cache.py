"""Where numba keeps physgrad's compiled kernels: one cache for every checkout of the package.

Numba's own cache locator for ``NUMBA_CACHE_DIR`` files a kernel under a hash of its source
folder's absolute path, so every clone, worktree or reinstall of physgrad in a new folder compiles
its kernels again (about 30 s of CPU per specialisation on a small machine). The kernels' validity
does not depend on the folder: numba checks each cache entry against a hash of the source file's
contents. :func:`install` registers a locator that files physgrad's kernels under their path
*inside the package* (``$NUMBA_CACHE_DIR/physgrad-kernels/physgrad/layered/kernels``, ...), so a
fresh clone with the same kernel sources reuses the compiled code, and a changed source file is
recompiled as before. Without ``NUMBA_CACHE_DIR`` numba's default (a ``__pycache__`` beside the
source) is kept. This module imports nothing from physgrad.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent
SUBFOLDER = "physgrad-kernels"
DEPENDS = {"layered/kernels/numba_cpu.py": ("devices/pulsing.py", "devices/streams.py", "layered/kernels/team.py"),
           "devices/pulsing.py": ("devices/streams.py",)}
"""Package files (paths inside the package) whose compiled functions call compiled functions of other
package files. Numba checks a cache entry against its own source file only, so a change to a callee
(``pulsing.nearest_row``, compiled into the C-EP kernel's pass over ``W1``; ``team.barrier``; the random streams
of ``devices/streams.py`` in the device kernels) would leave the caller's
cached machine code stale: the callees' sources join the caller's stamp."""


def cache_subpath(py_file) -> str | None:
    """The cache folder (relative to ``NUMBA_CACHE_DIR``) of a source file of this package, or None
    for a file outside it."""
    try:
        rel = Path(py_file).resolve().parent.relative_to(PACKAGE_ROOT)
    except ValueError:
        return None
    return os.path.join(SUBFOLDER, "physgrad", *rel.parts)


def install() -> bool:
    """Register the package-relative locator with numba (once); False when numba or its caching
    internals are not there (numba's own locators then apply unchanged)."""
    try:
        from numba.core import caching, config
        base = caching.UserProvidedCacheLocator
        impl = getattr(caching, "CacheImpl", None) or caching._CacheImpl  # public from numba 0.61
        locators = impl._locator_classes
    except (ImportError, AttributeError):  # pragma: no cover - numba missing or its internals moved
        return False
    if any(getattr(c, "_physgrad", False) for c in locators):
        return True

    class PackageCacheLocator(base):
        """:class:`numba.core.caching.UserProvidedCacheLocator` with the folder taken from the path
        inside the physgrad package instead of the absolute path."""

        _physgrad = True

        def __init__(self, py_func, py_file):
            super().__init__(py_func, py_file)
            self._cache_path = os.path.join(config.CACHE_DIR, cache_subpath(py_file))

        def get_source_stamp(self):
            stamp = super().get_source_stamp()
            deps = DEPENDS.get(Path(self._py_file).resolve().relative_to(PACKAGE_ROOT).as_posix(), ())
            if not deps:
                return stamp
            return (stamp,) + tuple(hashlib.sha256((PACKAGE_ROOT / d).read_bytes()).hexdigest() for d in deps)

        @classmethod
        def from_function(cls, py_func, py_file):
            if not config.CACHE_DIR or cache_subpath(py_file) is None:
                return None
            return super().from_function(py_func, py_file)

    locators.insert(0, PackageCacheLocator)
    return True
