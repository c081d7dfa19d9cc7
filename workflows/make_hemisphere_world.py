#!/usr/bin/env python
"""Write a hemisphere-sized synthetic world with a known SOC truth, tile by tile.

    python workflows/make_hemisphere_world.py DIR [--cells 14000] [--tile 1024]
        [--profiles 10000] [--seed 20140101]

The default is the full EASE-Grid 2.0 North at 1 km (14,000 x 14,000 cells, about
21 million of them in the permafrost region). DIR receives one VRT per covariate over
tiled, DEFLATE-compressed GeoTIFF tiles (all-ocean tiles have no files), the permafrost
zones, the profile table (``profiles.csv``, the format of ``sample_rasters/profiles.csv``),
the true stocks per interval (``truth/soc_0_*cm.vrt``) and zone totals
(``truth/zone_totals.csv``), a summary (``world.json``) and a ready workflow config::

    socmap run DIR/hemisphere.yaml

Only one tile is in memory at a time. The run is resumable and idempotent: finished tiles
are skipped, every file is written to a temporary name and renamed, and a second run on
a finished folder writes nothing. The world is defined in `workflows/hemisphere_world.py`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from hemisphere_world import HemisphereSpec, generate

from mapping.cluster import PeakRSS


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="output folder (created; resumed if present)")
    d = HemisphereSpec()
    ap.add_argument("--cells", type=int, default=d.cells, help="cells per axis (14000 = 1 km)")
    ap.add_argument("--tile", type=int, default=d.tile, help="tile edge in cells")
    ap.add_argument("--profiles", type=int, default=d.n_profiles, help="number of profiles")
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--quiet", action="store_true", help="no progress lines")
    args = ap.parse_args(argv)
    try:
        spec = HemisphereSpec(
            seed=args.seed, cells=args.cells, tile=args.tile, n_profiles=args.profiles
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    def progress(done: int, total: int, name: str, seconds: float) -> None:
        if not args.quiet:
            print(f"tile {done}/{total} {name}: {seconds:.1f} s", flush=True)

    t0 = time.perf_counter()
    with PeakRSS() as peak:
        try:
            s = generate(args.out, spec, progress=progress)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    print(
        f"{args.out}: {s['shape'][0]} x {s['shape'][1]} cells of {s['resolution_m']:g} m, "
        f"{s['land_tiles']}/{s['tiles']} tiles with land, {s['land_cells']:,} land cells, "
        f"{s['permafrost_cells']:,} in the permafrost region, {s['profiles']} profiles "
        f"({s['horizons']} horizons); {time.perf_counter() - t0:.1f} s, "
        f"peak RSS {peak.peak / 2**20:.0f} MiB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
