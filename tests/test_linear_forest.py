"""LinearQuantileForest: a least-squares plane plus a quantile forest on its residuals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from mapping.exceptions import ModelError
from mapping.models.factory import build_model
from mapping.models.linear_forest import LinearQuantileForest
from mapping.models.trees import QuantileRandomForest


def _data(n: int = 400, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(
        {
            "x": rng.uniform(0, 1e5, n),
            "y": rng.uniform(0, 1e5, n),
            "a": rng.uniform(0, 1, n),
            "b": rng.uniform(0, 1, n),
            "lc": rng.integers(1, 4, n),
        }
    )
    y = 2.0 * X["a"] - X["b"] + 0.5 * (X["lc"] == 2) + rng.normal(0, 0.05, n)
    return X, y.to_numpy()


def _truth(X: pd.DataFrame) -> np.ndarray:
    return (2.0 * X["a"] - X["b"] + 0.5 * (X["lc"] == 2)).to_numpy()


def test_carries_a_gradient_beyond_the_training_range() -> None:
    # a = 1.4 lies 40 % of the range beyond the largest a seen: the forest holds the edge
    # (2 * 1 at most), the plane carries the slope of 2 on
    X, y = _data()
    far = X.assign(a=1.4)
    lqf = LinearQuantileForest(n_estimators=100, categorical_features=["lc"], random_state=0)
    qrf = QuantileRandomForest(n_estimators=100, categorical_features=["lc"], random_state=0)
    err_lqf = np.mean(lqf.fit(X, y).predict(far) - _truth(far))
    err_qrf = np.mean(qrf.fit(X, y).predict(far) - _truth(far))
    assert err_qrf < -0.6  # about 2 * 0.4 too low
    assert abs(err_lqf) < 0.1
    # inside the range both are close to the truth
    inside = _data(200, seed=1)[0]
    assert np.sqrt(np.mean((lqf.predict(inside) - _truth(inside)) ** 2)) < 0.12


def test_plane_recovers_the_slopes_and_the_forest_gets_the_rest() -> None:
    X, y = _data()
    m = LinearQuantileForest(n_estimators=50, categorical_features=["lc"], random_state=0)
    m.fit(X, y)
    # coefficients on standardised a, b: slope times the covariate's sd
    slopes = m.coef_ / m.feature_scale_
    assert slopes == pytest.approx([2.0, -1.0], abs=0.05)
    # the importances sum to 1, coordinates 0, a above b (twice the slope, same spread)
    imp = dict(zip(X.columns, m.feature_importances_, strict=True))
    assert sum(imp.values()) == pytest.approx(1.0)
    assert imp["x"] == imp["y"] == 0.0
    assert imp["a"] > imp["b"] > 0.0 and imp["lc"] > 0.0


def test_every_output_is_plane_plus_forest() -> None:
    X, y = _data(300)
    m = LinearQuantileForest(n_estimators=60, categorical_features=["lc"], random_state=3)
    m.fit(X, y)
    plane = m.intercept_ + ((X[["a", "b"]] - m.feature_mean_) / m.feature_scale_) @ m.coef_
    forest = QuantileRandomForest(n_estimators=60, categorical_features=["lc"], random_state=3)
    forest.fit(X, y - plane.to_numpy())
    np.testing.assert_allclose(m.predict(X), plane + forest.predict(X), rtol=1e-10)
    q = m.predict_quantiles(X, [0.05, 0.5, 0.95])
    np.testing.assert_allclose(
        q, plane.to_numpy()[:, None] + forest.predict_quantiles(X, [0.05, 0.5, 0.95])
    )
    assert np.all(np.diff(q, axis=1) >= 0)
    mean, std = m.predict(X, return_std=True)
    np.testing.assert_allclose(mean, m.predict(X), rtol=1e-10)
    np.testing.assert_allclose(std, forest.predict(X, return_std=True)[1])
    # out-of-bag: the plane's in-sample value plus the forest's out-of-bag value
    np.testing.assert_allclose(m.oob_prediction_, plane + forest.oob_prediction_)
    assert np.corrcoef(m.oob_prediction_, y)[0, 1] > 0.95


def test_plane_is_held_near_its_training_range() -> None:
    X, y = _data()
    m = LinearQuantileForest(n_estimators=30, categorical_features=["lc"], random_state=0)
    m.fit(X, y)
    lo, hi = m.linear_range_
    span = (hi - lo) / 2.0  # the range widened by half its span on each side
    extreme = X.assign(a=1e3)
    assert np.max(m._plane(extreme)) == pytest.approx(hi)
    assert hi - span / 2 == pytest.approx(m._plane(X).max(), rel=1e-9)
    assert np.all(np.isfinite(m.predict(extreme)))


def test_weights_pull_the_plane() -> None:
    # two populations with different slopes: weighting one of them fits its slope
    rng = np.random.default_rng(5)
    a = rng.uniform(0, 1, 400)
    group = np.arange(400) < 200
    y = np.where(group, 3.0 * a, -1.0 * a)
    X = pd.DataFrame({"x": a * 0, "y": a * 0, "a": a})
    w = np.where(group, 1.0, 1e-6)
    m = LinearQuantileForest(n_estimators=20, random_state=0).fit(X, y, sample_weight=w)
    assert m.coef_[0] / m.feature_scale_[0] == pytest.approx(3.0, rel=0.01)
    with pytest.raises(ModelError, match="sample_weight"):
        clone(m).fit(X, y, sample_weight=-w)


def test_config_builds_it_as_the_trend() -> None:
    from mapping.config import ModelConfig

    section = ModelConfig(type="regression_kriging", trend="linear_forest", params={})
    model = build_model(section, seed=7, categorical=["lc"])
    assert isinstance(model.trend, LinearQuantileForest)
    assert model.trend.random_state == 7 and list(model.trend.categorical_features) == ["lc"]
