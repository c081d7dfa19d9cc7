#!/usr/bin/env python
"""How the residuals' regional level of a refit compares with what a design predicts.

    python benchmarks/design_refit_level.py --suite OUT [--interval 0-100]

For every world of a design suite (``benchmarks/design_suite.py``) and every rerun with new
sites, the refitted model's ``residual_mean_sd`` (the shared level of the zone totals)
against three predictions from the run before the sites: the design's rule ``sd
sqrt(n0 / (n0 + k))``, the generalised-least-squares standard error recomputed with the new
sites and the run's variogram, and no change. Prints one line per rerun and the mean ratios
and mean absolute log errors (``docs/design.md``, "The regional level does not fall").
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import rasterio

from mapping import io
from mapping.residual_errors import gls_mean_sd, residual_mean_sd, residual_variogram


def _reruns(world: Path, sites: dict) -> list[tuple[str, int, np.ndarray]]:
    """(design, N, flat cells) of every finished rerun of a world."""
    out = []
    for d in sorted(world.glob("design_*")):
        if not (d / "run" / "models").is_dir():
            continue
        parts = d.name.split("_")
        n = int(parts[-1])
        kind = "socmap" if "socmap" in parts else parts[1]
        key = kind if kind in ("socmap", "random") else f"{kind}_{n}"
        if key in sites:
            out.append((d.name, n, np.asarray(sites[key][:n])))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--suite", type=Path, required=True)
    p.add_argument("--interval", default="0-100")
    a = p.parse_args(argv)
    rows = []
    for world in sorted((a.suite / "worlds").glob("world_*")):
        caches = sorted(world.glob("designs_*.json"))
        if not caches or not (world / "run" / "models" / a.interval).is_dir():
            continue
        sites: dict = {}
        for c in caches:
            sites.update(json.loads(c.read_text()))
        model = io.read_model(world / "run" / "models" / a.interval / "model.joblib")
        v = residual_variogram(model)
        xy0 = np.asarray(model.kriging_.xy_, float)
        before = residual_mean_sd(model)
        with rasterio.open(world / "maat.tif") as r:
            t, nx = r.transform, r.width
        for name, n, flat in _reruns(world, sites):
            r_, c_ = np.divmod(flat, nx)
            xy = np.column_stack([t.c + (c_ + 0.5) * t.a, t.f + (r_ + 0.5) * t.e])
            refit = io.read_model(world / name / "run" / "models" / a.interval / "model.joblib")
            after = residual_mean_sd(refit)
            rule = before * np.sqrt(len(xy0) / (len(xy0) + n))
            gls = gls_mean_sd(v, np.vstack([xy0, xy]))
            rows.append((before, after, rule, gls))
            print(
                f"{world.name} {name}: level {before:.4f} -> {after:.4f} "
                f"(rule {rule:.4f}, GLS {gls:.4f})",
                flush=True,
            )
    if not rows:
        print(f"{a.suite}: no finished reruns", file=sys.stderr)
        return 1
    b, r, rule, gls = np.array(rows).T
    print(
        f"{len(rows)} reruns: refit/before {np.mean(r / b):.3f}, rule {np.mean(rule / b):.3f}, "
        f"GLS {np.mean(gls / b):.3f}; mean |log error|: rule "
        f"{np.mean(np.abs(np.log(rule / r))):.3f}, GLS {np.mean(np.abs(np.log(gls / r))):.3f}, "
        f"no change {np.mean(np.abs(np.log(b / r))):.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
