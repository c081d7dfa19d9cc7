"""Calibrated per-cell error variance from spatial cross-validation.

A regression-kriging model's own variance (the kriging variance of its residual
variogram, plus the trend's variance where it has one) describes its error where
the profiles are: the residual variogram is fitted at the profiles, so it cannot see
how much worse the trend becomes where it extrapolates in feature space (cold,
remote, under-sampled land; covariate values beyond the sampled range). Spatial
cross-validation does see it: every held-out profile has an out-of-fold error, the
model's variance there and a dissimilarity index (DI, :mod:`mapping.aoa`) to the
training data of its fold. This module fits how much larger the squared errors are
than the model's variance as a monotone function of the DI (Meyer & Pebesma 2022's
DI-based error profiles, applied to the ratio of squared errors to the model's
variance), and applies it cell by cell::

    v(cell) = r(DI) * max(s2 - noise_var, 0)          kind="ratio" (default)
    v(cell) = max(s2 - noise_var + g(DI), 0)           kind="additive"

``s2`` is the model's variance (log scale for log models), ``r`` a non-decreasing
ratio (``g`` an additive variance) estimated in DI bins of the cross-validation
points, and ``noise_var`` the variance of an observation about its cell's value
(measurement and within-cell variation, e.g. the residual variogram's nugget): the
cross-validation errors contain it, a cell's true value does not. Beyond the largest
DI seen in cross-validation the function keeps rising along the slope of a weighted
linear fit over the bins (never falling): outside the area of applicability the
interval widens rather than staying at its last value.

The DI does not tell a gap inside the sampled covariate range from land beyond it,
where a tree trend continues flat. Cells beyond the training range (extrapolation
distance ``xd > 0``, :meth:`mapping.aoa.AreaOfApplicability.extrapolation`) get a
range term on top::

    v += min(max(b * xd**2, a * xd), max(cap - v, 0))

with ``a`` twice the slope of the observations' semivariogram in feature space
(:func:`feature_variogram_slope`: how far values drift apart with covariate distance)
and ``b`` the excess squared error of the CV points beyond their own fold's range.

Intervals are Gaussian in the model's scale (log scale for log models, then
exponentiated), with standard deviation ``sqrt(v)``.

The regional error shared by the cells of a zone, estimated from the same
cross-validation errors (:func:`regional_error_sd`, :func:`spatial_groups`), is in
:mod:`mapping.residual_errors` and importable from here too.

Everything here is pure NumPy/pandas: no file I/O and no configuration.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import norm

from mapping.exceptions import ModelError
from mapping.models.base import gaussian_stats, quantile_pair, selected_statistics
from mapping.residual_errors import regional_error_sd, spatial_groups

__all__ = [
    "CalibratedModel",
    "ErrorModel",
    "cross_fitted_coverage",
    "extrapolation_sd",
    "feature_variogram_slope",
    "fit_error_model",
    "interval_log_moments",
    "map_log_variances",
    "regional_error_sd",
    "spatial_groups",
]

KINDS = ("ratio", "additive")
EXTRAPOLATIONS = ("linear", "constant")
SHAPES = ("isotonic", "loglinear")


@dataclass(frozen=True)
class ErrorModel:
    """A fitted monotone error model: calibrated variance as a function of the DI.

    Attributes
    ----------
    kind
        ``"ratio"`` (``v = r(DI) (s2 - noise_var)``) or ``"additive"``
        (``v = s2 - noise_var + g(DI)``).
    knots
        DI at the bin centres (mean DI of each bin), increasing.
    values
        The non-decreasing ratio ``r`` (or additive variance ``g``) at the knots.
    slope
        Rise of ``r`` (``g``) per unit DI beyond the last knot (0 = constant).
    noise_var
        Variance of an observation about its cell's value, removed from the
        cross-validation errors and from the model's variance.
    n
        Number of cross-validation points used.
    counts
        Points per bin.
    raw
        The bin values before the monotone fit (for plots and reports).
    di_max
        Largest DI among the cross-validation points; beyond it the function is
        extrapolated.
    range_coef
        ``b``: variance added per squared unit of extrapolation distance ``xd`` (the
        distance beyond the training range, :meth:`mapping.aoa.AreaOfApplicability.
        extrapolation`), fitted on the CV points beyond their fold's range.
    range_linear
        ``a``: variance added per unit of ``xd``, twice the slope of the observations'
        semivariogram in feature space (:func:`feature_variogram_slope`). The range
        term is ``max(b xd², a xd)``; both 0 = no term.
    range_cap
        The range term lifts a cell's variance to at most this value.
    shared
        A second error model of the same CV points with another curve (``shared_shape``
        of :func:`fit_error_model`), or ``None``: the share of a cell's variance above
        the in-domain level that the zone totals share between cells
        (:func:`extrapolation_sd`) comes from it, the cell's own variance from this one.
    """

    kind: str
    knots: np.ndarray
    values: np.ndarray
    slope: float
    noise_var: float
    n: int
    counts: np.ndarray
    raw: np.ndarray
    di_max: float
    range_coef: float = 0.0
    range_linear: float = 0.0
    range_cap: float = float("inf")
    shared: ErrorModel | None = None

    def factor(self, di: Any) -> np.ndarray:
        """``r(DI)`` (or ``g(DI)``): linear between knots, constant below the first,
        rising with ``slope`` beyond the last. NaN where ``di`` is NaN."""
        d = np.asarray(di, dtype=float)
        out = np.interp(d, self.knots, self.values)
        beyond = d > self.knots[-1]
        out = np.where(beyond, self.values[-1] + self.slope * (d - self.knots[-1]), out)
        return np.where(np.isfinite(d), out, np.nan)

    def variance(self, model_var: Any, di: Any, xd: Any = None) -> np.ndarray:
        """Calibrated error variance of a cell's value (scale of ``model_var``).

        Parameters
        ----------
        model_var
            The model's variance at the cells (log scale for log models).
        di
            Dissimilarity index of the cells. NaN (a missing covariate, an unseen
            category) gives the largest calibrated variance of the knots and beyond:
            the DI of the largest cross-validation point plus one unit; such a cell
            is outside the area of applicability and its interval must not shrink.
        xd
            Extrapolation distance of the cells (distance beyond the training range,
            DI units). The variance grows by the range term
            ``max(range_coef xd², range_linear xd)``, up to ``range_cap``; NaN or
            ``None`` adds nothing.
        """
        s2 = np.asarray(model_var, dtype=float)
        d = np.asarray(di, dtype=float)
        d = np.where(np.isnan(d), self.di_max + 1.0, d)
        f = self.factor(d)
        base = np.maximum(s2 - self.noise_var, 0.0)
        v = f * base if self.kind == "ratio" else np.maximum(base + f, 0.0)
        return v + self.range_term(xd, v)

    def range_term(self, xd: Any, v: Any) -> np.ndarray | float:
        """Variance added beyond the training range to a cell of variance ``v``:
        ``min(max(b xd², a xd), max(cap - v, 0))``."""
        # error models saved before the term have neither attribute: no term
        b = float(getattr(self, "range_coef", 0.0))
        a = float(getattr(self, "range_linear", 0.0))
        if xd is None or not (b > 0 or a > 0):
            return 0.0
        x = np.nan_to_num(np.asarray(xd, dtype=float), nan=0.0)
        cap = float(getattr(self, "range_cap", np.inf))
        term = np.maximum(b * x**2, a * x)
        return np.minimum(term, np.maximum(cap - np.asarray(v, dtype=float), 0.0))

    @property
    def has_range_term(self) -> bool:
        """Whether cells beyond the training range get a wider interval."""
        return getattr(self, "range_coef", 0.0) > 0 or getattr(self, "range_linear", 0.0) > 0

    def std(self, model_var: Any, di: Any, xd: Any = None) -> np.ndarray:
        """``sqrt(variance(model_var, di, xd))``."""
        return np.sqrt(self.variance(model_var, di, xd))

    def quantiles(
        self,
        mu: Any,
        model_var: Any,
        di: Any,
        quantiles: Sequence[float] = (0.05, 0.95),
        *,
        log: bool = True,
        xd: Any = None,
    ) -> np.ndarray:
        """Quantiles ``(n, len(quantiles))`` of the calibrated Gaussian.

        ``mu`` and ``model_var`` are the model's mean and variance on its own scale
        (log scale when ``log``); with ``log`` the quantiles are exponentiated.
        """
        q = np.asarray(quantiles, dtype=float)
        if not np.all((q > 0) & (q < 1)):
            raise ModelError(f"quantiles must lie strictly between 0 and 1, got {list(q)}")
        sd = self.std(model_var, di, xd)
        out = np.asarray(mu, dtype=float)[..., None] + sd[..., None] * norm.ppf(q)
        return np.exp(out) if log else out

    def to_frame(self) -> pd.DataFrame:
        """The bins: ``di``, ``n``, ``raw`` and ``fitted`` values (for the report)."""
        return pd.DataFrame(
            {"di": self.knots, "n": self.counts, "raw": self.raw, "fitted": self.values}
        )


class CalibratedModel:
    """A fitted model whose standard deviation and quantiles come from an :class:`ErrorModel`.

    ``predict(X)`` is the wrapped model's mean, unchanged (so maps and zone totals do
    not move); ``predict(X, return_std=True)`` and ``predict_quantiles`` use the
    calibrated variance ``error_model.variance(s2, DI)`` with the DI from ``aoa``.
    For log models (``RegressionKriging(log_transform=True)``) ``mu`` and ``s2`` are
    the log-scale prediction and variance (``predict_components``); the standard
    deviation is the lognormal one about the model's mean, ``mean * sqrt(exp(v) - 1)``,
    and the quantiles ``exp(mu + z sqrt(v))``. Other models give ``(mean, std)`` on the
    original scale. It has the prediction interface of the socmap models
    (``feature_names_in_``, ``predict``, ``predict_quantiles``, ``predict_stats``), so it
    can be passed to :func:`mapping.predict.predict_grid` in place of the model.

    Parameters
    ----------
    model
        The fitted model (on all profiles).
    error_model
        From :func:`fit_error_model` on the model's cross-validation.
    aoa
        Fitted :class:`mapping.aoa.AreaOfApplicability` (``predict(X) -> (di, inside)``),
        fitted with the same CV folds.
    """

    def __init__(self, model: Any, error_model: ErrorModel, aoa: Any) -> None:
        self.model = model
        self.error_model = error_model
        self.aoa = aoa

    @property
    def log_transform(self) -> bool:
        """Whether the model works on log values."""
        return bool(getattr(self.model, "log_transform", False))

    def __getattr__(self, name: str) -> Any:
        # feature_names_in_, n_features_in_ and the CRS of its coordinates: the wrapped model's
        model = self.__dict__.get("model")
        if model is not None and name in ("feature_names_in_", "n_features_in_", "coordinate_crs_"):
            return getattr(model, name)
        raise AttributeError(name)

    @property
    def uses_extrapolation(self) -> bool:
        """Whether the calibrated variance needs the cells' extrapolation distance."""
        return bool(self.error_model.has_range_term and hasattr(self.aoa, "lower_"))

    def _moments(
        self, X: Any, di: np.ndarray | None = None, xd: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(mean on the model's scale, model variance, calibrated variance)``; ``di`` and
        ``xd``, when given, are ``self.aoa.predict(X)[0]`` and ``self.aoa.extrapolation(X)``
        computed by the caller (``self.aoa.measure(X)`` gives both from one encoding)."""
        if hasattr(self.model, "predict_components"):
            c = self.model.predict_components(X)
            mu = c["trend"] + c["residual"]
            s2 = np.maximum(c["trend_var"] + c["krige_var"], 0.0)
        else:
            mu, sd = self.model.predict(X, return_std=True)
            mu, s2 = np.asarray(mu, dtype=float), np.asarray(sd, dtype=float) ** 2
        if di is None:
            di = self.aoa.predict(X)[0]
        di = np.asarray(di, dtype=float)
        if not self.uses_extrapolation:
            xd = None
        elif xd is None:
            xd = self.aoa.extrapolation(X)
        return mu, s2, self.error_model.variance(s2, di, xd)

    def predict(self, X: Any, return_std: bool = False) -> Any:
        """The model's mean (and the calibrated standard deviation)."""
        if not return_std:
            return self.model.predict(X)
        mu, s2, v = self._moments(X)
        if self.log_transform:
            mean = np.exp(mu + 0.5 * s2)
            return mean, mean * np.sqrt(np.expm1(v))
        return mu, np.sqrt(v)

    def predict_stats(
        self,
        X: Any,
        quantiles: Sequence[float] = (0.05, 0.95),
        statistics: Sequence[str] | None = None,
        *,
        di: np.ndarray | None = None,
        xd: np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        """Map statistics (``mean``, ``std``, ``lower``, ``median``, ``upper``, or the
        subset ``statistics``) from one pass of the model and of the DI.

        The same values as ``predict(X, return_std=True)`` and
        ``predict_quantiles(X, (lower, 0.5, upper))``; the mean alone is the wrapped
        model's ``predict(X)``. ``di`` (and ``xd``): the DI (and extrapolation distance)
        of the rows of ``X`` by ``self.aoa``, when the caller has it already (the map's
        AOA layer), so it is not searched twice.
        """
        lo, hi = quantile_pair(quantiles)
        if statistics is not None and tuple(statistics) == ("mean",):
            return {"mean": np.asarray(self.model.predict(X), dtype="float64").ravel()}
        mu, s2, v = self._moments(X, di, xd)
        full = gaussian_stats(mu, s2, v, lo, hi, log=self.log_transform)
        return selected_statistics(full, statistics)

    def predict_quantiles(self, X: Any, quantiles: Sequence[float] = (0.05, 0.5, 0.95)) -> Any:
        """Quantiles ``(n, len(quantiles))`` of the calibrated Gaussian (lognormal)."""
        mu, _, v = self._moments(X)
        q = np.asarray(quantiles, dtype=float)
        if not np.all((q > 0) & (q < 1)):
            raise ModelError(f"quantiles must lie strictly between 0 and 1, got {list(q)}")
        out = mu[:, None] + np.sqrt(v)[:, None] * norm.ppf(q)
        return np.exp(out) if self.log_transform else out


def _pava(y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted least-squares non-decreasing fit (pool adjacent violators)."""
    vals: list[float] = []
    wts: list[float] = []
    sizes: list[int] = []
    for yi, wi in zip(y.tolist(), w.tolist(), strict=True):
        vals.append(yi)
        wts.append(wi)
        sizes.append(1)
        while len(vals) > 1 and vals[-2] > vals[-1]:
            wsum = wts[-2] + wts[-1]
            v = (vals[-2] * wts[-2] + vals[-1] * wts[-1]) / wsum
            vals[-2:] = [v]
            wts[-2:] = [wsum]
            sizes[-2:] = [sizes[-2] + sizes[-1]]
    return np.repeat(vals, sizes)


def fit_error_model(
    errors: Any,
    model_var: Any,
    di: Any,
    *,
    kind: str = "ratio",
    noise_var: float = 0.0,
    min_per_bin: int = 30,
    max_bins: int = 10,
    extrapolate: str = "linear",
    floor: float = 0.0,
    xd: Any = None,
    observed_var: float | None = None,
    range_slope: float | None = None,
    range_extrapolation: bool = True,
    range_cap: float | None = 8.0,
    min_beyond: int = 5,
    weights: Any = None,
    shape: str = "isotonic",
    shared_shape: str | None = None,
) -> ErrorModel:
    """Fit the calibrated variance as a non-decreasing function of the DI.

    Parameters
    ----------
    errors
        Out-of-fold errors at the held-out profiles, ``prediction - observation``
        on the model's scale (``ln`` for log models: ``mu - ln(observed)``).
    model_var
        The fold model's variance at the same profiles (same scale).
    di
        Cross-validated dissimilarity index of the same profiles (the DI to the
        training data of their fold: ``AreaOfApplicability.train_di_`` fitted with
        the CV folds).
    kind
        ``"ratio"``: ``r = sum(e^2 - noise_var) / sum(s2 - noise_var)`` per bin;
        ``"additive"``: ``g = mean(e^2 - s2)`` per bin.
    noise_var
        Variance of an observation about its cell's value (the residual
        variogram's nugget is an estimate); 0 calibrates to observations.
    min_per_bin, max_bins
        The CV points are cut into ``clip(n // min_per_bin, 1, max_bins)`` bins of
        equal counts along the DI.
    extrapolate
        ``"linear"`` (beyond the last bin, rise along the non-negative slope of a
        weighted least-squares line through the bins) or ``"constant"``.
    floor
        Smallest value of the ratio (of ``g``, for additive: applied to ``s2 + g``
        through the variance's clip at zero).
    xd
        Cross-validated extrapolation distance of the same points (their distance
        beyond the range of their fold's training data,
        ``AreaOfApplicability.train_xd_``). With ``range_extrapolation`` and at least
        ``min_beyond`` points beyond the range, the error growth there is fitted:
        ``b = max(0, sum(e² - v) / sum(xd²))`` over those points, ``v`` the DI model's
        variance (the range term of :meth:`ErrorModel.variance`).
    observed_var
        Variance of the observations on the model's scale (``ln`` for log models);
        with ``range_cap`` it caps the range term at ``range_cap * observed_var``.
        ``None``: no cap.
    range_slope
        Slope of the observations' semivariogram against their distance in feature
        space, in DI units (:func:`feature_variogram_slope`): the range term is at
        least ``2 range_slope xd``, the variance of the change of a random function
        with that variogram over the distance ``xd`` beyond the range.
    range_extrapolation
        Fit the range term (``xd`` for the CV part, ``range_slope`` for the other).
    range_cap
        Multiple of ``observed_var`` the range term may lift a variance to
        (``None``: no cap).
    min_beyond
        Fewest points beyond their fold's range for a range term.
    weights
        One non-negative weight per CV point (e.g. the CV's weights to the mapped area,
        :func:`mapping.area_weights.area_weights`): the sums of every bin and of the
        range term are weighted. ``None``: every point counts once.
    shape
        ``"isotonic"``: the bins' values made non-decreasing (pool adjacent violators),
        one free step per bin; ``"loglinear"`` (``kind="ratio"`` only): a smooth
        ``r(DI) = c exp(beta DI)``, ``beta >= 0`` the weighted least-squares slope of the
        bins' ``ln`` ratios against their DI and ``c`` such that ``r`` times the model's
        variance sums to the squared errors over all points (the ratio of sums the bins
        use); beyond the last bin it rises along its tangent. Two parameters from every
        point instead of one per bin: where the cells' DI falls between the bins no longer
        decides their excess variance (:func:`extrapolation_sd`).
    shared_shape
        Another ``shape`` for the excess over the in-domain level alone: the same points
        fitted with it are kept as :attr:`ErrorModel.shared`, which
        :func:`extrapolation_sd` uses, while the cells' variance stays this shape's.
        ``None`` or ``shape``: no second curve.

    Returns
    -------
    ErrorModel

    Raises
    ------
    ModelError
        Fewer than ``min_per_bin`` usable points, mismatched lengths, an unknown
        ``kind`` or ``extrapolate``.
    """
    if kind not in KINDS:
        raise ModelError(f"kind must be one of {KINDS}, got {kind!r}")
    if extrapolate not in EXTRAPOLATIONS:
        raise ModelError(f"extrapolate must be one of {EXTRAPOLATIONS}, got {extrapolate!r}")
    if shape not in SHAPES:
        raise ModelError(f"shape must be one of {SHAPES}, got {shape!r}")
    if shape == "loglinear" and kind != "ratio":
        raise ModelError("shape 'loglinear' needs kind 'ratio'")
    if shared_shape is not None and shared_shape != shape:
        # the same points fitted twice, once per curve; every other option as given
        same = dict(
            kind=kind, noise_var=noise_var, min_per_bin=min_per_bin, max_bins=max_bins,
            extrapolate=extrapolate, floor=floor, xd=xd, observed_var=observed_var,
            range_slope=range_slope, range_extrapolation=range_extrapolation,
            range_cap=range_cap, min_beyond=min_beyond, weights=weights,
        )  # fmt: skip
        em = fit_error_model(errors, model_var, di, shape=shape, **same)
        curve = fit_error_model(errors, model_var, di, shape=shared_shape, **same)
        return dataclasses.replace(em, shared=curve)
    if not noise_var >= 0:
        raise ModelError(f"noise_var must be >= 0, got {noise_var!r}")
    e, s2, d, x, w = _cv_points(errors, model_var, di, xd, min_per_bin, weights)
    n = int(e.size)
    n_bins = int(np.clip(n // min_per_bin, 1, max_bins))
    knots, raw, counts = _binned_excess(e, s2, d, kind, noise_var, n_bins, w)
    if kind == "ratio":
        if not np.isfinite(raw).all():
            raise ModelError("the model's variance is not above noise_var in a DI bin")
        raw_fit = np.maximum(raw, floor)
    else:
        raw_fit = raw
    slope = 0.0
    if shape == "loglinear":
        values, tangent = _loglinear(knots, raw, counts.astype(float), e, s2, d, w, noise_var)
        values = np.maximum(values, floor)
        if extrapolate == "linear":
            slope = tangent
    else:
        values = _pava(raw_fit, counts.astype(float))
        if extrapolate == "linear" and n_bins >= 2 and np.ptp(knots) > 0:
            slope = _rising_slope(knots, values, counts.astype(float))
    # duplicate knots (ties in DI) would break np.interp's ordering: nudge them apart
    knots = np.maximum.accumulate(knots + np.arange(n_bins) * 1e-12)
    em = ErrorModel(
        kind=kind,
        knots=knots,
        values=values,
        slope=slope,
        noise_var=float(noise_var),
        n=n,
        counts=counts,
        raw=raw,
        di_max=float(d[-1]),
    )
    if not range_extrapolation:
        return em
    # the excess over the DI part, which is fitted on all points (on the points inside
    # their fold's range alone its bins lose the largest errors at high DI)
    coef = 0.0
    out = np.isfinite(x) & (x > 0)
    if out.sum() >= max(int(min_beyond), 1):
        v = em.variance(s2[out], d[out])
        coef = float(max(np.sum(w[out] * (e[out] ** 2 - v)) / np.sum(w[out] * x[out] ** 2), 0.0))
    linear = 0.0
    if range_slope is not None and np.isfinite(range_slope):
        linear = 2.0 * max(float(range_slope), 0.0)
    cap = np.inf
    if range_cap is not None and observed_var is not None and np.isfinite(observed_var):
        cap = float(range_cap) * float(observed_var)
    return dataclasses.replace(em, range_coef=coef, range_linear=linear, range_cap=cap)


def _cv_points(
    errors: Any, model_var: Any, di: Any, xd: Any, min_per_bin: int, weights: Any = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Errors, variances, DIs, extrapolation distances and weights of the usable CV
    points, sorted by DI."""
    e = np.asarray(errors, dtype=float).ravel()
    s2 = np.asarray(model_var, dtype=float).ravel()
    d = np.asarray(di, dtype=float).ravel()
    if not e.size == s2.size == d.size:
        raise ModelError(f"errors, model_var and di have {e.size}, {s2.size} and {d.size} values")
    x = np.zeros(e.size) if xd is None else np.asarray(xd, dtype=float).ravel()
    if x.size != e.size:
        raise ModelError(f"xd has {x.size} values for {e.size} errors")
    w = np.ones(e.size) if weights is None else np.asarray(weights, dtype=float).ravel()
    if w.size != e.size:
        raise ModelError(f"weights has {w.size} values for {e.size} errors")
    ok = np.isfinite(e) & np.isfinite(s2) & np.isfinite(d) & np.isfinite(w) & (w >= 0)
    e, s2, d, x, w = e[ok], s2[ok], d[ok], x[ok], w[ok]
    n = int(e.size)
    if n < max(min_per_bin, 2):
        raise ModelError(
            f"the error model needs at least {max(min_per_bin, 2)} cross-validated points "
            f"with an error, a variance and a DI; got {n}"
        )
    order = np.argsort(d, kind="stable")
    return e[order], s2[order], d[order], x[order], w[order]


def _binned_excess(
    e: np.ndarray,
    s2: np.ndarray,
    d: np.ndarray,
    kind: str,
    noise_var: float,
    n_bins: int,
    w: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean DI, raw ratio (or additive excess) and count of ``n_bins`` equal-count DI bins;
    the ratio's sums and the excess's mean weighted by ``w`` (ones: the same numbers as
    without weights, to the bit)."""
    n = e.size
    w = np.ones(n) if w is None else w
    edges = np.linspace(0, n, n_bins + 1).round().astype(int)
    knots = np.empty(n_bins)
    raw = np.empty(n_bins)
    base = np.maximum(s2 - noise_var, 0.0)
    for b in range(n_bins):
        sl = slice(edges[b], edges[b + 1])
        knots[b] = d[sl].mean()
        wb = w[sl]
        if kind == "ratio":
            den = np.sum(wb * base[sl])
            raw[b] = np.sum(wb * (e[sl] ** 2 - noise_var)) / den if den > 0 else np.inf
        else:
            total = np.sum(wb)
            raw[b] = np.sum(wb * (e[sl] ** 2 - s2[sl])) / total if total > 0 else 0.0
    return knots, raw, np.diff(edges)


def _loglinear(
    knots: np.ndarray,
    raw: np.ndarray,
    counts: np.ndarray,
    e: np.ndarray,
    s2: np.ndarray,
    d: np.ndarray,
    w: np.ndarray,
    noise_var: float,
) -> tuple[np.ndarray, float]:
    """``r(DI) = c exp(beta (DI - knots[0]))`` at the knots, and its tangent's slope at the last.

    ``beta``: the non-negative weighted (by ``counts``) least-squares slope of the bins'
    ``ln`` ratios against their DI (bins with a ratio <= 0 left out; none or one bin: 0);
    ``c``: ``sum w (e² - noise_var) / sum w f(d) (s2 - noise_var)`` over all points, ``f``
    the unit curve as the error model applies it, so that the fit keeps the ratio of sums
    of the bins (``ln`` of a ratio is not its mean: a level from the regression would be
    biased low).
    """
    ok = np.isfinite(raw) & (raw > 0)
    beta = 0.0
    if ok.sum() >= 2 and np.ptp(knots[ok]) > 0:
        beta = _rising_slope(knots[ok], np.log(raw[ok]), counts[ok])
    # the curve as the error model applies it (linear between the knots, constant below
    # the first, the tangent beyond the last), to scale: not the exponential at every
    # point, which a few points far beyond the last bin would dominate
    unit = np.exp(beta * (knots - knots[0]))
    tangent = beta * unit[-1]
    grow = np.interp(d, knots, unit)
    grow = np.where(d > knots[-1], unit[-1] + tangent * (d - knots[-1]), grow)
    den = float(np.sum(w * grow * np.maximum(s2 - noise_var, 0.0)))
    num = float(np.sum(w * (e**2 - noise_var)))
    if not den > 0:
        raise ModelError("the model's variance is not above noise_var at the CV points")
    level = max(num / den, 0.0)
    return level * unit, float(level * tangent)


def _rising_slope(knots: np.ndarray, values: np.ndarray, w: np.ndarray) -> float:
    """Non-negative slope of the weighted least-squares line through the bins."""
    xm = np.average(knots, weights=w)
    ym = np.average(values, weights=w)
    return float(max(np.sum(w * (knots - xm) * (values - ym)) / np.sum(w * (knots - xm) ** 2), 0.0))


def feature_variogram_slope(
    T: Any,
    y: Any,
    *,
    unit: float = 1.0,
    n_bins: int = 15,
    h_quantile: float = 0.2,
    max_points: int = 2000,
    random_state: int | None = 0,
) -> float:
    """Slope of a linear semivariogram of ``y`` against distance in feature space.

    ``gamma(h) = c0 + c1 h`` is fitted by least squares to the mean semivariance
    ``(y_i - y_j)² / 2`` of the pairs of rows in ``n_bins`` bins of equal counts of
    their distance ``h = |T_i - T_j| / unit``, up to the ``h_quantile`` of all pair
    distances; ``c1`` is returned. With ``T`` the standardised, weighted covariates of
    the DI (:meth:`mapping.aoa.AreaOfApplicability.transform`) and ``unit`` its mean
    distance, ``h`` is in DI units: ``c1`` says how fast the observed values drift
    apart with covariate distance. ``c0`` (noise and short-range variation) is left
    out. At most ``max_points`` rows (a seeded random subset) are used.

    Returns
    -------
    float
        ``c1`` (may be negative or NaN with too few distinct pairs).
    """
    from scipy.spatial.distance import pdist

    Z = np.asarray(T, dtype=float)
    v = np.asarray(y, dtype=float).ravel()
    if Z.ndim != 2 or len(Z) != v.size:
        raise ModelError(f"T must have one row per value, got {Z.shape} for {v.size} values")
    ok = np.isfinite(Z).all(axis=1) & np.isfinite(v)
    Z, v = Z[ok], v[ok]
    if len(Z) > max_points:
        keep = np.random.default_rng(random_state).choice(len(Z), max_points, replace=False)
        Z, v = Z[keep], v[keep]
    if len(Z) < 3 or not unit > 0:
        return float("nan")
    h = pdist(Z) / unit
    g = 0.5 * pdist(v[:, None], "sqeuclidean")
    near = h <= np.quantile(h, h_quantile)
    h, g = h[near], g[near]
    order = np.argsort(h, kind="stable")
    parts = [p for p in np.array_split(order, min(n_bins, h.size)) if p.size]
    hb = np.array([h[p].mean() for p in parts])
    gb = np.array([g[p].mean() for p in parts])
    if len(hb) < 2 or not np.ptp(hb) > 0:
        return float("nan")
    return float(np.polyfit(hb, gb, 1)[0])


def interval_log_moments(
    lower: Any, upper: Any, quantiles: tuple[float, float] = (0.05, 0.95), *, log: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of a Gaussian (lognormal) model recovered from its interval.

    A regression-kriging model's interval ``(lower, upper)`` at levels
    ``quantiles`` is ``mu + z_q s`` (exponentiated for log models), so
    ``mu = (a + b) / 2`` and ``s = (b - a) / (z_hi - z_lo)`` with ``a, b`` the
    (log) bounds: the cross-validation table (``lower``, ``upper`` columns) is
    enough to fit :func:`fit_error_model` without refitting the fold models.

    Returns
    -------
    mu, variance : ndarray
        On the log scale when ``log``.
    """
    lo = np.asarray(lower, dtype=float)
    hi = np.asarray(upper, dtype=float)
    if log:
        with np.errstate(divide="ignore", invalid="ignore"):
            lo, hi = np.log(lo), np.log(hi)
    z_lo, z_hi = norm.ppf(quantiles[0]), norm.ppf(quantiles[1])
    if not z_hi > z_lo:
        raise ModelError(f"quantiles must be increasing, got {quantiles}")
    mu = (z_hi * lo - z_lo * hi) / (z_hi - z_lo)
    s = (hi - lo) / (z_hi - z_lo)
    return mu, s**2


def map_log_variances(mean: Any, median: Any, std: Any) -> tuple[np.ndarray, np.ndarray]:
    """A log model's ``ln``-scale variances from its mean, median and std maps: the
    calibrated ``v = ln(1 + (std / mean)²)`` and the model's own ``s2 = max(2 ln(mean /
    median), 0)`` (its mean is ``exp(mu + s2 / 2)``, its median ``exp(mu)``). Pure NumPy,
    any shape; NaN where a map has no value."""
    m = np.asarray(mean, dtype="float64")
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        v = np.log1p((np.asarray(std, dtype="float64") / m) ** 2)
        s2 = np.maximum(2.0 * np.log(m / np.asarray(median, dtype="float64")), 0.0)
    return v, s2


def extrapolation_sd(
    mean: Any, median: Any, std: Any, error_model: ErrorModel, di_in: float, di: Any = None
) -> np.ndarray:
    """Per cell, the ``ln``-scale sd of a log model's calibrated error above what its error
    model gives a cell inside the training data's domain.

    A log model's maps hold its ``ln``-scale variances: the model's own
    ``s2 = 2 ln(mean / median)`` (its mean is ``exp(mu + s2 / 2)``, its median ``exp(mu)``)
    and the calibrated ``v = ln(1 + (std / mean)²)``. A cell at the reference DI ``di_in``
    (the median DI of the training points in cross-validation) would have the calibrated
    variance ``v_in = error_model.variance(s2, di_in)``; the excess ``max(v - v_in, 0)`` is
    the error the error model adds because the cell is dissimilar to the training data
    (its ``r(DI)`` above the in-domain ratio, and its range term). That error is the
    trend's, learnt from the same profiles for every cell, so the Monte Carlo of the zone
    totals shares it between cells (``uncertainty.shared: extrapolation``,
    ``docs/uncertainty.md``). Pure NumPy, any shape; 0 where a map has no value.

    With a second curve (:attr:`ErrorModel.shared`) and the cells' DI ``di`` (the run's
    ``di`` map), the DI's part of the excess comes from that curve,
    ``shared.variance(s2, di) - shared.variance(s2, di_in)``, and the range term (what the
    map holds above ``error_model.variance(s2, di)``) is added as it is: the cells keep
    their own calibrated variance, and the error they share no longer depends on where
    the steps of an isotonic error model fall.
    """
    curve = getattr(error_model, "shared", None)  # error models saved before: none
    v, s2 = map_log_variances(mean, median, std)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if curve is not None and di is not None:
            d = np.asarray(di, dtype="float64")
            beyond = np.maximum(v - error_model.variance(s2, d), 0.0)  # the range term
            rise = curve.variance(s2, d) - curve.variance(s2, float(di_in))
            x2 = beyond + np.maximum(rise, 0.0)
        else:
            x2 = np.maximum(v - error_model.variance(s2, float(di_in)), 0.0)
    return np.where(np.isfinite(x2), np.sqrt(x2), 0.0)


def cross_fitted_coverage(
    errors: Any,
    model_var: Any,
    di: Any,
    folds: Any,
    *,
    levels: Sequence[float] = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95),
    level: float = 0.9,
    n_bins: int = 10,
    xd: Any = None,
    **fit_kwargs: Any,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Coverage of the calibrated intervals at the CV points, with the error model cross-fitted.

    For each fold the error model is fitted on the other folds' errors
    (:func:`fit_error_model` with ``fit_kwargs``) and scores the held-out fold's
    standardised errors ``z = e / sqrt(v)``: a point is covered at level ``p`` when
    ``|z| <= Phi^-1((1 + p) / 2)``. Folds whose training part is too small for an
    error model are left out.

    Returns
    -------
    reliability : DataFrame
        ``nominal``, ``observed`` (share covered), ``observed_model`` (the model's own
        variance, uncalibrated) per level in ``levels``.
    by_di : DataFrame
        ``di_low``, ``di_high``, ``n``, ``observed``, ``observed_model`` at ``level`` in
        ``n_bins`` bins of equal counts along the DI.
    """
    e = np.asarray(errors, dtype=float).ravel()
    s2 = np.asarray(model_var, dtype=float).ravel()
    d = np.asarray(di, dtype=float).ravel()
    f = np.asarray(folds).ravel()
    x = None if xd is None else np.asarray(xd, dtype=float).ravel()
    ok = np.isfinite(e) & np.isfinite(s2) & np.isfinite(d) & (f >= 0) & (s2 > 0)
    z = np.full(e.size, np.nan)
    for k in np.unique(f[ok]):
        test = ok & (f == k)
        train = ok & (f != k)
        try:
            em = fit_error_model(
                e[train], s2[train], d[train], xd=None if x is None else x[train], **fit_kwargs
            )
        except ModelError:
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            z[test] = e[test] / em.std(s2[test], d[test], None if x is None else x[test])
    scored = np.isfinite(z) | (ok & np.isinf(z))
    z0 = np.where(ok, e / np.sqrt(np.where(s2 > 0, s2, np.nan)), np.nan)
    za, z0a, da = np.abs(z[scored]), np.abs(z0[scored]), d[scored]
    half = [float(norm.ppf(0.5 + p / 2)) for p in levels]
    reliability = pd.DataFrame(
        {
            "nominal": list(levels),
            "observed": [float(np.mean(za <= h)) if za.size else np.nan for h in half],
            "observed_model": [float(np.mean(z0a <= h)) if za.size else np.nan for h in half],
        }
    )
    h = float(norm.ppf(0.5 + level / 2))
    rows = []
    if za.size:
        order = np.argsort(da, kind="stable")
        for idx in np.array_split(order, min(n_bins, za.size)):
            rows.append(
                {
                    "di_low": float(da[idx].min()),
                    "di_high": float(da[idx].max()),
                    "n": int(idx.size),
                    "observed": float(np.mean(za[idx] <= h)),
                    "observed_model": float(np.mean(z0a[idx] <= h)),
                }
            )
    return reliability, pd.DataFrame(
        rows, columns=["di_low", "di_high", "n", "observed", "observed_model"]
    )
