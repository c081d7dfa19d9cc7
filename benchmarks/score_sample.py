#!/usr/bin/env python
"""Judge a run of a sample workflow against the sample's known truth (``sample_rasters/truth``).

    python benchmarks/score_sample.py [OUT]       # default out/sample

Prints, per depth interval, the figures of ``VALIDATION.md`` as the world suite computes them
(:func:`world_suite.score_world`): pixel R², PICP of the 90 % maps (all land cells and the
10 % most dissimilar), RMS z, the CV RMSE (weighted to the mapped area and at the profiles)
over the true error of a new observation; then every zone total against the truth. The
sample is one world: these figures describe it, the world suite (``docs/validation.md``)
judges the method.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

import world_suite

from mapping.synthetic import COVARIATES

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "sample_rasters"


def _sample_view(folder: Path) -> Path:
    """A world folder of the sample for :func:`world_suite.score_world`: the covariates on
    the target grid (precipitation as the truth's 5 km copy) and the truth's tables."""
    (folder / "truth").mkdir()
    for name in COVARIATES:
        src = DATA / "truth" / "precipitation_5km.tif" if name == "precipitation" else None
        (folder / f"{name}.tif").symlink_to(src or DATA / f"{name}.tif")
    (folder / "truth" / "zone_totals.csv").symlink_to(DATA / "truth" / "zone_totals.csv")
    return folder


def _truth(world_dir: Path, top: float, bottom: float) -> np.ndarray:
    return world_suite._read(DATA / "truth" / f"soc_{top:g}_{bottom:g}cm.tif")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    run = Path(args[0] if args else ROOT / "out" / "sample").resolve()
    world_suite._truth = _truth  # the sample's truth is stored as stock rasters
    with tempfile.TemporaryDirectory() as tmp:
        rows, zones = world_suite.score_world(_sample_view(Path(tmp)), run)
    table = pd.DataFrame(rows)
    cols = ["interval", "n_profiles", "pixel_r2", "pixel_picp", "picp_dissimilar", "rms_z"]
    cols += ["true_error", "cv_rmse", "cv_ratio", "cv_rmse_profiles", "cv_ratio_profiles"]
    print(f"{run} against {DATA / 'truth'}")
    print(table[cols].round(3).to_string(index=False))
    # total: the mean map's (Table 2's headline); mc_median: the Monte Carlo median
    z = zones[["zone", "interval", "true_total", "total", "mc_median", "lower", "upper"]].copy()
    z["error_%"] = 100 * zones["rel_error"]
    z["mc_median_error_%"] = 100 * zones["mc_median_rel_error"]
    z["half_width_%"] = 100 * zones["half_width"]
    z["inside"] = zones["inside"]
    print()
    print(z.round(2).to_string(index=False))
    print(
        f"\ntruth inside the range: {int(zones['inside'].sum())} of {len(zones)}; median "
        f"half-width {100 * zones['half_width'].median():.1f} %"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
