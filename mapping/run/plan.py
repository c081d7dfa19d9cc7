"""Size a prediction run before spending a cluster on it (``socmap plan CONFIG``).

The plan is arithmetic on the grid and the config, plus a short calibration:

* **grid size and chunks** from the config's grid and ``prediction.chunks``;
* **memory per worker** = worker baseline + the fitted model + ``threads_per_worker`` x
  the memory of one task, where one task holds its chunk of covariates and outputs
  ``chunk cells x (bands x 8 B + outputs x 4 B)`` times an overhead factor
  (:data:`TASK_OVERHEAD`, for the float64 working copies, the output stack and a finished
  block waiting to be written) plus the model's per-batch temporaries
  ``batch x (bands + 2) x 8 B x`` :data:`BATCH_OVERHEAD`;
* **time** from predicting a sample of chunks on one thread in this process, with the
  run's fitted model when the output folder has one, otherwise with a stand-in model of
  the configured type fitted on random data with the same number of covariates (the
  plan says which). The time on N workers assumes a parallel efficiency of
  :data:`PARALLEL_EFFICIENCY`. Writing is timed with the writer of a run
  (:func:`mapping.io.write_tiled_cogs`) on the sampled chunks and has two parts: each task
  writes its chunk file (per cell, spread over the workers like the prediction), then each
  map is assembled into a COG by one task (per cell and map), while the next interval's
  chunks are predicted; the last interval's assembly comes after its chunks, its maps in
  parallel, at most one per worker.
"""

from __future__ import annotations

import dataclasses
import pickle
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mapping import io
from mapping.aoa import AreaOfApplicability
from mapping.cluster import WORKER_GDAL_CACHE_MB, usable_cores
from mapping.config import RunConfig
from mapping.covariates import build_stack, summarize_stack, target_grid
from mapping.exceptions import MappingError
from mapping.extract import extract_at_points
from mapping.grid import Grid
from mapping.layout import RunFolder
from mapping.predict import AOA_LAYERS, DEFAULT_BATCH, STATISTICS, _predict_block
from mapping.run.estimate import (
    REFERENCE_MACHINE_SECONDS,
    RunEstimate,
    estimate_run,
    machine_seconds,
    profiles_reaching,
    time_one_fit,
    zone_cover,
)
from mapping.run.features import build_model
from mapping.run.stages import read_profiles
from mapping.units import format_interval

WORKER_BASELINE = 400 * 2**20
"""Resident memory of a Dask worker once socmap, scikit-learn and the compiled kriging
kernels are loaded (bytes; measured 386 MiB, ``benchmarks/bench_memory.py``)."""
TASK_OVERHEAD = 3.0
"""Copies of a chunk alive in one task: input block, float64 working copy, output stack."""
BATCH_OVERHEAD = 4.0
"""Model temporaries per batch row and column (DataFrame, feature matrix, tree traversal)."""
CALIBRATION_WINDOW = 256
"""Edge of the central window of each sampled chunk on which the model is timed."""
STAND_IN_ROWS = 1000
"""Training rows of a stand-in model when the profile table cannot be read."""
MIN_STAND_IN_ROWS = 200
"""Fewest training rows of a stand-in: a forest on a handful of rows leaves training points
never out of bag, and regression kriging cannot take its residuals."""
PARALLEL_EFFICIENCY = 0.9
"""Speed-up per added worker relative to perfect scaling (measured: benchmarks/bench_predict.py)."""


@dataclass(frozen=True)
class Calibration:
    """Timings from predicting a sample of chunks on one thread.

    ``predict_seconds`` is CPU time of the single-threaded kernel on the ``chunks`` sampled
    chunks with data, averaged over the intervals' models (``interval_seconds``, one per
    model timed); ``read_seconds`` (of ``read_chunks`` chunks, with and without data),
    ``tile_seconds`` (the chunk files of ``written_cells`` cells) and ``assemble_seconds``
    (``written_maps`` COGs of ``written_cells`` cells each, from those files) are wall time
    (input and output wait on disks and GDAL threads). ``data_chunk_share`` is the share of
    the grid's cells in chunks that hold data: a run writes and assembles only those.
    """

    chunks: int
    cells: int
    valid_cells: int
    predict_seconds: float
    read_seconds: float
    tile_seconds: float
    assemble_seconds: float
    written_cells: int
    written_maps: int
    valid_share: float
    model: str
    covariates: str
    read_chunks: int = 0
    data_chunk_share: float = 1.0
    interval_seconds: tuple[float, ...] = ()

    def seconds_per_chunk(self, chunk_cells: int) -> float:
        """Read + predict time of one chunk: reading per chunk, predicting per cell with data."""
        read = self.read_seconds / max(1, self.read_chunks or self.chunks)
        per_valid = self.predict_seconds / max(1, self.valid_cells)
        return read + per_valid * chunk_cells * self.valid_share

    @property
    def tile_seconds_per_cell(self) -> float:
        """Writing a cell of every map into its chunk file (in the task that predicts it)."""
        return self.tile_seconds / max(1, self.written_cells)

    @property
    def assemble_seconds_per_cell(self) -> float:
        """Assembling a cell of one map into its COG."""
        return self.assemble_seconds / max(1, self.written_cells * self.written_maps)


@dataclass(frozen=True)
class Plan:
    """Size of a prediction run and its resource estimates."""

    grid: Grid
    chunks: tuple[int, int]
    n_chunks: int
    intervals: list[str]
    covariates: list[str]
    outputs: list[str]
    model_bytes: int
    threads_per_worker: int
    task_bytes: int
    worker_bytes: int
    calibration: Calibration | None = None
    notes: list[str] = field(default_factory=list)
    run: RunEstimate | None = None

    @property
    def cells(self) -> int:
        return self.grid.shape[0] * self.grid.shape[1]

    def seconds(self, n_workers: int) -> float:
        """Expected wall time of the prediction stage on ``n_workers`` workers."""
        if self.calibration is None:
            raise ValueError("plan was made without calibration")
        c = self.calibration
        chunk_cells = self.cells / self.n_chunks
        # every chunk is read; only chunks with data write a file and enter the COGs
        files = self.n_chunks * c.data_chunk_share * chunk_cells * c.tile_seconds_per_cell
        compute = len(self.intervals) * (
            self.n_chunks * c.seconds_per_chunk(int(chunk_cells)) + files
        )
        lanes = n_workers * self.threads_per_worker
        eff = 1.0 if lanes == 1 else PARALLEL_EFFICIENCY
        one_map = self.cells * c.data_chunk_share * c.assemble_seconds_per_cell  # one task a map
        assemble = len(self.intervals) * self.maps * one_map
        # an interval's maps are assembled while the next interval's chunks are predicted,
        # so the work shares the workers; what cannot be shared is the last interval's
        # assembly after its chunks (its maps in parallel, one task each)
        shared = (compute + assemble) / (lanes * eff)
        tail = compute / (lanes * eff) + -(-self.maps // lanes) * one_map
        return max(shared, tail)

    @property
    def maps(self) -> int:
        """Maps written per interval: the outputs and the relative uncertainty."""
        return len(self.outputs) + 1

    def lines(self, workers: Sequence[int] = (1, 2, 4, 8, 16, 32, 64, 128)) -> list[str]:
        """The human-readable plan."""
        g = self.grid
        ny, nx = g.shape
        cy, cx = self.chunks
        nb, no = len(self.covariates), len(self.outputs)
        auth = g.crs.to_authority(min_confidence=70)
        crs = f"{auth[0]}:{auth[1]}" if auth else g.crs.name
        out = [
            f"grid:          {crs}, {ny:,} x {nx:,} cells (ny x nx) = {self.cells / 1e6:,.1f} million, "
            f"resolution {g.resolution[0]:g} x {g.resolution[1]:g}",
            f"intervals:     {len(self.intervals)} ({', '.join(self.intervals)}) -> "
            f"{len(self.intervals) * self.cells / 1e6:,.1f} million cell predictions",
            f"chunks:        {cy} x {cx} cells, {self.n_chunks:,} per interval, "
            f"{self.n_chunks * len(self.intervals):,} tasks in all",
            f"covariates:    {nb} ({', '.join(self.covariates)})",
            f"outputs:       {no} per interval ({', '.join(self.outputs)}), float32: "
            f"{_gb(self.cells * no * 4 * len(self.intervals))} uncompressed",
            f"memory/worker: ~{_gb(self.worker_bytes)} with {self.threads_per_worker} thread(s) = "
            f"{_gb(WORKER_BASELINE)} worker baseline + {WORKER_GDAL_CACHE_MB} MiB GDAL cache + "
            f"{_gb(self.model_bytes)} model + "
            f"{self.threads_per_worker} x {_gb(self.task_bytes)} per task",
            f"               (task = {cy * cx:,} cells x ({nb} bands x 8 B + {no} outputs x 4 B) x "
            f"overhead {TASK_OVERHEAD:g} + batch {min(DEFAULT_BATCH, cy * cx):,} x {nb + 2} columns x 8 B x "
            f"{BATCH_OVERHEAD:g})",
        ]
        c = self.calibration
        if c is not None:
            us = 1e6 * c.predict_seconds / max(1, c.valid_cells)
            n_read = c.read_chunks or c.chunks
            each = ", ".join(f"{1e6 * t / max(1, c.valid_cells):.2f}" for t in c.interval_seconds)
            models = (
                f" (mean of {len(c.interval_seconds)} intervals' models: {each})"
                if len(c.interval_seconds) > 1
                else ""
            )
            out += [
                f"calibration:   {n_read} chunk(s) read ({c.read_seconds / max(1, n_read):.2f} s each), "
                f"model timed on one thread on {c.cells:,} cells of {c.chunks} ({c.valid_cells:,} with data): "
                f"{us:.2f} us/cell{models}; {100 * c.valid_share:.0f} % of the grid has data, "
                f"{100 * c.data_chunk_share:.0f} % lies in chunks with data",
                f"               writing: chunk files {1e6 * c.tile_seconds_per_cell:.3f} us/cell "
                f"(by the tasks), assembling each COG {1e6 * c.assemble_seconds_per_cell:.3f} "
                f"us/cell ({self.maps} maps per interval, one task each)",
                f"               model: {c.model}",
                f"               covariates: {c.covariates}",
                f"expected time: (prediction stage; efficiency {PARALLEL_EFFICIENCY:g} per added worker; "
                "the workers write the chunks and assemble the maps)",
            ]
            for n in workers:
                out.append(
                    f"  {n:>5} worker(s) x {self.threads_per_worker} thread(s): {_duration(self.seconds(n))}"
                )
        r = self.run
        if r is not None:
            stages = ", ".join(f"{k} {_duration(v)}" for k, v in r.seconds.items())
            out += [
                f"whole run here: ~{_duration(r.total)} on {r.cores} core(s) ({stages}); "
                f"peak memory of the process tree ~{_gb(r.peak_bytes)}",
                *(f"               {b}" for b in r.basis),
            ]
        out += [f"note: {n}" for n in self.notes]
        return out


def _gb(n: float) -> str:
    if n >= 2**30:
        return f"{n / 2**30:.1f} GiB"
    return f"{n / 2**20:.0f} MiB"


def _duration(s: float) -> str:
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.1f} min"
    if s < 2 * 86400:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"


# --------------------------------------------------------------------------- building blocks
def task_bytes(chunk_cells: int, n_bands: int, n_outputs: int, batch: int = DEFAULT_BATCH) -> int:
    """Estimated peak memory of one prediction task (see the module docstring)."""
    chunk = chunk_cells * (n_bands * 8 + n_outputs * 4) * TASK_OVERHEAD
    per_batch = min(batch, chunk_cells) * (n_bands + 2) * 8 * BATCH_OVERHEAD
    return int(chunk + per_batch)


def _model_bytes(model: Any) -> int:
    try:
        return len(pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL))
    except Exception:  # an unpicklable model fails loudly in the run itself
        return 0


def _fitted_models(cfg: RunConfig, intervals: list[str]) -> list[tuple[Any, Any, str]]:
    """The fitted models (with their areas of applicability) in the run's output folder."""
    run = RunFolder(cfg.output)
    found = []
    for label in intervals:
        path = run.model_file(label)
        if path.exists():
            aoa_path = run.aoa_file(label)
            aoa = io.read_model(aoa_path) if aoa_path.exists() else None
            found.append((io.read_model(path), aoa, str(path)))
    return found


def _random_training(
    cfg: RunConfig, covariates: list[str], grid: Grid, n: int, sites: pd.DataFrame | None = None
) -> tuple[pd.DataFrame, np.ndarray]:
    """Training rows for a stand-in: the covariates at the profiles (``sites``) when they
    could be read, else random values; the target is random either way."""
    rng = np.random.default_rng(cfg.seed)
    if sites is not None and len(sites):
        X = sites[["x", "y", *covariates]].reset_index(drop=True)
        n = len(X)
    else:
        left, bottom, right, top = grid.bounds
        X = pd.DataFrame({"x": rng.uniform(left, right, n), "y": rng.uniform(bottom, top, n)})
        for c in covariates:  # categorical covariates get a handful of integer classes
            X[c] = rng.integers(1, 9, n) if c in _categorical(cfg) else rng.normal(size=n)
    Z = X[covariates].to_numpy(dtype=float)
    Z = (Z - Z.mean(axis=0)) / np.where(Z.std(axis=0) > 0, Z.std(axis=0), 1.0)
    signal = Z @ rng.normal(size=len(covariates)) if covariates else 0.0
    # positive (a log-stock model refuses y <= 0), skewed like stocks
    return X, 10 * np.exp(0.1 * (signal + rng.normal(0, 1, n)))


def _profile_count(cfg: RunConfig) -> int | None:
    """Profiles in the config's horizon table (``None`` if it cannot be read here).

    A stand-in is fitted on as many rows: a forest grows deeper, and a nearest-neighbour
    search takes longer, with more training rows, and so does the prediction.
    """
    table = _read_profiles(cfg)
    return None if table is None else int(table["profile_id"].nunique()) or None


def _read_profiles(cfg: RunConfig) -> pd.DataFrame | None:
    """The config's horizon table, or ``None`` if it cannot be read here."""
    try:
        return read_profiles(cfg)
    except (MappingError, OSError, KeyError, ValueError):
        return None


def _profile_covariates(
    cfg: RunConfig, grid: Grid, covariates: list[str], table: pd.DataFrame
) -> pd.DataFrame | None:
    """The covariates at the profiles of ``table`` (what the training stage extracts), or
    ``None``.

    A stand-in fitted on them searches its area of applicability, and splits its trees,
    in the covariates' real distribution: on random normal values the nearest-neighbour
    search of the AOA cost three times as much per cell as the fitted model's on the
    hemisphere world.
    """
    try:
        sites = table.drop_duplicates("profile_id")[["profile_id", "lon", "lat"]]
        stack = build_stack(cfg.covariates, grid, chunks=cfg.prediction.chunks)
        res = extract_at_points(stack, grid, sites.reset_index(drop=True), crs=cfg.profiles.crs)
        good = res.complete()[["x", "y", *covariates]]
        return good if len(good) >= MIN_STAND_IN_ROWS else None
    except (MappingError, OSError, KeyError, ValueError):
        return None


def _training_sites(cfg: RunConfig, covariates: list[str]) -> pd.DataFrame | None:
    """One row per profile of the run's training table, if the run has one."""
    path = RunFolder(cfg.output).training
    try:
        table = io.read_table(path) if path.exists() else None
        return (
            None if table is None else table.drop_duplicates("profile_id")[["x", "y", *covariates]]
        )
    except (MappingError, OSError, KeyError, ValueError):
        return None


def _categorical(cfg: RunConfig) -> set[str]:
    return {c.name for c in cfg.covariates if c.kind == "categorical"}


def random_covariate_block(
    cfg: RunConfig, names: list[str], shape: tuple[int, int], rng: Any
) -> dict[str, np.ndarray]:
    """Random covariate values for a chunk (when the files cannot be read)."""
    cats = _categorical(cfg)
    return {
        c: rng.integers(1, 9, shape).astype("int32")
        if c in cats
        else rng.normal(size=shape).astype("float32")
        for c in names
    }


def stand_in_model(
    cfg: RunConfig,
    covariates: list[str],
    grid: Grid,
    n_train: int = STAND_IN_ROWS,
    sites: pd.DataFrame | None = None,
) -> Any:
    """A model of the configured type fitted on random data with the same columns.

    Prediction cost depends on the model's structure (trees, depth, neighbours), not on
    what it learned, so this times a run whose models are not fitted yet.
    """
    X, target = _random_training(cfg, covariates, grid, n_train, sites)
    return build_model(cfg).fit(X, target)


def stand_in_aoa(
    cfg: RunConfig,
    covariates: list[str],
    grid: Grid,
    n_train: int = STAND_IN_ROWS,
    sites: pd.DataFrame | None = None,
) -> Any:
    """An area of applicability fitted on the same training rows (for timing)."""

    X, _ = _random_training(cfg, covariates, grid, n_train, sites)
    return AreaOfApplicability(categorical_features=sorted(_categorical(cfg)) or None).fit(X)


def _central(shape: tuple[int, int], edge: int) -> tuple[slice, slice]:
    ny, nx = shape
    h, w = min(ny, edge), min(nx, edge)
    r0, c0 = (ny - h) // 2, (nx - w) // 2
    return slice(r0, r0 + h), slice(c0, c0 + w)


def _sample_tiles(grid: Grid, chunks: tuple[int, int], k: int) -> list[Any]:
    tiles = grid.tiles(chunks)
    if len(tiles) <= k:
        return tiles
    # evenly spread over the grid, deterministic
    idx = np.unique(np.linspace(0, len(tiles) - 1, k + 2).round().astype(int)[1:-1])
    return [tiles[i] for i in idx]


# --------------------------------------------------------------------------- the plan
def make_plan(
    cfg: RunConfig,
    *,
    threads_per_worker: int = 1,
    calibrate: bool = True,
    sample_chunks: int = 3,
    echo: Any = None,
) -> Plan:
    """Work out the size, memory and (with ``calibrate``) the expected time of a run.

    Parameters
    ----------
    cfg
        The workflow config.
    threads_per_worker
        Tasks a worker runs at once.
    calibrate
        Predict ``sample_chunks`` chunks on one thread to time the model.
    sample_chunks
        How many chunks to time (spread evenly over the grid).
    echo
        Progress messages (default: none).
    """

    say = echo or (lambda msg: None)
    notes: list[str] = []
    intervals = [format_interval(*iv) for iv in cfg.stocks.intervals()]
    covariates = [c.name for c in cfg.covariates]
    grid = target_grid(cfg.grid, cfg.covariates)
    chunks = (cfg.prediction.chunks, cfg.prediction.chunks)
    rows, cols = grid.chunk_sizes(chunks)
    n_chunks = len(rows) * len(cols)
    outputs = [*STATISTICS, *(AOA_LAYERS if cfg.prediction.aoa else ())]
    chunk_cells = min(rows[0] * cols[0], grid.shape[0] * grid.shape[1])
    tb = task_bytes(chunk_cells, len(covariates), len(outputs))

    model = None
    model_desc = ""
    aoa = None
    fitted = _fitted_models(cfg, intervals)
    found = fitted[0] if fitted else None
    stand_in_aoa_needed = cfg.prediction.aoa and bool(covariates)
    table = _read_profiles(cfg) if calibrate else None  # read once: counts and stand-ins
    n_profiles = None if table is None else int(table["profile_id"].nunique()) or None
    counts = None
    if table is not None and n_profiles:
        counts = (n_profiles, profiles_reaching(cfg, table))
    n_train = max(n_profiles or STAND_IN_ROWS, MIN_STAND_IN_ROWS)  # one row per profile
    fit_one = None
    sites = None
    needs_stand_in = found is None or (stand_in_aoa_needed and found[1] is None)
    if calibrate and needs_stand_in and table is not None:
        say("reading the covariates at the profiles for the stand-ins")
        sites = _profile_covariates(cfg, grid, covariates, table)
    rows_desc = (
        f"the covariates at {len(sites):,} profiles and a random target"
        if sites is not None
        else f"random data with {len(covariates)} covariates and "
        + f"{n_train:,} rows{', one per profile' if n_train == n_profiles else ''}"
    )
    if found is not None:
        model, aoa, where = found
        model_desc = f"fitted model {where}"
        if len(fitted) > 1:
            model_desc = f"fitted models of {len(fitted)} intervals ({where}, ...)"
    elif calibrate:
        say("no fitted model in the output folder: fitting a stand-in")
        c0 = time.process_time()
        model = stand_in_model(cfg, covariates, grid, n_train, sites)
        fit_one = time.process_time() - c0
        model_desc = (
            f"stand-in {type(model).__name__} ({cfg.model.type}) fitted on {rows_desc}"
            + f": {cfg.output / 'models'} holds no fitted model yet"
        )
        notes.append(
            "timings use a stand-in model; re-run `socmap plan` after fitting for the real model"
        )
    if cfg.model.depth == "layered":
        notes.append(
            "model.depth: layered is priced as one model per interval: the prediction times "
            "each interval's layers on its own, where a run predicts each layer once per "
            "chunk for all intervals (an upper bound), and the fit as one model per "
            "interval, where each CV fold refits the whole layered model (a lower bound); "
            "on the sample workflow the run measured prediction 5.8 s against 11 s planned, "
            "fit 17 against 7 s (docs/scaling.md)"
        )
    mb = max((_model_bytes(m) for m, _, _ in fitted), default=0)
    if not fitted and model is not None:
        mb = _model_bytes(model)
    if model is None:
        notes.append("no fitted model yet: the memory estimate leaves out the model's size")
    worker = int(WORKER_BASELINE + WORKER_GDAL_CACHE_MB * 2**20 + mb + threads_per_worker * tb)

    calibration = None
    if calibrate and model is not None:
        if stand_in_aoa_needed and aoa is None:
            aoa = stand_in_aoa(cfg, covariates, grid, n_train, sites)
            model_desc += f"; area of applicability: a stand-in fitted on {rows_desc}"
        timed = [(m, a) for m, a, _ in fitted] if len(fitted) > 1 else [(model, aoa)]
        calibration = _calibrate(
            cfg, grid, chunks, timed, model_desc, covariates, sample_chunks, say
        )
        if "random" in calibration.covariates:
            notes.append(
                "covariates were random (files not readable here): every cell counted as "
                "having data, so the time is an upper bound where the grid has large nodata areas"
            )
    plan = Plan(
        grid=grid,
        chunks=(rows[0], cols[0]),
        n_chunks=n_chunks,
        intervals=intervals,
        covariates=covariates,
        outputs=outputs,
        model_bytes=mb,
        threads_per_worker=threads_per_worker,
        task_bytes=tb,
        worker_bytes=worker,
        calibration=calibration,
        notes=notes,
    )
    if calibration is None:
        return plan
    fit_rows = len(sites) if sites is not None else n_train
    if counts is not None and fit_one is None:  # time one fit, as the fit stage makes them
        say("timing one model fit")
        if sites is None:  # the run's training table, where the run has one
            sites = _training_sites(cfg, covariates)
        X, target = _random_training(cfg, covariates, grid, n_train, sites)
        fit_rows = len(X)
        fit_one = time_one_fit(build_model(cfg), X, target)
    cores = usable_cores()
    c = calibration
    estimate = estimate_run(
        cfg,
        cells=plan.cells,
        valid_share=c.valid_share,
        predict_seconds=plan.seconds(max(1, cores // threads_per_worker)),
        speed=machine_seconds() / REFERENCE_MACHINE_SECONDS,
        fit_one_seconds=fit_one,
        n_profiles=fit_rows if counts is not None else None,
        reaching=counts[1] if counts is not None else None,
        zones=zone_cover(cfg, grid, cfg.prediction.chunks),
        cores=cores,
        worker_bytes=worker,
        extent_m2=float(np.prod(grid.shape) * np.prod(grid.cell_spacing_m())),
        shape=grid.shape,
    )
    return dataclasses.replace(plan, run=estimate)


def _calibrate(
    cfg: RunConfig,
    grid: Grid,
    chunks: tuple[int, int],
    models: list[tuple[Any, Any]],
    model_desc: str,
    covariates: list[str],
    k: int,
    say: Any,
) -> Calibration:
    """Time ``models`` (``(model, area of applicability)``, one per interval or one for all)
    on ``k`` sampled chunks with data, the reads of the chunks sampled, and the writer."""
    import dask

    stack = None
    valid_share = data_chunk_share = 1.0
    try:
        stack = build_stack(cfg.covariates, grid, chunks=chunks[0])
        summary = summarize_stack(stack)
        valid_share = 1.0 - summary.nodata_share
        data_chunk_share = summary.data_chunk_share(chunks[0])
        cov_desc = "read from the covariate files"
    except (MappingError, OSError) as exc:
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        cov_desc = f"random values ({why})"
    rng = np.random.default_rng(cfg.seed)
    q = cfg.prediction.quantiles

    # warm-up: compiled kernels (numba) and lazy imports are not part of the rate
    warm = random_covariate_block(cfg, covariates, (4, 4), rng)
    y0, x0 = grid.coords()
    for model, aoa in models:
        _predict_block(warm, x0[:4], y0[:4], model, q, aoa=aoa)
    candidates = _sample_tiles(grid, chunks, 4 * k)
    if stack is not None:  # opening the files (a VRT's index) is paid once per worker
        with dask.config.set(scheduler="synchronous"):
            tile = candidates[0]
            stack.isel(y=tile.row_slice, x=tile.col_slice).isel(y=slice(0, 4), x=slice(0, 4)).load()

    read_s = 0.0
    n_read = cells = valid = 0
    per_model = np.zeros(len(models))
    outputs: list[dict[str, np.ndarray]] = []
    for tile in candidates:
        if len(outputs) == k:
            break
        t0 = time.perf_counter()
        if stack is not None:
            with dask.config.set(scheduler="synchronous"):
                window = stack.isel(y=tile.row_slice, x=tile.col_slice)
                block = {c: window[c].values for c in covariates}
            read_s += time.perf_counter() - t0
            n_read += 1
        else:
            block = random_covariate_block(cfg, covariates, tile.grid.shape, rng)
        # the model's cost is per cell: time it on a central window of the chunk, in CPU
        # seconds of this (single-threaded) process, which other load does not inflate
        rs, cs = _central(tile.grid.shape, CALIBRATION_WINDOW)
        block = {c: v[rs, cs] for c, v in block.items()}
        if not any(np.isfinite(v).any() for v in block.values()):
            continue  # a chunk without data costs its read only
        yc, xc = tile.grid.coords()
        seconds, outs = [], []
        for model, aoa in models:
            c1 = time.process_time()
            outs.append(_predict_block(block, xc[cs], yc[rs], model, q, aoa=aoa))
            seconds.append(time.process_time() - c1)
            if not np.isfinite(outs[0]["mean"]).any():
                break  # no cell with data: the window says nothing of the models' rate
        n_valid = int(np.isfinite(outs[0]["mean"]).sum())
        if n_valid:  # time the models on data
            per_model += seconds
            cells += outs[0]["mean"].size
            valid += n_valid
            outputs.append(outs[0])
            say(f"calibrating: chunk {len(outputs)}/{k}")
    if not outputs:
        raise MappingError(
            "plan: no sampled chunk has covariate data; check the grid and covariates"
        )

    # writing: the sampled blocks side by side, one COG per output
    width = min(o["mean"].shape[1] for o in outputs)
    mosaic = {s: np.concatenate([o[s][:, :width] for o in outputs]) for s in outputs[0]}
    # at least one 512 x 512 tile, so fixed per-file costs do not dominate the rate
    reps = (max(1, -(-512 // mosaic["mean"].shape[0])), max(1, -(-512 // width)))
    mosaic = {k: np.tile(v, reps) for k, v in mosaic.items()}
    ny, width = mosaic["mean"].shape
    sub = Grid(grid.crs, grid.transform, (ny, width))
    with tempfile.TemporaryDirectory(prefix="socmap-plan-") as tmp:
        items = [(Path(tmp) / f"{s}.tif", sub.wrap(v), {"statistic": s}) for s, v in mosaic.items()]
        with dask.config.set(scheduler="synchronous"):  # one thread, as on a worker
            written = io.write_tiled_cogs(items, label="calibrating: writing")
    return Calibration(
        chunks=len(outputs),
        cells=cells,
        valid_cells=valid,
        predict_seconds=float(per_model.mean()),
        read_seconds=read_s,
        read_chunks=n_read,
        data_chunk_share=data_chunk_share,
        interval_seconds=tuple(float(t) for t in per_model),
        tile_seconds=written.chunk_seconds,
        assemble_seconds=written.assemble_seconds,
        written_cells=ny * width,
        written_maps=len(items),
        valid_share=valid_share,
        model=model_desc,
        covariates=cov_desc,
    )


def default_workers_table(local_cores: int) -> list[int]:
    """Worker counts to show: 1, this machine's cores, then powers of two up to 128."""
    counts = {1, local_cores} | {2**i for i in range(1, 8)}
    return sorted(c for c in counts if c <= max(128, local_cores))
