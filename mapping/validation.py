"""Cross-validation for maps: metrics, a CV driver and the fit stage's work.

:func:`metrics_table` computes R², RMSE, MAE, MBE, NSE, NNSE and interval
coverage; :func:`cross_validate_model` runs a model through a splitter and
returns the out-of-fold predictions, intervals and metrics (:class:`CVResult`);
:func:`fit_interval` cross-validates and fits one depth interval's model, its
area of applicability and error model (:class:`IntervalFit`).

The splitters (:class:`RandomKFold`, :class:`SpatialBlockKFold`, :class:`KNNDM`,
:func:`make_splitter`) live in :mod:`mapping.splitters` and are importable from here too.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.model_selection import BaseCrossValidator

from mapping.aoa import AreaOfApplicability
from mapping.area_weights import area_weights, effective_size
from mapping.calibration import (
    ErrorModel,
    feature_variogram_slope,
    fit_error_model,
    interval_log_moments,
)
from mapping.cv_bootstrap import MIN_BLOCKS, block_bootstrap_rmse, block_ids
from mapping.exceptions import ModelError
from mapping.splitters import (
    KNNDM,
    KNNDMResult,
    RandomKFold,
    SpatialBlockKFold,
    cv_distances,
    make_splitter,
)

__all__ = [
    "KNNDM",
    "CVResult",
    "IntervalFit",
    "KNNDMResult",
    "RandomKFold",
    "SpatialBlockKFold",
    "bootstrap_rmse_range",
    "calibrate_interval",
    "cross_validate_model",
    "cv_area_weights",
    "cv_distances",
    "cv_moments",
    "cv_report",
    "finish_cv",
    "fit_interval",
    "fit_interval_or_error",
    "make_splitter",
    "metrics_table",
    "observed_variance",
    "weigh_to_area",
]


# --------------------------------------------------------------------------- metrics
def metrics_table(
    y_true: Any,
    y_pred: Any,
    lower: Any = None,
    upper: Any = None,
    weights: Any = None,
) -> dict[str, float]:
    """Accuracy statistics of predictions against observations.

    Pairs where the observation or the prediction is missing are left out
    (``n`` counts the pairs used). With ``weights`` (one per pair, e.g.
    :func:`mapping.area_weights.area_weights`) every statistic is the weighted one
    (sums of squares about the weighted mean, weighted Pearson correlation) and
    ``n_eff`` (Kish's effective sample size) is added.

    Returns
    -------
    dict with

    ``n``
        Number of pairs.
    ``r2``
        Coefficient of determination ``1 - SSE/SST`` (SST about the mean of
        the observations); can be negative.
    ``r2_pearson``
        Squared Pearson correlation of predictions and observations (blind to
        bias and scale; reported for comparison with studies that use it).
    ``rmse``, ``mae``
        Root mean squared and mean absolute error.
    ``mbe``
        Mean bias error ``mean(pred - obs)``: positive means the model
        over-predicts.
    ``nse``
        Nash-Sutcliffe efficiency ``1 - SSE/SST`` (numerically equal to
        ``r2`` as defined here).
    ``nnse``
        Normalised NSE ``1 / (2 - NSE)`` in (0, 1]; 0.5 is as good as the mean.
    ``picp``
        Prediction-interval coverage probability: share of observations with
        ``lower <= obs <= upper`` (NaN without an interval).
    ``mean_width``
        Mean of ``upper - lower`` (NaN without an interval).
    """
    obs = np.asarray(y_true, dtype=float).ravel()
    pred = np.asarray(y_pred, dtype=float).ravel()
    if obs.shape != pred.shape:
        raise ValueError(f"y_true has {obs.size} values, y_pred {pred.size}")
    have_interval = lower is not None and upper is not None
    if have_interval:
        lo = np.asarray(lower, dtype=float).ravel()
        hi = np.asarray(upper, dtype=float).ravel()
        if lo.shape != obs.shape or hi.shape != obs.shape:
            raise ValueError("lower and upper must have the same length as y_true")
    ok = np.isfinite(obs) & np.isfinite(pred)
    if weights is not None:
        w = np.asarray(weights, dtype=float).ravel()
        if w.shape != obs.shape:
            raise ValueError("weights must have the same length as y_true")
        ok &= np.isfinite(w) & (w >= 0)
        if have_interval:
            return _weighted_metrics(obs[ok], pred[ok], w[ok], lo[ok], hi[ok])
        return _weighted_metrics(obs[ok], pred[ok], w[ok], None, None)
    obs, pred = obs[ok], pred[ok]
    n = int(obs.size)
    out: dict[str, float] = {"n": float(n)}
    if n == 0:
        nan = float("nan")
        out.update(r2=nan, r2_pearson=nan, rmse=nan, mae=nan, mbe=nan, nse=nan, nnse=nan)
        out.update(picp=nan, mean_width=nan)
        return out
    err = pred - obs
    sse = float(np.sum(err**2))
    sst = float(np.sum((obs - obs.mean()) ** 2))
    nse = 1.0 - sse / sst if sst > 0 else float("nan")
    if n > 1 and np.std(obs) > 0 and np.std(pred) > 0:
        r = float(np.corrcoef(obs, pred)[0, 1])
        r2p = r * r
    else:
        r2p = float("nan")
    out.update(
        r2=nse,
        r2_pearson=r2p,
        rmse=float(np.sqrt(sse / n)),
        mae=float(np.mean(np.abs(err))),
        mbe=float(np.mean(err)),
        nse=nse,
        nnse=1.0 / (2.0 - nse) if np.isfinite(nse) else float("nan"),
    )
    if have_interval:
        lo, hi = lo[ok], hi[ok]
        good = np.isfinite(lo) & np.isfinite(hi)
        if good.any():
            out["picp"] = float(np.mean((obs[good] >= lo[good]) & (obs[good] <= hi[good])))
            out["mean_width"] = float(np.mean(hi[good] - lo[good]))
        else:
            out["picp"] = out["mean_width"] = float("nan")
    else:
        out["picp"] = out["mean_width"] = float("nan")
    return out


def _weighted_metrics(
    obs: np.ndarray,
    pred: np.ndarray,
    w: np.ndarray,
    lo: np.ndarray | None,
    hi: np.ndarray | None,
) -> dict[str, float]:
    """:func:`metrics_table` with weights (pairs already complete)."""
    nan = float("nan")
    total = float(np.sum(w))
    out: dict[str, float] = {"n": float(obs.size), "n_eff": effective_size(w)}
    if obs.size == 0 or total <= 0:
        out.update(r2=nan, r2_pearson=nan, rmse=nan, mae=nan, mbe=nan, nse=nan, nnse=nan)
        out.update(picp=nan, mean_width=nan)
        return out

    def mean(v: np.ndarray) -> float:
        return float(np.sum(w * v) / total)

    err = pred - obs
    mse = mean(err**2)
    o_c, p_c = obs - mean(obs), pred - mean(pred)
    sst, spp = mean(o_c**2), mean(p_c**2)
    nse = 1.0 - mse / sst if sst > 0 else nan
    r2p = mean(o_c * p_c) ** 2 / (sst * spp) if sst > 0 and spp > 0 else nan
    out.update(
        r2=nse,
        r2_pearson=r2p,
        rmse=float(np.sqrt(mse)),
        mae=mean(np.abs(err)),
        mbe=mean(err),
        nse=nse,
        nnse=1.0 / (2.0 - nse) if np.isfinite(nse) else nan,
        picp=nan,
        mean_width=nan,
    )
    if lo is not None and hi is not None:
        good = np.isfinite(lo) & np.isfinite(hi)
        if good.any() and np.sum(w[good]) > 0:
            wg = w[good] / np.sum(w[good])
            inside = (obs[good] >= lo[good]) & (obs[good] <= hi[good])
            out["picp"] = float(np.sum(wg * inside))
            out["mean_width"] = float(np.sum(wg * (hi[good] - lo[good])))
    return out


# --------------------------------------------------------------------------- CV driver
@dataclass
class CVResult:
    """Out-of-fold predictions and their accuracy.

    Attributes
    ----------
    predictions
        One row per input row: ``row`` (position in X), ``fold``, ``observed``,
        ``predicted``, ``lower``, ``upper`` (NaN where the model gives no
        interval or the row was never a test row).
    per_fold
        Metrics of every fold (one row per fold, column ``fold``).
    pooled
        Metrics of all out-of-fold predictions together: the headline
        numbers (CAST's "global validation").
    quantiles
        Levels of ``lower`` and ``upper``.
    splitter
        Name of the splitter class.
    area
        The pooled metrics with every out-of-fold prediction weighted to the mapped
        area (:meth:`weigh`), or ``None``.
    ranges
        The block-bootstrap range of the RMSE (:meth:`bootstrap`): ``rmse_lower``,
        ``rmse_upper`` (and ``rmse_area_lower``, ``rmse_area_upper`` when weighted),
        ``cv_blocks``, ``range_level``; or ``None``.
    further
        Out-of-fold predictions of further partitions of the same rows
        (:meth:`pool_partitions`), in :attr:`predictions`' columns; :attr:`pooled`,
        :attr:`area` and :attr:`ranges` are then over every partition, :attr:`per_fold`
        and :attr:`predictions` the first's.
    """

    predictions: pd.DataFrame
    per_fold: pd.DataFrame
    pooled: dict[str, float]
    quantiles: tuple[float, float]
    splitter: str
    area: dict[str, float] | None = None
    ranges: dict[str, float] | None = None
    further: list[pd.DataFrame] = field(default_factory=list)

    _COLUMNS = ("row", "fold", "observed", "predicted", "lower", "upper")

    def _tested(self) -> pd.DataFrame:
        """The out-of-fold rows of every partition, the first's before the further ones'."""
        cols = list(self._COLUMNS)
        parts = [self.predictions[cols], *(f[cols] for f in self.further)]
        p = pd.concat(parts, ignore_index=True) if self.further else parts[0]
        return p[(p["fold"] >= 0).to_numpy()]

    def pool_partitions(self, further: Sequence[pd.DataFrame]) -> CVResult:
        """Pool further partitions' out-of-fold predictions of the same rows (``row``,
        ``fold``, ``observed``, ``predicted``, ``lower``, ``upper``; e.g. kNNDM with other
        seeds) into :attr:`pooled`: every profile counts once per partition, so the
        partition-to-partition scatter of the metrics averages out (a repeated CV's mean);
        ``n`` stays the number of profiles tested. Call before :meth:`weigh` and
        :meth:`bootstrap`, which then pool them too."""
        self.further = [f.reset_index(drop=True) for f in further]
        t = self._tested()
        n = self.pooled["n"]
        self.pooled = metrics_table(t["observed"], t["predicted"], t["lower"], t["upper"])
        self.pooled["n"] = n
        return self

    def weigh(self, weights: Any) -> CVResult:
        """Weight the out-of-fold predictions (one weight per row of X, e.g.
        :func:`mapping.area_weights.area_weights`): a ``weight`` column in
        :attr:`predictions` and the weighted pooled metrics in :attr:`area`."""
        p = self.predictions
        w = np.asarray(weights, dtype=float)[p["row"].to_numpy()]
        p["weight"] = w
        t = (p["fold"] >= 0).to_numpy()
        self.area = metrics_table(
            p["observed"][t], p["predicted"][t], p["lower"][t], p["upper"][t], weights=w[t]
        )
        if self.further:  # every partition's rows; the counts stay the profiles'
            s = self._tested()
            counts = {k: self.area[k] for k in ("n", "n_eff")}
            wall = np.asarray(weights, dtype=float)[s["row"].to_numpy()]
            self.area = metrics_table(
                s["observed"], s["predicted"], s["lower"], s["upper"], weights=wall
            )
            self.area.update(counts)
        return self

    def bootstrap(
        self,
        x: Any,
        y: Any,
        block_m: float,
        *,
        n_boot: int = 1000,
        level: float = 0.9,
        seed: int | None = 0,
    ) -> CVResult:
        """How sure the RMSE is: its range under a spatial block bootstrap of the
        out-of-fold errors (:func:`mapping.cv_bootstrap.block_bootstrap_rmse`), at the
        profiles and, after :meth:`weigh`, weighted to the mapped area; in
        :attr:`ranges`.

        ``x``, ``y`` are the coordinates (metres, projected) of every row of X;
        ``block_m`` the blocks' side, wider than the errors' correlation.
        """
        p = self._tested()  # a block drawn brings its profiles' rows of every partition
        t = (p["predicted"].notna() & p["observed"].notna()).to_numpy()
        rows = p["row"].to_numpy()[t]
        err = (p["predicted"] - p["observed"]).to_numpy(float)[t]
        blocks = block_ids(np.asarray(x, float)[rows], np.asarray(y, float)[rows], block_m)

        def rmse_range(w: np.ndarray | None) -> tuple[float, float]:
            return block_bootstrap_rmse(err, blocks, w, n_boot=n_boot, level=level, seed=seed)

        lo, hi = rmse_range(None)
        out = {"rmse_lower": lo, "rmse_upper": hi}
        if "weight" in self.predictions.columns:
            first = self.predictions
            weight = np.zeros(int(first["row"].max()) + 1)
            weight[first["row"].to_numpy()] = first["weight"].to_numpy(float)
            out["rmse_area_lower"], out["rmse_area_upper"] = rmse_range(weight[rows])
        out["cv_blocks"] = float(blocks.max() + 1 if blocks.size else 0)
        out["range_level"] = level
        self.ranges = out
        return self

    def summary(self) -> pd.DataFrame:
        """Pooled metrics as a one-row table, with the interval levels and splitter; then
        :meth:`extra_columns`."""
        row = {
            "splitter": self.splitter,
            "lower_q": self.quantiles[0],
            "upper_q": self.quantiles[1],
        }
        row.update(self.pooled)
        row.update(self.extra_columns())
        return pd.DataFrame([row])

    def extra_columns(self) -> dict[str, float]:
        """What follows the pooled metrics in the CV tables: :meth:`area_columns`, then the
        bootstrap ranges (:attr:`ranges`), each only when computed, and ``partitions`` (how
        many the metrics pool) when there are :attr:`further` ones."""
        out = {**self.area_columns(), **(self.ranges or {})}
        if self.further:
            out["partitions"] = float(1 + len(self.further))
        return out

    def area_columns(self) -> dict[str, float]:
        """The area-weighted pooled metrics with an ``_area`` suffix, and ``n_eff``
        (empty without weights)."""
        if self.area is None:
            return {}
        out = {"n_eff": self.area["n_eff"]}
        out.update({f"{k}_area": v for k, v in self.area.items() if k not in ("n", "n_eff")})
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (pooled and per-fold metrics)."""
        out = {
            "splitter": self.splitter,
            "quantiles": list(self.quantiles),
            "pooled": self.pooled,
            "per_fold": self.per_fold.to_dict(orient="records"),
        }
        if self.area is not None:
            out["area"] = self.area
        if self.ranges is not None:
            out["ranges"] = self.ranges
        return out


def _take(X: Any, idx: np.ndarray) -> Any:
    if isinstance(X, (pd.DataFrame, pd.Series)):
        return X.iloc[idx]
    return np.asarray(X)[idx]


def cross_validate_model(
    estimator: Any,
    X: Any,
    y: Any,
    cv: BaseCrossValidator | int = 5,
    quantiles: tuple[float, float] = (0.05, 0.95),
    groups: Any = None,
) -> CVResult:
    """Cross-validate a model and keep its out-of-fold predictions and intervals.

    For each split a clone of ``estimator`` is fitted on the training rows and
    predicts the test rows: the mean with ``predict`` and, when the model has
    ``predict_quantiles``, the interval ``quantiles``.

    Parameters
    ----------
    estimator
        A scikit-learn regressor (socmap models give intervals too).
    X, y
        Training table (coordinates + covariates) and target.
    cv
        A splitter, or an int for :class:`RandomKFold`.
    quantiles
        Lower and upper levels of the prediction interval.
    groups
        Profile id per row, so a profile's rows never straddle folds.

    Returns
    -------
    CVResult
    """
    lo_q, hi_q = (float(q) for q in quantiles)
    if not 0 < lo_q < hi_q < 1:
        raise ValueError(f"quantiles must satisfy 0 < lower < upper < 1, got {quantiles}")
    if isinstance(cv, int):
        cv = RandomKFold(cv)
    y_arr = np.asarray(y, dtype=float).ravel()
    n = len(y_arr)
    if len(X) != n:
        raise ValueError(f"X has {len(X)} rows, y has {n}")
    pred = np.full(n, np.nan)
    lower = np.full(n, np.nan)
    upper = np.full(n, np.nan)
    mu = np.full(n, np.nan)
    var = np.full(n, np.nan)
    components = hasattr(estimator, "predict_components")
    fold = np.full(n, -1)
    rows = []
    for k, (train, test) in enumerate(cv.split(X, y_arr, groups)):
        if len(test) == 0:
            continue
        if np.any(fold[test] >= 0):
            raise ModelError("the splitter puts a row in more than one test fold")
        model = clone(estimator).fit(_take(X, train), y_arr[train])
        Xt = _take(X, test)
        c = model.predict_components(Xt) if components else None
        if c is not None and hasattr(model, "from_components"):  # one kriging pass, not three
            pred[test], q = model.from_components(c, (lo_q, hi_q))
        else:
            pred[test] = model.predict(Xt)
            q = (
                model.predict_quantiles(Xt, (lo_q, hi_q))
                if hasattr(model, "predict_quantiles")
                else None
            )
        if q is not None:
            q = np.asarray(q)
            lower[test], upper[test] = q[:, 0], q[:, -1]
        if c is not None:
            mu[test] = c["trend"] + c["residual"]
            var[test] = np.maximum(c["trend_var"] + c["krige_var"], 0.0)
        fold[test] = k
        m = metrics_table(y_arr[test], pred[test], lower[test], upper[test])
        rows.append({"fold": k, "n_train": len(train), **m})
    predictions = pd.DataFrame(
        {
            "row": np.arange(n),
            "fold": fold,
            "observed": y_arr,
            "predicted": pred,
            "lower": lower,
            "upper": upper,
        }
    )
    if components:  # the fold model's own scale (log for log models): for calibration
        predictions["mu"] = mu
        predictions["var"] = var
    tested = fold >= 0
    pooled = metrics_table(y_arr[tested], pred[tested], lower[tested], upper[tested])
    return CVResult(
        predictions=predictions,
        per_fold=pd.DataFrame(rows),
        pooled=pooled,
        quantiles=(lo_q, hi_q),
        splitter=type(cv).__name__,
    )


def cv_report(results: Mapping[str, CVResult]) -> pd.DataFrame:
    """One row of pooled metrics per depth interval (keys like ``"0-30"``)."""
    frames = [r.summary().assign(interval=name) for name, r in results.items()]
    if not frames:
        return pd.DataFrame()
    out = pd.concat(frames, ignore_index=True)
    return out[["interval", *[c for c in out.columns if c != "interval"]]]


# --------------------------------------------------------------------------- fit stage
@dataclass
class IntervalFit:
    """What fitting one depth interval gives: the model, its AOA and its cross-validation.

    ``predictions`` are the out-of-fold predictions with the ``profile_id`` of each row;
    ``warnings`` counts each distinct warning (first line) raised while cross-validating
    and fitting, so a caller can say it once instead of once per fold.
    """

    model: Any
    aoa: AreaOfApplicability | None
    cv: CVResult
    predictions: pd.DataFrame
    warnings: dict[str, int]
    error_model: ErrorModel | None = None


def fit_interval(
    template: Any,
    X: pd.DataFrame,
    y: np.ndarray,
    *,
    splitter: BaseCrossValidator,
    quantiles: tuple[float, float],
    profile_ids: np.ndarray,
    aoa: bool = True,
    categorical: Sequence[str] | None = None,
    calibration: Mapping[str, Any] | None = None,
    area_cells: pd.DataFrame | None = None,
    cv_range: Mapping[str, Any] | None = None,
) -> IntervalFit:
    """Cross-validate a clone of ``template``, fit another clone on all rows, fit the AOA.

    With ``area_cells`` (the covariates of a random sample of the map's cells) the
    out-of-fold predictions are also weighted to the mapped area
    (:func:`mapping.area_weights.area_weights` on the covariates, not the coordinates
    ``x``, ``y``; :meth:`CVResult.weigh`).

    The area of applicability (Meyer & Pebesma 2021) is fitted on the training
    covariates, weighted by the model's (or its trend's) feature importances, with the
    threshold from the cross-validation folds; its ``train_di_`` (each profile's DI to
    the training data of its fold) becomes the ``di`` column of the predictions.

    With ``cv_range`` (keyword arguments of :meth:`CVResult.bootstrap` after ``x``, ``y``:
    ``block_m``, ``n_boot``, ``level``, ``seed``) the RMSE gets its block-bootstrap range
    (on the coordinates ``x``, ``y`` of ``X``).

    With ``calibration`` (keyword arguments of
    :func:`mapping.calibration.fit_error_model`: ``kind``, ``extrapolate``,
    ``min_per_bin``, ``max_bins``) the AOA is always fitted and an error model of the
    out-of-fold errors against the DI is fitted too (``docs/calibration.md``): errors and
    variances on the model's scale (log for log models), from the fold models'
    ``predict_components`` (``mu``, ``var`` columns) or else their Gaussian intervals.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cv = cross_validate_model(clone(template), X, y, cv=splitter, quantiles=quantiles)
        model = clone(template).fit(X, y)
    counts: dict[str, int] = {}
    for w in caught:
        text = str(w.message).splitlines()[0]
        counts[text] = counts.get(text, 0) + 1
    said = finish_cv(cv, X, area_cells=area_cells, categorical=categorical, cv_range=cv_range)
    if said:
        counts[said] = counts.get(said, 0) + 1
    predictions = cv.predictions.assign(profile_id=profile_ids[cv.predictions["row"]])
    area, error_model = None, None
    if aoa or calibration is not None:
        trend = getattr(model, "trend_", model)
        area, error_model, reason = calibrate_interval(
            model,
            X,
            y,
            predictions,
            quantiles=cv.quantiles,
            weights=trend if hasattr(trend, "feature_importances_") else None,
            categorical=categorical,
            calibration=calibration,
        )
        if reason:
            counts[reason] = counts.get(reason, 0) + 1
    return IntervalFit(
        model=model,
        aoa=area if aoa or calibration is not None else None,
        cv=cv,
        predictions=predictions,
        warnings=counts,
        error_model=error_model,
    )


def weigh_to_area(
    cv: CVResult, X: pd.DataFrame, cells: pd.DataFrame, categorical: Sequence[str] | None = None
) -> CVResult:
    """Weight ``cv``'s out-of-fold predictions to the mapped area (:meth:`CVResult.weigh`):
    :func:`mapping.area_weights.area_weights` of the rows of ``X`` against ``cells`` on
    the covariates (every column but the coordinates ``x``, ``y``)."""
    return cv.weigh(cv_area_weights(X, cells, categorical))


def cv_area_weights(
    X: pd.DataFrame, cells: pd.DataFrame, categorical: Sequence[str] | None = None
) -> np.ndarray:
    """The weights :func:`weigh_to_area` gives the rows of ``X``: :func:`area_weights`
    against ``cells`` on every column but the coordinates ``x``, ``y``."""
    names = [c for c in X.columns if c not in ("x", "y")]
    return area_weights(X, cells, names, categorical=list(categorical or []))


def bootstrap_rmse_range(cv: CVResult, X: pd.DataFrame, cv_range: Mapping[str, Any]) -> str | None:
    """:meth:`CVResult.bootstrap` on the coordinates ``x``, ``y`` of ``X`` with ``cv_range``
    (``block_m``, ``n_boot``, ``level``, ``seed``); a warning's text when the profiles fall
    in too few blocks to give a range, else ``None``."""
    cv.bootstrap(X["x"], X["y"], **cv_range)
    blocks = int((cv.ranges or {}).get("cv_blocks", 0))
    if blocks >= MIN_BLOCKS:
        return None
    return (
        f"the profiles fall in {blocks} blocks of {cv_range['block_m'] / 1000:g} km "
        f"(cv.bootstrap_block), fewer than {MIN_BLOCKS}: no range for the CV RMSE"
    )


def finish_cv(
    cv: CVResult,
    X: pd.DataFrame,
    *,
    area_cells: pd.DataFrame | None = None,
    categorical: Sequence[str] | None = None,
    cv_range: Mapping[str, Any] | None = None,
    weights: np.ndarray | None = None,
) -> str | None:
    """What a fit adds to its CV after the folds, in the order it needs: the weights to the
    mapped area (:func:`weigh_to_area`, with ``area_cells``; or ``weights``, computed
    beforehand by :func:`cv_area_weights`), then the RMSE's block-bootstrap ranges,
    weighted ones included (:func:`bootstrap_rmse_range`, with ``cv_range``). Returns the
    range's warning text, or ``None``."""
    if weights is not None:
        cv.weigh(weights)
    elif area_cells is not None:
        weigh_to_area(cv, X, area_cells, categorical)
    return bootstrap_rmse_range(cv, X, cv_range) if cv_range is not None else None


def fit_interval_or_error(**kwargs: Any) -> IntervalFit | ModelError:
    """:func:`fit_interval`, or the :class:`~mapping.exceptions.ModelError` it raised.

    Returned rather than raised so that, with intervals fitted side by side
    (:func:`mapping.cluster.process_map`), the caller reports the first failing interval
    in its own order after writing the ones before it.
    """
    try:
        return fit_interval(**kwargs)
    except ModelError as exc:
        return exc


def calibrate_interval(
    model: Any,
    X: pd.DataFrame,
    y: np.ndarray,
    predictions: pd.DataFrame,
    *,
    quantiles: tuple[float, float],
    weights: Any = None,
    categorical: Sequence[str] | None = None,
    calibration: Mapping[str, Any] | None = None,
    area: AreaOfApplicability | None = None,
) -> tuple[AreaOfApplicability, ErrorModel | None, str | None]:
    """The area of applicability of an interval's profiles and its error model.

    The AOA (Meyer & Pebesma 2021) is fitted on ``X`` (coordinates and covariates),
    weighted by ``weights`` (a fitted model's ``feature_importances_``, a mapping or
    ``None``), with the threshold from the CV folds of ``predictions`` (one row per row of
    ``X``, column ``row``); each row's DI to the training data of its fold and its
    extrapolation distance become the ``di`` and ``xd`` columns of ``predictions`` (in
    place). With ``calibration`` (keyword arguments of
    :func:`mapping.calibration.fit_error_model`) an error model of the out-of-fold errors
    against the DI is fitted too, on the model's scale (``ln`` when
    ``model.log_transform``), from the ``mu``/``var`` columns of ``predictions`` or else
    their Gaussian intervals. A fitted ``area`` is used as it is: ``predictions`` must
    then hold its ``di`` and ``xd`` already (an AOA fitted on more sites than ``X``'s).

    Returns
    -------
    tuple
        The fitted AOA, the error model (``None`` without ``calibration`` or with too
        few CV points) and, in the latter case, the reason as one line (else ``None``).
    """
    if area is None:
        folds = predictions.sort_values("row")["fold"].to_numpy()
        area = AreaOfApplicability(categorical_features=list(categorical or []) or None)
        area = area.fit(X, weights=weights, folds=folds)
        predictions["di"] = np.asarray(area.train_di_, dtype=float)[predictions["row"]]
        predictions["xd"] = np.asarray(area.train_xd_, dtype=float)[predictions["row"]]
    if calibration is None:
        return area, None, None
    log = bool(getattr(model, "log_transform", False))
    mu, var = cv_moments(predictions, quantiles, log=log)
    obs = predictions["observed"].to_numpy(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        errors = mu - (np.log(obs) if log else obs)
    tested = predictions["fold"].to_numpy() >= 0
    errors = np.where(tested & np.isfinite(errors), errors, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        target = np.log(np.asarray(y, dtype=float)) if log else np.asarray(y, dtype=float)
    slope = feature_variogram_slope(
        area.transform(X), target, unit=area.mean_distance_, random_state=0
    )
    options = dict(calibration)
    options.pop("partitions", None)  # which CV partitions the caller passed in predictions
    weighs = options.pop("weighting", "none") == "area" and "weight" in predictions
    try:
        error_model = fit_error_model(
            errors,
            var,
            predictions["di"],
            xd=predictions["xd"],
            observed_var=observed_variance(obs, log=log),
            range_slope=slope,
            weights=predictions["weight"].to_numpy(float) if weighs else None,
            **options,
        )
    except ModelError as exc:  # too few CV points: the model's own variance, said once
        return area, None, f"no calibrated intervals: {exc}"
    return area, error_model, None


def observed_variance(observed: Any, *, log: bool) -> float:
    """Sample variance of the observations on the model's scale (``ln`` for log models)."""
    o = np.asarray(observed, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        o = np.log(o) if log else o
    o = o[np.isfinite(o)]
    return float(np.var(o, ddof=1)) if o.size > 1 else float("nan")


def cv_moments(
    predictions: pd.DataFrame, quantiles: tuple[float, float], *, log: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold mean and variance on the model's scale (log for log models).

    The fold models' own (``mu``, ``var`` columns of the CV predictions) or, without
    them, recovered from their Gaussian interval
    (:func:`mapping.calibration.interval_log_moments`).
    """
    if "mu" in predictions and "var" in predictions:
        return predictions["mu"].to_numpy(float), predictions["var"].to_numpy(float)
    return interval_log_moments(predictions["lower"], predictions["upper"], quantiles, log=log)
