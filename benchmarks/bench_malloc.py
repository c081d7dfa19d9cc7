"""CPU time of the prediction kernel under the malloc settings a Dask worker may run with.

Run::

    python benchmarks/bench_malloc.py [--world DIR] [--size 512] [--repeat 3]

Predicts one ``size x size`` block (:func:`mapping.predict._predict_block`, all statistics
and the area of applicability) ``--repeat`` times in a fresh process for each setting of
glibc's malloc, and prints user and system CPU seconds and minor page faults:

* ``distributed default``: ``MALLOC_TRIM_THRESHOLD_=65536``, what distributed's nannies set
  for their workers (``distributed.nanny.pre-spawn-environ``): every freed page goes back
  to the kernel at once, and the next block's arrays fault their pages in again;
* ``mmap threshold 32 MiB``: the same, with arrays up to 32 MiB taken from the heap;
* ``glibc adaptive``: no variable set (what socmap's local clusters use).

With ``--world DIR`` the block is a land window of the hemisphere world
(``workflows/make_hemisphere_world.py``; its run must have fitted the 0-30 cm model),
else the synthetic regression-kriging model and covariates of ``bench_predict.py``.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

SETTINGS = {
    "distributed default": {"MALLOC_TRIM_THRESHOLD_": "65536"},
    "mmap threshold 32 MiB": {
        "MALLOC_TRIM_THRESHOLD_": "65536",
        "MALLOC_MMAP_THRESHOLD_": str(32 * 2**20),
    },
    "glibc adaptive": {},
}


def _block(world: Path | None, n: int) -> tuple[dict, object, object, object, tuple]:
    """Covariates of one block, its coordinates, the model, its AOA and the quantiles."""
    import dask

    if world is None:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from bench_predict import fit_model, lazy_stack, make_grid

        grid = make_grid(n, n)
        model = fit_model(grid, trees=100)
        stack, aoa, q = lazy_stack(grid, n), None, (0.05, 0.95)
    else:
        from mapping import io
        from mapping.calibration import CalibratedModel
        from mapping.config import load_config
        from mapping.covariates import build_stack, target_grid
        from mapping.layout import RunFolder

        cfg = load_config(world / "hemisphere.yaml")
        run = RunFolder(cfg.output)
        full = target_grid(cfg.grid, cfg.covariates)
        grid = full.window(slice(4096, 4096 + n), slice(5120, 5120 + n))  # land
        aoa = io.read_model(run.aoa_file("0-30"))
        model = CalibratedModel(
            io.read_model(run.model_file("0-30")), io.read_model(run.error_model_file("0-30")), aoa
        )
        stack, q = build_stack(cfg.covariates, grid, chunks=n), cfg.prediction.quantiles
    with dask.config.set(scheduler="synchronous"):
        block = {k: stack[k].values for k in stack.data_vars}
    yc, xc = grid.coords()
    return block, (xc, yc), model, aoa, q


def child(world: Path | None, n: int, repeat: int) -> None:
    import numpy as np

    from mapping.predict import _predict_block

    block, (xc, yc), model, aoa, q = _block(world, n)
    small = {k: v[:4, :4] for k, v in block.items()}
    _predict_block(small, xc[:4], yc[:4], model, q, aoa=aoa)  # compile, import
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    for _ in range(repeat):
        out = _predict_block(block, xc, yc, model, q, aoa=aoa)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    valid = int(np.isfinite(out["mean"]).sum())
    print(
        f"{r1.ru_utime - r0.ru_utime:.2f} {r1.ru_stime - r0.ru_stime:.2f} "
        f"{r1.ru_minflt - r0.ru_minflt} {wall:.2f} {valid}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--world", type=Path, default=None)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.world, args.size, args.repeat)
        return
    print(
        f"{args.size} x {args.size} block x {args.repeat}, "
        f"{'hemisphere world ' + str(args.world) if args.world else 'synthetic model'}; "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    for name, extra in SETTINGS.items():
        env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
        env |= {"OMP_NUM_THREADS": "1", **extra}
        cmd = [sys.executable, __file__, "--child", "--size", str(args.size)]
        cmd += ["--repeat", str(args.repeat)] + (["--world", str(args.world)] if args.world else [])
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        user, sys_, faults, _wall, valid = res.stdout.split()[-5:]
        cells = int(valid) * args.repeat
        cpu = float(user) + float(sys_)
        print(
            f"  {name:<22} user {float(user):6.2f} s  system {float(sys_):5.2f} s "
            f"({100 * float(sys_) / cpu:4.1f} % of CPU)  minor faults {int(faults):>9,}  "
            f"{1e6 * cpu / cells:5.2f} us CPU per cell with data"
        )


if __name__ == "__main__":
    main()
