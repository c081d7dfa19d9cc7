"""Throughput of profile stocks: ``compute_stocks`` on synthetic horizon tables.

Run: ``python benchmarks/bench_stocks.py [N_PROFILES]``. Prints seconds, profiles per second and
peak memory for both harmonisation methods, and (when the ``mpspline`` package, a per-profile
port of R's mpspline2, is installed) the time it takes for the same profiles, to justify the
vectorised spline kernel in ``mapping.depths``.
"""

from __future__ import annotations

import sys
import time
import tracemalloc

import numpy as np
import pandas as pd

from mapping.depths import build_pieces, compute_stocks

INTERVALS = [
    (0, 30),
    (0, 100),
    (0, 200),
    (0, 300),
    (0, 5),
    (5, 15),
    (15, 30),
    (30, 60),
    (60, 100),
    (100, 200),
]


def synthetic_horizons(n_profiles: int, seed: int = 0) -> pd.DataFrame:
    """Contiguous profiles of 2-10 horizons, an organic top, 20 % cryoturbated pairs, 30 % missing BD."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_profiles):
        n = int(rng.integers(2, 11))
        depth = rng.choice([30, 60, 100, 150, 200, 300, 350])
        cuts = np.sort(rng.choice(np.arange(1, depth), size=n - 1, replace=False))
        bounds = np.concatenate([[0], cuts, [depth]]).astype(float)
        lon, lat = rng.uniform(60, 180), rng.uniform(55, 75)
        for i in range(n):
            soc = float(np.clip(rng.lognormal(np.log(30 if i == 0 else 2), 0.6), 0.05, 55))
            bd = (
                np.nan
                if rng.random() < 0.3
                else float(np.clip(1.6 - 0.03 * soc + rng.normal(0, 0.1), 0.08, 2.0))
            )
            base = dict(
                profile_id=f"P{p}",
                lon=lon,
                lat=lat,
                top_cm=bounds[i],
                bottom_cm=bounds[i + 1],
                coarse_fraction_pct=float(rng.uniform(0, 30)),
                n_pct=soc / rng.uniform(10, 30),
            )
            if i > 0 and rng.random() < 0.2:
                share = float(rng.choice([30.0, 40.0, 60.0]))
                rows.append(dict(base, soc_pct=soc, bulk_density_g_cm3=bd, horizon_area_pct=share))
                rows.append(
                    dict(base, soc_pct=soc * 2, bulk_density_g_cm3=bd, horizon_area_pct=100 - share)
                )
            else:
                rows.append(dict(base, soc_pct=soc, bulk_density_g_cm3=bd, horizon_area_pct=100.0))
    return pd.DataFrame(rows)


def main(n_profiles: int = 5000) -> None:
    h = synthetic_horizons(n_profiles)
    print(f"{n_profiles} profiles, {len(h)} horizons, {len(INTERVALS)} intervals")
    for method in ("spline", "linear"):
        tracemalloc.start()
        t = time.perf_counter()
        res = compute_stocks(h, INTERVALS, method=method)
        dt = time.perf_counter() - t
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        print(
            f"compute_stocks {method:6s}: {dt:6.2f} s  {n_profiles / dt:8.0f} profiles/s  "
            f"peak {peak:6.1f} MiB  rows {len(res.stocks)}"
        )
    try:
        import mpspline  # noqa: F401
    except ImportError:
        print("mpspline (PyPI) not installed: per-profile reference timing skipped")
        return
    _bench_mpspline(h, n_profiles)


def _bench_mpspline(h: pd.DataFrame, n_profiles: int) -> None:
    from mpspline import spline_one

    # mpspline has no area shares: one value per depth range (the area-weighted density)
    h = h.assign(
        rho=h.soc_pct
        * 10
        * h.bulk_density_g_cm3.fillna(1.0)
        * (1 - h.coarse_fraction_pct / 100)
        * h.horizon_area_pct
        / 100
    )
    flat = h.groupby(["profile_id", "top_cm", "bottom_cm"], sort=False, as_index=False)["rho"].sum()
    flat = flat.rename(columns={"top_cm": "UD", "bottom_cm": "LD"})
    groups = list(flat.groupby("profile_id", sort=False))
    t = time.perf_counter()
    ref = [spline_one(prof, "rho", lam=0.1, target_depths=[(0, 30)]) for _, prof in groups]
    dt = time.perf_counter() - t
    print(
        f"mpspline.spline_one loop : {dt:6.2f} s  {n_profiles / dt:8.0f} profiles/s (1-cm grid, no area shares)"
    )

    # the same spline here, without the mass correction, evaluated on mpspline's 1-cm grid
    pid = np.repeat(np.arange(len(groups)), [len(g) for _, g in groups])
    pieces = build_pieces(
        pid,
        flat.UD.to_numpy(),
        flat.LD.to_numpy(),
        flat.rho.to_numpy(),
        "spline",
        0.1,
        preserve_mass=False,
    )
    worst_point, worst_mean, worst_mass = 0.0, 0.0, 0.0
    for p, ((_, prof), r) in enumerate(zip(groups, ref, strict=True)):
        if len(prof) < 2:
            continue
        d = np.arange(len(r["est_1cm"]) - 1, dtype=float)
        ours = pieces.evaluate(p, d)
        ok = ~np.isnan(ours)
        worst_point = max(worst_point, float(np.max(np.abs(ours[ok] - r["est_1cm"][:-1][ok]))))
        if prof.LD.max() >= 30:
            exact = (
                pieces.integrate(
                    np.full(len(groups), 0.0), np.full(len(groups), 30.0), len(groups)
                )[p, 0]
                / 30
            )
            worst_mean = max(worst_mean, abs(r["est_dcm"][0] - exact) / exact)
        lay = pieces.pid == p
        got = np.array(
            [
                pieces.integrate(np.full(len(groups), a), np.full(len(groups), b), len(groups))[
                    p, 0
                ]
                for a, b in zip(
                    pieces.x0[lay][: len(prof)], pieces.x1[lay][: len(prof)], strict=True
                )
            ]
        )
        want = prof.rho.to_numpy() * (prof.LD - prof.UD).to_numpy()
        worst_mass = max(worst_mass, float(np.max(np.abs(got - want) / want)))
        if p >= 200:
            break
    print(f"  same spline, max |difference| at 1-cm points: {worst_point:.2e} kg m-3")
    print(
        f"  mpspline 0-30 cm mean (1-cm left sums) vs exact integral: max {100 * worst_mean:.2f} %"
    )
    print(
        f"  uncorrected spline (lambda 0.1): worst layer-mass error {100 * worst_mass:.1f} %"
        " (compute_stocks rescales each layer to its stock)"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5000)
