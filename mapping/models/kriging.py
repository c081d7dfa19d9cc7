"""Ordinary kriging and regression kriging as scikit-learn estimators.

:class:`OrdinaryKriging`
    Kriging of the target itself (no covariates).
:class:`RegressionKriging`
    Any regressor as trend, ordinary kriging of its residuals, prediction
    variance that combines the trend's uncertainty and the kriging variance.

The kriging systems are solved in :mod:`mapping.models.kriging_solve`
(:func:`krige_residuals`, :func:`training_covariance` and the status codes
:data:`KRIGED`, :data:`NO_NEIGHBOURS`, :data:`NOT_FACTORISED`, importable from here too).

Numbers agree with R gstat's ``krige()`` (same variogram, global and ``nmax``
neighbourhoods) to better than 1e-9 relative; see ``tests/test_kriging.py`` and
``docs/kriging.md``, which also states the variance formulas and the choices made.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy.spatial import cKDTree
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.dummy import DummyRegressor
from sklearn.linear_model import LinearRegression
from sklearn.model_selection import cross_val_predict
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_array, check_is_fitted, column_or_1d, validate_data

from mapping.exceptions import ModelError
from mapping.models.base import (
    DEFAULT_QUANTILES,
    ColumnSpec,
    check_quantiles,
    coordinate_indices,
    gaussian_quantiles,
    gaussian_stats,
    quantile_pair,
    selected_statistics,
)
from mapping.models.kriging_solve import (
    FULL_COV_MAX_N,
    KRIGED,
    NO_NEIGHBOURS,
    NOT_FACTORISED,
    InputValueError,
    krige_residuals,
    merge_duplicates,
    spatial_order,
    training_covariance,
)
from mapping.models.variogram import Variogram, sample_variogram

__all__ = [
    "KRIGED",
    "NOT_FACTORISED",
    "NO_NEIGHBOURS",
    "RESIDUAL_MODES",
    "TREND_VARIANCES",
    "InputValueError",
    "OrdinaryKriging",
    "RegressionKriging",
    "krige_residuals",
    "training_covariance",
]

RESIDUAL_MODES = ("auto", "oob", "cv", "insample")
TREND_VARIANCES = ("auto", "none", "ols", "return_std", "trees")


# =========================================================================== helpers
def _coordinates(X: Any, coord_columns: Sequence[ColumnSpec] | None) -> tuple[NDArray, list[int]]:
    """``(n, 2)`` coordinates and their column positions in ``X``."""
    n_cols = X.shape[1]
    if coord_columns is None:
        if n_cols != 2:
            raise InputValueError(
                f"X has n_features = {n_cols}; with coord_columns=None it must hold exactly "
                "the two coordinate columns (x, y)"
            )
        idx = [0, 1]
    else:
        cols = list(coord_columns)
        ints = [c for c in cols if isinstance(c, (int, np.integer)) and not isinstance(c, bool)]
        if ints and not isinstance(X, pd.DataFrame) and max(ints) >= n_cols:
            raise InputValueError(
                f"X has n_features = {n_cols}; coord_columns {tuple(cols)} need column {max(ints)}"
            )
        idx = coordinate_indices(X, coord_columns, required=True)
    sub = X.iloc[:, idx] if isinstance(X, pd.DataFrame) else X[:, idx]
    try:
        xy = np.asarray(sub, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputValueError("coordinate columns must be numeric") from None
    if not np.isfinite(xy).all():
        row = int(np.flatnonzero(~np.isfinite(xy).all(axis=1))[0])
        raise InputValueError(f"coordinates of row {row} contain NaN or infinity")
    return np.ascontiguousarray(xy), idx


def _covariates(X: Any, coord_idx: list[int]) -> Any:
    n_cols = X.shape[1]
    keep = [j for j in range(n_cols) if j not in set(coord_idx)]
    if isinstance(X, pd.DataFrame):
        return X.iloc[:, keep], keep
    return X[:, keep], keep


def _final_step(est: Any) -> Any:
    return est.steps[-1][1] if isinstance(est, Pipeline) else est


def _final_input(est: Any, X: Any) -> Any:
    """What the final step of ``est`` sees for ``X``."""
    return est[:-1].transform(X) if isinstance(est, Pipeline) else X


def _is_linear(est: Any) -> bool:
    final = _final_step(est)
    if isinstance(final, DummyRegressor):
        return final.strategy == "mean"
    return type(final).__module__.startswith("sklearn.linear_model")


def _supports_return_std(est: Any) -> bool:
    import inspect

    try:
        return "return_std" in inspect.signature(est.predict).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return False


def _is_averaging_ensemble(est: Any) -> bool:
    members = getattr(_final_step(est), "estimators_", None)
    return isinstance(members, list) and len(members) > 1 and hasattr(members[0], "predict")


# =========================================================================== OrdinaryKriging
class _CovarianceCache:
    """Holds a fitted model's training covariance matrix once built; pickles empty."""

    __slots__ = ("matrix",)

    def __init__(self) -> None:
        self.matrix: NDArray | None = None

    def __reduce__(self) -> tuple[type, tuple[()]]:
        return (_CovarianceCache, ())


class _KrigingMixin:
    """Input validation shared by the two estimators.

    A DataFrame is kept as it is (its covariates go to the trend untouched, with
    their names and dtypes); an array goes through scikit-learn's ``check_array``.
    """

    _allow_nan = False

    def __sklearn_tags__(self):  # type: ignore[no-untyped-def]
        tags = super().__sklearn_tags__()  # type: ignore[misc]
        tags.regressor_tags.poor_score = True  # random coordinates carry no signal
        tags.input_tags.allow_nan = self._allow_nan
        return tags

    def _validate(self, X: Any, y: Any = None, *, reset: bool) -> tuple[Any, Any]:
        finite: bool | str = "allow-nan" if self._allow_nan else True
        if isinstance(X, pd.DataFrame):
            if reset:
                validate_data(self, X, y, skip_check_array=True)
                y = check_array(y, ensure_2d=False, dtype="numeric", input_name="y")
                y = column_or_1d(y, warn=True).astype(float)
            else:
                validate_data(self, X, reset=False, skip_check_array=True)
            if X.shape[0] == 0:
                raise InputValueError(
                    "Found array with 0 sample(s) while a minimum of 1 is required"
                )
            return X, y
        if reset:
            X, y = validate_data(self, X, y, y_numeric=True, ensure_all_finite=finite)
            return X, np.asarray(y, dtype=float)
        return validate_data(self, X, reset=False, ensure_all_finite=finite), None


class OrdinaryKriging(_KrigingMixin, RegressorMixin, BaseEstimator):
    """Ordinary kriging of the target (constant unknown mean) as a scikit-learn estimator.

    Parameters
    ----------
    variogram
        A :class:`~mapping.models.Variogram`, or a model name (``"spherical"``,
        ``"exponential"``, ``"gaussian"``, ``"matern"``) to fit to the data at ``fit``
        (gstat's default binning and weights).
    n_neighbors
        Neighbours per prediction (gstat ``nmax``); ``None`` = global kriging.
    max_distance
        Only use data within this distance (gstat ``maxdist``).
    coord_columns
        The two coordinate columns of ``X`` (names or positions); other columns
        are ignored. ``None``: ``X`` is exactly the ``(n, 2)`` coordinates.
    cutoff, n_lags, fit_nugget, weights, nu, bound_range
        Passed to :meth:`Variogram.fit` when ``variogram`` is a name (``bound_range``:
        the practical range at most the largest lag; ``False`` = gstat's fit exactly).

    Attributes
    ----------
    variogram_ : Variogram
    sample_variogram_ : DataFrame or None
        The sample variogram the model was fitted to (``np``, ``dist``, ``gamma``).
    xy_, values_ : ndarray
        Distinct training locations (in Morton order) and their (averaged) values.
    tree_ : scipy.spatial.cKDTree
    """

    def __init__(
        self,
        variogram: str | Variogram = "spherical",
        n_neighbors: int | None = 32,
        max_distance: float | None = None,
        coord_columns: Sequence[ColumnSpec] | None = None,
        cutoff: float | None = None,
        n_lags: int = 15,
        fit_nugget: bool = True,
        weights: str = "gstat",
        nu: float = 0.5,
        bound_range: bool = True,
    ) -> None:
        self.variogram = variogram
        self.n_neighbors = n_neighbors
        self.max_distance = max_distance
        self.coord_columns = coord_columns
        self.cutoff = cutoff
        self.n_lags = n_lags
        self.fit_nugget = fit_nugget
        self.weights = weights
        self.nu = nu
        self.bound_range = bound_range

    def fit(self, X: Any, y: Any) -> OrdinaryKriging:
        """Fit the variogram (if given by name) and store the data."""
        X, z = self._validate(X, y, reset=True)
        xy, _ = _coordinates(X, self.coord_columns)
        if len(z) != len(xy):
            raise InputValueError(f"X has {len(xy)} rows but y has {len(z)} values")
        self._fit_xy(xy, z)
        return self

    def _fit_xy(self, xy: NDArray, z: NDArray) -> None:
        # distinct locations first: the kriging system and the variogram's N/h^2
        # weights both need them
        xy, z = merge_duplicates(xy, z)
        order = spatial_order(xy)
        self.xy_, self.values_ = np.ascontiguousarray(xy[order]), z[order]
        xy, z = self.xy_, self.values_
        self.sample_variogram_ = None
        if isinstance(self.variogram, Variogram):
            self.variogram_ = self.variogram
        elif isinstance(self.variogram, str):
            if len(z) < 2:
                raise InputValueError(
                    f"fitting a variogram needs at least 2 distinct locations; got "
                    f"n_samples = {len(z)}"
                )
            self.sample_variogram_ = sample_variogram(xy, z, cutoff=self.cutoff, n_lags=self.n_lags)
            self.variogram_ = Variogram.fit_sample(
                self.sample_variogram_,
                self.variogram,
                fit_nugget=self.fit_nugget,
                weights=self.weights,
                nu=self.nu,
                bound_range=getattr(self, "bound_range", True),  # models saved before it
            )
        else:
            raise ModelError(
                f"variogram must be a model name or a Variogram, got {type(self.variogram).__name__}"
            )
        self.tree_ = cKDTree(self.xy_)
        self._cov_cache = _CovarianceCache()

    def krige(self, xy: ArrayLike, *, return_status: bool = False) -> tuple[NDArray, ...]:
        """Kriging prediction and variance at ``(m, 2)`` coordinates (NumPy in and out).

        With ``return_status`` also each target's status (:func:`krige_residuals`):
        a target with no training point within ``max_distance`` and one whose system did
        not factorise both get NaN; only the status tells them apart.
        """
        check_is_fitted(self)
        return krige_residuals(
            self.xy_,
            self.values_,
            self.variogram_,
            xy,
            self.n_neighbors,
            self.max_distance,
            self.tree_,
            covariance=self._training_covariance(),
            return_status=return_status,
        )

    def _training_covariance(self) -> NDArray | None:
        # built on first use and kept for the following chunks (never pickled)
        if self.xy_.shape[0] > FULL_COV_MAX_N:
            return None
        cache = self._cov_cache
        if cache.matrix is None:
            cache.matrix = training_covariance(self.xy_, self.variogram_)
        return cache.matrix

    def predict(self, X: Any, return_std: bool = False) -> NDArray | tuple[NDArray, NDArray]:
        """Kriging prediction (and its standard deviation) at the rows of ``X``."""
        check_is_fitted(self)
        X, _ = self._validate(X, reset=False)
        xy, _ = _coordinates(X, self.coord_columns)
        pred, var = self.krige(xy)
        if return_std:
            return pred, np.sqrt(np.maximum(var, 0.0))
        return pred

    def predict_quantiles(self, X: Any, quantiles: Sequence[float] = DEFAULT_QUANTILES) -> NDArray:
        """Gaussian quantiles ``(n, len(quantiles))`` of the kriging prediction."""
        q = check_quantiles(quantiles)
        mean, std = self.predict(X, return_std=True)
        return gaussian_quantiles(mean, std, q)

    def predict_stats(
        self,
        X: Any,
        quantiles: Sequence[float] = (0.05, 0.95),
        statistics: Sequence[str] | None = None,
    ) -> dict[str, NDArray]:
        """Map statistics of the rows of ``X`` from one kriging pass (Gaussian).

        NaN where no training point is within ``max_distance`` or the kriging system
        did not factorise.
        """
        lo, hi = quantile_pair(quantiles)
        check_is_fitted(self)
        X, _ = self._validate(X, reset=False)
        xy, _ = _coordinates(X, self.coord_columns)
        pred, var = self.krige(xy)
        s2 = np.maximum(var, 0.0)
        return selected_statistics(gaussian_stats(pred, s2, s2, lo, hi, log=False), statistics)


# =========================================================================== RegressionKriging
class RegressionKriging(_KrigingMixin, RegressorMixin, BaseEstimator):
    """Regression kriging: a trend regressor plus ordinary kriging of its residuals.

    ``fit(X, y)`` takes ``X`` with the two coordinate columns (projected CRS, metres)
    and the covariates (every other column); the trend sees the covariates only.

    The model is a composition of two estimators, both parameters, so
    :func:`sklearn.base.clone`, ``get_params`` and ``set_params`` see their settings as
    ``trend__<name>`` and ``kriging__<name>`` (``kriging__n_neighbors``,
    ``kriging__variogram``, ...).

    Parameters
    ----------
    trend
        Any scikit-learn regressor; default ``LinearRegression()`` (regression
        kriging as in gstat: ordinary least squares, then kriging of its residuals).
    kriging
        The :class:`OrdinaryKriging` of the residuals (default ``OrdinaryKriging()``:
        a spherical variogram fitted to the residuals, 32 neighbours). Its
        ``variogram`` is a :class:`~mapping.models.Variogram` or a model name to fit
        (gstat's default binning and ``N_j / h_j^2`` weights); ``n_neighbors`` the
        neighbours per prediction (``None`` = global); ``max_distance`` the reach
        (gstat ``maxdist``): beyond it the prediction is the trend, with the
        residual's sill as its variance. Its ``coord_columns`` is ignored: it is given
        the coordinates of ``X``.
    coord_columns
        Names (DataFrame) or positions (array) of the x and y columns.
    residuals
        Which residuals are kriged: ``"oob"`` (out-of-bag, trends with
        ``oob_prediction_`` such as ``RandomForestRegressor(oob_score=True)``),
        ``"cv"`` (``cross_val_predict`` with ``cv`` folds), ``"insample"``
        (ordinary residuals) or ``"auto"``: ``"oob"`` when the fitted trend has
        ``oob_prediction_``, ``"insample"`` for linear models
        (``sklearn.linear_model``), ``"cv"`` otherwise. In-sample residuals of
        flexible trends are shrunk towards zero and would understate the variogram.
    trend_variance
        How the trend's uncertainty enters the prediction variance:
        ``"ols"`` (linear trend: ``s^2 x0' (X'X)^-1 x0``), ``"return_std"``
        (``trend.predict(X, return_std=True)``), ``"trees"`` (variance of the
        member predictions of an averaging ensemble), ``"none"``, or ``"auto"``:
        ``"none"`` for out-of-bag or cross-validated residuals (their variogram
        already holds the trend's error), otherwise ``"ols"`` for linear trends,
        ``"return_std"`` if supported, ``"trees"`` for forests.
    log_transform
        Model ``log(y)``; predictions are back-transformed with the lognormal
        mean ``exp(mu + sigma^2 / 2)``.
    cv
        Folds (or a splitter) for ``residuals="cv"``.

    Attributes
    ----------
    trend_ : estimator
        The fitted trend (a clone of ``trend``).
    kriging_ : OrdinaryKriging or None
        The residual kriging (a clone of ``kriging`` fitted to the residuals);
        ``None`` when the residuals are all equal.
    variogram_ : Variogram or None
    residuals_ : ndarray
        The residuals that were kriged (log scale with ``log_transform``).
    residual_mode_, trend_variance_ : str
        The resolved ``residuals`` and ``trend_variance`` choices.
    """

    def __init__(
        self,
        trend: Any = None,
        kriging: OrdinaryKriging | None = None,
        coord_columns: Sequence[ColumnSpec] = ("x", "y"),
        residuals: str = "auto",
        trend_variance: str = "auto",
        log_transform: bool = False,
        cv: Any = 5,
    ) -> None:
        self.trend = trend
        self.kriging = kriging
        self.coord_columns = coord_columns
        self.residuals = residuals
        self.trend_variance = trend_variance
        self.log_transform = log_transform
        self.cv = cv

    _KRIGING_KEYS: tuple[str, ...] = (
        *("variogram", "n_neighbors", "max_distance", "cutoff", "n_lags"),
        *("fit_nugget", "weights", "nu"),
    )

    def __setstate__(self, state: dict[str, Any]) -> None:
        # a model saved before the kriging was its own parameter kept its settings flat
        if "kriging" not in state and "variogram" in state:
            flat = {k: state.pop(k) for k in self._KRIGING_KEYS if k in state}
            state["kriging"] = OrdinaryKriging(**flat)
        super().__setstate__(state)  # type: ignore[misc]

    # ------------------------------------------------------------------ fit
    def fit(self, X: Any, y: Any) -> RegressionKriging:
        """Fit the trend, compute its residuals, fit their variogram."""
        if self.residuals not in RESIDUAL_MODES:
            raise ModelError(f"residuals must be one of {RESIDUAL_MODES}, got {self.residuals!r}")
        if self.trend_variance not in TREND_VARIANCES:
            raise ModelError(
                f"trend_variance must be one of {TREND_VARIANCES}, got {self.trend_variance!r}"
            )
        X, y = self._validate(X, y, reset=True)
        xy, cidx = _coordinates(X, self.coord_columns)
        Xc, keep = _covariates(X, cidx)
        if len(y) != len(xy):
            raise InputValueError(f"X has {len(xy)} rows but y has {len(y)} values")
        if self.log_transform:
            bad = int(np.sum(y <= 0))
            if bad:
                raise ModelError(f"log_transform needs y > 0; {bad} value(s) of y are <= 0")
            t = np.log(y)
        else:
            t = y
        if keep:
            trend = LinearRegression() if self.trend is None else clone(self.trend)
        else:
            warnings.warn(
                "X has no covariates besides the coordinates: the trend is the mean of y "
                "(ordinary kriging)",
                UserWarning,
                stacklevel=2,
            )
            trend = DummyRegressor(strategy="mean")
            Xc = np.zeros((len(t), 1))
        trend.fit(Xc, t)
        self.trend_ = trend
        mode = self._residual_mode(trend)
        self.residual_mode_ = mode
        if mode == "oob":
            fitted = self._oob_prediction(trend, len(t))
        elif mode == "cv":
            fitted = cross_val_predict(clone(trend), Xc, t, cv=self.cv)
        else:
            fitted = trend.predict(Xc)
        resid = t - np.asarray(fitted, dtype=float).ravel()
        self.residuals_ = resid
        self.trend_variance_ = self._trend_variance_mode(trend, mode)
        if self.trend_variance_ == "ols":
            self._fit_ols_variance(trend, Xc, t)
        if np.ptp(resid) == 0.0:
            warnings.warn(
                "regression kriging: all residuals are equal; nothing to krige",
                RuntimeWarning,
                stacklevel=2,
            )
            self.kriging_ = None
            self.variogram_ = None
            self.sill_ = 0.0
            return self
        if self.kriging is not None and not isinstance(self.kriging, OrdinaryKriging):
            raise ModelError(
                f"kriging must be an OrdinaryKriging, got {type(self.kriging).__name__}"
            )
        ok = OrdinaryKriging() if self.kriging is None else clone(self.kriging)
        ok.set_params(coord_columns=None).fit(xy, resid)
        self.kriging_ = ok
        self.variogram_ = ok.variogram_
        self.sill_ = ok.variogram_.sill
        return self

    def _residual_mode(self, trend: Any) -> str:
        if self.residuals != "auto":
            return self.residuals
        if getattr(_final_step(trend), "oob_prediction_", None) is not None:
            return "oob"
        if _is_linear(trend):
            return "insample"
        return "cv"

    @staticmethod
    def _oob_prediction(trend: Any, n: int) -> NDArray:
        final = _final_step(trend)
        oob = getattr(final, "oob_prediction_", None)
        if oob is None:
            raise ModelError(
                f"residuals='oob' needs a trend with oob_prediction_ (e.g. "
                f"RandomForestRegressor(oob_score=True)); {type(final).__name__} has none"
            )
        oob = np.asarray(oob, dtype=float).reshape(n, -1)[:, 0]
        samples = getattr(final, "estimators_samples_", None)
        never = ~np.isfinite(oob)
        if samples is not None:
            hits = np.zeros(n, dtype=np.int64)
            for s in samples:
                inbag = np.zeros(n, dtype=bool)
                inbag[s] = True
                hits += ~inbag
            never |= hits == 0
        if never.any():
            raise ModelError(
                f"{int(never.sum())} training point(s) were never out of bag; "
                "use more trees or residuals='cv'"
            )
        return oob

    def _trend_variance_mode(self, trend: Any, mode: str) -> str:
        tv = self.trend_variance
        if tv == "auto":
            if mode in ("oob", "cv"):
                return "none"
            if _is_linear(trend):
                return "ols"
            if _supports_return_std(trend):
                return "return_std"
            if _is_averaging_ensemble(trend):
                return "trees"
            return "none"
        if tv == "ols" and not _is_linear(trend):
            raise ModelError("trend_variance='ols' needs a linear trend (sklearn.linear_model)")
        if tv == "return_std" and not _supports_return_std(trend):
            raise ModelError(
                f"trend_variance='return_std': {type(trend).__name__}.predict has no return_std"
            )
        if tv == "trees" and not _is_averaging_ensemble(trend):
            raise ModelError(
                f"trend_variance='trees' needs an averaging ensemble; {type(trend).__name__} is not"
            )
        return tv

    def _fit_ols_variance(self, trend: Any, Xc: Any, t: NDArray) -> None:
        """``(Z'Z)^+`` and ``s^2`` of the linear trend's design, for ``s^2 z0'(Z'Z)^+ z0``."""
        Z = self._design(trend, Xc)
        resid = t - trend.predict(Xc)
        rank = np.linalg.matrix_rank(Z)
        dof = len(t) - rank
        self.ols_s2_ = float(resid @ resid / dof) if dof > 0 else np.inf
        self.ols_cov_ = np.linalg.pinv(Z.T @ Z)

    @staticmethod
    def _design(trend: Any, Xc: Any) -> NDArray:
        if isinstance(_final_step(trend), DummyRegressor):
            return np.ones((Xc.shape[0], 1))
        Z = np.asarray(_final_input(trend, Xc), dtype=float)
        if getattr(_final_step(trend), "fit_intercept", False):
            Z = np.column_stack([np.ones(len(Z)), Z])
        return Z

    # ------------------------------------------------------------------ predict
    def predict_components(self, X: Any) -> dict[str, NDArray]:
        """Trend, kriged residual and both variances at the rows of ``X``.

        Returns
        -------
        dict
            ``trend``, ``residual``, ``trend_var``, ``krige_var`` (``(n,)`` arrays, on
            the log scale when ``log_transform``). The prediction is
            ``trend + residual`` with variance ``trend_var + krige_var``.
        """
        check_is_fitted(self)
        X, _ = self._validate(X, reset=False)
        xy, cidx = _coordinates(X, self.coord_columns)
        Xc, keep = _covariates(X, cidx)
        if not keep:
            Xc = np.zeros((len(xy), 1))
        trend = np.asarray(self.trend_.predict(Xc), dtype=float).ravel()
        trend_var = self._trend_var(Xc)
        if self.kriging_ is None:
            resid = np.zeros(len(xy))
            kvar = np.zeros(len(xy))
        else:
            resid, kvar, status = self.kriging_.krige(xy, return_status=True)
            # no data within max_distance: the residual's prior mean and variance; a
            # system that did not factorise stays NaN (no prediction, counted by the map)
            none = status == NO_NEIGHBOURS
            resid[none] = 0.0
            kvar[none] = self.sill_
            kvar = np.maximum(kvar, 0.0)
        return {"trend": trend, "residual": resid, "trend_var": trend_var, "krige_var": kvar}

    def predict_stats(
        self,
        X: Any,
        quantiles: Sequence[float] = (0.05, 0.95),
        statistics: Sequence[str] | None = None,
    ) -> dict[str, NDArray]:
        """Map statistics of the rows of ``X`` from one kriging pass.

        The values :meth:`predict` (``return_std=True``) and :meth:`predict_quantiles`
        (``(lower, 0.5, upper)``) give, computed from one :meth:`predict_components`:
        normal, or lognormal with ``log_transform``. NaN at a row whose kriging system
        did not factorise.
        """
        lo, hi = quantile_pair(quantiles)
        mu, s2 = self._mu_s2(X)
        full = gaussian_stats(mu, s2, s2, lo, hi, log=self.log_transform)
        return selected_statistics(full, statistics)

    def _trend_var(self, Xc: Any) -> NDArray:
        mode = self.trend_variance_
        n = Xc.shape[0]
        if mode == "none":
            return np.zeros(n)
        if mode == "ols":
            Z = self._design(self.trend_, Xc)
            return self.ols_s2_ * np.einsum("ij,jk,ik->i", Z, self.ols_cov_, Z)
        if mode == "return_std":
            _, std = self.trend_.predict(Xc, return_std=True)
            return np.asarray(std, dtype=float).ravel() ** 2
        # "trees": spread of the members' predictions (members are fitted on arrays)
        final = _final_step(self.trend_)
        Xf = np.asarray(_final_input(self.trend_, Xc), dtype=np.float32)
        out = np.empty(n)
        for s in range(0, n, 8192):
            block = Xf[s : s + 8192]
            P = np.stack(
                [np.asarray(e.predict(block), dtype=float).ravel() for e in final.estimators_]
            )
            out[s : s + 8192] = P.var(axis=0, ddof=1)
        return out

    def predict(self, X: Any, return_std: bool = False) -> NDArray | tuple[NDArray, NDArray]:
        """Prediction (and standard deviation) at the rows of ``X``.

        With ``log_transform`` the mean is ``exp(mu + s^2/2)`` and the standard
        deviation ``mean * sqrt(exp(s^2) - 1)`` (lognormal), where ``mu`` and ``s^2``
        are the log-scale prediction and variance.
        """
        mean, std = self._mean_std(*self._mu_s2(X))
        return (mean, std) if return_std else mean

    def predict_quantiles(self, X: Any, quantiles: Sequence[float] = DEFAULT_QUANTILES) -> NDArray:
        """Quantiles ``(n, len(quantiles))`` of the Gaussian (lognormal) prediction."""
        q = check_quantiles(quantiles)
        return self._quantiles(*self._mu_s2(X), q)

    def from_components(
        self, components: dict[str, NDArray], quantiles: Sequence[float] = DEFAULT_QUANTILES
    ) -> tuple[NDArray, NDArray]:
        """:meth:`predict` and :meth:`predict_quantiles` of the rows that a
        :meth:`predict_components` result describes: the same numbers without kriging
        those rows again (a cross-validation fold needs all three)."""
        mu, s2 = _mu_s2(components)
        return self._mean_std(mu, s2)[0], self._quantiles(mu, s2, check_quantiles(quantiles))

    def _mean_std(self, mu: NDArray, s2: NDArray) -> tuple[NDArray, NDArray]:
        if self.log_transform:
            mean = np.exp(mu + 0.5 * s2)
            return mean, mean * np.sqrt(np.expm1(s2))
        return mu, np.sqrt(s2)

    def _quantiles(self, mu: NDArray, s2: NDArray, q: NDArray) -> NDArray:
        out = gaussian_quantiles(mu, np.sqrt(s2), q)
        return np.exp(out) if self.log_transform else out

    def _mu_s2(self, X: Any) -> tuple[NDArray, NDArray]:
        return _mu_s2(self.predict_components(X))


def _mu_s2(c: dict[str, NDArray]) -> tuple[NDArray, NDArray]:
    """The log-scale (or linear) prediction and its variance from the components."""
    return c["trend"] + c["residual"], np.maximum(c["trend_var"] + c["krige_var"], 0.0)
