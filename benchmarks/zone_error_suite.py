"""``uncertainty.zone_error: cv`` measured on finished design-suite runs.

The zone error scales each zone's Monte Carlo draws after they are drawn
(:mod:`mapping.zone_error`), so it can be measured on runs that are finished: this script
takes each run's stored draws (``zones/draws.parquet``), applies the uncertainty stage's
own step (``mapping.run.stages._zone_errors``, from the run's CV tables and zones) and
scores the 90 % ranges before and after against the world's true zone totals.

Layout: ``RUNS/world_XX/<design>/{workflow.yaml, run/}``, one folder per base run
(``none``) and design rerun (``socmap_200``, ``random_200``, ...), and
``SUITE/worlds/world_XX/truth/zone_totals.csv`` (``benchmarks/world_suite.py``). Prints
the truth-inside rate and median half-width of every zone x interval range, by zone, and
the shrinkage of the targeted range (``--target``) by each design against the base run,
with the ratio of socmap's to the best baseline's.

    python benchmarks/zone_error_suite.py --n 200 50 --pair /tmp/L2033 /tmp/h2033 \
        --pair /tmp/L2034 /tmp/h2034 --pair /tmp/L2035 /tmp/h2035 --pair /tmp/L2036 /tmp/h2036 \
        [--out SCORES.csv] [--shrinkage mapping/report/data/design_suite.csv]

``--shrinkage`` writes the report's reference chart: per world and N, the socmap design's
predicted shrinkage of the targeted range (the ``design_predicted_*.json`` beside the
design that made the rerun's profiles) against the realised one with the zone error.

(``docs/design.md``, "The error of a zone's mean": 30 worlds, 0.966 of 3,000 ranges at a
median half-width of 10.6 %, the socmap design 1.28 times the best baseline at N = 200.)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from mapping import io
from mapping.config import load_config
from mapping.draw_summary import summarise_draws
from mapping.run.runner import StageContext
from mapping.run.stages import _zone_errors, run_grid, zone_layout
from mapping.units import interval_label

sys.path.insert(0, str(Path(__file__).resolve().parent))
from design_suite import DESIGNS, _tag, predicted_shrinkage, score_summary, shrinkage_row

BASELINES = DESIGNS[1:]


def score_run(folder: Path, world: Path) -> pd.DataFrame:
    """Both scorings of one run: its stored draws, and with the zones' errors added."""
    cfg = load_config(folder / "workflow.yaml")
    cfg = cfg.model_copy(
        update={"uncertainty": cfg.uncertainty.model_copy(update={"zone_error": "cv"})}
    )
    if cfg.model.depth == "layered":  # the layered model's stocks are lognormal
        cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"log_transform": True})})
    ctx = StageContext(config=cfg, out=cfg.output, echo=lambda _m: None)
    draws = io.read_table(ctx.folder.draws)
    labels = [interval_label(t, b) for t, b in cfg.stocks.intervals()]
    after = _zone_errors(ctx, draws, labels, zone_layout(ctx), run_grid(ctx))
    ranges = tuple(cfg.uncertainty.range)
    out = []
    for name, d in (("without", draws), ("with", after)):
        s = score_summary(summarise_draws(d, ranges=ranges, unit=cfg.zones.unit), world)
        out.append(s.assign(zone_error=name))
    return pd.concat(out, ignore_index=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--pair",
        nargs=2,
        action="append",
        type=Path,
        required=True,
        metavar=("RUNS", "SUITE"),
        help="runs folder and its world suite",
    )
    p.add_argument(
        "--n", type=int, nargs="+", default=[200], help="design sizes of the reruns (200 50)"
    )
    p.add_argument("--target", default="continuous/0-100")
    p.add_argument("--out", type=Path, default=None, help="write every score to this CSV")
    p.add_argument(
        "--shrinkage",
        type=Path,
        default=None,
        help="write the socmap design's predicted and realised shrinkage of the targeted "
        "range, with the zone error, per world and N (mapping/report/data/design_suite.csv)",
    )
    args = p.parse_args(argv)
    rows = []
    for runs, suite in args.pair:
        for wdir in sorted(runs.glob("world_*")):
            world = suite / "worlds" / wdir.name
            designs = [("none", 0)]
            designs += [(f"{d}_{n}", n) for n in args.n for d in ("socmap", *BASELINES)]
            for d, n in designs:
                folder = wdir / d
                if not (folder / "run" / "zones" / "draws.parquet").is_file():
                    continue
                s = score_run(folder, world)
                rows.append(
                    s.assign(suite=suite.name, world=wdir.name, design=d.split("_")[0], n=n)
                )
                print(f"{suite.name} {wdir.name} {d}: done", file=sys.stderr)
    df = pd.concat(rows, ignore_index=True)
    if args.out:
        df.to_csv(args.out, index=False)
    print("every zone x interval range: truth inside (median half-width)")
    for name, t in df.groupby("zone_error", sort=False):
        by_zone = t.groupby("zone")["covered"].mean().round(3).to_dict()
        print(
            f"  {name:8s} {t['covered'].mean():.3f} of {len(t)} "
            f"({100 * t['half_width'].median():.1f} %); by zone {by_zone}"
        )
    zone, interval = args.target.split("/")
    for n in args.n:
        tg = df[(df["zone"] == zone) & (df["interval"] == interval) & df["n"].isin([0, n])]
        _print_shrinkage(tg, args.target, n)
    if args.shrinkage:
        table = shrinkage_table(df, args.pair, args.target)
        table.to_csv(args.shrinkage, index=False)
        print(f"predicted against realised shrinkage ({len(table)} rows): {args.shrinkage}")
    return 0


def shrinkage_table(df: pd.DataFrame, pairs: list, target: str) -> pd.DataFrame:
    """Per world and N, the socmap design's predicted shrinkage of the targeted range (the
    ``design_predicted_*.json`` beside the design that made the rerun's profiles) and the
    realised one, with the zone error: the rows of ``mapping/report/data/design_suite.csv``."""
    zone, interval = target.split("/")
    t = df[(df["zone"] == zone) & (df["interval"] == interval) & (df["zone_error"] == "with")]
    runs_of = {suite.name: runs for runs, suite in pairs}
    rows = []
    for (suite, world), g in t.groupby(["suite", "world"], sort=True):
        base = g[g["design"] == "none"]["half_width"]
        for n, h in g[g["design"] == "socmap"].groupby("n", sort=True):
            cfg = yaml.safe_load(
                (runs_of[suite] / str(world) / f"socmap_{n}" / "workflow.yaml").read_text()
            )
            origin = Path(cfg["profiles"]["path"]).parents[1]  # the world the design ran on
            pred = predicted_shrinkage(origin, _tag([target]))
            if base.empty or str(n) not in pred:
                print(
                    f"{suite} {world} N = {n}: no predicted shrinkage in {origin}", file=sys.stderr
                )
                continue
            row = shrinkage_row(
                str(world),
                n,
                target,
                float(base.iloc[0]),
                float(h["half_width"].iloc[0]),
                pred[str(n)],
                h["covered"].iloc[0],
            )
            rows.append({"suite": _seed(str(suite)), **row})
    return pd.DataFrame(rows)


def _seed(name: str) -> int | str:
    """A suite folder's seed (``h2035`` -> 2035), or its name when it holds no digits."""
    digits = "".join(ch for ch in name if ch.isdigit())
    return int(digits) if digits else name


def _print_shrinkage(tg: pd.DataFrame, target: str, n: int) -> None:
    print(f"shrinkage of the {target} range, N = {n}, worlds with every design")
    for name, t in tg.groupby("zone_error", sort=False):
        hw = t.pivot_table(index=["suite", "world"], columns="design", values="half_width")
        hw = hw.dropna()
        shrink = {d: 100 * float(np.mean(1 - hw[d] / hw["none"])) for d in hw if d != "none"}
        best = max((d for d in BASELINES if d in shrink), key=shrink.get)
        inside = t[t["design"] == "socmap"]["covered"]
        print(
            f"  {name:8s} {len(hw)} worlds; "
            + ", ".join(f"{d} {v:.1f} %" for d, v in shrink.items())
            + f"; ratio to {best} {shrink['socmap'] / shrink[best]:.3f}; "
            f"truth inside (socmap) {int(inside.sum())}/{len(inside)}"
        )
        for s_name, ts in hw.groupby(level="suite"):
            sh = {d: float(np.mean(1 - ts[d] / ts["none"])) for d in ts if d != "none"}
            b = max((d for d in BASELINES if d in sh), key=sh.get)
            print(f"      {s_name}: ratio {sh['socmap'] / sh[b]:.3f} ({len(ts)} worlds)")


if __name__ == "__main__":
    raise SystemExit(main())
