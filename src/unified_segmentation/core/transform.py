"""Per-metric transform to model space: optional scale-aware ``log1p`` then standardization.

A heavy-tailed metric ``x`` becomes ``log1p(x / s)`` with ``s`` the median of its positive values at
calibration. With ``s = 1`` (taxonomies stored before ``log_scale`` existed) this is plain ``log1p``;
the scale matters for rates far below 1 (0.02 sessions a day), where ``log1p`` is nearly linear and a
long right tail would be left for K-means to cut at an unstable point.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class MetricScaler:
    """Transform metrics to model space and back.

    Parameters
    ----------
    metrics : list of str
        Metric names, in column order.
    log1p : list of bool
        Whether each metric is heavy-tailed and transformed with ``log1p`` before scaling.
    """

    metrics: list[str]
    log1p: list[bool]
    mean_: np.ndarray | None = field(default=None, repr=False)
    scale_: np.ndarray | None = field(default=None, repr=False)
    log_scale_: np.ndarray | None = field(default=None, repr=False)

    def _log_scale(self) -> np.ndarray:
        if self.log_scale_ is None:
            return np.ones(len(self.metrics))
        return self.log_scale_

    def fit(self, X: np.ndarray) -> MetricScaler:
        """Learn the log scales, mean and scale from ``X`` of shape (n_players, n_metrics) in metric units."""
        X = np.asarray(X, dtype=np.float64)
        log_scale = np.ones(len(self.metrics))
        for j, heavy in enumerate(self.log1p):
            if heavy and len(X):
                positive = X[:, j][X[:, j] > 0]
                if positive.size:
                    log_scale[j] = float(np.median(positive))
        log_scale[~np.isfinite(log_scale) | (log_scale <= 0)] = 1.0
        self.log_scale_ = log_scale
        Y = self._pre(X)
        self.mean_ = Y.mean(axis=0) if len(Y) else np.zeros(len(self.metrics))
        scale = Y.std(axis=0) if len(Y) else np.ones(len(self.metrics))
        scale[~np.isfinite(scale) | (scale < 1e-12)] = 1.0
        self.scale_ = scale
        return self

    def _check(self) -> None:
        if self.mean_ is None or self.scale_ is None:
            raise RuntimeError("MetricScaler is not fitted; call fit() first")

    def _pre(self, X: np.ndarray) -> np.ndarray:
        mask = np.asarray(self.log1p, dtype=bool)
        if not mask.any():
            return X.copy()
        Y = X.copy()
        Y[:, mask] = np.log1p(np.maximum(Y[:, mask], 0.0) / self._log_scale()[mask])
        return Y

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Metric units -> model space, shape preserved."""
        self._check()
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        return (self._pre(X) - self.mean_) / self.scale_

    def inverse_transform(self, Z: np.ndarray) -> np.ndarray:
        """Model space -> metric units."""
        self._check()
        Z = np.atleast_2d(np.asarray(Z, dtype=np.float64))
        Y = Z * self.scale_ + self.mean_
        mask = np.asarray(self.log1p, dtype=bool)
        if mask.any():
            Y[:, mask] = np.expm1(Y[:, mask]) * self._log_scale()[mask]
        return Y

    def transform_columns(self, X: np.ndarray, cols) -> np.ndarray:
        """Transform a column subset ``X`` of shape (n, len(cols)) (metric units -> model space)."""
        self._check()
        cols = np.asarray(cols, dtype=np.int64)
        X = np.atleast_2d(np.asarray(X, dtype=np.float64)).copy()
        mask = np.asarray(self.log1p, dtype=bool)[cols]
        X[:, mask] = np.log1p(np.maximum(X[:, mask], 0.0) / self._log_scale()[cols][mask])
        return (X - self.mean_[cols]) / self.scale_[cols]

    def inverse_columns(self, Z: np.ndarray, cols) -> np.ndarray:
        """Inverse of ``transform_columns``."""
        self._check()
        cols = np.asarray(cols, dtype=np.int64)
        Y = np.atleast_2d(np.asarray(Z, dtype=np.float64)) * self.scale_[cols] + self.mean_[cols]
        mask = np.asarray(self.log1p, dtype=bool)[cols]
        Y[:, mask] = np.expm1(Y[:, mask]) * self._log_scale()[cols][mask]
        return Y

    def derivative(self, X: np.ndarray) -> np.ndarray:
        """d(model)/d(metric) at ``X`` (for propagating sampling noise), shape of ``X``."""
        self._check()
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        mask = np.asarray(self.log1p, dtype=bool)
        D = np.ones_like(X)
        D[:, mask] = 1.0 / (self._log_scale()[mask] + np.maximum(X[:, mask], 0.0))
        return D / self.scale_

    def to_dict(self) -> dict[str, Any]:
        self._check()
        return {
            "metrics": list(self.metrics),
            "log1p": [bool(b) for b in self.log1p],
            "mean": self.mean_.tolist(),
            "scale": self.scale_.tolist(),
            "log_scale": self._log_scale().tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MetricScaler:
        return cls(
            metrics=list(d["metrics"]),
            log1p=list(d["log1p"]),
            mean_=np.asarray(d["mean"], dtype=np.float64),
            scale_=np.asarray(d["scale"], dtype=np.float64),
            log_scale_=np.asarray(d["log_scale"], dtype=np.float64) if "log_scale" in d else None,
        )
