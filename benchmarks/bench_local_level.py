#!/usr/bin/env python
"""Throughput of the local level's weights (``uncertainty.level: local``) at survey scale.

    python benchmarks/bench_local_level.py [--profiles 10000] [--cells 1000000]
        [--extent-km 5000] [--range-km 100]

``a = 1 - k'K⁻¹1`` needs each cell's covariance to the profiles
(:meth:`mapping.residual_errors.LocalLevel.weight`). With every profile that is
``cells x profiles`` covariances: the 1 km hemisphere (66.7 M land cells, 10,000 profiles)
would need 6.7e11. Beyond :attr:`~mapping.residual_errors.LocalLevel.cutoff` a profile
moves ``a`` by less than ``TOLERANCE``, so a block of cells needs only the profiles within
the cutoff of its bounding box. Prints, for random profiles over a square grid of
``--extent-km`` with an exponential residual variogram of practical range ``--range-km``:
the time of ``K⁻¹1`` (dense Cholesky, once), the cells per second chunk by chunk over the
whole grid and with every profile over the first chunk's cells, the largest difference
between the two there, and the peak RSS.
"""

from __future__ import annotations

import argparse
import math
import resource
import time

import numpy as np
from scipy.spatial.distance import cdist

from mapping.models.variogram import Variogram, practical_range_factor
from mapping.residual_errors import TOLERANCE, LocalLevel


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profiles", type=int, default=10_000)
    p.add_argument("--cells", type=int, default=1_000_000, help="grid cells (a square grid)")
    p.add_argument("--extent-km", type=float, default=5000.0)
    p.add_argument("--range-km", type=float, default=100.0)
    p.add_argument("--chunk", type=int, default=256, help="map chunk side (cells)")
    p.add_argument("--dense-sample", type=int, default=20_000)
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    ext = args.extent_km * 1e3
    xy = rng.uniform(0, ext, (args.profiles, 2))
    side = math.isqrt(args.cells)
    step = ext / side
    a = args.range_km * 1e3 / practical_range_factor("exponential")
    v = Variogram("exponential", psill=0.06, range=a, nugget=0.02)
    t0 = time.perf_counter()
    lev = LocalLevel(v, xy)
    lev.u  # noqa: B018 -- solved on first use: time it here
    t_fit = time.perf_counter() - t0
    solve_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{args.profiles} profiles over {args.extent_km:.0f} km, practical range "
        f"{args.range_km:.0f} km, {side} x {side} cells of {step / 1e3:.1f} km in chunks of "
        f"{args.chunk}: K^-1 1 in {t_fit:.1f} s (peak RSS {solve_peak:.0f} MiB); cutoff "
        f"{lev.cutoff / 1e3:.0f} km"
    )
    c = args.chunk
    t0 = time.perf_counter()
    first = None
    for r0 in range(0, side, c):  # chunk by chunk, as the Monte Carlo asks for them
        for c0 in range(0, side, c):
            rr, cc = np.mgrid[r0 : min(r0 + c, side), c0 : min(c0 + c, side)]
            w = lev.weight((cc + 0.5) * step, (rr + 0.5) * step)
            if first is None:
                first = ((cc + 0.5) * step, (rr + 0.5) * step, w)
    t_near = time.perf_counter() - t0
    print(f"  near data:  {side * side / t_near:,.0f} cells/s ({t_near:.1f} s)")
    assert first is not None
    px, py, near = (q.ravel()[: args.dense_sample] for q in first)
    sub = np.column_stack([px, py])
    t0 = time.perf_counter()
    every = np.concatenate(
        [1.0 - v.covariance(cdist(sub[s : s + 1000], xy)) @ lev.u for s in range(0, len(sub), 1000)]
    ).clip(0.0, 1.0)
    t_every = time.perf_counter() - t0
    print(
        f"  every datum: {len(sub) / t_every:,.0f} cells/s (on {len(sub)} cells: {t_every:.1f} s; "
        f"all {side * side}: ~{side * side * t_every / len(sub):.0f} s)"
    )
    print(
        f"  largest difference {float(np.abs(near - every).max()):.2e} (tolerance {TOLERANCE:.0e})"
    )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"  peak RSS {peak:.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
