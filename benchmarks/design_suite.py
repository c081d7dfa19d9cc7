#!/usr/bin/env python
"""Judge ``socmap design`` on synthetic worlds with known truth (docs/design.md).

    python benchmarks/design_suite.py --suite OUT [--only world_02 world_08] [--n 50 200]
        [--target continuous/0-300 ...] [--designs socmap]

``OUT`` is a folder of :mod:`benchmarks.world_suite` (``OUT/worlds/<name>/`` with a finished
``run``). For each world and each N, four designs of N new sites are drawn: ``socmap`` (the
greedy design of :mod:`mapping.design`, targets: every zone and all zones in every interval,
or the totals named by ``--target``),
``random`` (land cells uniformly), ``clhs`` (conditioned Latin hypercube of the continuous
covariates) and ``coverage`` (k-means on the coordinates). Their profiles are sampled from
the world's truth with the world's measurement noise (:func:`mapping.synthetic.sample_profiles`,
300 cm deep), added to the world's profiles, and the workflow is rerun up to the Monte Carlo
ranges (``OUT/worlds/<name>/design_<kind>_<N>/``). Only projected worlds (the truth's own grid).

With ``--target``, the ``socmap`` design aims at those totals only, the figures below are
over them only, and the files carry a tag of the targets (``designs_<tag>_<N>.json``,
``design_<tag>_<kind>_<N>/``; the baselines do not depend on the targets and are shared).

With ``--draws D`` every baseline is drawn ``D`` times (draw 0 as without the option;
draw ``d`` from its own random stream, cLHS and k-means seeded ``seed + d``; reruns in
``design_<kind>_<N>_d<d>/``), and a world's baseline figures are the means over its draws:
one draw of 50 sites moves a rerun's half-width by as much as the designs differ, and the
best of three single draws is biased upwards.

Writes ``OUT/design_results.csv`` (one row per world, N, design and target total) and prints
the comparison: mean half-width of the targeted totals relative to the truth, its shrinkage
from the run without new sites, mean absolute error, coverage of the truth by the 90 % ranges,
and the design's predicted shrinkage.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DESIGNS = ("socmap", "random", "clhs", "coverage")
CONTINUOUS = ("elevation", "maat", "precipitation", "ndvi", "twi")


def _suite_spec(world_dir: Path):  # -> WorldSpec
    """The world's specification as the suite wrote it (``truth/world.json``), so a suite
    of any ``--seed`` is redrawn as it was generated."""
    from mapping.synthetic.worlds import WorldSpec

    d = json.loads((world_dir / "truth" / "world.json").read_text())["spec"]
    d["shape"], d["center_lonlat"] = tuple(d["shape"]), tuple(d["center_lonlat"])
    d["nodata"] = float(d["nodata"])  # "nan" as written by WorldSpec.to_dict
    return WorldSpec(**d)


def _world(spec):  # the projected truth world of a suite spec (deterministic)
    from mapping.synthetic.worlds import _truth_world

    world, _, _ = _truth_world(spec)
    return world


def _sites(world, rows: np.ndarray, cols: np.ndarray, tag: str) -> pd.DataFrame:
    from mapping.synthetic.world import to_lonlat

    t = world.transform
    x = t.c + (cols + 0.5) * t.a
    y = t.f + (rows + 0.5) * t.e
    lon, lat = to_lonlat().transform(x, y)
    return pd.DataFrame(
        {
            "profile_id": [f"{tag}{i:04d}" for i in range(len(rows))],
            "survey": tag,
            "x": x,
            "y": y,
            "lon": np.round(lon, 6),
            "lat": np.round(lat, 6),
            "row": rows,
            "col": cols,
            "bottom_cm": 300.0,
        }
    )


def _tag(targets: list[str] | None) -> str:
    """File-name tag of a target set ('' for every total)."""
    if not targets:
        return ""
    return "_".join(t.replace("/", "-").replace(" ", "") for t in targets) + "_"


def _read_sites(path: Path) -> dict[str, np.ndarray]:
    """A cache of designs (name -> flat land-cell indices)."""
    return {k: np.asarray(v) for k, v in json.loads(path.read_text()).items()}


def _write_sites(path: Path, sites: dict[str, np.ndarray]) -> None:
    path.write_text(json.dumps({k: v.tolist() for k, v in sites.items()}))


def _designs(
    world_dir: Path, spec, world, n_max: int, ns: list[int], targets: list[str] | None = None
) -> dict[str, np.ndarray]:
    """Flat land-cell indices (row * nx + col) of every design, N = n_max (prefixes for less)."""
    from mapping.config import load_config
    from mapping.run.design import run_design

    cache = world_dir / f"designs_{_tag(targets)}{n_max}.json"
    if cache.exists():
        return _read_sites(cache)
    shared = world_dir / f"designs_{n_max}.json"  # the baselines, shared by every target set
    if targets and shared.exists():
        base = _read_sites(shared)
    else:
        base = {}
    nx = world.shape[1]
    rng = np.random.default_rng([spec.seed, 41])
    out: dict[str, np.ndarray] = {}
    t0 = time.perf_counter()
    cfg = load_config(world_dir / "workflow.yaml")
    _, res, _, sites = run_design(
        cfg, n_max, targets=targets, n_candidates=2000, max_blocks=1500, echo=lambda m: None
    )
    out["socmap"] = sites["row"].to_numpy() * nx + sites["col"].to_numpy()
    predicted = {}
    f = res.range_factor()
    for n in ns:
        predicted[str(n)] = float(np.mean(1.0 - f[n]))
    (world_dir / f"design_predicted_{_tag(targets)}{n_max}.json").write_text(
        json.dumps({"predicted_mean_shrinkage": predicted, "seconds": time.perf_counter() - t0})
    )
    if base:
        out.update({k: v for k, v in base.items() if k != "socmap"})
        _write_sites(cache, out)
        return out
    out.update(_baseline_sites(world, rng, n_max, ns, spec.seed))
    _write_sites(cache, out)
    return out


def _baseline_sites(world, rng, n_max: int, ns: list[int], seed: int) -> dict[str, np.ndarray]:
    """Random (``n_max``; fewer are its first ones), cLHS and coverage sites (one per N: a
    Latin hypercube of 200 is not one of 50 plus 150), as flat land-cell indices."""
    from mapping.design import clhs_sites, coverage_sites

    nx = world.shape[1]
    land = np.flatnonzero(world.mask.ravel())
    out = {"random": rng.choice(land, n_max, replace=False)}
    X = np.column_stack([world.covariates[k].ravel()[land] for k in CONTINUOUS])
    t = world.transform
    r, c = np.divmod(land, nx)
    xy = np.column_stack([t.c + (c + 0.5) * t.a, t.f + (r + 0.5) * t.e])
    for n in ns:
        pool = rng.choice(land.size, min(land.size, 20000), replace=False)
        out[f"clhs_{n}"] = land[pool[clhs_sites(X[pool], n, seed=seed)]]
        out[f"coverage_{n}"] = land[coverage_sites(xy, n, seed=seed)]
    return out


def _more_draws(world_dir: Path, spec, world, n_max: int, ns: list[int], d: int):
    """Draw ``d`` (>= 1) of the baselines: their own random stream and seeds."""
    cache = world_dir / f"designs_{n_max}_d{d}.json"
    if cache.exists():
        return _read_sites(cache)
    rng = np.random.default_rng([spec.seed, 41, d])
    out = _baseline_sites(world, rng, n_max, ns, spec.seed + d)
    _write_sites(cache, out)
    return out


def _rerun(world_dir: Path, spec, world, name: str, flat: np.ndarray) -> Path:
    from mapping.synthetic import sample_profiles

    out = world_dir / name
    if (out / "run" / "zones" / "storage_summary.csv").exists():
        return out / "run"
    out.mkdir(exist_ok=True)
    rows, cols = np.divmod(np.asarray(flat), world.shape[1])
    sites = _sites(world, rows, cols, "D")
    new = sample_profiles(world, len(sites), spec.seed + 7, sites=sites, missing_bd=spec.missing_bd)
    old = pd.read_csv(world_dir / "profiles.csv")
    pd.concat([old, new[old.columns]], ignore_index=True).to_csv(out / "profiles.csv", index=False)
    text = (world_dir / "workflow.yaml").read_text()
    text = text.replace("path: profiles.csv", f"path: {out / 'profiles.csv'}")
    for tif in ("elevation", "maat", "precipitation", "ndvi", "twi", "landcover"):
        text = text.replace(f"path: {tif}.tif", f"path: {world_dir / (tif + '.tif')}")
    text = text.replace("path: permafrost_zones", f"path: {world_dir}/permafrost_zones")
    text = text.replace("output: run", f"output: {out / 'run'}")
    (out / "workflow.yaml").write_text(text)
    code = (
        "from mapping.config import load_config; from mapping.run import run_stages, stage_list;"
        f"cfg = load_config({str(out / 'workflow.yaml')!r});"
        "run_stages(cfg, stage_list(cfg), until='uncertainty', echo=lambda m: None)"
    )
    with open(out / "run.log", "w") as fh:
        subprocess.run(
            [sys.executable, "-c", code], stdout=fh, stderr=subprocess.STDOUT, check=True
        )
    return out / "run"


def _score(run: Path, world_dir: Path) -> pd.DataFrame:
    return score_summary(pd.read_csv(run / "zones" / "storage_summary.csv"), world_dir)


def score_summary(summary: pd.DataFrame, world_dir: Path) -> pd.DataFrame:
    """Half-width and error of each zone x interval range (relative to the truth) and
    whether it holds the world's true total (``truth/zone_totals.csv``)."""
    s = summary.copy()
    s["zone"] = s["zone"].replace({"all zones": "all_zones"})
    tru = pd.read_csv(world_dir / "truth" / "zone_totals.csv")
    tru = tru[tru["zone"] != "none"].assign(
        zone=lambda d: d["zone"].replace({"permafrost_region": "all_zones"}),
        interval=lambda d: (
            d["top_cm"].astype(int).astype(str) + "-" + d["bottom_cm"].astype(int).astype(str)
        ),
    )
    m = s.merge(tru[["zone", "interval", "storage_pg"]], on=["zone", "interval"])
    t = m["storage_pg"]
    return pd.DataFrame(
        {
            "zone": m["zone"],
            "interval": m["interval"],
            "half_width": (m["storage_upper_pg"] - m["storage_lower_pg"]) / 2 / t,
            "error": (m["storage_median_pg"] - t) / t,
            "covered": (m["storage_lower_pg"] <= t) & (t <= m["storage_upper_pg"]),
        }
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--suite", type=Path, required=True)
    p.add_argument("--only", nargs="+", default=None)
    p.add_argument("--n", nargs="+", type=int, default=[50, 200])
    p.add_argument(
        "--target",
        nargs="+",
        default=None,
        help="totals the socmap design aims at and the figures are over (ZONE/INTERVAL)",
    )
    p.add_argument(
        "--table-only", action="store_true", help="only tabulate the reruns already finished"
    )
    p.add_argument("--draws", type=int, default=1, help="draws of each baseline design (default 1)")
    p.add_argument(
        "--designs",
        nargs="+",
        choices=DESIGNS,
        default=list(DESIGNS),
        help="rerun (and tabulate) only these designs, e.g. --designs socmap after a change "
        "that moves only the socmap design (default: all four); OUT/design_results.csv then "
        "holds these only, and a run with every design tabulates the finished reruns again",
    )
    args = p.parse_args(argv)
    tag = _tag(args.target)
    keep = _target_filter(args.target)
    names = args.only or sorted(
        d.name for d in (args.suite / "worlds").iterdir() if (d / "run").is_dir()
    )
    rows = []
    for name in names:
        spec = _suite_spec(args.suite / "worlds" / name)
        if spec.grid != "projected":
            print(f"{name}: geographic, skipped", flush=True)
            continue
        world_dir = args.suite / "worlds" / name
        world = None if args.table_only else _world(spec)
        base = keep(_score(world_dir / "run", world_dir)).assign(world=name, n=0, design="none")
        rows.append(base)
        runs = [
            (kind, n, d)
            for n in args.n
            for kind in args.designs
            for d in range(1 if kind == "socmap" else args.draws)
        ]
        if args.table_only:
            for kind, n, d in runs:
                run = world_dir / _run_name(kind, n, tag, d) / "run"
                if (run / "zones" / "storage_summary.csv").exists():
                    sc = keep(_score(run, world_dir))
                    rows.append(sc.assign(world=name, n=n, design=kind, draw=d))
            continue
        designs = {0: _designs(world_dir, spec, world, max(args.n), args.n, args.target)}
        for d in range(1, args.draws):
            designs[d] = _more_draws(world_dir, spec, world, max(args.n), args.n, d)
        for kind, n, d in runs:
            sites = designs[d]
            flat = sites[kind][:n] if kind in sites else sites[f"{kind}_{n}"]
            t0 = time.perf_counter()
            run = _rerun(world_dir, spec, world, _run_name(kind, n, tag, d), flat)
            sc = keep(_score(run, world_dir)).assign(world=name, n=n, design=kind, draw=d)
            rows.append(sc)
            label = kind if d == 0 else f"{kind} (draw {d})"
            print(
                f"{name} N={n} {label}: mean half-width {sc['half_width'].mean():.4f} "
                f"(none {base['half_width'].mean():.4f}), {time.perf_counter() - t0:.0f} s",
                flush=True,
            )
    df = pd.concat(rows, ignore_index=True)
    suffix = ("_" + tag[:-1]) if tag else ""
    if not args.table_only:
        df.to_csv(args.suite / f"design_results{suffix}.csv", index=False)
    shrinkage = shrinkage_table(df, args.suite, tag, args.target)
    shrinkage.to_csv(args.suite / f"design_shrinkage{suffix}.csv", index=False)
    print(summary_table(df, args.suite, tag))
    print(f"predicted against realised shrinkage: {args.suite / f'design_shrinkage{suffix}.csv'}")
    return 0


def predicted_shrinkage(world_dir: Path, tag: str) -> dict[str, float]:
    """The socmap design's predicted mean shrinkage per N (as a string) in one world."""
    pred: dict[str, float] = {}
    for f in sorted(world_dir.glob(f"design_predicted_{tag}[0-9]*.json")):
        pred.update(json.loads(f.read_text())["predicted_mean_shrinkage"])
    return pred


def shrinkage_row(
    world: str, n: int, targets: str, before: float, after: float, predicted: float, inside: bool
) -> dict[str, object]:
    """One row of the report's reference chart: half-widths before and after the rerun
    (fractions of the truth), the predicted shrinkage (fraction), truth inside after."""
    return {
        "world": world,
        "n": int(n),
        "targets": targets,
        "half_width_before_pct": round(100 * before, 2),
        "half_width_after_pct": round(100 * after, 2),
        "predicted_pct": round(100 * predicted, 1),
        "realised_pct": round(100 * (1 - after / before), 1),
        "truth_inside": bool(inside),
    }


def shrinkage_table(
    df: pd.DataFrame, suite: Path, tag: str, targets: list[str] | None
) -> pd.DataFrame:
    """Per world and N, the socmap design's predicted and realised shrinkage of the mean
    half-width of the targeted totals (the report draws it: ``mapping/report/data``)."""
    rows = []
    for world, g in df.groupby("world"):
        base = g[g["design"] == "none"]["half_width"].mean()
        pred = predicted_shrinkage(suite / "worlds" / str(world), tag)
        for n, h in g[g["design"] == "socmap"].groupby("n", sort=True):
            if str(n) not in pred:
                continue
            rows.append(
                shrinkage_row(
                    str(world),
                    n,
                    " ".join(targets) if targets else "all",
                    base,
                    h["half_width"].mean(),
                    pred[str(n)],
                    h["covered"].all(),
                )
            )
    return pd.DataFrame(rows)


def _run_name(kind: str, n: int, tag: str, draw: int = 0) -> str:
    """Rerun folder: the socmap design's depends on the targets, the baselines' do not;
    a baseline's further draws get ``_d<draw>``."""
    suffix = f"_d{draw}" if draw else ""
    return f"design_{tag if kind == 'socmap' else ''}{kind}_{n}{suffix}"


def _target_filter(targets: list[str] | None):
    """Keep the scored rows of the targeted totals (all rows without targets), the targets
    read as ``socmap design --target`` reads them (:func:`mapping.design.parse_target`)."""
    if not targets:
        return lambda d: d
    from mapping.design import ALL_ZONES, parse_target

    def keep(d: pd.DataFrame) -> pd.DataFrame:
        zones = sorted(set(d["zone"]) - {"all_zones"})
        intervals = list(dict.fromkeys(d["interval"]))
        pairs = set()
        for t in targets:
            target = parse_target(t, zones, intervals)
            zone = "all_zones" if target.zone == ALL_ZONES else target.zone
            pairs.add((zone, target.interval))
        mask = [(z, i) in pairs for z, i in zip(d["zone"], d["interval"], strict=True)]
        return d[np.asarray(mask, dtype=bool)]

    return keep


def summary_table(df: pd.DataFrame, suite: Path, tag: str = "") -> str:
    """Markdown: per world and N, each design's mean half-width, shrinkage, error, coverage."""
    lines = [
        "| world | N | design | mean half-width | shrinkage vs no new sites | predicted "
        "| mean abs error | coverage |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for world, g in df.groupby("world"):
        base = g[g["design"] == "none"]["half_width"].mean()
        pred = predicted_shrinkage(suite / "worlds" / str(world), tag)
        lines.append(
            f"| {world} | 0 | none | {100 * base:.2f} % | | | "
            f"{100 * g[g['design'] == 'none']['error'].abs().mean():.2f} % | "
            f"{g[g['design'] == 'none']['covered'].mean():.2f} |"
        )
        for (n, design), h in g[g["design"] != "none"].groupby(["n", "design"], sort=True):
            hw = h["half_width"].mean()
            pr = f"{100 * pred[str(n)]:.1f} %" if design == "socmap" and str(n) in pred else ""
            lines.append(
                f"| {world} | {n} | {design} | {100 * hw:.2f} % | {100 * (1 - hw / base):.1f} % "
                f"| {pr} | {100 * h['error'].abs().mean():.2f} % | {h['covered'].mean():.2f} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
