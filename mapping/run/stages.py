"""The stages of ``socmap run``: each reads its config section, calls the domain rooms and
writes its outputs through :class:`mapping.layout.RunFolder`.

Order and data between stages (``docs/architecture.md``)::

    stocks -> training -> fit -> predict -> zones -> uncertainty -> report

A stage function returns ``(outputs, result)``: the files it wrote (relative to the
output folder) and the in-memory result the later stages use; its ``load`` function
rebuilds that result from the files when the stage is skipped.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mapping import io
from mapping.calibration import CalibratedModel, cross_fitted_coverage
from mapping.cluster import (
    dask_client,
    in_process,
    in_process_scheduler,
    process_map,
    release_memory,
    tls_security,
)
from mapping.config import RunConfig
from mapping.covariates import build_stack, stack_mask, target_grid
from mapping.depths import compute_stocks, left_out_text
from mapping.exceptions import InputError, ModelError
from mapping.extract import extract_at_points
from mapping.grid import Grid
from mapping.predict import (
    PredictionFailureWarning,
    WrittenMaps,
    predict_grid,
    record_coordinate_crs,
    write_prediction,
)
from mapping.profiles import read_horizons
from mapping.report import build_report
from mapping.report.charts import plot_observed_vs_predicted
from mapping.residual_errors import LocalLevel
from mapping.run.checkpoint import write_resumable
from mapping.run.features import (
    build_model,
    categorical_covariates,
    min_profiles,
    model_features,
)
from mapping.run.manifest import digest, package_versions
from mapping.run.preflight import run_zone_layout
from mapping.run.runner import Stage, StageContext
from mapping.run.shared_error import cv_errors, extrapolation_maps, profile_xy, shared_error
from mapping.stac import write_stac
from mapping.uncertainty import (
    draw_chunks,
    independent_pixel_range,
    mean_shifts,
    summarise_draws,
    zone_total_draws,
)
from mapping.units import ALL_ZONES, interval_label
from mapping.validation import (
    cv_moments,
    fit_interval_or_error,
    make_splitter,
    observed_variance,
)
from mapping.zonal import integrate_files
from mapping.zone_error import add_zone_errors, zone_error_sd
from mapping.zones import ZoneLayout

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["default_stages", "grid_and_stack", "prediction_sample", "run_grid", "stage_list"]

log = logging.getLogger("socmap")


# --------------------------------------------------------------------------- stocks
def _stocks_inputs(cfg: RunConfig) -> list[Path]:
    return [cfg.profiles.path]


def read_profiles(cfg: RunConfig) -> Any:
    """The horizon table of the config's profiles, mapped and checked."""
    return read_horizons(
        cfg.profiles.path,
        columns=dict(cfg.profiles.columns),
        layer=cfg.profiles.layer,
        max_rows=cfg.profiles.max_rows,
        crs=cfg.profiles.crs,
    )


def stock_options(cfg: RunConfig) -> dict[str, Any]:
    """Keyword arguments of :func:`mapping.depths.compute_stocks` from the stocks section."""
    return {
        "method": cfg.stocks.method,
        "lam": cfg.stocks.spline_lambda,
        "tolerance_cm": cfg.stocks.depth_tolerance_cm,
        "bulk_density_ptf": cfg.stocks.bulk_density_ptf,
        "source": str(cfg.profiles.path),
        "on_invalid": cfg.stocks.on_invalid,
    }


def _run_stocks(ctx: StageContext) -> tuple[list[str], Any]:
    return write_stocks(ctx, read_profiles(ctx.config))


def write_stocks(ctx: StageContext, horizons: Any) -> tuple[list[str], Any]:
    """The stocks stage's work on a read horizon table: stocks, counts, invalid profiles."""
    cfg, run = ctx.config, ctx.folder
    result = compute_stocks(horizons, cfg.stocks.intervals(), **stock_options(cfg))
    io.write_table(result.stocks, run.stocks)
    io.write_table(result.counts, run.interval_counts)
    written = [run.stocks, run.interval_counts]
    if len(result.invalid):
        io.write_table(result.invalid, run.invalid_profiles)
        written.append(run.invalid_profiles)
    for row in result.counts.itertuples():
        if left_out_text(row):
            ctx.echo(f"[stocks] {row.interval} cm: {row.n_profiles} profiles; {left_out_text(row)}")
    return [run.rel(p) for p in written], result.stocks


def _load_stocks(ctx: StageContext) -> Any:
    return io.read_table(ctx.folder.stocks)


STOCKS = Stage(
    name="stocks",
    run=_run_stocks,
    load=_load_stocks,
    config_keys=("profiles", "stocks"),
    inputs=_stocks_inputs,
)


# --------------------------------------------------------------------------- covariates at profiles
def run_grid(ctx: StageContext) -> Grid:
    """The target Grid, built once per run (kept on ``ctx``); no covariate stack needed."""
    if ctx.grid is None:
        cfg = ctx.config
        grid = target_grid(cfg.grid, cfg.covariates)
        cfg.check_distances(grid.is_geographic)
        ctx.grid = grid
    return ctx.grid


HELD_STACK_BYTES = 256 * 2**20
"""A covariate stack at most this large is held in memory for the whole run when the run's
Dask work stays in this process (a sample-sized grid, :func:`mapping.cluster.in_process`):
the training table, the fit's sample of cells and every interval's prediction then read it
from memory instead of reading and warping the covariate files again each time."""


def grid_and_stack(ctx: StageContext) -> tuple[Grid, xr.Dataset]:
    """The target Grid and the covariate stack, built once per run (kept on ``ctx``): lazy,
    or read into memory once when small and the run is in-process (:data:`HELD_STACK_BYTES`)."""
    grid = run_grid(ctx)
    if ctx.stack is None:
        ctx.stack = build_stack(ctx.config.covariates, grid, chunks=ctx.config.prediction.chunks)
    if not ctx.stack_held and _holds_stack(ctx, grid, ctx.stack):
        ctx.stack = ctx.stack.persist(scheduler=in_process_scheduler(ctx.scheduler))
        ctx.stack_held = True
    return grid, ctx.stack


def _holds_stack(ctx: StageContext, grid: Grid, stack: xr.Dataset) -> bool:
    return stack.nbytes <= HELD_STACK_BYTES and in_process(ctx.scheduler, grid.height * grid.width)


def _covariate_inputs(cfg: RunConfig) -> list[Path]:
    paths = [c.path for c in cfg.covariates]
    if isinstance(cfg.grid.like, Path):
        paths.append(cfg.grid.like)
    return paths


def _run_training(ctx: StageContext) -> tuple[list[str], Any]:
    cfg, run = ctx.config, ctx.folder
    if not cfg.covariates:
        raise InputError(
            f"{cfg.source}: covariates: at least one covariate is needed to fit a model"
        )
    grid, stack = grid_and_stack(ctx)
    stocks: pd.DataFrame = ctx.results["stocks"]
    sites = stocks.drop_duplicates("profile_id")[["profile_id", "lon", "lat"]].reset_index(
        drop=True
    )
    res = extract_at_points(stack, grid, sites, crs=cfg.profiles.crs)
    names = [c.name for c in cfg.covariates]
    good = res.complete()[["profile_id", "x", "y", *names]]
    for name in categorical_covariates(cfg):
        good[name] = good[name].astype("int64")
    table = stocks.merge(good, on="profile_id", how="inner")
    excluded = pd.DataFrame(
        {
            "profile_id": list(res.outside) + list(res.nodata),
            "reason": ["outside grid"] * len(res.outside) + ["covariate nodata"] * len(res.nodata),
        }
    )
    io.write_table(table, run.training)
    io.write_table(excluded, run.excluded_profiles)
    if len(excluded):
        log.warning("%d profiles excluded (outside the grid or on nodata)", len(excluded))
    return [run.rel(run.training), run.rel(run.excluded_profiles)], table


def _load_training(ctx: StageContext) -> Any:
    return io.read_table(ctx.folder.training)


TRAINING = Stage(
    name="training",
    run=_run_training,
    load=_load_training,
    config_keys=("grid", "covariates", "profiles"),
    inputs=_covariate_inputs,
    depends=("stocks",),
)


# --------------------------------------------------------------------------- models
def _interval_rows(table: Any, top: float, bottom: float) -> Any:
    rows = table[(table["top_cm"] == top) & (table["bottom_cm"] == bottom)]
    return rows.reset_index(drop=True)


def _sample_cells(ctx: StageContext, n: int) -> tuple[Any, Any]:
    """Rows and columns of up to ``n`` valid cells (read from a decimated mask)."""
    grid, stack = grid_and_stack(ctx)
    ny, nx = grid.shape
    step = max(1, int(np.ceil(np.sqrt(ny * nx / 250_000))))
    mask = stack_mask(stack)[::step, ::step].values
    rows, cols = np.nonzero(mask)
    rng = np.random.default_rng(ctx.config.seed)
    if len(rows) > n:
        keep = rng.choice(len(rows), n, replace=False)
        rows, cols = rows[keep], cols[keep]
    return rows * step, cols * step


def prediction_sample(ctx: StageContext, n: int = 4000) -> Any:
    """Working-plane coordinates (metres) of up to ``n`` valid cells, for kNNDM."""
    grid, _ = grid_and_stack(ctx)
    x, y = grid.working_xy(*_sample_cells(ctx, n))
    return np.column_stack([x, y])


def prediction_covariates(ctx: StageContext, n: int = 4000) -> Any:
    """The covariates (and working-plane ``x``, ``y``) at :func:`prediction_sample`'s
    cells, for feature-space kNNDM; cells with a nodata covariate are left out."""
    grid, stack = grid_and_stack(ctx)
    # Located in the grid's own CRS (degrees on a geographic grid); extract_at_points
    # returns x, y in the working plane, as for the profiles.
    x, y = grid.xy(*_sample_cells(ctx, n))
    points = pd.DataFrame({"lon": x, "lat": y, "profile_id": np.arange(len(x))})
    res = extract_at_points(stack, grid, points, crs=grid.crs)
    names = [c.name for c in ctx.config.covariates]
    cells = res.complete()[["x", "y", *names]].reset_index(drop=True)
    for name in categorical_covariates(ctx.config):
        cells[name] = cells[name].astype("int64")
    return cells


def fit_cells(ctx: StageContext) -> Any:
    """:func:`prediction_covariates` when the fit needs them (an error model to check,
    feature-space kNNDM, CV weighted to the mapped area), else ``None``."""
    cfg = ctx.config
    needed = _calibrates(cfg) or cfg.cv.space == "feature" or cfg.cv.weighting == "area"
    return prediction_covariates(ctx) if needed else None


def cv_range(cfg: RunConfig) -> dict[str, Any] | None:
    """Keyword arguments of :meth:`mapping.validation.CVResult.bootstrap` (after the
    coordinates) from ``cfg.cv``, or ``None`` without a bootstrap."""
    if cfg.cv.bootstrap == 0:
        return None
    return {"block_m": cfg.cv.bootstrap_block, "n_boot": cfg.cv.bootstrap, "seed": cfg.seed}


def _calibrates(cfg: RunConfig) -> bool:
    """Whether the fit stage fits an error model (regression kriging with calibrate on)."""
    return cfg.prediction.calibrate and cfg.model.type == "regression_kriging"


def _run_fit(ctx: StageContext) -> tuple[list[str], Any]:
    """Fit and cross-validate one model per interval (:func:`mapping.validation.fit_interval`)
    and persist what it returns."""
    cfg = ctx.config
    table = ctx.results["training"]
    features = model_features(cfg)
    template = build_model(cfg)
    pred_points = None
    cells = fit_cells(ctx)
    if cfg.cv.method == "knndm":
        pred_points = cells if cfg.cv.space == "feature" else prediction_sample(ctx)
    calibration = cfg.prediction.calibration.model_dump() if _calibrates(cfg) else None
    outputs: list[str] = []
    fitted: dict[str, Any] = {}
    summaries = []
    jobs: list[dict[str, Any]] = []
    for top, bottom in cfg.stocks.intervals():
        label = interval_label(top, bottom)
        rows = _interval_rows(table, top, bottom)
        if len(rows) < min_profiles(cfg):
            raise ModelError(
                f"interval {label} cm: only {len(rows)} profiles with covariates; at least "
                f"{min_profiles(cfg)} are needed to fit and cross-validate a model "
                "(config: drop the interval from stocks.depths or lower cv.n_splits)"
            )
        splitter = make_splitter(
            cfg.cv.method,
            cfg.cv.n_splits,
            block_size=cfg.cv.block_size,
            prediction_points=pred_points,
            random_state=cfg.seed,
            space=cfg.cv.space,
            categorical_features=categorical_covariates(cfg) or None,
        )
        how = (
            f"{cfg.cv.method} ({cfg.cv.space} space)" if cfg.cv.method == "knndm" else cfg.cv.method
        )
        ctx.echo(f"[fit] {label} cm: {len(rows)} profiles, {how} cross-validation")
        jobs.append(
            {
                "template": template,
                "X": rows[features],
                "y": rows["soc_stock_kg_m2"].to_numpy(float),
                "splitter": splitter,
                "quantiles": cfg.prediction.quantiles,
                "profile_ids": rows["profile_id"].to_numpy(),
                "aoa": cfg.prediction.aoa,
                "categorical": categorical_covariates(cfg),
                "calibration": calibration,
                "area_cells": cells if cfg.cv.weighting == "area" else None,
                "cv_range": cv_range(cfg),
            }
        )
    # The intervals are independent: fitted side by side, one process each (the forests'
    # per-tree Python work holds the GIL, so threads would not share the cores).
    results = process_map(fit_interval_or_error, jobs, cfg.n_jobs)
    for (top, bottom), job, result in zip(cfg.stocks.intervals(), jobs, results, strict=True):
        label, n_rows = interval_label(top, bottom), len(job["y"])
        if isinstance(result, ModelError):
            raise ModelError(
                f"interval {label} cm: {result} (config: {_config_key(str(result))})"
            ) from None
        record_coordinate_crs(result.model, run_grid(ctx).working_crs)  # x, y
        for text, n in result.warnings.items():
            ctx.echo(f"[fit {label} cm] warning{f' (x{n})' if n > 1 else ''}: {text}")
        outputs += _write_fit(ctx, label, (top, bottom), n_rows, features, result, cells)
        fitted[label] = result.model
        summaries.append(
            {"interval": label, "n": n_rows, **result.cv.pooled, **result.cv.extra_columns()}
        )
    io.write_table(pd.DataFrame(summaries), ctx.folder.cv_summary)
    outputs.append(ctx.folder.rel(ctx.folder.cv_summary))
    return outputs, fitted


# which part of the config to change for a fit error: the first key its message points at
_FIT_ERROR_KEYS = {
    "variogram": "model.variogram",
    "log_transform": "model.log_transform",
    "n_neighbors": "model.n_neighbors",
    "max_distance": "model.max_distance",
    "fold": "cv",
    "split": "cv",
    "block": "cv.block_size",
}


def _config_key(message: str) -> str:
    return next((key for word, key in _FIT_ERROR_KEYS.items() if word in message), "model")


def _write_fit(
    ctx: StageContext,
    label: str,
    interval: tuple[float, float],
    n_profiles: int,
    features: list[str],
    result: Any,
    cells: Any = None,
) -> list[str]:
    """Persist one interval's fit: model, AOA, error model and its checks, CV tables, plot
    and metadata."""
    cfg, run = ctx.config, ctx.folder
    calibration: dict[str, Any] | None = None
    if result.error_model is not None:
        calibration = _calibration_check(ctx, label, result, cells)
    io.write_model(result.model, run.model_file(label))
    written = []
    if result.aoa is not None:
        io.write_model(result.aoa, run.aoa_file(label))
        written.append(run.aoa_file(label))
    if result.error_model is None:  # a previous run's error model must not calibrate this one
        for stale in (
            run.error_model_file(label),
            run.error_model_table(label),
            run.reliability_table(label),
            run.coverage_by_di_table(label),
        ):
            io.remove_output(stale)
    else:
        io.write_model(result.error_model, run.error_model_file(label))
        io.write_table(result.error_model.to_frame(), run.error_model_table(label))
        written += [run.error_model_file(label), run.error_model_table(label)]
        written += [
            t for t in (run.reliability_table(label), run.coverage_by_di_table(label)) if t.exists()
        ]
    cv_pred = result.predictions
    io.write_table(cv_pred, run.cv_predictions(label))
    io.write_table(result.cv.summary(), run.cv_metrics(label))
    ok = cv_pred["predicted"].notna()
    plot_observed_vs_predicted(
        cv_pred.loc[ok, "observed"],
        cv_pred.loc[ok, "predicted"],
        lower=cv_pred.loc[ok, "lower"],
        upper=cv_pred.loc[ok, "upper"],
        title=f"SOC stock {label} cm, {cfg.cv.method} CV",
        path=run.observed_vs_predicted(label),
    )
    meta = {
        "interval": label,
        "top_cm": interval[0],
        "bottom_cm": interval[1],
        "n_profiles": n_profiles,
        "features": features,
        "categorical": categorical_covariates(cfg),
        "model": cfg.model.model_dump(),
        "estimator": repr(result.model),
        "cv": {
            "method": cfg.cv.method,
            "space": cfg.cv.space,
            "n_splits": cfg.cv.n_splits,
            "pooled": result.cv.pooled,
        },
        "calibration": calibration,
        "grid": repr(run_grid(ctx)),
        "coordinate_crs": run_grid(ctx).working_crs.to_wkt(),
        "versions": package_versions(),
        "seed": cfg.seed,
    }
    io.write_json(meta, run.model_metadata(label))
    written += [
        run.model_file(label),
        run.cv_predictions(label),
        run.cv_metrics(label),
        run.observed_vs_predicted(label),
        run.model_metadata(label),
    ]
    return [run.rel(p) for p in written]


def _calibration_check(ctx: StageContext, label: str, result: Any, cells: Any) -> dict[str, Any]:
    """Write the cross-fitted reliability and coverage-by-DI tables of an interval's
    error model; return what the report says about it (``metadata.json``)."""
    cfg, run = ctx.config, ctx.folder
    p = result.predictions
    log_scale = bool(getattr(result.model, "log_transform", False))
    mu, var = cv_moments(p, cfg.prediction.quantiles, log=log_scale)
    obs = p["observed"].to_numpy(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        errors = mu - (np.log(obs) if log_scale else obs)
    level = cfg.prediction.quantiles[1] - cfg.prediction.quantiles[0]
    reliability, by_di = cross_fitted_coverage(
        errors,
        var,
        p["di"],
        p["fold"],
        level=level,
        xd=p["xd"] if "xd" in p else None,
        observed_var=observed_variance(obs, log=log_scale),
        range_slope=0.5 * float(getattr(result.error_model, "range_linear", 0.0)),
        **cfg.prediction.calibration.model_dump(
            exclude={"weighting", "partitions", "shared_shape"}
        ),
    )
    if by_di.empty:  # no fold left enough points to cross-fit an error model: no tables
        for table in (run.reliability_table(label), run.coverage_by_di_table(label)):
            io.remove_output(table)
        ctx.echo(
            f"[fit] {label} cm: too few CV points to cross-fit the error model "
            "(fewer than calibration.min_per_bin once a fold is held out): no reliability table"
        )
    else:
        io.write_table(reliability, run.reliability_table(label))
        io.write_table(by_di, run.coverage_by_di_table(label))
    em = result.error_model
    share = None
    if cells is not None and len(cells):
        names = getattr(result.aoa, "feature_names_in_", None)
        X = cells[[str(n) for n in names]] if names is not None else cells[model_features(cfg)]
        di = np.asarray(result.aoa.predict(X)[0], dtype=float)
        share = float(np.mean(~(di <= em.di_max)))  # NaN (no DI) counts as beyond
    return {
        "level": level,
        "di_max": em.di_max,
        "share_beyond_di_max": share,
        "n_points": em.n,
        "range_coef": float(getattr(em, "range_coef", 0.0)),
        "range_linear": float(getattr(em, "range_linear", 0.0)),
    }


def _load_fit(ctx: StageContext) -> Any:
    labels = [interval_label(t, b) for t, b in ctx.config.stocks.intervals()]
    return {label: io.read_model(ctx.folder.model_file(label)) for label in labels}


FIT = Stage(
    name="fit",
    run=_run_fit,
    load=_load_fit,
    config_keys=("model", "cv", "prediction", "seed", "stocks"),
    inputs=lambda cfg: [],
    depends=("training",),
)


# --------------------------------------------------------------------------- prediction
def _run_predict(ctx: StageContext) -> tuple[list[str], Any]:
    cfg, run = ctx.config, ctx.folder
    grid, stack = grid_and_stack(ctx)
    models = ctx.results["fit"]
    outputs: list[str] = []
    written: dict[str, dict[str, Path]] = {}
    failed: dict[str, int] = {}
    assembling: list[WrittenMaps] = []
    for leftover in run.temporaries():  # temporaries of a killed run
        io.remove_output(leftover)
    tls = cfg.tls
    security = None if tls is None else tls_security(tls.ca_file, tls.cert, tls.key)
    with dask_client(
        ctx.scheduler,
        echo=ctx.echo,
        dashboard_address=cfg.dashboard,
        security=security,
        n_cells=grid.height * grid.width,
    ):
        for top, bottom in cfg.stocks.intervals():
            label = interval_label(top, bottom)
            model = models[label]
            aoa = io.read_model(run.aoa_file(label)) if cfg.prediction.aoa else None
            calibrated = _calibrates(cfg) and run.error_model_file(label).exists()
            if calibrated and not isinstance(model, CalibratedModel):  # not yet calibrated
                model = CalibratedModel(
                    model,
                    io.read_model(run.error_model_file(label)),
                    aoa if aoa is not None else io.read_model(run.aoa_file(label)),
                )
            pred = predict_grid(
                model,
                stack,
                grid,
                quantiles=cfg.prediction.quantiles,
                aoa=aoa,
                chunks=cfg.prediction.chunks,
            )
            # Finished chunks are kept in maps/.partial until the maps are in place, so a
            # killed run resumes with them; the key ties them to this stage and model.
            model_file = run.model_file(label)
            parts = [ctx.fingerprints.get("predict"), io.file_checksum(model_file), label]
            if calibrated:
                parts.append(io.file_checksum(run.error_model_file(label)))
            key = digest(parts)
            options: dict[str, Any] = {
                "label": f"predict {label} cm",
                "model": cfg.model.type,
                "writer": cfg.prediction.writer,
            }
            with warnings.catch_warnings():  # counted here, said once below
                warnings.simplefilter("ignore", PredictionFailureWarning)
                if cfg.prediction.format == "cog":
                    # the maps are assembled while the next interval's chunks are predicted
                    files = write_resumable(
                        pred, run.maps, (top, bottom), partial=run.partial, key=key,
                        echo=ctx.echo, wait=False, **options,
                    )  # fmt: skip
                else:
                    files = write_prediction(
                        pred, run.maps, (top, bottom), format=cfg.prediction.format, **options
                    )
            failed[label] = files.failed
            written[label] = dict(files)
            assembling.append(files)
            for p in sorted(set(files.values())):
                outputs.append(run.rel(p))
        for files in assembling:
            files.wait()
    io.remove_output(run.partial)  # chunks of intervals no longer asked for
    report_failures(ctx, "predict", failed)
    return outputs, written


def report_failures(ctx: StageContext, stage: str, failed: dict[str, int]) -> None:
    """Record the cells the model gave no prediction for, per interval, in the stage's
    manifest entry (``failed_cells``), and warn once with their number."""
    ctx.notes.setdefault(stage, {}).setdefault("failed_cells", {}).update(failed)
    total = sum(failed.values())
    if total:
        where = ", ".join(f"{k} cm: {n}" for k, n in failed.items() if n)
        message = (
            f"{total} cell(s) with valid covariates have no prediction ({where}): the "
            "model could not solve them (kriging systems that did not factorise); they "
            "are nodata in the maps"
        )
        warnings.warn(message, PredictionFailureWarning, stacklevel=2)
        ctx.echo(f"[{stage}] warning: {message}")


def _load_predict(ctx: StageContext) -> Any:
    return {
        interval_label(top, bottom): ctx.folder.interval_maps(top, bottom)
        for top, bottom in ctx.config.stocks.intervals()
    }


PREDICT = Stage(
    name="predict",
    run=_run_predict,
    load=_load_predict,
    config_keys=("prediction", "grid", "covariates"),
    inputs=_covariate_inputs,
    depends=("fit",),
)


# --------------------------------------------------------------------------- zone totals
def _zones_inputs(cfg: RunConfig) -> list[Path]:
    return [cfg.zones.path] if cfg.zones is not None else []


def zone_layout(ctx: StageContext) -> ZoneLayout:
    """The zones prepared on the target grid, built once per run (kept on ``ctx``; a run's
    preflight builds them)."""
    if ctx.zones is None:
        ctx.zones = run_zone_layout(ctx.config, run_grid(ctx))
    return ctx.zones


def _run_zones(ctx: StageContext) -> tuple[list[str], Any]:
    cfg, run = ctx.config, ctx.folder
    if cfg.zones is None:
        return [], None
    maps = ctx.results["predict"]
    means = [maps[interval_label(t, b)]["mean"] for t, b in cfg.stocks.intervals()]
    table = integrate_files(
        means,
        cfg.zones.path,
        zone_names=dict(cfg.zones.names),
        zone_field=cfg.zones.field,
        unit=cfg.zones.unit,
        chunks=cfg.prediction.chunks,
        layout=zone_layout(ctx),
    )
    io.write_table(table, run.storage)
    io.write_table(table, run.storage_json)
    _warn_unmapped_zone_area(ctx, table)
    overlap = int(getattr(zone_layout(ctx).source, "overlap_cells", 0))
    if overlap:  # polygons of different zones over the same cells: for the report's notes
        ctx.notes.setdefault("zones", {})["overlap_cells"] = overlap
    return [run.rel(run.storage), run.rel(run.storage_json)], table


#: A zone whose area is unmapped beyond this share is named on the console.
UNMAPPED_SHARE = 0.001


def _warn_unmapped_zone_area(ctx: StageContext, table: pd.DataFrame) -> None:
    """Say where a zone's area has no prediction (a covariate without data there, the
    grid not reaching it): its storage covers the mapped cells only."""
    share = table["area_nodata_km2"] / table["area_km2"].where(table["area_km2"] > 0)
    rows = table.assign(share=share)[share > UNMAPPED_SHARE]
    if rows.empty:
        return
    worst = rows.loc[rows["share"].idxmax()]
    zones = sorted(set(rows["zone"]) - {ALL_ZONES}) or [ALL_ZONES]
    ctx.echo(
        f"[zones] warning: {100 * worst['share']:.1f} % of {worst['zone']}'s area has no "
        f"prediction ({worst['interval']} cm; {len(zones)} zone(s): {', '.join(zones)}): its "
        "storage covers the mapped cells only (a covariate without data there?)"
    )


def _optional_table(path: Path) -> Any:
    """The table a stage wrote, or ``None`` when that stage had nothing to write."""
    return io.read_table(path) if path.exists() else None


def _load_zones(ctx: StageContext) -> Any:
    return _optional_table(ctx.folder.storage)


ZONES = Stage(
    name="zones",
    run=_run_zones,
    load=_load_zones,
    config_keys=("zones",),
    inputs=_zones_inputs,
    depends=("predict",),
)


# --------------------------------------------------------------------------- uncertainty of totals
def _run_uncertainty(ctx: StageContext) -> tuple[list[str], Any]:
    """Monte Carlo ranges of the zone totals (``docs/uncertainty.md``).

    Realizations combine each cell's predicted standard deviation with a Gaussian field
    correlated as the interval's fitted residual variogram, plus an error that every cell
    shares (:func:`shared_error`); lognormal for models on log stocks.
    Tree models without a residual variogram have no correlated draws: the stage then
    writes only the independent-pixel comparison.
    """
    cfg, run = ctx.config, ctx.folder
    assert cfg.zones is not None
    grid = run_grid(ctx)
    maps = ctx.results["predict"]
    labels = [interval_label(t, b) for t, b in cfg.stocks.intervals()]
    chunks = cfg.prediction.chunks
    means = {k: io.open_raster(maps[k]["mean"], chunks=chunks) for k in labels}
    stds = {k: io.open_raster(maps[k]["std"], chunks=chunks) for k in labels}
    names = dict(cfg.zones.names)
    layout = zone_layout(ctx)
    unit = cfg.zones.unit
    lo, hi = cfg.uncertainty.range
    indep = independent_pixel_range(
        means, stds, layout, grid, ranges=(lo, hi), unit=unit, chunks=chunks, names=names
    )
    io.write_table(indep, run.independent_pixel_range)
    release_memory()  # the Monte Carlo's peak need not sit on this pass's freed blocks
    outputs = [run.rel(run.independent_pixel_range)]
    shared = shared_error(ctx, ctx.results["fit"], labels)
    if shared is None:
        return outputs, None
    variograms, common, fraction, _ = shared
    # opened again in the draws' own chunks: each chunk of a map is read once, by the task
    # that needs it, and let go (a rechunk held the hemisphere's maps in memory)
    mc_chunks = draw_chunks(grid, variograms, labels)
    means = {k: io.open_raster(maps[k]["mean"], chunks=mc_chunks) for k in labels}
    stds = {k: io.open_raster(maps[k]["std"], chunks=mc_chunks) for k in labels}
    extra = extrapolation_maps(shared, maps, mc_chunks)
    draws = zone_total_draws(
        means,
        stds,
        layout,
        grid,
        variograms,
        n_realizations=cfg.uncertainty.n_realizations,
        seed=cfg.seed,
        chunks=None,  # sized from the kernel's radius; the draws do not depend on it
        distribution="lognormal" if cfg.model.log_transform else "normal",
        unit=unit,
        common_sd=common,
        shared_fraction=fraction,
        extrapolation_sd=extra,
        local_level=_local_levels(ctx, labels),
        progress=True,
    )
    draws = _zone_errors(ctx, draws, labels, layout, grid)
    summary = summarise_draws(draws, ranges=(lo, hi), unit=unit)
    _report_mean_shifts(ctx, draws)
    keys = ("zone", "zone_code", "interval", "top_cm", "bottom_cm", "lower_pct", "upper_pct")
    pixel = indep.drop(columns=[c for c in keys[2:] if c != "interval"] + ["zone_code"])
    pixel = pixel.rename(
        columns={c: f"independent_pixel_{c}" for c in pixel.columns if c not in keys}
    )
    summary = summary.merge(pixel, on=["interval", "zone"], how="left")
    io.write_table(pd.DataFrame(draws), run.draws)
    io.write_table(summary, run.storage_summary)
    return [*outputs, run.rel(run.draws), run.rel(run.storage_summary)], summary


def _local_levels(ctx: StageContext, labels: list[str]) -> dict[str, LocalLevel] | None:
    """With ``uncertainty.level: local``, each interval's residual level as the cells carry
    it (:class:`mapping.residual_errors.LocalLevel`)."""
    if ctx.config.uncertainty.level != "local":
        return None
    models = ctx.results["fit"]
    # equal levels (a layered model's intervals) are solved once, by zone_total_draws
    return {k: LocalLevel.of_model(models[k]) for k in labels}


def zone_error_inputs(
    ctx: StageContext, labels: list[str], layout: ZoneLayout, grid: Grid
) -> dict[str, tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Per interval, what each zone's error of its mean is made of: the CV table, the
    profiles' out-of-fold errors (``ln`` for log models, NaN where untested; relative to
    the interval's mean stock otherwise), their zone index, their weight to the mapped
    area (1 without ``cv.weighting: area``) and their working-plane coordinates."""
    log_scale = ctx.config.model.log_transform
    training = io.read_table(ctx.folder.training)
    out = {}
    for k in labels:
        cv = io.read_table(ctx.folder.cv_predictions(k))
        # the CV's weights to the mapped area (cv.weighting: area), else one per profile
        weight = cv["weight"].to_numpy(float) if "weight" in cv else np.ones(len(cv))
        e, fold = cv_errors(cv, log=log_scale)
        if log_scale and "mu" in cv:  # the ln-scale error itself, not the mean's
            with np.errstate(divide="ignore", invalid="ignore"):
                e = cv["mu"].to_numpy(float) - np.log(cv["observed"].to_numpy(float))
        e = np.where((fold >= 0) & np.isfinite(e), e, np.nan)
        if not log_scale:  # relative to the interval's mean stock, as the log errors are
            e = e / float(np.nanmean(cv["observed"].to_numpy(float)))
        xy = profile_xy(training, cv["profile_id"])
        rows, cols = grid.rowcol(*grid.from_working(xy[:, 0], xy[:, 1]))
        out[k] = (cv, e, layout.zone_at(rows, cols), weight, xy)
    return out


def _zone_errors(
    ctx: StageContext, draws: pd.DataFrame, labels: list[str], layout: ZoneLayout, grid: Grid
) -> pd.DataFrame:
    """With ``uncertainty.zone_error: cv``, the draws with each zone's error of its mean
    from its own profiles' CV errors (:mod:`mapping.zone_error`)."""
    cfg = ctx.config
    if cfg.uncertainty.zone_error == "none":
        return draws
    log_scale = cfg.model.log_transform
    inputs = zone_error_inputs(ctx, labels, layout, grid)
    errors = {k: v[1] for k, v in inputs.items()}
    zones = {k: v[2] for k, v in inputs.items()}
    weights = {k: v[3] for k, v in inputs.items()}
    table = zone_error_sd(errors, zones, list(layout.names), weights=weights)
    for r in table.itertuples():
        ctx.echo(
            f"[uncertainty] {r.zone}: error of the zone's mean {r.sd:.3g} "
            f"({'ln' if log_scale else 'relative'}; from {r.n_profiles} profiles' CV errors)"
        )
    sd = dict(zip(table["zone"], table["sd"], strict=True))
    return add_zone_errors(
        draws, sd, seed=cfg.seed, distribution="lognormal" if log_scale else "normal"
    )


def _report_mean_shifts(ctx: StageContext, draws: pd.DataFrame) -> None:
    """Warn where the ordering by depth moved a total's draws off the map's total (where a
    deeper interval's map lies below a shallower one's)."""
    totals = ctx.results.get("zones")
    if totals is None:
        return
    shifts = mean_shifts(draws, totals)
    if shifts.empty:
        return
    rows = shifts[shifts["zone"] == ALL_ZONES]
    rows = rows if not rows.empty else shifts
    found = {}
    for r in rows.itertuples():
        found[str(r.interval)] = round(float(r.shift), 4)
        text = (
            f"{r.interval} cm: the Monte Carlo mean of {r.zone} is {100 * r.shift:+.1f} % off the "
            f"maps' total (Monte Carlo noise ±{100 * r.noise:.1f} %): realizations are ordered by "
            "depth, and this interval's map lies below a shallower one's in part of the zone, "
            "where its realizations follow the shallower ones; its range moved with them"
        )
        if ctx.config.model.depth != "layered":
            text += " (per-interval maps are not depth-consistent; model.depth: layered is)"
        ctx.echo(f"[uncertainty] warning: {text}")
        log.warning(text)
    ctx.notes.setdefault("uncertainty", {})["mean_shift"] = found


def _load_uncertainty(ctx: StageContext) -> Any:
    return _optional_table(ctx.folder.storage_summary)


UNCERTAINTY = Stage(
    name="uncertainty",
    run=_run_uncertainty,
    load=_load_uncertainty,
    config_keys=("zones", "uncertainty", "seed"),
    inputs=_zones_inputs,
    depends=("predict", "fit"),
)


# --------------------------------------------------------------------------- report
def _run_report(ctx: StageContext) -> tuple[list[str], Any]:
    cfg = ctx.config
    files = build_report(
        ctx.out,
        config=cfg,
        zones_path=cfg.zones.path if cfg.zones is not None else None,
        zone_field=cfg.zones.field if cfg.zones is not None else None,
        stage="report",
    )
    catalogue = write_stac(ctx.out)
    ctx.echo(
        f"[report] STAC catalogue: {ctx.folder.rel(ctx.folder.stac_collection)} ({len(catalogue) - 1} items)"
    )
    outputs = [ctx.folder.rel(p) for p in [*files.values(), *catalogue]]
    return outputs, files


def _load_report(ctx: StageContext) -> Any:
    return {"index.html": ctx.folder.report_index}


REPORT = Stage(
    name="report",
    run=_run_report,
    load=_load_report,
    config_keys=("zones", "uncertainty", "prediction"),
    inputs=_zones_inputs,
    depends=("zones", "uncertainty", "predict", "fit", "stocks"),
)


def stage_list(cfg: RunConfig) -> list[Stage]:
    """The stages a config asks for (zones only when it names zones)."""
    stages = default_stages()
    return [s for s in stages if s.name not in ("zones", "uncertainty") or cfg.zones is not None]


def default_stages() -> list[Stage]:
    """The stages of ``socmap run``, in order."""
    return [STOCKS, TRAINING, FIT, PREDICT, ZONES, UNCERTAINTY, REPORT]
