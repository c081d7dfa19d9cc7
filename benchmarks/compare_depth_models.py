"""Per-interval models against depth-consistent models on the world suite (known truth).

    python benchmarks/compare_depth_models.py OUT_DIR 0 1 2 ... 11

For each world of ``mapping.synthetic.worlds.suite_specs(12, seed=2026)`` given by its
index, fits today's per-interval regression kriging (one random forest + kriging of log
stocks per cumulative interval), the layered depth model (:mod:`mapping.depth_model`) with
and without a 0-30 cm anchor, the shallow map times chained depth ratios, and an
exponential depth function per profile, and writes pixel R², zone-total errors and the
error in cells with deep organic deposits to ``OUT_DIR/<world>.json``. Every forest has
100 trees. The numbers are in ``docs/depth_model.md``. Needs the world suite
(``mapping/synthetic/worlds.py``).
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyproj

import mapping.depth_model as dm
from mapping.depths import compute_stocks
from mapping.exceptions import ModelError
from mapping.models import OrdinaryKriging, QuantileRandomForest, RegressionKriging
from mapping.synthetic import CRS
from mapping.synthetic.worlds import build_world, suite_specs

warnings.filterwarnings("ignore")
COVS = ["elevation", "maat", "precipitation", "ndvi", "twi", "landcover"]
DEPTHS = [30, 100, 200, 300]
EXTRA = [(0, 50), (0, 150)]  # any-depth check


def qrf(seed, coords=True):
    kw = {} if coords else {"coord_columns": None}
    return QuantileRandomForest(
        n_estimators=100, categorical_features=["landcover"], random_state=seed, n_jobs=1, **kw
    )


def rk(seed, log):
    return RegressionKriging(
        trend=qrf(seed),
        kriging=OrdinaryKriging(variogram="exponential", cutoff=300000, n_lags=30, n_neighbors=32),
        log_transform=log,
    )


class TrendOnly:
    """Fallback when no variogram can be fitted: QRF trend, OOB residual variance."""

    def __init__(self, seed, log):
        self.seed, self.log = seed, log

    def fit(self, X, y):
        t = np.log(y) if self.log else np.asarray(y, float)
        self.m = qrf(self.seed).fit(X, t)
        self.s2 = float(np.var(t - self.m.oob_prediction_))
        return self

    def predict(self, X, return_std=False):
        mu = self.m.predict(X)
        s2 = np.full(len(mu), self.s2)
        if self.log:
            mean = np.exp(mu + s2 / 2)
            return (mean, mean * np.sqrt(np.expm1(s2))) if return_std else mean
        return (mu, np.sqrt(s2)) if return_std else mu


def fit_rk(seed, log, X, y):
    try:
        return rk(seed, log).fit(X, y)
    except ModelError:
        print("  variogram fit failed: trend only", flush=True)
        return TrendOnly(seed, log).fit(X, y)


def cell_table(w):
    rows, cols = np.nonzero(w.mask)
    t = w.transform
    cx = t.c + (cols + 0.5) * t.a
    cy = t.f + (rows + 0.5) * t.e
    if w.crs != CRS:
        cx, cy = pyproj.Transformer.from_crs(w.crs, CRS, always_xy=True).transform(cx, cy)
    X = pd.DataFrame({"x": cx, "y": cy})
    for c in COVS:
        X[c] = w.covariates[c][rows, cols]
    X["landcover"] = X["landcover"].astype("int64")
    return rows, cols, X


def site_table(w, stocks):
    s = stocks.drop_duplicates("profile_id")[["profile_id", "lon", "lat"]].reset_index(drop=True)
    if w.crs == CRS:
        px, py = pyproj.Transformer.from_crs("EPSG:4326", CRS, always_xy=True).transform(
            s["lon"].to_numpy(), s["lat"].to_numpy()
        )
        gx, gy = px, py
    else:
        gx, gy = s["lon"].to_numpy(), s["lat"].to_numpy()
        px, py = pyproj.Transformer.from_crs("EPSG:4326", CRS, always_xy=True).transform(gx, gy)
    t = w.transform
    col = np.floor((gx - t.c) / t.a).astype(int)
    row = np.floor((gy - t.f) / t.e).astype(int)
    ok = (row >= 0) & (row < w.shape[0]) & (col >= 0) & (col < w.shape[1])
    ok[ok] = w.mask[row[ok], col[ok]]
    s = s.assign(x=px, y=py)[ok].reset_index(drop=True)
    row, col = row[ok], col[ok]
    for c in COVS:
        s[c] = w.covariates[c][row, col]
    s["landcover"] = s["landcover"].astype("int64")
    s["row"], s["col"] = row, col
    return s


def fit_exponential(layers):
    """Per profile (ln rho0, ln k) minimising sum th (ln ybar - ln mean_exp)^2 over a k grid."""
    pid = pd.factorize(layers["profile_id"])[0]
    a = layers["top_cm"].to_numpy(float)
    b = layers["bottom_cm"].to_numpy(float)
    y = np.log(layers["density_kg_m3"].to_numpy(float))
    th = b - a
    kg = np.exp(np.linspace(np.log(15.0), np.log(3000.0), 240))
    m = np.log(kg[None] / th[:, None] * (np.exp(-a[:, None] / kg) - np.exp(-b[:, None] / kg)))
    r = y[:, None] - m  # ln rho0 estimate per row and k
    n = pid.max() + 1
    wsum = np.bincount(pid, weights=th, minlength=n)
    lr = np.stack([np.bincount(pid, weights=th * r[:, j], minlength=n) for j in range(len(kg))], 1)
    lr /= wsum[:, None]
    sse = np.stack(
        [
            np.bincount(pid, weights=th * (r[:, j] - lr[pid, j]) ** 2, minlength=n)
            for j in range(len(kg))
        ],
        1,
    )
    best = sse.argmin(1)
    ids = pd.unique(layers["profile_id"])
    reach = layers.groupby("profile_id", sort=False)["bottom_cm"].max().reindex(ids).to_numpy()
    return pd.DataFrame(
        {
            "profile_id": ids,
            "ln_rho0": lr[np.arange(n), best],
            "ln_k": np.log(kg[best]),
            "reach": reach,
        }
    )


def run(idx, out_dir):
    spec = suite_specs(12, 2026)[idx]
    t0 = time.time()
    w = build_world(spec)
    seed = spec.seed % 100000
    fine = dm.layer_intervals(dm.DEFAULT_BREAKS)
    cum = [(0.0, float(d)) for d in DEPTHS]
    res = compute_stocks(w.profiles, cum + fine, source=spec.name, on_invalid="skip")
    st = res.stocks
    sites = site_table(w, st)
    st = st.merge(sites, on=["profile_id", "lon", "lat"], how="inner")
    rows, cols, Xg = cell_table(w)
    area = w.cell_area_m2[rows, cols]
    zones = w.zones[rows, cols]
    deposits = w.deposits[rows, cols]
    truth = {d: w.true_stock(0, d)[rows, cols] for d in DEPTHS}
    for a, b in EXTRA:
        truth[b] = w.true_stock(a, b)[rows, cols]
    feats = ["x", "y", *COVS]
    t_build = time.time() - t0

    def cumrows(d):
        return st[(st["top_cm"] == 0) & (st["bottom_cm"] == d)].reset_index(drop=True)

    preds: dict[str, dict[int, np.ndarray]] = {}
    timing = {}

    # --- today's per-interval models
    t = time.time()
    pi = {}
    for d in DEPTHS:
        r = cumrows(d)
        m = fit_rk(seed, True, r[feats], r["soc_stock_kg_m2"].to_numpy())
        pi[d] = m.predict(Xg[feats])
    preds["per_interval"] = pi
    timing["per_interval"] = time.time() - t

    # --- (a) layered: fine layers, depth as covariate
    for name, anchor in [("layered", None), ("layered_anchor30", 30.0)]:
        t = time.time()
        breaks = dm.DEFAULT_BREAKS
        lay = st[
            st.set_index(["top_cm", "bottom_cm"]).index.isin(dm.layer_intervals(breaks))
        ].reset_index(drop=True)
        lay = lay[lay["soc_stock_kg_m2"] > 0]
        model = dm.LayeredDepthModel(
            trend=qrf(seed, coords=False),
            breaks=breaks,
            cutoff=300000,
            n_lags=30,
            random_state=seed,
            anchor_cm=anchor,
        )
        model.fit(
            lay[[*feats, "top_cm", "bottom_cm"]], lay["soc_stock_kg_m2"], groups=lay["profile_id"]
        )
        ivs = [(0.0, float(d)) for d in DEPTHS] + ([(float(a), float(b)) for a, b in EXTRA])
        mean = model.predict_stocks(Xg[feats], ivs)
        preds[name] = {d: mean[:, i] for i, d in enumerate(DEPTHS)}
        for j, (_a, b) in enumerate(EXTRA):
            preds[name][b] = mean[:, len(DEPTHS) + j]
        timing[name] = time.time() - t

    # --- (b) shallow map x chained depth ratios
    t = time.time()
    ratio = {30: pi[30]}
    logr = np.zeros(len(Xg))
    prev = 30
    wide = st[st["top_cm"] == 0].pivot_table(
        index="profile_id", columns="bottom_cm", values="soc_stock_kg_m2"
    )
    for d in DEPTHS[1:]:
        ok = wide[[prev, d]].dropna()
        ok = ok[(ok[prev] > 0)]
        lr_ = np.log(ok[d] / ok[prev])
        r = sites.set_index("profile_id").loc[ok.index].reset_index()
        m = fit_rk(seed, False, r[feats], lr_.to_numpy())
        mu, sd = m.predict(Xg[feats], return_std=True)
        logr = logr + np.maximum(mu, 0.0) + 0.5 * sd**2
        ratio[d] = pi[30] * np.exp(logr)
        prev = d
    preds["ratio"] = ratio
    timing["ratio"] = time.time() - t

    # --- (c) exponential depth function per profile
    t = time.time()
    lay = st[st.set_index(["top_cm", "bottom_cm"]).index.isin(fine)].reset_index(drop=True)
    lay = lay[lay["soc_stock_kg_m2"] > 0].assign(
        density_kg_m3=lambda f: f["soc_stock_kg_m2"] * 100 / (f["bottom_cm"] - f["top_cm"])
    )
    par = fit_exponential(lay).merge(sites, on="profile_id")
    m0 = fit_rk(seed, False, par[feats], par["ln_rho0"].to_numpy())
    mu0, sd0 = m0.predict(Xg[feats], return_std=True)
    deep = par[par["reach"] >= 100]
    mk = fit_rk(seed, False, deep[feats], deep["ln_k"].to_numpy())
    k = np.exp(mk.predict(Xg[feats]))
    rho0 = np.exp(mu0 + 0.5 * sd0**2)
    preds["exponential"] = {d: rho0 * k / 100 * -np.expm1(-d / k) for d in DEPTHS}
    timing["exponential"] = time.time() - t

    # --- figures
    out = {
        "world": spec.name,
        "grid": spec.grid,
        "n_profiles": int(sites.shape[0]),
        "reaching": {int(d): len(cumrows(d)) for d in DEPTHS},
        "deposit_share_land": float(deposits.mean()),
        "deposit_share_deep_profiles": float(
            w.deposits[
                sites.set_index("profile_id").loc[cumrows(300)["profile_id"], "row"].to_numpy(),
                sites.set_index("profile_id").loc[cumrows(300)["profile_id"], "col"].to_numpy(),
            ].mean()
        ),
        "build_s": round(t_build, 1),
        "timing_s": {k_: round(v, 1) for k_, v in timing.items()},
        "methods": {},
    }
    for name, p in preds.items():
        mres = {"r2": {}, "zone_err": {}, "deposit_err": {}, "monotone_violations": 0}
        for d, m in p.items():
            tr = truth[d]
            mres["r2"][int(d)] = float(1 - np.sum((m - tr) ** 2) / np.sum((tr - tr.mean()) ** 2))
            if d in DEPTHS:
                ze = {}
                for z in (1, 2, 3, 4):
                    sel = zones == z
                    if sel.sum():
                        ze[z] = float(np.sum(m[sel] * area[sel]) / np.sum(tr[sel] * area[sel]) - 1)
                sel = zones > 0
                ze["all"] = float(np.sum(m[sel] * area[sel]) / np.sum(tr[sel] * area[sel]) - 1)
                mres["zone_err"][int(d)] = ze
                mres["deposit_err"][int(d)] = float(
                    np.sum(m[deposits] * area[deposits]) / np.sum(tr[deposits] * area[deposits]) - 1
                )
        stack = np.stack([p[d] for d in DEPTHS])
        mres["monotone_violations"] = int(np.sum(np.diff(stack, axis=0) < 0))
        out["methods"][name] = mres
    out["total_s"] = round(time.time() - t0, 1)
    with open(Path(out_dir) / f"{spec.name}.json", "w") as f:
        json.dump(out, f, indent=1)
    print(spec.name, out["total_s"], {k_: v["r2"] for k_, v in out["methods"].items()}, flush=True)


if __name__ == "__main__":
    Path(sys.argv[1]).mkdir(parents=True, exist_ok=True)
    for i in sys.argv[2:]:
        run(int(i), sys.argv[1])
