"""A fitted random forest as plain arrays, so that predicting needs numpy only.

Importing scikit-learn (and SciPy under it) takes ~2 s here, more than the rest of a one-shot
`rftfm diagnose`; and its `predict_proba` walks 300 trees one at a time through joblib (~80 ms per call).
The diagnoser fits with scikit-learn once per logging setup, converts the forest with `ArrayForest.of`
and caches that; every later process predicts from the arrays, all trees at once. A test holds the
probabilities equal to scikit-learn's, NaN inputs included.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True, kw_only=True)
class ArrayForest:
    """The nodes of every tree of a fitted `RandomForestClassifier`, concatenated (indices are global)."""

    classes_: np.ndarray
    roots: np.ndarray  # index of each tree's root
    left: np.ndarray  # child for `x <= threshold`; -1 at a leaf
    right: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    missing_left: np.ndarray  # where a NaN goes (scikit-learn ≥ 1.4 learns it per node)
    leaf_proba: np.ndarray  # (nodes, classes): the class shares at each node
    importances: np.ndarray  # the forest's impurity-based feature importances

    @classmethod
    def of(cls, forest: Any) -> ArrayForest:
        """Convert a fitted scikit-learn `RandomForestClassifier` (single output)."""
        trees = [est.tree_ for est in forest.estimators_]
        sizes = np.array([t.node_count for t in trees])
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])

        def children(attr: str) -> np.ndarray:
            parts = []
            for t, off in zip(trees, offsets, strict=True):
                child = getattr(t, attr).astype(np.int64)
                parts.append(np.where(child < 0, -1, child + off))
            return np.concatenate(parts)

        value = np.concatenate([t.value[:, 0, :] for t in trees]).astype(np.float64)
        total = value.sum(axis=1, keepdims=True)
        return cls(
            classes_=np.asarray(forest.classes_),
            roots=offsets.astype(np.int64),
            left=children("children_left"),
            right=children("children_right"),
            feature=np.concatenate([t.feature for t in trees]).astype(np.int64),
            threshold=np.concatenate([t.threshold for t in trees]),
            missing_left=np.concatenate(
                [getattr(t, "missing_go_to_left", np.zeros(t.node_count, dtype=np.uint8)) for t in trees]
            ).astype(bool),
            leaf_proba=value / np.where(total == 0, 1.0, total),
            importances=np.asarray(forest.feature_importances_, dtype=np.float64),
        )

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Mean over trees of the class shares at the leaf each row reaches, as scikit-learn computes
        them (rows are compared in float32, as its trees store their inputs)."""
        x = np.asarray(x, dtype=np.float32).astype(np.float64)
        rows = np.arange(len(x))[:, None]
        node = np.broadcast_to(self.roots, (len(x), len(self.roots))).copy()
        while True:
            inner = self.left[node] >= 0
            if not inner.any():
                break
            value = x[rows, np.where(inner, self.feature[node], 0)]
            go_left = np.where(np.isnan(value), self.missing_left[node], value <= self.threshold[node])
            node = np.where(inner, np.where(go_left, self.left[node], self.right[node]), node)
        return self.leaf_proba[node].mean(axis=1)
