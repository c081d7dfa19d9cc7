#!/usr/bin/env python
"""Rescore a finished world suite's per-cell intervals with two level corrections.

    python benchmarks/rescore_cell_noise.py SUITE [SUITE ...]

``SUITE`` is a folder of :mod:`benchmarks.world_suite` run with a calibrated workflow. No model
is refitted: every land cell's calibrated log variance ``v`` is read back from the 5 % and
95 % maps, and scored as run and after two corrections of its level (``docs/calibration.md``,
"Error models from every CV partition"):

* ``minus noise``: ``max(v - n, v / 4)``, ``n`` the profiles' log variance about their cell's
  value, estimated from co-located profiles (the pooled within-cell variance of ln stock over
  the world's cells holding more than one profile, all intervals together): the CV errors the
  error model learns from hold ``n``, a cell's true value does not;
* ``times c`` and ``times sqrt c``: ``c`` the ratio of the CV's squared log errors to the
  error model's variance at the CV points (first partition), both weighted to the mapped area
  (the CV's ``weight`` column): the level the area-weighted CV asks for.

Prints per suite and variant the pooled pixel PICP, the mean PICP of the 10 % most dissimilar
cells, the pooled RMS z, the world x interval cells in the targets (PICP 0.88-0.92, RMS z
0.9-1.1, dissimilar PICP >= 0.80), and the mean |PICP - 0.90| and mean |ln RMS z| over them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
from scipy.stats import norm

sys.path.insert(0, str(Path(__file__).resolve().parent))

import world_suite as ws

from mapping.synthetic import COVARIATES
from mapping.synthetic.judge import most_dissimilar

Z90 = float(norm.ppf(0.95))


def colocated_variance(world: Path, stocks: pd.DataFrame) -> float:
    """Pooled within-cell variance of ln stock over the cells holding more than one profile."""
    num = den = 0.0
    for top, bottom in ws.INTERVALS:
        s = stocks[(stocks["top_cm"] == top) & (stocks["bottom_cm"] == bottom)]
        r, c, ok, _, _ = ws._profile_cells(world, s["lon"].to_numpy(), s["lat"].to_numpy())
        d = pd.DataFrame({"cell": r * 1_000_000 + c, "ly": np.log(s["soc_stock_kg_m2"])})[ok]
        g = d.groupby("cell")["ly"]
        num += float(((d["ly"] - g.transform("mean")) ** 2).sum())
        k = g.size()
        den += float((k[k > 1] - 1).sum())
    return num / den if den > 0 else 0.0


def score_world(world: Path) -> list[dict]:
    run = world / "run"
    table, land = ws._covariate_table(world, list(COVARIATES))
    noise = colocated_variance(world, pd.read_csv(run / "stocks" / "stocks.csv"))
    rows = []
    for top, bottom in ws.INTERVALS:
        label = f"{top}-{bottom}"
        folder = run / "models" / label
        if not (folder / "error_model.joblib").exists():
            continue
        aoa, em = joblib.load(folder / "aoa.joblib"), joblib.load(folder / "error_model.joblib")
        truth = ws._truth(world, top, bottom)[land]
        m = {
            s: ws._read(run / "maps" / f"soc_{top}_{bottom}cm_{s}.tif")[land]
            for s in ("mean", "lower", "upper", "median")
        }
        ok = np.isfinite(truth) & np.isfinite(m["mean"])
        di = aoa.predict(table[list(aoa.layout_.names)])[0][ok]
        t, mean, mu = truth[ok], m["mean"][ok], np.log(m["median"][ok])
        v = (((np.log(m["upper"]) - np.log(m["lower"])) / (2 * Z90)) ** 2)[ok]
        cv = pd.read_csv(folder / "cv_predictions.csv")
        e = (cv["mu"] - np.log(cv["observed"])).to_numpy(float)
        use = np.isfinite(e) & (cv["fold"] >= 0).to_numpy()
        w = cv["weight"].to_numpy(float)[use] if "weight" in cv else np.ones(use.sum())
        vp = em.variance(*(cv[c].to_numpy(float)[use] for c in ("var", "di", "xd")))
        c = float(np.sum(w * e[use] ** 2) / np.sum(w * vp))
        far = most_dissimilar(di, 0.10)
        variants = {
            "as run": v,
            "minus noise": np.maximum(v - noise, v / 4),
            "times c": v * c,
            "times sqrt c": v * np.sqrt(c),
        }
        for name, vv in variants.items():
            inside = np.abs(mu - np.log(t)) <= Z90 * np.sqrt(vv)
            z2 = ((mean - t) / (mean * np.sqrt(np.expm1(vv)))) ** 2
            rows.append({"world": world.name, "interval": label, "variant": name,
                         "picp": inside.mean(), "dissimilar": inside[far].mean(),
                         "rms_z": float(np.sqrt(z2.mean())), "cells": inside.size,
                         "noise": noise, "c": c})  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("suites", nargs="+", type=Path)
    args = p.parse_args(argv)
    for suite in args.suites:
        rows = [r for w in sorted((suite / "worlds").iterdir()) for r in score_world(w)]
        df = pd.DataFrame(rows)
        print(f"{suite}: co-located log variance {df['noise'].min():.3f}-{df['noise'].max():.3f}"
              f", c {df['c'].min():.2f}-{df['c'].max():.2f}")  # fmt: skip
        for name, g in df.groupby("variant", sort=False):
            picp = np.average(g["picp"], weights=g["cells"])
            rz = np.sqrt(np.average(g["rms_z"] ** 2, weights=g["cells"]))
            print(
                f"  {name:13s} PICP {picp:.3f}, dissimilar {g['dissimilar'].mean():.3f}, "
                f"RMS z {rz:.2f} | cells in PICP {g['picp'].between(0.88, 0.92).sum()}, "
                f"RMS z {g['rms_z'].between(0.9, 1.1).sum()}, dissimilar "
                f"{(g['dissimilar'] >= 0.8).sum()} of {len(g)} | mean |PICP - 0.9| "
                f"{np.mean(np.abs(g['picp'] - 0.9)):.4f}, mean |ln RMS z| "
                f"{np.mean(np.abs(np.log(g['rms_z']))):.3f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
