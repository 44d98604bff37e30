"""Tiny helpers to treat parameters that are an array or a tuple of arrays alike."""
from __future__ import annotations

from typing import Callable

import numpy as np


def tree_map(f: Callable, *trees):
    """Apply ``f`` leaf-wise to arrays or (nested) tuples/lists of arrays with equal structure."""
    first = trees[0]
    if isinstance(first, (tuple, list)):
        if any(not isinstance(t, (tuple, list)) or len(t) != len(first) for t in trees[1:]):
            raise ValueError("trees have different structures")
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
