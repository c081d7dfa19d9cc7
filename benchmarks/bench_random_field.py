"""Residual-field simulation for the synthetic truth: circulant embedding against GSTools.

Run: ``python benchmarks/bench_random_field.py [NY NX [REALISATIONS]]`` (default: the sample
grid, 320 x 400 cells of 5 km, and 10 realisations). For an exponential model (psill 0.09,
range 75 km, as in the sample truth) it prints, per method, the seconds and peak Python
memory of one realisation on that grid, and how well the realisations reproduce the model
covariance: the mean over the realisations of the empirical covariance at lags of 0, 1, 5,
15 and 45 cells along both axes, as a ratio to the model value (1.0 is exact; with 40
realisations the spread is about +-0.03 at lag 0).

Measured on 2 cores with 40 realisations (the GSTools runs take several minutes)::

    method                  s/field  peak MB   covariance / model at lags (0, 1, 5, 15, 45)
    circulant embedding       0.186     36.9    1.01   1.01   1.02   1.03   0.95
    gstools RandMeth 1000     9.329      6.3    1.01   1.00   1.01   1.00   0.97
    gstools Fourier 64^2     13.789      6.5    0.85   0.90   1.02   0.99   1.07

Circulant embedding is 50 times faster than RandMeth at the same accuracy (tests build
many small worlds, and the sample world in well under a second), and GSTools' Fourier
generator loses 15 % of the variance at short lags with this many modes.

The synthetic truth needs a field whose covariance *is* the published variogram, because
later tests check that fitted variograms recover it. ``mapping.synthetic`` therefore uses
circulant embedding (Dietrich & Newsam 1997), which is exact at the cell centres, rather than
GSTools' randomisation method (``RandMeth``, a finite sum of random modes whose covariance
converges to the model only as the number of modes grows) or its periodic ``Fourier``
generator (exact only for the periodic version of the model).
"""

from __future__ import annotations

import sys
import time
import tracemalloc

import gstools as gs
import numpy as np

from mapping.synthetic import ResidualModel, gaussian_random_field

RES = 5000.0
MODEL = ResidualModel(psill=0.09, range=75_000.0)
LAGS = (0, 1, 5, 15, 45)


def circulant(shape: tuple[int, int], seed: int) -> np.ndarray:
    return gaussian_random_field(shape, RES, MODEL, np.random.default_rng(seed))


def _gstools(shape: tuple[int, int], seed: int, generator: str, **kw) -> np.ndarray:
    ny, nx = shape
    model = gs.Exponential(dim=2, var=MODEL.psill, len_scale=MODEL.range)
    srf = gs.SRF(model, generator=generator, **kw)
    x = np.arange(nx) * RES
    y = np.arange(ny) * RES
    return srf.structured([y, x], seed=seed)  # indexed (y, x)


def randmeth(shape: tuple[int, int], seed: int) -> np.ndarray:
    return _gstools(shape, seed, "RandMeth", mode_no=1000)


def fourier(shape: tuple[int, int], seed: int) -> np.ndarray:
    ny, nx = shape
    # period of the domain plus ten ranges, like the embedding's padding
    period = [ny * RES + 10 * MODEL.range, nx * RES + 10 * MODEL.range]
    return _gstools(shape, seed, "Fourier", period=period, mode_no=[64, 64])


def covariance_ratios(fields: list[np.ndarray]) -> list[float]:
    out = []
    for lag in LAGS:
        cx = np.mean([np.mean(f[:, : f.shape[1] - lag] * f[:, lag:]) for f in fields])
        cy = np.mean([np.mean(f[: f.shape[0] - lag] * f[lag:]) for f in fields])
        model = float(MODEL.covariance(np.array(lag * RES)))
        out.append(0.5 * (cx + cy) / model)
    return out


def main() -> None:
    shape = (int(sys.argv[1]), int(sys.argv[2])) if len(sys.argv) > 2 else (320, 400)
    n_real = int(sys.argv[3]) if len(sys.argv) > 3 else 10
    print(
        f"grid {shape[0]} x {shape[1]} cells of {RES / 1000:g} km; exponential, psill "
        f"{MODEL.psill}, range {MODEL.range / 1000:g} km"
    )
    print(f"{'method':<22}{'s/field':>9}{'peak MB':>9}   covariance / model at lags {LAGS} cells")
    print(f"({n_real} realisations)", flush=True)
    for name, fn in [
        ("circulant embedding", circulant),
        ("gstools RandMeth 1000", randmeth),
        ("gstools Fourier 64^2", fourier),
    ]:
        fn(shape, 0)  # warm-up (JIT, caches)
        tracemalloc.start()
        t0 = time.perf_counter()
        fn(shape, 1)
        seconds = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1] / 1e6
        tracemalloc.stop()
        fields = [fn(shape, 100 + i) for i in range(n_real)]
        ratios = "  ".join(f"{r:5.2f}" for r in covariance_ratios(fields))
        print(f"{name:<22}{seconds:9.3f}{peak:9.1f}   {ratios}", flush=True)


if __name__ == "__main__":
    main()
