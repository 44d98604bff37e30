"""Tiny helpers to treat parameters and states that are an array or a (nested) tuple of arrays alike."""
from __future__ import annotations

from typing import Callable

import autograd.numpy as anp
import numpy as np

from physgrad.types import PhysgradError


def tree_map(f: Callable, *trees):
    """Apply ``f`` leaf-wise to arrays or (nested) tuples/lists of arrays with equal structure."""
    first = trees[0]
    if isinstance(first, (tuple, list)):
        if any(not isinstance(t, (tuple, list)) or len(t) != len(first) for t in trees[1:]):
            raise PhysgradError("trees have different structures")
        return tuple(tree_map(f, *leaves) for leaves in zip(*trees))
    return f(*trees)


def tree_leaves(tree) -> list:
    """The arrays of ``tree`` in order."""
    if isinstance(tree, (tuple, list)):
        return [leaf for sub in tree for leaf in tree_leaves(sub)]
    return [tree]


def tree_vdot(a, b) -> float:
    """Sum over leaves of the inner products ``<a, b>``."""
    return float(sum(np.vdot(np.asarray(x), np.asarray(y)) for x, y in zip(tree_leaves(a), tree_leaves(b))))


def tree_norm(a) -> float:
    """Euclidean norm over all leaves."""
    return float(np.sqrt(tree_vdot(a, a)))


def as_float_tree(tree):
    """Every leaf as a float64 numpy array."""
    return tree_map(lambda a: np.asarray(a, dtype=float), tree)


def tree_flatten(tree):
    """All leaves of an array or a flat tuple of arrays as one float vector, and the inverse map.

    Returns
    -------
    (vector, unflatten)
        ``vector`` of shape ``(total size,)``; ``unflatten(v)`` rebuilds the structure from any vector of
        that size (traceable by autograd: it only slices and reshapes).
    """
    leaves = list(tree) if isinstance(tree, (tuple, list)) else [tree]
    shapes = [np.shape(a) for a in leaves]
    is_tuple = isinstance(tree, (tuple, list))
    vec = np.concatenate([np.ravel(np.asarray(a, float)) for a in leaves]) if leaves else np.zeros(0)

    def unflatten(v):
        out, i = [], 0
        for shp in shapes:
            n = int(np.prod(shp))
            out.append(anp.reshape(v[i:i + n], shp))
            i += n
        return tuple(out) if is_tuple else out[0]

    return vec, unflatten
