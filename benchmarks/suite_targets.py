#!/usr/bin/env python
"""Count a finished world suite against the targets of ``docs/validation.md``.

    python benchmarks/suite_targets.py OUT [OUT ...]

``OUT`` is a folder of :mod:`benchmarks.world_suite` (``results.csv``, ``zones.csv``). Prints,
per suite: world x interval cells (of 48) meeting each per-cell target, by interval, and the
worlds meeting it in every interval; zone totals within ±3 % (all zones) and ±8 % (single
zones); the zone ranges' coverage and median half-width (pooled, per interval, per world);
the RMS of (error / (half-width / 1.645)) by zone (1 for a calibrated 90 % range: below, the
ranges are wider than the errors); and the maps' own all-zones 0-300 cm errors (the sum of
the cells' means, without the Monte Carlo).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

INTERVALS = ("0-30", "0-100", "0-200", "0-300")
ALL = ("all zones", "all_zones", "permafrost_region")


def _cells(r: pd.DataFrame, mask: pd.Series) -> str:
    per = " / ".join(str(int(mask[r["interval"] == iv].sum())) for iv in INTERVALS)
    worlds = int(mask.groupby(r["world"]).all().sum())
    return f"{int(mask.sum())} ({per}); worlds in every interval: {worlds}"


def read_zones(out: Path) -> pd.DataFrame:
    """``OUT/zones.csv`` with ``rel_error`` of the reported total and ``mc_median_rel_error``."""
    z = pd.read_csv(out / "zones.csv")
    if "mc_median_rel_error" not in z and "mean_map_rel_error" in z:  # an older suite
        z["mc_median"], z["total"] = z["total"], z["mean_map_total"]
        z["mc_median_rel_error"] = z["rel_error"]
        z["rel_error"] = z["mean_map_rel_error"]
    return z


def report(out: Path) -> str:
    """The counts of one suite folder as text."""
    r = pd.read_csv(out / "results.csv")
    z = read_zones(out)
    lines = [f"{out}"]
    picp = r["pixel_picp"]
    lines.append(
        f"  pixel PICP 0.88-0.92: {_cells(r, picp.between(0.88, 0.92))}; "
        f"above {int((picp > 0.92).sum())}, below {int((picp < 0.88).sum())}"
    )
    lines.append(f"  PICP dissimilar >= 0.80: {_cells(r, r['picp_dissimilar'] >= 0.80)}")
    lines.append(f"  RMS z 0.9-1.1: {_cells(r, r['rms_z'].between(0.9, 1.1))}")
    lines.append(f"  CV ratio 0.9-1.1: {_cells(r, r['cv_ratio'].between(0.9, 1.1))}")
    everyone = z["zone"].isin(ALL)
    a, single = z[everyone], z[~everyone]
    lines.append(
        f"  all zones within ±3 %: {int((a['rel_error'].abs() <= 0.03).sum())} of {len(a)}; "
        f"single zones within ±8 %: {int((single['rel_error'].abs() <= 0.08).sum())} of "
        f"{len(single)}"
    )
    per_iv = " / ".join(
        f"{100 * z[z['interval'] == iv]['half_width'].median():.1f}" for iv in INTERVALS
    )
    lines.append(
        f"  zone ranges: coverage {z['inside'].mean():.3f} ({int(z['inside'].sum())} of "
        f"{len(z)}), median half-width {100 * z['half_width'].median():.1f} % ({per_iv} %)"
    )
    by_world = z.groupby("world").agg(cov=("inside", "mean"), hw=("half_width", "median"))
    lines.append(
        f"  worlds with coverage >= 0.90: {int((by_world['cov'] >= 0.9).sum())}; with median "
        f"half-width <= 15 %: {', '.join(by_world.index[by_world['hw'] <= 0.15]) or 'none'}"
    )
    zz = z["rel_error"] / (z["half_width"] / 1.645)
    rms = zz.pow(2).groupby(z["zone"]).mean().pow(0.5)
    cov = z.groupby("zone")["inside"].mean()
    lines.append(f"  RMS of error / (half-width / 1.645): all {np.sqrt(np.mean(zz**2)):.2f}; " + ", ".join(
        f"{k} {rms[k]:.2f} (coverage {cov[k]:.2f})" for k in rms.index
    ))  # fmt: skip
    deep = a[a["interval"] == "0-300"].sort_values("world")
    worst = (
        single[single["interval"] == "0-300"]
        .groupby("world")["rel_error"]
        .apply(lambda v: v.abs().max())
    )
    lines.append(
        f"  at 0-300 cm, worlds with the all-zones total within ±3 %: "
        f"{int((deep['rel_error'].abs() <= 0.03).sum())} of {len(deep)}; with no single zone "
        f"beyond ±8 %: {int((worst <= 0.08).sum())} of {len(worst)}"
    )
    lines.append(
        "  all-zones 0-300 cm errors, reported total: "
        + ", ".join(f"{100 * v:+.1f}" for v in deep["rel_error"])
        + " %"
    )
    if "mc_median_rel_error" in deep.columns:
        lines.append(
            "  … of the Monte Carlo median: "
            + ", ".join(f"{100 * v:+.1f}" for v in deep["mc_median_rel_error"])
            + " %"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("suites", nargs="+", type=Path, help="folders of benchmarks/world_suite.py")
    args = p.parse_args(argv)
    for out in args.suites:
        if not (out / "results.csv").is_file():
            p.error(f"{out}: no results.csv (not a finished world suite)")
        print(report(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
