#!/usr/bin/env python
"""Where a world's total goes wrong: the error of the mean map's total, split by land kind.

    python benchmarks/total_error_sources.py SUITE [--interval 0-300] [--only world_01 ...]

For every world of a finished world suite (``benchmarks/world_suite.py``) the error of the
mean map's total over the land (cell areas from ``truth/cell_area_m2.tif``) is split into
the contributions of three kinds of land, from the world's own description
(``truth/world.json``):

* **cold tail**: MAAT below the tail cut, stretched beyond the sampled range, with almost no
  profile (``tail_keep``);
* **deposits**: the deep organic deposits (MAAT and elevation below the deposit thresholds),
  outside the tail;
* **rest**: everything else.

Each contribution is the part's (prediction - truth) as a share of the whole land's true
total, so the three add up to the total's error; ``rel`` is the part's own relative error.
Also printed: how many profiles (and how many reaching the interval's bottom) lie in the
deposits. Results in ``docs/depth_model.md``, "Zone totals: what the data allow".
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from world_suite import _profile_cells, _read, _truth


def split(world: Path, top: int, bottom: int) -> dict[str, float]:
    """Contributions of the tail, the deposits and the rest to one world's total error."""
    info = json.loads((world / "truth" / "world.json").read_text())["summary"]
    maat, elev = _read(world / "maat.tif"), _read(world / "elevation.tif")
    area = _read(world / "truth" / "cell_area_m2.tif")
    truth = _truth(world, top, bottom)
    mean = _read(world / "run" / "maps" / f"soc_{top}_{bottom}cm_mean.tif")
    ok = np.isfinite(truth) & np.isfinite(mean) & np.isfinite(area)
    tail = maat < info["maat_tail_cut_degC"]
    deposit = (maat <= info["deposit_maat_max_degC"]) & (elev <= info["deposit_elevation_max_m"])
    parts = {"tail": tail, "deposits": deposit & ~tail, "rest": ~tail & ~deposit}
    whole = float(np.sum((truth * area)[ok]))
    row: dict[str, float] = {"error": float(np.sum((mean * area)[ok])) / whole - 1.0}
    for name, mask in parts.items():
        k = ok & mask
        t, m = float(np.sum((truth * area)[k])), float(np.sum((mean * area)[k]))
        row[f"{name}_share"] = float(np.sum(area[k]) / np.sum(area[ok]))
        row[f"{name}_contribution"] = (m - t) / whole
        row[f"{name}_rel"] = m / t - 1.0 if t > 0 else np.nan
    horizons = pd.read_csv(world / "profiles.csv")
    sites = horizons.groupby("profile_id").agg(
        lon=("lon", "first"), lat=("lat", "first"), reach=("bottom_cm", "max")
    )
    r, c, inside, _, _ = _profile_cells(world, sites["lon"].to_numpy(), sites["lat"].to_numpy())
    in_deposit = np.zeros(len(sites), dtype=bool)
    in_deposit[inside] = (deposit & ~tail)[r[inside], c[inside]]
    row["profiles_in_deposits"] = int(in_deposit.sum())
    row["deep_profiles_in_deposits"] = int(np.sum(in_deposit & (sites["reach"] >= bottom)))
    row["profiles"] = int(inside.sum())
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("suite", type=Path, help="world-suite output folder")
    ap.add_argument("--interval", default="0-300", help="interval (default 0-300)")
    ap.add_argument("--only", nargs="+", default=None, metavar="NAME", help="only these worlds")
    args = ap.parse_args(argv)
    top, bottom = (int(v) for v in args.interval.split("-"))
    rows = {}
    for world in sorted(p for p in (args.suite / "worlds").iterdir() if (p / "run").is_dir()):
        if args.only and world.name not in args.only:
            continue
        rows[world.name] = split(world, top, bottom)
    df = pd.DataFrame(rows).T
    pct = [c for c in df.columns if c.endswith(("error", "_contribution", "_rel", "_share"))]
    out = df.copy()
    out[pct] = (100 * df[pct].astype(float)).round(1)
    pd.set_option("display.width", 220)
    print(f"{args.suite}, {args.interval} cm (percent)")
    print(out.to_string())
    print(
        "\nmean contribution (%): "
        + ", ".join(
            f"{k} {100 * df[f'{k}_contribution'].astype(float).mean():+.1f}"
            for k in ("tail", "deposits", "rest")
        )
        + f"; mean error {100 * df['error'].astype(float).mean():+.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
