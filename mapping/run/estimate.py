"""The whole of ``socmap run`` on this machine, for a plan: every stage, not only the prediction.

:mod:`mapping.run.plan` times the prediction (the bulk of a large run) by predicting a few
chunks. The stages around it are estimated here from what the plan can see before a run:

* **fit** -- one model of the configured type is fitted on as many rows as there are
  profiles (random data: a forest's cost depends on the rows, not on what it learns) and
  timed; an interval with ``n_k`` profiles costs ``n_k / n`` of that, times
  :data:`FIT_PASSES` (the cross-validation folds, the final model, the area of
  applicability and the error model); the intervals are fitted side by side, one process
  per core;
* **zones, uncertainty, report** -- costs of one core measured on the hemisphere worlds
  at 1 km and 2.8 km (``docs/scaling.md``, "socmap plan against the runs") and scaled by
  how fast this machine runs a fixed NumPy workload relative to that one: the zone totals read
  every interval's mean map in the chunks that hold a zone; each realization of the
  uncertainty stage simulates the field's lattice (a fixed cost) and draws every zone
  cell; the report draws three figures per interval, at a cost that grows with their map
  views' pixels; the start-up and the other fixed costs grow with the grid's cells;
* **peak memory** -- the larger of the prediction (the workers, one per core, plus the
  client) and the Monte Carlo (the client's baseline plus one chunk of draws per core).

The constants are figures of one machine class (2 cores, 24 GiB); on another, or for a
run unlike the hemisphere world, take the stage estimates as an order of magnitude and
the prediction's (timed) estimate as the one to trust.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mapping import io
from mapping.config import RunConfig
from mapping.grid import Grid
from mapping.profiles import served_depth
from mapping.report.figures import MAP_VIEW_CELLS
from mapping.zones import VECTOR_SUFFIXES

FIT_PASSES = 20.0
"""Model fits per interval, in units of one fit on the interval's profiles: the
cross-validation's folds, the final model, and the area of applicability's and the error
model's own cross-fitting (calibrated on the 2.8 km hemisphere world, see
``docs/scaling.md``)."""
REFERENCE_MACHINE_SECONDS = 0.152
""":func:`machine_seconds` on the machine and day the constants below were measured."""
ZONES_US = 0.095
"""Zone totals: CPU microseconds per cell of the chunks that hold a zone, per interval
(read the mean map, exact sums; 0.095 on the 1 km and 0.10 on the 2.8 km hemisphere)."""
REALIZATION_SECONDS = 0.83
"""Uncertainty: CPU seconds per realization and interval for the Gaussian field's lattice
on a grid of :data:`REFERENCE_EXTENT_M2` (the lattice spans the grid at a spacing set by the
variogram's reach, not by the grid's cells, so its cost scales with the grid's extent)."""
REFERENCE_EXTENT_M2 = 14_000e3 * 14_000e3
"""Extent of the hemisphere worlds the lattice cost was measured on (EASE-Grid 2.0 North,
14,000 km square at 1 km and at 2.8 km)."""
MC_US = 0.032
"""Uncertainty: CPU microseconds per zone cell, realization and interval (interpolating the
field, the draws, the exact sums; the independent-pixel pass included). This and
:data:`REALIZATION_SECONDS` are fitted to the uncertainty stage of the 1 km hemisphere world
(20.9 M zone cells: 289.8 and 309.0 s, runs 9 and 10 of 2026-12-05) and of the 2.8 km one
(2.67 M: 183.4 s, 2026-12-05 at ``7b8a156``), 100 realizations of 4 intervals on 2 cores.
The earlier fit (0.78 s, 0.061 us) had taken the 1 km stage from a run on a slow hour
(411 s; its prediction was 1.27x slower too) and over-estimated it by a third."""
REPORT_SECONDS = 7.0
"""Report: fixed CPU seconds (tables, charts, STAC)."""
REPORT_MAP_SECONDS = 4.0
"""Report: CPU seconds per figure of an interval and per million pixels of
its map view (read from the overviews, drawn to PNG and PDF; the view is the grid
decimated to at most :data:`mapping.report.figures.MAP_VIEW_CELLS` a side). This and
:data:`REPORT_SECONDS` are fitted to the 1 km hemisphere world (1 million pixels a view,
23 s) and the sample workflow (0.128 million, 5-6 s), measured 2026-12-04 at `c8bb858`."""
FIXED_SECONDS = 6.7
"""Start-up, preflight, profile stocks, training table and the gaps between stages."""
FIXED_SECONDS_PER_MCELL = 0.148
"""The same, per million grid cells (the preflight's checks over the grid, the training
table's reads, the graphs): fitted with :data:`FIXED_SECONDS` to the 1 km hemisphere
world (30 s) and the sample workflow (5.6 s)."""
CLIENT_BASELINE = 640 * 2**20
"""The command's own memory once the covariates, models and zone layout are loaded
(0.51-0.60 GiB measured in the fit and predict stages)."""
MC_BYTES_PER_CELL = 470.0
"""Monte Carlo memory per cell of a chunk in flight (maps as float64, field, draws), per
thread (measured: 5.38 GiB in the uncertainty stage of the 1 km hemisphere)."""
MC_CHUNK_CELLS = 2334 * 2334
"""Cells of a Monte Carlo chunk (whole tiles of the Gaussian field; the hemisphere's)."""


@dataclass(frozen=True)
class RunEstimate:
    """Expected wall seconds of every stage of ``socmap run`` here, and its peak memory."""

    seconds: dict[str, float]
    peak_bytes: int
    cores: int
    basis: list[str]

    @property
    def total(self) -> float:
        return float(sum(self.seconds.values()))


def machine_seconds(repeat: int = 5) -> float:
    """Seconds of a fixed NumPy workload (sorting and gathering 2 M doubles), the best of
    ``repeat``: how fast this machine is against the one the constants were measured on."""
    rng = np.random.default_rng(0)
    a = rng.random(1 << 21)
    idx = rng.integers(0, 1 << 21, 1 << 21)
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(3):
            np.sort(a)
            a[idx].sum()
        best = min(best, time.perf_counter() - t0)
    return best


def profiles_reaching(cfg: RunConfig, table: pd.DataFrame) -> list[int]:
    """Profiles whose horizons reach the bottom of each configured interval."""
    tol = cfg.stocks.depth_tolerance_cm or 0.0
    deepest = served_depth(table, tol).to_numpy()
    return [int((deepest >= bottom - tol).sum()) for _top, bottom in cfg.stocks.intervals()]


def time_one_fit(template: Any, X: pd.DataFrame, y: np.ndarray) -> float:
    """CPU seconds of one fit of ``template`` (cloned) on ``X, y``."""
    from sklearn.base import clone

    t0 = time.process_time()
    clone(template).fit(X, y)
    return time.process_time() - t0


def zone_cover(cfg: RunConfig, grid: Grid, chunks: int) -> tuple[float, float]:
    """Share of the grid's cells in a zone, and in chunks that hold a zone cell.

    ``(1.0, 1.0)`` without zones or when the zone file cannot be read here. A zone raster
    on the grid is read decimated (at most 1024 x 1024 samples); polygons by their area in
    the grid's CRS and the chunks they intersect.
    """
    if cfg.zones is None:
        return 1.0, 1.0
    path = Path(cfg.zones.path)
    ny, nx = grid.shape
    try:
        if path.suffix.lower() in VECTOR_SUFFIXES:
            import shapely

            shape = io.read_zones_vector(path).to_crs(grid.crs).union_all()
            left, bottom, right, top = grid.bounds
            share = min(1.0, float(shape.area) / ((right - left) * (top - bottom)))
            hit = 0
            for tile in grid.tiles(chunks):
                if shape.intersects(shapely.box(*tile.grid.bounds)):
                    hit += tile.grid.shape[0] * tile.grid.shape[1]
            return share, hit / (ny * nx)
        info = io.raster_info(path)
        if tuple(info.shape) != (ny, nx):
            return 1.0, 1.0  # on another grid: aligned by the run, not here
        a, transform, _ = io.read_decimated(info, max_size=1024)
        a = np.asarray(a)
        f = transform.a / info.transform.a  # cells per sample, as read_decimated chose
        inside: np.ndarray = np.isfinite(a) if a.dtype.kind == "f" else np.ones(a.shape, dtype=bool)
        if info.nodata is not None:
            inside &= a != info.nodata
        if cfg.zones.names:
            inside &= np.isin(a, list(cfg.zones.names))
        # a decimated sample counts in the chunk of its first cell
        return float(inside.mean()), grid.chunk_cover(inside, f, chunks)
    except Exception:  # the run itself reports an unreadable zone file
        return 1.0, 1.0


def map_view_mpx(shape: tuple[int, int] | None) -> float:
    """Million pixels of a report map view of a ``(ny, nx)`` grid: decimated by a whole
    factor to at most :data:`~mapping.report.figures.MAP_VIEW_CELLS` a side, as the report
    reads it; ``None``: a full view."""
    if shape is None:
        return MAP_VIEW_CELLS**2 / 1e6
    _, (vy, vx) = io.decimation(shape, MAP_VIEW_CELLS)
    return vy * vx / 1e6


def estimate_run(
    cfg: RunConfig,
    *,
    cells: int,
    valid_share: float,
    predict_seconds: float,
    speed: float,
    fit_one_seconds: float | None,
    n_profiles: int | None,
    reaching: list[int] | None,
    zones: tuple[float, float],
    cores: int,
    worker_bytes: int,
    extent_m2: float | None = None,
    shape: tuple[int, int] | None = None,
) -> RunEstimate:
    """Stage by stage, the expected wall time of ``socmap run`` on ``cores`` cores.

    Parameters
    ----------
    cfg
        The workflow config.
    cells, valid_share
        Grid cells and the share with covariate data.
    predict_seconds
        The plan's timed estimate of the prediction stage on ``cores`` workers.
    speed
        This machine's time for a fixed workload relative to the reference machine's
        (``machine_seconds() / REFERENCE_MACHINE_SECONDS``; above 1: slower).
    fit_one_seconds, n_profiles, reaching
        One timed fit on ``n_profiles`` rows and the profiles per interval (``None``:
        the fit is left out of the estimate).
    zones
        Shares of the grid's cells in a zone and in chunks holding one (:func:`zone_cover`).
    cores
        Cores of this machine (local workers, fit processes, Monte Carlo threads).
    worker_bytes
        The plan's memory per worker.
    extent_m2
        The grid's extent (m²): the Monte Carlo lattice's cost per realization scales
        with it; ``None``: the hemisphere's (:data:`REFERENCE_EXTENT_M2`).
    shape
        The grid's ``(ny, nx)``: the report's figures cost with their map views' pixels
        (:func:`map_view_mpx`); ``None``: a full view, as the hemisphere's.
    """
    n_int = len(cfg.stocks.intervals())
    basis = [
        f"costs measured on the hemisphere worlds and the sample workflow, scaled by this machine's speed "
        f"(x{speed:.2f} the time of the machine they were measured on)"
    ]
    fixed = FIXED_SECONDS + FIXED_SECONDS_PER_MCELL * cells / 1e6
    seconds: dict[str, float] = {"start-up, stocks, training": fixed * speed}
    if fit_one_seconds is not None and n_profiles and reaching:
        # cv.repeats: each further partition refits every fold
        passes = FIT_PASSES + (cfg.cv.repeats - 1) * cfg.cv.n_splits
        per_interval = [fit_one_seconds * passes * n / n_profiles for n in reaching]
        lanes = max(1, min(cores, len(per_interval), cfg.n_jobs or cores))
        # the longest interval first, then the rest spread over the lanes
        seconds["fit"] = max(max(per_interval), sum(per_interval) / lanes)
        basis.append(
            f"fit: one timed fit on {n_profiles:,} rows ({fit_one_seconds:.1f} s) x "
            f"{passes:g} passes per interval"
            + (f" ({cfg.cv.repeats} CV partitions)" if cfg.cv.repeats > 1 else "")
            + f", {lanes} process(es)"
        )
    seconds["predict"] = predict_seconds
    if cfg.zones is not None:
        zone_cells, chunk_cells = cells * min(zones[0], valid_share), cells * zones[1]
        seconds["zones"] = chunk_cells * n_int * ZONES_US * 1e-6 * speed / cores
        lattice = 1.0 if extent_m2 is None else extent_m2 / REFERENCE_EXTENT_M2
        per_draw = REALIZATION_SECONDS * lattice + zone_cells * MC_US * 1e-6
        seconds["uncertainty"] = cfg.uncertainty.n_realizations * n_int * per_draw * speed / cores
    figures = n_int * 3  # mean, interval width and cross-validation per interval
    cpu = REPORT_SECONDS + figures * REPORT_MAP_SECONDS * map_view_mpx(shape)
    seconds["report"] = cpu * speed / min(cores, 2)
    # a chunk in flight holds at most the grid (the sample's grid is a fortieth of a chunk)
    mc_bytes = CLIENT_BASELINE + cores * min(MC_CHUNK_CELLS, cells) * MC_BYTES_PER_CELL
    predict_bytes = cores * worker_bytes + CLIENT_BASELINE
    peak = int(max(predict_bytes, mc_bytes if cfg.zones is not None else 0))
    return RunEstimate(seconds=seconds, peak_bytes=peak, cores=cores, basis=basis)
