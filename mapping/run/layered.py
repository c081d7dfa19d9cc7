"""The stages of a run with ``model.depth: layered``: one depth model for every interval.

With the default ``model.depth: per_interval`` nothing here runs. With ``layered``:

* ``stocks`` also harmonises every profile to the layers ``model.layers``
  (``stocks/layers.csv``); ``training`` joins them with the covariates
  (``training/layers.parquet``);
* ``fit`` fits one :class:`mapping.depth_model.LayeredDepthModel` (trend built from the
  ``model`` section like the per-interval models; its 0-``anchor_cm`` residuals kriged
  when ``type`` is ``regression_kriging``) and cross-validates it with the configured
  splitter on the profile locations: each fold fits on its profiles' layers and predicts
  every interval at the held-out sites. Per interval it writes what the per-interval fit
  writes (an :class:`~mapping.depth_model.IntervalView` as the model, AOA, CV tables,
  plot), so ``predict``, ``zones``, ``uncertainty`` and ``report`` run unchanged;
* ``predict`` also maps the intervals of ``prediction.depths`` from the same fit;
  :func:`predict_depths` does so for any interval after a run, without refitting.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from numpy.typing import NDArray
from sklearn.base import clone

from mapping import io
from mapping.aoa import AreaOfApplicability
from mapping.area_weights import area_weights, effective_size
from mapping.cluster import dask_client, process_map
from mapping.config import CovariateConfig, RunConfig
from mapping.covariates import build_stack
from mapping.depth_model import (
    SHARED_LAYERS_BYTES,
    CalibratedIntervalView,
    IntervalView,
    LayeredDepthModel,
    LayerStore,
    ThawedView,
    shared_layers,
    training_layers,
)
from mapping.exceptions import ModelError
from mapping.models import RegressionKriging
from mapping.predict import WrittenMaps, predict_grid, record_coordinate_crs, write_prediction
from mapping.run import stages
from mapping.run.features import build_model, categorical_covariates, model_features
from mapping.run.runner import Stage, StageContext
from mapping.units import ALL_ZONES, NO_ALT, interval_label, map_stem, parse_interval
from mapping.validation import (
    CVResult,
    IntervalFit,
    calibrate_interval,
    cv_area_weights,
    finish_cv,
    make_splitter,
    metrics_table,
)
from mapping.zonal import zone_totals

ALT = "active_layer_cm"

__all__ = ["layered_model", "layered_stages", "predict_depths", "stage_list"]


def stage_list(cfg: RunConfig) -> list[Stage]:
    """The stages a config asks for: :func:`mapping.run.stages.stage_list`, with the
    layered stages in place of ``stocks, training, fit, predict, uncertainty`` when
    ``model.depth`` is ``layered``."""
    chosen = stages.stage_list(cfg)
    if cfg.model.depth != "layered":
        return chosen
    swap = {s.name: s for s in layered_stages()}
    out = [swap.get(s.name, s) for s in chosen]
    if cfg.active_layer is not None and cfg.zones is not None:
        out.insert([s.name for s in out].index("report"), THAW)
    return out


def layered_model(cfg: RunConfig) -> LayeredDepthModel:
    """The unfitted layered model of a config: trend as :func:`build_model` makes it
    (for regression kriging: its trend; residual kriging with its variogram settings)."""
    base = build_model(cfg)
    krige = isinstance(base, RegressionKriging)
    trend = clone(base.trend) if krige else base
    if "coord_columns" in trend.get_params():  # the coordinates go to the kriging
        trend.set_params(coord_columns=None)
    v = cfg.model.variogram
    return LayeredDepthModel(
        trend=trend,
        breaks=cfg.model.layers,
        krige=krige,
        variogram=base.kriging.variogram if krige else v.model,
        n_neighbors=cfg.model.n_neighbors,
        cutoff=v.cutoff,
        n_lags=v.n_lags,
        bound_range=v.bound_range,
        anchor_cm=cfg.model.anchor_cm,
        random_state=cfg.seed,
    )


# --------------------------------------------------------------------------- stocks, training
def _run_stocks(ctx: StageContext) -> tuple[list[str], Any]:
    cfg, run = ctx.config, ctx.folder
    horizons = stages.read_profiles(cfg)
    outputs, stocks = stages.write_stocks(ctx, horizons)
    layers = training_layers(horizons, cfg.model.layers, **stages.stock_options(cfg))
    io.write_table(layers, run.layers)
    ctx.echo(f"[stocks] layers: {len(layers)} rows from {layers['profile_id'].nunique()} profiles")
    return [*outputs, run.rel(run.layers)], {"stocks": stocks, "layers": layers}


def _load_stocks(ctx: StageContext) -> Any:
    return {"stocks": stages.STOCKS.load(ctx), "layers": io.read_table(ctx.folder.layers)}


def _run_training(ctx: StageContext) -> tuple[list[str], Any]:
    cfg, run = ctx.config, ctx.folder
    both = ctx.results["stocks"]
    ctx.results["stocks"] = both["stocks"]  # the per-interval stage reads the stock table
    try:
        outputs, table = stages.TRAINING.run(ctx)
    finally:
        ctx.results["stocks"] = both
    names = [c.name for c in cfg.covariates]
    sites = table.drop_duplicates("profile_id")[["profile_id", "x", "y", *names]]
    layers = both["layers"].merge(sites, on="profile_id", how="inner")
    io.write_table(layers, run.training_layers)
    return [*outputs, run.rel(run.training_layers)], {"intervals": table, "layers": layers}


def _load_training(ctx: StageContext) -> Any:
    return {
        "intervals": stages.TRAINING.load(ctx),
        "layers": io.read_table(ctx.folder.training_layers),
    }


# --------------------------------------------------------------------------- fit
FIT_WEIGHT = "fit_weight"
"""Column of the training layers holding the profile's fit weight (``model.weighting``)."""


def _fit_layers(template: Any, layers: pd.DataFrame, features: list[str]) -> Any:
    good = layers[layers["soc_stock_kg_m2"] > 0]
    X = good[[*features, "top_cm", "bottom_cm"]].reset_index(drop=True)
    weight = good[FIT_WEIGHT].to_numpy(float) if FIT_WEIGHT in good else None
    return clone(template).fit(
        X,
        good["soc_stock_kg_m2"].to_numpy(float),
        groups=good["profile_id"].to_numpy(),
        sample_weight=weight,
    )


def fit_weights(
    sites: pd.DataFrame,
    cells: pd.DataFrame,
    features: list[str],
    categorical: list[str],
    power: float = 1.0,
) -> pd.Series:
    """Each profile's fit weight for ``model.weighting: area``: the inverse of the sampling
    intensity around it relative to the land, in covariate space
    (:func:`mapping.area_weights.area_weights` against the fit's cell sample ``cells``),
    raised to ``power`` (``model.weighting_power``: below 1 flattens the weights, trading
    some of the correction for a larger effective sample; Shimodaira 2000) and scaled to
    mean 1; indexed by ``profile_id``."""
    w = area_weights(sites, cells, features, categorical=categorical) ** float(power)
    return pd.Series(w / w.mean(), index=sites["profile_id"].to_numpy(), name=FIT_WEIGHT)


def fit_layers_recording(
    template: Any, layers: pd.DataFrame, features: list[str]
) -> tuple[Any, list[str]]:
    """A clone of ``template`` fitted on ``layers``, and the first line of every warning
    the fit raised (counted and said once by the caller)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = _fit_layers(template, layers, features)
    return model, [str(w.message).splitlines()[0] for w in caught]


def fold_predictions(
    template: Any,
    layers: pd.DataFrame,
    features: list[str],
    X_test: pd.DataFrame,
    intervals: list[tuple[float, float]],
    quantiles: tuple[float, float],
) -> tuple[dict[str, np.ndarray], list[str]]:
    """One CV fold of the layered fit: fitted on the training profiles' ``layers``, the
    statistics of every interval at the held-out sites ``X_test``
    (:meth:`LayeredDepthModel.predict_interval_stats`), and the fit's warnings."""
    model, texts = fit_layers_recording(template, layers, features)
    return model.predict_interval_stats(X_test, intervals, quantiles), texts


def _fold_job(
    template: Any,
    layers: pd.DataFrame,
    sites: pd.DataFrame,
    features: list[str],
    train: np.ndarray,
    test: np.ndarray,
    intervals: list[tuple[float, float]],
    quantiles: tuple[float, float],
) -> dict[str, Any]:
    """The pool job of one CV fold (:func:`fold_predictions`)."""
    return {
        "template": template,
        "layers": layers[layers["profile_id"].isin(set(sites["profile_id"].iloc[train]))],
        "features": features,
        "X_test": sites[features].iloc[test].reset_index(drop=True),
        "intervals": intervals,
        "quantiles": quantiles,
        "kind": "fold",
    }


def _oof_table(rows: pd.DataFrame, pred: Any, q: Any, fold: Any) -> pd.DataFrame:
    """One partition's out-of-fold predictions of an interval's profiles ``rows`` (means
    ``pred``, ``(n, 2)`` interval bounds ``q``, folds ``fold``) in the columns of
    :class:`~mapping.validation.CVResult`'s ``predictions``."""
    return pd.DataFrame(
        {
            "row": np.arange(len(rows)),
            "fold": fold,
            "observed": rows["soc_stock_kg_m2"].to_numpy(float),
            "predicted": pred,
            "lower": q[:, 0],
            "upper": q[:, 1],
        }
    )


def _repeat_tables(
    rows: pd.DataFrame,
    at: np.ndarray,
    j: int,
    repeated: Sequence[tuple[Any, ...]],
    measured: Sequence[tuple[np.ndarray, np.ndarray]],
) -> list[pd.DataFrame]:
    """Interval ``j``'s out-of-fold predictions in the further partitions (``cv.repeats``;
    each ``(n, k)`` means, ``(n, k, 2)`` quantiles, ``(n,)`` folds and ``(n, k)`` log
    moments over all sites): one :func:`_oof_table` per partition, a row per profile of the
    interval (sites ``at``), with the log moments ``mu``, ``var`` and, with an AOA
    (``measured``, :meth:`~mapping.aoa.AreaOfApplicability.cv_measure` per partition), each
    row's DI and extrapolation distance to its own fold's training data."""
    tables = []
    for r, (mean, q, fold, mu, var) in enumerate(repeated):
        t = _oof_table(rows, mean[at, j], q[at, j], fold[at]).assign(mu=mu[at, j], var=var[at, j])
        if measured:
            t = t.assign(di=measured[r][0][at], xd=measured[r][1][at])
        tables.append(t)
    return tables


def _pooled_errors(first: pd.DataFrame, further: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """The error model's input with every partition (``calibration.partitions: all``): the
    first partition's CV table (with ``di``, ``xd`` and, weighted, ``weight``) followed by
    the further partitions' (:func:`_repeat_tables`), each profile with its weight."""
    cols = ["fold", "observed", "mu", "var", "di", "xd"]
    parts = [first[cols], *(t[cols] for t in further)]
    out = pd.concat(parts, ignore_index=True)
    if "weight" in first:  # every partition's rows are the same profiles, in the same order
        out["weight"] = np.tile(first["weight"].to_numpy(float), len(parts))
    return out


def _repeat_table(rows: pd.DataFrame, tables: list[pd.DataFrame]) -> pd.DataFrame:
    """``cv_repeats.csv``: the further partitions' tables (:func:`_repeat_tables`) with the
    profile and the partition (1, 2, ...) on every row."""
    ids = rows["profile_id"].to_numpy()
    return pd.concat(
        [
            t.drop(columns="row").assign(profile_id=ids, repeat=r)[
                ["profile_id", "repeat", "fold", "observed", "predicted", "lower", "upper"]
                + [c for c in ("mu", "var", "di", "xd") if c in t]
            ]
            for r, t in enumerate(tables, start=1)
        ],
        ignore_index=True,
    )


def _fit_job(kind: str, **job: Any) -> Any:
    """One job of the layered fit's pool: a CV fold (:func:`fold_predictions`) or an
    interval's CV weights to the mapped area (:func:`mapping.validation.cv_area_weights`)."""
    return fold_predictions(**job) if kind == "fold" else cv_area_weights(**job)


def _run_fit(ctx: StageContext) -> tuple[list[str], Any]:
    """Fit one layered model; cross-validate it on profile locations for every interval."""
    cfg, run = ctx.config, ctx.folder
    tables = ctx.results["training"]
    table, layers = tables["intervals"], tables["layers"]
    features = model_features(cfg)
    intervals = cfg.stocks.intervals()
    template = layered_model(cfg)
    lo, hi = cfg.prediction.quantiles
    sites = (
        pd.concat([layers[["profile_id", *features]], table[["profile_id", *features]]])
        .drop_duplicates("profile_id")
        .reset_index(drop=True)
    )
    calibrates = stages._calibrates(cfg)
    cells = stages.fit_cells(ctx)
    pred_points = None
    if cfg.cv.method == "knndm":
        pred_points = cells if cfg.cv.space == "feature" else stages.prediction_sample(ctx)
    categorical = categorical_covariates(cfg)

    def splitter_seeded(seed: int) -> Any:
        return make_splitter(
            cfg.cv.method,
            cfg.cv.n_splits,
            block_size=cfg.cv.block_size,
            prediction_points=pred_points,
            random_state=seed,
            space=cfg.cv.space,
            categorical_features=categorical or None,
        )

    splitter = splitter_seeded(cfg.seed)
    calibration = cfg.prediction.calibration.model_dump() if calibrates else None
    if cfg.model.weighting == "area":
        weight = fit_weights(sites, cells, features, categorical, cfg.model.weighting_power)
        layers = layers.assign(**{FIT_WEIGHT: weight.loc[layers["profile_id"]].to_numpy()})
        ctx.echo(
            f"[fit] profiles weighted to the mapped area (power "
            f"{cfg.model.weighting_power:g}): weights "
            f"{weight.min():.2f}-{weight.max():.2f}, effective size "
            f"{effective_size(weight.to_numpy()):.0f} of {len(weight)}"
        )
    ctx.echo(
        f"[fit] layered depth model: {layers['profile_id'].nunique()} profiles, "
        f"{len(layers)} layers, {cfg.cv.method}"
        f"{f' ({cfg.cv.space} space)' if cfg.cv.method == 'knndm' else ''} cross-validation"
    )
    n, k = len(sites), len(intervals)
    mean = np.full((n, k), np.nan)
    q = np.full((n, k, 2), np.nan)
    log_mu = np.full((n, k), np.nan)
    log_var = np.full((n, k), np.nan)
    fold = np.full(n, -1)
    folds = list(splitter.split(sites[features]))
    jobs = [
        _fold_job(template, layers, sites, features, train, test, intervals, (lo, hi))
        for train, test in folds
    ]
    # cv.repeats: further partitions, each with its own seed, queued after the first one's;
    # the CV metrics pool them, and the zone totals' regional error averages over them
    # (shared_error); the error models and AOA folds stay the first partition's
    extra = [
        list(splitter_seeded(cfg.seed + r).split(sites[features])) for r in range(1, cfg.cv.repeats)
    ]
    jobs += [
        _fold_job(template, layers, sites, features, train, test, intervals, (lo, hi))
        for partition in extra
        for train, test in partition
    ]
    # Each interval's CV weights to the mapped area need only its profiles and the cells:
    # they are computed in the same pool, after the folds.
    weighted = cfg.cv.weighting == "area"
    rows_of = [stages._interval_rows(table, top, bottom) for top, bottom in intervals]
    if weighted:
        jobs += [
            {"kind": "area", "X": rows[features], "cells": cells, "categorical": categorical}
            for rows in rows_of
        ]
    # The fold models are fitted side by side in the process pool (their forests' per-tree
    # work holds the GIL) while this process fits the model on all profiles.
    results = process_map(_fit_job, jobs, cfg.n_jobs)
    model, texts = fit_layers_recording(template, layers, features)
    fold_results = [next(results) for _ in folds]
    for f, ((_, test), (stats, fold_texts)) in enumerate(zip(folds, fold_results, strict=True)):
        mean[test], q[test] = stats["mean"], stats["quantiles"]
        log_mu[test], log_var[test] = stats["mu"], stats["var"]
        fold[test] = f
        texts += fold_texts
    repeated = []  # per further partition: out-of-fold means, quantiles, folds, log moments
    for partition in extra:
        r_mean, r_q, r_fold = np.full((n, k), np.nan), np.full((n, k, 2), np.nan), np.full(n, -1)
        r_mu, r_var = np.full((n, k), np.nan), np.full((n, k), np.nan)
        for f, (_, test) in enumerate(partition):
            stats, fold_texts = next(results)
            r_mean[test], r_q[test], r_fold[test] = stats["mean"], stats["quantiles"], f
            r_mu[test], r_var[test] = stats["mu"], stats["var"]
            texts += fold_texts
        repeated.append((r_mean, r_q, r_fold, r_mu, r_var))
    counts: dict[str, int] = {}
    for text in texts:
        counts[text] = counts.get(text, 0) + 1
    crs = stages.run_grid(ctx).working_crs  # x, y of the profiles and cells
    record_coordinate_crs(model, crs)
    io.write_model(model, run.layered_model)
    outputs = [run.rel(run.layered_model)]
    position = pd.Series(np.arange(n), index=sites["profile_id"].to_numpy())
    fitted: dict[str, Any] = {}
    summaries = []
    # One AOA for every interval, on all sites (every profile informs the one model),
    # the covariates weighed by how much the level (or the one forest) uses them; each
    # interval's error model learns how its own errors grow with this DI.
    area = None
    if cfg.prediction.aoa or calibrates:
        area = AreaOfApplicability(categorical_features=categorical or None)
        area = area.fit(sites[features], weights=aoa_weights(model), folds=fold)
    # each further partition's DI and extrapolation distance to its own folds' training
    # data (cv_repeats.csv); with calibration.partitions: all the error models learn from
    # every partition's errors
    measured = [] if area is None else [area.cv_measure(sites[features], r[2]) for r in repeated]
    pool = bool(measured) and calibration is not None and calibration["partitions"] == "all"
    for j, (top, bottom) in enumerate(intervals):
        label = interval_label(top, bottom)
        rows = rows_of[j]
        at = position.loc[rows["profile_id"].to_numpy()].to_numpy()
        cv = _cv_result(
            rows,
            mean[at, j],
            q[at, j],
            (log_mu[at, j], log_var[at, j]),
            fold[at],
            (lo, hi),
            type(splitter).__name__,
        )
        further = _repeat_tables(rows, at, j, repeated, measured)
        if further:
            cv.pool_partitions(further)
        said = finish_cv(
            cv,
            rows[features],
            weights=next(results) if weighted else None,
            cv_range=stages.cv_range(cfg),
        )
        if said:
            counts[said] = counts.get(said, 0) + 1
        view = record_coordinate_crs(IntervalView(model, top, bottom, features), crs)
        predictions = cv.predictions.assign(profile_id=rows["profile_id"].to_numpy())
        error_model = None
        if area is not None:
            predictions["di"] = np.asarray(area.train_di_, dtype=float)[at]
            predictions["xd"] = np.asarray(area.train_xd_, dtype=float)[at]
            _, error_model, reason = calibrate_interval(
                view,
                rows[features],
                rows["soc_stock_kg_m2"].to_numpy(float),
                _pooled_errors(predictions, further) if pool else predictions,
                quantiles=(lo, hi),
                calibration=calibration,
                area=area,
            )
            if reason:
                counts[reason] = counts.get(reason, 0) + 1
        result = IntervalFit(
            model=view,
            aoa=area,
            cv=cv,
            predictions=predictions,
            warnings={},
            error_model=error_model,
        )
        outputs += stages._write_fit(ctx, label, (top, bottom), len(rows), features, result, cells)
        if repeated:
            io.write_table(_repeat_table(rows, further), run.cv_repeats(label))
            outputs.append(run.rel(run.cv_repeats(label)))
        else:  # a previous run's partitions must not enter this one's regional error
            io.remove_output(run.cv_repeats(label))
        fitted[label] = view
        summaries.append({"interval": label, "n": len(rows), **cv.pooled, **cv.extra_columns()})
    for text, c in counts.items():
        ctx.echo(f"[fit layered] warning{f' (x{c})' if c > 1 else ''}: {text}")
    io.write_table(pd.DataFrame(summaries), run.cv_summary)
    outputs.append(run.rel(run.cv_summary))
    return outputs, fitted


def aoa_weights(model: LayeredDepthModel) -> Any:
    """The covariate weights of a layered model's AOA: the level forest's importances (the
    one forest's without an anchor), or ``None`` (equal) for a trend without them."""
    trend = model.level_ if model.level_ is not None else model.trend_
    return trend if hasattr(trend, "feature_importances_") else None


def _cv_result(
    rows: pd.DataFrame,
    pred: np.ndarray,
    q: np.ndarray,
    log_moments: tuple[np.ndarray, np.ndarray],
    fold: np.ndarray,
    quantiles: tuple[float, float],
    splitter: str,
) -> CVResult:
    """Out-of-fold predictions of one interval in the per-interval fit's form (with the
    ``mu``, ``var`` columns of the fold models' ``ln``-scale moments, for calibration)."""
    observed = rows["soc_stock_kg_m2"].to_numpy(float)
    predictions = _oof_table(rows, pred, q, fold).assign(mu=log_moments[0], var=log_moments[1])
    per_fold = []
    for f in np.unique(fold[fold >= 0]):
        t = fold == f
        m = metrics_table(observed[t], pred[t], q[t, 0], q[t, 1])
        per_fold.append({"fold": int(f), "n_train": int(np.sum(~t)), **m})
    tested = fold >= 0
    pooled = metrics_table(observed[tested], pred[tested], q[tested, 0], q[tested, 1])
    return CVResult(
        predictions=predictions,
        per_fold=pd.DataFrame(per_fold),
        pooled=pooled,
        quantiles=quantiles,
        splitter=splitter,
    )


# --------------------------------------------------------------------------- predict
def check_extra_depths(cfg: RunConfig, depths: Sequence[str]) -> None:
    """Refuse ``depths`` a run cannot map from its fit: not a layered model, or below its
    deepest layer (before any stage runs: ``socmap predict --depths``)."""
    if cfg.model.depth != "layered":
        raise ModelError("model.depth: any depth needs the layered model (model.depth: layered)")
    for d in depths:
        _, bottom = parse_interval(d)
        if bottom > cfg.model.layers[-1]:
            raise ModelError(
                f"depth {d}: below the deepest layer of the model ({cfg.model.layers[-1]:g} cm)"
            )


def _extra_depths(
    cfg: RunConfig, depths: Sequence[str], echo: Any = None
) -> list[tuple[float, float]]:
    """The intervals of ``depths`` that the run does not map already; with ``echo``, a
    line for each that it does (a run's own depth is then not a silent no-op)."""
    check_extra_depths(cfg, depths)
    have = set(cfg.stocks.intervals())
    out = []
    for d in depths:
        top, bottom = parse_interval(d)
        if (top, bottom) in have:
            if echo is not None:
                echo(f"[predict] {d} cm is one of the run's intervals (stocks.depths): its "
                     f"maps are the run's, maps/{map_stem(top, bottom)}_*.tif")  # fmt: skip
        elif (top, bottom) not in out:
            out.append((top, bottom))
    return out


def _predict_intervals(
    ctx: StageContext,
    model: LayeredDepthModel,
    intervals: list[tuple[float, float]],
    calibration: tuple[dict[tuple[float, float], Any], Any] | None,
) -> dict[str, WrittenMaps]:
    """Maps of intervals with no model file of their own, from the layered model
    (calibrated with the run's error models and AOA, :func:`_error_models`, if any)."""
    cfg, run = ctx.config, ctx.folder
    grid, stack = stages.grid_and_stack(ctx)
    features = model_features(cfg)
    written = {}
    for top, bottom in intervals:
        label = interval_label(top, bottom)
        view: Any = record_coordinate_crs(
            IntervalView(model, top, bottom, features), grid.working_crs
        )
        if calibration is not None:  # between the fitted intervals' calibrated maps
            view = CalibratedIntervalView(view, *calibration)
        pred = predict_grid(
            view, stack, grid, quantiles=cfg.prediction.quantiles, chunks=cfg.prediction.chunks
        )
        written[label] = write_prediction(
            pred,
            run.maps,
            (top, bottom),
            format=cfg.prediction.format,
            label=f"predict {label} cm",
            writer=cfg.prediction.writer,
        )
    return written


def _cells(ctx: StageContext) -> int:
    """Cells of the run's grid (small grids run on in-process threads)."""
    grid = stages.run_grid(ctx)
    return grid.height * grid.width


def _error_models(ctx: StageContext) -> tuple[dict[tuple[float, float], Any], Any] | None:
    """The fitted intervals' error models (``None`` where a fit had too few CV points) and
    their shared AOA, or ``None`` when the run does not calibrate or has none."""
    cfg, run = ctx.config, ctx.folder
    if not stages._calibrates(cfg):
        return None
    models: dict[tuple[float, float], Any] = {}
    aoa = None
    for top, bottom in cfg.stocks.intervals():
        label = interval_label(top, bottom)
        file = run.error_model_file(label)
        models[(top, bottom)] = io.read_model(file) if file.exists() else None
        if models[(top, bottom)] is not None and aoa is None:
            aoa = io.read_model(run.aoa_file(label))
    return (models, aoa) if aoa is not None else None


def calibrated_views(
    fitted: dict[str, Any], calibration: tuple[dict[tuple[float, float], Any], Any] | None
) -> dict[str, Any]:
    """The fitted interval views, each calibrated with the run's error models and AOA
    (:func:`_error_models`) so that its quantile maps are ordered in depth
    (:class:`CalibratedIntervalView`); without them (a run without calibration, or
    without any error model) they stay as they are."""
    if calibration is None:
        return fitted
    models, aoa = calibration
    out = dict(fitted)
    for top, bottom in models:
        label = interval_label(top, bottom)
        # every fitted interval, also one whose own error model failed: it keeps the
        # shallower intervals' excess variance and its maps stay ordered in depth
        if isinstance(fitted.get(label), IntervalView):
            out[label] = CalibratedIntervalView(fitted[label], models, aoa)
    return out


def _layers(ctx: StageContext) -> LayerStore:
    """The run's kept layers (depth_model.shared_layers): the intervals are predicted one
    after another over the same chunks, and the thaw stage maps them again; in this
    process each chunk's layers are predicted once for all of them."""
    if ctx.layers is None:
        ctx.layers = LayerStore(SHARED_LAYERS_BYTES)
    return ctx.layers


def _run_predict(ctx: StageContext) -> tuple[list[str], Any]:
    with shared_layers(store=_layers(ctx)):
        return _predict_all(ctx)


def _predict_all(ctx: StageContext) -> tuple[list[str], Any]:
    fitted = ctx.results["fit"]
    calibration = _error_models(ctx)
    ctx.results["fit"] = calibrated_views(fitted, calibration)
    try:
        outputs, written = stages.PREDICT.run(ctx)
    finally:
        ctx.results["fit"] = fitted
    extra = _extra_depths(ctx.config, ctx.config.prediction.depths)
    if extra:
        model = next(iter(fitted.values())).model  # the layered model every view holds
        with dask_client(
            ctx.scheduler,
            echo=ctx.echo,
            dashboard_address=ctx.config.dashboard,
            n_cells=_cells(ctx),
        ):
            # each warns of its failed cells
            more = _predict_intervals(ctx, model, extra, calibration)
        for files in more.values():
            outputs += [ctx.folder.rel(p) for p in sorted(set(files.values()))]
        notes = ctx.notes.setdefault("predict", {}).setdefault("failed_cells", {})
        notes.update({label: files.failed for label, files in more.items()})
    return outputs, written


def predict_depths(
    cfg: RunConfig,
    depths: Sequence[str],
    *,
    scheduler: str | None = None,
    echo: Any = print,
) -> dict[str, WrittenMaps]:
    """Maps of any intervals (``["0-50", "0-150"]``) from a finished layered run's model.

    Reads ``models/layered_model.joblib`` of ``cfg.output`` (no refit) and writes the
    statistics of every interval not already mapped by the run to ``maps/``.

    Returns
    -------
    dict
        Interval label -> statistic -> path.
    """
    check_extra_depths(cfg, depths)
    ctx = StageContext(config=cfg, out=cfg.output, scheduler=scheduler or cfg.scheduler, echo=echo)
    if not ctx.folder.layered_model.exists():
        raise ModelError(f"{ctx.folder.layered_model}: no layered model; run `socmap fit` first")
    model = io.read_model(ctx.folder.layered_model)
    with (
        dask_client(ctx.scheduler, echo=echo, dashboard_address=cfg.dashboard, n_cells=_cells(ctx)),
        shared_layers(),
    ):
        extra = _extra_depths(cfg, depths, echo)
        return _predict_intervals(ctx, model, extra, _error_models(ctx))


# --------------------------------------------------------------------------- uncertainty
def _run_uncertainty(ctx: StageContext) -> tuple[list[str], Any]:
    # the layered model's stocks are lognormal whatever model.log_transform says
    cfg = ctx.config
    ctx.config = cfg.model_copy(
        update={"model": cfg.model.model_copy(update={"log_transform": True})}
    )
    try:
        return stages.UNCERTAINTY.run(ctx)
    finally:
        ctx.config = cfg


# --------------------------------------------------------------------------- thawed / frozen
def _thaw_inputs(cfg: RunConfig) -> list[Path]:
    al = cfg.active_layer
    return [*stages._zones_inputs(cfg), *([al.path] if al is not None and al.path else [])]


def _active_layer(ctx: StageContext, stack: Any) -> Any:
    """The active-layer thickness (cm) on the grid, lazily, as a variable of ``stack``."""
    cfg = ctx.config
    assert cfg.active_layer is not None
    if cfg.active_layer.path is not None:
        source = CovariateConfig(
            name=ALT, path=cfg.active_layer.path, band=1, resampling="bilinear"
        )
        grid = stages.run_grid(ctx)
        alt = build_stack([source], grid, chunks=cfg.prediction.chunks)[ALT]
    else:
        first = next(iter(stack.data_vars.values()))
        alt = xr.full_like(first, cfg.active_layer.constant, dtype="float32")
    return stack.assign({ALT: alt})


def _run_thaw(ctx: StageContext) -> tuple[list[str], Any]:
    """Storage above (thawed) and below (perennially frozen) the active-layer base per
    zone, down to the deepest layer; thawed + frozen = the 0-300 cm total of the zone
    (with a third state, "no active-layer value", for mapped cells the active-layer raster
    leaves without a value: their stock is in neither state, and a warning says how much).

    Ranges: a zone's thawed storage is the sum of its parts at the run's cumulative
    intervals (:func:`mapping.layers.thaw_parts`: a cell whose active layer ends between
    30 and 100 cm counts towards the 0-30 and 0-100 cm totals, in proportion), and each
    Monte Carlo realization scales every part by its interval's realized total over the
    map's total (uncertainty stage); frozen is the realized 0-``max`` total less the thawed
    (and the cells without an active-layer value, which scale with that total), so the
    states add up in every realization, and an active layer of 100 cm everywhere gives
    the 0-100 cm range itself. The all-zones rows add up the zones realization by
    realization, as the uncertainty stage's all-zones draws do.
    """
    cfg, run = ctx.config, ctx.folder
    assert cfg.zones is not None
    grid, stack = stages.grid_and_stack(ctx)
    model = io.read_model(run.layered_model)
    features = model_features(cfg)
    deepest = float(cfg.model.layers[-1])
    full = _active_layer(ctx, stack)
    thawed = ThawedView(model, features, max_depth=deepest)
    total = IntervalView(model, 0.0, deepest, features)
    for view in (thawed, total):
        record_coordinate_crs(view, grid.working_crs)
    chunks = cfg.prediction.chunks
    with (
        dask_client(
            ctx.scheduler, echo=ctx.echo, dashboard_address=cfg.dashboard, n_cells=_cells(ctx)
        ),
        shared_layers(store=_layers(ctx)),  # the layers the predict stage kept
    ):
        draws = stages._optional_table(run.draws)
        anchors = _thaw_anchors(draws, deepest)
        parts_pg: list[pd.Series] = []
        layout = stages.zone_layout(ctx)
        col = f"storage_{cfg.zones.unit.lower()}"
        maps = {"total": predict_grid(total, stack, grid, chunks=chunks, statistics=("mean",))}
        sums = {"total": zone_totals(maps["total"]["mean"], layout, grid, unit=cfg.zones.unit,
                                     chunks=chunks).set_index("zone")}  # fmt: skip
        if anchors:
            # the thawed stock's parts at the drawn depths (their sum is the thawed stock),
            # every chunk's layers predicted once for all of them: one map, one summation
            parts = ThawedView(model, features, deepest, anchors=anchors)
            record_coordinate_crs(parts, grid.working_crs)
            names = parts.extra_statistics
            pm = predict_grid(parts, full, grid, chunks=chunks, statistics=names)
            labels = [interval_label(0.0, a) for a in anchors]
            by_part = zone_totals(
                {lab: pm[n] for lab, n in zip(labels, names, strict=True)},
                layout, grid, unit=cfg.zones.unit, chunks=chunks,
            )  # fmt: skip
            tables = [by_part[by_part["interval"] == lab].set_index("zone") for lab in labels]
            parts_pg = [t[col] for t in tables]  # each zone's thawed storage by anchor
            sums["thawed"] = tables[0].copy()  # the parts share the thawed map's nodata
            sums["thawed"][col] = sum(parts_pg)
        else:
            maps["thawed"] = predict_grid(thawed, full, grid, chunks=chunks, statistics=("mean",))
            sums["thawed"] = zone_totals(maps["thawed"]["mean"], layout, grid,
                                         unit=cfg.zones.unit, chunks=chunks).set_index("zone")  # fmt: skip
        wide = pd.DataFrame({k: sums[k][col] for k in ("thawed", "total")})
        # mapped cells without an active-layer value (nodata in the raster, or beyond it):
        # the thawed map has no value there, so their stock belongs to neither state
        gap = sums["thawed"]["area_nodata_km2"] - sums["total"]["area_nodata_km2"]
        wide[NO_ALT] = 0.0
        if (gap > 0).any():
            rest = maps["total"]["mean"].where(full[ALT].isnull().data)
            wide[NO_ALT] = zone_totals(
                rest, layout, grid, unit=cfg.zones.unit, chunks=chunks
            ).set_index("zone")[col]
    if (gap > 0).any():
        where = getattr(cfg.active_layer, "path", None) or "active_layer"
        area = float(gap.loc[ALL_ZONES])
        t = sums["total"].loc[ALL_ZONES]
        mapped = float(t["area_km2"] - t["area_nodata_km2"])
        ctx.echo(
            f"[thaw] warning: {where}: {area:.4g} km² of the zones' mapped land "
            f"({100 * area / mapped:.1f} %) has no "
            f"active-layer value; its {wide.loc[ALL_ZONES, NO_ALT]:.3g} {cfg.zones.unit} are "
            f"in neither state ('{NO_ALT}' in zones/thaw_split.csv): give such cells 300 (no "
            "permafrost) or their thickness"
        )
    reals = (
        _thaw_realizations(draws, wide, parts_pg, anchors, stages._optional_table(run.storage), col)
        if anchors
        else {}
    )
    lo, hi = cfg.uncertainty.range
    rows = []
    for zone, r in wide.iterrows():
        share = r["thawed"] / r["total"] if r["total"] > 0 else np.nan
        rest = r[NO_ALT] / r["total"] if r["total"] > 0 else 0.0
        states = [
            ("thawed", r["thawed"], share),
            ("frozen", max(r["total"] - r["thawed"] - r[NO_ALT], 0.0), 1.0 - share - rest),
        ]
        if (wide[NO_ALT] > 0).any():
            states.append((NO_ALT, r[NO_ALT], rest))
        for state, mean, part in states:
            row = {"zone": zone, "state": state, col: mean, "share": part}
            if zone in reals:
                row[f"{col}_lower"] = float(np.percentile(reals[zone][state], lo))
                row[f"{col}_upper"] = float(np.percentile(reals[zone][state], hi))
            rows.append(row)
        rows.append(
            {"zone": zone, "state": f"total 0-{deepest:g} cm", col: r["total"], "share": 1.0}
        )
    out = pd.DataFrame(rows)
    io.write_table(out, run.thaw_split)
    return [run.rel(run.thaw_split)], out


def _thaw_anchors(draws: pd.DataFrame | None, deepest: float) -> list[float]:
    """Bottoms of the drawn intervals from 0 cm down to ``deepest`` (which must be one of
    them); ``[]`` without draws or without the ``0-deepest`` interval (no ranges then)."""
    if draws is None or not len(draws):
        return []
    cum = draws[(draws["top_cm"] == 0) & (draws["bottom_cm"] <= deepest)]
    anchors = sorted({float(b) for b in cum["bottom_cm"]})
    return anchors if anchors and anchors[-1] == deepest else []


def _thaw_realizations(
    draws: pd.DataFrame,
    wide: pd.DataFrame,
    parts: Sequence[pd.Series],
    anchors: Sequence[float],
    storage: pd.DataFrame | None,
    col: str,
) -> dict[str, dict[str, NDArray]]:
    """Per zone and state, the Monte Carlo realizations of its storage (see
    :func:`_run_thaw`), ``parts[k]`` each zone's thawed storage attributed to
    ``anchors[k]``; the all-zones realizations are the zones' sums."""
    if storage is None:
        return {}
    labels = [interval_label(0.0, a) for a in anchors]
    mapped = storage.set_index(["zone", "interval"])[col]
    table = draws.pivot_table(index="realization", columns=["zone", "interval"], values=col)
    out: dict[str, dict[str, NDArray]] = {}
    for zone in wide.index:
        if zone == ALL_ZONES:
            continue
        if not all((zone, lab) in table.columns and (zone, lab) in mapped.index for lab in labels):
            return {}
        scale = [
            table[(zone, lab)].to_numpy(float) / mapped[(zone, lab)]
            if mapped[(zone, lab)] > 0
            else np.ones(len(table))
            for lab in labels
        ]
        thawed = sum(float(part[zone]) * f for part, f in zip(parts, scale, strict=True))
        total = table[(zone, labels[-1])].to_numpy(float)
        none = wide.loc[zone, NO_ALT] * scale[-1]
        frozen = np.maximum(total - thawed - none, 0.0)
        out[zone] = {"thawed": total - none - frozen, "frozen": frozen, NO_ALT: none}
    if ALL_ZONES in wide.index and out:
        out[ALL_ZONES] = {
            s: np.sum([v[s] for v in out.values()], axis=0) for s in ("thawed", "frozen", NO_ALT)
        }
    return out


THAW = Stage(
    name="thaw",
    run=_run_thaw,
    load=lambda ctx: stages._optional_table(ctx.folder.thaw_split),
    config_keys=("active_layer", "zones", "uncertainty"),
    inputs=_thaw_inputs,
    depends=("fit", "uncertainty"),
)


def layered_stages() -> list[Stage]:
    """The stages that differ when ``model.depth`` is ``layered``."""
    return [
        replace(
            stages.STOCKS,
            run=_run_stocks,
            load=_load_stocks,
            config_keys=(*stages.STOCKS.config_keys, "model"),
        ),
        replace(stages.TRAINING, run=_run_training, load=_load_training),
        replace(stages.FIT, run=_run_fit),
        replace(stages.PREDICT, run=_run_predict),
        replace(stages.UNCERTAINTY, run=_run_uncertainty),
    ]
