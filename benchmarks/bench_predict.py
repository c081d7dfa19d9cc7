"""Throughput of map prediction, stage by stage, and parallel efficiency on 2 workers.

Run: ``python benchmarks/bench_predict.py [--size N] [--parallel-size N] [--repeat R]
[--skip-parallel | --only-parallel]``.

On a synthetic, lazily generated covariate stack (:func:`lazy_stack`, also used by
``bench_memory.py``) and a regression-kriging model (random-forest trend, 32 neighbours),
one core each unless stated, it prints cells per second of

1. generating the covariates (the cost a real run pays reading and warping rasters);
2. tree-model prediction: scikit-learn's ``RandomForestRegressor.predict`` on a flat
   matrix, against the prediction kernel (:func:`mapping.predict._predict_block`, mean
   only) on the same forest, and socmap's ``QuantileRandomForest.predict`` against
   scikit-learn's ``predict`` applied to that model's own fitted forest;
3. kriging of residuals (:func:`mapping.models.krige_residuals`, 32 neighbours, mean and
   variance);
4. the whole kernel with all statistics (mean, median, 5 % and 95 % quantiles, std);
5. writing the five statistics as COGs;

and then the prediction of a grid on a local Dask cluster with 1 worker and with 2
workers (one thread each): the speed-up is the parallel efficiency on 2 workers.
"""

from __future__ import annotations

import os

# One thread per process for NumPy/BLAS: the workers are the parallelism.
for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import dask  # noqa: E402
import dask.array as da  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import xarray as xr  # noqa: E402

from mapping.grid import Grid  # noqa: E402

COVARIATES = ("elev", "maat", "ndvi", "twi")
ORIGIN = (-1_500_000.0, -2_500_000.0)  # EASE-Grid 2.0 North, towards north-east Siberia


# --------------------------------------------------------------------------- synthetic world
def covariate_fields(x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """Smooth covariates as functions of the coordinates (metres), NaN over an 'ocean'."""
    u = (x - ORIGIN[0]) / 1000.0  # km
    v = (y - ORIGIN[1]) / 1000.0
    elev = 500 + 400 * np.sin(u / 200.0) * np.cos(v / 150.0) + 50 * np.sin(u / 7.0 + v / 9.0)
    maat = -12 + 0.004 * v - 0.006 * (elev - 500) + np.cos(u / 90.0)
    ndvi = 0.5 + 0.3 * np.cos(u / 80.0 + v / 120.0) - 0.01 * np.maximum(-maat - 10, 0)
    twi = 8 + 2 * np.sin(u / 30.0) * np.sin(v / 25.0)
    ocean = (u - 300.0) ** 2 + (v - 2600.0) ** 2 < 900.0**2
    out = {"elev": elev, "maat": maat, "ndvi": ndvi, "twi": twi}
    for a in out.values():
        a[ocean] = np.nan
    return out


def truth(cov: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A SOC density (kg C m-2) with a nonlinear trend and a smooth spatial residual."""
    resid = 2.0 * np.sin((x - ORIGIN[0]) / 60_000.0) * np.cos((y - ORIGIN[1]) / 45_000.0)
    return (
        8
        + 0.004 * cov["elev"]
        - 0.3 * cov["maat"]
        + 6 * cov["ndvi"] ** 2
        + 0.2 * cov["twi"]
        + resid
    )


def make_grid(ny: int, nx: int, resolution: float = 250.0) -> Grid:
    """An EASE-Grid 2.0 North grid with its lower-left corner at :data:`ORIGIN`."""
    x0, y0 = ORIGIN
    return Grid.from_bounds(
        (x0, y0, x0 + nx * resolution, y0 + ny * resolution), resolution, "EPSG:6931"
    )


def _field_block(name: str, grid: Grid, block_info: dict[Any, Any] | None = None) -> np.ndarray:
    (r0, r1), (c0, c1) = block_info[None]["array-location"]  # type: ignore[index]
    yc, xc = grid.window(slice(r0, r1), slice(c0, c1)).coords()
    xx, yy = np.meshgrid(xc, yc)
    return covariate_fields(xx, yy)[name].astype("float32")


def lazy_stack(grid: Grid, chunks: int) -> xr.Dataset:
    """The covariates as Dask arrays computed from coordinates per chunk: nothing is stored."""
    rows, cols = grid.chunk_sizes(chunks)
    layers = {}
    for name in COVARIATES:
        arr = da.map_blocks(
            _field_block,
            name,
            grid,
            chunks=(rows, cols),
            dtype="float32",
            meta=np.empty((0, 0), "float32"),
            name=f"cov-{name}-{grid.shape[0]}x{grid.shape[1]}-{chunks}",
        )
        layers[name] = grid.wrap(arr, name=name, attrs={"kind": "continuous"})
    return grid.attach(xr.Dataset(layers))


def training_table(grid: Grid, n: int = 2000, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """``n`` profiles at random cells with data, their covariates, coordinates and SOC."""
    rng = np.random.default_rng(seed)
    left, bottom, right, top = grid.bounds
    x = rng.uniform(left, right, 4 * n)
    y = rng.uniform(bottom, top, 4 * n)
    cov = covariate_fields(x, y)
    ok = np.isfinite(cov["elev"])
    idx = np.flatnonzero(ok)[:n]
    X = pd.DataFrame({k: v[idx] for k, v in cov.items()})
    X["x"], X["y"] = x[idx], y[idx]
    target = truth({k: v[idx] for k, v in cov.items()}, x[idx], y[idx]) + rng.normal(
        0, 0.5, len(idx)
    )
    return X, target


def fit_model(
    grid: Grid, *, n_train: int = 2000, trees: int = 50, depth: int | None = 12, seed: int = 0
) -> Any:
    """Regression kriging: a small random forest trend, 32-neighbour kriging of its residuals."""
    from sklearn.ensemble import RandomForestRegressor

    from mapping.models import OrdinaryKriging, RegressionKriging

    X, t = training_table(grid, n_train, seed)
    trend = RandomForestRegressor(
        n_estimators=trees,
        max_depth=depth,
        min_samples_leaf=3,
        oob_score=True,
        n_jobs=1,
        random_state=seed,
    )
    return RegressionKriging(trend=trend, kriging=OrdinaryKriging(n_neighbors=32)).fit(X, t)


# --------------------------------------------------------------------------- timing
def best_of(fn: Callable[[], Any], repeat: int = 3) -> tuple[float, float]:
    """Shortest wall time and shortest CPU time of this process over ``repeat`` runs."""
    wall, cpu = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return min(wall), min(cpu)


def report(label: str, cells: int, seconds: tuple[float, float] | float) -> float:
    """Print cells per second (per CPU second too, the fair figure on a shared machine)."""
    wall, cpu = seconds if isinstance(seconds, tuple) else (seconds, None)
    rate = cells / (cpu if cpu else wall)
    extra = f", {cells / wall:,.0f} per wall second" if cpu else ""
    unit = "cells/CPU-s" if cpu else "cells/s"
    print(f"  {label:<58} {rate:>12,.0f} {unit}  ({cells:,} cells{extra})", flush=True)
    return rate


def stage_rates(size: int, chunks: int) -> None:
    from sklearn.ensemble import RandomForestRegressor

    from mapping.io import write_cogs
    from mapping.models import QuantileRandomForest, krige_residuals
    from mapping.predict import _predict_block

    grid = make_grid(size, size)
    model = fit_model(grid)
    stack = lazy_stack(grid, chunks)
    yc, xc = grid.coords()
    n = size * size
    print(f"stages, one core, {size} x {size} cells, regression kriging (RF trend "
          f"{model.trend_.n_estimators} trees, 32 neighbours, 2000 points):")  # fmt: skip

    # 1. covariates
    t = best_of(lambda: stack.compute(scheduler="synchronous"), 2)
    report("1. covariates (4 layers, generated from coordinates)", n, t)
    block = {k: v.values for k, v in stack.compute(scheduler="synchronous").data_vars.items()}
    xx, yy = np.meshgrid(xc, yc)
    ok = np.isfinite(block["elev"])
    valid = int(ok.sum())
    print(
        f"     ({valid:,} cells with data, {100 * valid / n:.0f} %; rates below per cell of the grid)"
    )

    # 2. trees: scikit-learn's own predict vs the kernel, same forest. The kernel makes
    # one model call per chunk; scikit-learn gets the whole grid in one call (its best
    # case) and, like the kernel, one call per chunk.
    forest = model.trend_
    flat = pd.DataFrame({k: block[k][ok] for k in COVARIATES})
    t_sk = best_of(lambda: forest.predict(flat), 5)
    report("2a. sklearn RandomForestRegressor.predict, one call", n, t_sk)
    tiles = grid.tiles(chunks)
    chunk_tables = [
        pd.DataFrame({k: block[k][t.row_slice, t.col_slice].ravel() for k in COVARIATES})
        for t in tiles
    ]
    t_skc = best_of(lambda: [forest.predict(c) for c in chunk_tables], 5)
    report(f"2b. sklearn RandomForestRegressor.predict, per {chunks} x {chunks} chunk", n, t_skc)

    def kernel_per_chunk() -> None:
        for t in tiles:
            sub = {k: v[t.row_slice, t.col_slice] for k, v in block.items()}
            _predict_block(sub, xc[t.col_slice], yc[t.row_slice], forest, statistics=("mean",))

    t_kernel = best_of(kernel_per_chunk, 5)
    report("2c. prediction kernel, same forest, mean, per chunk", n, t_kernel)
    check = _predict_block(block, xc, yc, forest, statistics=("mean",))["mean"][ok]
    assert np.allclose(check, forest.predict(flat), rtol=1e-6), "kernel differs from sklearn"
    print(f"     kernel / sklearn throughput (CPU time): {t_skc[1] / t_kernel[1]:.2f} per chunk, "
          f"{t_sk[1] / t_kernel[1]:.2f} against one call")  # fmt: skip
    X, target = training_table(grid)
    qrf = QuantileRandomForest(n_estimators=forest.n_estimators, max_depth=12, min_samples_leaf=3,
                               random_state=0, n_jobs=1).fit(X, target)  # fmt: skip
    t_qsk = best_of(lambda: RandomForestRegressor.predict(qrf.forest_, flat.to_numpy()))
    report("2d. sklearn predict on QuantileRandomForest's own forest", n, t_qsk)
    flat_xy = flat.assign(x=xx[ok], y=yy[ok])
    t_q = best_of(lambda: qrf.predict(flat_xy))
    report("2e. QuantileRandomForest.predict (mean)", n, t_q)
    print(f"     QuantileRandomForest / sklearn throughput (CPU time): {t_qsk[1] / t_q[1]:.2f}")

    # 3. kriging of residuals
    kr = model.kriging_
    txy = np.column_stack([xx[ok], yy[ok]])
    t_k = best_of(
        lambda: krige_residuals(kr.xy_, kr.values_, kr.variogram_, txy, 32, tree=kr.tree_)
    )
    report("3. kriging residuals, 32 neighbours (mean + variance)", n, t_k)

    # 4. the whole kernel, all statistics
    t_all = best_of(lambda: _predict_block(block, xc, yc, model, (0.05, 0.95)))
    report("4. prediction kernel, regression kriging, all statistics", n, t_all)

    # 5. writing five COGs
    out = _predict_block(block, xc, yc, model, (0.05, 0.95))
    with tempfile.TemporaryDirectory(prefix="socmap-bench-") as tmp:
        items = [(f"{tmp}/{k}.tif", grid.wrap(v), {"statistic": k}) for k, v in out.items()]
        t_w = best_of(lambda: write_cogs(items), 2)
    report("5. writing 5 COGs (DEFLATE, predictor, overviews)", n, t_w)


def parallel(size: int, chunks: int, repeat: int = 3) -> None:
    """1 worker against 2, alternating ``repeat`` times; the best run of each counts.

    Two measures of the speed-up: wall time (the best of alternating runs is the one
    least disturbed by other load on a shared machine; the load average is printed), and
    CPU time of the workers: CPU seconds of the 1-worker run over the largest CPU
    seconds of one worker in the 2-worker run. The second is the speed-up with each
    worker on a core of its own; it counts the overheads of going parallel (transfers,
    serialisation, scheduling) and unequal shares of work, which is what efficiency
    means here, and it does not depend on what else runs on the machine.
    """
    from mapping.cluster import compute_with_progress, dask_client
    from mapping.predict import predict_grid, write_prediction

    grid = make_grid(size, size)
    model = fit_model(grid)
    pred = predict_grid(model, lazy_stack(grid, chunks), grid, chunks=chunks)
    n = size * size
    # a reduction keeps the results on the workers: this times the prediction alone
    sums = [pred[v].sum() for v in pred.data_vars]
    print(f"parallel, {size} x {size} cells, chunks {chunks}, local cluster, 1 thread per worker, "
          f"best of {repeat} alternating runs:")  # fmt: skip
    times: dict[tuple[int, str], float] = {}
    cpu: dict[int, float] = {}
    reference = None
    for _ in range(repeat):
        for workers in (1, 2):
            with dask_client(n_workers=workers, threads_per_worker=1, dashboard_address=None,
                             echo=lambda m: None) as client:  # fmt: skip
                # every worker loads the model and compiles its kernels before the clock starts
                warm = pred["mean"][:chunks, : 4 * workers * chunks].sum()
                compute_with_progress(warm, label="warm-up")
                c0 = client.run(_cpu_seconds)
                t0 = time.perf_counter()
                got = compute_with_progress(*sums, label=f"predict on {workers} worker(s)")
                t_pred = time.perf_counter() - t0
                c1 = client.run(_cpu_seconds)
                per_worker = [c1[w] - c0[w] for w in c0]
                cpu[workers] = min(
                    cpu.get(workers, np.inf), sum(per_worker) if workers == 1 else max(per_worker)
                )
                with tempfile.TemporaryDirectory(prefix="socmap-bench-") as tmp:
                    t0 = time.perf_counter()
                    write_prediction(
                        pred, tmp, (0, 30), label=f"predict + write, {workers} worker(s)"
                    )
                    t_write = time.perf_counter() - t0
            times[workers, "predict"] = min(times.get((workers, "predict"), np.inf), t_pred)
            times[workers, "write"] = min(times.get((workers, "write"), np.inf), t_write)
            if reference is None:
                reference = got
            assert np.allclose(got, reference, rtol=1e-6), "results depend on the number of workers"
    for workers in (1, 2):
        report(f"predict, {workers} worker(s)", n, times[workers, "predict"])
        report(f"predict + write 5 COGs, {workers} worker(s)", n, times[workers, "write"])
    print(f"  load average (5 min) at the end: {os.getloadavg()[1]:.1f} on {os.cpu_count()} cores")
    print(f"  speed-up on 2 workers, wall time: predict {times[1, 'predict'] / times[2, 'predict']:.2f}x, "
          f"predict + write {times[1, 'write'] / times[2, 'write']:.2f}x")  # fmt: skip
    print(f"  speed-up on 2 workers, worker CPU time (a core each): predict {cpu[1] / cpu[2]:.2f}x "
          f"({cpu[1]:.1f} CPU-s on 1 worker, busiest of 2 workers {cpu[2]:.1f} CPU-s)")  # fmt: skip


def _cpu_seconds() -> float:
    import psutil

    t = psutil.Process().cpu_times()
    return t.user + t.system


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=1024, help="edge of the grid for the stage rates")
    p.add_argument(
        "--parallel-size",
        type=int,
        default=4096,
        help="edge of the grid for the 1 vs 2 workers run",
    )
    p.add_argument("--chunks", type=int, default=512)
    p.add_argument("--repeat", type=int, default=3, help="alternating 1- and 2-worker runs")
    p.add_argument("--skip-parallel", action="store_true")
    p.add_argument("--only-parallel", action="store_true")
    args = p.parse_args()
    if not args.only_parallel:
        with dask.config.set(scheduler="synchronous"):
            stage_rates(args.size, args.chunks)
    if not args.skip_parallel:
        parallel(args.parallel_size, args.chunks, args.repeat)


if __name__ == "__main__":
    main()
