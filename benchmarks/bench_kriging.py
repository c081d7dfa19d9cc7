"""Neighbourhood kriging throughput: socmap's kernel vs PyKrige's C backend vs R gstat.

Ordinary kriging of ``--n-points`` scattered values onto a ``--grid-size`` x
``--grid-size`` grid with ``--neighbors`` nearest neighbours (mean and variance),
one core each (OMP/MKL/OpenBLAS/numba threads = 1). Each implementation runs in its
own process so its peak resident memory can be read (``wait4``):

* socmap: ``OrdinaryKriging(variogram, n_neighbors=k).fit(points).krige(cells)``,
  the path of the chunked prediction stage: the fitted model holds the KD-tree and
  the training covariance matrix, built once per model, not per chunk; ``fit`` and
  one small warm-up call (which loads the compiled kernel) are not timed.
* PyKrige: ``OrdinaryKriging(...).execute("grid", ..., backend="C",
  n_closest_points=k)``; the constructor is not timed.
* gstat: ``krige(z ~ 1, ~x + y, data, newdata, model, nmax = k)`` via ``Rscript``
  (skipped when Rscript or gstat is missing); reading the inputs is not timed.

Peak memory is each child's maximum resident set size; for the Python runs the
resident size just before the timed call (interpreter, libraries, inputs) is shown
too. Throughput is reported per CPU second of the timed call (``time.process_time`` /
R's ``proc.time`` user + system), which on an otherwise busy machine is the fair
single-core measure; wall-clock throughput is printed alongside. The script ends
with the largest absolute and relative differences of the predictions and
variances against socmap's. gstat ranks neighbours by single-precision squared
distances, so where the k-th and (k+1)-th neighbours are closer than float32 can
tell, its neighbourhood may differ from the exact one; such cells are counted and
the differences are also given without them.

Quick run (default: 500 points, 500 x 500 grid, the same density as the full run)::

    python benchmarks/bench_kriging.py

The configuration of the issue (2,000 points, 1000 x 1000 grid, 32 neighbours)::

    python benchmarks/bench_kriging.py --n-points 2000 --grid-size 1000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SINGLE_THREAD = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMBA_NUM_THREADS": "1",
    "VECLIB_MAXIMUM_THREADS": "1",
}
os.environ.update(SINGLE_THREAD)

import numpy as np  # noqa: E402

EXTENT = 100_000.0  # metres: a 100 km x 100 km region
VARIOGRAM = {"model": "spherical", "psill": 1.0, "range": 15_000.0, "nugget": 0.1}
PYKRIGE_RANGE = {"spherical": 1.0, "exponential": 3.0, "gaussian": 7.0 / 4.0}
GSTAT_NAME = {"spherical": "Sph", "exponential": "Exp", "gaussian": "Gau"}

R_SCRIPT = r"""
suppressPackageStartupMessages(library(gstat))
args <- commandArgs(trailingOnly = TRUE)
dir <- args[1]; k <- as.integer(args[2])
p <- jsonlite::fromJSON(file.path(dir, "params.json"))
data <- read.csv(file.path(dir, "points.csv"))
gx <- readBin(file.path(dir, "gx.bin"), "double", p$grid_size)
gy <- readBin(file.path(dir, "gy.bin"), "double", p$grid_size)
newdata <- expand.grid(x = gx, y = gy)  # x fastest, as numpy's meshgrid(...).ravel()
m <- vgm(p$psill, p$gstat_model, p$range, p$nugget)
t0 <- proc.time()
res <- krige(z ~ 1, locations = ~ x + y, data = data, newdata = newdata, model = m,
             nmax = k, debug.level = 0)
t1 <- proc.time()
writeBin(as.double(res$var1.pred), file.path(dir, "gstat_pred.bin"))
writeBin(as.double(res$var1.var), file.path(dir, "gstat_var.bin"))
d <- t1 - t0
cat(jsonlite::toJSON(list(cpu = d[["user.self"]] + d[["sys.self"]], wall = d[["elapsed"]]),
                     auto_unbox = TRUE, digits = NA), file = file.path(dir, "gstat_time.json"))
"""


# --------------------------------------------------------------------------- problem
def make_problem(n_points: int, grid_size: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0.0, EXTENT, (n_points, 2))
    z = (
        np.sin(xy[:, 0] / 9_000.0)
        + np.cos(xy[:, 1] / 13_000.0)
        + rng.normal(0.0, np.sqrt(VARIOGRAM["nugget"]), n_points)
    )
    cell = EXTENT / grid_size
    g = (np.arange(grid_size) + 0.5) * cell
    return {"xy": xy, "z": z, "gx": g, "gy": g}


def grid_targets(gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    X, Y = np.meshgrid(gx, gy)
    return np.column_stack([X.ravel(), Y.ravel()])


# --------------------------------------------------------------------------- workers
def worker(name: str, workdir: Path, k: int) -> None:
    """Run one implementation; write its predictions, variances and timings to ``workdir``."""
    import resource

    p = np.load(workdir / "problem.npz")
    xy, z, gx, gy = p["xy"], p["z"], p["gx"], p["gy"]
    model = VARIOGRAM["model"]
    if name == "socmap":
        from mapping.models import OrdinaryKriging, Variogram

        v = Variogram(model, VARIOGRAM["psill"], VARIOGRAM["range"], VARIOGRAM["nugget"])
        ok = OrdinaryKriging(variogram=v, n_neighbors=k).fit(xy, z)
        txy = grid_targets(gx, gy)
        ok.krige(txy[:2000])  # loads the compiled kernel, builds the covariance cache
        rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        c0, w0 = time.process_time(), time.perf_counter()
        pred, var = ok.krige(txy)
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    elif name == "pykrige":
        from pykrige.ok import OrdinaryKriging

        ok = OrdinaryKriging(
            xy[:, 0],
            xy[:, 1],
            z,
            variogram_model=model,
            variogram_parameters={
                "psill": VARIOGRAM["psill"],
                "range": VARIOGRAM["range"] * PYKRIGE_RANGE[model],
                "nugget": VARIOGRAM["nugget"],
            },
        )
        rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        c0, w0 = time.process_time(), time.perf_counter()
        zk, sk = ok.execute("grid", gx, gy, backend="C", n_closest_points=k)
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        pred, var = np.asarray(zk).ravel(), np.asarray(sk).ravel()
    else:
        raise SystemExit(f"unknown worker {name!r}")
    np.save(workdir / f"{name}_pred.npy", pred)
    np.save(workdir / f"{name}_var.npy", var)
    timing = {"cpu": cpu, "wall": wall, "rss_start": rss_start}
    (workdir / f"{name}_time.json").write_text(json.dumps(timing))


def run_child(cmd: list[str], env: dict[str, str]) -> float:
    """Run ``cmd``; return its peak resident memory in MiB (from ``wait4``)."""
    proc = subprocess.Popen(cmd, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} exited with status {proc.returncode}")
    return usage.ru_maxrss / 1024.0  # Linux reports KiB


def gstat_available() -> bool:
    if shutil.which("Rscript") is None:
        return False
    probe = subprocess.run(
        ["Rscript", "-e", "quit(status = !all(sapply(c('gstat', 'jsonlite'), requireNamespace)))"],
        capture_output=True,
    )
    return probe.returncode == 0


# --------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-points", type=int, default=500)
    ap.add_argument("--grid-size", type=int, default=500)
    ap.add_argument("--neighbors", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-pykrige", action="store_true")
    ap.add_argument("--skip-gstat", action="store_true")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--workdir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, Path(args.workdir), args.neighbors)
        return

    cells = args.grid_size**2
    env = {**os.environ, **SINGLE_THREAD}
    print(
        f"ordinary kriging, {args.n_points} points -> {args.grid_size} x {args.grid_size} grid "
        f"({cells:,} cells), {args.neighbors} neighbours, {VARIOGRAM['model']} variogram, "
        "one thread each"
    )
    with tempfile.TemporaryDirectory(prefix="bench_kriging_") as tmp:
        workdir = Path(tmp)
        prob = make_problem(args.n_points, args.grid_size, args.seed)
        np.savez(workdir / "problem.npz", **prob)
        runs: dict[str, dict[str, float]] = {}
        names = ["socmap"] + ([] if args.skip_pykrige else ["pykrige"])
        for name in names:
            cmd = [sys.executable, __file__, "--worker", name, "--workdir", tmp]
            cmd += ["--neighbors", str(args.neighbors)]
            rss = run_child(cmd, env)
            runs[name] = {**json.loads((workdir / f"{name}_time.json").read_text()), "rss": rss}
        if not args.skip_gstat:
            if gstat_available():
                _write_gstat_inputs(workdir, prob)
                script = workdir / "bench.R"
                script.write_text(R_SCRIPT)
                rss = run_child(["Rscript", str(script), tmp, str(args.neighbors)], env)
                runs["gstat"] = {
                    **json.loads((workdir / "gstat_time.json").read_text()),
                    "rss": rss,
                }
                n = cells
                np.save(
                    workdir / "gstat_pred.npy", np.fromfile(workdir / "gstat_pred.bin", "<f8", n)
                )
                np.save(workdir / "gstat_var.npy", np.fromfile(workdir / "gstat_var.bin", "<f8", n))
            else:
                print("gstat: skipped (Rscript with gstat and jsonlite not found)")
        _report(workdir, runs, cells, prob, args.neighbors)


def _write_gstat_inputs(workdir: Path, prob: dict[str, np.ndarray]) -> None:
    xy, z = prob["xy"], prob["z"]
    with open(workdir / "points.csv", "w") as fh:
        fh.write("x,y,z\n")
        for (x, y), v in zip(xy, z, strict=True):
            fh.write(f"{x:.17g},{y:.17g},{v:.17g}\n")
    prob["gx"].astype("<f8").tofile(workdir / "gx.bin")
    prob["gy"].astype("<f8").tofile(workdir / "gy.bin")
    params = {**VARIOGRAM, "gstat_model": GSTAT_NAME[VARIOGRAM["model"]]}
    params["grid_size"] = len(prob["gx"])
    (workdir / "params.json").write_text(json.dumps(params))


def _report(
    workdir: Path, runs: dict[str, dict[str, float]], cells: int, prob: dict, k: int
) -> None:
    print(
        f"\n{'implementation':<16}{'cells/s (CPU)':>15}{'cells/s (wall)':>16}"
        f"{'peak RSS':>12}{'before call':>14}"
    )
    for name, r in runs.items():
        before = f"{r['rss_start']:>10,.0f} MiB" if "rss_start" in r else f"{'-':>14}"
        print(
            f"{name:<16}{cells / r['cpu']:>15,.0f}{cells / r['wall']:>16,.0f}"
            f"{r['rss']:>8,.0f} MiB{before}"
        )
    ours = runs["socmap"]
    for name, r in runs.items():
        if name != "socmap":
            print(
                f"socmap / {name}: {r['cpu'] / ours['cpu']:.1f}x (CPU), "
                f"{r['wall'] / ours['wall']:.1f}x (wall)"
            )
    pred = np.load(workdir / "socmap_pred.npy")
    var = np.load(workdir / "socmap_var.npy")
    keep = np.ones(cells, dtype=bool)
    if "gstat" in runs:
        # gstat ranks neighbours by squared distances held in single precision (DPOINT
        # u.dist2 is a float): where the k-th and (k+1)-th squared distances round to
        # the same float its choice between them is arbitrary
        from scipy.spatial import cKDTree

        d, _ = cKDTree(prob["xy"]).query(grid_targets(prob["gx"], prob["gy"]), k=k + 1)
        d2 = (d[:, -2:] ** 2).astype(np.float32)
        keep = d2[:, 0] < d2[:, 1]
    for name in runs:
        if name == "socmap":
            continue
        for what, a in (("pred", pred), ("var", var)):
            b = np.load(workdir / f"{name}_{what}.npy")
            diff = np.abs(a - b)
            rel = diff / np.maximum(np.abs(b), np.finfo(float).tiny)
            line = (
                f"socmap vs {name:<8} {what:<4}: max abs diff {diff.max():.3e}, "
                f"max rel diff {rel.max():.3e}"
            )
            if name == "gstat" and not keep.all():
                line += (
                    f"; without the {int((~keep).sum())} cell(s) where gstat's single-precision "
                    f"distances tie at neighbour {k}: {diff[keep].max():.3e}, "
                    f"{rel[keep].max():.3e}"
                )
            print(line)


if __name__ == "__main__":
    main()
