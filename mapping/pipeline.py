"""Run the stages of a workflow in order, keep their results, skip what is unchanged.

The pipeline is the one place that knows the output folder::

    OUT/
      manifest.json        config, input checksums, package versions, seed, per-stage status and timings
      stocks/              profile stocks, profile counts per interval
      training/            stocks joined with covariates at the profiles
      models/<interval>/   fitted model + metadata, CV metrics, observed-vs-predicted plot
      maps/                soc_<top>_<bottom>cm_<statistic>.tif
      zones/               storage table
      report/              index.html, report.md, figures/

A stage is skipped when the manifest records it as complete with the same
fingerprint (its config section, the checksums of its inputs and the
fingerprints of the stages it depends on) and its outputs are still in place
with the recorded checksums. The manifest is rewritten (atomically) after every
stage, so a killed run resumes from the last finished stage.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import math
import platform
import time
import uuid
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mapping import io
from mapping.config import RunConfig, format_interval

log = logging.getLogger("socmap")

MANIFEST = "manifest.json"
_PACKAGES = (
    "socmap",
    "numpy",
    "scipy",
    "pandas",
    "xarray",
    "dask",
    "distributed",
    "rasterio",
    "rioxarray",
    "pyproj",
    "shapely",
    "geopandas",
    "pyogrio",
    "scikit-learn",
    "quantile-forest",
    "pykrige",
    "gstools",
)


def package_versions() -> dict[str, str]:
    """Versions of the packages that shape the numbers, plus Python and GDAL."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    try:
        import rasterio

        out["gdal"] = rasterio.__gdal_version__
    except ImportError:  # pragma: no cover
        pass
    return out


def _digest(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class StageContext:
    """What a stage function gets: the config, the output folder and earlier results."""

    config: RunConfig
    out: Path
    results: dict[str, Any] = field(default_factory=dict)
    scheduler: str | None = None
    fingerprints: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Stage:
    """One step of the workflow.

    ``run(ctx)`` does the work and returns ``(outputs, result)``: the paths it
    wrote (relative to the output folder) and an in-memory result for later
    stages. ``load(ctx)`` rebuilds that result from the files when the stage is
    skipped.
    """

    name: str
    run: Callable[[StageContext], tuple[list[str], Any]]
    load: Callable[[StageContext], Any]
    config_keys: tuple[str, ...]
    inputs: Callable[[RunConfig], list[Path]]
    depends: tuple[str, ...] = ()


class Manifest:
    """The run manifest: read, update per stage, written atomically."""

    def __init__(self, out: Path, config: RunConfig) -> None:
        self.path = out / MANIFEST
        self.out = out
        previous: dict[str, Any] = {}
        if self.path.exists():
            try:
                previous = json.loads(self.path.read_text())
            except (OSError, json.JSONDecodeError):
                previous = {}  # a damaged manifest only costs a full re-run
        self.data: dict[str, Any] = {
            "run_id": previous.get("run_id") or uuid.uuid4().hex[:12],
            "created": previous.get("created") or _now(),
            "updated": _now(),
            "config_file": str(config.source) if config.source else None,
            "config": json.loads(config.model_dump_json()),
            "seed": config.seed,
            "versions": package_versions(),
            "inputs": previous.get("inputs", {}),
            "stages": previous.get("stages", {}),
        }

    @property
    def run_id(self) -> str:
        return str(self.data["run_id"])

    def stage(self, name: str) -> dict[str, Any]:
        return dict(self.data["stages"].get(name, {}))

    def is_complete(self, name: str, fingerprint: str) -> bool:
        rec = self.data["stages"].get(name)
        if not rec or rec.get("status") != "complete" or rec.get("fingerprint") != fingerprint:
            return False
        for rel, checksum in rec.get("outputs", {}).items():
            p = self.out / rel
            if not p.exists() or io.file_checksum(p) != checksum:
                return False
        return True

    def record(self, name: str, **fields: Any) -> None:
        self.data["stages"][name] = fields
        self.save()

    def start(self, name: str, order: list[str], **fields: Any) -> None:
        """Record ``name`` as running and every stage after it as outdated."""
        later = order[order.index(name) + 1 :] if name in order else []
        for other in later:
            rec = self.data["stages"].get(other)
            if rec and rec.get("status") == "complete":
                rec["status"] = "outdated"
        self.record(name, status="running", **fields)

    def save(self) -> None:
        self.data["updated"] = _now()
        io.write_json(self.data, self.path)


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def input_checksums(paths: Iterable[Path], cache: dict[str, str]) -> dict[str, str]:
    out = {}
    for p in paths:
        key = str(p)
        if key not in cache:
            cache[key] = io.file_checksum(p)
        out[key] = cache[key]
    return out


def run_stages(
    config: RunConfig,
    stages: list[Stage],
    *,
    until: str | None = None,
    force: bool = False,
    scheduler: str | None = None,
    echo: Callable[[str], None] = print,
    check: bool = True,
) -> StageContext:
    """Run ``stages`` in order (up to and including ``until``), skipping unchanged ones.

    :func:`mapping.preflight.preflight` checks the config, the inputs and the output
    folder first (``check=False`` skips it); nothing is written before it passes. A stage
    is recorded ``running`` before it starts (and the stages after it ``outdated``),
    ``complete`` with its output checksums once its files are in place, and ``failed``
    or ``interrupted`` when it raises; outputs of its previous run that it no longer
    writes are removed.
    """
    out = config.output
    if check:
        from mapping.preflight import preflight

        preflight(config, echo=echo)
    ctx = StageContext(config=config, out=out, scheduler=scheduler or config.scheduler)
    ctx.results["_echo"] = echo  # stages say what they do through the same channel
    manifest = Manifest(out, config)
    cache: dict[str, str] = {}
    fingerprints = ctx.fingerprints
    for stage in stages:
        cfg = json.loads(config.model_dump_json())
        section = {k: cfg.get(k) for k in stage.config_keys}
        inputs = input_checksums(stage.inputs(config), cache)
        manifest.data["inputs"].update(inputs)
        fp = _digest(
            {
                "stage": stage.name,
                "config": section,
                "inputs": inputs,
                "upstream": [fingerprints[d] for d in stage.depends if d in fingerprints],
                "version": manifest.data["versions"].get("socmap"),
            }
        )
        fingerprints[stage.name] = fp
        if not force and manifest.is_complete(stage.name, fp):
            echo(f"[{stage.name}] unchanged, reusing {out}")
            ctx.results[stage.name] = stage.load(ctx)
        else:
            echo(f"[{stage.name}] running")
            t0 = time.perf_counter()
            started = _now()
            rec = manifest.stage(stage.name)  # files of its last run, to clear stale ones
            previous = rec.get("outputs") or rec.get("previous_outputs") or {}
            keep = {"fingerprint": fp, "started": started, "previous_outputs": previous}
            manifest.start(stage.name, [s.name for s in stages], **keep)
            try:
                outputs, result = stage.run(ctx)
            except BaseException as exc:
                status = "failed" if isinstance(exc, Exception) else "interrupted"
                manifest.record(stage.name, status=status, **keep)
                raise
            seconds = time.perf_counter() - t0
            for rel in sorted(set(previous) - set(outputs)):  # stale: no longer written
                io.remove_output(out / rel)
            manifest.record(
                stage.name,
                status="complete",
                fingerprint=fp,
                started=started,
                seconds=round(seconds, 3),
                outputs={rel: io.file_checksum(out / rel) for rel in outputs},
            )
            ctx.results[stage.name] = result
            echo(f"[{stage.name}] done in {seconds:.1f} s")
        if until is not None and stage.name == until:
            break
    return ctx


# --------------------------------------------------------------------------- stages
def interval_label(top: float, bottom: float) -> str:
    """Folder-safe label of a depth interval: ``(0, 30) -> "0-30"``."""
    return format_interval(top, bottom)


def _stocks_inputs(cfg: RunConfig) -> list[Path]:
    return [cfg.profiles.path]


def _run_stocks(ctx: StageContext) -> tuple[list[str], Any]:
    from mapping.depths import compute_stocks
    from mapping.profiles import read_horizons

    cfg = ctx.config
    horizons = read_horizons(
        cfg.profiles.path,
        columns=dict(cfg.profiles.columns),
        layer=cfg.profiles.layer,
        max_rows=cfg.profiles.max_rows,
    )
    result = compute_stocks(
        horizons,
        cfg.stocks.intervals(),
        method=cfg.stocks.method,
        lam=cfg.stocks.spline_lambda,
        tolerance_cm=cfg.stocks.depth_tolerance_cm,
        bulk_density_ptf=cfg.stocks.bulk_density_ptf,
        source=str(cfg.profiles.path),
        on_invalid=cfg.stocks.on_invalid,
    )
    outputs = ["stocks/stocks.csv", "stocks/interval_counts.csv"]
    io.write_table(result.stocks, ctx.out / outputs[0])
    io.write_table(result.counts, ctx.out / outputs[1])
    if len(result.invalid):
        outputs.append("stocks/invalid_profiles.csv")
        io.write_table(result.invalid, ctx.out / outputs[-1])
    return outputs, result.stocks


def _load_stocks(ctx: StageContext) -> Any:
    return io.read_table(ctx.out / "stocks" / "stocks.csv")


STOCKS = Stage(
    name="stocks",
    run=_run_stocks,
    load=_load_stocks,
    config_keys=("profiles", "stocks"),
    inputs=_stocks_inputs,
)


# --------------------------------------------------------------------------- covariates at profiles
def _grid_and_stack(ctx: StageContext) -> tuple[Any, Any]:
    """The target Grid and the lazy covariate stack (cached on the context)."""
    if "_stack" not in ctx.results:
        from mapping.covariates import build_stack, target_grid

        cfg = ctx.config
        grid = target_grid(cfg.grid, cfg.covariates)
        stack = build_stack(cfg.covariates, grid, chunks=cfg.prediction.chunks)
        ctx.results["_stack"] = (grid, stack)
    return ctx.results["_stack"]


def _covariate_inputs(cfg: RunConfig) -> list[Path]:
    paths = [c.path for c in cfg.covariates]
    if isinstance(cfg.grid.like, Path):
        paths.append(cfg.grid.like)
    return paths


def categorical_covariates(cfg: RunConfig) -> list[str]:
    return [c.name for c in cfg.covariates if c.kind == "categorical"]


def _run_training(ctx: StageContext) -> tuple[list[str], Any]:
    import pandas as pd

    from mapping.exceptions import InputError
    from mapping.extract import extract_at_points

    cfg = ctx.config
    if not cfg.covariates:
        raise InputError(
            f"{cfg.source}: covariates: at least one covariate is needed to fit a model"
        )
    grid, stack = _grid_and_stack(ctx)
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
    outputs = ["training/training.parquet", "training/excluded_profiles.csv"]
    io.write_table(table, ctx.out / outputs[0])
    io.write_table(excluded, ctx.out / outputs[1])
    if len(excluded):
        log.warning("%d profiles excluded (outside the grid or on nodata)", len(excluded))
    return outputs, table


def _load_training(ctx: StageContext) -> Any:
    return io.read_table(ctx.out / "training" / "training.parquet")


TRAINING = Stage(
    name="training",
    run=_run_training,
    load=_load_training,
    config_keys=("grid", "covariates", "profiles"),
    inputs=_covariate_inputs,
    depends=("stocks",),
)


# --------------------------------------------------------------------------- models
def build_model(cfg: RunConfig) -> Any:
    """The estimator named by ``cfg.model`` (unfitted), seeded from ``cfg.seed``.

    ``model.params`` go to the tree model (for regression kriging: to its trend).
    """
    from mapping.models import (
        QuantileGradientBoosting,
        QuantileRandomForest,
        RegressionKriging,
        Variogram,
    )

    m = cfg.model
    cats = categorical_covariates(cfg) or None
    params = dict(m.params)

    def trees(kind: str) -> Any:
        if kind == "random_forest":
            return QuantileRandomForest(random_state=cfg.seed, categorical_features=cats, **params)
        if kind == "boosted_trees":
            return QuantileGradientBoosting(
                random_state=cfg.seed, categorical_features=cats, **params
            )
        return _linear_trend(cats, params)

    if m.type != "regression_kriging":
        return trees(m.type)
    v = m.variogram
    variogram: Any = v.model
    if v.psill is not None and v.range is not None:
        variogram = Variogram(
            v.model, psill=v.psill, range=v.range, nugget=v.nugget or 0.0, nu=v.nu or 0.5
        )
    return RegressionKriging(
        trend=trees(m.trend),
        variogram=variogram,
        n_neighbors=m.n_neighbors,
        max_distance=m.max_distance,
        log_transform=m.log_transform,
        nu=v.nu or 0.5,
        cutoff=v.cutoff,
        n_lags=v.n_lags,
    )


def _linear_trend(categorical: list[str] | None, params: dict[str, Any]) -> Any:
    from sklearn.compose import make_column_transformer
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    if not categorical:
        return LinearRegression(**params)
    encode = make_column_transformer(
        (OneHotEncoder(handle_unknown="ignore", drop="first", sparse_output=False), categorical),
        remainder="passthrough",
    )
    return make_pipeline(encode, LinearRegression(**params))


def _interval_rows(table: Any, top: float, bottom: float) -> Any:
    rows = table[(table["top_cm"] == top) & (table["bottom_cm"] == bottom)]
    return rows.reset_index(drop=True)


def model_features(cfg: RunConfig) -> list[str]:
    return ["x", "y", *[c.name for c in cfg.covariates]]


def prediction_sample(ctx: StageContext, n: int = 4000) -> Any:
    """Coordinates of up to ``n`` valid cells, for kNNDM (read from a decimated mask)."""
    import numpy as np

    from mapping.covariates import stack_mask

    grid, stack = _grid_and_stack(ctx)
    ny, nx = grid.shape
    step = max(1, int(np.ceil(np.sqrt(ny * nx / 250_000))))
    mask = stack_mask(stack)[::step, ::step].values
    rows, cols = np.nonzero(mask)
    rng = np.random.default_rng(ctx.config.seed)
    if len(rows) > n:
        keep = rng.choice(len(rows), n, replace=False)
        rows, cols = rows[keep], cols[keep]
    x, y = grid.xy(rows * step, cols * step)
    return np.column_stack([x, y])


def _run_fit(ctx: StageContext) -> tuple[list[str], Any]:
    import joblib
    from sklearn.base import clone

    from mapping.exceptions import ModelError
    from mapping.plots import plot_observed_vs_predicted
    from mapping.preflight import min_profiles
    from mapping.validation import cross_validate_model, make_splitter

    cfg = ctx.config
    table = ctx.results["training"]
    features = model_features(cfg)
    template = build_model(cfg)
    pred_points = prediction_sample(ctx) if cfg.cv.method == "knndm" else None
    outputs: list[str] = []
    fitted: dict[str, Any] = {}
    summaries = []
    for top, bottom in cfg.stocks.intervals():
        label = interval_label(top, bottom)
        rows = _interval_rows(table, top, bottom)
        if len(rows) < min_profiles(cfg):
            raise ModelError(
                f"interval {label} cm: only {len(rows)} profiles with covariates; at least "
                f"{min_profiles(cfg)} are needed to fit and cross-validate a model "
                "(config: drop the interval from stocks.depths or lower cv.n_splits)"
            )
        X, y = rows[features], rows["soc_stock_kg_m2"].to_numpy(float)
        splitter = make_splitter(
            cfg.cv.method,
            cfg.cv.n_splits,
            block_size=cfg.cv.block_size,
            prediction_points=pred_points,
            random_state=cfg.seed,
        )
        echo = ctx.results.get("_echo", print)
        echo(f"[fit] {label} cm: {len(rows)} profiles, {cfg.cv.method} cross-validation")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                cv = cross_validate_model(
                    clone(template), X, y, cv=splitter, quantiles=cfg.prediction.quantiles
                )
                model = clone(template).fit(X, y)
            except ModelError as exc:
                # which part of the config to change: the first key the message points at
                text = str(exc)
                keys = {"variogram": "model.variogram", "log_transform": "model.log_transform",
                        "n_neighbors": "model.n_neighbors", "max_distance": "model.max_distance",
                        "fold": "cv", "split": "cv", "block": "cv.block_size"}  # fmt: skip
                key = next((k for w, k in keys.items() if w in text), "model")
                raise ModelError(f"interval {label} cm: {text} (config: {key})") from None
        _summarise_warnings(caught, f"fit {label} cm", echo)
        folder = f"models/{label}"
        with io.atomic_path(ctx.out / folder / "model.joblib") as tmp:
            joblib.dump(model, tmp)
        if cfg.prediction.aoa:
            aoa = _fit_aoa(cfg, model, X, cv.predictions.sort_values("row")["fold"].to_numpy())
            with io.atomic_path(ctx.out / folder / "aoa.joblib") as tmp:
                joblib.dump(aoa, tmp)
            outputs.append(f"{folder}/aoa.joblib")
        cv_pred = cv.predictions.assign(
            profile_id=rows["profile_id"].to_numpy()[cv.predictions["row"]]
        )
        io.write_table(cv_pred, ctx.out / folder / "cv_predictions.csv")
        metrics = cv.summary()
        io.write_table(metrics, ctx.out / folder / "cv_metrics.csv")
        ok = cv_pred["predicted"].notna()
        plot_observed_vs_predicted(
            cv_pred.loc[ok, "observed"],
            cv_pred.loc[ok, "predicted"],
            lower=cv_pred.loc[ok, "lower"],
            upper=cv_pred.loc[ok, "upper"],
            title=f"SOC stock {label} cm, {cfg.cv.method} CV",
            path=ctx.out / folder / "observed_vs_predicted.png",
        )
        meta = {
            "interval": label,
            "top_cm": top,
            "bottom_cm": bottom,
            "n_profiles": len(rows),
            "features": features,
            "categorical": categorical_covariates(cfg),
            "model": cfg.model.model_dump(),
            "estimator": repr(model),
            "cv": {"method": cfg.cv.method, "n_splits": cfg.cv.n_splits, "pooled": cv.pooled},
            "grid": repr(_grid_and_stack(ctx)[0]),
            "versions": package_versions(),
            "seed": cfg.seed,
        }
        io.write_json(meta, ctx.out / folder / "metadata.json")
        outputs += [
            f"{folder}/model.joblib",
            f"{folder}/cv_predictions.csv",
            f"{folder}/cv_metrics.csv",
            f"{folder}/observed_vs_predicted.png",
            f"{folder}/metadata.json",
        ]
        fitted[label] = model
        summaries.append({"interval": label, "n": len(rows), **cv.pooled})
    import pandas as pd

    io.write_table(pd.DataFrame(summaries), ctx.out / "models" / "cv_summary.csv")
    outputs.append("models/cv_summary.csv")
    return outputs, fitted


def _summarise_warnings(
    caught: list[warnings.WarningMessage], where: str, echo: Callable[[str], None]
) -> None:
    """One line per distinct warning (with a count) instead of a flood from every CV fold."""
    counts: dict[str, int] = {}
    for w in caught:
        text = str(w.message).splitlines()[0]
        counts[text] = counts.get(text, 0) + 1
    for text, n in counts.items():
        echo(f"[{where}] warning{f' (x{n})' if n > 1 else ''}: {text}")


def _load_fit(ctx: StageContext) -> Any:
    import joblib

    return {
        interval_label(t, b): joblib.load(
            ctx.out / "models" / interval_label(t, b) / "model.joblib"
        )
        for t, b in ctx.config.stocks.intervals()
    }


FIT = Stage(
    name="fit",
    run=_run_fit,
    load=_load_fit,
    config_keys=("model", "cv", "prediction", "seed", "stocks"),
    inputs=lambda cfg: [],
    depends=("training",),
)


# --------------------------------------------------------------------------- prediction
PARTIAL = ".partial"
"""Folder in ``maps/`` holding the finished chunks of an unfinished prediction."""


def _run_predict(ctx: StageContext) -> tuple[list[str], Any]:
    import joblib

    from mapping.cluster import dask_client, tls_security
    from mapping.predict import predict_grid, write_prediction

    cfg = ctx.config
    grid, stack = _grid_and_stack(ctx)
    models = ctx.results["fit"]
    echo = ctx.results.get("_echo", print)
    outputs: list[str] = []
    written: dict[str, dict[str, Path]] = {}
    for leftover in (ctx.out / "maps").glob(".*.tmp*"):  # temporaries of a killed run
        io.remove_output(leftover)
    tls = cfg.tls
    security = None if tls is None else tls_security(tls.ca_file, tls.cert, tls.key)
    with dask_client(ctx.scheduler, echo=echo, dashboard_address=cfg.dashboard, security=security):
        for top, bottom in cfg.stocks.intervals():
            label = interval_label(top, bottom)
            aoa = None
            if cfg.prediction.aoa:
                aoa = joblib.load(ctx.out / "models" / label / "aoa.joblib")
            pred = predict_grid(
                models[label],
                stack,
                grid,
                quantiles=cfg.prediction.quantiles,
                aoa=aoa,
                chunks=cfg.prediction.chunks,
            )
            # Finished chunks are kept in maps/.partial until the maps are in place, so a
            # killed run resumes with them; the key ties them to this stage and model.
            model_file = ctx.out / "models" / label / "model.joblib"
            key = _digest([ctx.fingerprints.get("predict"), io.file_checksum(model_file), label])
            files = write_prediction(
                pred,
                ctx.out / "maps",
                (top, bottom),
                format=cfg.prediction.format,
                label=f"predict {label} cm",
                partial=ctx.out / "maps" / PARTIAL if cfg.prediction.format == "cog" else None,
                key=key,
                echo=echo,
            )
            written[label] = files
            for p in sorted(set(files.values())):
                outputs.append(str(Path(p).relative_to(ctx.out)))
    io.remove_output(ctx.out / "maps" / PARTIAL)  # chunks of intervals no longer asked for
    return outputs, written


def _fit_aoa(cfg: RunConfig, model: Any, X: Any, folds: Any) -> Any:
    """Area of applicability on the training covariates, weighted by the model's importances,
    with the threshold from the cross-validation folds (Meyer & Pebesma 2021)."""
    from mapping.aoa import AreaOfApplicability

    trend = getattr(model, "trend_", model)
    weights = trend if hasattr(trend, "feature_importances_") else None
    aoa = AreaOfApplicability(categorical_features=categorical_covariates(cfg) or None)
    return aoa.fit(X, weights=weights, folds=folds)


def _load_predict(ctx: StageContext) -> Any:
    from mapping.predict import map_filename

    out: dict[str, dict[str, Path]] = {}
    for top, bottom in ctx.config.stocks.intervals():
        label = interval_label(top, bottom)
        stem = map_filename(top, bottom, "mean").removesuffix("_mean.tif")
        out[label] = {
            p.stem.removeprefix(stem + "_"): p
            for p in sorted((ctx.out / "maps").glob(stem + "_*.tif"))
        }
    return out


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


def _run_zones(ctx: StageContext) -> tuple[list[str], Any]:
    from mapping.zonal import integrate_files

    cfg = ctx.config
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
    )
    outputs = ["zones/storage.csv", "zones/storage.json"]
    io.write_table(table, ctx.out / outputs[0])
    io.write_table(table, ctx.out / outputs[1])
    return outputs, table


def _optional_table(ctx: StageContext, rel: str) -> Any:
    """The table a stage wrote, or ``None`` when that stage had nothing to write."""
    p = ctx.out / rel
    return io.read_table(p) if p.exists() else None


def _load_zones(ctx: StageContext) -> Any:
    return _optional_table(ctx, "zones/storage.csv")


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
    shares: the residuals' regional level (``residual_mean_sd``) and, in quadrature, the
    trend's regional error seen by spatial cross-validation (``cv_block_error_sd`` of the
    fold-mean errors); lognormal for models on log stocks.
    Tree models without a residual variogram have no correlated draws: the stage then
    writes only the independent-pixel comparison.
    """
    import pandas as pd

    from mapping.exceptions import ModelError
    from mapping.uncertainty import (
        cv_block_error_sd,
        independent_pixel_range,
        residual_mean_sd,
        residual_variogram,
        summarise_draws,
        zone_total_draws,
    )
    from mapping.zonal import load_zone_layout

    cfg = ctx.config
    assert cfg.zones is not None
    grid, _ = _grid_and_stack(ctx)
    maps = ctx.results["predict"]
    models = ctx.results["fit"]
    labels = [interval_label(t, b) for t, b in cfg.stocks.intervals()]
    chunks = cfg.prediction.chunks
    means = {k: io.open_raster(maps[k]["mean"], chunks=chunks) for k in labels}
    stds = {k: io.open_raster(maps[k]["std"], chunks=chunks) for k in labels}
    names = dict(cfg.zones.names)
    layout = load_zone_layout(
        cfg.zones.path, grid, names, zone_field=cfg.zones.field, chunks=chunks
    )
    unit = cfg.zones.unit
    lo, hi = cfg.uncertainty.range
    indep = independent_pixel_range(
        means, stds, layout, grid, ranges=(lo, hi), unit=unit, chunks=chunks, names=names
    )
    outputs = ["zones/independent_pixel_range.csv"]
    io.write_table(indep, ctx.out / outputs[0])
    try:
        variograms = {k: residual_variogram(models[k]) for k in labels}
        level = {k: residual_mean_sd(models[k]) for k in labels}
    except ModelError as exc:
        log.warning("no Monte Carlo ranges: %s", exc)
        return outputs, None
    # the trend's regional error (spread of the kNNDM fold-mean errors beyond their sampling
    # noise) is shared by a region's cells like the residuals' level: add in quadrature
    regional = {
        k: cv_block_error_sd(
            io.read_table(ctx.out / "models" / k / "cv_predictions.csv"),
            log=cfg.model.log_transform,
        )
        for k in labels
    }
    common = {k: math.hypot(level[k], regional[k]) for k in labels}
    log.info(
        "shared error per interval (level, cross-validated regional, total): %s",
        {k: (round(level[k], 4), round(regional[k], 4), round(common[k], 4)) for k in labels},
    )
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
        progress=True,
    )
    summary = summarise_draws(draws, ranges=(lo, hi), unit=unit)
    keys = ("zone", "zone_code", "interval", "top_cm", "bottom_cm", "lower_pct", "upper_pct")
    pixel = indep.drop(columns=[c for c in keys[2:] if c != "interval"] + ["zone_code"])
    pixel = pixel.rename(
        columns={c: f"independent_pixel_{c}" for c in pixel.columns if c not in keys}
    )
    summary = summary.merge(pixel, on=["interval", "zone"], how="left")
    outputs += ["zones/draws.parquet", "zones/storage_summary.csv"]
    io.write_table(pd.DataFrame(draws), ctx.out / outputs[1])
    io.write_table(summary, ctx.out / outputs[2])
    return outputs, summary


def _load_uncertainty(ctx: StageContext) -> Any:
    return _optional_table(ctx, "zones/storage_summary.csv")


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
    from mapping.report import build_report

    cfg = ctx.config
    files = build_report(
        ctx.out,
        config=cfg,
        zones_path=cfg.zones.path if cfg.zones is not None else None,
        zone_field=cfg.zones.field if cfg.zones is not None else None,
    )
    return [str(Path(p).relative_to(ctx.out)) for p in files.values()], files


def _load_report(ctx: StageContext) -> Any:
    return {"index.html": ctx.out / "report" / "index.html"}


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
