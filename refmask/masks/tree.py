"""Tree attention (speculative decoding): each draft token attends its ancestors in a token
tree plus the whole cached prefix, as Medusa / EAGLE / SpecInfer verifiers do.

    node t has parent parents[t] (-1 for a root), with parents[t] < t (parents come first)
    P = offset(b) cached prefix keys, then the n tree tokens as keys P .. P + n - 1
    keep(b, h, i, j) iff  j < P                                  (the cached prefix)
                      or  j - P < n and node j - P is node i or an ancestor of node i

    tree([-1, 0, 0, 1], align="bottom_right"), Tq=4, Tk=7 (P = 3):
        0123456            the tree:  0
      0 ████···                      / \\
      1 █████··                     1   2
      2 ████·█·                     |
      3 █████·█                     3

Query i is tree node i, so Tq = n. ``align`` places the tree after the prefix: with
``"bottom_right"`` the tree is the last n keys (P = Tk - n), an int (or one per batch entry) is
P itself; ``"top_left"`` is a tree without a prefix. Inside :func:`varlen` the alignment is per
sequence. Sibling branches never see each other, so the verifier scores every path at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from .._validate import check_int_matrix
from ._base import classify_by_evaluation, common_batch_size
from ._positional import PositionalMask
from .alignment import AlignLike, Alignment, as_alignment


def ancestor_matrix(parents: ArrayLike) -> np.ndarray:
    """(B, n, n) bool: ``A[b, t, u]`` iff u is t or an ancestor of t in tree b.

    parents: (n,) or (B, n) ints, ``parents[t]`` in ``[-1, t)`` (-1 = root). Raises when a
    parent does not come before its child (the order every tree verifier uses)."""
    table = np.asarray(check_int_matrix("tree", "parents", parents), dtype=np.int64)
    table = table.reshape(len(table), -1)
    batch, n = table.shape
    order = np.arange(n)
    bad = (table < -1) | (table >= order)
    if np.any(bad):
        b, t = (int(x[0]) for x in np.nonzero(bad))
        raise ValueError(f"tree: parents[{b}][{t}] = {int(table[b, t])} must lie in [-1, {t}) "
                         "(-1 for a root; a parent comes before its children)")
    ancestors = np.zeros((batch, n, n), dtype=bool)
    for t in range(n):
        ancestors[:, t, t] = True
        for b in range(batch):
            if table[b, t] >= 0:
                ancestors[b, t] |= ancestors[b, table[b, t]]
    return ancestors


def parents_from_ancestors(ancestors: ArrayLike) -> np.ndarray:
    """Inverse of :func:`ancestor_matrix`: (B, n, n) or (n, n) bool -> (B, n) parents.

    The parent of t is its deepest strict ancestor (depth = number of ancestors). Raises unless
    the matrix is exactly the ancestor-or-self relation of a tree whose parents come first."""
    matrix = np.asarray(ancestors)
    if matrix.dtype != np.bool_ or matrix.ndim not in (2, 3) or matrix.shape[-1] != (
        matrix.shape[-2]
    ):
        raise ValueError("parents_from_ancestors: ancestors must be a bool (n, n) or (B, n, n) "
                         f"array, got {matrix.dtype} {matrix.shape}")
    matrix = matrix.reshape((-1,) + matrix.shape[-2:])
    depth = matrix.sum(axis=-1)
    strict = matrix & ~np.eye(matrix.shape[-1], dtype=bool)
    parents = np.where(strict.any(-1), np.argmax(np.where(strict, depth[:, None, :], -1), -1), -1)
    if not np.array_equal(ancestor_matrix(parents) if parents.size else matrix, matrix):
        raise ValueError("parents_from_ancestors: ancestors is not the ancestor-or-self relation "
                         "of a tree with parents before children")
    return parents


@dataclass(frozen=True, repr=False)
class Tree(PositionalMask):
    """keep iff ``j < P`` or node ``j - P`` is node i or one of its ancestors (P = offset)."""

    parents: tuple
    align: Alignment
    kind = "tree"

    @property
    def batch_size(self) -> int | None:
        rows = len(self.parents) if len(self.parents) > 1 else None
        return common_batch_size("tree", parents=rows, align=self.align.batch_size)

    def check_lengths(self, q_len: int, k_len: int) -> None:
        """Query i is tree node i: Tq must equal the number of nodes."""
        nodes = len(self.parents[0])
        if q_len != nodes:
            raise ValueError(f"tree: query i is tree node i, so q_len must equal the {nodes} "
                             f"nodes of parents, got q_len = {q_len}")
        super().check_lengths(q_len, k_len)

    def _keep(self, grid, b, h, i, j):
        nodes = len(self.parents[0])
        self.check_lengths(grid.q_len, grid.k_len)
        xp = grid.xp
        prefix = self.align.query_positions(grid, b, i * 0)
        node = j - prefix
        inside = (node >= 0) & (node < nodes)
        ancestors = ancestor_matrix(self.parents).reshape(len(self.parents), nodes * nodes)
        safe = xp.where(inside, node, 0)
        is_ancestor = grid.gather_rows(ancestors.astype(np.int64), b, i * nodes + safe) == 1
        return (node < 0) | (inside & is_ancestor)

    def _classify(self, b, h, q0, q1, k0, k1, q_len, k_len):
        return classify_by_evaluation(self, b, h, q0, q1, k0, k1, q_len, k_len)

    def _params(self) -> dict:
        return {"parents": [list(row) for row in self.parents], "align": self.align.to_json()}


def tree(parents: ArrayLike, *, align: AlignLike) -> Tree:
    """Tree mask from a parent array: (n,) or (B, n) ints, ``parents[t]`` in ``[-1, t)``.

    align: where the tree starts among the keys (module docstring); required."""
    ancestor_matrix(parents)  # validates
    table = check_int_matrix("tree", "parents", parents)
    mask = Tree(table, as_alignment(align, "tree"))
    mask.batch_size  # noqa: B018 - mismatched batch sizes fail here
    return mask
