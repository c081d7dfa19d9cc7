"""Monte Carlo zone totals (``mapping.uncertainty``): speed, memory, workers, method, truth.

Run: ``python benchmarks/bench_uncertainty.py [PART ...] [--n N] [--realizations R]``, with
PART any of ``speed workers methods sample kernels`` (default: all).

``speed``
    A synthetic polar world of N x N 1 km cells on EASE-Grid 2.0 North (default N = 4096,
    16.8 M cells; land a disk of 64 % of them, four ring-shaped zones), four cumulative
    intervals with lazy mean and std maps, the sample truth's residual variogram
    (exponential, range 75 km: a kernel radius of 625 cells at 1 km). Times
    ``zone_total_draws`` for R realizations (default 8) with one shared variogram, with four
    different ones, and coarsened by 4; prints cell-realizations per second (all cells and
    land cells) and the peak resident memory of the process above its level before.
``workers``
    The same draws on a local Dask cluster of 1 and of 2 worker processes, and with the
    threaded scheduler: identical to the last bit?
``methods``
    Why not the randomization method: the total of a unit-variance field over a zone 51
    ranges wide (128 x 128 cells of 4 km, range 10 km) in 400 realizations of this module's
    field and of GSTools' ``RandMeth`` (100 and 1000 modes): variance against the analytic
    one, kurtosis and upper tail of the totals, seconds per realization.
``sample``
    The committed sample data (``sample_rasters``): stocks from the profiles, a regression
    kriging model per interval (random-forest trend, as ``workflows/sample_per_interval.yaml``; and a
    linear trend on log stocks), predicted on the grid; the 90 % range of every zone total
    against the true total (``truth/*.tif``), pixel coverage of the 90 % intervals, and
    the independent-pixel ranges; without and with the shared error of the residuals' mean
    (``common_sd = residual_mean_sd(model)``). Also how far the profiles' 0-30 cm stocks are
    from the true stock of their cells (bulk density measured or imputed by the PTF).
``kernels``
    Why two compiled (numba) loops: on one hemisphere-like chunk (2336 x 2336 cells, a
    quarter of them in zones, four kernels on a 4-cell lattice), the bilinear interpolation
    of a coarsened field at the zone cells (``mapping._field_kernel``) and the exact
    per-zone sums (``mapping._exact_kernel``), each against the NumPy code it replaced:
    seconds per call and whether the results are identical to the last bit.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import pandas as pd
import psutil

from mapping.grid import Grid
from mapping.models.variogram import Variogram
from mapping.randomfield import GaussianField
from mapping.residual_errors import residual_mean_sd
from mapping.uncertainty import independent_pixel_range, summarise_draws, zone_total_draws
from mapping.zones import prepare_zones

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_rasters"
INTERVALS = ("0-30", "0-100", "0-200", "0-300")
FACTORS = (1.0, 2.6, 3.9, 4.7)  # mean density of each interval relative to 0-30
RESIDUAL = Variogram("exponential", psill=0.09, range=75_000.0)  # the sample truth's


# ----------------------------------------------------------------------------- helpers
class Peak:
    """Peak resident memory of this process (and its children) above the level at entry."""

    def __enter__(self) -> Peak:
        self.proc = psutil.Process()
        self.base = self._rss()
        self.peak = self.base
        self._stop = False
        import threading

        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _rss(self) -> int:
        total = self.proc.memory_info().rss
        for c in self.proc.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                total += c.memory_info().rss
        return total

    def _run(self) -> None:
        while not self._stop:
            self.peak = max(self.peak, self._rss())
            time.sleep(0.05)

    def __exit__(self, *exc: Any) -> None:
        self._stop = True
        self._t.join()

    @property
    def mib(self) -> float:
        return (self.peak - self.base) / 2**20


def polar_world(n: int, chunks: int) -> tuple[Grid, dict, dict, Any, int]:
    """Lazy mean/std maps of four intervals and ring zones on an n x n 1 km EASE grid."""
    half = n * 500.0
    grid = Grid.from_bounds((-half, -half, half, half), 1000.0, "EPSG:6931")
    rows, cols = grid.chunk_sizes(chunks)

    def coords(block_info: dict) -> tuple[np.ndarray, np.ndarray]:
        (r0, r1), (c0, c1) = block_info[None]["array-location"]
        y = (np.arange(r0, r1) + 0.5 - n / 2)[:, None] / n
        x = (np.arange(c0, c1) + 0.5 - n / 2)[None, :] / n
        return y, x

    def mean_block(factor: float, block_info: dict | None = None) -> np.ndarray:
        y, x = coords(block_info)
        r = np.hypot(x, y)
        m = factor * (9.0 + 3.0 * np.sin(9 * x) * np.cos(7 * y) + 4.0 * r)
        return np.where(r < 0.45, m, np.nan)

    def zone_block(block_info: dict | None = None) -> np.ndarray:
        y, x = coords(block_info)
        r = np.hypot(x, y)
        return np.where(r < 0.45, 1 + np.minimum((r / 0.1125).astype(int), 3), 0).astype("int16")

    means = {
        iv: grid.wrap(da.map_blocks(mean_block, f, chunks=(rows, cols), dtype="float64"))
        for iv, f in zip(INTERVALS, FACTORS, strict=True)
    }
    stds = {iv: m * 0.3 for iv, m in means.items()}
    zones = grid.wrap(da.map_blocks(zone_block, chunks=(rows, cols), dtype="int16"))
    zones = zones.rio.write_nodata(0)
    land = int(np.pi * (0.45 * n) ** 2)
    return grid, means, stds, zones, land


# ----------------------------------------------------------------------------- speed
def bench_speed(n: int, n_real: int) -> None:
    print(f"\n== speed: {n} x {n} cells of 1 km, {n_real} realizations, 4 intervals, 2 threads")
    field = GaussianField.from_variograms([RESIDUAL], (1000.0, 1000.0))
    chunks = 2560  # the maps' own chunks (zone_total_draws picks its own)
    grid, means, stds, zones, land = polar_world(n, chunks)
    names = {1: "z1", 2: "z2", 3: "z3", 4: "z4"}
    t0 = time.perf_counter()
    layout = prepare_zones(zones, grid, names, chunks=chunks)
    print(f"zones prepared in {time.perf_counter() - t0:.1f} s; kernel radius {field.halo} cells")
    per = {
        "0-30": RESIDUAL,
        "0-100": RESIDUAL.replace(range=90_000.0),
        "0-200": RESIDUAL.replace(range=110_000.0, nugget=0.01),
        "0-300": RESIDUAL.replace(range=130_000.0, nugget=0.02),
    }
    runs = [
        ("one variogram", RESIDUAL, {}),
        ("four variograms", per, {}),
        ("one variogram, coarsen=4", RESIDUAL, {"coarsen": 4}),
    ]
    print(
        f"{'case':<28}{'chunks':>7}{'s':>9}{'Mcell-real/s':>14}{'(land)':>9}{'peak MiB':>10}"
        f"{'CPU s':>8}{'core-h, 21 M cells x 100':>27}"
    )
    for label, vg, kw in runs:
        with dask.config.set(scheduler="threads", num_workers=2), Peak() as peak:
            t = time.perf_counter()
            cpu0 = time.process_time()
            draws = zone_total_draws(
                means, stds, layout, grid, vg, n_realizations=n_real, seed=1, chunks=None, **kw
            )
            dt = time.perf_counter() - t
            cpu = time.process_time() - cpu0
        cells = n * n * n_real
        # CPU seconds per land cell-realization; a hemisphere run touches chunks around
        # ~21 M land cells: count 1.5x that many cells (chunk edges) on a 1 km grid.
        core_h = cpu / (land * n_real) * 21e6 * 1.5 * 100 / 3600
        ch = draws.attrs["chunks"][0]
        print(
            f"{label:<28}{ch:>7}{dt:>9.1f}{cells / dt / 1e6:>14.2f}{land * n_real / dt / 1e6:>9.2f}"
            f"{peak.mib:>10.0f}{cpu:>8.0f}{core_h:>27.2f}"
        )
        assert draws["storage_pg"].notna().all()
    print(f"(land: {land / 1e6:.1f} M cells; CPU s: this process, both threads)")


# ----------------------------------------------------------------------------- workers
def bench_workers() -> None:
    from distributed import Client, LocalCluster

    print("\n== workers: 256 x 256 cells, chunks of 64, 20 realizations, 4 intervals")
    grid, means, stds, zones, _ = polar_world(256, 64)
    v = RESIDUAL.replace(range=20_000.0)
    kw = {"n_realizations": 20, "seed": 3, "chunks": 64, "names": {1: "a", 2: "b", 3: "c", 4: "d"}}
    results = {}
    with dask.config.set(scheduler="threads", num_workers=2):
        results["threads, 2"] = zone_total_draws(means, stds, zones, grid, v, **kw)
    for n_workers in (1, 2):
        with (
            LocalCluster(
                n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None
            ) as cl,
            Client(cl),
        ):
            t = time.perf_counter()
            results[f"{n_workers} process(es)"] = zone_total_draws(
                means, stds, zones, grid, v, **kw
            )
            print(f"local cluster, {n_workers} worker process(es): {time.perf_counter() - t:.1f} s")
    ref = results["threads, 2"]["storage_pg"].to_numpy()
    for k, d in results.items():
        same = np.array_equal(d["storage_pg"].to_numpy(), ref)
        print(
            f"{k:<22} identical to threads: {same}  (max rel diff {np.max(np.abs(d['storage_pg'] - ref) / np.abs(ref)):.1e})"
        )


# ----------------------------------------------------------------------------- methods
def bench_methods(n_real: int = 400) -> None:
    import gstools as gs
    from scipy.stats import kurtosis

    n, res, a = 128, 4000.0, 10_000.0
    print(
        f"\n== methods: sum of a unit-variance field over {n} x {n} cells of {res / 1000:g} km "
        f"(exponential, range {a / 1000:g} km: the zone is {n * res / a:.0f} ranges wide), "
        f"{n_real} realizations"
    )
    v = Variogram("exponential", psill=1.0, range=a)
    # analytic Var(sum Z) = sum over lags of (pairs at the lag) x rho(lag)
    lag = np.arange(-(n - 1), n)
    pairs = (n - np.abs(lag))[:, None] * (n - np.abs(lag))[None, :]
    var = float((pairs * v.covariance(np.hypot(lag[:, None] * res, lag[None, :] * res))).sum())
    rows = []
    f = GaussianField.from_variograms([v], (res, res), 0)
    t = time.perf_counter()
    tot = np.array([f.window(slice(0, n), slice(0, n), [r])[0, 0].sum() for r in range(n_real)])
    rows.append(("kernel (this module)", tot, (time.perf_counter() - t) / n_real))
    x = np.arange(n) * res
    for modes in (100, 1000):
        srf = gs.SRF(
            gs.Exponential(dim=2, var=1.0, len_scale=a), generator="RandMeth", mode_no=modes
        )
        t = time.perf_counter()
        tot = np.array([srf.structured([x, x], seed=1000 + r).sum() for r in range(n_real)])
        rows.append((f"GSTools RandMeth {modes}", tot, (time.perf_counter() - t) / n_real))
    se = math.sqrt(2 / (n_real - 1))
    print(
        f"{'method':<24}{'var / analytic':>17}{'excess kurtosis':>17}{'P90(|T|) / sd':>15}{'s / realization':>17}"
    )
    for name, tot, sec in rows:
        q = np.percentile(np.abs(tot), 90) / tot.std()
        print(
            f"{name:<24}{tot.var(ddof=1) / var:>10.3f} ± {se:.2f}{kurtosis(tot):>17.2f}{q:>15.2f}{sec:>17.3f}"
        )
    print("(a Gaussian total: excess kurtosis 0, P90(|T|) / sd = 1.64)")


# ----------------------------------------------------------------------------- sample truth
def _sample_maps(model_kind: str, measured_bd_only: bool) -> dict[str, Any]:
    from sklearn.compose import make_column_transformer
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    from mapping.config import load_config
    from mapping.covariates import build_stack, target_grid
    from mapping.depths import compute_stocks
    from mapping.extract import extract_at_points
    from mapping.models import OrdinaryKriging, QuantileRandomForest, RegressionKriging
    from mapping.predict import predict_grid
    from mapping.profiles import read_horizons

    cfg = load_config(ROOT / "workflows" / "sample_per_interval.yaml")
    horizons = read_horizons(cfg.profiles.path, columns=dict(cfg.profiles.columns))
    stocks = compute_stocks(horizons, cfg.stocks.intervals(), method=cfg.stocks.method).stocks
    grid = target_grid(cfg.grid, cfg.covariates)
    stack = build_stack(cfg.covariates, grid, chunks=512)
    sites = stocks.drop_duplicates("profile_id")[["profile_id", "lon", "lat"]]
    res = extract_at_points(stack, grid, sites.reset_index(drop=True), crs=cfg.profiles.crs)
    names = [c.name for c in cfg.covariates]
    table = stocks.merge(res.complete()[["profile_id", "x", "y", *names]], on="profile_id")
    table["landcover"] = table["landcover"].astype("int64")
    _stock_bias(table, grid)
    if measured_bd_only:
        table = table[table["bd_imputed"] == 0]
    out: dict[str, Any] = {
        "grid": grid,
        "means": {},
        "stds": {},
        "lower": {},
        "upper": {},
        "vg": {},
        "models": {},
    }
    for top, bottom in cfg.stocks.intervals():
        label = f"{top:g}-{bottom:g}"
        rows = table[(table["top_cm"] == top) & (table["bottom_cm"] == bottom)]
        X, y = rows[["x", "y", *names]], rows["soc_stock_kg_m2"].to_numpy(float)
        if model_kind == "rf":
            trend = QuantileRandomForest(random_state=cfg.seed, categorical_features=["landcover"])
            model = RegressionKriging(
                trend=trend, kriging=OrdinaryKriging(variogram="spherical", n_neighbors=32)
            )
        else:
            onehot = make_column_transformer(
                (
                    OneHotEncoder(handle_unknown="ignore", drop="first", sparse_output=False),
                    ["landcover"],
                ),
                remainder="passthrough",
            )
            model = RegressionKriging(
                trend=make_pipeline(onehot, LinearRegression()),
                kriging=OrdinaryKriging(variogram="exponential", n_neighbors=32),
                log_transform=True,
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(X, y)
        pred = predict_grid(
            model, stack, grid, quantiles=(0.05, 0.95), statistics=("mean", "lower", "upper", "std")
        )
        pred = pred.compute()
        out["means"][label] = pred["mean"].astype("float64")
        out["stds"][label] = pred["std"].astype("float64")
        out["lower"][label] = pred["lower"].values
        out["upper"][label] = pred["upper"].values
        out["vg"][label] = model.variogram_
        out["models"][label] = model
        print(f"  {label}: {len(rows)} profiles, residual variogram {model.variogram_.to_gstat()}")
    return out


def _stock_bias(table: pd.DataFrame, grid: Grid) -> None:
    """Profile stocks against the true stock of their cells, by bulk density measured or imputed."""
    import rasterio

    with rasterio.open(SAMPLE / "truth" / "soc_0_30cm.tif") as src:
        truth = src.read(1).astype("float64")
    rows = table[(table["top_cm"] == 0) & (table["bottom_cm"] == 30)]
    r, c = grid.rowcol(rows["x"].to_numpy(), rows["y"].to_numpy())
    ld = np.log(rows["soc_stock_kg_m2"].to_numpy() / truth[r, c])
    imputed = rows["bd_imputed"].to_numpy() > 0
    for name, sel in (("measured", ~imputed), ("imputed (PTF)", imputed)):
        print(
            f"  0-30 cm profile stock / true cell stock, bulk density {name}: "
            f"mean log ratio {ld[sel].mean():+.3f} (sd {ld[sel].std():.3f}, {sel.sum()} profiles)"
        )


def bench_sample(n_real: int = 200) -> None:
    import rasterio

    from mapping.zonal import zone_totals

    names = {1: "continuous", 2: "discontinuous", 3: "sporadic", 4: "isolated"}
    cases = [
        (
            "rf",
            "normal",
            "regression kriging, random-forest trend, spherical (as workflows/sample_per_interval.yaml)",
        ),
        ("loglinear", "lognormal", "regression kriging of log stocks, linear trend, exponential"),
    ]
    for kind, dist, title in cases:
        print(f"\n== sample data: {title}")
        maps = _sample_maps(kind, measured_bd_only=False)
        grid = maps["grid"]
        with rasterio.open(SAMPLE / "permafrost_zones.tif") as src:
            zones = grid.wrap(src.read(1)).rio.write_nodata(0)
        truths = {}
        for label in INTERVALS:
            top, bottom = label.split("-")
            with rasterio.open(SAMPLE / "truth" / f"soc_{top}_{bottom}cm.tif") as src:
                t = src.read(1).astype("float64")
                t[t == src.nodata] = np.nan
            truths[label] = grid.wrap(t)
            ok = np.isfinite(t) & np.isfinite(maps["lower"][label])
            cover = np.mean(
                (t[ok] >= maps["lower"][label][ok]) & (t[ok] <= maps["upper"][label][ok])
            )
            print(f"  {label}: pixel 90 % intervals cover {cover:.3f} of the true cells")
        common = {label: residual_mean_sd(m) for label, m in maps["models"].items()}
        print(
            "  common_sd (residual_mean_sd): "
            + ", ".join(f"{k} {v:.3g}" for k, v in common.items())
        )
        true = zone_totals(truths, zones, grid, names=names)[["zone", "interval", "storage_pg"]]
        both = true.rename(columns={"storage_pg": "true"})
        ind = independent_pixel_range(maps["means"], maps["stds"], zones, grid, names=names)
        ind = ind[["zone", "interval", "storage_pg", "storage_lower_pg", "storage_upper_pg"]]
        both = both.merge(
            ind.rename(
                columns={
                    "storage_pg": "map",
                    "storage_lower_pg": "ind_lo",
                    "storage_upper_pg": "ind_hi",
                }
            )
        )
        for tag, cs in (("mc", 0.0), ("mc_common", common)):
            t0 = time.perf_counter()
            draws = zone_total_draws(
                maps["means"], maps["stds"], zones, grid, maps["vg"], n_realizations=n_real,
                seed=0, distribution=dist, names=names, common_sd=cs,
            )  # fmt: skip
            dt = time.perf_counter() - t0
            mc = summarise_draws(draws)[
                ["zone", "interval", "storage_lower_pg", "storage_upper_pg"]
            ]
            both = both.merge(
                mc.rename(
                    columns={"storage_lower_pg": f"{tag}_lo", "storage_upper_pg": f"{tag}_hi"}
                )
            )
            print(f"  {n_real} realizations ({tag}) in {dt:.1f} s")
        for tag in ("ind", "mc", "mc_common"):
            both[f"in_{tag}"] = both[f"{tag}_lo"].le(both["true"]) & both["true"].le(
                both[f"{tag}_hi"]
            )
        cols = ["interval", "zone", "true", "map", "ind_lo", "ind_hi", "in_ind", "mc_lo", "mc_hi", "in_mc",
                "mc_common_lo", "mc_common_hi", "in_mc_common"]  # fmt: skip
        with pd.option_context("display.width", 220, "display.precision", 2):
            print(both[cols].to_string(index=False))
        print(
            "  true total inside the 90 % range: independent pixels "
            f"{both['in_ind'].sum()}/{len(both)}, Monte Carlo {both['in_mc'].sum()}/{len(both)}, "
            f"with common_sd {both['in_mc_common'].sum()}/{len(both)}; map total / true total: "
            + ", ".join(
                f"{r.interval} {r.map / r.true:.3f}"
                for r in both[both["zone"] == "all zones"].itertuples()
            )
        )


def _numpy_exact_bincount(idx: np.ndarray, weights: np.ndarray, n_bins: int) -> np.ndarray:
    """The NumPy version of :func:`mapping.zonal.exact_bincount` (before its compiled pass)."""
    out = np.zeros(n_bins, dtype=object)
    out[:] = 0
    w = np.ascontiguousarray(weights, dtype="float64").ravel()
    bits = w.view(np.int64)
    e = (bits >> 52) & 0x7FF
    m = bits & ((1 << 52) - 1)
    e0, e1 = int(e.min()), int(e.max())
    if e0 == 0:
        m |= (e > 0).view(np.int8).astype(np.int64) << 52
        np.maximum(e, 1, out=e)
        e0 = 1
    else:
        m |= 1 << 52
    if bits.min() < 0:
        np.negative(m, out=m, where=bits < 0)
    hi = (m >> 26).astype("float64")
    m &= (1 << 26) - 1
    lo = m.astype("float64")
    n_exp = max(e1, 1) - e0 + 1
    key = np.asarray(idx).ravel() * n_exp + (e - e0)
    hs = np.bincount(key, hi, minlength=n_bins * n_exp).reshape(n_bins, n_exp)
    ls = np.bincount(key, lo, minlength=n_bins * n_exp).reshape(n_bins, n_exp)
    for b, k in zip(*np.nonzero((hs != 0) | (ls != 0)), strict=True):
        out[b] += ((int(hs[b, k]) << 26) + int(ls[b, k])) << (e0 + int(k) - 1)
    return out


def bench_kernels(repeat: int = 5) -> None:
    from mapping._field_kernel import bilinear_at
    from mapping.zonal import exact_bincount

    rng = np.random.default_rng(0)
    side, f, n_k = 2336, 4, 4
    width = side // f + 1
    nodes = rng.standard_normal((n_k, width * width))
    keep = rng.random((side, side)) < 0.25
    gi, gj = np.nonzero(keep)
    base = (gi // f) * width + gj // f
    u, v = (gi % f) / f, (gj % f) / f
    place = np.arange(len(base))
    out = np.empty((n_k, len(base)))
    bilinear_at(nodes, width, base, u, v, place, out)  # compile (or load the cache)

    def numpy_bilinear() -> np.ndarray:
        left = nodes[:, base] * (1.0 - u) + nodes[:, base + width] * u
        right = nodes[:, base + 1] * (1.0 - u) + nodes[:, base + width + 1] * u
        return left * (1.0 - v) + right * v

    def timed(fn: Any) -> tuple[float, Any]:
        t = time.perf_counter()
        for _ in range(repeat):
            res = fn()
        return (time.perf_counter() - t) / repeat, res

    t_np, ref = timed(numpy_bilinear)
    t_nb, _ = timed(lambda: bilinear_at(nodes, width, base, u, v, place, out))
    print(f"bilinear at {len(base):,} cells x {n_k} kernels: NumPy {t_np:.3f} s, numba "
          f"{t_nb:.4f} s ({t_np / t_nb:.0f}x), identical: {np.array_equal(ref, out)}")  # fmt: skip
    w = rng.lognormal(0.0, 2.0, len(base)) * 1e6
    idx = rng.integers(0, 5, len(base))
    t_np, ref = timed(lambda: _numpy_exact_bincount(idx, w, 5))
    t_nb, got = timed(lambda: exact_bincount(idx, w, 5))
    print(f"exact sums of {len(w):,} values in 5 bins: NumPy {t_np:.3f} s, numba "
          f"{t_nb:.4f} s ({t_np / t_nb:.0f}x), identical: {list(ref) == list(got)}")  # fmt: skip


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("parts", nargs="*", default=["speed", "workers", "methods", "sample", "kernels"])
    p.add_argument("--n", type=int, default=4096, help="grid side for 'speed' (cells)")
    p.add_argument("--realizations", type=int, default=8, help="realizations for 'speed'")
    args = p.parse_args(argv)
    for part in args.parts:
        if part == "speed":
            bench_speed(args.n, args.realizations)
        elif part == "workers":
            bench_workers()
        elif part == "methods":
            bench_methods()
        elif part == "sample":
            bench_sample()
        elif part == "kernels":
            bench_kernels()
        else:
            p.error(f"unknown part {part!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
