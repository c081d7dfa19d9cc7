"""The error every cell of a region shares, for the Monte Carlo of the zone totals.

The uncertainty stage (:mod:`mapping.run.stages`) and a design (:mod:`mapping.run.design`)
read it from a fitted run: the residuals' mean level under each interval's variogram and the
trend's regional error from the spatial cross-validation's fold means
(``uncertainty.regional``; ``docs/uncertainty.md``, assumption 3).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import pandas as pd

from mapping import io
from mapping.calibration import regional_error_sd
from mapping.exceptions import ModelError
from mapping.residual_errors import (
    cv_block_error_sd,
    residual_mean_sd,
    residual_variogram,
    within_group_covariance,
)
from mapping.run.runner import StageContext

__all__ = ["shared_error"]

log = logging.getLogger("socmap")


def shared_error(ctx: StageContext, models: dict[str, Any], labels: list[str]) -> Any:
    """Per interval, the error every cell of a region shares, or ``None`` (no variogram).

    Returns ``(variograms, common_sd, shared_fraction)``, as
    :func:`mapping.uncertainty.zone_total_draws` takes them.

    The residuals' regional level (``residual_mean_sd``) and, in quadrature, the trend's
    regional error seen by spatial cross-validation: the spread of the kNNDM fold-mean
    errors beyond their sampling noise. ``uncertainty.regional: folds`` estimates it per
    interval (``cv_block_error_sd``, K - 1 degrees of freedom); ``folds_pooled`` pools
    the regional share of the error variance over the intervals
    (:func:`mapping.calibration.regional_error_sd`); ``folds_net`` pools it
    net of the residual field's covariance within a fold
    (:func:`mapping.residual_errors.within_group_covariance`), which the draws hold already.
    """
    try:
        variograms = {k: residual_variogram(models[k]) for k in labels}
        level = {k: residual_mean_sd(models[k]) for k in labels}
    except ModelError as exc:
        log.warning("no Monte Carlo ranges: %s", exc)
        return None
    cv = {k: io.read_table(ctx.folder.cv_predictions(k)) for k in labels}
    # folds_net needs the profiles' coordinates (any depth model): read once for every partition
    training = (
        io.read_table(ctx.folder.training)
        if ctx.config.uncertainty.regional == "folds_net"
        else None
    )
    regional = _regional(ctx, cv, variograms, labels, training)
    # cv.repeats: the regional variance averaged over every partition of the CV
    paths = [ctx.folder.cv_repeats(k) for k in labels]
    # only when this config asks for them: a folder may hold another run's tables
    if ctx.config.cv.repeats > 1 and all(p.is_file() for p in paths):
        extra = {k: io.read_table(p) for k, p in zip(labels, paths, strict=True)}
        repeats = sorted(set.intersection(*(set(t["repeat"]) for t in extra.values())))
        variance = {k: [regional[k] ** 2] for k in labels}
        for r in repeats:
            part = {k: extra[k][extra[k]["repeat"] == r].reset_index(drop=True) for k in labels}
            for k, sd in _regional(ctx, part, variograms, labels, training).items():
                variance[k].append(sd**2)
        regional = {k: math.sqrt(float(np.mean(v))) for k, v in variance.items()}
        ctx.echo(f"[uncertainty] regional CV error averaged over {len(repeats) + 1} partitions")
    scale = "sd of ln(stock)" if ctx.config.model.log_transform else "sd, kg m-2"
    if ctx.config.uncertainty.shared == "proportional":
        # the regional error as a share of the CV errors' variance, applied to each cell's
        # own variance: larger where the calibrated maps are less certain (the cold tail)
        fraction = {}
        for k in labels:
            e = _cv_errors(cv[k], log=ctx.config.model.log_transform)[0]
            mse = float(np.nanmean(e * e)) if np.isfinite(e).any() else 0.0
            fraction[k] = min(1.0, regional[k] ** 2 / mse) if mse > 0 else 0.0
            ctx.echo(
                f"[uncertainty] {k} cm: error shared by every cell: {level[k]:.3g} ({scale}; "
                f"the residual level) and {100 * fraction[k]:.3g} % of each cell's own "
                f"variance (regional CV error {regional[k]:.3g} of the CV RMSE {mse**0.5:.3g})"
            )
        return variograms, dict(level), fraction
    common = {k: math.hypot(level[k], regional[k]) for k in labels}
    for k in labels:
        ctx.echo(
            f"[uncertainty] {k} cm: error shared by every cell {common[k]:.3g} ({scale}; "
            f"residual level {level[k]:.3g}, regional CV error {regional[k]:.3g})"
        )
    return variograms, common, dict.fromkeys(labels, 0.0)


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
        errors[k], groups[k] = _cv_errors(cv[k], log=log_scale)
    net = {}
    if regional_mode == "folds_net":
        assert training is not None
        for k in labels:
            at = _profile_xy(training, cv[k]["profile_id"])
            known = np.where(np.isfinite(at).all(axis=1), groups[k], -1)
            net[k] = within_group_covariance(
                np.nan_to_num(at), known, variograms[k], seed=ctx.config.seed
            )
    pooled = regional_error_sd(errors, groups, pool=True, shared=net or None)
    return pooled if isinstance(pooled, dict) else dict.fromkeys(labels, pooled)


def _profile_xy(training: pd.DataFrame, ids: pd.Series) -> np.ndarray:
    """``(n, 2)`` working-plane coordinates of the profiles ``ids`` (NaN if unknown).

    A CSV read back turns numeric-looking identifiers into numbers; they are then
    matched as numbers."""
    key = training.drop_duplicates("profile_id").set_index("profile_id")[["x", "y"]]
    if ids.dtype.kind in "iuf":
        key.index = pd.to_numeric(key.index, errors="coerce")
    key = key[~key.index.duplicated()]
    return key.reindex(ids.to_numpy()).to_numpy(float)


def _cv_errors(cv: pd.DataFrame, *, log: bool) -> tuple[np.ndarray, np.ndarray]:
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
