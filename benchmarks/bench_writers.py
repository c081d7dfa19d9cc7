"""Prediction plus writing of the maps on 1 and 2 workers: workers writing their own chunks
against the single client writer.

Run: ``python benchmarks/bench_writers.py [--size 4096] [--chunks 512] [--repeat 2]
[--writers workers client]``.

Predicts a ``size x size`` grid (default 4096 x 4096 = 16.8 million cells of 250 m on
EASE-Grid 2.0 North; covariates generated lazily from the coordinates, chunk by chunk,
``bench_predict.lazy_stack``; a sea of nodata covers part of it) with regression kriging
(random-forest trend, 32 neighbours, 2,000 training points) and writes its six maps
(five statistics and the relative uncertainty) as COGs into a temporary folder, with
:func:`mapping.predict.write_prediction`, on a local cluster of 1 and of 2
single-threaded workers, for each writer:

* ``workers``: each task writes its chunk of every map and the workers assemble the COGs
  (the default of ``socmap run``);
* ``client``: chunks are sent to this process, which writes them and assembles the COGs
  (``prediction.writer: client``, for clusters without a shared file system).

Runs alternate (1 worker, 2 workers, ...) and the best of ``--repeat`` is kept. Printed per
run: cells per second (wall), the CPU seconds of the workers (all of them on 1 worker, the
busiest on 2) and of this process, and the peak resident memory of the whole process tree
and of this process alone (sampled every 0.1 s). The speed-up is given in wall time (which
other load on a shared machine disturbs; the load average is printed) and in CPU time of
the busiest process (workers or client): the speed-up with each process on a core of its
own.
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

import psutil  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_predict import fit_model, lazy_stack, make_grid  # noqa: E402

from mapping.cluster import PeakRSS, compute_with_progress, dask_client  # noqa: E402
from mapping.predict import predict_grid, write_prediction  # noqa: E402


def _cpu_seconds() -> float:
    t = psutil.Process().cpu_times()
    return t.user + t.system


def one_run(pred: object, workers: int, writer: str, chunks: int) -> dict[str, float]:
    """Predict and write once; wall time, CPU times and peak memory."""
    with PeakRSS(interval=0.1) as rss:
        with dask_client(
            n_workers=workers, threads_per_worker=1, dashboard_address=None, echo=lambda m: None
        ) as client:
            # every worker loads the model and compiles its kernels before the clock starts
            warm = pred["mean"][:chunks, : 4 * workers * chunks].sum()  # type: ignore[index]
            compute_with_progress(warm, label="warm-up")
            c0 = client.run(_cpu_seconds)
            me0 = _cpu_seconds()
            with tempfile.TemporaryDirectory(prefix="socmap-bench-", dir=OUT) as tmp:
                t0 = time.perf_counter()
                files = write_prediction(
                    pred, tmp, (0, 30), writer=writer,
                    label=f"predict + write, {workers} worker(s), {writer} writer",
                )  # fmt: skip
                wall = time.perf_counter() - t0
                size = sum(Path(p).stat().st_size for p in set(files.values()))
            me = _cpu_seconds() - me0
            c1 = client.run(_cpu_seconds)
    per_worker = [c1[w] - c0[w] for w in c0]
    return {
        "wall": wall,
        "cpu_workers": sum(per_worker) if workers == 1 else max(per_worker),
        "cpu_client": me,
        "peak": rss.peak,
        "peak_main": rss.peak_main,
        "bytes": size,
    }


OUT: str | None = None


def main() -> None:
    global OUT
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=4096, help="grid edge in cells (default 4096)")
    p.add_argument("--chunks", type=int, default=512)
    p.add_argument("--repeat", type=int, default=2, help="alternating 1- and 2-worker runs")
    p.add_argument("--trees", type=int, default=50)
    p.add_argument("--writers", nargs="+", default=["workers", "client"])
    p.add_argument("--tmp", default=None, help="folder for the temporary maps (default: system)")
    args = p.parse_args()
    OUT = args.tmp

    grid = make_grid(args.size, args.size)
    n = args.size * args.size
    model = fit_model(grid, trees=args.trees)
    pred = predict_grid(model, lazy_stack(grid, args.chunks), grid, chunks=args.chunks)
    rows, cols = grid.chunk_sizes(args.chunks)
    print(f"grid {args.size:,} x {args.size:,} = {n / 1e6:,.1f} million cells, "
          f"{len(rows) * len(cols):,} chunks of {args.chunks}; regression kriging (RF trend "
          f"{args.trees} trees, 32 neighbours); 6 maps; best of {args.repeat} alternating runs; "
          f"load average at start {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)  # fmt: skip
    best: dict[tuple[str, int], dict[str, float]] = {}
    for _ in range(args.repeat):
        for writer in args.writers:
            for workers in (1, 2):
                r = one_run(pred, workers, writer, args.chunks)
                print(f"  run: {writer} writer, {workers} worker(s): {r['wall']:.1f} s; CPU s: "
                      f"workers {r['cpu_workers']:.1f}, client {r['cpu_client']:.1f}; peak "
                      f"{r['peak'] / 2**30:.2f} GiB; load {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
                old = best.get((writer, workers))
                best[writer, workers] = {k: min(v, old[k]) if old else v for k, v in r.items()}
    print("results (best of runs):")
    for writer in args.writers:
        for workers in (1, 2):
            r = best[writer, workers]
            print(f"  {writer:>7} writer, {workers} worker(s): {n / r['wall']:>9,.0f} cells/s "
                  f"({r['wall']:.1f} s); CPU s: workers {r['cpu_workers']:.1f} "
                  f"({'busiest' if workers > 1 else 'all'}), client {r['cpu_client']:.1f}; "
                  f"peak memory {r['peak'] / 2**30:.2f} GiB in all, client "
                  f"{r['peak_main'] / 2**20:.0f} MiB; maps {r['bytes'] / 2**20:.0f} MiB")  # fmt: skip
        one, two = best[writer, 1], best[writer, 2]
        busiest1 = max(one["cpu_workers"], one["cpu_client"])
        busiest2 = max(two["cpu_workers"], two["cpu_client"])
        print(f"  {writer:>7} writer, speed-up 1 -> 2 workers: wall {one['wall'] / two['wall']:.2f}x, "
              f"CPU time of the busiest process {busiest1 / busiest2:.2f}x")  # fmt: skip
    print(f"load average (1, 5, 15 min) at the end: "
          f"{', '.join(f'{v:.1f}' for v in os.getloadavg())} on {os.cpu_count()} cores")  # fmt: skip


if __name__ == "__main__":
    main()
