"""Per-cell error calibration and cross-validation on worlds with known truth.

Run: ``python benchmarks/bench_calibration.py [--worlds N] [--out DIR]`` (about 2 minutes
per world on one core; ``--out`` caches each world's fits so a rerun only re-analyses).

Twelve worlds from ``mapping.synthetic`` (96 x 96 cells of 5 km, EASE-Grid 2.0 North) with
different seeds, residual sills (0.05-0.15 in ln stock) and ranges (20-150 km), a hard
threshold in the true SOC (ln density + 0.3-1.0 where it is cold AND wet/low-lying; one
world without), clustered sites (``sample_sites``) thinned preferentially (warm land
dense, cold land sparse, the coldest 5-15 % of the land never sampled: its covariates lie
beyond the sampled range), 188-1033 profiles at 0-30 cm and 42-192 at 0-300 cm, and
observed stocks = true cell stock x lognormal profile noise (sd 0.16 in ln). Per world and
interval the workflow's model (regression kriging, random-forest trend on ln stock,
exponential residual variogram, 32 neighbours; 100 trees here) is fitted, predicted on
every land cell and cross-validated with kNNDM (5 folds) in geographical and in feature
space; the area of applicability (``mapping.aoa``) gives the DI of cells and CV points.

Printed per interval, pooled over the worlds (mean, min, max over worlds): pixel PICP of
the 90 % interval, PICP in the 10 % most dissimilar cells, RMS of (mean - truth) / std
(kg C m-2, lognormal std), before (the model's variance) and after
``mapping.calibration.fit_error_model`` fitted on each CV's out-of-fold log errors; the CV
ratio (CV RMSE / true error of a new observation, ``../shared/VALIDATION.md``); and the
regional error of the zone totals: the RMS of the true log errors of the four zones'
totals against ``regional_error_sd`` from the five folds, pooled over intervals, and on
spatial patches.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import norm
from sklearn.base import clone

from mapping.aoa import AreaOfApplicability
from mapping.calibration import fit_error_model, regional_error_sd, spatial_groups
from mapping.models import OrdinaryKriging, QuantileRandomForest, RegressionKriging
from mapping.synthetic import (
    ResidualModel,
    TruthParameters,
    interval_stock,
    make_world,
    sample_sites,
)
from mapping.validation import KNNDM

INTERVALS = ((0, 30), (0, 100), (0, 200), (0, 300))
COVS = ["elevation", "maat", "precipitation", "ndvi", "twi", "landcover"]
FEATS = ["x", "y", *COVS]
NOISE_SD = 0.16
Z90 = norm.ppf(0.95)
SETTINGS = [
    dict(seed=101, n=700, psill=0.06, range=30_000, boost=0.7, cold_q=0.12),
    dict(seed=202, n=1200, psill=0.12, range=80_000, boost=0.5, cold_q=0.10),
    dict(seed=303, n=500, psill=0.09, range=150_000, boost=0.9, cold_q=0.15),
    dict(seed=404, n=2000, psill=0.05, range=20_000, boost=0.6, cold_q=0.08),
    dict(seed=505, n=900, psill=0.15, range=50_000, boost=0.8, cold_q=0.12),
    dict(seed=606, n=1500, psill=0.08, range=120_000, boost=0.4, cold_q=0.10),
    dict(seed=707, n=600, psill=0.10, range=60_000, boost=1.0, cold_q=0.15),
    dict(seed=808, n=1000, psill=0.07, range=100_000, boost=0.7, cold_q=0.12),
    dict(seed=909, n=800, psill=0.09, range=40_000, boost=0.0, cold_q=0.05),
    dict(seed=1010, n=1800, psill=0.11, range=90_000, boost=0.5, cold_q=0.08),
    dict(seed=1111, n=400, psill=0.06, range=70_000, boost=0.6, cold_q=0.10),
    dict(seed=1212, n=1100, psill=0.13, range=25_000, boost=0.3, cold_q=0.12),
]


def build(s: dict) -> dict:
    """Covariates, truth and profiles of one world (see the module docstring)."""
    p = TruthParameters(residual=ResidualModel(psill=s["psill"], range=s["range"]))
    w = make_world(s["seed"], shape=(96, 96), resolution=5000.0, params=p)
    land = w.mask
    maat, twi, elev = w.covariates["maat"], w.covariates["twi"], w.covariates["elevation"]
    cold = maat < np.nanpercentile(maat[land], 35)
    low = (twi > np.nanpercentile(twi[land], 55)) & (elev < np.nanpercentile(elev[land], 60))
    rho0 = w.surface_density * np.exp(np.where(cold & low, s["boost"], 0.0))
    k = w.scale_depth
    yv, xv = w.coords()
    xx, yy = np.meshgrid(xv, yv)
    grid = pd.DataFrame({"x": xx[land], "y": yy[land], **{c: w.covariates[c][land] for c in COVS}})
    truth = {f"{a}-{b}": interval_stock(a, b, rho0, k)[land] for a, b in INTERVALS}
    sites = sample_sites(w, s["n"], seed=s["seed"])
    rng = np.random.default_rng(s["seed"] + 1)
    m = maat[sites["row"], sites["col"]]
    keep_p = np.clip(1 / (1 + np.exp(-(m - np.nanpercentile(maat[land], 45)) / 1.5)), 0.08, 1)
    keep = (rng.uniform(size=len(m)) < keep_p) & (
        m > np.nanpercentile(maat[land], 100 * s["cold_q"])
    )
    sites = sites[keep].reset_index(drop=True)
    r, c = sites["row"].to_numpy(), sites["col"].to_numpy()
    prof = {"x": sites["x"], "y": sites["y"], **{n: w.covariates[n][r, c] for n in COVS}}
    prof["bottom_cm"] = sites["bottom_cm"].to_numpy()
    eta = rng.normal(-0.5 * NOISE_SD**2, NOISE_SD, len(sites))
    for a, b in INTERVALS:
        t = interval_stock(a, b, rho0[r, c], k[r, c])
        prof[f"true_{a}-{b}"] = t
        prof[f"obs_{a}-{b}"] = t * np.exp(eta)
    prof = pd.DataFrame(prof).sample(frac=1.0, random_state=s["seed"]).reset_index(drop=True)
    return {
        "name": f"w{s['seed']}",
        "grid": grid,
        "truth": truth,
        "sites": prof,
        "zones": w.zones[land],
    }


def model(seed: int) -> RegressionKriging:
    trend = QuantileRandomForest(
        n_estimators=100, random_state=seed, categorical_features=["landcover"]
    )
    return RegressionKriging(
        trend=trend,
        kriging=OrdinaryKriging(variogram="exponential", n_neighbors=32, cutoff=300_000, n_lags=30),
        log_transform=True,
    )


def fit_world(s: dict, cache: Path) -> None:
    """Fit, cross-validate and predict every interval of a world into ``cache``."""
    w = build(s)
    rng = np.random.default_rng(s["seed"])
    pp = w["grid"].iloc[rng.choice(len(w["grid"]), 2000, replace=False)].reset_index(drop=True)
    for iv, truth in w["truth"].items():
        path = cache / f"{w['name']}_{iv}.npz"
        if path.exists():
            continue
        t0 = time.time()
        d = w["sites"][w["sites"]["bottom_cm"] >= int(iv.split("-")[1])].reset_index(drop=True)
        X, y = d[FEATS], d[f"obs_{iv}"].to_numpy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            full = model(s["seed"]).fit(X, y)
            c = full.predict_components(w["grid"][FEATS])
        out = {
            "grid_mu": c["trend"] + c["residual"],
            "grid_s2": c["trend_var"] + c["krige_var"],
            "grid_truth": truth,
            "obs": y,
            "true_at_sites": d[f"true_{iv}"].to_numpy(),
            "x": d["x"].to_numpy(),
            "y": d["y"].to_numpy(),
            "zones": w["zones"],
        }
        for space in ("geographical", "feature"):
            points = pp if space == "feature" else pp[["x", "y"]].to_numpy()
            folds = (
                KNNDM(
                    5,
                    prediction_points=points,
                    space=space,
                    random_state=s["seed"],
                    categorical_features=["landcover"],
                )
                .assign(X)
                .folds
            )
            mu, s2 = np.full(len(y), np.nan), np.full(len(y), np.nan)
            for k in range(5):
                te = folds == k
                if te.any():
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        cc = clone(full).fit(X[~te], y[~te]).predict_components(X[te])
                    mu[te], s2[te] = cc["trend"] + cc["residual"], cc["trend_var"] + cc["krige_var"]
            aoa = AreaOfApplicability(categorical_features=["landcover"]).fit(
                X, weights=full.trend_, folds=folds
            )
            if "grid_di" not in out:
                out["grid_di"] = aoa.predict(w["grid"][FEATS])[0]
            tag = space[:4]
            out.update(
                {f"{tag}_fold": folds, f"{tag}_mu": mu, f"{tag}_s2": s2, f"{tag}_di": aoa.train_di_}
            )
        np.savez(path, **out)
        print(f"  {w['name']} {iv} cm: {len(d)} profiles, {time.time() - t0:.0f} s", flush=True)


def pixel_scores(d: dict, v: np.ndarray) -> dict:
    mu, s2, truth, di = d["grid_mu"], d["grid_s2"], d["grid_truth"], d["grid_di"]
    sd = np.sqrt(v)
    inside = (truth >= np.exp(mu - Z90 * sd)) & (truth <= np.exp(mu + Z90 * sd))
    mean = np.exp(mu + 0.5 * s2)
    z = (mean - truth) / (mean * np.sqrt(np.expm1(v)))
    top = di >= np.nanquantile(di, 0.9)
    return {"picp": inside.mean(), "picp_di10": inside[top].mean(), "rms_z": np.sqrt(np.mean(z**2))}


def cv_ratio(d: dict, tag: str) -> float:
    pred = np.exp(d[f"{tag}_mu"] + 0.5 * d[f"{tag}_s2"])
    ok = np.isfinite(pred)
    mean = np.exp(d["grid_mu"] + 0.5 * d["grid_s2"])
    true_err = np.sqrt(
        np.mean((mean - d["grid_truth"]) ** 2) + np.mean((d["obs"] - d["true_at_sites"]) ** 2)
    )
    return float(np.sqrt(np.mean((pred[ok] - d["obs"][ok]) ** 2)) / true_err)


def analyse(cache: Path, names: list[str]) -> None:
    rows, reg = [], []
    for name in names:
        errs: dict = {"geog": ({}, {}, {}), "feat": ({}, {}, {})}
        zone_err = {}
        for a, b in INTERVALS:
            iv = f"{a}-{b}"
            d = dict(np.load(cache / f"{name}_{iv}.npz"))
            base = {"world": name, "interval": iv}
            rows.append({**base, "variance": "model", **pixel_scores(d, d["grid_s2"])})
            for tag in ("geog", "feat"):
                e = d[f"{tag}_mu"] - np.log(d["obs"])
                em = fit_error_model(e, d[f"{tag}_s2"], d[f"{tag}_di"])
                v = em.variance(d["grid_s2"], d["grid_di"])
                rows.append(
                    {
                        **base,
                        "variance": f"calibrated ({tag})",
                        "cv_ratio": cv_ratio(d, tag),
                        **pixel_scores(d, v),
                    }
                )
                errs[tag][0][iv] = e
                errs[tag][1][iv] = d[f"{tag}_fold"]
                errs[tag][2][iv] = spatial_groups(
                    np.column_stack([d["x"], d["y"]]), d[f"{tag}_fold"]
                )
            mean = np.exp(d["grid_mu"] + 0.5 * d["grid_s2"])
            for z in (1, 2, 3, 4):
                sel = d["zones"] == z
                if sel.sum() >= 50:
                    zone_err[(iv, z)] = np.log(mean[sel].sum() / d["grid_truth"][sel].sum())
        for tag, (E, F, G) in errs.items():
            est = {
                "folds": regional_error_sd(E, F, pool=False),
                "folds, pooled": regional_error_sd(E, F, pool=True),
                "patches": regional_error_sd(E, G, pool=False),
            }
            for (iv, z), te in zone_err.items():
                reg.append(
                    {
                        "world": name,
                        "cv": tag,
                        "interval": iv,
                        "zone": z,
                        "true": te,
                        **{k: v[iv] for k, v in est.items()},
                    }
                )
    df = pd.DataFrame(rows)
    pd.set_option("display.width", 200)
    pd.set_option("display.max_columns", 20)
    agg = df.groupby(["variance", "interval"])[["picp", "picp_di10", "rms_z", "cv_ratio"]]
    print("\nPixel figures per interval: mean [min, max] over the worlds")
    summary = agg.agg(["mean", "min", "max"]).round(3)
    print(summary.to_string())
    print("\nPooled over intervals and worlds:")
    print(
        df.groupby("variance")[["picp", "picp_di10", "rms_z", "cv_ratio"]]
        .mean()
        .round(3)
        .to_string()
    )
    ok = df.dropna(subset=["cv_ratio"])
    print("\nShare of world x interval with the CV ratio within 0.9-1.1:")
    print(
        ok.groupby("variance")["cv_ratio"]
        .apply(lambda r: np.mean(np.abs(r - 1) <= 0.1))
        .round(2)
        .to_string()
    )
    r = pd.DataFrame(reg)
    print("\nRegional error of zone totals (ln): RMS of the true zone errors per interval")
    print(
        r.groupby("interval")["true"].apply(lambda x: np.sqrt(np.mean(x**2))).round(3).to_string()
    )
    for tag, g in r.groupby("cv"):
        out = {}
        for c in ("folds", "folds, pooled", "patches"):
            per = g.groupby(["world", "interval"])[c].first()
            out[c] = {
                "mean tau": per.mean(),
                "sd/mean over worlds": per.std() / per.mean(),
                "tau = 0": (per == 0).mean(),
                "|true| <= 1.645 tau": np.mean(np.abs(g["true"]) <= 1.645 * g[c]),
            }
        print(f"\n{tag} folds:")
        print(pd.DataFrame(out).round(3).to_string())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worlds", type=int, default=len(SETTINGS))
    ap.add_argument("--out", type=Path, default=Path("/tmp/socmap_bench_calibration"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    names = []
    for s in SETTINGS[: args.worlds]:
        print(f"world w{s['seed']}", flush=True)
        fit_world(s, args.out)
        names.append(f"w{s['seed']}")
    analyse(args.out, names)


if __name__ == "__main__":
    main()
