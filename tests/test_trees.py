"""Tree models: estimator contract, exact forest moments, calibration, columns, categories."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, KFold, cross_validate
from sklearn.utils.estimator_checks import parametrize_with_checks

from mapping.exceptions import ModelError
from mapping.models import QuantileGradientBoosting, QuantileRandomForest


def _expected_failures(estimator):
    # as for scikit-learn's own random forests: a bootstrap drawn with the weights is not
    # the bootstrap of the repeated samples (sklearn's PER_ESTIMATOR_XFAIL_CHECKS)
    if isinstance(estimator, QuantileRandomForest):
        return {
            "check_sample_weight_equivalence_on_dense_data": "bootstrap with sample_weight",
        }
    return {}


@parametrize_with_checks(
    [
        QuantileRandomForest(n_estimators=8, random_state=0),
        QuantileGradientBoosting(max_iter=40, calibration_folds=2, random_state=0),
    ],
    expected_failed_checks=_expected_failures,
)
def test_sklearn_estimator_contract(estimator, check):
    check(estimator)


# --------------------------------------------------------------------------- synthetic data
def _heteroscedastic(
    n: int, rng: np.random.Generator
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """y = f(a, b) + s(a) * eps with known conditional quantiles; c is noise."""
    a, b, c = rng.uniform(0, 1, (3, n))
    f = 10 + 8 * np.sin(2 * np.pi * a) + 4 * b
    s = 0.5 + 2.5 * a
    y = f + s * rng.standard_normal(n)
    X = pd.DataFrame(
        {"x": rng.uniform(0, 1e5, n), "y": rng.uniform(0, 1e5, n), "a": a, "b": b, "c": c}
    )
    return X, y, s


@pytest.fixture(scope="module")
def calibration_data():
    rng = np.random.default_rng(42)
    X, y, _ = _heteroscedastic(2000, rng)
    Xt, yt, st = _heteroscedastic(20000, rng)
    return X, y, Xt, yt, st


@pytest.mark.parametrize(
    "model",
    [
        QuantileRandomForest(n_estimators=200, random_state=1, n_jobs=2),
        QuantileGradientBoosting(random_state=1),
    ],
    ids=["forest", "boosting"],
)
def test_interval_coverage_on_heteroscedastic_data(model, calibration_data):
    X, y, Xt, yt, st = calibration_data
    model.fit(X, y)
    q = model.predict_quantiles(Xt, (0.05, 0.5, 0.95))
    assert q.shape == (len(Xt), 3)
    assert np.all(np.diff(q, axis=1) >= 0)  # no crossing
    inside = (yt >= q[:, 0]) & (yt <= q[:, 2])
    coverage = inside.mean()
    print(f"{type(model).__name__}: 5-95 % coverage {coverage:.3f}")
    assert 0.85 <= coverage <= 0.95
    # both tails, not only the total, are roughly right
    assert 0.02 <= np.mean(yt < q[:, 0]) <= 0.08
    assert 0.02 <= np.mean(yt > q[:, 2]) <= 0.08
    # the spread follows the noise: wider where s(a) is large
    _, std = model.predict(Xt, return_std=True)
    assert np.corrcoef(std, st)[0, 1] > 0.6


# --------------------------------------------------------------------------- forest internals
def _brute_force_weights(model: QuantileRandomForest, Xf: np.ndarray, Xq: np.ndarray) -> np.ndarray:
    """Meinshausen (2006) weights w_i(x) from bootstrap counts and shared leaves."""
    forest = model.forest_
    n = len(Xf)
    W = np.zeros((len(Xq), n))
    for est, idx in zip(forest.estimators_, forest.estimators_samples_, strict=True):
        counts = np.bincount(idx, minlength=n).astype(float)
        lt = est.apply(Xf.astype(np.float32))
        lq = est.apply(Xq.astype(np.float32))
        same = (lq[:, None] == lt[None, :]) * counts[None, :]
        W += same / same.sum(axis=1, keepdims=True)
    return W / len(forest.estimators_)


def test_forest_mean_and_std_equal_meinshausen_weights():
    rng = np.random.default_rng(3)
    X = pd.DataFrame(
        {"x": rng.uniform(size=60), "y": rng.uniform(size=60), "a": rng.uniform(size=60)}
    )
    y = 3 * X["a"].to_numpy() + rng.normal(scale=0.3, size=60)
    model = QuantileRandomForest(n_estimators=7, min_samples_leaf=3, random_state=0).fit(X, y)
    Xq = pd.DataFrame({"x": [0.0] * 5, "y": [0.0] * 5, "a": np.linspace(0, 1, 5)})
    mean, std = model.predict(Xq, return_std=True)
    W = _brute_force_weights(model, X[["a"]].to_numpy(), Xq[["a"]].to_numpy())
    np.testing.assert_allclose(W.sum(axis=1), 1.0)
    m_ref = W @ y
    s_ref = np.sqrt(W @ y**2 - m_ref**2)
    np.testing.assert_allclose(mean, m_ref, rtol=1e-10)
    np.testing.assert_allclose(std, s_ref, rtol=1e-8)
    # the weighted mean is the ordinary forest mean (average of the trees)
    trees = np.mean([t.predict(Xq[["a"]].to_numpy()) for t in model.forest_.estimators_], axis=0)
    np.testing.assert_allclose(mean, trees, rtol=1e-6)
    # the median lies inside the conditional distribution's support
    med = model.predict_quantiles(Xq, [0.5])[:, 0]
    assert np.all((med >= y.min()) & (med <= y.max()))


def test_forest_oob_prediction_is_mean_over_trees_that_did_not_see_the_sample():
    rng = np.random.default_rng(4)
    X = rng.uniform(size=(80, 2))
    y = X[:, 0] * 5 + rng.normal(size=80)
    model = QuantileRandomForest(n_estimators=25, random_state=2, coord_columns=None).fit(X, y)
    pred = np.zeros(80)
    n = np.zeros(80)
    for est, idx in zip(model.forest_.estimators_, model.forest_.estimators_samples_, strict=True):
        oob = np.ones(80, dtype=bool)
        oob[idx] = False
        pred[oob] += est.predict(X[oob].astype(np.float32))
        n[oob] += 1
    np.testing.assert_allclose(model.oob_prediction_, pred / n, rtol=1e-6)
    # out-of-bag residuals are larger than the shrunk in-sample ones
    assert np.mean((y - model.oob_prediction_) ** 2) > np.mean((y - model.predict(X)) ** 2)


def test_leaf_moments_are_computed_once_and_only_when_asked_for():
    """A forest asked only for its mean (a layered model's, its internal CV folds') never
    computes the leaf moments; the first ``return_std`` or out-of-bag request computes them
    once, also when several threads ask together; a model pickled when they were computed
    at fit (its own attributes) gives the same numbers."""
    import pickle
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(5)
    X = rng.uniform(size=(300, 3))
    y = X[:, 0] * 4 + rng.normal(size=300)
    model = QuantileRandomForest(n_estimators=40, random_state=3, coord_columns=None).fit(X, y)
    model.predict(X[:50])
    assert model.__dict__["_leaf_moments_cache"] is None
    fresh = pickle.loads(pickle.dumps(model))
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda _: fresh.predict(X[:50], return_std=True), range(8)))
    for mean, std in got:
        np.testing.assert_array_equal(mean, got[0][0])
        np.testing.assert_array_equal(std, got[0][1])
    lm = fresh.__dict__["_leaf_moments_cache"]
    assert lm is not None and fresh._leaf_moments() is lm  # computed once, kept
    mean, std = model.predict(X[:50], return_std=True)
    np.testing.assert_array_equal(mean, got[0][0])
    np.testing.assert_array_equal(std, got[0][1])
    # a model pickled with the moments as attributes (computed at fit before)
    legacy = pickle.loads(pickle.dumps(model))
    lm = model._leaf_moments()
    legacy.__dict__.update(
        _leaf_m1=lm.m1, _leaf_m2=lm.m2, _y_centre=lm.centre, oob_prediction_=lm.oob_mean,
        oob_std_=lm.oob_std, _leaf_moments_cache=None,
    )  # fmt: skip
    del legacy.forest_.train_  # nothing to compute them from
    np.testing.assert_array_equal(legacy.predict(X[:50], return_std=True)[1], std)
    np.testing.assert_array_equal(legacy.oob_prediction_, model.oob_prediction_)


# --------------------------------------------------------------------------- columns
@pytest.mark.parametrize("cls", [QuantileRandomForest, QuantileGradientBoosting])
def test_coordinates_are_not_features_by_default(cls):
    rng = np.random.default_rng(5)
    n = 300
    X = pd.DataFrame(
        {"x": rng.uniform(0, 1e4, n), "a": rng.uniform(size=n), "y": rng.uniform(0, 1e4, n)}
    )
    y = X["x"].to_numpy() / 1e3 + X["a"].to_numpy()
    kw = {"n_estimators": 30} if cls is QuantileRandomForest else {"max_iter": 30}
    model = cls(random_state=0, **kw).fit(X, y)
    moved = X.assign(x=X["x"].to_numpy()[::-1], y=0.0)
    np.testing.assert_array_equal(model.predict(X), model.predict(moved))
    with_xy = cls(random_state=0, use_coordinates=True, **kw).fit(X, y)
    assert not np.allclose(with_xy.predict(X), with_xy.predict(moved))
    if cls is QuantileRandomForest:
        imp = model.feature_importances_
        assert imp.shape == (3,) and imp[0] == 0 and imp[2] == 0 and imp[1] == pytest.approx(1)


def test_integer_coordinate_columns_on_arrays():
    rng = np.random.default_rng(6)
    A = np.column_stack([rng.uniform(size=100), rng.uniform(size=100), rng.uniform(size=100)])
    y = A[:, 2] * 2
    model = QuantileRandomForest(n_estimators=10, coord_columns=(0, 1), random_state=0).fit(A, y)
    assert model.layout_.feature_idx == [2]
    B = A.copy()
    B[:, :2] = 0
    np.testing.assert_array_equal(model.predict(A), model.predict(B))


def test_missing_covariate_at_predict_names_the_column():
    X = pd.DataFrame(
        {
            "x": [0.0, 1, 2, 3],
            "y": [0.0, 1, 2, 3],
            "elev": [1.0, 2, 3, 4],
            "ndvi": [0.1, 0.2, 0.1, 0.3],
        }
    )
    model = QuantileRandomForest(n_estimators=5, min_samples_leaf=1, random_state=0).fit(
        X, [1, 2, 3, 4]
    )
    with pytest.raises(ModelError, match="'ndvi'"):
        model.predict(X.drop(columns="ndvi"))


def test_only_coordinates_is_an_error():
    X = pd.DataFrame({"x": [0.0, 1], "y": [0.0, 1]})
    with pytest.raises(ModelError, match="no covariate"):
        QuantileRandomForest(n_estimators=2).fit(X, [1.0, 2.0])


# --------------------------------------------------------------------------- categories
def _categorical_world(n: int, rng: np.random.Generator) -> tuple[pd.DataFrame, np.ndarray]:
    levels = np.array(["bog", "fen", "tundra", "forest"])
    effect = {"bog": 30.0, "fen": 20.0, "tundra": 8.0, "forest": 12.0}
    lc = rng.choice(levels, n)
    a = rng.uniform(size=n)
    y = np.array([effect[v] for v in lc]) + 2 * a + rng.normal(scale=0.5, size=n)
    X = pd.DataFrame(
        {
            "x": rng.uniform(size=n),
            "y": rng.uniform(size=n),
            "a": a,
            "landcover": pd.Categorical(lc),
        }
    )
    return X, y


@pytest.mark.parametrize("cls", [QuantileRandomForest, QuantileGradientBoosting])
def test_categorical_covariate_is_handled_as_categories(cls):
    rng = np.random.default_rng(7)
    X, y = _categorical_world(800, rng)
    kw = (
        {"n_estimators": 100, "max_features": None}
        if cls is QuantileRandomForest
        else {"calibration_folds": None}
    )
    model = cls(random_state=0, **kw).fit(X, y)
    grid = pd.DataFrame(
        {
            "x": 0.0,
            "y": 0.0,
            "a": 0.5,
            "landcover": pd.Categorical(["bog", "fen", "tundra", "forest", "glacier"]),
        }
    )
    pred = model.predict(grid)
    np.testing.assert_allclose(pred[:4], [31.0, 21.0, 9.0, 13.0], atol=1.0)
    assert np.isfinite(pred[4])  # an unseen level still gets a prediction
    assert model.layout_.categorical_mask.tolist() == [False, True]
    if cls is QuantileGradientBoosting:
        assert model.mean_model_.is_categorical_.tolist() == [False, True]
    else:  # one indicator per level, importances summed back onto the covariate
        assert model.forest_.n_features_in_ == 1 + 4
        assert model.feature_importances_[3] > 0.9


def test_categorical_features_parameter_on_plain_arrays():
    rng = np.random.default_rng(8)
    code = rng.integers(0, 3, 400).astype(float)
    y = np.array([0.0, 10.0, 5.0])[code.astype(int)] + rng.normal(scale=0.1, size=400)
    A = np.column_stack([rng.uniform(size=400), code])
    model = QuantileGradientBoosting(
        categorical_features=[1], coord_columns=None, calibration_folds=None, random_state=0
    ).fit(A, y)
    assert model.mean_model_.is_categorical_.tolist() == [False, True]
    np.testing.assert_allclose(
        model.predict(np.array([[0.5, 0.0], [0.5, 1.0], [0.5, 2.0]])), [0, 10, 5], atol=0.3
    )


# --------------------------------------------------------------------------- boosting quantiles
def test_boosting_quantiles_interpolate_between_fitted_levels_only():
    rng = np.random.default_rng(9)
    X = pd.DataFrame({"x": 0.0, "y": 0.0, "a": rng.uniform(size=300)})
    y = X["a"].to_numpy() + rng.normal(size=300)
    model = QuantileGradientBoosting(quantiles=(0.1, 0.5, 0.9), max_iter=30, random_state=0).fit(
        X, y
    )
    q = model.predict_quantiles(X, (0.1, 0.3, 0.5, 0.9))
    np.testing.assert_allclose(q[:, 1], 0.5 * (q[:, 0] + q[:, 2]))
    with pytest.raises(ValueError, match="outside the fitted levels"):
        model.predict_quantiles(X, (0.05, 0.5))
    mean, std = model.predict(X, return_std=True)
    np.testing.assert_allclose(std, (q[:, 3] - q[:, 0]) / (2 * 1.2815515655446004))
    assert mean.shape == (300,)


def test_models_work_in_cross_validate_and_grid_search():
    rng = np.random.default_rng(10)
    X, y, _ = _heteroscedastic(300, rng)
    cv = KFold(3, shuffle=True, random_state=0)
    res = cross_validate(QuantileRandomForest(n_estimators=20, random_state=0), X, y, cv=cv)
    assert np.all(res["test_score"] > 0.3)
    grid = GridSearchCV(
        QuantileGradientBoosting(max_iter=20, calibration_folds=None, random_state=0),
        {"max_leaf_nodes": [3, 7]},
        cv=cv,
    ).fit(X, y)
    assert grid.best_params_["max_leaf_nodes"] in (3, 7)
    assert clone(grid.best_estimator_).get_params()["max_iter"] == 20


def test_forest_mean_fast_path_equals_the_leaf_moment_mean() -> None:
    """``predict`` without std uses scikit-learn's compiled path; it must equal the first
    moment of the conditional distribution that ``predict(return_std=True)`` averages."""
    rng = np.random.default_rng(3)
    X = pd.DataFrame({"x": rng.random(400), "y": rng.random(400), "a": rng.random(400)})
    target = 3 * X["a"] + rng.normal(0, 0.3, 400)
    model = QuantileRandomForest(n_estimators=30, random_state=0).fit(X, target)
    fast = model.predict(X)
    slow, _ = model.predict(X, return_std=True)
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-10)


def test_forest_leaf_samples_are_built_for_quantiles_only_and_never_pickled() -> None:
    """quantile-forest keeps every leaf's samples in a dense (trees x nodes x largest leaf)
    array: the forest gathers them only when quantiles are asked for, leaves them out of
    its pickles, and still predicts exactly what quantile-forest does on the same trees."""
    import pickle

    from quantile_forest import RandomForestQuantileRegressor

    rng = np.random.default_rng(0)
    n = 400
    X = pd.DataFrame({"x": rng.uniform(0, 1e5, n), "y": rng.uniform(0, 1e5, n)})
    X["a"], X["b"] = rng.normal(size=n), rng.normal(size=n)
    y = 2 * X["a"] + np.sin(X["b"]) + rng.normal(size=n) * 0.5
    model = QuantileRandomForest(n_estimators=30, random_state=3).fit(X, y)
    assert getattr(model.forest_, "forest_", None) is None  # mean/std need no leaf samples
    mean, std = model.predict(X, return_std=True)
    assert getattr(model.forest_, "forest_", None) is None

    Xf, yf = model.forest_.train_
    plain = RandomForestQuantileRegressor(**model.forest_.get_params()).fit(Xf, yf)
    levels = [0.05, 0.5, 0.95]
    expected = plain.predict(Xf, quantiles=levels, weighted_quantile=True, weighted_leaves=True)
    np.testing.assert_array_equal(model.predict_quantiles(X, levels), expected)
    assert model.forest_.forest_ is not None

    state = pickle.dumps(model)
    loaded = pickle.loads(state)
    assert getattr(loaded.forest_, "forest_", None) is None
    assert len(state) < len(pickle.dumps(plain))
    np.testing.assert_array_equal(loaded.predict_quantiles(X, levels), expected)
    np.testing.assert_array_equal(
        np.column_stack(loaded.predict(X, return_std=True)), np.column_stack([mean, std])
    )


def test_weighted_forest_mean_is_the_weighted_leaf_mean():
    """With ``sample_weight`` the forest's mean, std and out-of-bag moments weigh every
    sample as the trees grew on it; one leaf per tree makes the mean the weighted mean of
    the targets (up to the bootstrap's noise), not the plain one."""
    rng = np.random.default_rng(5)
    n = 400
    X = pd.DataFrame({"a": rng.uniform(size=n)})
    group = rng.uniform(size=n) < 0.5
    y = np.where(group, 1.0, 0.0) + rng.normal(scale=0.05, size=n)
    w = np.where(group, 3.0, 1.0)
    one_leaf = dict(n_estimators=300, min_samples_leaf=n, coord_columns=None, random_state=0)
    weighted = QuantileRandomForest(**one_leaf).fit(X, y, sample_weight=w)
    plain = QuantileRandomForest(**one_leaf).fit(X, y)
    Xq = X.iloc[:5]
    target = np.sum(w * y) / np.sum(w)  # 0.75 here, against the plain mean 0.5
    np.testing.assert_allclose(weighted.predict(Xq), target, atol=0.02)
    np.testing.assert_allclose(plain.predict(Xq), y.mean(), atol=0.02)
    assert abs(target - y.mean()) > 0.2
    # the leaf moments weigh as the trees did: their mean is the trees' mean, the std that
    # of the weighted targets
    deep = QuantileRandomForest(n_estimators=40, coord_columns=None, random_state=1)
    deep.fit(X, y, sample_weight=w)
    mean, _ = deep.predict(Xq, return_std=True)
    np.testing.assert_allclose(mean, deep.predict(Xq), rtol=1e-10)
    _, s = weighted.predict(Xq, return_std=True)
    sd = np.sqrt(np.sum(w * (y - target) ** 2) / np.sum(w))
    np.testing.assert_allclose(s, sd, rtol=0.05)
    # and the quantiles: a quarter of the weight on the first kind puts the 0.2-quantile
    # among it and the 0.3-quantile among the second (a third of the mass unweighted: 0.3 too)
    q = weighted.predict_quantiles(Xq, [0.2, 0.3])
    assert np.all(q[:, 0] < 0.5) and np.all(q[:, 1] > 0.5)
    assert np.all(plain.predict_quantiles(Xq, [0.3])[:, 0] < 0.5)
    with pytest.raises(ModelError, match="sample_weight"):
        QuantileRandomForest(n_estimators=5, coord_columns=None).fit(X, y, sample_weight=-w)
