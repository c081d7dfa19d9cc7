"""Peak memory of a big prediction: bounded by chunk size x workers, not by grid size.

Run: ``python benchmarks/bench_memory.py [--size 10000] [--chunks 512] [--workers 2]``.

Predicts a ``size x size`` grid (default 10,000 x 10,000 = 100 million cells of 250 m on
EASE-Grid 2.0 North) whose covariates are generated lazily from the coordinates, chunk
by chunk (``bench_predict.lazy_stack``: nothing is stored), with regression kriging (a
small random-forest trend, 32 neighbours, 2,000 training points), on a local Dask
cluster of ``--workers`` single-threaded workers, and writes the maps (five statistics
and the relative uncertainty) as COGs into a temporary folder that is deleted afterwards.

Prints the peak resident memory summed over this process and all its children (the
nanny and worker processes of the local cluster), sampled every 0.2 s, the peak of this
process alone (scheduler and client; the workers write the maps), and cells per second.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_predict import fit_model, lazy_stack, make_grid  # noqa: E402

from mapping.cluster import PeakRSS, dask_client  # noqa: E402
from mapping.predict import predict_grid, write_prediction  # noqa: E402
from mapping.run.plan import WORKER_BASELINE, task_bytes  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=10_000, help="grid edge in cells (default 10,000)")
    p.add_argument("--chunks", type=int, default=512)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--trees", type=int, default=50)
    p.add_argument("--out", type=Path, default=None, help="keep the maps in this folder")
    args = p.parse_args()

    grid = make_grid(args.size, args.size)
    n = args.size * args.size
    model = fit_model(grid, trees=args.trees)
    stack = lazy_stack(grid, args.chunks)
    pred = predict_grid(model, stack, grid, chunks=args.chunks)
    rows, cols = grid.chunk_sizes(args.chunks)
    print(f"grid {args.size:,} x {args.size:,} = {n / 1e6:,.0f} million cells, {len(rows) * len(cols):,} chunks "
          f"of {args.chunks}; regression kriging (RF trend {args.trees} trees, 32 neighbours); "
          f"{args.workers} worker(s) x 1 thread", flush=True)  # fmt: skip

    with PeakRSS(interval=0.2) as rss:
        with dask_client(
            n_workers=args.workers, threads_per_worker=1, dashboard_address=None
        ) as client:
            del client
            t0 = time.perf_counter()
            if args.out is not None:
                paths = write_prediction(pred, args.out, (0, 30), run_id="bench-memory")
            else:
                with tempfile.TemporaryDirectory(prefix="socmap-bench-memory-") as tmp:
                    paths = write_prediction(pred, tmp, (0, 30), run_id="bench-memory")
                    sizes = sum(Path(p).stat().st_size for p in paths.values())
            seconds = time.perf_counter() - t0
    if args.out is not None:
        sizes = sum(Path(p).stat().st_size for p in paths.values())
    print(f"predicted and wrote {len(paths)} COGs ({sizes / 2**20:,.0f} MiB) in {seconds:,.1f} s: "
          f"{n / seconds:,.0f} cells/s")  # fmt: skip
    print(f"load average (5 min) at the end: {os.getloadavg()[1]:.1f} on {os.cpu_count()} cores")
    print(f"peak resident memory, this process + workers: {rss.peak / 2**30:.2f} GiB "
          f"(this process alone: {rss.peak_main / 2**30:.2f} GiB)")  # fmt: skip
    children = sorted(rss.peak_by_pid.values(), reverse=True)
    print("largest child processes (workers, then nannies): "
          + ", ".join(f"{b / 2**20:,.0f} MiB" for b in children[: 2 * args.workers]))  # fmt: skip
    plan = task_bytes(args.chunks**2, len(stack.data_vars), len(pred.data_vars))
    print(f"socmap plan's estimate per worker: {(WORKER_BASELINE + plan) / 2**20:,.0f} MiB "
          f"(baseline {WORKER_BASELINE / 2**20:,.0f} MiB + task {plan / 2**20:,.0f} MiB; model not counted)")  # fmt: skip


if __name__ == "__main__":
    main()
