#!/usr/bin/env python
"""How much a zone total's range moves when only the run's seed changes.

    python benchmarks/suite_seed_spread.py SUITE [--seeds 1 2] [--only world_01 ...]
                                           [--target continuous/0-100] [--out DIR]
                                           [--repeats R]

For each world of a finished world suite (``benchmarks/world_suite.py``) the world's own
``workflow.yaml`` is run again with ``seed: K`` for every ``--seeds`` value (the same data;
the seed draws the forests, the kNNDM folds and the prediction-area sample they are matched
to, and the Monte Carlo realizations), into ``OUT/<world>/s<K>`` (default
``SUITE/seed_spread``; finished runs are reused). Prints per world, for the suite's run and
each seed: the target total's 90 % half-width (percent of its Monte Carlo median) and the
sd of the regional error of that interval that the run's uncertainty stage reported ("error
shared by every cell", ``regional CV error``); then the spread of the half-widths (sd over
mean) per world and of their mean over the worlds. Results in ``docs/uncertainty.md``, "How
much the ranges move with the seed".
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

REGIONAL = re.compile(
    r"\[uncertainty\] (\S+) cm: error shared by every cell .*regional CV error ([0-9.e-]+)"
)


def half_width(run: Path, zone: str, interval: str) -> float:
    """90 % half-width of one zone total, percent of its Monte Carlo median."""
    s = pd.read_csv(run / "zones" / "storage_summary.csv")
    r = s[(s["zone"] == zone) & (s["interval"] == interval)].iloc[0]
    return 100.0 * (r["storage_upper_pg"] - r["storage_lower_pg"]) / 2.0 / r["storage_median_pg"]


def regional_sd(log_text: str, interval: str) -> float:
    """The regional error sd the run's log reports for ``interval`` (NaN if none)."""
    for label, value in REGIONAL.findall(log_text):
        if label == interval:
            return float(value)
    return float("nan")


def with_repeats(text: str, repeats: int) -> str:
    """A workflow's text with ``cv.repeats: repeats``, replacing the key if the workflow has
    one (the sample workflow's 3) rather than adding a second."""
    if re.search(r"(?m)^  repeats: .*$", text):
        return re.sub(r"(?m)^  repeats: .*$", f"  repeats: {repeats}", text)
    return re.sub(r"(?m)^cv:\n", f"cv:\n  repeats: {repeats}\n", text)


def rerun(world: Path, seed: int, out: Path, repeats: int | None = None) -> tuple[Path, str]:
    """``socmap run`` of the world's workflow with ``seed`` (and ``cv.repeats``, unless
    ``None``: the workflow's own); its output folder and log."""
    run = out / world.name / f"s{seed}"
    log = out / f"{world.name}_s{seed}.log"
    if not (run / "zones" / "storage_summary.csv").is_file():
        run.parent.mkdir(parents=True, exist_ok=True)
        text = (world / "workflow.yaml").read_text()
        text = re.sub(r"(?m)^seed: .*$", f"seed: {seed}", text)
        text = re.sub(r"(?m)^output: .*$", f"output: {run}", text)
        if repeats is not None:
            text = with_repeats(text, repeats)
        cfg = world / f"workflow_seed{seed}.yaml"  # beside the world's files (relative paths)
        cfg.write_text(text)
        cmd = [sys.executable, "-m", "mapping.cli", "run", str(cfg)]
        with log.open("w") as fh:
            subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, check=True)
    return run, log.read_text()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("suite", type=Path, help="world-suite output folder")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2], help="run seeds (default 1 2)")
    ap.add_argument("--only", nargs="+", default=None, metavar="NAME", help="only these worlds")
    ap.add_argument("--target", default="continuous/0-100", help="ZONE/INTERVAL")
    ap.add_argument("--out", type=Path, default=None, help="rerun folder")
    ap.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="cv.repeats of the reruns (default: the workflow's)",
    )
    args = ap.parse_args(argv)
    zone, interval = args.target.split("/")
    out = args.out or args.suite / "seed_spread"
    worlds = sorted(p for p in (args.suite / "worlds").iterdir() if (p / "run").is_dir())
    if args.only:
        worlds = [w for w in worlds if w.name in set(args.only)]
    rows = []
    for world in worlds:
        row: dict[str, object] = {"world": world.name}
        log = (world / "run.log").read_text() if (world / "run.log").is_file() else ""
        row["half_width suite"] = half_width(world / "run", zone, interval)
        row["regional suite"] = regional_sd(log, interval)
        for seed in args.seeds:
            run, text = rerun(world, seed, out, args.repeats)
            row[f"half_width s{seed}"] = half_width(run, zone, interval)
            row[f"regional s{seed}"] = regional_sd(text, interval)
        rows.append(row)
        print(f"{world.name} done", flush=True)
    df = pd.DataFrame(rows).set_index("world")
    hw = df[[c for c in df.columns if c.startswith("half_width")]]
    df["half_width sd/mean"] = hw.std(axis=1) / hw.mean(axis=1)
    pd.set_option("display.width", 200)
    print(f"\n{args.target}: 90 % half-width (% of the total) and regional error sd (ln), per run")
    print(df.round(3).to_string())
    means = hw.mean()
    print(
        "\nmean half-width over the worlds: "
        + ", ".join(f"{k.split()[-1]} {v:.2f} %" for k, v in means.items())
        + f"; sd/mean {means.std() / means.mean():.3f}; "
        f"median per-world sd/mean {np.median(df['half_width sd/mean']):.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
