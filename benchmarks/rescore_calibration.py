"""Re-fit the per-cell error model on finished world-suite runs and score it against the truth.

Run: ``python benchmarks/rescore_calibration.py RUN_ROOT [RUN_ROOT ...]`` where each
``RUN_ROOT`` holds ``worlds/<name>/`` folders of ``benchmarks/world_suite.py`` whose
``socmap run`` finished with ``prediction.calibrate`` (``models/<interval>/`` has
``cv_predictions.csv`` with ``mu``, ``var``, ``di``, and ``aoa.joblib``,
``error_model.joblib``). No model is refitted and socmap is not rerun: about a minute for
five worlds.

Every land cell's model mean and variance are recovered from the run's maps (``median =
exp(mu)``, ``mean = exp(mu + s2 / 2)``), its DI and extrapolation distance from the run's
AOA, and each variant of :func:`mapping.calibration.fit_error_model` is fitted on the
run's cross-validation table and scored like the suite (``../shared/VALIDATION.md``):
pixel PICP of the 90 % interval, PICP in the 10 % most dissimilar cells, RMS z (kg C m-2,
lognormal std), per interval pooled over the worlds, and per world x interval. The first
variant, ``as run``, recomputes the run's own error model (its maps are the check: the
printed ``max |v / v_map - 1|`` must be ~0).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
from scipy.stats import norm

sys.path.insert(0, str(Path(__file__).resolve().parent))

import world_suite as ws

from mapping.calibration import feature_variogram_slope, fit_error_model
from mapping.synthetic import COVARIATES
from mapping.synthetic.judge import most_dissimilar
from mapping.validation import observed_variance

Z90 = float(norm.ppf(0.95))


def _range_distance(T: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return np.sqrt(np.sum((T - np.clip(T, lo, hi)) ** 2, axis=1))


def load_interval(world_dir: Path, top: int, bottom: int, table: pd.DataFrame, land: np.ndarray):
    """Cells (mu, s2, v of the run, DI, xd, truth) and CV points (e, var, DI, xd, obs)."""
    run = world_dir / "run"
    label = f"{top}-{bottom}"
    aoa = joblib.load(run / "models" / label / "aoa.joblib")
    truth = ws._truth(world_dir, top, bottom)[land]
    m = {
        s: ws._read(run / "maps" / f"soc_{top}_{bottom}cm_{s}.tif")[land]
        for s in ("mean", "lower", "upper", "median")
    }
    ok = np.isfinite(truth) & np.isfinite(m["mean"])
    X = table[list(aoa.layout_.names)]
    T_train = aoa._tree.data  # the AOA's standardised, weighted training covariates
    lo, hi = T_train.min(axis=0), T_train.max(axis=0)
    T = aoa._standardise(aoa._encode(X))
    di = aoa.predict(X)[0]
    xd = np.full(len(T), np.nan)
    fin = np.isfinite(T).all(axis=1)
    xd[fin] = _range_distance(T[fin], lo, hi) / aoa.mean_distance_
    mu = np.log(m["median"])
    cells = {
        "mu": mu[ok],
        "s2": (2 * (np.log(m["mean"]) - mu))[ok],
        "v_map": (((np.log(m["upper"]) - np.log(m["lower"])) / (2 * Z90)) ** 2)[ok],
        "di": di[ok],
        "xd": xd[ok],
        "truth": truth[ok],
    }
    cv = pd.read_csv(run / "models" / label / "cv_predictions.csv").sort_values("row")
    folds = cv["fold"].to_numpy()
    cv_xd = np.full(len(cv), np.nan)
    for k in np.unique(folds[folds >= 0]):
        test, train = folds == k, (folds >= 0) & (folds != k)
        cv_xd[test] = (
            _range_distance(T_train[test], T_train[train].min(0), T_train[train].max(0))
            / aoa.mean_distance_
        )
    obs = cv["observed"].to_numpy(float)
    points = {
        "e": cv["mu"].to_numpy(float) - np.log(obs),
        "var": cv["var"].to_numpy(float),
        "di": cv["di"].to_numpy(float),
        "xd": cv_xd,
        "obs": obs,
        "T": T_train,
        "unit": aoa.mean_distance_,
    }
    return cells, points, joblib.load(run / "models" / label / "error_model.joblib")


def variants() -> dict[str, Any]:
    """Name -> function (cells, points, run's error model) -> calibrated variance of the cells."""

    def as_run(c, p, em):
        return em.variance(c["s2"], c["di"])

    def range_term(cap: float | None, slope: bool = True, cv: bool = True, hq: float = 0.2):
        def f(c, p, em):
            s = feature_variogram_slope(p["T"], np.log(p["obs"]), unit=p["unit"], h_quantile=hq)
            fitted = fit_error_model(
                p["e"],
                p["var"],
                p["di"],
                xd=p["xd"] if cv else None,
                observed_var=observed_variance(p["obs"], log=True),
                range_slope=s if slope else None,
                range_cap=cap,
            )
            return fitted.variance(c["s2"], c["di"], c["xd"])

        return f

    return {
        "as run (DI ratio only)": as_run,
        "range term (default)": range_term(8.0),
        "range term, cap 4": range_term(4.0),
        "range term, no cap": range_term(None),
        "range term, CV part only": range_term(8.0, slope=False),
        "range term, variogram part only": range_term(8.0, cv=False),
        "range term, lags to the median": range_term(8.0, hq=0.5),
    }


def score(c: dict, v: np.ndarray) -> dict[str, float]:
    e = c["mu"] - np.log(c["truth"])
    inside = np.abs(e) <= Z90 * np.sqrt(v)
    far = most_dissimilar(c["di"], 0.10)
    mean = np.exp(c["mu"] + 0.5 * c["s2"])
    z2 = ((mean - c["truth"]) / (mean * np.sqrt(np.expm1(v)))) ** 2
    return {
        "_in": inside.sum(),
        "_n": inside.size,
        "_far_in": inside[far].sum(),
        "_far_n": far.sum(),
        "_z2": z2.sum(),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("roots", nargs="+", type=Path, help="world-suite output folders")
    args = ap.parse_args(argv)
    rows = []
    for root in args.roots:
        for wd in sorted((root / "worlds").iterdir()):
            if not (wd / "run" / "maps").is_dir():
                continue
            table, land = ws._covariate_table(wd, list(COVARIATES))
            for top, bottom in ws.INTERVALS:
                if not (wd / "run" / "models" / f"{top}-{bottom}" / "aoa.joblib").exists():
                    continue
                c, p, em = load_interval(wd, top, bottom, table, land)
                check = np.nanmax(np.abs(em.variance(c["s2"], c["di"]) / c["v_map"] - 1))
                print(f"{wd.name} {top}-{bottom}: max |v / v_map - 1| = {check:.1e}", flush=True)
                for name, f in variants().items():
                    rows.append(
                        {
                            "world": wd.name,
                            "interval": f"{top}-{bottom}",
                            "variant": name,
                            **score(c, f(c, p, em)),
                        }
                    )
    df = pd.DataFrame(rows)

    def figures(g: pd.DataFrame) -> pd.Series:
        return pd.Series(
            {
                "picp": g["_in"].sum() / g["_n"].sum(),
                "picp_dissimilar": g["_far_in"].sum() / g["_far_n"].sum(),
                "rms_z": np.sqrt(g["_z2"].sum() / g["_n"].sum()),
            }
        )

    order = {iv: i for i, iv in enumerate(f"{a}-{b}" for a, b in ws.INTERVALS)}
    pd.set_option("display.width", 200)
    pooled = df.groupby(["variant", "interval"]).apply(figures, include_groups=False)
    pooled = pooled.reset_index().sort_values(
        ["variant", "interval"], key=lambda s: s.map(order) if s.name == "interval" else s
    )
    print("\nPooled over the worlds' land cells, per interval:")
    print(pooled.round(3).to_string(index=False))
    print("\nAll intervals together:")
    print(df.groupby("variant").apply(figures, include_groups=False).round(3).to_string())
    per = df.groupby(["variant", "world", "interval"]).apply(figures, include_groups=False)
    per = per.reset_index()
    print("\nWorld x interval cells meeting the targets:")
    print(
        per.groupby("variant")
        .apply(
            lambda g: pd.Series(
                {
                    "n": len(g),
                    "PICP in 0.88-0.92": int(g["picp"].between(0.88, 0.92).sum()),
                    "PICP >= 0.85": int((g["picp"] >= 0.85).sum()),
                    "dissimilar >= 0.80": int((g["picp_dissimilar"] >= 0.80).sum()),
                    "RMS z in 0.9-1.1": int(g["rms_z"].between(0.9, 1.1).sum()),
                }
            ),
            include_groups=False,
        )
        .to_string()
    )
    print("\nPer world x interval (as run -> default):")
    a = per[per["variant"] == "as run (DI ratio only)"].set_index(["world", "interval"])
    b = per[per["variant"] == "range term (default)"].set_index(["world", "interval"])
    for key in sorted(a.index, key=lambda k: (k[0], order[k[1]])):
        r0, r1 = a.loc[key], b.loc[key]
        print(
            f"| {key[0]} | {key[1]} | {r0.picp:.3f} → {r1.picp:.3f} | "
            f"{r0.picp_dissimilar:.2f} → {r1.picp_dissimilar:.2f} | "
            f"{r0.rms_z:.2f} → {r1.rms_z:.2f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
