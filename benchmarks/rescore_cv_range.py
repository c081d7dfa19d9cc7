"""How sure is a CV RMSE: the block-bootstrap ranges of finished world suites, scored
against each world's true error of a new observation.

The range is a function of a run's CV predictions, its profiles' coordinates and its
seed only, so this recomputes exactly what ``socmap run`` writes (``cv.bootstrap``) for
suites run before the range existed, and for other block sides.

    python benchmarks/rescore_cv_range.py SUITE [SUITE ...] [--blocks-km 50 100 200]

Per interval and suite: worlds whose true error lies in the 90 % range; the range's
median half-width (relative to the CV RMSE); worlds whose CV RMSE is within ±10 % of the
true error; and how many an unbiased CV with only the range's sampling spread would have
within ±10 % (the sum over worlds of P(|N(0, sd)| ≤ 0.1), sd = half-width / 1.645).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from scipy.stats import norm

from mapping.cv_bootstrap import block_bootstrap_rmse, block_ids


def score(suite: Path, block_km: float) -> pd.DataFrame:
    res = pd.read_csv(suite / "results.csv")
    rows = []
    for r in res.itertuples():
        wdir = suite / "worlds" / r.world
        seed = yaml.safe_load((wdir / "workflow.yaml").read_text())["seed"]
        p = pd.read_csv(wdir / "run" / "models" / r.interval / "cv_predictions.csv")
        xy = pd.read_parquet(wdir / "run" / "training" / "training.parquet")
        xy = xy[["profile_id", "x", "y"]].drop_duplicates("profile_id")
        p = p.merge(xy, on="profile_id", how="left", validate="many_to_one")
        p = p[(p["fold"] >= 0) & p["predicted"].notna()]
        err = (p["predicted"] - p["observed"]).to_numpy()
        blocks = block_ids(p["x"].to_numpy(), p["y"].to_numpy(), block_km * 1e3)
        w = p["weight"].to_numpy() if "weight" in p else None
        lo, hi = block_bootstrap_rmse(err, blocks, w, seed=seed)
        rows.append(
            {
                "suite": suite.name,
                "world": r.world,
                "interval": r.interval,
                "true_error": r.true_error,
                "cv_rmse": r.cv_rmse,
                "lower": lo,
                "upper": hi,
                "blocks": int(blocks.max() + 1),
            }
        )
    d = pd.DataFrame(rows)
    d["inside"] = (d["lower"] <= d["true_error"]) & (d["true_error"] <= d["upper"])
    d["half_width"] = (d["upper"] - d["lower"]) / 2 / d["cv_rmse"]
    d["within_10pct"] = (d["cv_rmse"] / d["true_error"] - 1).abs() <= 0.1
    sd = d["half_width"] / norm.ppf(0.95)
    d["p_within_if_unbiased"] = norm.cdf(0.1 / sd) - norm.cdf(-0.1 / sd)
    return d


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("suites", nargs="+", type=Path)
    ap.add_argument("--blocks-km", nargs="+", type=float, default=[100.0])
    args = ap.parse_args()
    for km in args.blocks_km:
        d = pd.concat([score(s, km) for s in args.suites], ignore_index=True)
        print(f"\n## blocks of {km:g} km\n")
        print("| suite | interval | true error in the 90 % range | median half-width "
              "| CV within ±10 % | expected within ±10 % if unbiased | true error above the range |")  # fmt: skip
        print("|---|---|---|---|---|---|---|")
        for (suite, iv), g in d.groupby(["suite", "interval"], sort=False):
            print(
                f"| {suite} | {iv} | {g['inside'].sum()} of {len(g)} | "
                f"{100 * g['half_width'].median():.0f} % | {g['within_10pct'].sum()} | "
                f"{g['p_within_if_unbiased'].sum():.1f} | {(g['true_error'] > g['upper']).sum()} |"
            )
        n = len(d)
        print(
            f"\nall: {d['inside'].sum()} of {n} ({d['inside'].mean():.2f}); true error above "
            f"the range {(d['true_error'] > d['upper']).sum()}, below {(d['true_error'] < d['lower']).sum()}; "
            f"blocks per world and interval: median {np.median(d['blocks']):.0f}, min {d['blocks'].min()}"
        )


if __name__ == "__main__":
    main()
