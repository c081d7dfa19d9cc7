"""Per-task costs for a model of the run time on many workers, and its check on 1 and 2.

Run: ``nice -n 10 python benchmarks/bench_scaling_model.py [--size N] [--chunks C ...]
[--speedup-chunks C] [--noops K]``, or ``--table-only RATE S_SCHED FIXED`` to print the
hemisphere table from given figures (data cells/s per worker, scheduler s/task, graph
tasks per chunk besides the covariate reads).

On a ``distributed.LocalCluster`` of single-threaded workers (the default local cluster
of ``socmap``), it measures the three per-task costs the model in ``docs/scaling.md``
("Beyond one machine") is built from:

a. the scheduler's overhead per task: ``K`` no-op tasks (``client.map``, then a
   ``dask.array`` of ``K`` trivial blocks reduced to one number), on 1 and 2 workers,
   in seconds per task;
b. the cost of one prediction task: :func:`mapping.predict.predict_grid` of a
   regression-kriging model (the one of ``bench_predict.py``: 50-tree random-forest
   trend, 32-neighbour kriging of 2,000 residuals) with all five statistics and the area
   of applicability, on synthetic covariates generated from coordinates, for each chunk
   size: seconds per task, cells per second per worker (per grid cell and per cell with
   data), and bytes of the outputs per chunk;
c. the 1 -> 2 worker speed-up of (b) on an ``N x N`` grid, against what the model
   predicts for 2 workers from the 1-worker figures;

and from them the model's time of the prediction stage of the 1 km northern hemisphere
on 32, 128 and 512 workers for chunks of 512 to 4096 (the file system's bandwidth and
the covariates' bytes per cell are assumptions, constants below).

The results are reduced on the workers (nothing is written): this is the compute side
of the model; the file-system side is a stated assumption in the docs. Wall-clock
figures carry the load average of the machine with them; worker CPU seconds do not.
"""

from __future__ import annotations

import os

# One thread per process for NumPy/BLAS: the workers are the parallelism.
for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import dask.array as da  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_predict import COVARIATES, fit_model, lazy_stack, make_grid, training_table  # noqa: E402


def _noop(i: int) -> int:
    return i


def _cpu_seconds() -> float:
    import psutil

    t = psutil.Process().cpu_times()
    return t.user + t.system


def _tree_rss() -> int:
    """Resident memory of this process and all its children, bytes."""
    import psutil

    me = psutil.Process()
    total = me.memory_info().rss
    for child in me.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


PEAK = [0]


def _sample_peak() -> None:
    PEAK[0] = max(PEAK[0], _tree_rss())


def scheduler_overhead(client: Any, n: int) -> dict[str, float]:
    """Seconds per task of ``n`` no-op tasks, two ways."""
    out: dict[str, float] = {}
    best = math.inf
    for rep in range(1):
        t0 = time.perf_counter()
        futures = client.map(_noop, range(n), pure=False, key=[f"noop-{rep}-{i}" for i in range(n)])
        client.gather(futures)
        best = min(best, time.perf_counter() - t0)
        del futures
    out["client.map"] = best / n
    side = round(math.sqrt(n))
    best = math.inf
    for rep in range(1):
        arr = da.zeros((side, side), chunks=1, dtype="float32") + rep
        total = arr.map_blocks(lambda b: b + 1.0, dtype="float32").sum()
        n_tasks = len(total.__dask_graph__())
        t0 = time.perf_counter()
        total.compute()
        best = min(best, time.perf_counter() - t0)
    out["dask.array"] = best / n_tasks
    out["dask.array tasks"] = n_tasks
    _sample_peak()
    return out


def build(size: int, chunks: int) -> tuple[Any, Any, dict[str, float]]:
    """Lazy prediction of a ``size`` x ``size`` grid; its sums; facts about the chunks."""
    from mapping.aoa import AreaOfApplicability
    from mapping.predict import predict_grid

    grid = make_grid(size, size)
    model = fit_model(grid)
    X, _ = training_table(grid)
    aoa = AreaOfApplicability().fit(X[list(COVARIATES)])
    stack = lazy_stack(grid, chunks)
    pred = predict_grid(model, stack, grid, chunks=chunks, aoa=aoa)
    valid = float(np.isfinite(stack["elev"].data).sum().compute(scheduler="synchronous"))
    n_chunks = math.ceil(size / chunks) ** 2
    facts = {
        "cells": float(size * size),
        "valid": valid,
        "chunks": float(n_chunks),
        "graph_tasks": float(len(pred.__dask_graph__())),
        "bytes_per_cell": float(sum(v.dtype.itemsize for v in pred.data_vars.values())),
        "outputs": float(len(pred.data_vars)),
    }
    return pred, [pred[v].sum() for v in pred.data_vars], facts


def timed_predict(
    client: Any, pred: Any, sums: list[Any], chunks: int, workers: int
) -> tuple[float, float]:
    """Wall seconds and busiest worker's CPU seconds of computing ``sums`` (warm workers)."""
    # every worker loads the model and compiles its kernels before the clock starts
    pred["mean"][:chunks, : workers * chunks].sum().compute()
    from dask.utils import key_split
    from distributed import get_task_stream

    c0 = client.run(_cpu_seconds)
    t0 = time.perf_counter()
    with get_task_stream(client) as stream:
        client.compute(sums, sync=True)
    wall = time.perf_counter() - t0
    c1 = client.run(_cpu_seconds)
    _sample_peak()
    # compute time of each prediction task, as the workers saw it
    spans: dict[str, list[float]] = {}
    for task in stream.data:
        if key_split(task["key"]) == "socmap-predict":
            s = sum(p["stop"] - p["start"] for p in task["startstops"] if p["action"] == "compute")
            spans.setdefault(task["worker"], []).append(s)
    per = ", ".join(
        f"{len(v)} tasks, {sum(v):.1f} s ({np.mean(v):.2f} s each)" for v in spans.values()
    )
    print(f"      prediction tasks per worker: {per}")
    return wall, max(c1[w] - c0[w] for w in c0)


# The 1 km northern hemisphere (workflows/hemisphere.yaml): EASE-Grid 2.0 North.
HEMI_EDGE = 14_000  # cells
HEMI_DATA = 0.34  # fraction of cells with covariates (land north of the grid's edge)
HEMI_INTERVALS = 4  # predicted one after another, each a compute of its own
HEMI_BANDS = 8  # covariate layers, one read-and-warp task per layer and chunk
HEMI_OUTPUT_BYTES = 7 * 4  # five statistics, AOA and failure flag, float32
# bytes read per 1 km cell with data, uncompressed: 3 layers at 90 m (float32),
# NDVI at 250 m (float32), land cover at 300 m (uint8), 3 layers at 1 km (float32)
HEMI_READ_BYTES = 3 * (1000 / 90) ** 2 * 4 + (1000 / 250) ** 2 * 4 + (1000 / 300) ** 2 + 3 * 4
FS_BANDWIDTH = 5e9  # bytes/s, aggregate for one job on a parallel file system: ASSUMED
COMPRESSION = 2.0  # DEFLATE ratio of the covariate COGs on disk: ASSUMED


def hemisphere_times(
    rate: float, s_sched: float, fixed: float, chunks: int, workers: int
) -> dict[str, float]:
    """Seconds of the prediction stage of the 1 km hemisphere, by term (see docs/scaling.md).

    ``rate``: cells with data per second per worker; ``s_sched``: scheduler seconds per
    task; ``fixed``: graph tasks per chunk besides the covariate reads.
    """
    n_chunks = math.ceil(HEMI_EDGE / chunks) ** 2
    t_chunk = chunks * chunks / rate  # a chunk full of land
    busy = max(1, math.ceil(HEMI_DATA * n_chunks))  # full-land chunks' worth of work
    work = HEMI_INTERVALS * math.ceil(busy / workers) * t_chunk
    sched = HEMI_INTERVALS * n_chunks * (HEMI_BANDS + fixed) * s_sched
    cells = HEMI_INTERVALS * HEMI_EDGE**2 * HEMI_DATA
    fs = cells * (HEMI_READ_BYTES / COMPRESSION + HEMI_OUTPUT_BYTES) / FS_BANDWIDTH
    return {
        "work": work,
        "scheduler": sched,
        "file system": fs,
        "rounds": math.ceil(busy / workers),
    }


def hemisphere_table(rate: float, s_sched: float, fixed: float) -> None:
    """Print the model's prediction-stage time of the hemisphere on 32, 128 and 512 workers."""
    print(f"\nmodel, 1 km hemisphere ({HEMI_EDGE:,}^2 cells, {HEMI_DATA:.0%} with data, "
          f"{HEMI_INTERVALS} intervals): {rate:,.0f} data cells/s per worker, "
          f"{1e6 * s_sched:.0f} us/task, {HEMI_BANDS} + {fixed:.0f} tasks per chunk, "
          f"file system {FS_BANDWIDTH / 1e9:.0f} GB/s (assumed)")  # fmt: skip
    print("  chunk  workers   work s  sched s     fs s  total s  limit")
    for c in (512, 1024, 2048, 4096):
        for n in (32, 128, 512):
            t = hemisphere_times(rate, s_sched, fixed, c, n)
            terms = {k: t[k] for k in ("work", "scheduler", "file system")}
            limit = max(terms, key=terms.__getitem__)
            if limit == "work" and t["rounds"] == 1:
                limit = "task count (fewer chunks with data than workers)"
            print(f"  {c:>5}  {n:>7}  {t['work']:>7.0f}  {t['scheduler']:>7.0f}  "
                  f"{t['file system']:>7.0f}  {max(terms.values()):>7.0f}  {limit}")  # fmt: skip


def main() -> None:

    from mapping.cluster import dask_client

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=2048, help="edge of the grid (cells)")
    p.add_argument("--chunks", type=int, nargs="+", default=[512])
    p.add_argument("--speedup-chunks", type=int, default=512, help="chunk size of the 2-worker run")
    p.add_argument("--noops", type=int, default=2_000, help="no-op tasks for the scheduler")
    p.add_argument(
        "--table-only",
        nargs=3,
        type=float,
        metavar=("RATE", "S_SCHED", "FIXED"),
        help="print the hemisphere table from these figures and stop",
    )
    args = p.parse_args()
    if args.table_only:
        hemisphere_table(*args.table_only)
        return
    warnings.simplefilter("ignore")  # the synthetic model's CRS and variogram notes
    print(f"machine: {os.cpu_count()} cores, load average (1, 5 min) at start "
          f"{os.getloadavg()[0]:.1f}, {os.getloadavg()[1]:.1f}")  # fmt: skip
    t_start = time.perf_counter()
    built = {c: build(args.size, c) for c in args.chunks}
    print(f"model, AOA and graphs built in {time.perf_counter() - t_start:.1f} s")

    per_task: dict[int, tuple[float, float]] = {}
    for workers in (1, 2):
        t0 = time.perf_counter()
        with dask_client(
            n_workers=workers, threads_per_worker=1, dashboard_address=None, echo=lambda m: None
        ) as client:
            print(f"\n{workers} worker(s): cluster up in {time.perf_counter() - t0:.1f} s")
            s = scheduler_overhead(client, args.noops)
            print(f"  (a) scheduler: client.map of {args.noops:,} no-ops "
                  f"{1e6 * s['client.map']:.0f} us/task; dask.array of "
                  f"{int(s['dask.array tasks']):,} tasks {1e6 * s['dask.array']:.0f} us/task")  # fmt: skip
            for c in args.chunks if workers == 1 else [args.speedup_chunks]:
                pred, sums, f = built[c]
                wall, cpu = timed_predict(client, pred, sums, c, workers)
                if workers == 1:
                    per_task[c] = (wall / f["chunks"], cpu / f["chunks"])
                    print(f"  (b) chunks {c}: {int(f['chunks'])} tasks of {c}x{c}, "
                          f"{int(f['graph_tasks'])} graph tasks; {wall:.2f} s wall, "
                          f"{cpu:.2f} CPU-s; per task {wall / f['chunks']:.3f} s wall, "
                          f"{cpu / f['chunks']:.3f} CPU-s; {f['cells'] / cpu:,.0f} grid cells/CPU-s, "
                          f"{f['valid'] / cpu:,.0f} data cells/CPU-s "
                          f"({100 * f['valid'] / f['cells']:.0f} % with data); outputs "
                          f"{int(f['outputs'])} x float32 = {int(f['bytes_per_cell'])} B/cell, "
                          f"{f['bytes_per_cell'] * c * c / 2**20:.1f} MiB per chunk")  # fmt: skip
                else:
                    t1_wall, t1_cpu = per_task[c]
                    rounds = math.ceil(f["chunks"] / workers)
                    g = f["graph_tasks"]
                    pred_wall = rounds * t1_wall + g * s["dask.array"]
                    pred_cpu = rounds * t1_cpu
                    w1, c1 = t1_wall * f["chunks"], t1_cpu * f["chunks"]
                    print(f"  (c) chunks {c}: {wall:.2f} s wall, busiest worker {cpu:.2f} CPU-s; "
                          f"speed-up 1->2: wall {w1 / wall:.2f}x, CPU {c1 / cpu:.2f}x")  # fmt: skip
                    print(f"      model: ceil({int(f['chunks'])}/2) = {rounds} rounds x 1-worker "
                          f"task time + {int(g)} graph tasks x scheduler overhead = "
                          f"{pred_wall:.2f} s wall (measured {wall:.2f}, "
                          f"{100 * (wall - pred_wall) / pred_wall:+.0f} %), {pred_cpu:.2f} CPU-s "
                          f"(measured {cpu:.2f}, {100 * (cpu - pred_cpu) / pred_cpu:+.0f} %)")  # fmt: skip
    _sample_peak()
    c = args.speedup_chunks
    _, _, f = built[c]
    hemisphere_table(
        rate=f["valid"] / (per_task[c][1] * f["chunks"]),
        s_sched=s["dask.array"],
        fixed=f["graph_tasks"] / f["chunks"] - len(COVARIATES),
    )
    print(
        f"\npeak resident memory sampled (client + scheduler + workers): {PEAK[0] / 2**30:.2f} GiB"
    )
    print(f"load average (1, 5 min) at the end: {os.getloadavg()[0]:.1f}, "
          f"{os.getloadavg()[1]:.1f} on {os.cpu_count()} cores; "
          f"total {time.perf_counter() - t_start:.0f} s")  # fmt: skip


if __name__ == "__main__":
    main()
