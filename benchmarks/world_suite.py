#!/usr/bin/env python
"""Judge socmap on independent synthetic worlds with known truth (docs/validation.md).

    python benchmarks/world_suite.py [--worlds 12] [--out DIR] [--jobs 1]
                                     [--only world_01 ...] [--projected-only]
                                     [--seed 2026] [--workflow YAML] [--set FIELD=VALUE ...]

For each world of :func:`mapping.synthetic.worlds.suite_specs` the script
writes the world folder (covariates, zones, profiles, truth, ``workflow.yaml``:
``workflows/sample.yaml``, or ``--workflow``, with only the paths changed and no active
layer), runs the real
``socmap run`` on it in a subprocess (the same interpreter, so ``PYTHONPATH``
decides which code runs), and computes every figure of VALIDATION.md against
the truth, per world and pooled. A plain analyst baseline (sklearn random
forest on the covariates + PyKrige ordinary kriging of its out-of-bag
residuals) gives the pixel R² to beat. A world whose run fails is reported with
the run's last error line; the suite goes on. Rerunning with the same ``--out``
reuses worlds already written (same specification), socmap's own resume skips
finished stages, and the analyst's figures are cached per world.

Writes ``OUT/results.csv`` (one row per world and interval), ``OUT/zones.csv``
(one row per world, zone and interval), ``OUT/summary.json`` (pooled figures,
worst worlds, failures, timings) and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_YAML = ROOT / "workflows" / "sample.yaml"
INTERVALS = ((0, 30), (0, 100), (0, 200), (0, 300))
STATS = ("mean", "std", "lower", "upper")


# --------------------------------------------------------------------------- reading
def _read(path: Path) -> np.ndarray:
    import rasterio

    with rasterio.open(path) as src:
        return src.read(1, masked=True).astype("float64").filled(np.nan)


def _grid(world_dir: Path) -> tuple[Any, Any, tuple[int, int]]:
    import rasterio

    with rasterio.open(world_dir / "elevation.tif") as src:
        return src.crs, src.transform, (src.height, src.width)


def _covariate_table(world_dir: Path, names: list[str]) -> tuple[pd.DataFrame, np.ndarray]:
    """Covariates and cell-centre coordinates of every land cell, and the land mask."""
    _, t, (ny, nx) = _grid(world_dir)
    cols = {n: _read(world_dir / f"{n}.tif") for n in names}
    land = np.ones((ny, nx), dtype=bool)
    for a in cols.values():
        land &= np.isfinite(a)
    rows, cc = np.nonzero(land)
    table = pd.DataFrame(
        {"x": t.c + (cc + 0.5) * t.a, "y": t.f + (rows + 0.5) * t.e}
        | {n: a[land] for n, a in cols.items()}
    )
    table["landcover"] = table["landcover"].astype("int64")
    return table, land


def _profile_cells(world_dir: Path, lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, ...]:
    import pyproj

    crs, t, (ny, nx) = _grid(world_dir)
    if crs.is_geographic:
        x, y = lon, lat
    else:
        x, y = pyproj.Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(lon, lat)
    col = np.floor((np.asarray(x) - t.c) / t.a).astype(int)
    row = np.floor((np.asarray(y) - t.f) / t.e).astype(int)
    ok = (row >= 0) & (row < ny) & (col >= 0) & (col < nx)
    return row, col, ok, np.asarray(x), np.asarray(y)


def _truth(world_dir: Path, top: float, bottom: float) -> np.ndarray:
    from mapping.synthetic import interval_stock

    z = np.load(world_dir / "truth" / "truth.npz")
    return interval_stock(top, bottom, z["surface_density"], z["scale_depth"])


# --------------------------------------------------------------------------- one world
def run_socmap(cfg: Path, log: Path, timeout: float) -> tuple[bool, str, float]:
    """Run ``socmap run cfg``; return (ok, one-line error, seconds)."""
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "mapping.cli", "run", str(cfg)],
                stdout=fh,
                stderr=subprocess.STDOUT,
                env=os.environ.copy(),
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return False, f"timed out after {timeout:.0f} s", time.perf_counter() - t0
    secs = time.perf_counter() - t0
    if proc.returncode == 0:
        return True, "", secs
    lines = [ln.strip() for ln in log.read_text().splitlines() if ln.strip()]
    err = next((ln for ln in reversed(lines) if "rror" in ln), lines[-1] if lines else "")
    return False, f"exit {proc.returncode}: {err[:300]}", secs


def _distances(px: np.ndarray, py: np.ndarray, geographic: bool) -> np.ndarray:
    """Pairwise distances: metres, or great-circle degrees (PyKrige's geographic unit)."""
    if not geographic:
        return np.hypot(px[:, None] - px, py[:, None] - py)
    lon, lat = np.radians(px), np.radians(py)
    a = (
        np.sin((lat[:, None] - lat) / 2) ** 2
        + np.cos(lat[:, None]) * np.cos(lat) * np.sin((lon[:, None] - lon) / 2) ** 2
    )
    return np.degrees(2 * np.arcsin(np.sqrt(np.clip(a, 0, 1))))


def fit_exponential(
    px: np.ndarray, py: np.ndarray, r: np.ndarray, geographic: bool
) -> dict[str, float]:
    """An analyst's variogram: gstat defaults (15 lags up to a third of the diagonal),
    exponential model fitted by weighted least squares (weights N_h / h^2).

    Returns PyKrige's parameters: total ``sill``, practical ``range`` and ``nugget``.
    """
    from scipy.optimize import curve_fit

    d = _distances(px, py, geographic)
    iu = np.triu_indices(len(r), 1)
    h, g = d[iu], 0.5 * (r[:, None] - r)[iu] ** 2
    cutoff = float(d.max()) / 3.0
    edges = np.linspace(0, cutoff, 16)
    b = np.digitize(h, edges) - 1
    keep = (b >= 0) & (b < 15)
    n = np.bincount(b[keep], minlength=15)
    hm = np.bincount(b[keep], h[keep], minlength=15) / np.maximum(n, 1)
    gm = np.bincount(b[keep], g[keep], minlength=15) / np.maximum(n, 1)
    use = n > 0
    var = float(np.var(r))

    def model(hh: np.ndarray, psill: float, rng: float, nug: float) -> np.ndarray:
        return nug + psill * (1.0 - np.exp(-3.0 * hh / rng))

    try:
        (ps, rg, ng), _ = curve_fit(
            model,
            hm[use],
            gm[use],
            p0=[0.5 * var, cutoff / 2, 0.5 * var],
            sigma=1.0 / np.sqrt(n[use] / np.maximum(hm[use], 1e-9) ** 2),
            bounds=([0, cutoff / 50, 0], [4 * var, 3 * cutoff, 4 * var]),
            maxfev=20000,
        )
    except RuntimeError:
        ps, rg, ng = 0.0, cutoff, var
    return {"sill": float(ps + ng), "range": float(rg), "nugget": float(ng)}


def previous_run(world_dir: Path) -> tuple[bool, str, float] | None:
    """The outcome of a run already in the world folder, from its log; None if there is none."""
    log = world_dir / "run.log"
    if not log.exists():
        return None
    status = world_dir / "run_status.json"
    secs = json.loads(status.read_text())["run_s"] if status.exists() else float("nan")
    lines = [ln.strip() for ln in log.read_text().splitlines() if ln.strip()]
    # warnings may follow the last line: socmap's summary ("socmap: warning (xN): ...") and
    # Python's from helper processes at exit ("...py:468: UserWarning: ..." and its source line)
    while lines and (
        lines[-1].startswith(("socmap: warning", "warnings.warn(")) or "Warning: " in lines[-1]
    ):
        lines.pop()
    if lines and lines[-1].startswith("outputs in"):
        return True, "", secs
    err = next((ln for ln in reversed(lines) if "rror" in ln), lines[-1] if lines else "")
    return False, f"{err[:300]}", secs


def analyst_r2(world_dir: Path, stocks: pd.DataFrame, seed: int) -> dict[str, float]:
    """Pixel R² of a plain RF + PyKrige ordinary kriging of OOB residuals, per interval.

    The forest (200 trees, sklearn defaults) sees the features socmap's model sees
    (grid x, y and the covariates, land cover one-hot) and predicts ln(stock), as
    SOC stocks are log-normal (on the stock scale one rich profile in cold land
    sends the forest's whole cold tail up); its out-of-bag residuals are kriged
    (exponential variogram, see :func:`fit_exponential`; 32 nearest profiles, or all
    when fewer),
    added, and the sum back-transformed with ``exp`` (a median, no bias term).
    """
    from pykrige.ok import OrdinaryKriging
    from sklearn.ensemble import RandomForestRegressor

    from mapping.synthetic import COVARIATES
    from mapping.synthetic.judge import pixel_r2

    crs, _, shape = _grid(world_dir)
    table, land = _covariate_table(world_dir, list(COVARIATES))
    geographic = crs.is_geographic
    grid_idx = np.full(shape, -1)
    grid_idx[land] = np.arange(int(land.sum()))
    out = {}
    for top, bottom in INTERVALS:
        s = stocks[(stocks["top_cm"] == top) & (stocks["bottom_cm"] == bottom)]
        row, col, ok, x, y = _profile_cells(world_dir, s["lon"].to_numpy(), s["lat"].to_numpy())
        idx = np.where(
            ok, grid_idx[np.clip(row, 0, shape[0] - 1), np.clip(col, 0, shape[1] - 1)], -1
        )
        keep = idx >= 0
        # the features socmap's model sees: grid coordinates and the covariates (classes one-hot)
        X = pd.get_dummies(table[["x", "y", *COVARIATES]], columns=["landcover"]).to_numpy(float)
        Xt, yt = X[idx[keep]], np.log(s["soc_stock_kg_m2"].to_numpy()[keep])
        rf = RandomForestRegressor(n_estimators=200, oob_score=True, random_state=seed, n_jobs=1)
        rf.fit(Xt, yt)
        resid = yt - rf.oob_prediction_
        if geographic:
            px, py = s["lon"].to_numpy()[keep], s["lat"].to_numpy()[keep]
            gx, gy = table["x"].to_numpy(), table["y"].to_numpy()
        else:
            px, py = x[keep], y[keep]
            gx, gy = table["x"].to_numpy(), table["y"].to_numpy()
        ok_model = OrdinaryKriging(
            px,
            py,
            resid,
            variogram_model="exponential",
            variogram_parameters=fit_exponential(px, py, resid, geographic),
            coordinates_type="geographic" if geographic else "euclidean",
        )
        # at most the profiles there are: PyKrige does not bound n_closest_points, and its C
        # backend then reads past the neighbours' arrays and corrupts the heap (seed 2027
        # world_05, 28 profiles at 0-300 cm: "free(): corrupted unsorted chunks"; the loop
        # backend stops with a singular matrix)
        near = min(32, len(px))
        kriged, _ = ok_model.execute("points", gx, gy, n_closest_points=near, backend="C")
        pred = np.full(shape, np.nan)
        pred[land] = np.exp(rf.predict(X) + np.asarray(kriged))
        out[f"{top}-{bottom}"] = pixel_r2(pred, _truth(world_dir, top, bottom))
    return out


def score_world(world_dir: Path, run_dir: Path) -> tuple[list[dict[str, Any]], pd.DataFrame]:
    """Every figure of one successful run, per interval, and the zone table."""
    import joblib

    from mapping.synthetic import COVARIATES
    from mapping.synthetic.judge import (
        most_dissimilar,
        picp,
        pixel_r2,
        rms_z,
        true_new_error,
        zone_errors,
    )

    stocks = pd.read_csv(run_dir / "stocks" / "stocks.csv")
    table, land = _covariate_table(world_dir, list(COVARIATES))
    rows = []
    for top, bottom in INTERVALS:
        label = f"{top}-{bottom}"
        truth = _truth(world_dir, top, bottom)
        m = {s: _read(run_dir / "maps" / f"soc_{top}_{bottom}cm_{s}.tif") for s in STATS}
        di = np.full(truth.shape, np.nan)
        aoa_file = run_dir / "models" / label / "aoa.joblib"
        if aoa_file.exists():
            aoa = joblib.load(aoa_file)
            di[land], _ = aoa.predict(table[list(aoa.layout_.names)])
        far = most_dissimilar(np.where(np.isfinite(truth), di, np.nan), 0.10)
        s = stocks[(stocks["top_cm"] == top) & (stocks["bottom_cm"] == bottom)]
        row, col, ok, _, _ = _profile_cells(world_dir, s["lon"].to_numpy(), s["lat"].to_numpy())
        t_obs = np.full(len(s), np.nan)
        t_obs[ok] = truth[row[ok], col[ok]]
        true_err = true_new_error(m["mean"], truth, s["soc_stock_kg_m2"].to_numpy(), t_obs)
        cvm = pd.read_csv(run_dir / "models" / label / "cv_metrics.csv")
        # the reported CV RMSE: weighted to the mapped area when the run weighs it
        # (cv.weighting: area, the default); the plain one at the profiles beside it
        area = "rmse_area" in cvm.columns
        cv_rmse = float(cvm["rmse_area" if area else "rmse"].iloc[0])
        cv_plain = float(cvm["rmse"].iloc[0])
        # its block-bootstrap 90 % range (cv.bootstrap), where the run has one
        lo_key = "rmse_area_lower" if area else "rmse_lower"
        cv_lo = float(cvm[lo_key].iloc[0]) if lo_key in cvm else float("nan")
        cv_hi = (
            float(cvm[lo_key.replace("lower", "upper")].iloc[0]) if lo_key in cvm else float("nan")
        )
        ok_cells = np.isfinite(truth) & np.isfinite(m["mean"])
        rows.append(
            {
                "interval": label,
                "n_profiles": len(s),
                "land_cells": int(ok_cells.sum()),
                "pixel_r2": pixel_r2(m["mean"], truth),
                "pixel_picp": picp(m["lower"], m["upper"], truth),
                "picp_dissimilar": picp(m["lower"], m["upper"], truth, where=far)
                if far.any()
                else float("nan"),
                "rms_z": rms_z(m["mean"], m["std"], truth),
                "true_error": true_err,
                "cv_rmse": cv_rmse,
                "cv_ratio": cv_rmse / true_err,
                "cv_rmse_lower": cv_lo,
                "cv_rmse_upper": cv_hi,
                "cv_picp": float(cvm["picp_area" if area else "picp"].iloc[0]),
                "cv_rmse_profiles": cv_plain,
                "cv_ratio_profiles": cv_plain / true_err,
                "map_rmse": float(np.sqrt(np.nanmean((m["mean"] - truth)[ok_cells] ** 2))),
                # sums for pooling
                "_sse": float(np.sum((m["mean"] - truth)[ok_cells] ** 2)),
                "_sst": float(np.sum((truth[ok_cells] - truth[ok_cells].mean()) ** 2)),
                "_inside": float(np.sum(((m["lower"] <= truth) & (truth <= m["upper"]))[ok_cells])),
                "_far_inside": float(
                    np.sum(((m["lower"] <= truth) & (truth <= m["upper"]))[far & ok_cells])
                ),
                "_far_n": int((far & ok_cells).sum()),
                "_z2": float(
                    np.nansum(((m["mean"] - truth) / m["std"])[ok_cells & (m["std"] > 0)] ** 2)
                ),
                "_zn": int((ok_cells & (m["std"] > 0)).sum()),
            }
        )
    # The reported total is the report's headline (Table 2): the total of the mean map,
    # ``zones/storage.csv``; the range is the Monte Carlo 5-95 % of
    # ``zones/storage_summary.csv``, whose median is kept beside it.
    mc = pd.read_csv(run_dir / "zones" / "storage_summary.csv")
    mc = mc.assign(
        zone=mc["zone"].replace({"all zones": "all_zones"}),
        mc_median=mc["storage_median_pg"],
        lower=mc["storage_lower_pg"],
        upper=mc["storage_upper_pg"],
    )[["zone", "interval", "mc_median", "lower", "upper"]]
    head = pd.read_csv(run_dir / "zones" / "storage.csv")
    head = head.assign(
        zone=head["zone"].replace({"all zones": "all_zones"}), total=head["storage_pg"]
    )[["zone", "interval", "total"]]
    rep = head.merge(mc, on=["zone", "interval"], how="inner", validate="one_to_one")
    tru = pd.read_csv(world_dir / "truth" / "zone_totals.csv")
    tru = tru[tru["zone"] != "none"].assign(
        zone=lambda d: d["zone"].replace({"permafrost_region": "all_zones"}),
        interval=lambda d: (
            d["top_cm"].astype(int).astype(str) + "-" + d["bottom_cm"].astype(int).astype(str)
        ),
        true_total=lambda d: d["storage_pg"],
    )[["zone", "interval", "true_total"]]
    zones = zone_errors(rep, tru)
    zones["mc_median_rel_error"] = (zones["mc_median"] - zones["true_total"]) / zones["true_total"]
    return rows, zones


def one_world(
    spec: Any,
    out: Path,
    timeout: float,
    analyst: bool,
    reuse_runs: bool = False,
    workflow: Path = SAMPLE_YAML,
) -> dict[str, Any]:
    """Generate, run and score one world; never raises."""
    from world_files import write_world

    from mapping.synthetic.worlds import build_world

    res: dict[str, Any] = {"world": spec.name, "grid": spec.grid, "spec": spec.to_dict()}
    t0 = time.perf_counter()
    world_dir = out / "worlds" / spec.name
    try:
        described = world_dir / "truth" / "world.json"
        cfg = world_dir / "workflow.yaml"
        old = json.loads(described.read_text()) if described.exists() else {}
        if old.get("spec") == json.loads(json.dumps(spec.to_dict())) and cfg.exists():
            res["summary"] = old["summary"]  # the same world is already written: reuse it
        else:
            world = build_world(spec)
            cfg = write_world(world, world_dir, workflow)
            res["summary"] = world.summary
    except Exception as exc:  # a world that cannot be built is a failure row
        res.update(ok=False, error=f"generator: {type(exc).__name__}: {exc}")
        return res
    res["generate_s"] = time.perf_counter() - t0
    before = previous_run(world_dir) if reuse_runs else None
    if before is None:
        ok, err, secs = run_socmap(cfg, world_dir / "run.log", timeout)
        (world_dir / "run_status.json").write_text(json.dumps({"ok": ok, "run_s": secs}))
    else:
        ok, err, secs = before
    res["run_s"] = secs
    if analyst:
        t1 = time.perf_counter()
        try:
            stocks_file = world_dir / "run" / "stocks" / "stocks.csv"
            cache = world_dir / "analyst.json"
            if cache.exists() and cache.stat().st_mtime > stocks_file.stat().st_mtime:
                res["analyst_r2"] = json.loads(cache.read_text())
            elif stocks_file.exists():
                stocks = pd.read_csv(stocks_file)
                res["analyst_r2"] = analyst_r2(world_dir, stocks, spec.seed)
                cache.write_text(json.dumps(res["analyst_r2"]))
        except Exception as exc:
            res["analyst_error"] = f"{type(exc).__name__}: {exc}"
        res["analyst_s"] = time.perf_counter() - t1
    if not ok:
        res.update(ok=False, error=err)
        return res
    try:
        rows, zones = score_world(world_dir, world_dir / "run")
    except Exception as exc:
        res.update(ok=False, error=f"scoring: {type(exc).__name__}: {exc}")
        return res
    res.update(ok=True, rows=rows, zones=zones.to_dict("records"))
    return res


# --------------------------------------------------------------------------- pooling and printing
def pooled(df: pd.DataFrame, zones: pd.DataFrame) -> dict[str, Any]:
    """Pooled figures over all successful worlds (sums of cells, not means of worlds)."""
    out: dict[str, Any] = {}
    for label, g in df.groupby("interval", sort=False):
        out[label] = {
            "pixel_r2": 1.0 - g["_sse"].sum() / g["_sst"].sum(),
            "analyst_r2_mean": float(g["analyst_r2"].mean()),
            "pixel_picp": g["_inside"].sum() / g["land_cells"].sum(),
            "picp_dissimilar": g["_far_inside"].sum() / max(g["_far_n"].sum(), 1),
            "rms_z": math.sqrt(g["_z2"].sum() / g["_zn"].sum()),
            "true_error_rms": math.sqrt(float(np.mean(g["true_error"] ** 2))),
            "cv_rmse_rms": math.sqrt(float(np.mean(g["cv_rmse"] ** 2))),
            "cv_ratio": math.sqrt(float(np.mean(g["cv_rmse"] ** 2)))
            / math.sqrt(float(np.mean(g["true_error"] ** 2))),
            "cv_ratio_worlds_within_10pct": int(((g["cv_ratio"] - 1).abs() <= 0.1).sum()),
            "n_worlds": len(g),
        }
        if "cv_rmse_profiles" in g:  # suites run before the area weighting lack it
            out[label]["cv_ratio_profiles"] = math.sqrt(
                float(np.mean(g["cv_rmse_profiles"] ** 2))
            ) / math.sqrt(float(np.mean(g["true_error"] ** 2)))
            out[label]["cv_ratio_profiles_worlds_within_10pct"] = int(
                ((g["cv_ratio_profiles"] - 1).abs() <= 0.1).sum()
            )
        if "cv_rmse_lower" in g and g["cv_rmse_lower"].notna().any():
            # worlds whose true error lies in the CV RMSE's 90 % range (nominal: 90 %)
            out[label]["cv_range_holds_true"] = int(
                (
                    (g["cv_rmse_lower"] <= g["true_error"])
                    & (g["true_error"] <= g["cv_rmse_upper"])
                ).sum()
            )
    allz = zones[zones["zone"] == "all_zones"]
    single = zones[zones["zone"] != "all_zones"]
    out["zones"] = {
        "range_coverage": float(zones["inside"].mean()),
        "n_cells": len(zones),
        "median_half_width": float(zones["half_width"].median()),
        "max_abs_error_all_zones": float(allz["rel_error"].abs().max()),
        "max_abs_error_single_zone": float(single["rel_error"].abs().max()),
        "mean_abs_error_all_zones": float(allz["rel_error"].abs().mean()),
    }
    return out


WORST = {  # figure -> distance from its target (larger is worse)
    "pixel_picp": lambda v: abs(v - 0.90),
    "picp_dissimilar": lambda v: max(0.80 - v, 0.0) + 1e-9 * (1 - v),
    "rms_z": lambda v: abs(math.log(v)),
    "cv_ratio": lambda v: abs(v - 1.0),
    "r2_minus_analyst": lambda v: -v,
}


def worst_worlds(df: pd.DataFrame, zones: pd.DataFrame) -> dict[str, Any]:
    out = {}
    for fig, dist in WORST.items():
        if fig not in df or df[fig].isna().all():
            continue
        i = df[fig].map(dist).idxmax()
        out[fig] = {
            "world": df.at[i, "world"],
            "interval": df.at[i, "interval"],
            "value": df.at[i, fig],
        }
    per = zones.groupby("world").agg(
        range_coverage=("inside", "mean"), median_half_width=("half_width", "median")
    )
    out["range_coverage"] = {
        "world": per["range_coverage"].idxmin(),
        "value": per["range_coverage"].min(),
    }
    i = zones["rel_error"].abs().idxmax()
    out["zone_error"] = {
        "world": zones.at[i, "world"],
        "zone": zones.at[i, "zone"],
        "interval": zones.at[i, "interval"],
        "value": zones.at[i, "rel_error"],
    }
    return out


def markdown(out: Path) -> str:
    """Markdown tables of a finished suite (per world, pooled, worst, failures)."""
    summary = json.loads((out / "summary.json").read_text())
    lines = []
    worlds = summary["worlds"]
    lines.append(
        "| world | grid | nodata | profiles | residual range km | residual share (realised) | run s | status |"
    )
    lines.append("|---|---|---|---|---|---|---|---|")
    for w in worlds:
        sp, sm = w["spec"], w.get("summary") or {}
        status = "ok" if w["ok"] else "failed"
        lines.append(
            f"| {w['world']} | {w['grid']} | {sp['nodata']} | {sm.get('n_profiles', '')} | "
            f"{sp['residual_range_m'] / 1000:g} | {sm.get('residual_share_realised', '')} | "
            f"{w.get('run_s') or 0:.0f} | {status} |"
        )
    if (out / "results.csv").exists():
        df = pd.read_csv(out / "results.csv")
        lines += [
            "",
            "| world | interval | pixel R² | analyst R² | PICP | PICP dissimilar | RMS z | "
            "true error | CV RMSE | CV ratio | CV PICP | CV ratio at the profiles |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in df.itertuples():
            plain = getattr(r, "cv_ratio_profiles", float("nan"))
            lines.append(
                f"| {r.world} | {r.interval} | {r.pixel_r2:.3f} | {r.analyst_r2:.3f} | "
                f"{r.pixel_picp:.3f} | {r.picp_dissimilar:.3f} | {r.rms_z:.2f} | "
                f"{r.true_error:.2f} | {r.cv_rmse:.2f} | {r.cv_ratio:.2f} | {r.cv_picp:.2f} | "
                f"{plain:.2f} |"
            )
        from suite_targets import read_zones  # a sibling script; older suites read alike

        z = read_zones(out)
        per = z.groupby("world").agg(
            coverage=("inside", "mean"),
            half=("half_width", "median"),
            worst=("rel_error", lambda v: v.abs().max()),
        )
        allz = z[z["zone"] == "all_zones"].pivot(
            index="world", columns="interval", values="rel_error"
        )
        allz = allz[[f"{a}-{b}" for a, b in INTERVALS if f"{a}-{b}" in allz.columns]]
        lines += [
            "",
            "| world | range coverage | median half-width | max abs zone error | "
            + " | ".join(f"all zones error {c}" for c in allz.columns)
            + " |",
            "|---|---|---|---|" + "---|" * len(allz.columns),
        ]
        for w_, r in per.iterrows():
            errs = " | ".join(f"{100 * allz.loc[w_, c]:+.1f} %" for c in allz.columns)
            lines.append(
                f"| {w_} | {r.coverage:.2f} | {100 * r.half:.1f} % | {100 * r.worst:.1f} % | {errs} |"
            )
        p = summary["pooled"]
        lines += [
            "",
            "| pooled | pixel R² | analyst R² (mean) | PICP | PICP dissimilar | RMS z | CV ratio "
            "| worlds with CV ratio 0.9-1.1 | the same at the profiles (unweighted) "
            "| worlds with the true error in the CV RMSE's 90 % range |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for k, v in p.items():
            if k == "zones":
                continue
            plain = (
                f"{v['cv_ratio_profiles']:.2f}, {v['cv_ratio_profiles_worlds_within_10pct']} "
                f"of {v['n_worlds']}"
                if "cv_ratio_profiles" in v
                else "—"
            )
            lines.append(
                f"| {k} | {v['pixel_r2']:.3f} | {v['analyst_r2_mean']:.3f} | {v['pixel_picp']:.3f} | "
                f"{v['picp_dissimilar']:.3f} | {v['rms_z']:.2f} | {v['cv_ratio']:.2f} | "
                f"{v['cv_ratio_worlds_within_10pct']} of {v['n_worlds']} | {plain} | "
                + (
                    f"{v['cv_range_holds_true']} of {v['n_worlds']} |"
                    if "cv_range_holds_true" in v
                    else "— |"
                )
            )
        zp = p["zones"]
        lines += [
            "",
            f"Zones (pooled over {zp['n_cells']} zone x interval cells): range coverage "
            f"{zp['range_coverage']:.3f}, median half-width {100 * zp['median_half_width']:.1f} %, "
            f"largest all-zones error {100 * zp['max_abs_error_all_zones']:.1f} %, largest "
            f"single-zone error {100 * zp['max_abs_error_single_zone']:.1f} %.",
        ]
    if summary["failures"]:
        lines += ["", "| failed world | grid | error |", "|---|---|---|"]
        for f in summary["failures"]:
            lines.append(f"| {f['world']} | {f['grid']} | `{f['error']}` |")
    lines += ["", f"Wall time {summary['wall_s'] / 60:.1f} min."]
    return "\n".join(lines) + "\n"


def _changed(spec: Any, changes: list[str], parser: argparse.ArgumentParser) -> Any:
    """``spec`` with the ``FIELD=VALUE`` changes of ``--set`` (values as the field's type)."""
    import dataclasses

    # scalar fields only: the shape and the centre are tuples
    scalar = {
        f.name: type(getattr(spec, f.name))
        for f in dataclasses.fields(spec)
        if isinstance(getattr(spec, f.name), (int, float, str))
    }
    values: dict[str, Any] = {}
    for change in changes:
        name, _, text = change.partition("=")
        if name not in scalar or not text:
            parser.error(
                f"--set {change!r}: expected FIELD=VALUE with FIELD one of {sorted(scalar)}"
            )
        try:
            values[name] = scalar[name](text)
        except ValueError:
            parser.error(f"--set {change!r}: {text!r} is not a {scalar[name].__name__}")
    return dataclasses.replace(spec, **values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worlds", type=int, default=12, help="number of worlds (default 12)")
    parser.add_argument("--seed", type=int, default=2026, help="seed of the suite")
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default: a temp folder)"
    )
    parser.add_argument(
        "--workflow",
        type=Path,
        default=SAMPLE_YAML,
        help="workflow template (default workflows/sample.yaml, one layered depth model; "
        "workflows/sample_per_interval.yaml: one model per interval)",
    )
    parser.add_argument("--jobs", type=int, default=1, help="worlds run at the same time")
    parser.add_argument("--only", nargs="+", default=None, metavar="NAME", help="only these worlds")
    parser.add_argument("--projected-only", action="store_true", help="skip geographic worlds")
    parser.add_argument("--no-analyst", action="store_true", help="skip the RF + kriging baseline")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per socmap run")
    parser.add_argument(
        "--reuse-runs",
        action="store_true",
        help="take the runs already in OUT as they are, without calling socmap (to gather "
        "worlds run in separate folders); by default socmap runs (and resumes)",
    )
    parser.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="FIELD=VALUE",
        help="change a field of every world's WorldSpec (e.g. 'warm_bias=0 tail_keep=1': "
        "profiles drawn evenly over the land, the cold tail included)",
    )
    parser.add_argument(
        "--markdown", action="store_true", help="only print the tables of a finished --out"
    )
    args = parser.parse_args(argv)
    if args.markdown:
        if args.out is None:
            parser.error("--markdown needs --out")
        print(markdown(args.out), end="")
        return 0

    from mapping.synthetic.worlds import suite_specs

    out = args.out or Path(tempfile.mkdtemp(prefix="world_suite_"))
    out.mkdir(parents=True, exist_ok=True)
    specs = suite_specs(args.worlds, args.seed)
    if args.set:
        specs = [_changed(s, args.set, parser) for s in specs]
    if args.only:
        specs = [s for s in specs if s.name in set(args.only)]
    if args.projected_only:
        specs = [s for s in specs if s.grid == "projected"]
    print(f"{len(specs)} worlds -> {out}", flush=True)
    t0 = time.perf_counter()
    results = []
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as pool:
            futs = [
                pool.submit(
                    one_world,
                    s,
                    out,
                    args.timeout,
                    not args.no_analyst,
                    args.reuse_runs,
                    args.workflow,
                )
                for s in specs
            ]
            for f in futs:
                results.append(f.result())
                _progress(results[-1])
    else:
        for s in specs:
            results.append(
                one_world(s, out, args.timeout, not args.no_analyst, args.reuse_runs, args.workflow)
            )
            _progress(results[-1])
    wall = time.perf_counter() - t0

    rows, zrows, failures = [], [], []
    for r in results:
        if not r.get("ok"):
            failures.append({"world": r["world"], "grid": r["grid"], "error": r["error"]})
            continue
        for row in r["rows"]:
            row.update(world=r["world"], grid=r["grid"])
            row["analyst_r2"] = r.get("analyst_r2", {}).get(row["interval"], np.nan)
            rows.append(row)
        for z in r["zones"]:
            zrows.append({"world": r["world"], **z})
    summary: dict[str, Any] = {
        "command": "python benchmarks/world_suite.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "wall_s": wall,
        "worlds": [
            {
                k: r.get(k)
                for k in (
                    "world",
                    "grid",
                    "ok",
                    "error",
                    "generate_s",
                    "run_s",
                    "analyst_s",
                    "analyst_r2",
                    "spec",
                    "summary",
                )
            }
            for r in results
        ],
        "failures": failures,
    }
    if rows:
        df = pd.DataFrame(rows)
        df["r2_minus_analyst"] = df["pixel_r2"] - df["analyst_r2"]
        zones = pd.DataFrame(zrows)
        public = [c for c in df.columns if not c.startswith("_")]
        first = ["world", "grid", "interval"]
        df[first + [c for c in public if c not in first]].to_csv(out / "results.csv", index=False)
        zones.to_csv(out / "zones.csv", index=False)
        summary["pooled"] = pooled(df, zones)
        summary["worst"] = worst_worlds(df, zones)
        _print_tables(df, zones, summary)
    for f in failures:
        print(f"FAILED {f['world']} ({f['grid']}): {f['error']}")
    print(f"wall time {wall / 60:.1f} min; outputs in {out}")
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=_json))
    (out / "tables.md").write_text(markdown(out))
    return 0


def _json(o: Any) -> Any:
    if isinstance(o, (np.integer, np.bool_)):
        return o.item()
    if isinstance(o, np.floating):
        return float(o)
    return str(o)


def _progress(r: dict[str, Any]) -> None:
    state = "ok" if r.get("ok") else f"FAILED: {r.get('error')}"
    print(f"[{r['world']}] {r['grid']}: run {r.get('run_s', 0):.0f} s, {state}", flush=True)


def _print_tables(df: pd.DataFrame, zones: pd.DataFrame, summary: dict[str, Any]) -> None:
    cols = [
        "pixel_r2",
        "analyst_r2",
        "pixel_picp",
        "picp_dissimilar",
        "rms_z",
        "true_error",
        "cv_rmse",
        "cv_ratio",
        *(["cv_ratio_profiles"] if "cv_ratio_profiles" in df else []),
    ]
    with pd.option_context("display.width", 200, "display.max_rows", 500):
        print(df.set_index(["world", "interval"])[cols].round(3).to_string())
        per = zones.groupby("world").agg(
            range_coverage=("inside", "mean"),
            median_half_width=("half_width", "median"),
            max_abs_error=("rel_error", lambda s: s.abs().max()),
        )
        allz = zones[zones["zone"] == "all_zones"].pivot(
            index="world", columns="interval", values="rel_error"
        )
        print(per.join(allz.add_prefix("all_zones_err_")).round(3).to_string())
        print(json.dumps(summary["pooled"], indent=1, default=_json))


if __name__ == "__main__":
    sys.exit(main())
