"""Score a layered world-suite run's calibrated maps with and without the excess floor.

Run: ``python benchmarks/rescore_layered.py RUN_ROOT`` where ``RUN_ROOT`` holds the
``worlds/<name>/`` folders of ``benchmarks/world_suite.py`` run with a layered workflow
(``model.depth: layered`` and ``prediction.calibrate``). No model is refitted: every land
cell of each projected world is predicted again from the run's ``layered_model.joblib``,
AOA and error models by :class:`mapping.depth_model.CalibratedIntervalView`, once with
``keep_shallower_excess`` (as a run maps) and once without, and scored like the suite
(``docs/validation.md``): pixel PICP of the 90 % interval, PICP in the 10 % most dissimilar
cells, RMS z, pooled over the worlds and counted per world x interval. Geographic worlds are
skipped (their land cells would need the working plane). About a minute per world.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import joblib
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

import world_suite as ws

from mapping.depth_model import CalibratedIntervalView, IntervalView
from mapping.synthetic import COVARIATES
from mapping.synthetic.judge import most_dissimilar

INTERVALS = [(0.0, 30.0), (0.0, 100.0), (0.0, 200.0), (0.0, 300.0)]


def score_world(world: Path) -> list[dict]:
    """Rows (floor, interval) of one projected world's scores."""
    models = world / "run" / "models"
    model = joblib.load(models / "layered_model.joblib")
    aoa = joblib.load(models / "0-30" / "aoa.joblib")
    files = {iv: models / f"{iv[0]:g}-{iv[1]:g}" / "error_model.joblib" for iv in INTERVALS}
    ems = {iv: joblib.load(f) if f.exists() else None for iv, f in files.items()}
    names = list(COVARIATES)
    table, land = ws._covariate_table(world, names)
    X = table[["x", "y", *names]]
    cov = table[list(aoa.layout_.names)]
    di, xd = aoa.predict(cov)[0], aoa.extrapolation(cov)
    far = most_dissimilar(di, 0.10)
    rows = []
    for floor in (True, "beyond", False):
        for iv in INTERVALS:
            view = IntervalView(model, *iv, ["x", "y", *names])
            cal = CalibratedIntervalView(view, ems, aoa, keep_shallower_excess=floor)
            st = cal.predict_stats(X, (0.05, 0.95), ("mean", "std", "lower", "upper"), di=di, xd=xd)
            truth = ws._truth(world, *iv)[land]
            inside = (st["lower"] <= truth) & (truth <= st["upper"])
            z2 = ((st["mean"] - truth) / st["std"]) ** 2
            rows.append(
                {
                    "world": world.name,
                    "floor": floor,
                    "interval": f"{iv[0]:g}-{iv[1]:g}",
                    "picp": inside.mean(),
                    "picp_dissimilar": inside[far].mean(),
                    "rms_z": np.sqrt(z2.mean()),
                    "_n": len(truth),
                    "_far": int(far.sum()),
                    "_z2": z2.sum(),
                }
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="a layered world-suite output folder")
    args = parser.parse_args(argv)
    rows = []
    for world in sorted((args.root / "worlds").iterdir()):
        if ws._grid(world)[0].is_geographic:
            continue
        rows += score_world(world)
        print(f"{world.name} scored", flush=True)
    df = pd.DataFrame(rows)
    pooled = df.groupby(["floor", "interval"], sort=False).apply(
        lambda d: pd.Series(
            {
                "picp": np.average(d["picp"], weights=d["_n"]),
                "picp_dissimilar": np.average(d["picp_dissimilar"], weights=d["_far"]),
                "rms_z": np.sqrt(d["_z2"].sum() / d["_n"].sum()),
                "worlds picp 0.88-0.92": int(d["picp"].between(0.88, 0.92).sum()),
                "worlds dissimilar >= 0.80": int((d["picp_dissimilar"] >= 0.8).sum()),
                "worlds rms z 0.9-1.1": int(d["rms_z"].between(0.9, 1.1).sum()),
            }
        ),
        include_groups=False,
    )
    with pd.option_context("display.width", 200):
        print(pooled.round(3).to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
