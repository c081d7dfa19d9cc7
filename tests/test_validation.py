"""Metrics against hand calculations, splitters, the CV driver, the plot, and a known-truth world."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import wasserstein_distance
from sklearn.base import clone
from sklearn.ensemble import RandomForestRegressor
from sklearn.model_selection import BaseCrossValidator, GridSearchCV, cross_validate

from mapping.exceptions import ModelError
from mapping.models import QuantileRandomForest
from mapping.report.charts import plot_observed_vs_predicted
from mapping.splitters import _merge_clusters
from mapping.validation import (
    KNNDM,
    CVResult,
    RandomKFold,
    SpatialBlockKFold,
    cross_validate_model,
    cv_distances,
    cv_report,
    make_splitter,
    metrics_table,
)


# --------------------------------------------------------------------------- metrics
def test_metrics_match_hand_calculation():
    obs = [1.0, 2.0, 3.0, 4.0]
    pred = [1.5, 2.0, 2.0, 5.0]
    lower = [1.0, 1.9, 2.5, 3.0]
    upper = [2.0, 2.1, 3.5, 3.9]
    m = metrics_table(obs, pred, lower, upper)
    # errors 0.5, 0, -1, 1: SSE 2.25; mean obs 2.5: SST 5
    assert m["n"] == 4
    assert m["rmse"] == pytest.approx(0.75)
    assert m["mae"] == pytest.approx(0.625)
    assert m["mbe"] == pytest.approx(0.125)  # mean(pred - obs) > 0: over-prediction
    assert m["nse"] == pytest.approx(0.55)
    assert m["r2"] == pytest.approx(0.55)
    assert m["nnse"] == pytest.approx(1 / 1.45)
    # Pearson: cov sum 5.25, sum of squares 5 and 7.6875
    assert m["r2_pearson"] == pytest.approx(5.25**2 / (5 * 7.6875))
    # 4 is outside [3, 3.9]; bounds are inclusive for the other three
    assert m["picp"] == pytest.approx(0.75)
    assert m["mean_width"] == pytest.approx((1 + 0.2 + 1 + 0.9) / 4)


def test_metrics_edge_cases():
    m = metrics_table([1.0, 2.0, np.nan, 4.0], [2.0, 3.0, 1.0, np.nan])
    assert m["n"] == 2 and m["mbe"] == pytest.approx(1.0)  # pairs with a NaN are left out
    assert np.isnan(m["picp"]) and np.isnan(m["mean_width"])
    assert np.isnan(metrics_table([2.0, 2.0], [1.0, 3.0])["r2"])  # no variance in obs
    worse = metrics_table([1.0, 2.0, 3.0], [3.0, 1.0, 0.0])
    assert worse["nse"] < 0 and 0 < worse["nnse"] < 0.5
    perfect = metrics_table([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert perfect["nnse"] == 1.0 and perfect["rmse"] == 0.0


# --------------------------------------------------------------------------- splitters
def _points(n: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {"x": rng.uniform(0, 50_000, n), "y": rng.uniform(0, 50_000, n), "a": rng.uniform(size=n)}
    )


def _splitters(X: pd.DataFrame) -> list[BaseCrossValidator]:
    pp = np.column_stack([np.linspace(0, 50_000, 400), np.linspace(0, 50_000, 400)[::-1]])
    return [
        RandomKFold(4, random_state=0),
        SpatialBlockKFold(10_000, 4, random_state=0),
        KNNDM(4, prediction_points=pp, random_state=0, n_configs=20),
    ]


@pytest.mark.parametrize("which", [0, 1, 2], ids=["random", "block", "knndm"])
def test_splitters_partition_rows_and_keep_profiles_together(which):
    X = _points()
    groups = np.repeat(np.arange(100), 2)  # two depth rows per profile, same location
    X.loc[1::2, ["x", "y"]] = X.loc[0::2, ["x", "y"]].to_numpy()
    cv = _splitters(X)[which]
    assert isinstance(cv, BaseCrossValidator)
    tests = [test for _, test in cv.split(X, groups=groups)]
    assert len(tests) == cv.get_n_splits() == 4
    allrows = np.sort(np.concatenate(tests))
    np.testing.assert_array_equal(allrows, np.arange(len(X)))  # every row tested once
    for t in tests:
        assert len(t) > 0
        assert set(groups[t]).isdisjoint(set(np.setdiff1d(groups, groups[t])))


@pytest.mark.parametrize("which", [0, 1, 2], ids=["random", "block", "knndm"])
def test_splitters_work_in_cross_validate_and_grid_search(which):
    X = _points()
    y = X["a"].to_numpy() * 3
    cv = _splitters(X)[which]
    res = cross_validate(
        RandomForestRegressor(n_estimators=10, random_state=0), X[["a"]], y, cv=cv.split(X)
    )
    assert len(res["test_score"]) == 4
    model = QuantileRandomForest(n_estimators=10, random_state=0)
    grid = GridSearchCV(model, {"min_samples_leaf": [2, 5]}, cv=cv).fit(X, y)
    assert grid.best_score_ > 0.8


def test_block_kfold_keeps_blocks_whole_and_balances_counts():
    # six blocks of 10 km holding 10, 8, 6, 5, 3 and 2 points
    counts = [10, 8, 6, 5, 3, 2]
    xs = np.concatenate([np.full(c, 5_000.0 + 10_000 * i) for i, c in enumerate(counts)])
    X = pd.DataFrame({"x": xs + np.tile([0.0, 1.0], 17)[: len(xs)], "y": 0.0, "a": 0.0})
    cv = SpatialBlockKFold(10_000, 2, random_state=0)
    labels = cv.fold_labels(X)
    blocks = cv.block_ids(X)
    for b in np.unique(blocks):
        assert len(np.unique(labels[blocks == b])) == 1
    # largest first to the emptier fold: 10 | 8+6 | ... gives 17 and 17
    assert sorted(np.bincount(labels).tolist()) == [17, 17]
    with pytest.raises(ModelError, match="smaller block_size"):
        SpatialBlockKFold(100_000, 2).fold_labels(X)


def test_merge_clusters_follows_cast():
    # clusters along x: ids 0..5 with sizes 1, 1, 6, 1, 1, 2 (n = 12, k = 3 -> big if >= 4)
    sizes = [1, 1, 6, 1, 1, 2]
    clust = np.repeat(np.arange(6), sizes)
    coords = np.column_stack([clust * 10.0 + np.linspace(0, 0.1, 12), np.zeros(12)])
    folds = _merge_clusters(clust, coords, coords.mean(axis=0), np.array([1.0, 0.0]), 3)
    per_cluster = [int(folds[clust == c][0]) for c in range(6)]
    # the big cluster gets fold 0; the rest, in PC order, go round-robin to folds 1, 2
    assert per_cluster == [1, 2, 0, 1, 2, 1]


def test_cv_distances_by_hand():
    coords = np.array([[0.0, 0.0], [1.0, 0.0], [5.0, 0.0], [7.0, 0.0]])
    d = cv_distances(coords, np.array([0, 0, 1, 1]))
    np.testing.assert_allclose(d, [5.0, 4.0, 4.0, 6.0])


def test_knndm_returns_random_folds_when_sampling_is_not_clustered():
    rng = np.random.default_rng(1)
    X = pd.DataFrame({"x": rng.uniform(0, 100, 300), "y": rng.uniform(0, 100, 300)})
    gx, gy = np.meshgrid(np.linspace(0.5, 99.5, 40), np.linspace(0.5, 99.5, 40))
    res = KNNDM(
        5, prediction_points=np.column_stack([gx.ravel(), gy.ravel()]), random_state=0
    ).assign(X)
    assert res.q == "random CV"
    assert sorted(np.bincount(res.folds).tolist()) == [60] * 5


def test_knndm_matches_prediction_distances_better_than_random_folds():
    rng = np.random.default_rng(2)
    centres = rng.uniform(10, 90, (8, 2))
    pts = (centres[:, None, :] + rng.normal(0, 2.0, (8, 25, 2))).reshape(-1, 2)
    X = pd.DataFrame(pts, columns=["x", "y"])
    gx, gy = np.meshgrid(np.linspace(0.5, 99.5, 40), np.linspace(0.5, 99.5, 40))
    pp = np.column_stack([gx.ravel(), gy.ravel()])
    folds_random = RandomKFold(5, random_state=0).fold_labels(X)
    for clustering in ("kmeans", "hierarchical"):
        cv = KNNDM(5, prediction_points=pp, clustering=clustering, random_state=0)
        res = cv.assign(X)
        assert isinstance(res.q, int) and 5 <= res.q <= 198
        assert np.bincount(res.folds).max() / len(X) <= 0.5
        # random folds put test points next to their cluster mates: far from Gij
        w_random = wasserstein_distance(cv_distances(pts, folds_random), res.Gij)
        assert res.W < 0.5 * w_random
        assert np.nanmin(res.configurations["W"]) == pytest.approx(res.W)
        assert np.median(res.Gjstar) > 3 * np.median(res.Gj)
    assert cv.assign(X) is cv.assign(X)  # cached


def test_knndm_hierarchical_reproduces_cast_reference():
    """Folds, q and W of every configuration as CAST's knndm_geo computed them in R."""
    ref = json.loads((Path(__file__).parent / "data" / "knndm_cast_reference.json").read_text())
    g = ref["prediction_grid"]
    axis = np.arange(g["start"], g["stop"], g["step"])
    gx, gy = np.meshgrid(axis, axis)
    X = pd.DataFrame({"x": ref["train_x"], "y": ref["train_y"]})
    res = KNNDM(
        ref["k"],
        prediction_points=np.column_stack([gx.ravel(), gy.ravel()]),
        clustering="hierarchical",
    ).assign(X)
    assert res.q == ref["q"]
    assert res.W == pytest.approx(ref["W"], rel=1e-9)
    np.testing.assert_array_equal(res.folds, ref["folds"])
    expected = pd.Series(ref["configurations"]["W"], index=ref["configurations"]["q"], dtype=float)
    got = res.configurations.set_index("q")["W"]
    np.testing.assert_allclose(got.loc[expected.index], expected, rtol=1e-9)


def test_make_splitter_from_config_names():
    assert isinstance(make_splitter("kfold", 5), RandomKFold)
    assert isinstance(make_splitter("block", 5, block_size=1e4), SpatialBlockKFold)
    assert isinstance(make_splitter("knndm", 5, prediction_points=np.zeros((3, 2))), KNNDM)
    with pytest.raises(ModelError, match="block_size"):
        make_splitter("block", 5)
    with pytest.raises(ModelError, match="prediction_points"):
        KNNDM(5).split(_points()).__next__()


def test_knndm_feature_space_distances_are_standardised_covariates():
    # training covariates clustered at the warm end; the map reaches the cold end
    rng = np.random.default_rng(4)
    n = 120
    X = pd.DataFrame(
        {
            "x": rng.uniform(0, 1e5, n),
            "y": rng.uniform(0, 1e5, n),
            "maat": np.repeat(rng.uniform(-4, 0, 6), 20) + rng.normal(0, 0.1, n),
            "ndvi": np.repeat(rng.uniform(0.4, 0.8, 6), 20) + rng.normal(0, 0.01, n),
            "lc": pd.Categorical(rng.choice(["a", "b"], n)),
        }
    )
    m = 900
    pp = pd.DataFrame(
        {
            "x": rng.uniform(0, 1e5, m),
            "y": rng.uniform(0, 1e5, m),
            "maat": rng.uniform(-16, 0, m),
            "ndvi": rng.uniform(0.2, 0.8, m),
            "lc": pd.Categorical(rng.choice(["a", "b"], m)),
        }
    )
    cv = KNNDM(5, prediction_points=pp, space="feature", random_state=0)
    res = cv.assign(X)
    # Gij by hand: standardise with the training mean and sd (n - 1), one-hot the category
    cols = ["maat", "ndvi"]
    Z = np.column_stack([X[cols].to_numpy(), X["lc"] == "a", X["lc"] == "b"]).astype(float)
    P = np.column_stack([pp[cols].to_numpy(), pp["lc"] == "a", pp["lc"] == "b"]).astype(float)
    c, s = Z.mean(axis=0), Z.std(axis=0, ddof=1)
    from scipy.spatial import cKDTree

    gij = cKDTree((Z - c) / s).query((P - c) / s)[0]
    np.testing.assert_allclose(res.Gij, gij, rtol=1e-12)
    # clustered in feature space: not random folds, and held-out clusters sit as far
    # from the training data (in the covariates) as the map's cells do
    assert isinstance(res.q, int)
    assert np.median(res.Gjstar) > 3 * np.median(res.Gj)
    folds_random = RandomKFold(5, random_state=0).fold_labels(X)
    w_random = wasserstein_distance(cv_distances((Z - c) / s, folds_random), res.Gij)
    assert res.W < 0.75 * w_random  # the cold end lies beyond any held-out cluster
    # the geographical version sees evenly spread points and returns random folds
    geo = KNNDM(5, prediction_points=pp[["x", "y"]].to_numpy(), random_state=0).assign(X)
    assert geo.q == "random CV"
    splitter = make_splitter("knndm", 5, prediction_points=pp, space="feature", random_state=0)
    np.testing.assert_array_equal(splitter.fold_labels(X), res.folds)


def test_knndm_feature_space_bad_input():
    X = _points()
    X["maat"] = np.linspace(-5, 0, len(X))
    with pytest.raises(ModelError, match="DataFrame of the covariates"):
        KNNDM(5, prediction_points=np.zeros((3, 2)), space="feature").assign(X)
    with pytest.raises(ModelError, match="space must be"):
        KNNDM(5, prediction_points=np.zeros((3, 2)), space="features").assign(X)
    pp = pd.DataFrame({"x": [0.0], "y": [0.0]})
    with pytest.raises(ModelError, match="seen at fit is missing"):
        KNNDM(5, prediction_points=pp, space="feature").assign(X)


# --------------------------------------------------------------------------- CV driver and plot
def test_cross_validate_model_pools_out_of_fold_predictions(tmp_path):
    rng = np.random.default_rng(3)
    X = _points(150, seed=3)
    y = 10 + 5 * X["a"].to_numpy() + rng.normal(scale=0.5, size=150)
    model = QuantileRandomForest(n_estimators=30, random_state=0)
    res = cross_validate_model(model, X, y, SpatialBlockKFold(12_500, 4, random_state=0))
    assert isinstance(res, CVResult)
    p = res.predictions
    assert len(p) == 150 and (p["fold"] >= 0).all()
    assert (p["lower"] <= p["upper"]).all()
    # pooled metrics are those of the stacked out-of-fold predictions
    again = metrics_table(p["observed"], p["predicted"], p["lower"], p["upper"])
    assert again == res.pooled
    assert len(res.per_fold) == 4 and res.per_fold["n"].sum() == 150
    assert 0.7 < res.pooled["picp"] <= 1.0
    table = cv_report({"0-30": res, "0-100": res})
    assert list(table["interval"]) == ["0-30", "0-100"] and "nnse" in table

    png = plot_observed_vs_predicted(
        p["observed"],
        p["predicted"],
        p["lower"],
        p["upper"],
        title="0-30 cm, block CV",
        path=tmp_path / "ovp.png",
    )
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [f.name for f in tmp_path.iterdir()] == ["ovp.png"]  # no temporary left behind


# --------------------------------------------------------------------------- known-truth world
def _gaussian_field(shape: tuple[int, int], scale: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth stationary random field (Gaussian spectral filter), standardised."""
    ny, nx = shape
    noise = rng.standard_normal((2 * ny, 2 * nx))
    ky = np.fft.fftfreq(2 * ny)[:, None]
    kx = np.fft.fftfreq(2 * nx)[None, :]
    filt = np.exp(-((2 * np.pi) ** 2) * (kx**2 + ky**2) * scale**2 / 2)
    f = np.real(np.fft.ifft2(np.fft.fft2(noise) * filt))[:ny, :nx]
    return (f - f.mean()) / f.std()


def test_cv_schemes_against_true_map_error_on_a_synthetic_world():
    """Clustered profiles over a 100 x 100 km world whose SOC is known in every cell.

    Random k-fold must underestimate the true map error; kNNDM must get closer.
    """
    rng = np.random.default_rng(0)
    ny = nx = 100
    cell = 1000.0
    c1, c2, c3 = (_gaussian_field((ny, nx), s, rng) for s in (12, 6, 20))
    residual = _gaussian_field((ny, nx), 8, rng)  # autocorrelated, not explained by covariates
    truth = 15 + 4 * c1 + 3 * np.tanh(2 * c2) + 2 * c1 * c3 + 3 * residual
    truth += 0.5 * rng.standard_normal((ny, nx))
    yy, xx = np.mgrid[0:ny, 0:nx]
    cells = pd.DataFrame(
        {
            "x": (xx.ravel() + 0.5) * cell,
            "y": (ny - yy.ravel() - 0.5) * cell,  # row 0 is the north edge
            "c1": c1.ravel(),
            "c2": c2.ravel(),
            "c3": c3.ravel(),
        }
    )
    # 10 clusters of 30 profiles, a few km across
    centres = rng.uniform(5, 95, (10, 2))
    rc = np.clip(
        (centres[:, None, :] + rng.normal(0, 4.0, (10, 30, 2))).reshape(-1, 2), 0, 99
    ).astype(int)
    idx = rc[:, 0] * nx + rc[:, 1]
    X = cells.iloc[idx].reset_index(drop=True)
    y = truth.ravel()[idx]

    model = QuantileRandomForest(n_estimators=60, random_state=0)
    fitted = clone(model).fit(X, y)
    true_rmse = float(np.sqrt(np.mean((fitted.predict(cells) - truth.ravel()) ** 2)))
    schemes = {
        "random k-fold": RandomKFold(5, random_state=0),
        "block 20 km": SpatialBlockKFold(20_000, 5, random_state=0),
        "kNNDM": KNNDM(5, prediction_points=cells[["x", "y"]].to_numpy()[::5], random_state=0),
    }
    cv_rmse = {
        name: cross_validate_model(model, X, y, cv).pooled["rmse"] for name, cv in schemes.items()
    }
    print(f"\ntrue map RMSE {true_rmse:.2f} kg C m-2")
    for name, v in cv_rmse.items():
        print(f"  {name:14s} CV RMSE {v:.2f} ({v / true_rmse - 1:+.0%})")
    assert cv_rmse["random k-fold"] < 0.75 * true_rmse
    assert abs(cv_rmse["kNNDM"] - true_rmse) < abs(cv_rmse["random k-fold"] - true_rmse)
