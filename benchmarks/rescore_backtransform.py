#!/usr/bin/env python
"""Rescore a finished world suite with other back-transforms of the mean maps.

    python benchmarks/rescore_backtransform.py SUITE [SUITE ...]

A run's mean map is the log-normal mean ``exp(mu + var / 2)`` with ``var`` the model's own
log variance (kriging variance of the level plus the layer's within-profile variance); the
calibration widens the std and the quantile maps (``docs/calibration.md``) but leaves the
mean where it is. This script asks what the zone totals and the pixel figures would be with
the mean back-transformed with a calibrated variance instead, from the maps already written
(``median = exp(mu)``, ``mean``, ``std``) and each interval's error model
(``models/<interval>/error_model.csv``, fitted variance ratios by DI bin; an interval
without one keeps the model's variance):

* ``model``: the maps as written;
* ``calibrated``: ``exp(mu + v / 2)`` with the calibrated variance ``v = ln(1 + (std/mean)^2)``
  of every cell, the mean of the predictive distribution the intervals describe;
* ``in_domain``: ``exp(mu + r var / 2)`` with ``r`` the profile-weighted median of the error
  model's fitted ratios (the model's variance scaled as the held-out profiles say, the same
  in every cell, no growth with DI).

Prints, per interval and back-transform, the worlds whose all-zones total is within ±3 %,
the mean absolute and the mean signed error of the totals over all land cells, the mean pixel R² and
the mean RMS of ``(mean - truth) / std``; and the 0-300 cm errors of those totals world by world.
Results are in ``docs/depth_model.md``, "Zone totals: what the data allow".
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from world_suite import INTERVALS, _read, _truth

MODES = ("model", "calibrated", "in_domain")


def _means(run: Path, top: int, bottom: int) -> dict[str, np.ndarray]:
    def read(stat: str) -> np.ndarray:
        return _read(run / "maps" / f"soc_{top}_{bottom}cm_{stat}.tif")

    mean, median, std = read("mean"), read("median"), read("std")
    var = 2.0 * np.log(mean / median)  # the model's own log variance
    v = np.log1p((std / mean) ** 2)  # the calibrated one
    table = run / "models" / f"{top}-{bottom}" / "error_model.csv"
    r = 1.0  # no error model (too few profiles): the model's own variance
    if table.is_file():
        em = pd.read_csv(table)
        r = float(np.median(np.repeat(em["fitted"].to_numpy(), em["n"].to_numpy())))
    return {
        "model": mean,
        "calibrated": median * np.exp(v / 2.0),
        "in_domain": median * np.exp(r * var / 2.0),
        "std": std,
    }


def score(suite: Path) -> pd.DataFrame:
    """One row per world, interval and back-transform."""
    rows = []
    for world in sorted(p for p in (suite / "worlds").iterdir() if (p / "run").is_dir()):
        area = _read(world / "truth" / "cell_area_m2.tif")
        for top, bottom in INTERVALS:
            truth = _truth(world, top, bottom)
            maps = _means(world / "run", top, bottom)
            ok = np.isfinite(truth) & np.isfinite(maps["model"]) & np.isfinite(area)
            t = truth[ok]
            total = float(np.sum(t * area[ok]))
            for mode in MODES:
                m = maps[mode][ok]
                rows.append(
                    {
                        "world": world.name,
                        "interval": f"{top}-{bottom}",
                        "mode": mode,
                        "error": float(np.sum(m * area[ok])) / total - 1.0,
                        "r2": 1.0 - np.sum((m - t) ** 2) / np.sum((t - t.mean()) ** 2),
                        "rms_z": float(np.sqrt(np.nanmean(((m - t) / maps["std"][ok]) ** 2))),
                    }
                )
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("suites", nargs="+", type=Path, help="world-suite output folders")
    args = ap.parse_args(argv)
    pd.set_option("display.width", 200)
    for suite in args.suites:
        df = score(suite)
        print(f"\n{suite}")
        summary = df.groupby(["interval", "mode"], sort=False).agg(
            within_3pct=("error", lambda e: int((e.abs() <= 0.03).sum())),
            mean_abs_error=("error", lambda e: e.abs().mean()),
            mean_error=("error", "mean"),
            pixel_r2=("r2", "mean"),
            rms_z=("rms_z", "mean"),
        )
        print(summary.round(3).to_string())
        deep = df[df["interval"] == "0-300"].pivot(index="mode", columns="world", values="error")
        print("\n0-300 cm total over the land, error (%)")
        print((100 * deep.loc[list(MODES)]).round(1).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
