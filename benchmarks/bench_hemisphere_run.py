"""The whole hemisphere workflow end to end: wall time, CPU, peak memory of the process tree.

Run::

    python workflows/make_hemisphere_world.py DIR      # once; resumable (about 1 GB per 100 M cells)
    python benchmarks/bench_hemisphere_run.py DIR [--scheduler SPEC] [--keep-going]

Runs ``socmap run DIR/hemisphere.yaml --force`` as a child process (``python -m mapping.cli``,
so the code of this checkout) and prints

* wall seconds of the whole command (start-up included) and of every stage, from the run's
  ``manifest.json``;
* CPU seconds of the command and every process it started (Dask workers and the fit's
  process pool included), from ``getrusage(RUSAGE_CHILDREN)``;
* peak resident memory of the **whole process tree** (the command, its Dask workers and its
  process pool), sampled every 0.5 s with psutil, and the stage it was reached in; the
  peak within every stage (and of the command alone); and the largest single process
  (``ru_maxrss``);
* the 1-minute load average before the run (other jobs make the wall time meaningless);
* the storage of every zone and interval against the world's truth (``truth/zone_totals.csv``)
  and whether the truth lies inside the run's 90 % range.

The issue's targets for a 2-core, 24 GB machine: at most 30 minutes wall and 8 GB of memory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import psutil

ROOT = Path(__file__).resolve().parents[1]


class TreeMemory:
    """Peak resident memory of a process and all its descendants, sampled in a thread."""

    def __init__(self, pid: int, every: float = 0.5) -> None:
        self._root = psutil.Process(pid)
        self._every = every
        self._stop = threading.Event()
        self.peak = 0
        self.peak_at = 0.0
        self.samples: list[tuple[float, int, int]] = []  # (seconds, tree, command alone)
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                procs = [self._root, *self._root.children(recursive=True)]
            except psutil.Error:
                break
            rss = main = 0
            for proc in procs:
                try:
                    r = proc.memory_info().rss
                except psutil.Error:
                    continue
                rss += r
                main = r if proc is self._root else main
            self.samples.append((time.perf_counter() - self._t0, rss, main))
            if rss > self.peak:
                self.peak, self.peak_at = rss, time.perf_counter() - self._t0
            self._stop.wait(self._every)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def stage_at(manifest: dict, t0_iso: float, seconds: float) -> str:
    """The stage that was running ``seconds`` after the command started."""
    for name, rec in manifest["stages"].items():
        start = pd.Timestamp(rec["started"]).timestamp() - t0_iso
        if start <= seconds <= start + rec.get("seconds", 0.0):
            return name
    return "(start-up or exit)"


def compare_truth(out: Path, truth: Path) -> pd.DataFrame:
    """Storage per zone and interval against the truth, with the run's 90 % range."""
    summary = pd.read_csv(out / "zones" / "storage_summary.csv")
    true = pd.read_csv(truth)
    true["interval"] = [
        f"{int(a)}-{int(b)}" for a, b in zip(true.top_cm, true.bottom_cm, strict=True)
    ]
    merged = summary.merge(
        true[["zone", "interval", "storage_pg"]].rename(columns={"storage_pg": "true_pg"}),
        on=["zone", "interval"],
    )
    merged["error_pct"] = 100 * (merged.storage_mean_pg / merged.true_pg - 1)
    merged["half_width_pct"] = (
        50 * (merged.storage_upper_pg - merged.storage_lower_pg) / merged.storage_mean_pg
    )
    merged["inside"] = (merged.storage_lower_pg <= merged.true_pg) & (
        merged.true_pg <= merged.storage_upper_pg
    )
    return merged[
        ["zone", "interval", "true_pg", "storage_mean_pg", "error_pct", "half_width_pct", "inside"]
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("world", type=Path, help="folder written by make_hemisphere_world.py")
    parser.add_argument("--scheduler", help="passed to `socmap run --scheduler`")
    args = parser.parse_args()
    config = args.world / "hemisphere.yaml"
    if not config.is_file():
        sys.exit(f"error: {config} not found; run workflows/make_hemisphere_world.py first")
    command = [sys.executable, "-m", "mapping.cli", "run", str(config), "--force"]
    if args.scheduler:
        command += ["--scheduler", args.scheduler]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    load = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0_wall = time.time()
    t0 = time.perf_counter()
    child = subprocess.Popen(command, env=env)
    memory = TreeMemory(child.pid)
    code = child.wait()
    wall = time.perf_counter() - t0
    memory.stop()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if code != 0:
        sys.exit(f"error: socmap run exited with {code} after {wall:.0f} s")
    out = args.world / "out"
    manifest = json.loads((out / "manifest.json").read_text())
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    print(
        f"hemisphere run ({args.world}): wall {wall / 60:.1f} min, CPU {cpu / 60:.1f} min on "
        f"{os.cpu_count()} cores, load before {load:.1f}"
    )
    print(
        f"  peak memory of the process tree {memory.peak / 2**30:.2f} GiB "
        f"(at {memory.peak_at:.0f} s, in {stage_at(manifest, t0_wall, memory.peak_at)}); "
        f"largest single process {after.ru_maxrss / 2**20:.2f} GiB"
    )
    stage_sum = 0.0
    for name, rec in manifest["stages"].items():
        sec = rec.get("seconds", float("nan"))
        stage_sum += sec
        start = pd.Timestamp(rec["started"]).timestamp() - t0_wall
        inside = [s for s in memory.samples if start <= s[0] <= start + sec]
        peaks = (
            f"; peak {max(s[1] for s in inside) / 2**30:.2f} GiB (the command alone "
            f"{max(s[2] for s in inside) / 2**30:.2f})"
            if inside
            else ""
        )
        print(f"  {name:<12} {sec / 60:6.2f} min{peaks}")
    print(f"  {'(start-up, other)':<12} {(wall - stage_sum) / 60:6.2f} min")
    truth = args.world / "truth" / "zone_totals.csv"
    if truth.is_file():
        table = compare_truth(out, truth)
        with pd.option_context("display.width", 120, "display.float_format", "{:.2f}".format):
            print(table.to_string(index=False))
        print(f"  truth inside the 90 % range: {table.inside.sum()} of {len(table)}")


if __name__ == "__main__":
    main()
