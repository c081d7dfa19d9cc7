"""The error every cell of a region shares, for the Monte Carlo of the zone totals.

The uncertainty stage (:mod:`mapping.run.stages`) and a design (:mod:`mapping.run.design`)
read it from a fitted run: the residuals' mean level under each interval's variogram and the
trend's regional error, either from the spatial cross-validation's fold means
(``uncertainty.regional``; ``docs/uncertainty.md``, assumption 3) or, with
``uncertainty.shared: extrapolation``, from each cell's calibrated error above the error
model's in-domain level (:func:`mapping.calibration.extrapolation_sd`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import xarray as xr

from mapping import io
from mapping.calibration import ErrorModel, extrapolation_sd, regional_error_sd
from mapping.exceptions import ModelError
from mapping.residual_errors import (
    cv_block_error_sd,
    cv_error_variogram,
    residual_mean_sd,
    residual_variogram,
    within_group_covariance,
)
from mapping.run.runner import StageContext

__all__ = [
    "SharedError",
    "cv_errors",
    "extrapolation_maps",
    "profile_xy",
    "reference_di",
    "shared_error",
]

log = logging.getLogger("socmap")


class SharedError(NamedTuple):
    """The shared errors of a run's intervals, as :func:`mapping.uncertainty.zone_total_draws`
    takes them (``variogram``, ``common_sd``, ``shared_fraction``); ``extrapolation`` maps
    an interval to its error model and reference DI when its extrapolation error is shared
    (``uncertainty.shared: extrapolation``; :func:`extrapolation_maps` makes the maps)."""

    variograms: dict[str, Any]
    common: dict[str, float]
    fraction: dict[str, float]
    extrapolation: dict[str, tuple[ErrorModel, float]]


def shared_error(
    ctx: StageContext, models: dict[str, Any], labels: list[str]
) -> SharedError | None:
    """Per interval, the error every cell of a region shares, or ``None`` (no variogram).

    Returns a :class:`SharedError`.

    The residuals' regional level (``residual_mean_sd``) and, in quadrature, the trend's
    regional error seen by spatial cross-validation: the spread of the kNNDM fold-mean
    errors beyond their sampling noise. ``uncertainty.regional: folds`` estimates it per
    interval (``cv_block_error_sd``, K - 1 degrees of freedom); ``folds_pooled`` pools
    the regional share of the error variance over the intervals
    (:func:`mapping.calibration.regional_error_sd`); ``folds_net`` pools it
    net of the residual field's covariance within a fold
    (:func:`mapping.residual_errors.within_group_covariance`), which the draws hold already.

    ``uncertainty.shared: extrapolation`` shares instead the trend's error where cells are
    dissimilar to the training data: the residual level stays the constant shared error and
    the regional CV error is dropped for every interval with an error model (log models);
    an interval without one keeps the CV regional error.
    """
    try:
        variograms = {k: residual_variogram(models[k]) for k in labels}
        level = {k: residual_mean_sd(models[k]) for k in labels}
    except ModelError as exc:
        log.warning("no Monte Carlo ranges: %s", exc)
        return None
    cv = {k: io.read_table(ctx.folder.cv_predictions(k)) for k in labels}
    mode = ctx.config.uncertainty.shared
    extrapolation = _extrapolation_terms(ctx, labels) if mode == "extrapolation" else {}
    # the regional CV error, unless every interval shares its extrapolation error instead
    # (folds_net: net of the residual field, so with the residual variograms)
    needed = any(k not in extrapolation for k in labels)
    correlate = ctx.config.uncertainty.correlation == "cv_errors"
    # the profiles' coordinates (any depth model), read once for every partition: for
    # folds_net and for the CV errors' variogram
    training = (
        io.read_table(ctx.folder.training)
        if (needed and ctx.config.uncertainty.regional == "folds_net") or correlate
        else None
    )
    # cv.repeats: the other partitions of the CV, read once for both uses below
    partitions = _cv_partitions(ctx, labels) if needed or correlate else {}
    if needed:
        regional = _regional(ctx, cv, variograms, labels, training)
    else:
        regional = dict.fromkeys(labels, 0.0)
    # the regional variance averaged over every partition of the CV
    if needed and len(partitions) == len(labels):
        repeats = sorted(set.intersection(*(set(partitions[k]) for k in labels)))
        variance = {k: [regional[k] ** 2] for k in labels}
        for r in repeats:
            part = {k: partitions[k][r] for k in labels}
            for k, sd in _regional(ctx, part, variograms, labels, training).items():
                variance[k].append(sd**2)
        regional = {k: math.sqrt(float(np.mean(v))) for k, v in variance.items()}
        ctx.echo(f"[uncertainty] regional CV error averaged over {len(repeats) + 1} partitions")
    if correlate:
        assert training is not None
        variograms = _cv_error_correlation(ctx, variograms, cv, partitions, training, labels)
    scale = "sd of ln(stock)" if ctx.config.model.log_transform else "sd, kg m-2"
    if mode == "proportional":
        # the regional error as a share of the CV errors' variance, applied to each cell's
        # own variance: larger where the calibrated maps are less certain (the cold tail)
        fraction = {}
        for k in labels:
            e = cv_errors(cv[k], log=ctx.config.model.log_transform)[0]
            mse = float(np.nanmean(e * e)) if np.isfinite(e).any() else 0.0
            fraction[k] = min(1.0, regional[k] ** 2 / mse) if mse > 0 else 0.0
            ctx.echo(
                f"[uncertainty] {k} cm: error shared by every cell: {level[k]:.3g} ({scale}; "
                f"the residual level) and {100 * fraction[k]:.3g} % of each cell's own "
                f"variance (regional CV error {regional[k]:.3g} of the CV RMSE {mse**0.5:.3g})"
            )
        return SharedError(variograms, dict(level), fraction, {})
    common = {
        k: level[k] if k in extrapolation else math.hypot(level[k], regional[k]) for k in labels
    }
    ref = {"median": "median", "mean": "mean-ratio"}[ctx.config.uncertainty.reference]
    for k, (em, di_in) in extrapolation.items():
        curve = " (its DI part from the second curve)" if getattr(em, "shared", None) else ""
        ctx.echo(
            f"[uncertainty] {k} cm: error shared by every cell: {level[k]:.3g} ({scale}; the "
            f"residual level) and, independently, each cell's calibrated error above the "
            f"error model's at the training data's {ref} DI ({di_in:.3g}){curve}"
        )
    for k in labels:
        if k in extrapolation:
            continue
        ctx.echo(
            f"[uncertainty] {k} cm: error shared by every cell {common[k]:.3g} ({scale}; "
            f"residual level {level[k]:.3g}, regional CV error {regional[k]:.3g})"
        )
    return SharedError(variograms, common, dict.fromkeys(labels, 0.0), extrapolation)


def _cv_partitions(ctx: StageContext, labels: list[str]) -> dict[str, dict[Any, pd.DataFrame]]:
    """The CV's other partitions (``cv.repeats``), per interval whose table exists and per
    repeat; empty unless this config asks for them (a folder may hold another run's)."""
    if ctx.config.cv.repeats <= 1:
        return {}
    out = {}
    for k in labels:
        path = ctx.folder.cv_repeats(k)
        if path.is_file():
            table = io.read_table(path)
            out[k] = {
                r: table[table["repeat"] == r].reset_index(drop=True)
                for r in sorted(table["repeat"].unique())
            }
    return out


def _cv_error_correlation(
    ctx: StageContext,
    variograms: dict[str, Any],
    cv: dict[str, pd.DataFrame],
    partitions: dict[str, dict[Any, pd.DataFrame]],
    training: pd.DataFrame,
    labels: list[str],
) -> dict[str, Any]:
    """Per interval, a variogram of the standardised CV errors (every partition's) in place
    of the residual variogram, or the residual one where it cannot be fitted."""
    run = ctx.folder
    out = dict(variograms)
    need = {"mu", "var", "di", "observed", "fold", "profile_id"}
    for k in labels:
        ids = list(cv[k]["profile_id"])
        tables = [cv[k]]
        tables += [t for t in partitions.get(k, {}).values() if list(t["profile_id"]) == ids]
        why = None
        if not ctx.config.model.log_transform:
            why = "not a model of log stocks"
        elif not run.error_model_file(k).is_file():
            why = "no error model"
        elif not all(need <= set(t.columns) for t in tables):
            why = "the CV table has no log moments"
        if why is None:
            em = io.read_model(run.error_model_file(k))
            z = []
            for t in tables:
                obs = t["observed"].to_numpy(float)
                with np.errstate(divide="ignore", invalid="ignore"):
                    e = t["mu"].to_numpy(float) - np.log(obs)
                xd = t["xd"].to_numpy(float) if "xd" in t else None
                v = em.variance(t["var"].to_numpy(float), t["di"].to_numpy(float), xd)
                z.append(np.where(t["fold"].to_numpy() >= 0, e / np.sqrt(v), np.nan))
            try:
                out[k] = cv_error_variogram(profile_xy(training, cv[k]["profile_id"]), z)
            except ModelError as exc:
                why = str(exc)
        if why is not None:
            ctx.echo(f"[uncertainty] {k} cm: the residual variogram's correlation ({why})")
            continue
        v = out[k]
        share = v.psill / v.sill if v.sill > 0 else 0.0
        shape = (
            f"{v.model}, structured share {share:.2f}, range {v.range / 1000:.3g} km"
            if share >= 0.005
            else "no spatial structure (a pure nugget): independent cells"
        )
        ctx.echo(
            f"[uncertainty] {k} cm: cells' errors correlated as the standardised CV errors "
            f"({len(tables)} partition(s)): {shape}"
        )
    return out


def _extrapolation_terms(ctx: StageContext, labels: list[str]) -> dict[str, tuple[Any, float]]:
    """Per interval with an error model, the model and its reference DI (the median CV DI
    of the training points); log models only (the maps give their ``ln`` variances)."""
    run = ctx.folder
    out: dict[str, tuple[Any, float]] = {}
    if not ctx.config.model.log_transform:
        ctx.echo(
            "[uncertainty] warning: uncertainty.shared: extrapolation needs a model of log "
            "stocks (model.log_transform); the regional CV error is shared instead"
        )
        return out
    for k in labels:
        if not (run.error_model_file(k).is_file() and run.aoa_file(k).is_file()):
            ctx.echo(
                f"[uncertainty] {k} cm: no error model; the regional CV error is shared "
                "instead of the extrapolation error"
            )
            continue
        di = np.asarray(io.read_model(run.aoa_file(k)).train_di_, dtype=float)
        di = di[np.isfinite(di)]
        if not len(di):
            continue
        em = io.read_model(run.error_model_file(k))
        out[k] = (em, reference_di(em, di, ctx.config.uncertainty.reference))
    return out


def reference_di(error_model: ErrorModel, di: np.ndarray, how: str = "median") -> float:
    """The reference DI of the shared extrapolation error, from the training points' DIs
    ``di`` (finite): their median (``median``), or the DI where the error model's
    non-decreasing curve (its second curve when it has one) first reaches its mean over
    them (``mean``: the training points' mean variance ratio as the in-domain level)."""
    d = np.sort(np.asarray(di, dtype=float))
    if how == "median":
        return float(np.median(d))
    curve = getattr(error_model, "shared", None) or error_model
    f = np.asarray(curve.factor(d), dtype=float)
    return float(d[min(int(np.searchsorted(f, f.mean())), len(d) - 1)])


def extrapolation_maps(
    shared: SharedError, maps: dict[str, dict[str, Any]], chunks: Any
) -> dict[str, Any] | None:
    """The ``extrapolation_sd`` maps of :func:`mapping.uncertainty.zone_total_draws`, lazy,
    from each interval's ``mean``, ``median`` and ``std`` maps (``maps[label][stat]``,
    paths), opened with ``chunks``; ``None`` when no interval shares one."""
    if not shared.extrapolation:
        return None
    out = {}
    for k, (em, di_in) in shared.extrapolation.items():
        if "median" not in maps[k]:
            raise ModelError(
                f"{k} cm: uncertainty.shared: extrapolation needs the median map "
                "(prediction.quantiles)"
            )
        m, med, s = (
            io.open_raster(maps[k][stat], chunks=chunks) for stat in ("mean", "median", "std")
        )
        inputs = [m, med, s]
        func: Callable[..., np.ndarray] = extrapolation_sd
        if getattr(em, "shared", None) is not None:
            # the shared part from the error model's second curve, at each cell's DI
            if "di" not in maps[k]:
                raise ModelError(
                    f"{k} cm: prediction.calibration.shared_shape needs the DI map "
                    "(prediction.aoa: true)"
                )
            inputs.append(io.open_raster(maps[k]["di"], chunks=chunks))
            func = _extrapolation_sd_at
        sd = xr.apply_ufunc(
            func, *inputs,
            kwargs={"error_model": em, "di_in": di_in},
            dask="parallelized", output_dtypes=["float32"],
        )  # fmt: skip
        out[k] = sd.astype("float32").rio.write_crs(m.rio.crs)
    return out


def _extrapolation_sd_at(
    mean: Any, median: Any, std: Any, di: Any, *, error_model: ErrorModel, di_in: float
) -> np.ndarray:
    """:func:`mapping.calibration.extrapolation_sd` with the cells' DI (positional, for
    ``xr.apply_ufunc``)."""
    return extrapolation_sd(mean, median, std, error_model, di_in, di=di)


def _regional(
    ctx: StageContext,
    cv: dict[str, pd.DataFrame],
    variograms: dict[str, Any],
    labels: list[str],
    training: pd.DataFrame | None,
) -> dict[str, float]:
    """The trend's regional error sd per interval from one CV partition's out-of-fold table
    (``predicted``, ``observed``, ``fold``, ``profile_id``), as ``uncertainty.regional`` says
    (``folds_net``: with the profiles' coordinates from the run's ``training`` table)."""
    log_scale = ctx.config.model.log_transform
    regional_mode = ctx.config.uncertainty.regional
    if regional_mode == "folds":
        return {k: cv_block_error_sd(cv[k], log=log_scale) for k in labels}
    errors, groups = {}, {}
    for k in labels:
        errors[k], groups[k] = cv_errors(cv[k], log=log_scale)
    net = {}
    if regional_mode == "folds_net":
        assert training is not None
        for k in labels:
            at = profile_xy(training, cv[k]["profile_id"])
            known = np.where(np.isfinite(at).all(axis=1), groups[k], -1)
            net[k] = within_group_covariance(
                np.nan_to_num(at), known, variograms[k], seed=ctx.config.seed
            )
    pooled = regional_error_sd(errors, groups, pool=True, shared=net or None)
    return pooled if isinstance(pooled, dict) else dict.fromkeys(labels, pooled)


def profile_xy(training: pd.DataFrame, ids: pd.Series) -> np.ndarray:
    """``(n, 2)`` working-plane coordinates of the profiles ``ids`` (NaN if unknown).

    A CSV read back turns numeric-looking identifiers into numbers; they are then
    matched as numbers."""
    key = training.drop_duplicates("profile_id").set_index("profile_id")[["x", "y"]]
    if ids.dtype.kind in "iuf":
        key.index = pd.to_numeric(key.index, errors="coerce")
    key = key[~key.index.duplicated()]
    return key.reindex(ids.to_numpy()).to_numpy(float)


def cv_errors(cv: pd.DataFrame, *, log: bool) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold errors (``ln(predicted) - ln(observed)`` for log models, as
    ``cv_block_error_sd``) and their fold; fold -1 where a row has no usable error."""
    pred = cv["predicted"].to_numpy(float)
    obs = cv["observed"].to_numpy(float)
    fold = cv["fold"].to_numpy(int).copy()
    if log:
        ok = (pred > 0) & (obs > 0)
        e = np.full(len(cv), np.nan)
        e[ok] = np.log(pred[ok]) - np.log(obs[ok])
    else:
        e = pred - obs
    fold[~np.isfinite(e)] = -1
    return e, fold
