"""Tree ensembles that predict a mean and conditional quantiles.

:class:`QuantileRandomForest`
    Quantile regression forest (Meinshausen 2006) on top of the
    ``quantile-forest`` package. One forest gives the mean, the standard
    deviation and any quantile of the conditional distribution of the target.
:class:`QuantileGradientBoosting`
    Histogram gradient boosting (scikit-learn) with one model per quantile and
    one squared-error model for the mean.

Both follow the socmap prediction interface (``predict(X, return_std=False)``,
``predict_quantiles(X, quantiles)``), take ``X`` as a DataFrame with the
coordinate columns and the covariates (coordinates are not used as features
unless ``use_coordinates=True``) and treat categorical covariates as
categories. See ``docs/models.md`` for the choices made here.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from quantile_forest import RandomForestQuantileRegressor
from quantile_forest._quantile_forest_fast import QuantileForest
from scipy.stats import norm
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.ensemble._forest import ForestRegressor
from sklearn.model_selection import KFold
from sklearn.utils import check_random_state
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data
from threadpoolctl import threadpool_limits

from mapping.exceptions import ModelError
from mapping.models.base import (
    DEFAULT_QUANTILES,
    ColumnLayout,
    ColumnSpec,
    MapStatisticsMixin,
    check_quantiles,
    one_hot,
    one_hot_groups,
)

_BATCH_ROWS = 8192  # rows per batch at predict: bounds the (rows, trees) leaf-index array


def _batches(n: int, size: int = _BATCH_ROWS) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


@dataclass(frozen=True)
class _LeafMoments:
    """A fitted forest's leaf moments (trees x nodes) and out-of-bag statistics."""

    m1: np.ndarray
    m2: np.ndarray
    centre: float
    oob_mean: np.ndarray
    oob_std: np.ndarray


_MOMENTS_LOCK = threading.Lock()


class _LeafSamplesOnDemand(RandomForestQuantileRegressor):  # type: ignore[misc]
    """quantile-forest's forest, whose leaves' training samples are gathered when quantiles
    are first asked for, not at fit.

    quantile-forest stores them as a dense array (trees x nodes x the largest leaf's size):
    one leaf of 1,800 samples among 10,000 profiles makes it 6 GB, in every process that
    fits or loads the model. The mean and the std of :class:`QuantileRandomForest` (all
    that regression kriging needs) come from its own leaf moments, so the array is built
    only for quantiles, by quantile-forest's own code on the same trees
    (:meth:`leaf_samples`), and never pickled.
    """

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> _LeafSamplesOnDemand:
        # the trees exactly as RandomForestQuantileRegressor.fit grows them
        ForestRegressor.fit(self, X, y, sample_weight=sample_weight)
        self.train_ = (np.asarray(X, dtype=np.float32), np.asarray(y, dtype=float))
        self.sample_weight_ = sample_weight
        return self

    def leaf_samples(self) -> Any:
        """The quantile forest of the fitted trees (the rest of quantile-forest 1.4's
        ``fit``), built on first use."""
        if getattr(self, "forest_", None) is None:
            X, y = self.train_
            y = y.reshape(len(y), -1)
            sorter = np.argsort(y, axis=0)
            y_sorted = np.take_along_axis(y, sorter, axis=0)
            weight = self.sample_weight_
            if weight is not None:
                weight = np.asarray(weight)[sorter]
            leaves = self._get_y_train_leaves(X, y_sorted, sorter=sorter, sample_weight=weight)
            bounds = self._get_y_bound_leaves(y_sorted, leaves)
            self.forest_ = QuantileForest(y_sorted.astype(np.float64).T, leaves, bounds)
            self.sorter_ = sorter
            self.n_train_samples_ = len(y_sorted)
            self.unsampled_indices_ = None
        return self.forest_

    def predict(self, X: Any, *args: Any, **kwargs: Any) -> Any:
        self.leaf_samples()
        return super().predict(X, *args, **kwargs)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())
        state.pop("forest_", None)  # rebuilt from train_ when quantiles are asked for
        return state


def _tree_sample_weights(forest: Any, n: int) -> np.ndarray | None:
    """Per-sample factor of the trees' weights besides the bootstrap count (``None``: none).

    scikit-learn 1.6-1.8 grow each tree on ``count x sample_weight``; 1.9 draws the
    bootstrap with probabilities proportional to ``sample_weight`` and grows the tree on the
    counts alone (``estimators_samples_`` then holds the weighted draws; scikit-learn PR
    #31529). The first tree's root weight tells which: the leaf moments must weigh as the
    trees did.
    """
    sw = getattr(forest, "sample_weight_", None)
    if sw is None:
        return None
    sw = np.asarray(sw, dtype=float)
    counts = np.bincount(forest.estimators_samples_[0], minlength=n).astype(float)
    root = float(forest.estimators_[0].tree_.weighted_n_node_samples[0])
    return sw if np.isclose(root, counts @ sw) and not np.isclose(root, counts.sum()) else None


class _TreeModel(MapStatisticsMixin, RegressorMixin, BaseEstimator):
    """Column handling shared by the tree models (not public)."""

    coord_columns: Sequence[ColumnSpec] | None
    use_coordinates: bool
    categorical_features: Sequence[ColumnSpec] | np.ndarray | None

    _allow_nan = False

    def _features(self, X: Any, y: Any = None, *, reset: bool) -> tuple[np.ndarray, Any]:
        """Validate X (and y), learn or apply the column layout, return the feature matrix.

        Categorical codes are ``0 … L-1``; an unseen or missing category is ``-1``.
        """
        finite: bool | str = "allow-nan" if self._allow_nan else True
        if isinstance(X, pd.DataFrame):
            if reset:
                self.layout_ = ColumnLayout.from_fit(
                    X,
                    coord_columns=self.coord_columns,
                    use_coordinates=self.use_coordinates,
                    categorical_features=self.categorical_features,
                )
            else:
                check_is_fitted(self)
                names = self.layout_.names or []
                missing = [c for c in names if c not in X.columns]
                if missing:
                    raise ModelError(f"column {missing[0]!r} seen at fit is missing from X")
            coded = self.layout_.encode(X, unknown=-1.0)
            if reset:
                arr, y = validate_data(self, coded, y, y_numeric=True, ensure_all_finite=finite)
            else:
                arr = validate_data(self, coded, reset=False, ensure_all_finite=finite)
        else:
            if reset:
                arr, y = validate_data(self, X, y, y_numeric=True, ensure_all_finite=finite)
                self.layout_ = ColumnLayout.from_fit(
                    arr,
                    coord_columns=self.coord_columns,
                    use_coordinates=self.use_coordinates,
                    categorical_features=self.categorical_features,
                )
            else:
                check_is_fitted(self)
                arr = validate_data(self, X, reset=False, ensure_all_finite=finite)
            arr = self.layout_.encode(arr, unknown=-1.0)
        feats = np.asarray(arr, dtype=float)[:, self.layout_.feature_idx]
        return feats, y

    def _importances_to_input(self, per_feature: np.ndarray) -> np.ndarray:
        """Spread per-feature importances over all input columns (coordinates 0)."""
        out = np.zeros(self.n_features_in_)
        out[self.layout_.feature_idx] = per_feature
        return out


# --------------------------------------------------------------------------- forest
class QuantileRandomForest(_TreeModel):
    """Quantile regression forest (Meinshausen 2006).

    A random forest whose leaves keep their training targets, so that every
    prediction is a weighted empirical distribution of training targets:
    ``w_i(x) = (1/T) Σ_t c_ti / |L_t(x)|``, with ``c_ti`` the bootstrap count
    of sample ``i`` in tree ``t`` and ``|L_t(x)|`` the (bootstrap) size of the
    leaf that ``x`` falls in. The mean of that distribution is the ordinary
    random-forest mean; its standard deviation is ``predict(..., return_std=True)``
    and its quantiles are ``predict_quantiles``.

    Parameters
    ----------
    n_estimators
        Number of trees.
    min_samples_leaf
        Minimum number of samples in a leaf; 5 is the regression default of
        R's randomForest/ranger and keeps the conditional distributions from
        collapsing onto single training values.
    max_features
        Features tried per split. ``1/3`` (as a fraction of the feature
        columns, after one-hot encoding) is randomForest's ``mtry = p/3``.
    max_depth
        Maximum tree depth (``None``: grow until ``min_samples_leaf``).
    max_samples_leaf
        Training targets kept per leaf for the quantiles. ``None`` keeps them
        all (the exact Meinshausen weights); ``1`` keeps one random target per
        leaf (quicker, coarser quantiles).
    coord_columns
        Names (or positions) of the two coordinate columns of ``X``.
    use_coordinates
        Use the coordinates as features. Off by default: see ``docs/models.md``.
    categorical_features
        Extra columns to treat as categorical (names, positions or a boolean
        mask); pandas ``category``/``object`` columns always are. Categorical
        covariates are one-hot encoded; an unseen level at predict time
        matches no indicator.
    random_state
        Seed or ``numpy.random.RandomState`` for the bootstrap and the splits.
    n_jobs
        Parallel jobs for fitting and applying the trees.

    Attributes
    ----------
    forest_ : quantile_forest.RandomForestQuantileRegressor
        The fitted forest (on the encoded feature matrix); its per-leaf training samples
        are gathered when quantiles are first predicted.
    layout_ : ColumnLayout
        Which columns are features, and the levels of categorical ones.
    oob_prediction_ : ndarray of shape (n_samples,)
        Out-of-bag mean of every training sample (mean over the trees that did
        not see it). Use these residuals for regression kriging: in-sample
        residuals of a forest are shrunk towards zero.
    oob_std_ : ndarray of shape (n_samples,)
        Out-of-bag standard deviation of the conditional distribution.
    feature_importances_ : ndarray of shape (n_features_in_,)
        Impurity-based importances summed over the indicators of each
        categorical covariate; 0 for columns that are not features.
    """

    def __init__(
        self,
        n_estimators: int = 500,
        *,
        min_samples_leaf: int = 5,
        max_features: float | int | str | None = 1 / 3,
        max_depth: int | None = None,
        max_samples_leaf: int | None = None,
        coord_columns: Sequence[ColumnSpec] | None = ("x", "y"),
        use_coordinates: bool = False,
        categorical_features: Sequence[ColumnSpec] | np.ndarray | None = None,
        random_state: int | np.random.RandomState | None = None,
        n_jobs: int | None = None,
    ) -> None:
        self.n_estimators = n_estimators
        self.min_samples_leaf = min_samples_leaf
        self.max_features = max_features
        self.max_depth = max_depth
        self.max_samples_leaf = max_samples_leaf
        self.coord_columns = coord_columns
        self.use_coordinates = use_coordinates
        self.categorical_features = categorical_features
        self.random_state = random_state
        self.n_jobs = n_jobs

    # ---------------------------------------------------------------- fit
    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> QuantileRandomForest:
        """Fit the forest.

        Parameters
        ----------
        X
            DataFrame (or array) of coordinates and covariates.
        y
            Target, e.g. SOC density in kg C m-2.
        sample_weight
            Weight of each sample (``None``: equal). The splits, the leaf means and
            moments and the quantiles' leaf samples all weigh samples by it (times
            their bootstrap count), so a leaf's mean is the weighted mean of its
            samples: with inverse sampling-intensity weights, an estimate of the mean
            over the area the leaf covers rather than over its profiles.

        Returns
        -------
        self
        """
        feats, y = self._features(X, y, reset=True)
        y = np.asarray(y, dtype=float)
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, feats, dtype=np.float64)
            if np.any(sample_weight < 0) or not np.any(sample_weight > 0):
                raise ModelError("sample_weight must be >= 0 with at least one > 0")
        Xf = self._expand(feats)
        self.forest_ = _LeafSamplesOnDemand(
            n_estimators=self.n_estimators,
            min_samples_leaf=self.min_samples_leaf,
            max_features=self.max_features,
            max_depth=self.max_depth,
            max_samples_leaf=self.max_samples_leaf,
            bootstrap=True,
            random_state=self.random_state,
            n_jobs=self.n_jobs,
        ).fit(Xf, y, sample_weight=sample_weight)
        self._leaf_moments_cache: _LeafMoments | None = None  # on first use (_leaf_moments)
        groups = one_hot_groups(self.layout_.categorical_mask, self.layout_.categories)
        per_feature = np.bincount(
            groups,
            weights=self.forest_.feature_importances_,
            minlength=len(self.layout_.feature_idx),
        )
        self.feature_importances_ = self._importances_to_input(per_feature)
        return self

    def _expand(self, feats: np.ndarray) -> np.ndarray:
        mask = self.layout_.categorical_mask
        if not mask.any():
            return feats
        return one_hot(feats, mask, self.layout_.categories)

    def _leaf_moments(self) -> _LeafMoments:
        """Per tree and leaf, the bootstrap-weighted mean of y and of y², and the
        out-of-bag mean and std of every training sample; computed on first use.

        Targets are centred first so that ``E[y²] - E[y]²`` does not lose
        precision. With these, the mean and variance of the conditional
        distribution are averages over trees of leaf moments. Only ``return_std``
        and the out-of-bag attributes need them (regression kriging's residuals), so
        a forest that is only asked for its mean (a layered model's, or one of its
        internal cross-validation folds) never computes them.
        """
        got = self.__dict__.get("_leaf_moments_cache")
        if got is not None:
            return got
        with _MOMENTS_LOCK:  # the threads of one prediction ask for them together
            got = self.__dict__.get("_leaf_moments_cache")
            if got is None:
                got = self._legacy_moments() or self._compute_leaf_moments()
                self._leaf_moments_cache = got
        return got

    def _compute_leaf_moments(self) -> _LeafMoments:
        forest = self.forest_
        Xf, y = forest.train_  # the encoded features (float32, as the trees split them), y
        w = _tree_sample_weights(forest, len(y))
        centre = float(np.average(y, weights=w))  # the plain mean when w is None
        yc = y - centre
        leaves = forest.apply(Xf)  # (n, T)
        n_nodes = max(est.tree_.node_count for est in forest.estimators_)
        m1 = np.full((len(forest.estimators_), n_nodes), np.nan)
        m2 = np.full_like(m1, np.nan)
        oob_s1 = np.zeros(len(y))
        oob_s2 = np.zeros(len(y))
        oob_n = np.zeros(len(y))
        for t, idx in enumerate(forest.estimators_samples_):
            leaf = leaves[idx, t]
            yi = yc[idx]
            wi = None if w is None else w[idx]  # None: the bootstrap counts alone
            cnt = np.bincount(leaf, weights=wi, minlength=n_nodes).astype(float)
            s1 = np.bincount(leaf, weights=yi if wi is None else wi * yi, minlength=n_nodes)
            s2 = np.bincount(leaf, weights=yi**2 if wi is None else wi * yi**2, minlength=n_nodes)
            ok = cnt > 0
            m1[t, ok] = s1[ok] / cnt[ok]
            m2[t, ok] = s2[ok] / cnt[ok]
            oob = np.ones(len(y), dtype=bool)
            oob[idx] = False
            oob_s1[oob] += m1[t, leaves[oob, t]]
            oob_s2[oob] += m2[t, leaves[oob, t]]
            oob_n[oob] += 1
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = oob_s1 / oob_n
            var = oob_s2 / oob_n - mean**2
        return _LeafMoments(m1, m2, centre, mean + centre, np.sqrt(np.clip(var, 0.0, None)))

    def _legacy_moments(self) -> _LeafMoments | None:
        """The moments of a model pickled when they were computed at fit, if it is one."""
        d = self.__dict__
        if "_leaf_m1" not in d:
            return None
        return _LeafMoments(
            d["_leaf_m1"], d["_leaf_m2"], d["_y_centre"], d["oob_prediction_"], d["oob_std_"]
        )

    @property
    def oob_prediction_(self) -> np.ndarray:
        """Out-of-bag mean of every training sample (see the class docstring)."""
        return self._leaf_moments().oob_mean

    @property
    def oob_std_(self) -> np.ndarray:
        """Out-of-bag standard deviation of every training sample."""
        return self._leaf_moments().oob_std

    # ---------------------------------------------------------------- predict
    def _moments(self, Xf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lm = self._leaf_moments()
        trees = np.arange(lm.m1.shape[0])
        mean = np.empty(len(Xf))
        var = np.empty(len(Xf))
        for sl in _batches(len(Xf)):
            leaves = self.forest_.apply(Xf[sl])
            a = lm.m1[trees, leaves].mean(axis=1)
            b = lm.m2[trees, leaves].mean(axis=1)
            mean[sl] = a
            var[sl] = b - a**2
        return mean + lm.centre, np.sqrt(np.clip(var, 0.0, None))

    def predict(
        self, X: Any, return_std: bool = False
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Mean (and standard deviation) of the conditional distribution.

        Parameters
        ----------
        X
            DataFrame (or array) laid out as at fit.
        return_std
            Also return the standard deviation of the conditional distribution
            (the spread of the target given the covariates, not the standard
            error of the mean).

        Returns
        -------
        mean, or (mean, std)
        """
        feats, _ = self._features(X, reset=False)
        if not return_std:
            # A bootstrap tree's leaf value is the bootstrap-weighted mean of its samples,
            # the same first moment ``_moments`` averages: scikit-learn's compiled path
            # gives the forest mean at scikit-learn's own speed.
            return ForestRegressor.predict(self.forest_, self._expand(feats))
        mean, std = self._moments(self._expand(feats))
        return mean, std

    def predict_quantiles(
        self, X: Any, quantiles: Sequence[float] = DEFAULT_QUANTILES
    ) -> np.ndarray:
        """Quantiles of the conditional distribution, shape ``(n, len(quantiles))``."""
        q = check_quantiles(quantiles)
        feats, _ = self._features(X, reset=False)
        Xf = self._expand(feats)
        out = np.empty((len(Xf), len(q)))
        for sl in _batches(len(Xf)):
            pred = self.forest_.predict(
                Xf[sl], quantiles=q.tolist(), weighted_quantile=True, weighted_leaves=True
            )
            out[sl] = np.asarray(pred).reshape(sl.stop - sl.start, len(q))
        return out


# --------------------------------------------------------------------------- boosting
class QuantileGradientBoosting(_TreeModel):
    """Gradient-boosted trees with quantiles (scikit-learn histogram boosting).

    One :class:`~sklearn.ensemble.HistGradientBoostingRegressor` with squared
    error gives the mean; one with the pinball loss per level in ``quantiles``
    gives each quantile. Independently fitted quantile models can cross; at
    every row the fitted quantiles are sorted (monotone rearrangement,
    Chernozhukov et al. 2010), which never makes them worse.

    Boosted quantile models fit the tails of the *training* data and so give
    intervals that are too narrow on new data (80-85 % coverage for a nominal
    90 % interval in our synthetic tests). With ``calibration_folds`` (the
    default) every level is shifted by a conformal correction estimated from
    cross-fitted residuals (the asymmetric form of conformalized quantile
    regression, Romano et al. 2019): level ``a`` is moved by the
    ``a``-quantile of ``y - Q_a(x)`` over out-of-fold predictions, with the
    finite-sample level ``ceil((n+1)a)/n`` above the median and
    ``floor((n+1)a)/n`` below it.

    Parameters
    ----------
    quantiles
        Levels fitted. ``predict_quantiles`` returns these exactly and
        interpolates linearly between them; levels outside their range are
        an error.
    learning_rate, max_iter, max_leaf_nodes, max_depth, min_samples_leaf, l2_regularization, max_features
        Passed to every ``HistGradientBoostingRegressor``.
    early_stopping
        ``"auto"`` stops on a 10 % validation split when there are more than
        10 000 rows; ``True``/``False`` force it.
    calibration_folds
        Folds for the conformal correction of the quantiles (random K-fold
        over rows); ``None`` or 0 switches it off. It is skipped when there
        are fewer than ``2 * calibration_folds`` rows.
    coord_columns, use_coordinates, categorical_features
        As for :class:`QuantileRandomForest`. Categorical covariates use the
        native categorical splits of histogram boosting (at most 255 levels).
    random_state
        Seed for feature subsampling, the early-stopping split and the
        calibration folds.
    n_jobs
        OpenMP threads used by the boosting code during ``fit`` and
        ``predict``; ``None`` means 1 (as scikit-learn's ``n_jobs``), ``-1``
        all cores. Keeping it at 1 avoids oversubscription when models run
        inside Dask workers or parallel cross-validation, where busy-waiting
        OpenMP threads slow everything down by an order of magnitude.

    Attributes
    ----------
    mean_model_ : HistGradientBoostingRegressor
    quantile_models_ : list of HistGradientBoostingRegressor
        One per level of ``quantiles_``.
    quantiles_ : ndarray
        The fitted levels, sorted.
    quantile_shifts_ : ndarray
        Conformal correction added to each fitted level (zeros without
        calibration).
    n_iter_ : ndarray of int
        Boosting iterations of the mean model followed by each quantile model.
    """

    _allow_nan = True  # histogram boosting sends missing values down a learned branch

    def __init__(
        self,
        quantiles: Sequence[float] = DEFAULT_QUANTILES,
        *,
        learning_rate: float = 0.05,
        max_iter: int = 200,
        max_leaf_nodes: int | None = 7,
        max_depth: int | None = None,
        min_samples_leaf: int = 30,
        l2_regularization: float = 0.0,
        max_features: float = 1.0,
        early_stopping: str | bool = "auto",
        calibration_folds: int | None = 5,
        coord_columns: Sequence[ColumnSpec] | None = ("x", "y"),
        use_coordinates: bool = False,
        categorical_features: Sequence[ColumnSpec] | np.ndarray | None = None,
        random_state: int | np.random.RandomState | None = None,
        n_jobs: int | None = None,
    ) -> None:
        self.quantiles = quantiles
        self.learning_rate = learning_rate
        self.max_iter = max_iter
        self.max_leaf_nodes = max_leaf_nodes
        self.max_depth = max_depth
        self.min_samples_leaf = min_samples_leaf
        self.l2_regularization = l2_regularization
        self.max_features = max_features
        self.early_stopping = early_stopping
        self.calibration_folds = calibration_folds
        self.coord_columns = coord_columns
        self.use_coordinates = use_coordinates
        self.categorical_features = categorical_features
        self.random_state = random_state
        self.n_jobs = n_jobs

    def __sklearn_tags__(self):  # type: ignore[no-untyped-def]
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags

    def _make(self, **loss: Any) -> HistGradientBoostingRegressor:
        mask = self.layout_.categorical_mask
        return HistGradientBoostingRegressor(
            **loss,
            learning_rate=self.learning_rate,
            max_iter=self.max_iter,
            max_leaf_nodes=self.max_leaf_nodes,
            max_depth=self.max_depth,
            min_samples_leaf=self.min_samples_leaf,
            l2_regularization=self.l2_regularization,
            max_features=self.max_features,
            early_stopping=self.early_stopping,
            categorical_features=mask if mask.any() else None,
            random_state=self.random_state,
        )

    def _prepare(self, feats: np.ndarray) -> np.ndarray:
        # -1 marks an unseen or missing category; boosting wants NaN for missing
        mask = self.layout_.categorical_mask
        if mask.any():
            sub = feats[:, mask]
            sub[sub < 0] = np.nan
            feats[:, mask] = sub
        return feats

    def fit(self, X: Any, y: Any) -> QuantileGradientBoosting:
        """Fit the mean model and one model per quantile level.

        Returns
        -------
        self
        """
        q = np.sort(check_quantiles(self.quantiles))
        if len(np.unique(q)) != len(q):
            raise ValueError(f"quantiles must be distinct, got {list(self.quantiles)}")
        feats, y = self._features(X, y, reset=True)
        for k, levels in enumerate(self.layout_.categories):
            if levels is not None and len(levels) > 255:
                name = self.layout_.feature_names[k]
                raise ModelError(
                    f"categorical covariate {name!r} has {len(levels)} levels; at most 255 are supported"
                )
        Xf = self._prepare(feats)
        y = np.asarray(y, dtype=float)
        self.quantiles_ = q
        with self._threads():
            self.mean_model_ = self._make(loss="squared_error").fit(Xf, y)
            self.quantile_models_ = self._fit_quantile_models(Xf, y)
            self.quantile_shifts_ = self._conformal_shifts(Xf, y)
        self.n_iter_ = np.array([m.n_iter_ for m in (self.mean_model_, *self.quantile_models_)])
        return self

    def _fit_quantile_models(
        self, Xf: np.ndarray, y: np.ndarray
    ) -> list[HistGradientBoostingRegressor]:
        return [self._make(loss="quantile", quantile=float(a)).fit(Xf, y) for a in self.quantiles_]

    def _conformal_shifts(self, Xf: np.ndarray, y: np.ndarray) -> np.ndarray:
        q = self.quantiles_
        k = self.calibration_folds
        n = len(y)
        if not k or n < 2 * k:
            return np.zeros(len(q))
        seed = check_random_state(self.random_state).randint(np.iinfo(np.int32).max)
        oof = np.empty((n, len(q)))
        for tr, te in KFold(n_splits=k, shuffle=True, random_state=seed).split(Xf):
            models = self._fit_quantile_models(Xf[tr], y[tr])
            oof[te] = np.sort(np.column_stack([m.predict(Xf[te]) for m in models]), axis=1)
        resid = y[:, None] - oof
        shifts = np.empty(len(q))
        for j, a in enumerate(q):
            if a >= 0.5:
                level = min(1.0, np.ceil((n + 1) * a) / n)
                shifts[j] = np.quantile(resid[:, j], level, method="higher")
            else:
                level = max(0.0, np.floor((n + 1) * a) / n)
                shifts[j] = np.quantile(resid[:, j], level, method="lower")
        return shifts

    def _threads(self) -> threadpool_limits:
        n = self.n_jobs
        if n is None:
            n = 1
        elif n < 0:
            n = max(1, (os.cpu_count() or 1) + 1 + n)
        return threadpool_limits(limits=n, user_api="openmp")

    def _fitted_quantiles(self, Xf: np.ndarray) -> np.ndarray:
        with self._threads():
            pred = np.column_stack([m.predict(Xf) for m in self.quantile_models_])
        pred = np.sort(pred, axis=1) + self.quantile_shifts_
        return np.sort(pred, axis=1)  # rearrangement: no crossing

    def predict(
        self, X: Any, return_std: bool = False
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Mean from the squared-error model; std from the outermost fitted quantiles.

        The standard deviation assumes a normal spread between the lowest and
        the highest fitted levels ``a < b``: ``(Q_b - Q_a) / (z_b - z_a)``.
        It needs at least two fitted levels.
        """
        feats, _ = self._features(X, reset=False)
        Xf = self._prepare(feats)
        with self._threads():
            mean = self.mean_model_.predict(Xf)
        if not return_std:
            return mean
        if len(self.quantiles_) < 2:
            raise ModelError("return_std needs at least two fitted quantile levels")
        qs = self._fitted_quantiles(Xf)
        lo, hi = self.quantiles_[0], self.quantiles_[-1]
        std = (qs[:, -1] - qs[:, 0]) / (norm.ppf(hi) - norm.ppf(lo))
        return mean, std

    def predict_quantiles(
        self, X: Any, quantiles: Sequence[float] = DEFAULT_QUANTILES
    ) -> np.ndarray:
        """Quantiles, shape ``(n, len(quantiles))``.

        Levels that were fitted are returned as fitted (after sorting); levels
        between two fitted ones are interpolated linearly in the level.
        """
        q = check_quantiles(quantiles)
        check_is_fitted(self)
        fitted = self.quantiles_
        outside = (q < fitted[0] - 1e-12) | (q > fitted[-1] + 1e-12)
        if outside.any():
            raise ValueError(
                f"quantile {q[outside][0]:g} is outside the fitted levels "
                f"{fitted[0]:g}…{fitted[-1]:g}; refit with quantiles={sorted({*fitted.tolist(), *q.tolist()})}"
            )
        feats, _ = self._features(X, reset=False)
        qs = self._fitted_quantiles(self._prepare(feats))
        if len(fitted) == 1:
            return np.repeat(qs, len(q), axis=1)
        out = np.empty((len(qs), len(q)))
        for k, a in enumerate(q):
            j = int(np.clip(np.searchsorted(fitted, a) - 1, 0, len(fitted) - 2))
            w = (a - fitted[j]) / (fitted[j + 1] - fitted[j])
            out[:, k] = (1 - w) * qs[:, j] + w * qs[:, j + 1]
        return out
