"""Lazy chunked prediction: the NumPy kernel, the Dask wrapper and the graph it builds."""

from __future__ import annotations

import cloudpickle
import dask
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy.stats import norm
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import BayesianRidge

from mapping.exceptions import GridMismatchError, ModelError
from mapping.grid import Grid
from mapping.predict import FAILED, STATISTICS, UNITS, _predict_block, predict_grid
from mapping.testing import raise_if_dask_computes

# EASE-Grid 2.0 North, 1 km cells, a 60 x 70 km patch away from 0°E.
GRID = Grid.from_bounds((1_200_000, -2_100_000, 1_270_000, -2_040_000), 1000.0, "EPSG:6931")


def _stack(grid: Grid = GRID, *, holes: bool = True, dask_chunks: int | None = None) -> xr.Dataset:
    y, x = grid.coords()
    yy, xx = np.meshgrid(y, x, indexing="ij")
    elev = 200 + 0.001 * (xx - 1_200_000) + 30 * np.sin(yy / 9000.0)
    temp = -5 + 0.0002 * (yy + 2_100_000) - 0.004 * elev
    if holes:
        elev[3:9, 10:14] = np.nan  # a lake
        temp[40:, 65:] = np.nan  # off the edge of a source raster
    ds = xr.Dataset(
        {"elev": (("y", "x"), elev), "temp": (("y", "x"), temp)}, coords={"y": y, "x": x}
    )
    if dask_chunks:
        ds = ds.chunk({"y": dask_chunks, "x": dask_chunks})
    return grid.attach(ds)


def _training(n: int = 150, seed: int = 1) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(
        {
            "elev": rng.uniform(150, 300, n),
            "temp": rng.uniform(-8, -2, n),
            "x": rng.uniform(1_200_000, 1_270_000, n),
            "y": rng.uniform(-2_100_000, -2_040_000, n),
        }
    )
    y = 5 + 0.02 * X.elev - 0.5 * X.temp + 1e-5 * (X.x - 1_200_000) + rng.normal(0, 0.3, n)
    return X, y.to_numpy()


class LinearGaussian(RegressorMixin, BaseEstimator):
    """A synthetic model whose predictive distribution is known exactly.

    Mean ``X @ coef_``, standard deviation ``scale * (1 + |x - x0| / 1e4)`` (it grows
    away from a centre), normal quantiles. Used to check the kernel's statistics.
    """

    def __init__(self, scale: float = 0.5) -> None:
        self.scale = scale

    def fit(self, X: pd.DataFrame, y: np.ndarray) -> LinearGaussian:
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.n_features_in_ = X.shape[1]
        self.coef_, *_ = np.linalg.lstsq(X.to_numpy(), y, rcond=None)
        self.x0_ = float(X["x"].mean())
        return self

    def _std(self, X: pd.DataFrame) -> np.ndarray:
        return self.scale * (1 + np.abs(X["x"].to_numpy() - self.x0_) / 1e4)

    def predict(self, X: pd.DataFrame, return_std: bool = False):  # type: ignore[no-untyped-def]
        mean = X.to_numpy() @ self.coef_
        return (mean, self._std(X)) if return_std else mean

    def predict_quantiles(self, X: pd.DataFrame, quantiles: list[float]) -> np.ndarray:
        mean, std = self.predict(X, return_std=True)
        return mean[:, None] + norm.ppf(np.asarray(quantiles))[None, :] * std[:, None]


# --------------------------------------------------------------------------- kernel
def test_kernel_matches_hand_calculation_and_masks_nodata() -> None:
    X, y = _training()
    model = LinearGaussian(scale=0.4).fit(X, y)
    ds = _stack()
    yc, xc = GRID.coords()
    block = {k: ds[k].values for k in ("elev", "temp")}
    out = _predict_block(block, xc, yc, model, (0.1, 0.9))
    assert set(out) == set(STATISTICS)
    assert all(v.dtype == np.float32 and v.shape == GRID.shape for v in out.values())

    yy, xx = np.meshgrid(yc, xc, indexing="ij")
    c = model.coef_
    cols = list(model.feature_names_in_)
    src = {"elev": block["elev"], "temp": block["temp"], "x": xx, "y": yy}
    mean = sum(c[i] * src[n] for i, n in enumerate(cols))
    std = 0.4 * (1 + np.abs(xx - model.x0_) / 1e4)
    nodata = np.isnan(block["elev"]) | np.isnan(block["temp"])
    for name, expected in {
        "mean": mean,
        "median": mean,
        "std": std,
        "lower": mean + norm.ppf(0.1) * std,
        "upper": mean + norm.ppf(0.9) * std,
    }.items():
        got = out[name]
        assert np.array_equal(np.isnan(got), nodata), name
        np.testing.assert_allclose(got[~nodata], expected[~nodata], rtol=2e-6, err_msg=name)
    assert nodata.sum() == 6 * 4 + 20 * 5


def test_kernel_accepts_band_array_2d_coordinates_and_small_batches() -> None:
    X, y = _training()
    model = LinearGaussian().fit(X, y)
    ds = _stack()
    yc, xc = GRID.coords()
    yy, xx = np.meshgrid(yc, xc, indexing="ij")
    ref = _predict_block({"temp": ds.temp.values, "elev": ds.elev.values}, xc, yc, model)
    bands = np.stack([ds.elev.values, ds.temp.values])
    got = _predict_block(bands, xx, yy, model, names=["elev", "temp"], batch_size=97)
    for k in STATISTICS:
        np.testing.assert_array_equal(got[k], ref[k])


def test_gaussian_quantiles_for_models_with_only_return_std() -> None:
    X, y = _training()
    model = BayesianRidge().fit(X[["elev", "temp"]], y)
    ds = _stack(holes=False)
    yc, xc = GRID.coords()
    out = _predict_block({k: ds[k].values for k in ("elev", "temp")}, xc, yc, model, (0.05, 0.95))
    flat = pd.DataFrame({"elev": ds.elev.values.ravel(), "temp": ds.temp.values.ravel()})
    mean, std = model.predict(flat, return_std=True)
    np.testing.assert_allclose(out["mean"].ravel(), mean, rtol=1e-6)
    np.testing.assert_allclose(out["median"].ravel(), mean, rtol=1e-6)
    np.testing.assert_allclose(out["upper"].ravel(), mean + 1.6448536269514722 * std, rtol=1e-6)
    np.testing.assert_allclose(out["lower"].ravel(), mean - 1.6448536269514722 * std, rtol=1e-6)


def test_model_without_uncertainty_gives_mean_only_equal_to_sklearn() -> None:
    X, y = _training()
    forest = RandomForestRegressor(n_estimators=10, max_depth=6, random_state=0).fit(X, y)
    ds = _stack(holes=False)
    yc, xc = GRID.coords()
    block = {k: ds[k].values for k in ("elev", "temp")}
    with pytest.raises(ModelError, match="no uncertainty"):
        _predict_block(block, xc, yc, forest)
    out = _predict_block(block, xc, yc, forest, statistics=("mean",))
    assert list(out) == ["mean"]
    yy, xx = np.meshgrid(yc, xc, indexing="ij")
    flat = pd.DataFrame(
        {
            "elev": block["elev"].ravel(),
            "temp": block["temp"].ravel(),
            "x": xx.ravel(),
            "y": yy.ravel(),
        }
    )
    np.testing.assert_array_equal(out["mean"].ravel(), forest.predict(flat).astype("float32"))


def test_model_columns_must_be_in_the_stack() -> None:
    X, y = _training()
    model = LinearGaussian().fit(X.rename(columns={"temp": "mat"}), y)
    with pytest.raises(ModelError, match=r"\['mat'\].*not in the covariate stack"):
        predict_grid(model, _stack(), GRID)


# --------------------------------------------------------------------------- lazy map
def test_predict_grid_is_lazy_and_labelled() -> None:
    X, y = _training()
    model = LinearGaussian().fit(X, y)
    stack = _stack(dask_chunks=25)
    with raise_if_dask_computes():
        pred = predict_grid(model, stack, GRID, quantiles=(0.1, 0.9), chunks=32)
    assert list(pred.data_vars) == [*STATISTICS, FAILED]
    for name, var in pred.data_vars.items():
        assert var.dtype == np.float32
        assert var.chunks == ((32, 28), (32, 32, 6))
        assert var.attrs["units"] == (UNITS if name != FAILED else "1")
        assert var.attrs["statistic"] == name
    assert pred.upper.attrs["quantile"] == 0.9
    assert pred.rio.crs.to_epsg() == 6931
    assert Grid.from_dataarray(pred) == GRID
    eager = _predict_block(
        {k: _stack()[k].values for k in ("elev", "temp")},
        GRID.coords()[1],
        GRID.coords()[0],
        model,
        (0.1, 0.9),
    )
    computed = pred.compute(scheduler="synchronous")
    for k in STATISTICS:
        np.testing.assert_array_equal(computed[k].values, eager[k])


def test_chunked_equals_unchunked_with_coordinate_model() -> None:
    # A model of the coordinates whose neighbours reach across chunk edges: chunking
    # must not change a single cell.
    from sklearn.neighbors import KNeighborsRegressor

    X, y = _training(400)
    knn = KNeighborsRegressor(n_neighbors=16, weights="distance").fit(X[["x", "y"]], y)
    stack = _stack()
    one = predict_grid(knn, stack, GRID, chunks=GRID.shape, statistics=("mean",)).compute()
    many = predict_grid(knn, stack, GRID, chunks=(7, 11), statistics=("mean",)).compute()
    np.testing.assert_array_equal(one["mean"].values, many["mean"].values)
    assert np.isfinite(one["mean"].values).all()  # the model uses no covariate: no holes


def test_stack_on_another_grid_is_rejected() -> None:
    X, y = _training()
    model = LinearGaussian().fit(X, y)
    shifted = Grid(GRID.crs, GRID.transform @ GRID.transform.translation(1, 0), GRID.shape)
    with pytest.raises(GridMismatchError, match="not on Grid"):
        predict_grid(model, _stack(shifted), GRID)
    with pytest.raises(GridMismatchError, match="shape"):
        predict_grid(model, _stack().isel(x=slice(0, 10)), GRID)


def _tasks_holding(graph: dict, marker: bytes) -> int:
    return sum(marker in cloudpickle.dumps(task) for task in graph.values())


def test_model_enters_the_graph_once() -> None:
    X, y = _training()
    model = LinearGaussian().fit(X, y)
    marker = b"socmap-graph-marker-7d1f0c"
    model.marker_ = marker  # travels with the model's pickle
    stack = _stack(dask_chunks=20)
    pred = predict_grid(model, stack, GRID, chunks=16)
    n_blocks = len(pred["mean"].chunks[0]) * len(pred["mean"].chunks[1])
    assert n_blocks == 20
    graph = dict(pred.__dask_graph__())
    assert _tasks_holding(graph, marker) == 1
    (optimized,) = dask.optimize(pred)
    assert _tasks_holding(dict(optimized.__dask_graph__()), marker) == 1
    # ... and the prediction tasks themselves run once per block.
    calls = []

    class Counter(dask.callbacks.Callback):
        def _posttask(self, key, result, dsk, state, worker_id):  # type: ignore[no-untyped-def]
            name = key[0] if isinstance(key, tuple) else key
            if str(name).startswith("socmap-predict"):
                calls.append(key)

    with Counter():
        pred.compute(scheduler="threads")
    assert len(calls) == n_blocks


def test_categorical_codes_and_their_nodata() -> None:
    from mapping.covariates import CATEGORICAL_NODATA

    X, y = _training()
    X["soil"] = np.random.default_rng(0).integers(1, 4, len(X))
    model = LinearGaussian().fit(X, y)
    stack = _stack(holes=False)
    codes = np.ones(GRID.shape, dtype="int32") * 2
    codes[:, :5] = CATEGORICAL_NODATA
    stack["soil"] = (("y", "x"), codes, {"kind": "categorical", "nodata": CATEGORICAL_NODATA})
    pred = predict_grid(model, stack, GRID, chunks=25).compute(scheduler="synchronous")
    assert np.isnan(pred["mean"].values[:, :5]).all()
    assert np.isfinite(pred["mean"].values[:, 5:]).all()
    other = stack.assign(soil=stack.soil + 1)  # a different stack: a different graph
    pred3 = predict_grid(model, other, GRID, chunks=25)
    assert pred3["mean"].data.name != predict_grid(model, stack, GRID, chunks=25)["mean"].data.name
    diff = pred3["mean"].values[:, 5:] - pred["mean"].values[:, 5:]
    np.testing.assert_allclose(
        diff, model.coef_[list(model.feature_names_in_).index("soil")], rtol=1e-4
    )


# --------------------------------------------------------------------------- regression kriging
def _rk_model(log_transform: bool = False) -> object:
    from sklearn.ensemble import RandomForestRegressor

    from mapping.models import OrdinaryKriging, RegressionKriging

    X, y = _training(300, seed=5)
    # a smooth spatial residual the kriging has to pick up
    y = y + 1.5 * np.sin((X.x - 1_200_000) / 8000.0) * np.cos((X.y + 2_100_000) / 11000.0)
    trend = RandomForestRegressor(n_estimators=30, max_depth=6, oob_score=True, random_state=0)
    return RegressionKriging(
        trend=trend, kriging=OrdinaryKriging(n_neighbors=32), log_transform=log_transform
    ).fit(X, y if not log_transform else np.exp(y / 10))


@pytest.mark.parametrize("log_transform", [False, True])
def test_kernel_agrees_with_regression_kriging_predict(log_transform: bool) -> None:
    model = _rk_model(log_transform)
    ds = _stack()
    yc, xc = GRID.coords()
    block = {k: ds[k].values for k in ("elev", "temp")}
    out = _predict_block(block, xc, yc, model, (0.05, 0.95))
    yy, xx = np.meshgrid(yc, xc, indexing="ij")
    ok = np.isfinite(block["elev"]) & np.isfinite(block["temp"])
    X = pd.DataFrame(
        {"elev": block["elev"][ok], "temp": block["temp"][ok], "x": xx[ok], "y": yy[ok]}
    )
    X = X[list(model.feature_names_in_)]
    mean, std = model.predict(X, return_std=True)
    q = model.predict_quantiles(X, [0.05, 0.5, 0.95])
    for name, ref in {
        "mean": mean,
        "std": std,
        "lower": q[:, 0],
        "median": q[:, 1],
        "upper": q[:, 2],
    }.items():
        np.testing.assert_allclose(out[name][ok], ref, rtol=1e-6, err_msg=name)
    assert np.isnan(out["mean"][~ok]).all()


def test_regression_kriging_chunked_equals_unchunked() -> None:
    model = _rk_model()
    stack = _stack(dask_chunks=17)
    one = predict_grid(model, stack, GRID, chunks=GRID.shape).compute(scheduler="synchronous")
    many = predict_grid(model, stack, GRID, chunks=(13, 9)).compute(scheduler="threads")
    for name in STATISTICS:
        a, b = one[name].values, many[name].values
        assert np.array_equal(np.isnan(a), np.isnan(b))
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6, err_msg=name)


def test_area_of_applicability_mask() -> None:
    from mapping.aoa import AreaOfApplicability

    X, y = _training()
    model = LinearGaussian().fit(X, y)
    aoa = AreaOfApplicability().fit(X)
    stack = _stack()
    pred = predict_grid(model, stack, GRID, aoa=aoa, chunks=16).compute(scheduler="synchronous")
    assert list(pred.data_vars) == [*STATISTICS, "di", "aoa", FAILED]
    mask = pred["aoa"].values
    nodata = np.isnan(stack.elev.values) | np.isnan(stack.temp.values)
    assert np.array_equal(np.isnan(mask), nodata)
    yy, xx = np.meshgrid(*GRID.coords(), indexing="ij")
    cells = pd.DataFrame({"elev": stack.elev.values[~nodata], "temp": stack.temp.values[~nodata]})
    cells["x"], cells["y"] = xx[~nodata], yy[~nodata]
    di, inside = aoa.predict(cells)
    np.testing.assert_array_equal(mask[~nodata], inside.astype("float32"))
    # the DI layer is the AOA's DI (inside: at most its threshold), NaN at nodata
    np.testing.assert_array_equal(pred["di"].values[~nodata], di.astype("float32"))
    assert np.array_equal(np.isnan(pred["di"].values), nodata)
    assert np.all(di[inside] <= aoa.threshold_) and np.all(di[~inside] > aoa.threshold_)
    # the training covers temp -8..-2 °C; the warm north of the stack is outside
    assert 0.05 < np.nanmean(mask) < 0.95
    assert np.nanmean(mask[stack.temp.values > 0]) == 0.0
    assert pred["aoa"].attrs["units"] == "1"


# --------------------------------------------------------------------------- predict_stats
def _estimator(kind: str) -> object:
    from mapping.models import (
        OrdinaryKriging,
        QuantileGradientBoosting,
        QuantileRandomForest,
        RegressionKriging,
    )

    return {
        "qrf": lambda: QuantileRandomForest(n_estimators=20, random_state=0),
        "qgb": lambda: QuantileGradientBoosting(max_iter=30, random_state=0),
        "ok": lambda: OrdinaryKriging(coord_columns=("x", "y"), n_neighbors=16),
        "rk": lambda: RegressionKriging(
            trend=BayesianRidge(), kriging=OrdinaryKriging(n_neighbors=16), log_transform=True
        ),
    }[kind]()


@pytest.mark.parametrize("kind", ["qrf", "qgb", "ok", "rk"])
def test_every_estimator_gives_the_statistics_of_its_own_interface(kind: str) -> None:
    X, y = _training(200, seed=4)
    model = _estimator(kind).fit(X, y)
    Xt = _training(40, seed=9)[0]
    got = model.predict_stats(Xt, (0.1, 0.9))
    assert set(got) == set(STATISTICS)
    mean, std = model.predict(Xt, return_std=True)
    q = model.predict_quantiles(Xt, [0.1, 0.5, 0.9])
    np.testing.assert_allclose(got["mean"], mean, rtol=1e-12)
    np.testing.assert_allclose(got["std"], std, rtol=1e-12)
    for k, name in enumerate(("lower", "median", "upper")):
        np.testing.assert_allclose(got[name], q[:, k], rtol=1e-12)
    assert list(model.predict_stats(Xt, (0.1, 0.9), ("std",))) == ["std"]
