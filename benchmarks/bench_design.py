#!/usr/bin/env python
"""Time :func:`mapping.design.greedy_design` on a large synthetic region.

    python benchmarks/bench_design.py [--size 1000] [--n 200] [--intervals 4]

A ``size`` x ``size`` grid of 5 km cells (10⁶ cells by default), four zones in bands, one
error model per interval (exponential residual variogram of 80 km range, a shared error,
an error ratio rising with the DI of eight standardised covariates drawn as smooth random
fields; the 500 profiles from the cooler, drier part of that space, so about half the cells
lie beyond the training range and carry a range term, ``--no-range`` for none), and 5
targets per interval (every zone and all zones). Prints the wall and CPU time of the setup
and of the greedy choice, and the peak resident memory.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import numpy as np
from scipy.ndimage import gaussian_filter

from mapping.design import ALL_ZONES, IntervalErrors, Target, greedy_design
from mapping.models.variogram import Variogram


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=1000)
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--intervals", type=int, default=4)
    p.add_argument("--candidates", type=int, default=3000)
    p.add_argument("--blocks", type=int, default=2500)
    p.add_argument("--no-range", action="store_true", help="no range term (as before 2026-12-06)")
    a = p.parse_args(argv)
    rng = np.random.default_rng(0)
    ny = nx = a.size
    step = 5000.0
    rows, cols = np.divmod(np.arange(ny * nx), nx)
    xy = np.column_stack([(cols + 0.5) * step, -(rows + 0.5) * step])
    area = np.full(ny * nx, step * step)
    band = rows * 4 // ny
    zones = {f"zone{k}": (band == k).astype(float) for k in range(4)}
    feats = np.column_stack(
        [gaussian_filter(rng.normal(size=(ny, nx)), 20).ravel() for _ in range(8)]
    )
    feats /= feats.std(axis=0)
    # profiles from the cooler, drier part of the covariate space: a third of the cells lie
    # beyond the training range and carry the error model's range term
    pool = np.flatnonzero((feats[:, 0] < 0.7) & (feats[:, 1] < 0.7))
    train = feats[rng.choice(pool, 500, replace=False)]
    from scipy.spatial import cKDTree

    di = cKDTree(train).query(feats)[0] / 3.0
    lo, hi = train.min(axis=0) / 3.0, train.max(axis=0) / 3.0
    f3 = feats / 3.0
    xd = np.sqrt(np.sum((f3 - np.clip(f3, lo, hi)) ** 2, axis=1))
    rt = 0.0 if a.no_range else 0.2 * xd**2
    print(f"cells beyond the training range: {np.mean(xd > 0):.1%}")
    errors = []
    for k in range(a.intervals):
        mean = np.exp(rng.normal(2.0 + 0.5 * k, 0.2, len(xy)))
        var = 0.1 * (1.0 + 2.0 * di) + rt
        errors.append(
            IntervalErrors(
                label=f"0-{30 * (k + 1)}",
                mean=mean,
                std=mean * np.sqrt(np.expm1(var)),
                variogram=Variogram("exponential", psill=0.08, range=80_000.0, nugget=0.02),
                log=True,
                common_sd=0.1,
                noise_var=0.02,
                features=feats / 3.0,
                di=di,
                factor=lambda d: 1.0 + 2.0 * np.asarray(d),
                range_var=None if a.no_range else rt,
                box=(lo, hi),
                range_coef=0.2,
            )
        )
    targets = [Target(z, e.label) for e in errors for z in [*zones, ALL_ZONES]]
    t0, c0 = time.perf_counter(), time.process_time()
    res = greedy_design(
        xy,
        rows,
        cols,
        area,
        zones,
        errors,
        targets,
        a.n,
        n_candidates=a.candidates,
        max_blocks=a.blocks,
        n_existing=500,
        seed=0,
    )
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    f = res.range_factor()[-1]
    print(
        f"{ny * nx:,} cells, {a.intervals} intervals, {len(targets)} targets, {a.n} sites: "
        f"{wall:.1f} s wall, {cpu:.1f} s CPU, peak RSS {peak:.0f} MiB; predicted range "
        f"reduction {100 * (1 - f.max()):.1f}-{100 * (1 - f.min()):.1f} %"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
