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
from mapping.run.stages import run_grid, zone_error_inputs, zone_layout
from mapping.units import interval_label
from mapping.zone_error import add_zone_errors, shift_zone_rows, zone_error_sd, zone_factors


def undo_zone_errors(draws: pd.DataFrame, sd: dict[str, float], seed: int) -> pd.DataFrame:
    """The draws before :func:`add_zone_errors` scaled them with ``sd`` and ``seed``."""
    col, _ = _storage_column(draws)
    new = draws[col].to_numpy(float)
    f = zone_factors(draws, sd, seed=seed)
    return shift_zone_rows(draws, new / f - new)


def _inputs(ctx: StageContext, labels: list[str]) -> tuple[dict, ...]:
    """Per interval: ln errors, zone index, weight, coordinates (the stage's own,
    :func:`mapping.run.stages.zone_error_inputs`) and a variogram of the standardised CV
    errors (``None`` where there is no error model or no fit: independent)."""
    inputs = zone_error_inputs(ctx, labels, zone_layout(ctx), run_grid(ctx))
    e_, z_, w_, xy_, vg_ = {}, {}, {}, {}, {}
    for k, (cv, e, zone, weight, xy) in inputs.items():
        e_[k], z_[k], w_[k], xy_[k] = e, zone, weight, xy
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
