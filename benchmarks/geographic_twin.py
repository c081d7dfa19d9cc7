#!/usr/bin/env python
"""The same synthetic world on a projected and on a geographic grid: do the results agree?

    python benchmarks/geographic_twin.py [--world 0] [--seed 2026] [--shape 80 96] [--resolution 12500]
                                         [--profiles 300] [--out DIR]

Builds world ``--world`` of :func:`mapping.synthetic.worlds.suite_specs` twice, on
EASE-Grid 2.0 North (EPSG:6931) and on a longitude/latitude grid (EPSG:4326) with
cells about as large (:func:`mapping.synthetic.worlds.build_world`), writes both world
folders with ``workflows/sample.yaml``'s settings, runs ``socmap run`` on each and prints,
per zone and interval, the two zone totals and their relative difference, and per
interval the pixel coverage of the 90 % intervals against the truth of each grid.
The two worlds share the truth field and, by default, the profiles: the geographic
world keeps a site only where its geographic cell takes its truth from the site's own
projected cell, and the projected world is given those same profiles
(``--own-profiles``: each draws its own, which adds the sampling noise of two profile sets).
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import tempfile
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from world_files import write_world  # noqa: E402
from world_suite import SAMPLE_YAML, run_socmap, score_world  # noqa: E402

from mapping.synthetic.worlds import build_world, suite_specs  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--world", type=int, default=0, help="index in suite_specs (default 0)")
    ap.add_argument("--seed", type=int, default=2026, help="suite seed (default 2026)")
    ap.add_argument("--shape", type=int, nargs=2, default=None, help="ny nx of the world")
    ap.add_argument("--resolution", type=float, default=None, help="cell size (m)")
    ap.add_argument("--profiles", type=int, default=None, help="profiles drawn")
    ap.add_argument("--out", type=Path, default=None, help="output folder")
    ap.add_argument(
        "--own-profiles",
        action="store_true",
        help="let the projected world draw its own profiles (default: the geographic world's)",
    )
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per socmap run")
    ap.add_argument(
        "--workflow",
        type=Path,
        default=SAMPLE_YAML,
        help="workflow template (default workflows/sample.yaml; the figures in "
        "docs/validation.md: workflows/sample_per_interval.yaml)",
    )
    args = ap.parse_args(argv)

    spec = suite_specs(max(12, args.world + 1), args.seed)[args.world]
    change = {}
    if args.shape:
        change["shape"] = tuple(args.shape)
    if args.resolution:
        change["resolution"] = args.resolution
    if args.profiles:
        change["n_profiles"] = args.profiles
    out = args.out or Path(tempfile.mkdtemp(prefix="socmap-twin-"))
    out.mkdir(parents=True, exist_ok=True)
    zones, cover = {}, {}
    for grid in ("geographic", "projected"):
        world = build_world(dataclasses.replace(spec, grid=grid, **change))
        wdir = out / grid
        if wdir.exists():
            cfg = wdir / "workflow.yaml"
        else:
            cfg = write_world(world, wdir, args.workflow)
            if grid == "projected" and not args.own_profiles:
                # the same profiles on both grids: the geographic world's (a subset of the
                # sites, each in a cell of both grids with the same truth)
                shutil.copyfile(out / "geographic" / "profiles.csv", wdir / "profiles.csv")
        ok, err, secs = run_socmap(cfg, wdir / "socmap.log", args.timeout)
        if not ok:
            print(f"{grid}: socmap failed: {err}")
            return 1
        rows, z = score_world(wdir, wdir / "run")
        n = pd.read_csv(wdir / "profiles.csv")["profile_id"].nunique()
        print(f"{grid}: {n} profiles, run {secs:.0f} s")
        zones[grid] = z.set_index(["zone", "interval"])
        cover[grid] = pd.DataFrame(rows).set_index("interval")["pixel_picp"]

    p, g = zones["projected"], zones["geographic"]
    table = pd.DataFrame(
        {
            "true_projected": p["true_total"],
            "true_geographic": g["true_total"],
            "total_projected": p["total"],
            "total_geographic": g["total"],
        }
    )
    table["difference_pct"] = 100 * (table["total_geographic"] / table["total_projected"] - 1)
    # the map totals (Table 2's headline): free of the Monte Carlo medians' sampling noise
    # (with 100 realizations, about 1 % of a zone total)
    maps = {
        grid: pd.read_csv(out / grid / "run" / "zones" / "storage.csv").set_index(
            ["zone", "interval"]
        )["storage_pg"]
        for grid in ("projected", "geographic")
    }
    map_diff = 100 * (maps["geographic"] / maps["projected"] - 1)
    pd.set_option("display.width", 160)
    print("\nzone totals of the mean maps (Pg; Table 2's headline)")
    print(pd.DataFrame({**maps, "difference_pct": map_diff}).round(4).to_string())
    print("\nzone totals (Pg, median of the Monte Carlo draws)")
    print(table.round(4).to_string())
    cov = pd.DataFrame({"projected": cover["projected"], "geographic": cover["geographic"]})
    cov["difference"] = cov["geographic"] - cov["projected"]
    print("\npixel coverage of the 90 % intervals against the truth")
    print(cov.round(4).to_string())
    print(f"\nlargest |difference| of map zone totals: {map_diff.abs().max():.2f} %")
    print(
        f"largest |difference| of Monte Carlo medians: {table['difference_pct'].abs().max():.2f} %"
    )
    print(f"largest |difference| of pixel coverage: {cov['difference'].abs().max():.4f}")
    print(f"outputs in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
