"""What a zone range of the design suite's reruns depends on (docs/design.md, "N = 50 and
200 under the sample workflow's structure").

For every run of a finished ``design_suite.py`` suite (the runs without new sites and every
rerun), the zone's stock-weighted mean of the shared extrapolation sd ``x``
(:func:`mapping.calibration.extrapolation_sd`, from the run's mean, median and std maps, its
error model and the training profiles' median DI), the mean calibrated ``ln`` sd over the
zone's cells, the 90 % half-width of the zone's total and its error against the truth; then
the correlations between them.

    python benchmarks/design_range_drivers.py OUT [--zone continuous --interval 0-100] [--csv F]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import rasterio

from mapping.calibration import extrapolation_sd
from mapping.synthetic.truth import ZONE_NAMES

ZONE_CODES = {name: code for code, name in ZONE_NAMES.items()}


def _reference(em, di: np.ndarray, how: str) -> float:
    """The reference DI of the shared extrapolation error: the training profiles' median DI
    (``median``, as socmap runs) or the DI where the error model's non-decreasing factor
    first reaches its mean over the training profiles' DIs (``mean``, a variant that
    averages over the isotonic steps instead of taking the one at the median)."""
    di = np.sort(di[np.isfinite(di)])
    if how == "median":
        return float(np.median(di))
    f = np.asarray(em.factor(di), dtype=float)
    return float(di[min(int(np.searchsorted(f, f.mean())), len(di) - 1)])


def _run_row(
    run: Path, zones: np.ndarray, code: int, zone: str, interval: str, truth: float, how: str
):
    top, bottom = interval.split("-")

    def read(stat: str) -> np.ndarray:
        with rasterio.open(run / "maps" / f"soc_{top}_{bottom}cm_{stat}.tif") as src:
            return src.read(1).astype("float64")

    mean, median, std = read("mean"), read("median"), read("std")
    em = joblib.load(run / "models" / interval / "error_model.joblib")
    di = np.asarray(joblib.load(run / "models" / interval / "aoa.joblib").train_di_, float)
    x = extrapolation_sd(mean, median, std, em, _reference(em, di, how))
    cells = (zones == code) & np.isfinite(mean) & (mean > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        sd = np.sqrt(np.log1p((std / mean) ** 2))
    s = pd.read_csv(run / "zones" / "storage_summary.csv")
    q = s[(s["zone"] == zone) & (s["interval"] == interval)].iloc[0]
    return {
        "x": float((mean[cells] * x[cells]).sum() / mean[cells].sum()),
        "sd": float(np.nanmean(sd[cells])),
        "half_width": float((q["storage_upper_pg"] - q["storage_lower_pg"]) / 2 / truth),
        "error": float(q["storage_median_pg"] / truth - 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("suite", type=Path)
    p.add_argument("--zone", default="continuous", choices=sorted(ZONE_CODES))
    p.add_argument("--interval", default="0-100")
    p.add_argument(
        "--reference",
        choices=["median", "mean"],
        default="median",
        help="the in-domain level: r at the training profiles' median DI (as socmap runs) or "
        "the mean of r over their DIs (a variant, to see how much the steps move x)",
    )
    p.add_argument("--csv", type=Path, default=None)
    args = p.parse_args(argv)
    top, bottom = (int(v) for v in args.interval.split("-"))
    rows = []
    for world in sorted((args.suite / "worlds").glob("world_*")):
        if not (world / "permafrost_zones.tif").exists():
            continue
        with rasterio.open(world / "permafrost_zones.tif") as src:
            zones = src.read(1)
        t = pd.read_csv(world / "truth" / "zone_totals.csv")
        t = t[(t["zone"] == args.zone) & (t["top_cm"] == top) & (t["bottom_cm"] == bottom)]
        truth = float(t["storage_pg"].iloc[0])
        for run in [world / "run", *sorted(world.glob("design_*/run"))]:
            if not (run / "zones" / "storage_summary.csv").exists():
                continue
            code = ZONE_CODES[args.zone]
            row = _run_row(run, zones, code, args.zone, args.interval, truth, args.reference)
            name = "none" if run.parent == world else run.parent.name.removeprefix("design_")
            rows.append({"world": world.name, "design": name, **row})
    d = pd.DataFrame(rows)
    pd.set_option("display.width", 160)
    print(d.round(3).to_string(index=False))
    print(f"\n{len(d)} runs; correlations:")
    print(d[["x", "sd", "half_width"]].corr().round(2).to_string())
    # how far x moves between the designs of one world at one N (the reruns' noise)
    d["n"] = d["design"].str.extract(r"_(\d+)$", expand=False)
    spread = d.dropna(subset=["n"]).groupby(["world", "n"])["x"].agg(["mean", "std"])
    print(
        f"\nx across the designs of a world and N: mean sd {spread['std'].mean():.3f} "
        f"(mean x {spread['mean'].mean():.3f})"
    )
    if args.csv is not None:
        d.to_csv(args.csv, index=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
