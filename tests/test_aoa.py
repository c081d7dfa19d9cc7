"""Area of applicability: hand-computed DI and threshold, inside/outside, weights, categories."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mapping.aoa import AreaOfApplicability
from mapping.exceptions import ModelError
from mapping.models import QuantileRandomForest


def _frame(**cols: object) -> pd.DataFrame:
    n = len(next(iter(cols.values())))  # type: ignore[arg-type]
    return pd.DataFrame({"x": np.arange(n) * 1000.0, "y": 0.0, **cols})


def test_one_covariate_by_hand():
    aoa = AreaOfApplicability().fit(_frame(a=[0.0, 1.0, 3.0]))
    # pairwise |da| = 1, 3, 2 -> mean 2 (in any scaling: one covariate)
    # nearest other point: 1, 1, 2 -> training DI 0.5, 0.5, 1.0
    np.testing.assert_allclose(aoa.train_di_, [0.5, 0.5, 1.0])
    # q25 = 0.5, q75 = 0.75 -> 0.75 + 1.5 * 0.25 = 1.125, capped at max(DI) = 1.0
    assert aoa.threshold_ == pytest.approx(1.0)
    di, inside = aoa.predict(_frame(a=[2.0, 4.9, 5.5, -0.5]))
    np.testing.assert_allclose(di, [0.5, 0.95, 1.25, 0.25])
    assert inside.tolist() == [True, True, False, True]


def test_folds_exclude_the_points_own_fold():
    aoa = AreaOfApplicability().fit(_frame(a=[0.0, 1.0, 3.0]), folds=[0, 0, 1])
    # point 0 -> nearest outside fold 0 is 3 (d = 3), point 1 -> 3 (2), point 2 -> 1 (2)
    np.testing.assert_allclose(aoa.train_di_, [1.5, 1.0, 1.0])
    # q25 = 1.0, q75 = 1.25 -> 1.625, capped at 1.5
    assert aoa.threshold_ == pytest.approx(1.5)
    # a row in no fold gets no DI and does not enter the threshold
    aoa2 = AreaOfApplicability().fit(_frame(a=[0.0, 1.0, 3.0, 9.0]), folds=[0, 0, 1, -1])
    assert np.isnan(aoa2.train_di_[3])


def test_extrapolation_distance_by_hand():
    aoa = AreaOfApplicability().fit(_frame(a=[0.0, 1.0, 3.0]), folds=[0, 0, 1])
    # training range [0, 3], DI unit = mean pairwise distance 2 (any scaling: one covariate)
    xd = aoa.extrapolation(_frame(a=[2.0, 4.9, -0.5, 3.0]))
    np.testing.assert_allclose(xd, [0.0, 0.95, 0.25, 0.0])
    # cross-validated: fold 0 (0, 1) against the range of fold 1 alone, [3, 3] -> 3/2, 2/2;
    # fold 1 (3) against [0, 1] -> 2/2
    np.testing.assert_allclose(aoa.train_xd_, [1.5, 1.0, 1.0])
    # the space it measures in is the DI's: standardised, weighted covariates
    T = aoa.transform(_frame(a=[0.0, 3.0]))
    np.testing.assert_allclose(np.abs(T[1] - T[0]) / aoa.mean_distance_, [1.5])


def test_extrapolation_distance_of_two_covariates_and_missing_values():
    # a, b standardise to (-1, 0, 1); weights 3 and 1 -> box [-3, 3] x [-1, 1]
    train = _frame(a=[-1.0, 0.0, 1.0], b=[0.0, 2.0, 4.0])
    aoa = AreaOfApplicability().fit(train, weights={"a": 3.0, "b": 1.0})
    xd = aoa.extrapolation(_frame(a=[2.0, 0.5, np.nan], b=[8.0, 3.0, 2.0]))
    # (2, 8) -> standardised (2, 3), weighted (6, 3): beyond by (3, 2) -> sqrt(13)
    np.testing.assert_allclose(xd[:2], [np.sqrt(13.0) / aoa.mean_distance_, 0.0])
    assert np.isnan(xd[2])
    assert np.isnan(AreaOfApplicability().fit(train).train_xd_).sum() == 0  # no folds: 0
    np.testing.assert_array_equal(AreaOfApplicability().fit(train).train_xd_, 0.0)


def test_two_weighted_covariates_by_hand():
    # a: mean 0, sd 1; b: mean 2, sd 2 -> both standardise to (-1, 0, 1)
    train = _frame(a=[-1.0, 0.0, 1.0], b=[0.0, 2.0, 4.0])
    aoa = AreaOfApplicability().fit(train, weights={"a": 3.0, "b": 1.0})
    # weighted points (-3,-1), (0,0), (3,1): distances sqrt10, sqrt10, 2 sqrt10
    mean_d = 4 * np.sqrt(10) / 3
    assert aoa.mean_distance_ == pytest.approx(mean_d)
    di, _ = aoa.predict(_frame(a=[0.5], b=[2.0]))  # -> (1.5, 0): nearest (0, 0) at 1.5
    assert di[0] == pytest.approx(1.5 / mean_d)
    # an array laid out like the training table gives the same answer
    di_arr, _ = (
        AreaOfApplicability(coord_columns=(0, 1))
        .fit(train.to_numpy(), weights=[3.0, 1.0])
        .predict(np.array([[0.0, 0.0, 0.5, 2.0]]))
    )
    assert di_arr[0] == pytest.approx(di[0])


def test_inside_the_training_cloud_and_far_outside():
    rng = np.random.default_rng(0)
    train = _frame(a=rng.uniform(size=300), b=rng.uniform(size=300), c=rng.normal(size=300))
    folds = rng.integers(0, 5, 300)
    aoa = AreaOfApplicability().fit(train, folds=folds)
    near = _frame(
        a=rng.uniform(0.2, 0.8, 50), b=rng.uniform(0.2, 0.8, 50), c=rng.normal(0, 0.5, 50)
    )
    far = _frame(a=[5.0, -3.0, 0.5], b=[5.0, 0.5, 0.5], c=[0.0, 0.0, 12.0])
    di_near, in_near = aoa.predict(near)
    di_far, in_far = aoa.predict(far)
    assert in_near.mean() > 0.95
    assert not in_far.any() and np.all(di_far > aoa.threshold_)
    # the training points themselves (DI 0 to themselves) are all inside
    assert aoa.predict(train)[1].all()
    # chunk by chunk gives the same answer as all at once
    whole = aoa.predict(near)[0]
    parts = np.concatenate([aoa.predict(near.iloc[:20])[0], aoa.predict(near.iloc[20:])[0]])
    np.testing.assert_array_equal(whole, parts)
    assert np.all(np.isfinite(di_near))


def test_weights_from_a_fitted_model_ignore_unimportant_covariates():
    rng = np.random.default_rng(1)
    train = _frame(a=rng.uniform(size=200), noise=rng.uniform(size=200))
    y = 10 * train["a"].to_numpy()
    model = QuantileRandomForest(n_estimators=30, random_state=0).fit(train, y)
    aoa = AreaOfApplicability().fit(train, weights=model)
    w = aoa.feature_weights_
    assert w["a"] == pytest.approx(model.feature_importances_[2])
    assert w["a"] > 5 * w["noise"]
    # moving far along the unimportant covariate barely changes the DI
    base = _frame(a=[0.5], noise=[0.5])
    moved = _frame(a=[0.5], noise=[3.0])
    assert aoa.predict(moved)[0][0] < aoa.predict(_frame(a=[3.0], noise=[0.5]))[0][0]
    assert aoa.predict(base)[1][0]


def test_categorical_covariate_and_missing_values():
    lc = pd.Categorical(["bog", "fen", "bog", "fen", "tundra", "bog"])
    train = _frame(a=[0.0, 0.1, 0.2, 0.3, 0.4, 0.5], lc=lc)
    aoa = AreaOfApplicability().fit(train)
    new = _frame(
        a=[0.25, 0.25, np.nan],
        lc=pd.Categorical(["fen", "glacier", "bog"]),
    )
    di, inside = aoa.predict(new)
    assert np.isfinite(di[0]) and inside[0]
    assert np.isnan(di[1]) and not inside[1]  # level never seen in training
    assert np.isnan(di[2]) and not inside[2]  # missing covariate
    with pytest.raises(ModelError, match="row 1"):
        AreaOfApplicability().fit(_frame(a=[0.0, np.nan, 1.0]))


def test_design_space_keeps_unseen_classes_apart_and_measurable():
    """``design_space``: seen rows are the DI's own space (their nearest training point is
    their DI); a class no training point has gets zero indicators and a group of its own,
    so two of its rows are as far apart as their numeric covariates; a missing numeric
    value stays undefined."""
    rng = np.random.default_rng(4)
    n = 60
    train = _frame(
        a=rng.normal(0, 1, n),
        b=rng.uniform(0, 10, n),
        lc=pd.Categorical(rng.choice(["bog", "fen"], n), categories=["bog", "fen"]),
    )
    aoa = AreaOfApplicability().fit(train)
    cats = ["bog", "fen", "glacier", "rock"]
    new = _frame(
        a=[0.1, 0.1, 0.3, 1.3, 0.3, np.nan],
        b=[5.0, 5.0, 2.0, 6.0, 2.0, 1.0],
        lc=pd.Categorical(["bog", "glacier", "glacier", "glacier", "rock", "fen"], categories=cats),
    )
    F, group = aoa.design_space(new)
    di = aoa.predict(new)[0]
    # seen rows: the DI is the distance to the nearest training point in this space
    T, _ = aoa.design_space(train)
    assert np.sqrt(((T - F[0]) ** 2).sum(axis=1)).min() == pytest.approx(di[0], rel=1e-12)
    assert group[0] == 0 and group[5] == 0 and np.isnan(F[5]).any()
    # unseen classes: finite features, one group per class
    assert np.isnan(di[1:5]).all() and np.isfinite(F[1:5]).all()
    assert group[1] == group[2] == group[3] > 0 and group[4] > 0 and group[4] != group[1]
    # within a class: the distance over the numeric covariates alone, by hand
    w = aoa.weights_[:2] / aoa.scale_[:2] / aoa.mean_distance_
    by_hand = np.sqrt(
        (((new.loc[3, ["a", "b"]] - new.loc[1, ["a", "b"]]).to_numpy(float) * w) ** 2).sum()
    )
    assert np.sqrt(((F[3] - F[1]) ** 2).sum()) == pytest.approx(by_hand, rel=1e-12)


def test_measure_gives_the_brute_force_di_and_the_extrapolation_of_one_encoding():
    from scipy.spatial.distance import cdist

    rng = np.random.default_rng(11)
    n = 400
    levels = ["bog", "fen", "tundra"]
    train = _frame(
        a=rng.normal(0, 1, n),
        b=rng.gamma(2.0, 3.0, n),
        c=rng.uniform(-5, 5, n),
        lc=pd.Categorical(rng.choice(levels, n), categories=levels),
    )
    aoa = AreaOfApplicability().fit(train, folds=np.arange(n) % 5)
    m = 3000
    new = _frame(
        a=rng.normal(0, 2, m),  # wider than training: some cells beyond the range
        b=rng.gamma(2.0, 4.0, m),
        c=rng.uniform(-8, 8, m),
        lc=pd.Categorical(rng.choice([*levels, "glacier"], m), categories=[*levels, "glacier"]),
    )
    new.loc[::97, "b"] = np.nan
    di, inside, xd = aoa.measure(new)
    di_p, inside_p = aoa.predict(new)
    np.testing.assert_array_equal(di, di_p)
    np.testing.assert_array_equal(inside, inside_p)
    np.testing.assert_array_equal(xd, aoa.extrapolation(new))
    # the search tree's nearest distance is the exhaustive one, in the DI's own space
    T, Ttrain = aoa.transform(new), aoa.transform(train)
    ok = np.isfinite(T).all(axis=1)
    assert 0 < ok.sum() < m  # missing values and the unseen level are NaN rows
    brute = cdist(T[ok], Ttrain).min(axis=1) / aoa.mean_distance_
    np.testing.assert_allclose(di[ok], brute, rtol=1e-12, atol=0)
    assert np.isnan(di[~ok]).all() and not inside[~ok].any() and np.isnan(xd[~ok]).all()
    assert (xd[ok] > 0).any() and (xd[ok] == 0).any()
    # cross-validated training DI: the nearest point of the other folds, exhaustively
    folds = np.arange(n) % 5
    expect = np.empty(n)
    for k in range(5):
        expect[folds == k] = cdist(Ttrain[folds == k], Ttrain[folds != k]).min(axis=1)
    np.testing.assert_allclose(aoa.train_di_, expect / aoa.mean_distance_, rtol=1e-12, atol=0)


def test_cv_measure_is_the_di_of_another_partition_in_the_fitted_scaling():
    """``cv_measure(X, folds)`` gives what a fit with those folds gives as ``train_di_`` and
    ``train_xd_`` (the scaling, weights and mean distance do not depend on the folds), by
    brute force too, while the fitted threshold stays the first partition's."""
    from scipy.spatial.distance import cdist

    rng = np.random.default_rng(5)
    n = 300
    train = _frame(a=rng.normal(0, 1, n), b=rng.gamma(2.0, 3.0, n), c=rng.uniform(-5, 5, n))
    first = np.arange(n) % 5
    other = rng.permutation(first)
    other[:7] = -1  # never tested in that partition: no DI
    aoa = AreaOfApplicability().fit(train, weights={"a": 2.0, "b": 1.0, "c": 0.5}, folds=first)
    again = AreaOfApplicability().fit(train, weights={"a": 2.0, "b": 1.0, "c": 0.5}, folds=other)
    di, xd = aoa.cv_measure(train, other)
    np.testing.assert_array_equal(di, again.train_di_)
    np.testing.assert_array_equal(xd, again.train_xd_)
    assert np.isnan(di[:7]).all() and np.isfinite(di[7:]).all()
    T = aoa.transform(train)
    for f in range(5):
        test, rest = other == f, (other != f) & (other >= 0)
        brute = cdist(T[test], T[rest]).min(axis=1) / aoa.mean_distance_
        np.testing.assert_allclose(di[test], brute, rtol=1e-12)
    assert not np.array_equal(di[7:], aoa.train_di_[7:])  # another partition's neighbours
    di_own, xd_own = aoa.cv_measure(train, first)
    np.testing.assert_array_equal(di_own, aoa.train_di_)
    np.testing.assert_array_equal(xd_own, aoa.train_xd_)
    with pytest.raises(ModelError, match="X has 10 rows"):
        aoa.cv_measure(train.iloc[:10], first[:10])
