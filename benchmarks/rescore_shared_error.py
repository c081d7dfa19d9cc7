#!/usr/bin/env python
"""Rescore a finished world suite's zone ranges with other structures of the shared error.

    python benchmarks/rescore_shared_error.py SUITE [SUITE ...]

``SUITE`` is a folder of :mod:`benchmarks.world_suite` run with the sample workflow. No model
is refitted and no Monte Carlo is drawn: every zone total's variance is taken from the run's
own linearised error model (:func:`mapping.design.greedy_design` with no site: ``V = S + own``,
``S`` the part shared by every cell, the residual level and the regional CV error, ``own`` the
cells' own, correlated by the residual variogram), the shared part is rebuilt as each variant
says, and the run's Monte Carlo half-width is scaled by ``sqrt(V_variant / V)``. Variants:

* ``as run``: ``V`` (the scaling is 1: the Monte Carlo ranges as written);
* ``fold regions``: the regional error not one term for every cell but one per kNNDM fold:
  each cell takes the fold of its nearest held-out profile in the AOA's feature space, each
  fold its own ``tau_f² = max(0, (mean error of the fold - mean error)² - MSW / n_f)``
  (the share ``tau_f² / (tau_f² + MSW)`` pooled over the intervals as the run pools its
  one share), independent between folds, averaged over the CV partitions;
* ``extrapolation``: on top of ``V``, the part of each cell's calibrated log variance above
  what the error model gives at the training profiles' median DI, ``x_c² = max(0, v_c -
  r(median DI) s_c²)`` (``s_c²`` the model's own, from the mean and median maps), shared by
  every cell (one more standard normal) and taken out of the cell's own part, so each cell's
  variance is kept;
* ``both``: fold regions and extrapolation together;
* ``zone tau``: each zone's regional error from the CV errors of the profiles inside it
  (the run's pooled estimator on that zone's profiles, 30 at least, else the run's);
* ``area MSW``: the regional error's within-fold variance weighted to the mapped area (the
  CV's ``weight`` column, ``cv.weighting: area``) instead of over the profiles.
* ``proportional``: the regional error of each cell in proportion to its own calibrated sd,
  ``tau sd_c / mean(sd)``, the mean over the cells of all zones weighted as their total, so
  that total keeps the run's regional variance;
* ``extrapolation only``: the extrapolation term shared, without the regional CV error;
* ``proportional to CV``: the same with the mean of the calibrated sd at the CV points (the
  error model at their model variance, DI and extrapolation distance), where ``tau`` was
  estimated.

Prints per suite and variant: coverage of the truth by the 90 % ranges, their median
half-width (relative to the true total) and the RMS of error / (half-width / 1.645) (1 for a
calibrated range, below 1 too wide), by zone and over all zone x interval cells. Projected
worlds only (their profiles are placed on the grid by their coordinates). About 10 s per
world. Results in ``docs/validation.md``, "Other structures of the shared error".

    python benchmarks/rescore_shared_error.py SUITE --design continuous/0-100 [--n 50]

scores instead the reruns of ``benchmarks/design_suite.py`` (``--target continuous/0-100``,
every draw) under every variant, and prints how much each design shrinks the targeted range
(``docs/design.md``, "The shared error and the noise of one draw").
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from mapping import io
from mapping.config import load_config
from mapping.design import ALL_ZONES, greedy_design
from mapping.residual_errors import _one_way_components, regional_error_sd, residual_mean_sd
from mapping.run.design import design_inputs
from mapping.run.shared_error import cv_errors

LABELS = ("0-30", "0-100", "0-200", "0-300")
VARIANTS = (
    "as run",
    "fold regions",
    "extrapolation",
    "both",
    "zone tau",
    "area MSW",
    "proportional",
    "proportional to CV",
    "extrapolation only",
)


def _partitions(run, label: str) -> list[pd.DataFrame]:
    """The run's CV partitions of one interval (the first, then ``cv_repeats.csv``'s)."""
    cols = ["profile_id", "fold", "predicted", "observed"]
    cv = io.read_table(run.cv_predictions(label))
    tabs = [cv[[*cols, "weight"]] if "weight" in cv else cv[cols]]
    path = run.cv_repeats(label)
    if path.is_file():
        more = io.read_table(path)
        for r in sorted(more["repeat"].unique()):
            tabs.append(more[more["repeat"] == r][cols].reset_index(drop=True))
    return tabs


def _fold_taus(parts: dict[str, pd.DataFrame]) -> dict[str, dict[int, float]]:
    """Per interval, each fold's regional variance (its share pooled over the intervals)."""
    per = {}
    for k, cv in parts.items():
        e, f = cv_errors(cv, log=True)
        ok = np.isfinite(e) & (f >= 0)
        e, f = e[ok], f[ok]
        msw = _one_way_components(e, f)[1]
        t2 = {
            int(g): max(0.0, (e[f == g].mean() - e.mean()) ** 2 - msw / (f == g).sum())
            for g in np.unique(f)
        }
        per[k] = (t2, msw)
    folds = sorted(set().union(*(set(t2) for t2, _ in per.values())))
    share = {
        g: float(np.mean([t2.get(g, 0.0) / (t2.get(g, 0.0) + msw) for t2, msw in per.values()]))
        for g in folds
    }
    return {k: {g: share[g] / (1 - share[g]) * msw for g in folds} for k, (_, msw) in per.items()}


def _area_ratio(parts: dict[str, list[pd.DataFrame]], k: str) -> float:
    """Within-fold variance of the errors weighted to the mapped area over the unweighted
    one, averaged over the partitions (the first partition's weights by profile)."""
    first = parts[k][0]
    if "weight" not in first:
        return 1.0
    w_of = dict(zip(first["profile_id"], first["weight"], strict=False))
    out = []
    for cv in parts[k]:
        e, f = cv_errors(cv, log=True)
        w = cv["profile_id"].map(w_of).to_numpy(float)
        ok = np.isfinite(e) & (f >= 0) & np.isfinite(w)
        e, f, w = e[ok], f[ok], w[ok]
        dev2 = np.empty_like(e)
        for g in np.unique(f):
            m = f == g
            dev2[m] = (e[m] - e[m].mean()) ** 2
        dof = len(e) / (len(e) - len(np.unique(f)))
        out.append(np.sum(w * dev2) / np.sum(w) * dof / _one_way_components(e, f)[1])
    return float(np.mean(out))


def _zone_taus(parts, profile_zone: pd.Series, zones: list[str]) -> dict:
    """Each zone's regional variance per interval from its own profiles, one per partition:
    ``{(zone, interval): [tau², ...]}``, NaN where the partition has under 30 of them."""
    acc: dict[tuple[str, str], list[float]] = {}
    for p in range(len(parts[LABELS[0]])):
        errs = {}
        for k in LABELS:
            cv = parts[k][p]
            e, g = cv_errors(cv, log=True)
            errs[k] = (e, g, profile_zone.reindex(cv["profile_id"].to_numpy()).to_numpy())
        for z in zones:
            E = {k: e[where == z] for k, (e, _, where) in errs.items()}
            G = {k: g[where == z] for k, (_, g, where) in errs.items()}
            enough = int((G[LABELS[0]] >= 0).sum()) >= 30
            tau = regional_error_sd(E, G, pool=True) if enough else {}
            for k in LABELS:
                acc.setdefault((z, k), []).append(tau[k] ** 2 if enough else np.nan)
    return {key: np.asarray(v) for key, v in acc.items()}


def score_world(
    world_dir: Path, targets: list[str] | None = None, truth_dir: Path | None = None
) -> pd.DataFrame:
    """Every zone x interval total of one world (or the ``targets``, ``ZONE/INTERVAL``)
    under every variant; the truth from ``truth_dir`` (default ``world_dir/truth``)."""
    cfg = load_config(world_dir / "workflow.yaml")
    d = design_inputs(cfg, targets, echo=lambda m: None)
    run = d.ctx.folder
    cells = d.cells
    zones = [z for z in cells.zone_weights if z != ALL_ZONES]
    weights = dict(cells.zone_weights)
    weights[ALL_ZONES] = np.sum([np.asarray(weights[z], float) for z in zones], axis=0)
    res = greedy_design(cells.xy, cells.rows, cells.cols, cells.area, cells.zone_weights,
                        d.errors, d.targets, 1, n_candidates=200, max_blocks=1500)  # fmt: skip
    train = io.read_table(run.training).drop_duplicates("profile_id").set_index("profile_id")
    # the profiles' zone: the zone holding most of the cell they fall in
    grid = d.ctx.grid
    fc, fr = ~grid.transform * (train["x"].to_numpy(float), train["y"].to_numpy(float))
    prow, pcol = np.floor(fr).astype(int), np.floor(fc).astype(int)
    where = {(r, c): i for i, (r, c) in enumerate(zip(cells.rows, cells.cols, strict=True))}
    share = np.column_stack([np.asarray(weights[z], float) for z in zones])
    pz = [
        zones[int(np.argmax(share[where[(r, c)]]))] if (r, c) in where else None
        for r, c in zip(prow, pcol, strict=True)
    ]
    profile_zone = pd.Series(pz, index=train.index)
    parts = {k: _partitions(run, k) for k in LABELS}
    n_parts = len(parts[LABELS[0]])
    taus = [_fold_taus({k: parts[k][p] for k in LABELS}) for p in range(n_parts)]
    ztaus = _zone_taus(parts, profile_zone, zones)
    summary = io.read_table(run.storage_summary)
    truth = pd.read_csv((truth_dir or world_dir / "truth") / "zone_totals.csv")
    rows = []
    for e in d.errors:
        k = e.label
        top, bottom = (int(v) for v in k.split("-"))
        model = io.read_model(run.model_file(k))
        level2 = residual_mean_sd(model) ** 2
        tau2 = max(e.common_sd**2 - level2, 0.0)
        aoa = io.read_model(run.aoa_file(k))
        names = list(aoa.layout_.names)
        F = aoa._standardise(aoa._encode(cells.covariates[names]))
        ok_c = np.isfinite(F).all(axis=1)
        w_all = e.weight(cells.area)
        # extrapolation: the calibrated log variance above the in-domain ratio's
        median = np.asarray(io.open_raster(run.map_file(top, bottom, "median"), chunks=None))
        median = median.squeeze()[cells.rows, cells.cols].astype(float)
        with np.errstate(divide="ignore", invalid="ignore"):
            s2 = np.maximum(2 * np.log(e.mean / median), 0.0)
        x = np.zeros(len(e.mean))
        if run.error_model_file(k).exists():
            em = io.read_model(run.error_model_file(k))
            di = aoa.train_di_[np.isfinite(aoa.train_di_)]
            r_in = float(np.asarray(em.factor(np.array([np.median(di)])))[0])
            x = np.sqrt(np.maximum(e.variance() - r_in * s2, 0.0))
        x = np.where(np.isfinite(x), x, 0.0)
        # the cells' own parts without x (each cell's variance kept: x moves to the shared)
        v_own = np.maximum(e.variance() - x**2, 0.0)
        e_x = dataclasses.replace(e, std=e.mean * np.sqrt(np.expm1(v_own)))
        ts = [t for t in d.targets if t.interval == k]
        res_x = greedy_design(cells.xy, cells.rows, cells.cols, cells.area, cells.zone_weights,
                              [e_x], ts, 1, n_candidates=200, max_blocks=1500)  # fmt: skip
        own_x = dict(zip(ts, res_x.variance[0] - res_x.shared[0], strict=True))
        # fold regions: each cell's fold, per partition
        region = []
        for p in range(n_parts):
            cv = parts[k][p]
            Ft = aoa._standardise(aoa._encode(train.loc[cv["profile_id"], names]))
            ok_t = np.isfinite(Ft).all(axis=1)
            nearest = np.zeros(len(F), dtype=int)
            nearest[ok_c] = cKDTree(Ft[ok_t]).query(F[ok_c])[1]
            region.append(cv["fold"].to_numpy()[ok_t][nearest])
        area = _area_ratio(parts, k)
        # proportional: the regional error of a cell in proportion to its own calibrated sd,
        # scaled so that the total of all zones keeps the run's regional variance
        sd_c = np.sqrt(np.where(np.isfinite(e.variance()), e.variance(), 0.0))
        w_region = np.asarray(weights[ALL_ZONES], float) * w_all
        sd_bar = float(np.sum(w_region * sd_c) / np.sum(w_region))
        # ... or so that a cell as uncertain as the CV points' mean has the run's regional error
        sd_cv = sd_bar
        if run.error_model_file(k).exists():
            cvp = io.read_table(run.cv_predictions(k))
            okp = (cvp["fold"] >= 0).to_numpy() & np.isfinite(cvp["var"].to_numpy(float))
            vp = em.variance(
                cvp["var"].to_numpy(float)[okp],
                cvp["di"].to_numpy(float)[okp],
                cvp["xd"].to_numpy(float)[okp],
            )
            sd_cv = float(np.mean(np.sqrt(vp)))
        for j, t in enumerate(d.targets):
            if t.interval != k:
                continue
            wz = np.asarray(weights[t.zone], float) * w_all
            U = wz.sum()
            V, S = res.variance[0, j], res.shared[0, j]
            own = V - S
            reg = 0.0
            for p in range(n_parts):
                folds = sorted(taus[p][k])
                W = np.bincount(np.searchsorted(folds, region[p]), wz, len(folds))
                reg += float(np.sum(W**2 * np.array([taus[p][k][g] for g in folds]))) / n_parts
            X2 = float(np.sum(wz * x)) ** 2
            # the run's where the zone has too few profiles in a partition
            tz = float(np.mean(np.nan_to_num(ztaus.get((t.zone, k), [np.nan]), nan=tau2)))
            var = {
                "as run": V,
                "fold regions": own + level2 * U**2 + reg,
                "extrapolation": own_x[t] + S + X2,
                "both": own_x[t] + level2 * U**2 + reg + X2,
                "zone tau": own + (level2 + tz) * U**2,
                "area MSW": own + (level2 + tau2 * area) * U**2,
                "proportional": own + level2 * U**2 + tau2 * float(np.sum(wz * sd_c) / sd_bar) ** 2,
                "extrapolation only": own_x[t] + level2 * U**2 + X2,
                "proportional to CV": own
                + level2 * U**2
                + tau2 * float(np.sum(wz * sd_c) / sd_cv) ** 2,
            }
            zone = t.zone
            s = summary[(summary["zone"] == zone) & (summary["interval"] == k)].iloc[0]
            tz_name = "permafrost_region" if zone == ALL_ZONES else zone
            true = truth[(truth["zone"] == tz_name) & (truth["top_cm"] == top)
                         & (truth["bottom_cm"] == bottom)]["storage_pg"].iloc[0]  # fmt: skip
            lo = next(c for c in s.index if c.startswith("storage_lower"))
            hi = next(c for c in s.index if c.startswith("storage_upper"))
            med = next(c for c in s.index if c.startswith("storage_median"))
            hw = (s[hi] - s[lo]) / 2 / true
            for name, v in var.items():
                rows.append({
                    "world": world_dir.name, "zone": zone, "interval": k, "variant": name,
                    "error": (s[med] - true) / true, "half_width": hw * np.sqrt(v / V),
                })  # fmt: skip
    return pd.DataFrame(rows)


def report(df: pd.DataFrame) -> str:
    df = df.assign(
        covered=df["error"].abs() <= df["half_width"],
        z2=(df["error"] / (df["half_width"] / 1.645)) ** 2,
    )
    lines = ["| variant | coverage | median half-width | RMS error / (half-width / 1.645): all; "
             + "; ".join(sorted(set(df["zone"]))) + " |", "|---|---|---|---|"]  # fmt: skip
    for v in VARIANTS:
        g = df[df["variant"] == v]
        by = g.groupby("zone")["z2"].mean() ** 0.5
        cov = g.groupby("zone")["covered"].mean()
        zones = "; ".join(f"{by[z]:.2f} ({cov[z]:.2f})" for z in sorted(by.index))
        lines.append(
            f"| {v} | {g['covered'].mean():.3f} | {100 * g['half_width'].median():.1f} % "
            f"| {g['z2'].mean() ** 0.5:.2f}; {zones} |"
        )
    return "\n".join(lines)


def design_report(suite: Path, target: str, n: int) -> str:
    """``benchmarks/design_suite.py``'s comparison of the designs (its reruns of ``target``
    at ``n`` sites, every draw) under every variant: the shrinkage of the mean half-width of
    the target from the run without new sites, and the socmap design's over the best
    baseline's."""
    tag = target.replace("/", "-") + "_"
    frames = []
    for wd in sorted((suite / "worlds").iterdir()):
        runs = [("none", wd)]
        for p in sorted(wd.glob(f"design_*_{n}*")):
            kind = p.name.removeprefix("design_").removeprefix(tag).split("_")[0]
            if (p / "run" / "zones" / "storage_summary.csv").exists():
                runs.append((kind, p))
        if len(runs) == 1:
            continue
        for kind, run in runs:
            df = score_world(run, [target], wd / "truth")
            frames.append(df.assign(world=wd.name, kind=kind))
        print(f"{suite.name}/{wd.name}: {len(runs) - 1} reruns", flush=True)
    df = pd.concat(frames, ignore_index=True)
    df.to_csv(suite / f"design_variants_{tag}{n}.csv", index=False)
    lines = [
        f"{suite}: {df['world'].nunique()} worlds, {target}, N = {n} (baselines: mean over draws)",
        "| variant | mean half-width without new sites | shrinkage: socmap / random / clhs / "
        "coverage | socmap over the best baseline | truth inside: socmap / best baseline |",
        "|---|---|---|---|---|",
    ]
    df["covered"] = df["error"].abs() <= df["half_width"]

    def ratio(a: float, b: float) -> str:  # no ratio of two widenings
        return f"{a / b:.2f}" if b > 0 else "—"

    for v in VARIANTS:
        g = df[df["variant"] == v]
        m = g.groupby(["world", "kind"])["half_width"].mean().unstack().mean()
        sh = 1 - m / m["none"]
        best = max(("random", "clhs", "coverage"), key=lambda k: sh[k])
        cov = g.groupby("kind")["covered"].mean()
        lines.append(
            f"| {v} | {100 * m['none']:.1f} % | "
            + " / ".join(f"{100 * sh[k]:.1f}" for k in ("socmap", "random", "clhs", "coverage"))
            + f" % | {ratio(sh['socmap'], sh[best])} ({best}) | {cov['socmap']:.2f} / "
            f"{cov[best]:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("suites", nargs="+", type=Path)
    p.add_argument(
        "--design",
        metavar="ZONE/INTERVAL",
        help="score benchmarks/design_suite.py's reruns aimed at this total instead",
    )
    p.add_argument("--n", type=int, default=50, help="with --design: the reruns' N")
    args = p.parse_args(argv)
    if args.design:
        for suite in args.suites:
            print(design_report(suite, args.design, args.n))
        return 0
    for suite in args.suites:
        frames = []
        for wd in sorted((suite / "worlds").iterdir()):
            spec = json.loads((wd / "truth" / "world.json").read_text())["spec"]
            if spec["grid"] != "projected" or not (wd / "run" / "zones").is_dir():
                continue
            frames.append(score_world(wd))
            print(f"{suite.name}/{wd.name}", flush=True)
        df = pd.concat(frames, ignore_index=True)
        df.to_csv(suite / "shared_error_variants.csv", index=False)
        print(f"{suite}: {df['world'].nunique()} projected worlds (zone cell: RMS (coverage))")
        print(report(df))
    return 0


if __name__ == "__main__":
    sys.exit(main())
