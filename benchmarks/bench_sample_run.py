"""Wall time, CPU seconds and peak memory of the whole sample workflow, stage by stage.

Run: ``python benchmarks/bench_sample_run.py [--repeat N] [--keep DIR]``

Copies ``workflows/sample.yaml`` into a temporary folder (absolute input paths, output in
that folder), runs ``socmap run CONFIG --force`` as a child process (``python -m
mapping.cli``, so the code of this checkout), and prints

* wall seconds of the whole command (start-up included);
* CPU seconds of the command and every process it started (Dask workers included), user and
  system, from ``getrusage(RUSAGE_CHILDREN)`` -- on a shared machine this moves much less
  with other load than the wall time does;
* peak resident memory of the largest single process (``ru_maxrss`` of the children);
* the machine's 1-minute load average before the run;
* seconds per stage from the run's ``manifest.json`` (wall time of each stage).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "workflows" / "sample.yaml"


def _absolute(config: dict, base: Path) -> dict:
    """The sample config with every input path made absolute (relative to ``base``)."""
    config["profiles"]["path"] = str((base / config["profiles"]["path"]).resolve())
    for cov in config["covariates"]:
        cov["path"] = str((base / cov["path"]).resolve())
    for key in ("zones", "active_layer"):
        if "path" in (config.get(key) or {}):
            config[key]["path"] = str((base / config[key]["path"]).resolve())
    return config


def run_once(folder: Path) -> dict:
    """Run the sample workflow once with output in ``folder``; wall, CPU, memory, stages."""
    config = _absolute(yaml.safe_load(SAMPLE.read_text()), SAMPLE.parent)
    config["output"] = str(folder / "sample")
    cfg = folder / "sample.yaml"
    cfg.write_text(yaml.safe_dump(config, sort_keys=False))
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    load = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "mapping.cli", "run", str(cfg), "--force"],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    manifest = json.loads((folder / "sample" / "manifest.json").read_text())
    stages = {k: v.get("seconds", float("nan")) for k, v in manifest["stages"].items()}
    return {
        "wall": wall,
        "user": after.ru_utime - before.ru_utime,
        "sys": after.ru_stime - before.ru_stime,
        "peak_rss_mib": after.ru_maxrss / 1024,  # kilobytes on Linux
        "load": load,
        "stages": stages,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="runs (default 1)")
    parser.add_argument("--keep", type=Path, help="keep the last run's outputs in this folder")
    args = parser.parse_args()
    for i in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="socmap-bench-") as tmp:
            r = run_once(Path(tmp))
            if args.keep is not None and i == args.repeat - 1:
                shutil.rmtree(args.keep, ignore_errors=True)
                shutil.copytree(Path(tmp) / "sample", args.keep)
        stage_sum = sum(r["stages"].values())
        print(
            f"run {i + 1}: wall {r['wall']:.1f} s, CPU {r['user'] + r['sys']:.1f} s "
            f"(user {r['user']:.1f}, sys {r['sys']:.1f}), peak RSS {r['peak_rss_mib']:.0f} MiB "
            f"(largest process), load before {r['load']:.1f} on {os.cpu_count()} cores"
        )
        for name, sec in r["stages"].items():
            print(f"  {name:<12} {sec:6.1f} s")
        print(f"  {'(start-up, other)':<12} {r['wall'] - stage_sum:6.1f} s")


if __name__ == "__main__":
    main()
