"""Exact TreeSHAP values of a LightGBM forest, several times faster than ``pred_contrib``, from per-leaf tables.

Path-dependent TreeSHAP (Lundberg et al. 2020, the algorithm behind LightGBM's
``pred_contrib``) values each leaf ``l`` of a tree as a game over the ``d`` distinct
features ``U`` on its path. Feature ``j`` enters it through two numbers: ``z_j``, the
share of the training rows that follow the path's splits on ``j`` (a product of
child/parent counts, fixed by the model), and ``o_j``, 1 when the house follows all
of them and 0 otherwise. The leaf's part of the expected score given the features in
``S`` is ``v_l * prod_{j in S} o_j * prod_{j in U - S} z_j``, and Shapley's formula gives
feature ``i`` ::

    phi_i = v_l * (o_i - z_i) * sum_k w(k, d) * [t^k] prod_{j != i} (z_j + o_j t),
    w(k, d) = k! (d - k - 1)! / d!

A house changes only the bits ``o``, so every leaf's values for each of its
``2**d`` bit patterns are computed once, when the tables are built (Fast TreeSHAP
v2, Yang 2021). Explaining a house then takes: whether it satisfies each path's splits
on each of its features (two comparisons: a path's splits on one feature bound an
interval), its pattern at each leaf, and a sum per feature of each leaf's run of values
for that pattern: compiled code (:mod:`housing.shap_kernel`). The values are the same as
``pred_contrib``'s to rounding (a test holds them to 1e-9 of the score).

The tables hold ``sum_l 2**d_l * d_l`` numbers, tens of MB for the champion (its size and
speed are in the README's Performance section). A forest whose
paths are longer than ``MAX_PATH_FEATURES``, or that uses splits these tables do not
model (categorical, or missing values routed apart), is refused with ``ValueError``
and its caller keeps ``pred_contrib``, as it does where llvmlite cannot compile the kernel.
"""

from __future__ import annotations

import itertools
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from math import factorial
from typing import Any

import numpy as np

from housing.compiled_forest import native_rows
from housing.shap_kernel import shap_values_kernel

# 2**12 patterns * 12 values per leaf: beyond this a table costs more than it saves.
MAX_PATH_FEATURES = 12
# Threads that share one explanation, each over a range of the leaves: reading the tables waits on memory,
# so a second thread finishes the explanation sooner even on a machine whose cores are busy serving.
THREADS = min(2, os.cpu_count() or 1)


@dataclass
class _Paths:
    """Every root-to-leaf path of a forest, flattened: one slot per distinct feature of a path."""

    leaf_value: list[float]
    leaf_features: list[int]
    slot_feature: list[int]
    slot_zero_fraction: list[float]
    # One edge per split on a path: its threshold, whether the path goes left there (x <= threshold), its slot.
    edge_threshold: list[float]
    edge_left: list[bool]
    edge_slot: list[int]
    base: float = 0.0

    def add_tree(self, root: dict[str, Any]) -> None:
        """Add one tree of ``Booster.dump_model()``: its leaves' paths and its expected score."""
        if "leaf_value" in root:
            self.base += root["leaf_value"]
            return
        stack: list[tuple[dict[str, Any], list[tuple[float, bool, int, float]]]] = [(root, [])]
        while stack:
            node, path = stack.pop()
            if "leaf_value" in node:
                self.base += node["leaf_value"] * node["leaf_count"] / root["internal_count"]
                self._add_leaf(node["leaf_value"], path)
                continue
            if node["decision_type"] != "<=" or node["missing_type"] != "None":
                raise ValueError(
                    f"split {node['decision_type']} with missing values {node['missing_type']}: "
                    "the tables model numerical splits without a missing-value direction only"
                )
            for child, left in ((node["left_child"], True), (node["right_child"], False)):
                count = child["leaf_count"] if "leaf_value" in child else child["internal_count"]
                step = (float(node["threshold"]), left, node["split_feature"], count / node["internal_count"])
                stack.append((child, [*path, step]))

    def _add_leaf(self, value: float, path: list[tuple[float, bool, int, float]]) -> None:
        features = list(dict.fromkeys(feature for _, _, feature, _ in path))
        if len(features) > MAX_PATH_FEATURES:
            raise ValueError(f"a path splits on {len(features)} features; the tables stop at {MAX_PATH_FEATURES}")
        first = len(self.slot_feature)
        for position, feature in enumerate(features):
            fraction = 1.0
            for threshold, left, split_feature, share in path:
                if split_feature == feature:
                    fraction *= share
                    self.edge_threshold.append(threshold)
                    self.edge_left.append(left)
                    self.edge_slot.append(first + position)
            self.slot_feature.append(feature)
            self.slot_zero_fraction.append(fraction)
        self.leaf_value.append(value)
        self.leaf_features.append(len(features))


def leaf_values(zero_fraction: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Shapley values of leaves with ``d`` path features, for every bit pattern.

    ``zero_fraction`` has shape (n_leaves, d), ``value`` (n_leaves,). Returns shape
    (n_leaves, 2**d, d): entry ``[l, p, i]`` is ``phi_i`` of leaf ``l`` for a house
    whose bits ``o_j`` are the binary digits of ``p`` (``o_j = (p >> j) & 1``).
    """
    n_leaves, d = zero_fraction.shape
    ones = ((np.arange(2**d)[:, None] >> np.arange(d)) & 1).astype(np.float64)  # (2**d, d)
    z = zero_fraction[:, None, :]  # (n_leaves, 1, d)
    # Coefficients of P(t) = prod_j (z_j + o_j t), shape (n_leaves, 2**d, d + 1).
    poly = np.zeros((n_leaves, 2**d, d + 1))
    poly[..., 0] = 1.0
    for j in range(d):
        poly[..., 1:] = poly[..., 1:] * z[..., j : j + 1] + poly[..., :-1] * ones[None, :, j : j + 1]
        poly[..., 0] *= z[..., j]
    weights = np.array([factorial(k) * factorial(d - k - 1) / factorial(d) for k in range(d)])
    out = np.empty((n_leaves, 2**d, d))
    for i in range(d):
        # sum_k w_k [t^k] P(t) / (z_i + o_i t): by synthetic division where o_i = 1 (stable from the top
        # down, as z_i <= 1), by z_i alone where o_i = 0.
        zi, oi = z[..., i], ones[None, :, i] == 1.0
        quotient = poly[..., d]
        total = np.zeros((n_leaves, 2**d))
        for k in range(d - 1, -1, -1):
            total += weights[k] * np.where(oi, quotient, poly[..., k] / zi)
            quotient = poly[..., k] - zi * quotient
        out[..., i] = value[:, None] * (ones[None, :, i] - zi) * total
    return out


class ShapTables:
    """Exact TreeSHAP values of a LightGBM booster's raw score (equal to ``pred_contrib``'s).

    Parameters
    ----------
    booster : lightgbm.Booster
        A forest of numerical splits without missing-value directions (``missing_type`` None),
        with at most ``MAX_PATH_FEATURES`` distinct features on any path.
    threads : int, default THREADS
        Threads that share each explanation, each reading the values of a range of leaves.

    Attributes
    ----------
    base : float
        The forest's expected raw score over its training rows (``pred_contrib``'s last column).
    n_features : int
        The number of the booster's input features.
    nbytes : int
        The memory the tables take.

    Raises
    ------
    ValueError
        For a forest the tables do not model; use ``pred_contrib`` for it.
    """

    def __init__(self, booster: Any, threads: int = THREADS) -> None:
        paths = _Paths([], [], [], [], [], [], [])
        for tree in booster.dump_model()["tree_info"]:
            paths.add_tree(tree["tree_structure"])
        self.base = paths.base
        self.n_features = int(booster.num_feature())
        leaf_features = np.asarray(paths.leaf_features, dtype=np.int64)
        # The kernel's arrays (housing.shap_kernel), all C-contiguous 64-bit: leaf l's slots are
        # first_slot[l] to first_slot[l + 1], its values start at leaf_offset[l] in the tables.
        self._first_slot = np.concatenate([[0], np.cumsum(leaf_features)]).astype(np.int64)
        self._table, self._leaf_offset = _tables(paths, leaf_features, self._first_slot)
        self._slot_feature, self._above, self._at_most = _slots(paths)
        self._kernel = shap_values_kernel()
        # Contiguous ranges of leaves with about as many slots each, one per thread.
        cuts = np.searchsorted(self._first_slot, np.linspace(0, self._first_slot[-1], max(threads, 1) + 1)[1:-1])
        self._ranges = list(itertools.pairwise([0, *cuts.tolist(), len(leaf_features)]))
        self._pool = ThreadPoolExecutor(len(self._ranges) - 1, "shap-tables") if len(self._ranges) > 1 else None

    @property
    def nbytes(self) -> int:
        return int(self._table.nbytes)

    def contributions(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The base, shape (n,), and each feature's value, shape (n, n_features), for features of shape (n, n_features).

        In the units of the booster's raw score; base + row sum equals the score.
        """
        rows = native_rows(features, self.n_features)  # the kernel reads each row's columns unchecked
        # LightGBM reads a missing value as 0.0 at a split without a missing-value direction.
        rows = np.where(np.isnan(rows), 0.0, rows)
        *others, last = self._ranges
        pending = [self._pool.submit(self._values, rows, lo, hi) for lo, hi in others] if self._pool else []
        values = self._values(rows, *last)
        for future in pending:
            values += future.result()
        return np.full(len(rows), self.base), values

    def _values(self, rows: np.ndarray, lo: int, hi: int) -> np.ndarray:
        """Leaves ``lo`` to ``hi``'s part of each feature's value, shape (n, n_features), for rows (n, n_features)."""
        values = np.zeros((len(rows), self.n_features))
        starts = np.empty(hi - lo, dtype=np.int64)
        arrays = (self._first_slot, self._leaf_offset, self._slot_feature, self._above, self._at_most, self._table)
        self._kernel(
            rows.ctypes.data, len(rows), self.n_features, lo, hi,
            *(array.ctypes.data for array in arrays), values.ctypes.data, starts.ctypes.data,
        )  # fmt: skip
        return values


def _tables(paths: _Paths, leaf_features: np.ndarray, first_slot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The tables, one block of ``2**d * d`` values per leaf, pattern-major, and where each leaf's block starts."""
    sizes = np.left_shift(1, leaf_features) * leaf_features
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    table = np.empty(int(sizes.sum()))
    zero_fraction = np.asarray(paths.slot_zero_fraction)
    values = np.asarray(paths.leaf_value)
    for d in np.unique(leaf_features[leaf_features > 0]):
        leaves = np.flatnonzero(leaf_features == d)
        block = leaf_values(zero_fraction[first_slot[leaves][:, None] + np.arange(d)], values[leaves])
        table[offsets[leaves][:, None] + np.arange(2**d * d)] = block.reshape(len(leaves), -1)
    return table, offsets


def _slots(paths: _Paths) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each slot's feature and the interval ``(above, at_most]`` its path follows, shape (n_slots,) each."""
    # A path follows its splits on one feature exactly when the feature is above every threshold it
    # goes right of and at most every threshold it goes left of: an interval (above, at_most].
    n_slots = len(paths.slot_feature)
    threshold = np.asarray(paths.edge_threshold, dtype=np.float64)
    edge_left = np.asarray(paths.edge_left, dtype=bool)
    edge_slot = np.asarray(paths.edge_slot, dtype=np.int64)
    above, at_most = np.full(n_slots, -np.inf), np.full(n_slots, np.inf)
    np.maximum.at(above, edge_slot[~edge_left], threshold[~edge_left])
    np.minimum.at(at_most, edge_slot[edge_left], threshold[edge_left])
    return np.asarray(paths.slot_feature, dtype=np.int64), above, at_most
