"""Does the sample workflow complete for every seed? Runs it for seeds 0..N-1.

Run: ``python benchmarks/bench_seeds.py [N] [--until STAGE] [--out DIR]`` (default 20 seeds,
the whole workflow, outputs under a temporary folder). ``seed`` does not change the sample
data (the files in ``sample_rasters/`` are fixed); it seeds the random-forest trend, the
kNNDM cross-validation folds, the prediction-area sample the folds are matched to, and the
Monte Carlo realizations. So each seed is another fit of the same data, and a seed that
fails is a fit that breaks on valid data.

Each run is ``socmap run`` in a subprocess (a local cluster, as a user would run it). The
script prints, per seed: exit status, wall time, the fit notes (pure-nugget fallbacks,
with the interval they name), the first line of any error, and the permafrost-region
0-100 cm total; then the number of seeds that completed.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "workflows" / "sample.yaml"


def _config(seed: int, out: Path, workflow: Path = SAMPLE) -> Path:
    text = workflow.read_text()
    text = re.sub(r"^seed: .*$", f"seed: {seed}", text, flags=re.M)
    text = re.sub(r"^output: .*$", f"output: {out / f'seed{seed}'}", text, flags=re.M)
    text = text.replace("../sample_rasters", str(ROOT / "sample_rasters"))
    path = out / f"seed{seed}.yaml"
    path.write_text(text)
    return path


def _total(run: Path) -> str:
    path = run / "zones" / "storage.csv"
    if not path.is_file():
        return "-"
    t = pd.read_csv(path)
    cols = {c.lower(): c for c in t.columns}
    zone, interval = cols.get("zone"), cols.get("interval")
    value = next((c for c in t.columns if c.startswith("storage_")), None)
    if not (zone and interval and value):
        return "-"
    pick = t[(t[interval] == "0-100")]
    return f"{pick[value].sum():.3f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("n", nargs="?", type=int, default=20)
    ap.add_argument("--until", default=None, help="last stage (default: the whole run)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument(
        "--workflow",
        type=Path,
        default=SAMPLE,
        help="sample workflow (default workflows/sample.yaml; workflows/sample_per_interval.yaml)",
    )
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="socmap-seeds-"))
    out.mkdir(parents=True, exist_ok=True)
    command = "run" if args.until is None else args.until
    print(f"{args.workflow.name}, `socmap {command}` for seeds 0..{args.n - 1}; outputs in {out}")
    print(f"{'seed':>4}  {'status':>6}  {'time':>7}  {'0-100 cm Pg':>11}  notes")
    ok = 0
    for seed in range(args.n):
        cfg = _config(seed, out, args.workflow.resolve())
        t0 = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "mapping.cli", command, str(cfg)],
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        dt = time.perf_counter() - t0
        said = (done.stdout + done.stderr).splitlines()
        notes = [s.strip() for s in said if "pure nugget" in s]
        errors = [s for s in said if "error" in s.lower() and "warning" not in s.lower()]
        ok += done.returncode == 0
        line = f"{seed:>4}  {done.returncode:>6}  {dt:6.1f}s  {_total(out / f'seed{seed}'):>11}  "
        line += "; ".join(notes) if notes else ""
        if done.returncode != 0:
            line += ("  " if notes else "") + (errors[-1] if errors else said[-1] if said else "")
        print(line, flush=True)
    print(f"{ok} of {args.n} seeds completed")
    return 0 if ok == args.n else 1


if __name__ == "__main__":
    sys.exit(main())
