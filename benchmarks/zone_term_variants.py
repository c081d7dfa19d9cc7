#!/usr/bin/env python
"""The zone error of finished world-suite runs, redone with other standard errors.

    python benchmarks/zone_term_variants.py SUITE [SUITE ...] [--out CSV]

``SUITE`` is a folder of :mod:`benchmarks.world_suite` whose runs used
``uncertainty.zone_error: cv`` with the unweighted standard error (``s / sqrt(n)``, the
code before 2026-12-07). Each zone's factor is seeded
(:func:`mapping.zone_error.add_zone_errors`), so the stored draws (``zones/draws.parquet``)
are divided by it exactly, then scaled again with each variant's standard error:

* ``iid``: ``s / sqrt(n)`` (as run; redoing it must give the stored draws, checked);
* ``area_weighted``: the standard error of the mean error weighted to the mapped area (the
  CV's ``weight`` column; :func:`mapping.zone_error.zone_error_sd` with ``weights``);
* ``spatial_neff``: ``s² Σ_ij ρ_ij / n²``, ``ρ`` the correlation of a variogram fitted to
  the zone's standardised CV errors (the profiles' errors as correlated as the map's);
* ``none``: without the zone error.

Prints per suite and variant the truth-inside rate of the 20 zone x interval ranges of
every world, pooled and per world, and their median half-width.
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.spatial.distance import cdist

sys.path.insert(0, str(Path(__file__).resolve().parent))
from design_suite import score_summary

from mapping import io
from mapping.config import load_config
from mapping.draw_summary import _storage_column, summarise_draws
from mapping.exceptions import MappingError
from mapping.residual_errors import cv_error_variogram
from mapping.run.runner import StageContext
from mapping.run.shared_error import profile_xy
from mapping.run.stages import run_grid, zone_layout
from mapping.units import ALL_ZONES, interval_label
from mapping.zone_error import add_zone_errors, zone_error_sd, zone_normals


def undo_zone_errors(draws: pd.DataFrame, sd: dict[str, float], seed: int) -> pd.DataFrame:
    """The draws before :func:`add_zone_errors` scaled them with ``sd`` and ``seed``."""
    col, _ = _storage_column(draws)
    out = draws.copy()
    reals = out["realization"].to_numpy(int)
    zones = [z for z in sd if z != ALL_ZONES]
    g = zone_normals(len(zones), reals.max() + 1, seed)
    delta = np.zeros(len(out))
    for i, z in enumerate(zones):
        s = float(sd[z])
        if not (math.isfinite(s) and s > 0):
            continue
        rows = (out["zone"] == z).to_numpy()
        new = out.loc[rows, col].to_numpy(float)
        delta[rows] = new - new / np.exp(s * g[i, reals[rows]] - 0.5 * s * s)
    out[col] = out[col].to_numpy(float) - delta
    tot = (out["zone"] == ALL_ZONES).to_numpy()
    moved = pd.Series(delta[~tot]).groupby([out.loc[~tot, "interval"].to_numpy(), reals[~tot]])
    key = pd.MultiIndex.from_arrays([out.loc[tot, "interval"].to_numpy(), reals[tot]])
    out.loc[tot, col] -= moved.sum().reindex(key, fill_value=0.0).to_numpy()
    return out


def _inputs(ctx: StageContext, labels: list[str]) -> tuple[dict, ...]:
    """Per interval: ln errors, zone index, weight, coordinates, CV-error variogram."""
    layout, grid = zone_layout(ctx), run_grid(ctx)
    training = io.read_table(ctx.folder.training)
    e_, z_, w_, xy_, vg_ = {}, {}, {}, {}, {}
    for k in labels:
        cv = io.read_table(ctx.folder.cv_predictions(k))
        with np.errstate(divide="ignore", invalid="ignore"):
            e = cv["mu"].to_numpy(float) - np.log(cv["observed"].to_numpy(float))
        e = np.where((cv["fold"].to_numpy() >= 0) & np.isfinite(e), e, np.nan)
        xy = profile_xy(training, cv["profile_id"])
        rows, cols = grid.rowcol(*grid.from_working(xy[:, 0], xy[:, 1]))
        e_[k], z_[k], xy_[k] = e, layout.zone_at(rows, cols), xy
        w_[k] = cv["weight"].to_numpy(float) if "weight" in cv else np.ones(len(cv))
        try:
            em = io.read_model(ctx.folder.error_model_file(k))
            xd = cv["xd"].to_numpy(float) if "xd" in cv else None
            v = em.variance(cv["var"].to_numpy(float), cv["di"].to_numpy(float), xd)
            vg_[k] = cv_error_variogram(xy, [e / np.sqrt(v)])
        except (MappingError, OSError):  # no error model, or no variogram: independent
            vg_[k] = None
    return e_, z_, w_, xy_, vg_


def _spatial_neff(e_, z_, xy_, vg_, names: list[str]) -> dict[str, float]:
    out = {}
    for i, zone in enumerate(names):
        se2 = []
        for k, e in e_.items():
            m = np.isfinite(e) & (z_[k] == i)
            n = int(m.sum())
            if n == 0:
                continue
            s = np.std(e[m], ddof=1) if n >= 10 else np.nanstd(e, ddof=1)
            vg = vg_[k]
            if vg is None or vg.sill <= 0:
                se2.append(s * s / n)
                continue
            rho = vg.covariance(cdist(xy_[k][m], xy_[k][m])) / vg.sill
            np.fill_diagonal(rho, 1.0)
            se2.append(s * s * rho.sum() / n**2)
        out[zone] = math.sqrt(float(np.mean(se2))) if se2 else 0.0
    return out


def score_world(world: Path) -> pd.DataFrame:
    cfg = load_config(world / "workflow.yaml")
    ctx = StageContext(config=cfg, out=cfg.output, echo=lambda _m: None)
    draws = io.read_table(ctx.folder.draws)
    labels = [interval_label(t, b) for t, b in cfg.stocks.intervals()]
    names = list(zone_layout(ctx).names)
    e_, z_, w_, xy_, vg_ = _inputs(ctx, labels)
    table = zone_error_sd(e_, z_, names)
    iid = dict(zip(table["zone"], table["sd"], strict=True))
    weighted = zone_error_sd(e_, z_, names, weights=w_)
    variants = {
        "iid": iid,
        "area_weighted": dict(zip(weighted["zone"], weighted["sd"], strict=True)),
        "spatial_neff": _spatial_neff(e_, z_, xy_, vg_, names),
        "none": {},
    }
    before = undo_zone_errors(draws, iid, cfg.seed)
    col, _ = _storage_column(draws)
    rows = []
    for name, sd in variants.items():
        d = add_zone_errors(before, sd, seed=cfg.seed) if sd else before
        if name == "iid" and not np.allclose(d[col], draws[col], rtol=1e-9):
            raise SystemExit(f"{world}: the stored draws are not the unweighted zone error's")
        summary = summarise_draws(d, ranges=tuple(cfg.uncertainty.range), unit=cfg.zones.unit)
        rows.append(score_summary(summary, world).assign(variant=name))
    return pd.concat(rows, ignore_index=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("suites", nargs="+", type=Path)
    p.add_argument("--out", type=Path, default=None, help="every range's score as CSV")
    args = p.parse_args(argv)
    frames = []
    for suite in args.suites:
        for world in sorted((suite / "worlds").glob("world_*")):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # variogram fits' notes
                frames.append(score_world(world).assign(suite=suite.name, world=world.name))
    df = pd.concat(frames, ignore_index=True)
    if args.out:
        df.to_csv(args.out, index=False)
    for (suite, variant), g in df.groupby(["suite", "variant"], sort=False):
        per = g.groupby("world")["covered"].mean()
        print(
            f"{suite} {variant:14s} truth inside {g['covered'].mean():.3f} "
            f"({int(g['covered'].sum())} of {len(g)}), median half-width "
            f"{100 * g['half_width'].median():.1f} %; worlds at >= 0.90: {(per >= 0.9).sum()} "
            f"of {len(per)}, lowest {per.min():.2f} ({per.idxmin()})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
