"""Forests of difference constraints ``x_a - x_b = value`` (voltage sources, conducting diodes)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True, eq=False)
class OffsetForest:
    """A spanning forest of the edges and every node's offset from its tree's root.

    Attributes
    ----------
    root : (n,) int — root node of each node's tree
    offset : (n,) — ``x_i - x_root(i)`` implied by the tree edges
    tree : (m,) bool — edges in the forest; the others close a loop
    parent, parent_edge : (n,) int — tree parent of each node and the edge to it (-1 at roots)
    """

    root: np.ndarray
    offset: np.ndarray
    tree: np.ndarray
    parent: np.ndarray
    parent_edge: np.ndarray

    def path_edges(self, i: int, j: int) -> list:
        """Edges on the tree path between nodes ``i`` and ``j`` of one tree."""
        up, k = {}, i
        while k >= 0:
            up[k] = len(up)
            k = self.parent[k]
        on_i = []
        k = i
        on_j = []
        while j not in up:
            on_j.append(int(self.parent_edge[j]))
            j = self.parent[j]
        while k != j:
            on_i.append(int(self.parent_edge[k]))
            k = self.parent[k]
        return on_i + on_j


def offset_forest(n: int, a: np.ndarray, b: np.ndarray, value: np.ndarray, starts: Sequence[int] = ()) -> OffsetForest:
    """Depth-first spanning forest of the constraints ``x[a_k] - x[b_k] = value_k`` over nodes ``0..n-1``.

    Trees are rooted at the nodes of ``starts`` first (e.g. ground), then in index order.
    """
    a = np.asarray(a, dtype=np.int64).tolist()
    b = np.asarray(b, dtype=np.int64).tolist()
    value = np.asarray(value, dtype=float).tolist()
    adj: dict = {}  # only nodes with an edge: a node without one is its own tree (root = itself)
    for k, (x, y, v) in enumerate(zip(a, b, value)):
        adj.setdefault(x, []).append((y, -v, k))  # x_y = x_x - v
        adj.setdefault(y, []).append((x, v, k))
    root = list(range(n))  # Python lists in the loop (numpy scalar indexing costs ~10x more)
    offset = [0.0] * n
    parent = [-1] * n
    parent_edge = [-1] * n
    tree = [False] * len(a)
    seen = bytearray(n)
    for start in list(starts) + sorted(adj):  # a node without an edge is its own tree: nothing to do
        if seen[start] or start not in adj:
            continue
        seen[start] = 1
        stack = [start]
        while stack:
            x = stack.pop()
            off_x = offset[x]
            for y, dv, k in adj[x]:
                if not seen[y]:
                    seen[y] = 1
                    root[y], parent[y], parent_edge[y] = start, x, k
                    offset[y] = off_x + dv
                    tree[k] = True
                    stack.append(y)
    return OffsetForest(np.array(root, dtype=np.int64), np.array(offset, dtype=float), np.array(tree, dtype=bool),
                        np.array(parent, dtype=np.int64), np.array(parent_edge, dtype=np.int64))


def unreachable_from_ground(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Indices of the nodes ``0..n-1`` with no path to ground along the edges ``a[k] -- b[k]``
    (node indices; ``-1`` or ``n`` is ground), in increasing order."""
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components

    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    a, b = np.where(a < 0, n, a), np.where(b < 0, n, b)
    graph = sp.csr_matrix((np.ones(len(a)), (a, b)), shape=(n + 1, n + 1))
    _, label = connected_components(graph, directed=False)
    return np.flatnonzero(label[:n] != label[n])


def node_list(names: Sequence[str], most: int = 20) -> str:
    """``names`` joined by commas, the first ``most`` of them (`` ...`` when there are more)."""
    return ", ".join(names[:most]) + (" ..." if len(names) > most else "")
