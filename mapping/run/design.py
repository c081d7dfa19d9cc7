"""``socmap design``: new profile sites for a fitted run, from its config and folder.

Turns the config into the arguments of :mod:`mapping.design` (grid, covariate stack, zone
layout, the error shared by every cell as the uncertainty stage computes it) and writes the
sites and the expected reductions through :class:`mapping.layout.RunFolder`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mapping import io
from mapping.config import RunConfig
from mapping.design import (
    Cells,
    DesignResult,
    IntervalErrors,
    Target,
    greedy_design,
    interval_errors,
    parse_target,
    read_cells,
    result_table,
    target_table,
)
from mapping.exceptions import InputError
from mapping.run.features import categorical_covariates
from mapping.run.runner import StageContext
from mapping.run.shared_error import shared_error
from mapping.run.stages import grid_and_stack, zone_layout
from mapping.units import interval_label

__all__ = ["DesignRun", "design_inputs", "reachable_cells", "run_design"]


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
        chosen = [Target(z, k) for k in labels for z in [*zones, "all zones"]]
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
            grid,
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
