"""One depth-consistent model of SOC stocks: depth as a covariate of layer densities.

Instead of one model per cumulative depth interval (each fitted only on the
profiles that reach its bottom), :class:`LayeredDepthModel` learns the mean
carbon density of thin harmonised layers, with the layer's top, bottom and
mid-depth as covariates, from every layer of every profile (SoilGrids 2.0
style, Poggio et al. 2021). A profile that reaches 100 cm informs the 0-100 cm
layers of the model, which the deep intervals share, so the deep maps borrow
the spatial information of the many shallow profiles. By default the density is
split into a level, the 0-30 cm density learnt from every profile and kriged, and
a shape relative to it learnt from all layers (``anchor_cm``).

Stocks of any interval ``[top, bottom]`` within the layer grid are integrals of
the predicted layer densities, the density being uniform within each layer:

* cumulative stocks are monotone in depth in every cell (densities are ``>= 0``);
* layer stocks add up to the cumulative ones (to rounding);
* any interval (0-50, 0-150 cm, ...) comes from the one fit.

Uncertainty: on the log scale, the density of layer ``l`` in a cell is
``mu_l + sd_l * Z`` with a single standard normal ``Z`` per cell shared by all
layers (the residual of a site is mostly one factor across depth, as a
profile-level random effect). The mean, the standard deviation (exact for this
model) and the quantiles of any interval follow from it, and Monte Carlo
realisations (:meth:`LayeredDepthModel.sample_stocks`) keep every
cumulative interval ordered by depth because every layer moves with the same
``Z``.

:func:`thaw_split` divides the 0-300 cm stock of a cell at its active-layer
thickness into seasonally thawed and perennially frozen storage, so that
``thawed + frozen`` is the 0-300 cm stock.

References
----------
Poggio, L. et al. (2021). SoilGrids 2.0: producing soil information for the
globe with quantified spatial uncertainty. *SOIL* 7, 217-240.
doi:10.5194/soil-7-217-2021.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import uuid
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy.stats import norm
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.model_selection import GroupKFold, cross_val_predict
from sklearn.utils.validation import check_is_fitted, has_fit_parameter

from mapping.calibration import CalibratedModel, ErrorModel
from mapping.exceptions import ModelError
from mapping.layers import (
    check_breaks,
    integrate_layers,
    layer_intervals,
    layers_from_cumulative,
    thaw_parts,
    thaw_split,
    training_layers,
)
from mapping.models import OrdinaryKriging, QuantileRandomForest
from mapping.models.base import (
    MapStatisticsMixin,
    gaussian_stats,
    quantile_pair,
    selected_statistics,
)
from mapping.models.kriging import NO_NEIGHBOURS
from mapping.units import DEFAULT_BREAKS

__all__ = [
    "DEFAULT_BREAKS",
    "CalibratedIntervalView",
    "IntervalView",
    "LayeredDepthModel",
    "ThawedView",
    "check_breaks",
    "integrate_layers",
    "layer_intervals",
    "layers_from_cumulative",
    "lognormal_moments",
    "thaw_split",
    "training_layers",
]


# --------------------------------------------------------------------------- the model
def lognormal_moments(mean: ArrayLike, std: ArrayLike) -> tuple[NDArray, NDArray]:
    """``mu`` and ``var`` of the lognormal with the given mean and standard deviation.

    ``var = ln(1 + (std / mean)^2)``, ``mu = ln(mean) - var / 2`` (Fenton-Wilkinson: a sum
    of lognormal layer stocks stood in for by one lognormal with its exact mean and
    variance). NaN where ``mean <= 0`` or either is not finite.
    """
    m = np.asarray(mean, dtype=float)
    sd = np.asarray(std, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        var = np.log1p((sd / m) ** 2)
        mu = np.log(m) - 0.5 * var
    bad = ~(np.isfinite(m) & np.isfinite(sd) & (m > 0))
    return np.where(bad, np.nan, mu), np.where(bad, np.nan, var)


def _levels(quantiles: Sequence[float]) -> NDArray:
    """Standard normal quantiles of the levels; raise ``ModelError`` unless in (0, 1)."""
    q = np.asarray(quantiles, dtype=float)
    if np.any((q <= 0) | (q >= 1)):
        raise ModelError(f"quantile levels must be in (0, 1), got {q.tolist()}")
    return np.asarray(norm.ppf(q), dtype=float)


def _default_trend(random_state: Any) -> Any:
    return QuantileRandomForest(n_estimators=200, coord_columns=None, random_state=random_state)


@dataclass(frozen=True)
class _LayerRows:
    """Training layers: covariates, coordinates, depths, target, profile index, layer index."""

    cov: pd.DataFrame
    xy: NDArray
    top: NDArray
    bottom: NDArray
    t: NDArray  # ln mean layer density (or, with a level, its ratio to the level)
    g: NDArray  # profile index 0 .. n-1
    layer: NDArray  # index of the break interval holding the layer's middle
    w: NDArray | None = None  # the profile's fit weight on each of its rows

    @property
    def width(self) -> NDArray:
        return self.bottom - self.top

    def subset(self, keep: NDArray) -> _LayerRows:
        """The rows ``keep``, profiles renumbered 0 .. n-1."""
        return _LayerRows(
            self.cov[keep].reset_index(drop=True),
            self.xy[keep],
            self.top[keep],
            self.bottom[keep],
            self.t[keep],
            pd.factorize(self.g[keep])[0],
            self.layer[keep],
            None if self.w is None else self.w[keep],
        )


def _weighted(w: NDArray | None) -> dict[str, NDArray]:
    """Keyword arguments of a regressor's fit for the weights ``w`` (none for ``None``)."""
    return {} if w is None else {"sample_weight": w}


def _layer_variance(spread: NDArray, use: NDArray, layer: NDArray, n_layers: int) -> NDArray:
    """Within-profile variance per layer: pooled, per layer where 10 rows or more inform it."""
    pooled = float(np.mean(spread[use] ** 2)) if use.any() else 0.0
    lv = np.full(n_layers, pooled)
    enough = np.array([np.sum(use & (layer == i)) >= 10 for i in range(n_layers)])
    for i in np.flatnonzero(enough):
        lv[i] = float(np.mean(spread[use & (layer == i)] ** 2))
    # below the deepest trained layer, keep the deepest estimate
    if enough.any():
        last = np.flatnonzero(enough)[-1]
        lv[last + 1 :] = lv[last]
    return lv


SHARED_LAYERS_BYTES = 256 * 2**20
"""Memory :func:`shared_layers` may hold by default: as much as an in-process run's
covariate stack (``mapping.run.stages.HELD_STACK_BYTES``)."""


@dataclass(frozen=True)
class _ChunkLayers:
    """What :meth:`LayeredDepthModel.predict_log_density` predicts for a chunk of cells:
    the trend of its top layers ``(n, k)`` and the per-cell level, kriged residual and
    kriging variance (``(n,)``; ``level`` None without an anchor)."""

    trend: NDArray
    level: NDArray | None
    resid: NDArray
    kvar: NDArray

    @property
    def nbytes(self) -> int:
        parts = (self.trend, self.level, self.resid, self.kvar)
        return sum(a.nbytes for a in parts if a is not None)


class LayerStore:
    """Chunks' predicted layers (:func:`shared_layers`), least recently used first out, up
    to ``max_bytes``. A run keeps one from its predict stage to its thaw stage, which maps
    the same chunks again."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self.lock = threading.Lock()
        self.items: OrderedDict[tuple[str, bytes], _ChunkLayers] = OrderedDict()
        self.nbytes = 0
        self.hits = 0

    def get(self, key: tuple[str, bytes]) -> _ChunkLayers | None:
        with self.lock:
            found = self.items.get(key)
            if found is not None:
                self.items.move_to_end(key)
                self.hits += 1
            return found

    def put(self, key: tuple[str, bytes], value: _ChunkLayers) -> None:
        if value.nbytes > self.max_bytes:
            return
        with self.lock:
            old = self.items.pop(key, None)
            self.nbytes += value.nbytes - (old.nbytes if old is not None else 0)
            self.items[key] = value
            while self.nbytes > self.max_bytes:
                _, dropped = self.items.popitem(last=False)
                self.nbytes -= dropped.nbytes


_SHARED: LayerStore | None = None  # set while shared_layers() is entered


@contextlib.contextmanager
def shared_layers(
    max_bytes: int = SHARED_LAYERS_BYTES, store: LayerStore | None = None
) -> Iterator[LayerStore]:
    """Within this block, fitted layered models keep the layers they predict for a chunk of
    cells, in this process, up to ``max_bytes`` (in ``store`` if given: what an earlier
    block kept).

    A run predicts its intervals one after another over the same chunks, and each interval
    needs every layer above its bottom: 0-30, 0-100, 0-200 and 0-300 cm on the default
    breaks predicted 3 + 6 + 8 + 10 = 27 layers per cell. Kept, each layer is predicted
    once per chunk (10), the deeper intervals adding only the layers below the ones kept,
    with the same values (the trend predicts each row by itself; the level and the kriging
    are per cell). Copies of one fitted model (loaded from each interval's model file)
    share what is kept. Worker processes of a cluster do not see it: their chunks are too
    large to keep and an interval's chunks go to any worker.
    """
    global _SHARED
    outer, _SHARED = _SHARED, store if store is not None else LayerStore(max_bytes)
    try:
        yield _SHARED
    finally:
        _SHARED = outer


def _cells_key(xy: NDArray, cov: pd.DataFrame) -> bytes:
    """A digest of a chunk's cells: coordinates and covariates (names, types and values;
    categories by their values)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(np.ascontiguousarray(xy, dtype=float).tobytes())
    h.update(repr([(str(c), str(t)) for c, t in cov.dtypes.items()]).encode())
    h.update(pd.util.hash_pandas_object(cov, index=False).to_numpy().tobytes())
    return h.digest()


class LayeredDepthModel(RegressorMixin, BaseEstimator):
    """Log layer density with depth as a covariate, plus kriging of profile residuals.

    ``fit(X, y)`` takes a long table, one row per profile and layer: the
    coordinates (``coord_columns``, projected metres), the layer's
    ``depth_columns`` (top and bottom, cm) and the covariates (every other
    column); ``y`` is the layer's SOC stock (kg m-2, > 0).

    The trend regressor sees the covariates plus the layer's top, bottom and
    mid-depth and learns ``ln`` of the layer's mean density (kg m-3). Its
    residuals, cross-validated with the profiles as groups, are split into a
    profile residual (thickness-weighted mean over the profile's layers) and a
    within-profile remainder. The profile residuals are kriged (ordinary
    kriging, variogram fitted to them); the remainder's variance per layer
    adds to the kriging variance.

    Parameters
    ----------
    trend
        Any scikit-learn regressor; default
        ``QuantileRandomForest(n_estimators=200, coord_columns=None)``.
        Categorical covariates must be declared on it.
    breaks
        Layer boundaries (cm) at which densities are predicted; the model
        predicts any interval inside ``[0, breaks[-1]]``. Fit it on the same
        layers (:func:`training_layers`).
    coord_columns, depth_columns
        Column names of the coordinates and of the layer top and bottom.
    krige
        Krige the profile residuals; otherwise the trend alone, with the
        residual variance as prediction variance.
    variogram, n_neighbors, cutoff, n_lags, bound_range
        Of the residual kriging (:class:`mapping.models.OrdinaryKriging`).
    cv
        Number of profile-grouped folds for the residuals.
    cv_n_estimators
        Trees of the shape's out-of-fold forests (when the trend has ``n_estimators``),
        whose residuals give only each layer's within-profile variance ``layer_var_``:
        50 estimate it as the trend's 200 do (within 10 % per layer in
        ``tests/test_depth_model.py``) at a quarter of the cost. ``None``: the trend's own.
        The level's out-of-fold residuals, which are kriged, always use the trend's.
    anchor_cm
        If given (a break; default 30), split the log density into a *level*, the
        mean density of 0-``anchor_cm`` cm learnt from every profile that covers
        it (one row per profile; its residuals are the ones kriged), and a
        *shape*, ``ln(layer density / level)``, learnt with depth as a covariate
        from all layers. The deep layers then inherit the spatial detail of the
        shallow map and only their ratio to it is learnt from deep profiles.
        ``None``: one regressor learns ``ln`` layer density from all layers and
        the profile-mean residuals are kriged (see ``docs/depth_model.md`` for the
        comparison of both forms).
    random_state
        Seed of the default trend.

    Attributes
    ----------
    trend_, level_ (the level regressor with ``anchor_cm``, else None), kriging_ (None
    without kriging), profile_residuals_ (``DataFrame``
    ``x, y, residual``), layer_var_ (``(L,)`` within-profile variance per layer),
    residual_var_ (variance of the profile residuals).
    """

    def __init__(
        self,
        trend: Any = None,
        breaks: Sequence[float] = DEFAULT_BREAKS,
        coord_columns: tuple[str, str] = ("x", "y"),
        depth_columns: tuple[str, str] = ("top_cm", "bottom_cm"),
        krige: bool = True,
        variogram: Any = "exponential",
        n_neighbors: int | None = 32,
        cutoff: float | None = None,
        n_lags: int = 15,
        bound_range: bool = True,
        cv: int = 5,
        anchor_cm: float | None = 30.0,
        random_state: int | None = None,
        cv_n_estimators: int | None = 50,
    ) -> None:
        self.trend = trend
        self.breaks = breaks
        self.coord_columns = coord_columns
        self.depth_columns = depth_columns
        self.krige = krige
        self.variogram = variogram
        self.n_neighbors = n_neighbors
        self.cutoff = cutoff
        self.n_lags = n_lags
        self.bound_range = bound_range
        self.cv = cv
        self.anchor_cm = anchor_cm
        self.random_state = random_state
        self.cv_n_estimators = cv_n_estimators

    def __setstate__(self, state: dict[str, Any]) -> None:
        # models saved before these parameters: get_params (repr, clone) needs them; the
        # out-of-fold forests as they then were, the range bound as _residual_kriging reads it
        state.setdefault("cv_n_estimators", None)
        state.setdefault("bound_range", True)
        super().__setstate__(state)  # type: ignore[misc]

    # ------------------------------------------------------------------ features
    def _split(self, X: pd.DataFrame) -> tuple[pd.DataFrame, NDArray]:
        if not isinstance(X, pd.DataFrame):
            raise ModelError("LayeredDepthModel needs X as a pandas DataFrame with named columns")
        missing = [c for c in (*self.coord_columns, *self.depth_columns) if c not in X.columns]
        if missing:
            raise ModelError(f"X has no column {missing[0]!r}")
        xy = X[list(self.coord_columns)].to_numpy(float)
        cov = X.drop(columns=[*self.coord_columns, *self.depth_columns])
        return cov, xy

    def _features(self, cov: pd.DataFrame, top: NDArray, bottom: NDArray) -> pd.DataFrame:
        f = cov.reset_index(drop=True).copy()
        f["_top_cm"] = top
        f["_bottom_cm"] = bottom
        f["_mid_cm"] = 0.5 * (top + bottom)
        return f

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        X: pd.DataFrame,
        y: ArrayLike,
        groups: ArrayLike | None = None,
        sample_weight: ArrayLike | None = None,
    ) -> LayeredDepthModel:
        """Fit the trend on all layers, then the residual kriging.

        Parameters
        ----------
        X
            Long table (one row per profile and layer): coordinates, layer top
            and bottom, covariates.
        y
            Layer SOC stocks (kg m-2), ``> 0``.
        groups
            Profile of each row (for the grouped CV and the profile
            residuals); default: rows with the same coordinates.
        sample_weight
            Weight of each row, the same on every row of a profile (``None``: equal):
            the level and the shape regressors are fitted with it, in and out of fold
            (e.g. inverse sampling-intensity weights, :func:`mapping.area_weights.area_weights`,
            so that they fit the mapped area rather than the profiles). The kriging and
            the residual variances are not weighted.
        """
        b = check_breaks(self.breaks)
        rows, y = self._layer_rows(X, y, groups, b, sample_weight)
        trend = _default_trend(self.random_state) if self.trend is None else clone(self.trend)
        if rows.w is not None and not has_fit_parameter(trend, "sample_weight"):
            raise ModelError(f"{type(trend).__name__} takes no sample_weight")
        self.level_ = None
        e = None
        if self.anchor_cm is not None:
            rows, e = self._fit_level(trend, rows, y, b)
        feats = self._features(rows.cov, rows.top, rows.bottom)
        self.trend_ = clone(trend).fit(feats, rows.t, **_weighted(rows.w))
        g = rows.g
        n_groups = int(g.max()) + 1
        folds = GroupKFold(n_splits=min(self.cv, n_groups))
        fitted = cross_val_predict(
            self._cv_trend(trend), feats, rows.t, cv=folds, groups=g, params=_weighted(rows.w)
        )
        r = rows.t - np.asarray(fitted, float)

        if e is None:
            w = rows.width
            e = np.bincount(g, weights=w * r) / np.bincount(g, weights=w)
            spread = r - e[g]
            use = np.bincount(g)[g] >= 2
        else:
            spread = r
            use = np.ones(len(r), dtype=bool)
        self.layer_var_ = _layer_variance(spread, use, rows.layer, b.size - 1)

        first = np.unique(g, return_index=True)[1]
        pxy = rows.xy[first]
        self.profile_residuals_ = pd.DataFrame({"x": pxy[:, 0], "y": pxy[:, 1], "residual": e})
        self.residual_var_ = float(np.var(e, ddof=1)) if len(e) > 1 else 0.0
        self.kriging_ = self._residual_kriging(pxy, e)
        self.n_profiles_ = n_groups
        # names this fit: copies of it (one per interval's model file) share kept layers
        self.fit_token_ = uuid.uuid4().hex
        return self

    def _cv_trend(self, trend: Any) -> Any:
        """The shape's out-of-fold regressor: the trend, with ``cv_n_estimators`` trees."""
        out = clone(trend)
        n = self.cv_n_estimators
        if n is not None and "n_estimators" in out.get_params():
            out.set_params(n_estimators=min(int(n), out.get_params()["n_estimators"]))
        return out

    def _layer_rows(
        self,
        X: pd.DataFrame,
        y: ArrayLike,
        groups: ArrayLike | None,
        b: NDArray,
        sample_weight: ArrayLike | None = None,
    ) -> tuple[_LayerRows, NDArray]:
        """The checked training layers (target ``ln`` mean layer density) and their stocks."""
        cov, xy = self._split(X)
        top = X[self.depth_columns[0]].to_numpy(float)
        bottom = X[self.depth_columns[1]].to_numpy(float)
        y = np.asarray(y, dtype=float).ravel()
        if len(y) != len(X):
            raise ModelError(f"X has {len(X)} rows but y has {len(y)} values")
        if not np.all(bottom > top) or np.any(top < 0):
            raise ModelError("every layer needs 0 <= top_cm < bottom_cm")
        if not np.all(np.isfinite(y)) or np.any(y <= 0):
            raise ModelError(
                f"layer stocks must be finite and > 0 for a log model; "
                f"{int(np.sum(~(y > 0)))} are not"
            )
        t = np.log(y * 100.0 / (bottom - top))
        g = (
            pd.factorize(pd.Series(list(map(tuple, xy))))[0]
            if groups is None
            else pd.factorize(np.asarray(groups))[0]
        )
        mid = 0.5 * (top + bottom)
        layer = np.clip(np.searchsorted(b, mid, side="right") - 1, 0, b.size - 2)
        w = None
        if sample_weight is not None:
            w = np.asarray(sample_weight, dtype=float).ravel()
            if len(w) != len(y) or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
                raise ModelError(f"sample_weight needs {len(y)} finite values >= 0, not all 0")
        return _LayerRows(cov, xy, top, bottom, t, g, layer, w), y

    def _fit_level(
        self, trend: Any, rows: _LayerRows, y: NDArray, b: NDArray
    ) -> tuple[_LayerRows, NDArray]:
        """Fit ``level_`` on the profiles that cover 0-``anchor_cm`` cm.

        Returns those profiles' layers with the shape as target (``ln`` layer density
        over the profile's 0-anchor density) and the level's out-of-fold residuals.
        """
        anchor = float(self.anchor_cm)  # type: ignore[arg-type]
        if anchor not in b:
            raise ModelError(f"anchor_cm={anchor:g} is not one of the layer breaks")
        g = rows.g
        inside = rows.bottom <= anchor
        cover = np.bincount(g, weights=np.where(inside, rows.width, 0.0))
        has = np.isclose(cover, anchor)
        if has.sum() < 3:
            raise ModelError(f"fewer than 3 profiles cover 0-{anchor:g} cm")
        anchor_density = np.bincount(g, weights=np.where(inside, y, 0.0)) * 100.0 / anchor
        rows = rows.subset(has[g])
        ln_anchor = np.log(anchor_density[has])
        first = np.unique(rows.g, return_index=True)[1]
        # the level: ln mean density of 0-anchor cm, one row per profile
        level_feats = rows.cov.iloc[first].reset_index(drop=True)
        weight = _weighted(None if rows.w is None else rows.w[first])
        self.level_ = clone(trend).fit(level_feats, ln_anchor, **weight)
        folds = GroupKFold(n_splits=min(self.cv, len(first)))
        fitted = cross_val_predict(
            clone(trend),
            level_feats,
            ln_anchor,
            cv=folds,
            groups=np.arange(len(first)),
            params=weight,
        )
        e = ln_anchor - np.asarray(fitted, float)
        # the shape: ln(layer density / the profile's 0-anchor density), depth as covariate
        return replace(rows, t=rows.t - ln_anchor[rows.g]), e

    def _residual_kriging(self, pxy: NDArray, e: NDArray) -> OrdinaryKriging | None:
        """Ordinary kriging of the profile residuals (None without kriging or structure)."""
        if not (self.krige and len(e) >= 3 and np.ptp(e) > 0):
            return None
        ok = OrdinaryKriging(
            variogram=self.variogram,
            n_neighbors=self.n_neighbors,
            cutoff=self.cutoff,
            n_lags=self.n_lags,
            bound_range=self.bound_range,
        )
        try:
            ok._fit_xy(pxy, e)
        except ModelError as exc:  # no spatial structure the variogram fit can find
            warnings.warn(
                f"profile residuals not kriged ({exc}); trend only", UserWarning, stacklevel=3
            )
            return None
        return ok

    # ------------------------------------------------------------------ predict
    def predict_log_density(
        self, X: pd.DataFrame, n_layers: int | None = None
    ) -> tuple[NDArray, NDArray]:
        """``mu`` and ``sd`` ``(n, L)`` of ``ln`` mean layer density (kg m-3) per cell.

        ``X`` holds the coordinates and covariates of the cells (depth columns,
        if present, are ignored). ``n_layers``: only the top ``n_layers`` layers
        (the same values as the first columns of all of them).
        """
        check_is_fitted(self, "trend_")
        b = check_breaks(self.breaks)
        X = X.drop(columns=[c for c in self.depth_columns if c in X.columns])
        missing = [c for c in self.coord_columns if c not in X.columns]
        if missing:
            raise ModelError(f"X has no column {missing[0]!r}")
        xy = X[list(self.coord_columns)].to_numpy(float)
        cov = X.drop(columns=list(self.coord_columns)).reset_index(drop=True)
        nl = b.size - 1 if n_layers is None else int(n_layers)
        store, token = _SHARED, getattr(self, "fit_token_", None)
        key = (token, _cells_key(xy, cov)) if store is not None and token is not None else None
        kept = store.get(key) if store is not None and key is not None else None
        if kept is None:
            kept = _ChunkLayers(self._trend_layers(cov, b, 0, nl), *self._per_cell(xy, cov))
        elif kept.trend.shape[1] < nl:  # the layers below the ones kept
            more = self._trend_layers(cov, b, kept.trend.shape[1], nl)
            kept = replace(kept, trend=np.hstack([kept.trend, more]))
        else:
            key = None  # nothing new to keep
        if store is not None and key is not None:
            store.put(key, kept)
        mu = kept.trend[:, :nl]
        if kept.level is not None:
            mu = mu + kept.level[:, None]
        mu = mu + kept.resid[:, None]
        sd = np.sqrt(kept.kvar[:, None] + self.layer_var_[None, :nl])
        return mu, sd

    def _trend_layers(self, cov: pd.DataFrame, b: NDArray, first: int, stop: int) -> NDArray:
        """The trend of layers ``first`` to ``stop - 1`` of every cell, ``(n, stop - first)``."""
        n, k = len(cov), stop - first
        rep = cov.iloc[np.tile(np.arange(n), k)]
        top = np.repeat(b[first:stop], n)
        bottom = np.repeat(b[first + 1 : stop + 1], n)
        trend = np.asarray(self.trend_.predict(self._features(rep, top, bottom)), float)
        return trend.reshape(k, n).T

    def _per_cell(self, xy: NDArray, cov: pd.DataFrame) -> tuple[NDArray | None, NDArray, NDArray]:
        """The level (None without an anchor), the kriged residual and its variance."""
        n = len(cov)
        level = None if self.level_ is None else np.asarray(self.level_.predict(cov), float)
        if self.kriging_ is not None:
            resid, kvar, status = self.kriging_.krige(xy, return_status=True)
            # no data within reach: the prior; a system that did not factorise stays NaN
            none = status == NO_NEIGHBOURS
            resid[none] = 0.0
            kvar[none] = self.kriging_.variogram_.sill
            kvar = np.maximum(kvar, 0.0)
        else:
            resid = np.zeros(n)
            kvar = np.full(n, self.residual_var_)
        return level, resid, kvar

    def _thickness_m(self) -> NDArray:
        return np.diff(check_breaks(self.breaks)) / 100.0

    def _reach(self, intervals: Sequence[tuple[float, float]]) -> int:
        """How many top layers ``intervals`` touch (the deeper ones need no prediction)."""
        used = np.flatnonzero(self._weights(intervals).any(axis=0))
        return int(used.max()) + 1 if used.size else 1

    def predict_layers(self, X: pd.DataFrame, statistic: str | float = "mean") -> NDArray:
        """Layer stocks ``(n, L)`` (kg m-2): ``"mean"``, ``"median"`` or a quantile level."""
        mu, sd = self.predict_log_density(X)
        th = self._thickness_m()
        if statistic == "mean":
            return th * np.exp(mu + 0.5 * sd**2)
        q = 0.5 if statistic == "median" else float(statistic)
        if not 0 < q < 1:
            raise ModelError(f"quantile level must be in (0, 1), got {statistic!r}")
        return th * np.exp(mu + norm.ppf(q) * sd)

    def predict_stock(
        self, X: pd.DataFrame, top: float, bottom: float, return_std: bool = False
    ) -> NDArray | tuple[NDArray, NDArray]:
        """Mean stock (kg m-2) of any interval ``[top, bottom]`` (and its std).

        The std is exact for the model's shared-factor lognormal layers:
        ``Var(sum a_l e^{s_l Z}) = sum_lm a_l a_m (e^{(s_l + s_m)^2/2} - e^{(s_l^2 + s_m^2)/2})``.
        """
        if return_std:
            mean, std = self.predict_stocks(X, [(top, bottom)], return_std=True)
            return mean[:, 0], std[:, 0]
        out = self.predict_stocks(X, [(top, bottom)])
        assert isinstance(out, np.ndarray)  # without return_std: one array
        return out[:, 0]

    def predict_stocks(
        self,
        X: pd.DataFrame,
        intervals: Sequence[tuple[float, float]],
        return_std: bool = False,
    ) -> NDArray | tuple[NDArray, NDArray]:
        """Mean stocks ``(n, K)`` of several intervals from one prediction (and stds)."""
        mu, sd = self.predict_log_density(X, self._reach(intervals))
        return self._stats(mu, sd, intervals, return_std)

    def _weights(self, intervals: Sequence[tuple[float, float]]) -> NDArray:
        """``(K, L)`` share of each layer's thickness inside each interval."""
        b = check_breaks(self.breaks)
        eye = np.eye(b.size - 1)
        return np.stack([integrate_layers(b, eye, a, c) for a, c in intervals])

    def _stats(
        self, mu: NDArray, sd: NDArray, intervals: Sequence[tuple[float, float]], return_std: bool
    ) -> NDArray | tuple[NDArray, NDArray]:
        nl = mu.shape[1]  # the top layers predicted; the intervals weigh none below
        wts = self._weights(intervals)[:, :nl]  # (K, L)
        a = self._thickness_m()[:nl] * np.exp(mu)  # (n, L)
        mean = (a * np.exp(0.5 * sd**2)) @ wts.T
        if not return_std:
            return mean
        s = sd[:, :, None] + sd[:, None, :]
        cross = np.exp(0.5 * s**2) - np.exp(0.5 * (sd[:, :, None] ** 2 + sd[:, None, :] ** 2))
        std = np.empty_like(mean)
        for k in range(wts.shape[0]):
            aw = a * wts[k]
            std[:, k] = np.sqrt(np.maximum(np.einsum("nl,nlm,nm->n", aw, cross, aw), 0.0))
        return mean, std

    def predict_stock_quantiles(
        self,
        X: pd.DataFrame,
        intervals: Sequence[tuple[float, float]],
        quantiles: Sequence[float] = (0.05, 0.5, 0.95),
    ) -> NDArray:
        """Quantiles ``(n, K, Q)`` of interval stocks.

        With one shared factor ``Z`` the stock of an interval is increasing in
        ``Z``, so its ``q``-quantile is the sum of the layers at ``Z = z_q``:
        exact, monotone in depth for every level, and additive over layers.
        """
        z = _levels(quantiles)
        mu, sd = self.predict_log_density(X, self._reach(intervals))
        return self._quantiles(mu, sd, intervals, z)

    def _quantiles(
        self, mu: NDArray, sd: NDArray, intervals: Sequence[tuple[float, float]], z: NDArray
    ) -> NDArray:
        """``(n, K, Q)``: the intervals' sums of the layers at ``Z = z`` (its top layers)."""
        nl = mu.shape[1]
        th = self._thickness_m()[:nl]
        layers = th * np.exp(mu[:, None, :] + z[None, :, None] * sd[:, None, :])  # (n, Q, L)
        return np.einsum("nql,kl->nkq", layers, self._weights(intervals)[:, :nl])

    def predict_interval_stats(
        self,
        X: pd.DataFrame,
        intervals: Sequence[tuple[float, float]],
        quantiles: Sequence[float] = (0.05, 0.5, 0.95),
    ) -> dict[str, NDArray]:
        """Everything about interval stocks from one prediction of the layer densities.

        Returns ``mean`` and ``std`` ``(n, K)`` (:meth:`predict_stocks`), ``quantiles``
        ``(n, K, Q)`` (:meth:`predict_stock_quantiles`), and ``mu``, ``var`` ``(n, K)``:
        the log-scale moments of the lognormal with the interval's mean and std
        (:func:`lognormal_moments`), the scale on which errors are calibrated.
        """
        z = _levels(quantiles)
        mu, sd = self.predict_log_density(X, self._reach(intervals))
        mean, std = self._stats(mu, sd, intervals, True)
        lmu, lvar = lognormal_moments(mean, std)
        return {
            "mean": mean,
            "std": std,
            "quantiles": self._quantiles(mu, sd, intervals, z),
            "mu": lmu,
            "var": lvar,
        }

    def sample_stocks(
        self,
        X: pd.DataFrame,
        intervals: Sequence[tuple[float, float]],
        n_realisations: int,
        random_state: int | np.random.Generator | None = None,
        z: ArrayLike | None = None,
    ) -> NDArray:
        """Monte Carlo realisations ``(R, n, K)`` of interval stocks.

        Each realisation draws one standard normal per cell (or takes ``z``,
        ``(R, n)``, e.g. a spatially correlated field from the uncertainty
        stage) shared by all layers, so cumulative intervals stay ordered by
        depth in every realisation and layers add up to them.
        """
        mu, sd = self.predict_log_density(X)
        rng = np.random.default_rng(random_state)
        zz = rng.standard_normal((n_realisations, len(mu))) if z is None else np.asarray(z, float)
        layers = self._thickness_m() * np.exp(mu[None] + zz[..., None] * sd[None])
        return layers @ self._weights(intervals).T


# --------------------------------------------------------------------------- one interval of it
class IntervalView(MapStatisticsMixin):
    """One interval ``[top, bottom]`` of a fitted :class:`LayeredDepthModel` as a map model.

    Gives what :func:`mapping.predict.predict_grid` and the uncertainty stage ask of a
    per-interval model: ``predict(X, return_std=...)``, ``predict_quantiles(X, q)``,
    ``feature_names_in_`` and the residual kriging (``kriging_``, ``variogram_``; the
    variogram is of the log 0-``anchor_cm`` density, so Monte Carlo draws are lognormal).

    Parameters
    ----------
    model
        The fitted layered model.
    top, bottom
        Interval (cm) inside the model's layers.
    features
        Columns of ``X`` at prediction: the coordinates and the covariates, in the
        order the model was fitted on.
    """

    def __init__(
        self, model: LayeredDepthModel, top: float, bottom: float, features: Sequence[str]
    ) -> None:
        b = check_breaks(model.breaks)
        if not 0 <= top < bottom <= b[-1]:
            raise ModelError(f"interval {top:g}-{bottom:g} cm is not inside 0-{b[-1]:g} cm")
        self.model = model
        self.top = float(top)
        self.bottom = float(bottom)
        self.feature_names_in_ = np.asarray(list(features), dtype=object)

    #: Stocks are lognormal: calibration, the Monte Carlo and the design work on ln(stock).
    log_transform = True

    @property
    def kriging_(self) -> Any:
        return self.model.kriging_

    @property
    def variogram_(self) -> Any:
        return None if self.model.kriging_ is None else self.model.kriging_.variogram_

    def predict(self, X: pd.DataFrame, return_std: bool = False) -> Any:
        """Mean stock of the interval (kg m-2) per row, and its std with ``return_std``."""
        return self.model.predict_stock(X, self.top, self.bottom, return_std=return_std)

    def predict_quantiles(self, X: pd.DataFrame, quantiles: Sequence[float]) -> NDArray:
        """``(n, Q)`` quantiles of the interval's stock (exact for the model)."""
        q = self.model.predict_stock_quantiles(X, [(self.top, self.bottom)], quantiles)
        return q[:, 0, :]

    def predict_components(self, X: pd.DataFrame) -> dict[str, NDArray]:
        """The interval's stock as one lognormal: ``trend`` its ``ln``-scale mean and
        ``trend_var`` its variance (:func:`lognormal_moments` of the exact mean and std;
        ``residual`` and ``krige_var`` are 0, the kriging being inside both), the form
        :class:`mapping.calibration.CalibratedModel` calibrates."""
        mean, std = self.model.predict_stocks(X, [(self.top, self.bottom)], return_std=True)
        mu, var = lognormal_moments(mean[:, 0], std[:, 0])
        zero = np.zeros_like(mu)
        return {"trend": mu, "residual": zero, "trend_var": var, "krige_var": zero}

    def predict_stats(
        self,
        X: pd.DataFrame,
        quantiles: Sequence[float] = (0.05, 0.95),
        statistics: Sequence[str] | None = None,
    ) -> dict[str, NDArray]:
        """Map statistics from one prediction of the layer densities (the values of
        ``predict(X, return_std=True)`` and ``predict_quantiles(X, (lo, 0.5, hi))``)."""
        if statistics is not None and tuple(statistics) == ("mean",):
            return {"mean": np.asarray(self.predict(X), dtype="float64").ravel()}
        lo, hi = quantile_pair(quantiles)
        s = self.model.predict_interval_stats(X, [(self.top, self.bottom)], (lo, 0.5, hi))
        q = s["quantiles"][:, 0, :]
        full = {
            "mean": s["mean"][:, 0],
            "std": s["std"][:, 0],
            "lower": q[:, 0],
            "median": q[:, 1],
            "upper": q[:, 2],
        }
        return selected_statistics(full, statistics)

    def __repr__(self) -> str:
        return f"IntervalView({self.top:g}-{self.bottom:g} cm of {self.model!r})"


def _lognormal_sd(mu: NDArray, mean_var: NDArray, v: NDArray) -> NDArray:
    """Std of the map's lognormal: mean ``exp(mu + mean_var / 2)``, ``ln`` variance ``v``
    (as :func:`~mapping.models.base.gaussian_stats` writes it)."""
    return np.exp(mu + 0.5 * mean_var) * np.sqrt(np.expm1(v))


def _lognormal_var(mu: NDArray, mean_var: NDArray, sd: NDArray, v: NDArray) -> NDArray:
    """The ``ln`` variance that gives the map's lognormal the std ``sd``; ``v`` where ``sd``
    is the std ``v`` gives (no round trip through ``log1p``)."""
    mean = np.exp(mu + 0.5 * mean_var)
    with np.errstate(divide="ignore", invalid="ignore"):
        moved = np.log1p((sd / mean) ** 2)
    return np.where(sd != _lognormal_sd(mu, mean_var, v), moved, v)


class CalibratedIntervalView(CalibratedModel):
    """Calibrated maps of one interval of a layered model, ordered in depth.

    Every interval of a layered run has an error model of its own (fitted on the
    cross-validation errors of the profiles that reach it) against one dissimilarity
    index; its calibrated ``ln``-scale variance is that of :class:`~mapping.calibration.
    CalibratedModel` on the interval's lognormal (:meth:`IntervalView.predict_components`).

    * A fitted interval: where its own error model extrapolates (a DI beyond the mean DI of
      its last bin), its excess variance (calibrated minus the model's, ``ln`` scale) is at
      least that of the shallower fitted interval with its top (itself so floored). The
      error of the 0-``anchor_cm`` level is every interval's, and a deep interval's error
      model, fitted on the few profiles that reach it (fewer of them in dissimilar land),
      underestimates it there: without this floor the 10 % most dissimilar cells of the
      world suite were covered 0.71 of the time at 0-300 cm against 0.77 at 0-30 cm
      (``docs/depth_model.md``). Within the DIs its own profiles cover, its own error model
      holds: the floor there made the deep intervals too wide (pooled PICP 0.921-0.927 at
      0-300 cm on the projected worlds of two suites, 0.903-0.916 with the floor only
      beyond, the most dissimilar cells covered alike).
      Calibrated one by one, a quantile of 0-300 cm could also fall below the same
      quantile of 0-100 cm; the stock of a deeper interval with the same top is never the
      smaller, so each quantile is the largest of the calibrated quantiles of the interval
      and of every shallower fitted interval with its top (a cumulative maximum down the
      profile); its std likewise (raised to the largest std of those intervals).
    * A fitted interval without an error model (too few CV points): the same, with no
      excess of its own (it keeps the shallower intervals' excess and order).
    * An interval that was not fitted (any depth mapped from the fit, e.g. 0-50 cm): its
      calibrated variance is its own plus the excess variance (calibrated minus the
      model's) of the fitted intervals with its top, interpolated linearly in depth
      between the two around its bottom (the nearest beyond them); each quantile is placed
      between the calibrated quantiles of those two as the model's own (uncalibrated,
      exact) quantile lies between theirs, or scaled by the ratio of the own quantiles
      above the shallowest or below the deepest. Own quantiles increase with depth, so
      every mapped interval with one top, fitted or not, stays ordered; its std is held
      between the fitted neighbours' (beyond the deepest, at least its). An interval whose
      top no fitted interval has (e.g. 30-100 cm when 0-30 ... 0-300 cm were fitted) is
      scaled as if below the deepest fitted interval with an error model, the same
      reference for all of them, so those sharing a top stay ordered too.

    The mean is the model's exact mean, unchanged.

    Parameters
    ----------
    view
        The interval of the fitted layered model.
    error_models
        ``(top, bottom)`` -> :class:`~mapping.calibration.ErrorModel` (``None``: the model's
        own variance) of the run's fitted intervals; at least one not ``None``.
    aoa
        The fitted area of applicability the error models' DI is measured by.
    keep_shallower_excess
        The floor on the excess variance above: ``"beyond"`` (the default) only where the
        interval's own error model extrapolates (a DI beyond the mean DI of its last bin, a
        missing DI, or no error model), its own excess elsewhere; ``True`` in every cell;
        ``False``: each interval's own error model alone (both for comparison).
    """

    def __init__(
        self,
        view: IntervalView,
        error_models: Mapping[tuple[float, float], ErrorModel | None],
        aoa: Any,
        *,
        keep_shallower_excess: bool | str = "beyond",
    ) -> None:
        fitted = {(float(t), float(b)): em for (t, b), em in error_models.items()}
        known = [em for em in fitted.values() if em is not None]
        if not known:
            raise ModelError("no error model to calibrate the layered model's intervals with")
        own = (view.top, view.bottom)
        super().__init__(view, fitted.get(own) or known[0], aoa)
        self.error_models = fitted
        self.keep_shallower_excess = keep_shallower_excess
        self.chain_top = view.top
        same = sorted(b for t, b in fitted if t == view.top)
        if own in fitted:
            self.kind = "fitted"
            self.bottoms = [b for b in same if b <= view.bottom]
        elif same:
            self.kind = "between"
            # the fitted intervals down to the first below it: their cumulative maximum
            # gives the neighbours' quantiles as their own maps have them
            above = [b for b in same if b > view.bottom]
            self.bottoms = [b for b in same if b < view.bottom] + above[:1]
        else:
            # No fitted interval with this top: scaled like a depth below the deepest fitted
            # interval with an error model (the same reference for every such interval, so
            # those with one top stay ordered by their own quantiles).
            self.kind = "alone"
            top, bottom = max((iv for iv, em in fitted.items() if em is not None),
                              key=lambda iv: (iv[1], -iv[0]))  # fmt: skip
            self.chain_top = top
            self.bottoms = sorted(b for t, b in fitted if t == top and b <= bottom)

    @property
    def uses_extrapolation(self) -> bool:
        """Whether an error model in use needs the cells' extrapolation distance."""
        return hasattr(self.aoa, "lower_") and any(
            em is not None and em.has_range_term for em in self.error_models.values()
        )

    def _excess(self, iv: tuple[float, float], var: NDArray, di: Any, xd: Any) -> NDArray:
        em = self.error_models.get(iv)
        return np.zeros_like(var) if em is None else em.variance(var, di, xd) - var

    def _calibrated(
        self, X: Any, levels: Sequence[float], di: Any = None, xd: Any = None
    ) -> tuple[NDArray, NDArray, NDArray, NDArray]:
        """``(mu, model var, calibrated v)`` of the interval ``(n,)`` and its calibrated
        quantiles ``(n, Q)`` at ``levels``, ordered in depth."""
        view: IntervalView = self.model
        top, own = self.chain_top, (view.top, view.bottom)
        if di is None:
            di = self.aoa.predict(X)[0]
        if not self.uses_extrapolation:
            xd = None
        elif xd is None:
            xd = self.aoa.extrapolation(X)
        z = _levels(levels)
        ivs = [(top, b) for b in self.bottoms if (top, b) != own] + [own]
        st = view.model.predict_interval_stats(X, ivs, levels)
        mu, var, raw = st["mu"], st["var"], st["quantiles"]  # (n, K), (n, K), (n, K, Q)
        # the fitted intervals of the chain, calibrated, their quantiles ordered in depth
        n_fit = len(ivs) if self.kind == "fitted" else len(ivs) - 1
        excess = np.column_stack([self._excess(ivs[j], var[:, j], di, xd) for j in range(n_fit)])
        # The level's error is every interval's: a deeper interval's error model, fitted on
        # fewer (and fewer dissimilar) profiles, must not claim less excess than a shallower one
        # Within the DIs of its own bins a deeper interval's error model holds (the floor
        # there made the deep intervals too wide); beyond them the floor holds.
        if self.keep_shallower_excess == "beyond":
            cell_di = np.asarray(di, dtype=float)
            for j in range(1, n_fit):
                em = self.error_models.get(ivs[j])
                out = np.ones(cell_di.shape, bool) if em is None else ~(cell_di <= em.knots[-1])
                excess[:, j] = np.where(
                    out, np.maximum(excess[:, j], excess[:, j - 1]), excess[:, j]
                )
        elif self.keep_shallower_excess:
            excess = np.maximum.accumulate(excess, axis=1)
        v_fit = var[:, :n_fit] + excess
        q_fit = np.exp(mu[:, :n_fit, None] + np.sqrt(v_fit)[:, :, None] * z)
        q_fit = np.maximum.accumulate(q_fit, axis=1)
        # The standard deviations too: the stock of a deeper interval with the same top is
        # the shallower one plus layers whose errors the model moves together with it, so
        # its spread is never the smaller (each interval calibrated alone could say so).
        s_fit = np.maximum.accumulate(_lognormal_sd(mu[:, :n_fit], var[:, :n_fit], v_fit), axis=1)
        if self.kind == "fitted":
            v_own = _lognormal_var(mu[:, -1], var[:, -1], s_fit[:, -1], v_fit[:, -1])
            return mu[:, -1], var[:, -1], v_own, q_fit[:, -1]
        d = view.bottom
        excess = v_fit - var[:, :n_fit]
        fitted_b = np.array([iv[1] for iv in ivs[:n_fit]])
        # fitted_b[j - 1] < d < fitted_b[j]; another top: below the reference, the deepest
        j = n_fit if self.kind == "alone" else int(np.searchsorted(fitted_b, d))
        with np.errstate(divide="ignore", invalid="ignore"):
            if 0 < j < n_fit:  # between two fitted intervals
                i = j - 1
                w = (d - fitted_b[i]) / (fitted_b[j] - fitted_b[i])
                ex = (1 - w) * excess[:, i] + w * excess[:, j]
                t = (raw[:, -1] - raw[:, i]) / (raw[:, j] - raw[:, i])
                t = np.clip(np.where(np.isfinite(t), t, w), 0.0, 1.0)
                q = q_fit[:, i] + t * (q_fit[:, j] - q_fit[:, i])
            else:  # above the shallowest or below the deepest: scaled by the own quantiles
                i = min(j, n_fit - 1)
                ex = excess[:, i]
                q = q_fit[:, i] * raw[:, -1] / raw[:, i]
        v = np.maximum(var[:, -1] + ex, 0.0)
        # its std between those of the fitted intervals around it (beyond them, on their side)
        if self.kind == "between":
            sd = _lognormal_sd(mu[:, -1], var[:, -1], v)
            if j > 0:
                sd = np.maximum(sd, s_fit[:, j - 1])
            if j < n_fit:
                sd = np.minimum(sd, s_fit[:, j])
            v = _lognormal_var(mu[:, -1], var[:, -1], sd, v)
        return mu[:, -1], var[:, -1], v, q

    def predict(self, X: Any, return_std: bool = False) -> Any:
        """The model's mean (and the calibrated standard deviation)."""
        if not return_std:
            return self.model.predict(X)
        s = self.predict_stats(X, statistics=("mean", "std"))
        return s["mean"], s["std"]

    def predict_stats(
        self,
        X: Any,
        quantiles: Sequence[float] = (0.05, 0.95),
        statistics: Sequence[str] | None = None,
        *,
        di: NDArray | None = None,
        xd: NDArray | None = None,
    ) -> dict[str, NDArray]:
        """Map statistics as :meth:`CalibratedModel.predict_stats`, the quantiles ordered
        in depth."""
        lo, hi = quantile_pair(quantiles)
        if statistics is not None and tuple(statistics) == ("mean",):
            return {"mean": np.asarray(self.model.predict(X), dtype="float64").ravel()}
        mu, var, v, q = self._calibrated(X, (lo, 0.5, hi), di, xd)
        full = gaussian_stats(mu, var, v, lo, hi, log=True)
        full.update(lower=q[:, 0], median=q[:, 1], upper=q[:, 2])
        return selected_statistics(full, statistics)

    def predict_quantiles(self, X: Any, quantiles: Sequence[float] = (0.05, 0.5, 0.95)) -> Any:
        """Quantiles ``(n, len(quantiles))``, ordered in depth."""
        return self._calibrated(X, quantiles)[3]

    def __repr__(self) -> str:
        return f"CalibratedIntervalView({self.model!r})"


class ThawedView(MapStatisticsMixin):
    """Seasonally thawed stock ``0-min(ALT, max_depth)`` of a :class:`LayeredDepthModel`.

    A map model for :func:`mapping.predict.predict_grid` (statistic ``mean`` only): ``X``
    holds ``features`` plus ``alt_column``, the active-layer thickness (cm) of each cell.
    The mean of the thawed stock is the thickness-weighted sum of the mean layer stocks
    (:func:`thaw_split`), so ``thawed + frozen`` is the ``0-max_depth`` mean. With
    ``anchors`` and ``part``, the view maps the thawed stock's part at ``anchors[part]``
    (:func:`~mapping.layers.thaw_parts`; ``anchors[-1]`` is ``max_depth``): the parts over
    all anchors add up to the thawed stock.
    """

    def __init__(
        self,
        model: LayeredDepthModel,
        features: Sequence[str],
        max_depth: float | None = None,
        alt_column: str = "active_layer_cm",
        anchors: Sequence[float] | None = None,
        part: int | None = None,
    ) -> None:
        b = check_breaks(model.breaks)
        self.model = model
        self.max_depth = float(b[-1] if max_depth is None else max_depth)
        self.alt_column = alt_column
        self.anchors = None if anchors is None else [float(a) for a in anchors]
        self.part = part
        if (part is not None and self.anchors is None) or (
            self.anchors is not None and self.anchors[-1] != self.max_depth
        ):
            raise ModelError("thawed parts need anchors ending at max_depth")
        self.feature_names_in_ = np.asarray([*features, alt_column], dtype=object)

    @property
    def extra_statistics(self) -> tuple[str, ...]:
        """Map outputs besides ``mean``: ``part0 ... part{K-1}``, the thawed stock's parts
        at ``anchors`` (:func:`~mapping.layers.thaw_parts`), all from one prediction of
        each cell's layers (:func:`mapping.predict.predict_grid`)."""
        return tuple(f"part{k}" for k in range(len(self.anchors or ())))

    def predict(self, X: pd.DataFrame) -> NDArray:
        """Mean thawed stock (kg m-2) per row (its part at ``anchors[part]``)."""
        return self.predict_stats(X, statistics=("mean",))["mean"]

    def predict_stats(
        self,
        X: pd.DataFrame,
        quantiles: Sequence[float] = (0.05, 0.95),
        statistics: Sequence[str] | None = None,
    ) -> dict[str, NDArray]:
        """``mean`` (the thawed stock, or its part at ``anchors[part]``) and the parts
        named in :attr:`extra_statistics`, per row, from one prediction of the layers."""
        wanted = tuple(statistics) if statistics is not None else ("mean",)
        unknown = [s for s in wanted if s != "mean" and s not in self.extra_statistics]
        if unknown:
            raise ModelError(f"ThawedView gives only mean and {list(self.extra_statistics)}")
        alt = X[self.alt_column].to_numpy(float)
        layers = self.model.predict_layers(X.drop(columns=[self.alt_column]))
        out: dict[str, NDArray] = {}
        if self.anchors is not None:
            parts = thaw_parts(self.model.breaks, layers, alt, self.anchors)
            out.update({f"part{k}": parts[:, k] for k in range(parts.shape[1])})
        if "mean" in wanted:
            if self.part is not None:
                out["mean"] = out[f"part{self.part}"]
            else:
                out["mean"], _ = thaw_split(
                    self.model.breaks, layers, alt, max_depth=self.max_depth
                )
        return {k: out[k] for k in wanted}
