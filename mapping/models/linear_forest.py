"""A linear trend with a quantile forest on its residuals.

A random forest predicts at most the largest (smallest) target it has seen: where a cell's
covariates lie in land the profiles barely reach (the cold, barren uplands nobody samples),
its prediction holds the level of the nearest sampled leaves however far the covariates
have moved. A least-squares plane fitted first carries the covariates' broad gradients
into that land, and the forest, fitted on the plane's residuals, adds what the plane
misses (thresholds, interactions) where it has profiles. This is the regression-enhanced
random forest of Zhang et al. (2019, *Environ. Model. Softw.*) in its simplest form.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mapping.exceptions import ModelError
from mapping.models.base import DEFAULT_QUANTILES
from mapping.models.trees import QuantileRandomForest

__all__ = ["LinearQuantileForest"]

# the plane's prediction is held within its training range widened by this share of the
# range on each side: it may carry a gradient beyond the profiles, not without bound
_CLIP_SHARE = 0.5


class LinearQuantileForest(QuantileRandomForest):
    """Least-squares plane on the numeric covariates plus a quantile forest on its residuals.

    Same parameters and interface as :class:`~mapping.models.trees.QuantileRandomForest`
    (which it is, fitted on the residuals of the plane); every prediction, quantile and
    out-of-bag value is the plane's value plus the forest's. The plane uses the numeric
    covariates only (categorical ones and coordinates go to the forest alone), each
    standardised, fitted by (weighted) least squares with a tiny ridge for collinear
    covariates; its prediction is held within its range over the training rows widened by
    half that range on each side.

    Attributes
    ----------
    coef_, intercept_
        The plane on the standardised numeric features (``feature_mean_``,
        ``feature_scale_``).
    linear_range_
        ``(low, high)`` the plane's prediction is clipped to.
    feature_importances_
        The plane's share of the explained variance spread over its covariates by
        ``|coef| · sd`` plus the forest's importances for the rest (sums to 1), so an
        area of applicability weighs the covariates the plane uses.
    """

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> LinearQuantileForest:
        """Fit the plane, then the forest on its residuals (see the class docstring)."""
        feats, yv = self._features(X, y, reset=True)
        yv = np.asarray(yv, dtype=float)
        w = np.ones(len(yv)) if sample_weight is None else np.asarray(sample_weight, float)
        if w.shape != yv.shape or np.any(w < 0) or not np.any(w > 0):
            raise ModelError("sample_weight must be >= 0 with at least one > 0, one per row")
        numeric = ~self.layout_.categorical_mask
        Z = feats[:, numeric]
        mean = np.average(Z, axis=0, weights=w) if Z.shape[1] else np.zeros(0)
        scale = np.sqrt(np.average((Z - mean) ** 2, axis=0, weights=w)) if Z.shape[1] else mean
        scale = np.where(scale > 0, scale, 1.0)
        Zs = (Z - mean) / scale
        ym = float(np.average(yv, weights=w))
        sw = np.sqrt(w)[:, None]
        A = Zs * sw
        ridge = 1e-6 * float(np.sum(w))
        coef = np.linalg.solve(A.T @ A + ridge * np.eye(A.shape[1]), A.T @ ((yv - ym) * sw[:, 0]))
        self.feature_mean_, self.feature_scale_ = mean, scale
        self.coef_, self.intercept_ = coef, ym
        plane = ym + Zs @ coef
        span = float(np.ptp(plane)) if plane.size else 0.0
        self.linear_range_ = (
            float(plane.min()) - _CLIP_SHARE * span,
            float(plane.max()) + _CLIP_SHARE * span,
        )
        self._train_plane = plane
        super().fit(X, yv - plane, sample_weight=sample_weight)
        # explained-variance share of the plane, spread over its covariates
        var_y = float(np.average((yv - ym) ** 2, weights=w))
        share = min(max(float(np.average((plane - ym) ** 2, weights=w)) / var_y, 0.0), 1.0)
        lin = np.abs(coef)  # the features are standardised: |coef| is the sd of each term
        per_feature = np.zeros(len(self.layout_.feature_idx))
        if lin.sum() > 0:
            per_feature[numeric] = lin / lin.sum()
        lin_input = self._importances_to_input(per_feature)
        self.feature_importances_ = share * lin_input + (1 - share) * self.feature_importances_
        return self

    def _plane(self, X: Any) -> np.ndarray:
        feats, _ = self._features(X, reset=False)
        Z = feats[:, ~self.layout_.categorical_mask]
        plane = self.intercept_ + ((Z - self.feature_mean_) / self.feature_scale_) @ self.coef_
        return np.clip(plane, *self.linear_range_)

    @property
    def oob_prediction_(self) -> np.ndarray:
        """Out-of-bag mean of every training sample: the plane's value plus the forest's."""
        return self._train_plane + super().oob_prediction_

    def predict(
        self, X: Any, return_std: bool = False
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Mean (and the forest's standard deviation) of the conditional distribution."""
        plane = self._plane(X)
        if not return_std:
            return plane + np.asarray(super().predict(X), dtype=float)
        mean, std = super().predict(X, return_std=True)
        return plane + mean, std

    def predict_quantiles(
        self, X: Any, quantiles: Sequence[float] = DEFAULT_QUANTILES
    ) -> np.ndarray:
        """Quantiles of the conditional distribution, shape ``(n, len(quantiles))``."""
        return self._plane(X)[:, None] + super().predict_quantiles(X, quantiles)
