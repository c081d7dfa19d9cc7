"""``socmap design``: new profile sites for a fitted run, from its config and folder.

Turns the config into the arguments of :mod:`mapping.design` (grid, covariate stack, zone
layout, the error shared by every cell as the uncertainty stage computes it) and writes the
sites and the expected reductions through :class:`mapping.layout.RunFolder`. Reading the
run's maps into the design's cells and error models (:func:`read_cells`,
:func:`interval_errors`) and the sites' and targets' tables live here too: the design
itself (:mod:`mapping.design`) opens no file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mapping import io
from mapping.calibration import extrapolation_sd, map_log_variances
from mapping.config import RunConfig
from mapping.design import DesignResult, IntervalErrors, Target, greedy_design, parse_target
from mapping.exceptions import InputError
from mapping.models.variogram import Variogram
from mapping.residual_errors import residual_variogram
from mapping.run.features import categorical_covariates
from mapping.run.runner import StageContext
from mapping.run.shared_error import shared_error
from mapping.run.stages import grid_and_stack, zone_layout
from mapping.units import ALL_ZONES, interval_label, parse_interval
from mapping.zones import ZoneCoverage

__all__ = [
    "Cells",
    "DesignRun",
    "design_inputs",
    "interval_errors",
    "reachable_cells",
    "read_cells",
    "result_table",
    "run_design",
    "target_table",
]


class DesignRun:
    """A fitted run made ready for :func:`mapping.design.greedy_design`."""

    def __init__(
        self,
        cfg: RunConfig,
        ctx: StageContext,
        cells: Cells,
        errors: list[IntervalErrors],
        targets: list[Target],
        summary: pd.DataFrame,
    ) -> None:
        self.cfg, self.ctx, self.cells, self.errors = cfg, ctx, cells, errors
        self.targets, self.summary = targets, summary

    def current(self) -> dict[Target, tuple[float, float, float]]:
        """The run's Monte Carlo median and range of every target total."""
        out = {}
        s = self.summary
        col = {
            k: next(c for c in s.columns if c.startswith(f"storage_{k}_"))
            for k in ("median", "lower", "upper")
        }
        for t in self.targets:
            row = s[(s["zone"] == t.zone) & (s["interval"] == t.interval)]
            if len(row):
                r = row.iloc[0]
                out[t] = (float(r[col["median"]]), float(r[col["lower"]]), float(r[col["upper"]]))
        return out


def _check_fitted(cfg: RunConfig) -> None:
    run = StageContext(config=cfg, out=cfg.output).folder
    if cfg.zones is None:
        raise InputError(f"{cfg.source}: zones: a design needs the zones whose totals it shrinks")
    for top, bottom in cfg.stocks.intervals():
        label = interval_label(top, bottom)
        for path in (run.model_file(label), run.map_file(top, bottom, "std")):
            if not path.exists():
                raise InputError(
                    f"{path}: not found; the run is not fitted and predicted "
                    f"(run `socmap run {cfg.source}` first)"
                )
    if not run.storage_summary.exists():
        raise InputError(
            f"{run.storage_summary}: not found; the run has no Monte Carlo ranges of its zone "
            f"totals (run `socmap run {cfg.source}` first)"
        )


def design_inputs(
    cfg: RunConfig, targets: Sequence[str] | None = None, echo: Callable[[str], None] = print
) -> DesignRun:
    """Read a fitted run (the config's output folder) for a design."""
    _check_fitted(cfg)
    ctx = StageContext(config=cfg, out=cfg.output, echo=lambda _m: None)
    run = ctx.folder
    labels = [interval_label(t, b) for t, b in cfg.stocks.intervals()]
    layout = zone_layout(ctx)
    zones = list(layout.names)
    if targets:
        chosen = list(dict.fromkeys(parse_target(t, zones, labels) for t in targets))
    else:
        chosen = [Target(z, k) for k in labels for z in [*zones, ALL_ZONES]]
    grid, stack = grid_and_stack(ctx)
    need = list(dict.fromkeys(t.interval for t in chosen))
    models = {k: io.read_model(run.model_file(k)) for k in labels}
    shared = shared_error(ctx, models, labels)
    if shared is None:
        raise InputError(
            f"{run.models}: the models have no residual variogram; a design needs regression "
            "kriging (model.type: regression_kriging)"
        )
    common = shared.common  # the design takes the shared error as one constant
    echo(f"[design] reading {len(need)} interval(s) of {run.root}")
    cells = read_cells(run, grid, stack, layout, need)
    errors = [
        interval_errors(
            run,
            k,
            cells,
            common[k],
            categorical_covariates(cfg),
            shared.extrapolation.get(k),
            shared.variograms[k],
            models[k],
        )
        for k in need
    ]
    summary = io.read_table(run.storage_summary)
    return DesignRun(cfg, ctx, cells, errors, chosen, summary)


def reachable_cells(
    d: DesignRun,
    *,
    access: Path | None = None,
    max_cost: float | None = None,
    max_distance_km: float | None = None,
    roads: Path | None = None,
) -> np.ndarray | None:
    """Mask of reachable cells: a finite access cost (at most ``max_cost``), or within
    ``max_distance_km`` of the existing profiles (or of the features of ``roads``)."""
    grid = d.ctx.grid
    cells = d.cells
    mask = None
    if access is not None:
        if not Path(access).exists():
            raise InputError(f"{access}: access raster not found")
        cost = np.asarray(io.open_raster_on_grid(access, grid, resampling="nearest")).squeeze()
        c = cost[cells.rows, cells.cols].astype(float)
        nodata = io.raster_info(access).nodata
        ok = np.isfinite(c) & (c != nodata if nodata is not None else True)
        if max_cost is not None:
            ok &= c <= max_cost
        mask = ok
    if max_distance_km is not None:
        from scipy.spatial import cKDTree

        if roads is not None:
            pts = _vector_points(roads, grid)
        else:
            pts = _profile_points(d)
        dist = cKDTree(pts).query(cells.xy)[0]
        ok = dist <= max_distance_km * 1000.0
        mask = ok if mask is None else mask & ok
    return mask


def _profile_points(d: DesignRun) -> np.ndarray:
    import pyproj

    table = io.read_table(d.ctx.folder.training)
    grid = d.ctx.grid
    assert grid is not None  # design_inputs builds it
    t = pyproj.Transformer.from_crs(d.cfg.profiles.crs, grid.crs, always_xy=True)
    gx, gy = t.transform(table["lon"].to_numpy(float), table["lat"].to_numpy(float))
    wx, wy = grid.to_working(np.asarray(gx), np.asarray(gy))
    return np.column_stack([wx, wy])


def _vector_points(path: Path, grid: Any) -> np.ndarray:
    """Vertices of a vector layer's features, densified to half a cell (working CRS)."""
    import shapely

    gdf = io.read_vector(path).to_crs(grid.working_crs)
    step = min(grid.cell_spacing_m()) / 2.0
    return shapely.get_coordinates(shapely.segmentize(gdf.geometry.values, step))


def run_design(
    cfg: RunConfig,
    n: int,
    *,
    targets: Sequence[str] | None = None,
    access: Path | None = None,
    max_cost: float | None = None,
    max_distance_km: float | None = None,
    roads: Path | None = None,
    out: Path | None = None,
    n_candidates: int = 3000,
    max_blocks: int = 2500,
    echo: Callable[[str], None] = print,
) -> tuple[dict[str, Path], DesignResult, pd.DataFrame, pd.DataFrame]:
    """Propose ``n`` sites for the run of ``cfg``; write the GeoPackage and the targets table.

    Returns the written paths, the :class:`~mapping.design.DesignResult`, the table of
    targets (current and expected half-widths) and the table of sites.
    """
    d = design_inputs(cfg, targets, echo)
    reach = reachable_cells(
        d, access=access, max_cost=max_cost, max_distance_km=max_distance_km, roads=roads
    )
    result = greedy_design(
        d.cells.xy,
        d.cells.rows,
        d.cells.cols,
        d.cells.area,
        d.cells.zone_weights,
        d.errors,
        d.targets,
        n,
        reachable=reach,
        n_candidates=n_candidates,
        max_blocks=max_blocks,
        n_existing=int(io.read_table(d.ctx.folder.training)["profile_id"].nunique()),
        seed=cfg.seed,
        echo=echo,
    )
    unc = cfg.uncertainty
    if unc.level != "constant" or unc.zone_error != "none":
        echo(
            f"[design] note: the run's zone ranges have uncertainty.level: {unc.level} and "
            f"zone_error: {unc.zone_error}; the expected reductions take the residuals' level "
            "as constant and leave out each zone's error of its mean, so the refit's ranges "
            'usually shrink more (docs/design.md, "What the expected reduction assumes")'
        )
    sites = result_table(result, d.cells.xy, d.cells.lonlat, (d.cells.rows, d.cells.cols))
    table = target_table(result, d.current())
    run = d.ctx.folder
    sites_path = Path(out) if out is not None else run.design_sites
    targets_path = (
        sites_path.with_name(sites_path.stem + "_targets.csv") if out else run.design_targets
    )
    io.write_points(sites, sites_path)
    io.write_table(table, targets_path)
    return {"sites": sites_path, "targets": targets_path}, result, table, sites


# =============================================================================== tables
def result_table(
    result: DesignResult,
    xy: np.ndarray,
    lonlat: tuple[np.ndarray, np.ndarray],
    rowcol: tuple[np.ndarray, np.ndarray] | None = None,
) -> pd.DataFrame:
    """One row per site: rank, coordinates and the predicted cumulative reduction (%) of
    every target's range after it (``reduction_<zone>_<interval>_pct``)."""
    f = result.range_factor()
    idx = result.cells
    out = pd.DataFrame(
        {
            "rank": np.arange(1, len(idx) + 1),
            "x": xy[idx, 0],
            "y": xy[idx, 1],
            "lon": lonlat[0][idx],
            "lat": lonlat[1][idx],
            "row": rowcol[0][idx] if rowcol is not None else -1,
            "col": rowcol[1][idx] if rowcol is not None else -1,
            "gain_kriging_share": np.round(result.gain_kriging, 4),
            "gain_dissimilarity_share": np.round(result.gain_dissimilarity, 4),
        }
    )
    for j, t in enumerate(result.targets):
        out[f"reduction_{_slug(t)}_pct"] = np.round(100.0 * (1.0 - f[1:, j]), 3)
    return out


def _slug(t: Target) -> str:
    return f"{t.zone.replace(' ', '_')}_{t.interval.replace('-', '_')}"


def target_table(
    result: DesignResult, current: Mapping[Target, tuple[float, float, float]] | None = None
) -> pd.DataFrame:
    """One row per target: predicted range factor and, given the run's current
    ``(median, lower, upper)``, the current and expected half-widths (same unit).

    ``shared_pct``: the share of the total's variance now in the error every cell shares
    (:meth:`DesignResult.shared_share`); ``max_reduction_pct``: the reduction if the sites removed
    every other error (:meth:`DesignResult.floor_factor`), the most any ``n`` sites could
    give under the model.
    """
    f = result.range_factor()[-1]
    floor = result.floor_factor()
    share = result.shared_share()
    rows = []
    for j, t in enumerate(result.targets):
        row: dict[str, Any] = {
            "zone": t.zone,
            "interval": t.interval,
            "n_sites": len(result.cells),
            "range_factor": round(float(f[j]), 5),
            "expected_reduction_pct": round(100.0 * (1.0 - float(f[j])), 3),
            "shared_pct": round(100.0 * float(share[j]), 2),
            "max_reduction_pct": round(100.0 * (1.0 - float(floor[j])), 3),
        }
        if current is not None and t in current:
            med, lo, hi = current[t]
            row["total"] = med
            row["half_width_now"] = (hi - lo) / 2.0
            row["half_width_expected"] = (hi - lo) / 2.0 * float(f[j])
        rows.append(row)
    return pd.DataFrame(rows)


# =============================================================================== a fitted run
@dataclass
class Cells:
    """The land cells of a run's grid that have a prediction in every target interval."""

    rows: np.ndarray
    cols: np.ndarray
    xy: np.ndarray  # working CRS, metres
    lonlat: tuple[np.ndarray, np.ndarray]
    area: np.ndarray
    zone_weights: dict[str, np.ndarray]
    covariates: pd.DataFrame  # x, y (working CRS) and the covariates


def _zone_weights(layout: Any, flat: np.ndarray) -> dict[str, np.ndarray]:
    """Share of every land cell (flat grid indices) in each zone of a ``ZoneLayout``."""
    ny, nx = layout.grid.shape
    out = {name: np.zeros(flat.size) for name in layout.names}
    pos = np.full(ny * nx, -1, dtype=np.int64)
    pos[flat] = np.arange(flat.size)
    if isinstance(layout.source, ZoneCoverage):
        index, (p_cell, p_zone, p_frac) = layout.source.block(slice(0, ny), slice(0, nx))
        index = index.ravel()
    else:
        index = np.asarray(layout.source).ravel()
        p_cell = np.zeros(0, np.int64)
        p_zone = p_cell
        p_frac = np.zeros(0)
    for i, name in enumerate(layout.names):
        out[name] += (index[flat] == i).astype(float)
        sel = (p_zone == i) & (pos[p_cell] >= 0)
        np.add.at(out[name], pos[p_cell[sel]], p_frac[sel])
    return out


def read_cells(
    run: Any, grid: Any, stack: Any, layout: Any, labels: Sequence[str], *, coord_names=("x", "y")
) -> Cells:
    """Land cells with a mean and std in every interval of ``labels``, their covariates,
    areas and zone shares (maps read through ``run``, a :class:`mapping.layout.RunFolder`)."""
    import pyproj

    land = np.ones(grid.shape, bool)
    for label in labels:
        top, bottom = parse_interval(label)
        for stat in ("mean", "std"):
            path = run.map_file(top, bottom, stat)
            if not path.exists():
                raise InputError(f"{path}: map not found; run `socmap run` on the config first")
            a = np.asarray(io.open_raster(path, chunks=None)).squeeze()
            land &= np.isfinite(a)
    names = list(stack.data_vars)
    values = {k: np.asarray(stack[k].values).reshape(grid.shape) for k in names}
    for a in values.values():
        land &= np.isfinite(a)
    rows, cols = np.nonzero(land)
    flat = rows * grid.shape[1] + cols
    x, y = grid.working_xy(rows, cols)
    gx, gy = grid.xy(rows, cols)
    lon, lat = pyproj.Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True).transform(gx, gy)
    cov = pd.DataFrame({coord_names[0]: x, coord_names[1]: y} | {k: values[k][land] for k in names})
    area = np.asarray(grid.cell_area())[land]
    return Cells(
        rows=rows,
        cols=cols,
        xy=np.column_stack([x, y]),
        lonlat=(np.asarray(lon), np.asarray(lat)),
        area=area,
        zone_weights=_zone_weights(layout, flat),
        covariates=cov,
    )


def interval_errors(
    run: Any,
    label: str,
    cells: Cells,
    common_sd: float,
    categorical: Sequence[str] = (),
    extrapolation: tuple[Any, float] | None = None,
    correlation: Variogram | None = None,
    model: Any = None,
) -> IntervalErrors:
    """The error model of interval ``label`` of a fitted run on ``cells``; ``extrapolation``
    the ``(error model, reference DI)`` of the shared extrapolation error
    (:class:`mapping.run.shared_error.SharedError`), read from the median map too;
    ``correlation`` the variogram whose correlation the cells' errors have (default the
    residual variogram, which gives the noise of a new observation either way); ``model``
    the interval's fitted model when the caller has read it (else read from the run)."""
    top, bottom = parse_interval(label)
    mean = np.asarray(io.open_raster(run.map_file(top, bottom, "mean"), chunks=None)).squeeze()
    std = np.asarray(io.open_raster(run.map_file(top, bottom, "std"), chunks=None)).squeeze()
    if model is None:
        model_file = run.model_file(label)
        if not model_file.exists():
            raise InputError(f"{model_file}: no fitted model for interval {label}")
        model = io.read_model(model_file)
    variogram = residual_variogram(model)
    log = bool(getattr(model, "log_transform", False))
    if extrapolation is not None:
        em = extrapolation[0]  # read with it
    elif run.error_model_file(label).exists():
        em = io.read_model(run.error_model_file(label))
    else:
        em = None
    aoa = io.read_model(run.aoa_file(label)) if run.aoa_file(label).exists() else None
    noise = float(em.noise_var) if em is not None and em.noise_var > 0 else float(variogram.nugget)
    out = IntervalErrors(
        label=label,
        mean=mean[cells.rows, cells.cols].astype(float),
        std=std[cells.rows, cells.cols].astype(float),
        variogram=variogram if correlation is None else correlation,
        log=log,
        common_sd=float(common_sd),
        noise_var=noise,
    )
    if em is not None and aoa is not None:
        X = cells.covariates[list(aoa.layout_.names)].copy()
        for name in categorical:
            if name in X:
                X[name] = X[name].astype("int64")
        out.features, out.group = aoa.design_space(X)
        if hasattr(aoa, "lower_"):  # the DI and the extrapolation distance, one encoding
            out.di, _, xd = aoa.measure(X)
        else:  # an AOA saved before the training range: no range term
            out.di = aoa.predict(X)[0]
        # an error model with a second curve for the shared excess: the DI update of the
        # design follows that curve, as the excess it lowers does (extrapolation_sd)
        curve = getattr(em, "shared", None)
        out.factor = em.factor if curve is None or extrapolation is None else curve.factor
        out.additive = em.kind == "additive"
        out.di_undefined = float(em.di_max) + 1.0
    median = None
    if log and run.map_file(top, bottom, "median").exists():
        median = np.asarray(
            io.open_raster(run.map_file(top, bottom, "median"), chunks=None)
        ).squeeze()[cells.rows, cells.cols]
    if em is not None and aoa is not None and em.has_range_term and hasattr(aoa, "lower_"):
        _range_inputs(out, em, aoa, xd, median)
    if extrapolation is not None:
        if median is None:
            raise InputError(f"{run.map_file(top, bottom, 'median')}: map not found")
        out.extra_sd = extrapolation_sd(out.mean, median, out.std, *extrapolation, di=out.di)
    return out


def _range_inputs(
    out: IntervalErrors, em: Any, aoa: Any, xd: np.ndarray, median: np.ndarray | None
) -> None:
    """Set ``out``'s range term (:attr:`IntervalErrors.range_var`), box and coefficients
    from the error model ``em``, the AOA and the cells' extrapolation distance ``xd``.

    A log model's term is what its calibrated variance holds above the error model's
    variance without it (the model's own variance from the mean and median maps, as
    :func:`mapping.calibration.extrapolation_sd` reads it); otherwise ``min(max(b xd²,
    a xd), v)``, exact where the term's cap does not bind."""
    md = float(aoa.mean_distance_)
    out.box = (np.asarray(aoa.lower_, float) / md, np.asarray(aoa.upper_, float) / md)
    out.range_coef = float(em.range_coef)
    out.range_linear = float(em.range_linear)
    x = np.nan_to_num(np.asarray(xd, float), nan=0.0)
    g = np.maximum(out.range_coef * x**2, out.range_linear * x)
    if median is not None and out.di is not None:
        v, s2 = map_log_variances(out.mean, median, out.std)
        with np.errstate(invalid="ignore"):
            rt = np.minimum(np.maximum(v - em.variance(s2, out.di), 0.0), g)
    else:
        rt = np.minimum(g, out.variance())
    out.range_var = np.where((x > 0) & np.isfinite(rt), rt, 0.0)
