"""Cheap checks of a whole run, before any expensive work and before anything is written.

``socmap run`` (and ``fit``/``predict``) call :func:`preflight` before the first stage;
``socmap validate`` calls it and prints its report. Everything a user can get wrong in
the inputs is found here in seconds, so a run does not fail after an hour of fitting on
a bad zone file, and a failed run leaves its output folder exactly as it was: nothing is
written until every check has passed.

Checked, in order of cost:

1. the output folder can be created or written (its nearest existing ancestor is a
   writable folder; the stage sub-folders that exist are folders);
2. the scheduler spec and the bulk-density PTF name are understood;
3. the horizon table: read and checked row by row and profile by profile
   (:func:`mapping.profiles.check_horizons`, the same rules the stocks stage applies);
4. the covariates: headers (missing, truncated, no CRS), overlap with the target grid,
   and a decimated read of each (all nodata, no data on the grid), as
   :func:`mapping.covariates.summarize_stack` does;
5. the profiles lie on the grid, and enough of them reach every depth interval to fit
   and cross-validate a model;
6. the zones: polygons are read, their field checked and their exact coverage computed
   on a coarse version of the grid (at most 256 cells a side); a zone raster's header is
   read and its codes sampled on the coarse grid (an exact pass over the whole raster
   only when the sample finds no zone).

Not checked here (they need the expensive work itself): covariate values at the
profiles (nodata under every profile shows in the training stage) and model fitting.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mapping import io
from mapping.bulk_density import get_ptf
from mapping.cluster import scheduler_kind
from mapping.config import RunConfig
from mapping.covariates import _crs_name, _fmt_bounds, build_stack, summarize_stack, target_grid
from mapping.exceptions import ConfigError, InputError, MappingError, OutputError
from mapping.grid import Grid
from mapping.layout import RunFolder
from mapping.profiles import check_horizons, read_horizons, served_depth
from mapping.randomfield import lattice_width_problem
from mapping.run.features import build_model, categorical_covariates, min_profiles, model_features
from mapping.units import format_interval
from mapping.zones import (
    VECTOR_SUFFIXES,
    ZoneLayout,
    check_zone_names,
    load_zone_layout,
    prepare_zones,
    zone_coverage_from_polygons,
    zone_resampling,
)

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["PreflightReport", "check_output_folder", "min_profiles", "preflight"]

COARSE_CELLS = 256


@dataclass
class PreflightReport:
    """What the checks found; :meth:`lines` is what ``socmap validate`` prints."""

    config: RunConfig
    n_horizons: int = 0
    n_profiles: int = 0
    n_on_grid: int | None = None
    per_interval: dict[str, int] = field(default_factory=dict)
    stack_lines: list[str] = field(default_factory=list)
    zones: str | None = None
    output_state: str = ""
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    #: The target grid and the lazy covariate stack the checks built; a run starts from
    #: them instead of building them again.
    grid: Grid | None = field(default=None, repr=False)
    stack: xr.Dataset | None = field(default=None, repr=False)
    #: The zones prepared on the grid (a run's checks only: every cell's code is checked
    #: against ``zones.names`` before the first stage, and the stages reuse the layout).
    layout: ZoneLayout | None = field(default=None, repr=False)

    def paths(self) -> dict[str, str]:
        """Every path of the run, resolved (absolute, symlinks followed)."""
        cfg = self.config
        out = {
            "config": str(cfg.source),
            "output": str(cfg.output),
            "profiles": str(cfg.profiles.path),
        }
        if isinstance(cfg.grid.like, Path):
            out["grid.like"] = str(cfg.grid.like)
        for c in cfg.covariates:
            out[f"covariates.{c.name}"] = str(c.path)
        if cfg.zones is not None:
            out["zones"] = str(cfg.zones.path)
        if cfg.active_layer is not None and cfg.active_layer.path is not None:
            out["active_layer"] = str(cfg.active_layer.path)
        return out

    def lines(self) -> list[str]:
        cfg = self.config
        lines = ["paths (resolved):"]
        paths = self.paths()
        width = max(len(k) for k in paths)
        lines += [f"  {k:<{width}}  {v}" for k, v in paths.items()]
        lines.append(f"output: {self.output_state}")
        where = f", {self.n_on_grid} on the grid" if self.n_on_grid is not None else ""
        lines.append(
            f"profiles: {self.n_profiles} valid ({self.n_horizons} horizons){where}; "
            f"depths {', '.join(cfg.stocks.depths)} ({cfg.stocks.method})"
        )
        if self.per_interval:
            counts = ", ".join(f"{k} cm: {v}" for k, v in self.per_interval.items())
            lines.append(f"  profiles on the grid reaching each interval: {counts}")
        lines += self.stack_lines
        if self.zones:
            lines.append(f"zones: {self.zones}")
        lines += [f"warning: {w}" for w in self.warnings]
        return lines


# --------------------------------------------------------------------------- output
def check_output_folder(path: str | os.PathLike[str], key: str = "output") -> str:
    """Raise :class:`OutputError` unless ``path`` can be written as a run's output folder.

    Nothing is created: a missing folder passes when its nearest existing ancestor is a
    writable folder. Returns a short description (``"will be created"``, ...).
    """
    p = Path(path)
    if p.exists():
        if not p.is_dir():
            raise OutputError(f"{key}: {p} exists and is not a folder")
        if not os.access(p, os.W_OK | os.X_OK):
            raise OutputError(f"{key}: {p}: output folder is not writable")
        for name in RunFolder.STAGE_FOLDERS:
            sub = p / name
            if sub.exists() and not sub.is_dir():
                raise OutputError(f"{key}: {sub} is a file where the run writes a folder")
        manifest = RunFolder(p).manifest
        return (
            "exists, has a manifest (unchanged stages are reused)"
            if manifest.exists()
            else "exists"
        )
    ancestor = p.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputError(f"{key}: cannot create {p}: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise OutputError(f"{key}: cannot create {p}: {ancestor} is not writable")
    return "will be created"


# --------------------------------------------------------------------------- the checks
def _config_error(cfg: RunConfig, key: str, exc: MappingError) -> ConfigError:
    return ConfigError(f"{cfg.source}: {key}: {exc}")


def _profiles(cfg: RunConfig) -> pd.DataFrame:

    horizons = read_horizons(
        cfg.profiles.path,
        columns=dict(cfg.profiles.columns),
        layer=cfg.profiles.layer,
        max_rows=cfg.profiles.max_rows,
        crs=cfg.profiles.crs,
    )
    valid, _ = check_horizons(
        horizons,
        str(cfg.profiles.path),
        cfg.stocks.on_invalid,
        tolerance_cm=cfg.stocks.depth_tolerance_cm,
    )
    return valid


def _coarse(grid: Any, cells: int = COARSE_CELLS) -> Any:
    """The grid with cells ``f`` times larger, at most ``cells`` a side (same origin)."""
    from affine import Affine

    ny, nx = grid.shape
    f = max(1, math.ceil(max(ny, nx) / cells))
    if f == 1:
        return grid
    return Grid(
        grid.crs, grid.transform @ Affine.scale(f, f), (math.ceil(ny / f), math.ceil(nx / f))
    )


def _on_grid(cfg: RunConfig, valid: pd.DataFrame, grid: Any) -> tuple[int, dict[str, int]]:
    """Profiles inside the grid, and how many of those reach each depth interval."""
    import pyproj

    g = valid.groupby("profile_id", sort=False)
    sites = g.agg(lon=("lon", "first"), lat=("lat", "first"), top=("top_cm", "min"))
    try:
        to_grid = pyproj.Transformer.from_crs(
            pyproj.CRS.from_user_input(cfg.profiles.crs), grid.crs, always_xy=True
        )
    except pyproj.exceptions.CRSError as exc:
        raise ConfigError(
            f"{cfg.source}: profiles.crs: {cfg.profiles.crs!r} is not understood ({exc})"
        ) from None
    x, y = to_grid.transform(sites["lon"].to_numpy(), sites["lat"].to_numpy(), errcheck=False)
    rows, cols = grid.rowcol(x, y)
    inside = grid.contains(rows, cols) & np.isfinite(x) & np.isfinite(y)
    if not inside.any():
        raise InputError(
            f"{cfg.profiles.path}: none of the {len(sites)} profiles lies on the grid "
            f"({_crs_name(grid.crs)}, bounds {_fmt_bounds(grid.bounds)}); check lon/lat and "
            f"profiles.crs ({cfg.profiles.crs})"
        )
    tol = cfg.stocks.depth_tolerance_cm
    on = sites[inside]
    reach = served_depth(valid, tol).reindex(on.index).to_numpy()
    counts = {}
    for top, bottom in cfg.stocks.intervals():
        n = int(((on["top"].to_numpy() <= top + tol) & (reach >= bottom - tol)).sum())
        counts[format_interval(top, bottom)] = n
    return int(inside.sum()), counts


def _too_few(cfg: RunConfig, counts: dict[str, int]) -> str | None:
    need = min_profiles(cfg)
    short = [(label, n) for label, n in counts.items() if n < need]
    if not short:
        return None
    label, n = short[0]
    return (
        f"{cfg.profiles.path}: only {n} profiles on the grid reach {label} cm; at least "
        f"{need} are needed to fit and cross-validate a model (stocks.depths)"
    )


def run_zone_layout(cfg: RunConfig, grid: Grid) -> ZoneLayout:
    """The run's zones on ``grid``: named codes only (``zones.names``), ``zones.nodata``
    left out."""
    z = cfg.zones
    assert z is not None
    return load_zone_layout(
        z.path,
        grid,
        dict(z.names),
        zone_field=z.field,
        chunks=cfg.prediction.chunks,
        zone_nodata=z.nodata,
        named_only=True,
    )


def _zones(cfg: RunConfig, grid: Any) -> str:
    """Check the zone file against the grid; describe what was found."""

    z = cfg.zones
    assert z is not None
    path = Path(z.path)
    coarse = _coarse(grid)
    if path.suffix.lower() in VECTOR_SUFFIXES:
        gdf = io.read_zones_vector(path)
        name = z.field
        if name is None:
            fields = [c for c in gdf.columns if c != gdf.geometry.name]
            if len(fields) != 1:
                raise ConfigError(
                    f"{cfg.source}: zones.field: required for {path.name}, one of: "
                    f"{', '.join(map(str, fields)) or '(none)'}"
                )
            name = str(fields[0])
        try:
            with warnings.catch_warnings():  # overlaps are reported by the zones stage
                warnings.simplefilter("ignore")
                cov = zone_coverage_from_polygons(
                    gdf, coarse, name, dict(z.names), zone_nodata=z.nodata
                )
            if z.names:
                check_zone_names([int(c) for c in cov.codes], z.names)
        except MappingError as exc:
            if "covers any cell" in str(exc):
                raise InputError(
                    f"{path}: no zone polygon lies on the grid ({_grid_text(grid)})"
                ) from None
            raise type(exc)(f"{path}: {exc}") from None
        return f"{len(cov.codes)} zone(s) on the grid from polygons, field {name!r}"
    codes = [c for c in _raster_zone_codes(path, grid, coarse) if c not in z.nodata]
    if z.names:
        try:
            check_zone_names(codes, z.names)
        except InputError as exc:
            raise InputError(f"{path}: {exc}") from None
    elif 0 in codes and len(codes) > 1:
        warnings.warn(
            f"{path}: zone code 0 is a zone of its own, in the all-zones total (a background "
            "the file does not declare as nodata? list it in zones.nodata)",
            UserWarning,
            stacklevel=2,
        )
    return f"{len(codes)} zone code(s) on the grid from a raster: {', '.join(map(str, codes[:12]))}"


def _grid_text(grid: Any) -> str:

    return f"{_crs_name(grid.crs)}, bounds {_fmt_bounds(grid.bounds)}"


def _raster_zone_codes(path: Path, grid: Any, coarse: Any) -> list[int]:
    from rasterio.enums import Resampling
    from rasterio.warp import reproject

    info = io.raster_info(path)
    data, transform, _ = io.read_decimated(info, max_size=4 * COARSE_CELLS)
    values = data.astype("float64")
    if info.nodata is not None:
        values[values == info.nodata] = np.nan
    sampled = np.full(coarse.shape, np.nan)
    reproject(values, sampled, src_transform=transform, src_crs=info.crs.to_wkt(),
              dst_transform=coarse.transform, dst_crs=coarse.crs.to_wkt(), src_nodata=np.nan,
              dst_nodata=np.nan, resampling=Resampling.nearest)  # fmt: skip
    found = np.unique(sampled[np.isfinite(sampled)])
    if found.size:
        return [int(c) for c in found]
    # The sample can miss small zones: one exact pass over the raster warped onto the grid.

    resampling, scale = zone_resampling(path, grid)
    zones = io.open_raster_on_grid(path, grid, resampling=resampling, scale=scale)
    try:
        layout = prepare_zones(zones, grid)
    except InputError:
        raise InputError(f"{path}: no zone code falls on the grid ({_grid_text(grid)})") from None
    return [int(c) for c in layout.codes]


def _model(cfg: RunConfig) -> str:
    """Build the configured model and fit its trend to a few synthetic rows.

    ``model.params`` is a free mapping passed to the estimator; an unknown name or a
    value of the wrong type shows only when the estimator is built or fitted. Fitting
    the trend (not the kriging) to 40 random rows takes a fraction of a second.
    """
    from sklearn.base import clone

    try:
        model = build_model(cfg)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{cfg.source}: model.params: {_first_line(exc)}") from None
    trend = getattr(model, "trend", model)
    rng = np.random.default_rng(0)
    n = 40
    cats = set(categorical_covariates(cfg))
    X = pd.DataFrame(
        {
            name: rng.integers(1, 4, n) if name in cats else rng.normal(size=n)
            for name in model_features(cfg)
        }
    )
    probe = clone(trend)
    n_trees = probe.get_params().get("n_estimators")
    if isinstance(n_trees, int) and n_trees > 2:  # two trees show a bad parameter as well as 200
        probe.set_params(n_estimators=2)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            probe.fit(X, rng.gamma(2.0, 5.0, n))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{cfg.source}: model.params: {_first_line(exc)}") from None
    return type(model).__name__


def _first_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def preflight(
    cfg: RunConfig,
    *,
    echo: Callable[[str], None] | None = None,
    monte_carlo: bool = True,
) -> PreflightReport:
    """Check a run's inputs and output folder without writing anything.

    Parameters
    ----------
    cfg
        The loaded workflow (paths already resolved and found by :func:`load_config`).
    echo
        Where a one-line summary goes (nothing is printed when ``None``).
    monte_carlo
        The run reaches the uncertainty stage: a geographic grid too tall for its
        residual fields is an error now, not after the fit.

    Returns
    -------
    PreflightReport

    Raises
    ------
    MappingError
        The first problem found, as a one-line message naming the file and the row,
        column or key.
    """

    t0 = time.perf_counter()
    report = PreflightReport(config=cfg)
    try:
        report.output_state = check_output_folder(cfg.output)
    except OutputError as exc:
        raise OutputError(f"{cfg.source}: {exc}") from None
    try:
        scheduler_kind(cfg.scheduler)
    except ConfigError as exc:
        raise _config_error(cfg, "scheduler", exc) from None
    try:
        get_ptf(cfg.stocks.bulk_density_ptf)
    except ConfigError as exc:
        raise _config_error(cfg, "stocks.bulk_density_ptf", exc) from None

    _model(cfg)
    valid = _profiles(cfg)
    report.n_horizons = len(valid)
    report.n_profiles = int(valid["profile_id"].nunique())

    if cfg.covariates:
        grid = target_grid(cfg.grid, cfg.covariates)
        cfg.check_distances(grid.is_geographic)
        stack = build_stack(cfg.covariates, grid, chunks=cfg.prediction.chunks)  # headers only
        report.grid, report.stack = grid, stack
        report.stack_lines = summarize_stack(stack).lines()
        report.n_on_grid, report.per_interval = _on_grid(cfg, valid, grid)
        problem = _too_few(cfg, report.per_interval)  # too few to fit: refused now
        if problem:
            raise InputError(problem)
        if cfg.zones is not None:
            report.zones = _zones(cfg, grid)
            problem = lattice_width_problem(grid)
            if problem and monte_carlo and cfg.model.type == "regression_kriging":
                raise InputError(
                    f"{cfg.source}: grid: {_grid_text(grid)}: {problem} (the uncertainty stage)"
                )
            # every cell, not the sample's: a run stops now, not after its fit
            report.layout = run_zone_layout(cfg, grid)
    if cfg.active_layer is not None:
        # read only at the thaw stage, after every other stage: checked now
        report.warnings += _active_layer(cfg)
    report.seconds = time.perf_counter() - t0
    if echo is not None:
        for w in report.warnings:
            echo(f"[preflight] warning: {w}")
        echo(f"[preflight] config, inputs and output folder checked in {report.seconds:.1f} s")
    return report


#: An active layer thinner than this everywhere on average (cm) is more likely in metres.
ALT_MEDIAN_MIN_CM = 5.0


def _active_layer(cfg: RunConfig) -> list[str]:
    """Check the active-layer thickness (cm): a raster's header and a decimated sample of
    its values, or the constant. Negative values are an error (no thickness is below 0: a
    nodata value the file does not declare?); a median below 5 cm is a warning (metres?)."""
    al = cfg.active_layer
    assert al is not None
    if al.path is None:
        c = float(al.constant or 0.0)
        if 0.0 < c < ALT_MEDIAN_MIN_CM:
            return [
                f"active_layer.constant: {c:g} cm; the thickness is in cm (80 for 0.8 m), "
                "and a value in m puts nearly all carbon below the active layer"
            ]
        return []
    info = io.raster_info(al.path)
    read, _, _ = io.read_decimated(info, max_size=4 * COARSE_CELLS, masked=True)
    values = read.compressed().astype("float64")  # without the nodata and mask bands
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise InputError(f"{al.path}: the active-layer raster holds no value")
    low = float(values.min())
    if low < 0:
        raise InputError(
            f"{al.path}: active-layer thickness down to {low:g} cm in "
            f"{int((values < 0).sum())} of {values.size} sampled cells; no thickness is "
            "below 0 (a nodata value the file does not declare?)"
        )
    median = float(np.median(values))
    if 0.0 < median < ALT_MEDIAN_MIN_CM:
        return [
            f"{al.path}: the median active-layer thickness is {median:g} cm; the raster "
            "is read in cm (80 for 0.8 m), and values in m put nearly all carbon below "
            "the active layer"
        ]
    return []
