"""Prediction plus writing on 1 and 2 workers on the hemisphere world, with its real parts.

Run (after ``socmap run DIR/hemisphere.yaml`` has fitted the models)::

    python benchmarks/bench_hemisphere_workers.py DIR [--window 4096] [--row R --col C]
        [--interval 0-100] [--repeat 2]

Takes a ``window x window`` part of the world's grid (by default the one with the most land
among a few candidates), its covariates read and aligned from the world's VRTs of tiled
GeoTIFFs (``mapping.covariates.build_stack``), the run's fitted model of ``--interval``
with its calibrated error model and area of applicability, exactly as the predict stage
loads them, and predicts and writes the interval's maps (five statistics, the AOA and the
relative uncertainty) with :func:`mapping.predict.write_prediction` (workers write their
chunks and assemble the COGs) on a local cluster of 1 and of 2 single-threaded workers.
Runs alternate and the best of ``--repeat`` is kept; printed as in ``bench_writers.py``:
wall time, the CPU seconds of the workers (all of them on 1 worker, the busiest on 2) and
of this process, peak memory, and the 1 -> 2 speed-up in wall time and in CPU time of the
busiest process.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_writers  # noqa: E402

from mapping import io  # noqa: E402
from mapping.calibration import CalibratedModel  # noqa: E402
from mapping.config import load_config  # noqa: E402
from mapping.covariates import build_stack, target_grid  # noqa: E402
from mapping.layout import RunFolder  # noqa: E402
from mapping.predict import predict_grid  # noqa: E402


def _land_share(path: Path, grid_shape: tuple[int, int], r0: int, c0: int, n: int) -> float:
    """Share of cells with data in a window, from a decimated read of one covariate."""
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(path) as src:
        a = src.read(1, window=Window(c0, r0, n, n), out_shape=(256, 256), masked=True)
    return float(1.0 - np.ma.getmaskarray(a).mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("world", type=Path, help="folder of make_hemisphere_world.py, run fitted")
    p.add_argument("--window", type=int, default=4096, help="window edge in cells")
    p.add_argument("--row", type=int, default=None, help="window's first row (default: most land)")
    p.add_argument("--col", type=int, default=None)
    p.add_argument("--interval", default="0-100")
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--tmp", default=None, help="folder for the temporary maps (default: system)")
    args = p.parse_args()
    bench_writers.OUT = args.tmp

    cfg = load_config(args.world / "hemisphere.yaml")
    run = RunFolder(cfg.output)
    grid = target_grid(cfg.grid, cfg.covariates)
    n, chunks = args.window, cfg.prediction.chunks
    ny, nx = grid.shape
    if args.row is None or args.col is None:
        first = next(c for c in cfg.covariates)
        cands = [(r, c) for r in range(0, ny - n + 1, n // 2) for c in range(0, nx - n + 1, n // 2)]
        shares = {rc: _land_share(Path(first.path), grid.shape, *rc, n) for rc in cands}
        r0, c0 = max(shares, key=shares.get)
    else:
        r0, c0 = args.row, args.col
    wgrid = grid.window(slice(r0, r0 + n), slice(c0, c0 + n))
    stack = build_stack(cfg.covariates, wgrid, chunks=chunks)
    label = args.interval
    model = io.read_model(run.model_file(label))
    aoa = io.read_model(run.aoa_file(label)) if cfg.prediction.aoa else None
    if run.error_model_file(label).exists():
        model = CalibratedModel(model, io.read_model(run.error_model_file(label)), aoa)
    pred = predict_grid(
        model, stack, wgrid, quantiles=cfg.prediction.quantiles, aoa=aoa, chunks=chunks
    )
    share = _land_share(Path(cfg.covariates[0].path), grid.shape, r0, c0, n)
    rows, cols = wgrid.chunk_sizes(chunks)
    print(
        f"hemisphere world {args.world}: window rows {r0}:{r0 + n}, cols {c0}:{c0 + n} "
        f"({n * n / 1e6:.1f} M cells, ~{100 * share:.0f} % land), {len(rows) * len(cols)} chunks "
        f"of {chunks}; model {label} cm ({type(model).__name__}); best of {args.repeat} "
        f"alternating runs; load average at start {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} cores",
        flush=True,
    )
    best: dict[int, dict[str, float]] = {}
    for _ in range(args.repeat):
        for workers in (1, 2):
            r = bench_writers.one_run(pred, workers, "workers", chunks)
            print(
                f"  run: {workers} worker(s): {r['wall']:.1f} s; CPU s: workers "
                f"{r['cpu_workers']:.1f}, client {r['cpu_client']:.1f}; peak "
                f"{r['peak'] / 2**30:.2f} GiB; load {os.getloadavg()[0]:.1f}",
                flush=True,
            )
            old = best.get(workers)
            best[workers] = {k: min(v, old[k]) if old else v for k, v in r.items()}
    one, two = best[1], best[2]
    for w, r in best.items():
        print(
            f"  {w} worker(s): {n * n / r['wall']:,.0f} cells/s ({r['wall']:.1f} s); CPU s: "
            f"workers {r['cpu_workers']:.1f} ({'busiest' if w > 1 else 'all'}), client "
            f"{r['cpu_client']:.1f}; peak {r['peak'] / 2**30:.2f} GiB, client "
            f"{r['peak_main'] / 2**20:.0f} MiB; maps {r['bytes'] / 2**20:.0f} MiB"
        )
    b1 = max(one["cpu_workers"], one["cpu_client"])
    b2 = max(two["cpu_workers"], two["cpu_client"])
    print(
        f"speed-up 1 -> 2 workers: wall {one['wall'] / two['wall']:.2f}x, CPU time of the "
        f"busiest process {b1 / b2:.2f}x; load average at the end "
        f"{', '.join(f'{v:.1f}' for v in os.getloadavg())}"
    )


if __name__ == "__main__":
    main()
