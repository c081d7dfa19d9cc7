"""Calibrated error variance from cross-validation (mapping.calibration).

Synthetic errors with a known variance as a function of the DI must be recovered;
the regional-error estimator is checked against a hand calculation, against the
fold-mean estimator it generalises and against a simulation with a known shared
error.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import cdist
from scipy.stats import norm

from mapping.calibration import (
    CalibratedModel,
    ErrorModel,
    cross_fitted_coverage,
    extrapolation_sd,
    feature_variogram_slope,
    fit_error_model,
    interval_log_moments,
    regional_error_sd,
    spatial_groups,
)
from mapping.exceptions import ModelError
from mapping.models import Variogram
from mapping.residual_errors import (
    _one_way_components,
    cv_block_error_sd,
    cv_error_variogram,
    within_group_covariance,
)
from mapping.run.shared_error import reference_di


def _draws(n: int, seed: int, ratio) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    di = rng.uniform(0.0, 1.0, n)
    s2 = rng.uniform(0.02, 0.08, n)
    var = s2 * ratio(di)
    return rng.normal(0.0, np.sqrt(var), n), s2, di, var


def test_ratio_model_recovers_a_known_ratio() -> None:
    e, s2, di, _ = _draws(6000, 1, lambda d: 1.0 + 4.0 * d)
    m = fit_error_model(e, s2, di)
    for d in (0.2, 0.5, 0.8):
        assert m.factor(d) == pytest.approx(1.0 + 4.0 * d, rel=0.12)
    # fresh errors from the same law are calibrated: z ~ N(0, 1), 90 % coverage
    e2, s22, di2, _ = _draws(20000, 2, lambda d: 1.0 + 4.0 * d)
    z = e2 / m.std(s22, di2)
    assert np.sqrt(np.mean(z**2)) == pytest.approx(1.0, abs=0.04)
    assert np.mean(np.abs(z) <= norm.ppf(0.95)) == pytest.approx(0.90, abs=0.015)
    # the uncalibrated variance is far too small (RMS z about 1.9)
    assert np.sqrt(np.mean(e2**2 / s22)) > 1.6


def test_weights_enter_every_bin_as_repeated_points() -> None:
    """One bin: the weighted ratio is the ratio of the points repeated by their integer
    weights; equal weights change nothing; a sub-population's errors can be weighted up."""
    e, s2, di, _ = _draws(200, 7, lambda d: 1.0 + d)
    w = np.random.default_rng(8).integers(0, 4, e.size).astype(float)
    one = {"max_bins": 1, "range_extrapolation": False}
    m = fit_error_model(e, s2, di, weights=w, **one)
    rep = np.repeat(np.arange(e.size), w.astype(int))
    r = fit_error_model(e[rep], s2[rep], di[rep], **one)
    assert m.values[0] == pytest.approx(r.values[0], rel=1e-12)
    assert m.values[0] == pytest.approx(np.sum(w * e**2) / np.sum(w * s2), rel=1e-12)
    same = fit_error_model(e, s2, di, weights=np.full(e.size, 2.5))
    plain = fit_error_model(e, s2, di)
    assert np.allclose(same.values, plain.values, rtol=1e-12)
    # errors twice as large in half of the points: weighting that half up raises the ratio
    big = np.arange(e.size) % 2 == 0
    e2 = np.where(big, 2 * e, e)
    up = fit_error_model(e2, s2, di, weights=np.where(big, 3.0, 1.0), **one)
    assert up.values[0] > 1.3 * fit_error_model(e2, s2, di, **one).values[0]
    with pytest.raises(ModelError, match="weights"):
        fit_error_model(e, s2, di, weights=np.ones(3))


def test_additive_model_recovers_a_known_variance_term() -> None:
    rng = np.random.default_rng(3)
    n = 12000
    di = rng.uniform(0.0, 1.0, n)
    s2 = rng.uniform(0.02, 0.08, n)
    g = 0.3 * di**2
    e = rng.normal(0.0, np.sqrt(s2 + g))
    m = fit_error_model(e, s2, di, kind="additive")
    for d in (0.3, 0.6, 0.9):
        assert m.factor(d) == pytest.approx(0.3 * d**2, abs=0.035)
    assert m.variance(0.05, 0.6) == pytest.approx(0.05 + 0.3 * 0.36, abs=0.035)


def test_fitted_values_are_monotone_and_a_constant_ratio_stays_flat() -> None:
    e, s2, di, _ = _draws(3000, 4, lambda d: np.full_like(d, 1.5))
    m = fit_error_model(e, s2, di, max_bins=15, min_per_bin=50)
    assert np.all(np.diff(m.values) >= 0)
    assert np.all(np.abs(m.values - 1.5) < 0.3)
    # a flat ratio gives (almost) no extrapolation slope: at twice the largest DI the
    # ratio stays within 0.5 of 1.5
    assert m.factor(2.0 * m.di_max) < 2.0
    # pool-adjacent-violators against a hand calculation: 3, 1 pool to 2 (weights 1, 1)
    from mapping.calibration import _pava

    assert _pava(np.array([3.0, 1.0, 4.0]), np.ones(3)).tolist() == [2.0, 2.0, 4.0]
    assert _pava(np.array([1.0, 3.0, 1.0]), np.array([1.0, 1.0, 3.0])).tolist() == [1.0, 1.5, 1.5]


def test_loglinear_shape_recovers_an_exponential_ratio_and_keeps_the_ratio_of_sums() -> None:
    """``c exp(beta DI)``: the curve of the law, its tangent beyond the last bin, and the
    level of the bins' ratio of sums over all points (not the biased mean of ``ln``)."""
    law = lambda d: 1.5 * np.exp(1.2 * d)  # noqa: E731
    e, s2, di, _ = _draws(6000, 11, law)
    m = fit_error_model(e, s2, di, shape="loglinear", range_extrapolation=False)
    for d in (0.2, 0.5, 0.9):
        assert m.factor(d) == pytest.approx(law(d), rel=0.08)
    assert np.all(np.diff(m.values) > 0)
    # the values lie on one exponential through the knots
    beta = np.polyfit(m.knots, np.log(m.values), 1)[0]
    assert np.allclose(np.log(m.values), np.log(m.values[0]) + beta * (m.knots - m.knots[0]))
    assert beta == pytest.approx(1.2, rel=0.15)
    assert m.slope == pytest.approx(beta * m.values[-1], rel=1e-9)
    # the curve as applied, times the model's variance, sums to the squared errors
    assert np.sum(m.factor(di) * s2) == pytest.approx(np.sum(e**2), rel=1e-9)
    # fresh errors from the law are calibrated
    e2, s22, di2, _ = _draws(20000, 12, law)
    z = e2 / m.std(s22, di2)
    assert np.sqrt(np.mean(z**2)) == pytest.approx(1.0, abs=0.04)


def test_loglinear_level_is_not_taken_by_a_few_points_far_beyond_the_bins() -> None:
    """A handful of held-out profiles far more dissimilar than the last bin's mean: the
    level is the ratio of sums under the curve as applied (the tangent beyond the last
    knot), so they cannot drive the ratio inside the bins towards zero."""
    law = lambda d: 1.5 * np.exp(2.0 * d)  # noqa: E731
    e, s2, di, _ = _draws(600, 14, law)
    far = np.array([2.5, 3.0, 4.0, 5.0, 6.0])
    rng = np.random.default_rng(15)
    e = np.concatenate([e, rng.normal(0.0, np.sqrt(0.05 * law(1.0)), far.size)])
    s2, di = np.concatenate([s2, np.full(far.size, 0.05)]), np.concatenate([di, far])
    m = fit_error_model(e, s2, di, shape="loglinear", range_extrapolation=False)
    for d in (0.2, 0.5):
        assert m.factor(d) == pytest.approx(law(d), rel=0.2)


def test_loglinear_shape_of_a_falling_ratio_is_flat_at_the_ratio_of_sums() -> None:
    e, s2, di, _ = _draws(3000, 13, lambda d: 3.0 - 2.0 * d)
    m = fit_error_model(e, s2, di, shape="loglinear")
    assert np.ptp(m.values) == 0.0 and m.slope == 0.0
    assert m.values[0] == pytest.approx(np.sum(e**2) / np.sum(s2), rel=1e-9)
    with pytest.raises(ModelError, match="loglinear"):
        fit_error_model(e, s2, di, shape="loglinear", kind="additive")
    with pytest.raises(ModelError, match="shape"):
        fit_error_model(e, s2, di, shape="spline")


def test_loglinear_excess_varies_less_between_refits_than_the_isotonic_steps() -> None:
    """What a zone's shared extrapolation error depends on: the excess ratio of a cell at
    a DI above the training points' median. Refitted on fresh draws of the same law (new
    profiles, a rerun), the steps of the isotonic fit move it much more than the smooth
    curve does, and both are unbiased for the law's excess."""
    law = lambda d: 1.5 * np.exp(1.0 * d)  # noqa: E731
    cells = np.array([0.45, 0.6, 0.75])
    excess: dict[str, list[np.ndarray]] = {"isotonic": [], "loglinear": []}
    for seed in range(40):
        e, s2, di, _ = _draws(500, 100 + seed, law)
        ref = float(np.median(di))
        for shape, out in excess.items():
            m = fit_error_model(e, s2, di, shape=shape, range_extrapolation=False)
            out.append(m.factor(cells) - m.factor(ref))
    true = law(cells) - law(0.5)
    iso, smooth = np.array(excess["isotonic"]), np.array(excess["loglinear"])
    assert np.all(np.abs(smooth.mean(axis=0) - true) < 0.1 + 0.15 * np.abs(true))
    assert np.all(smooth.std(axis=0) < 0.7 * iso.std(axis=0))


def test_extrapolation_beyond_the_cross_validated_di() -> None:
    e, s2, di, _ = _draws(4000, 5, lambda d: 1.0 + 4.0 * d)
    lin = fit_error_model(e, s2, di)
    const = fit_error_model(e, s2, di, extrapolate="constant")
    last = lin.knots[-1]
    # linear: keeps rising beyond the last knot with the slope of the bins (~4)
    assert lin.slope == pytest.approx(4.0, rel=0.2)
    assert lin.factor(last + 1.0) == pytest.approx(lin.values[-1] + lin.slope, rel=1e-12)
    assert lin.factor(3.0) > lin.factor(2.0) > lin.factor(1.0)
    # constant: the last value
    assert const.factor(3.0) == pytest.approx(const.values[-1])
    # a missing DI (unseen category) is treated as beyond the largest CV DI, not as 0
    v_nan = lin.variance(np.array([0.05]), np.array([np.nan]))[0]
    assert v_nan >= lin.variance(np.array([0.05]), np.array([lin.di_max]))[0]
    assert v_nan == pytest.approx(0.05 * lin.factor(lin.di_max + 1.0))


def test_noise_variance_is_removed_for_cell_values() -> None:
    # observation = cell value + noise (var 0.02); the model's variance includes the
    # noise as a nugget; the cell's error variance is 2 x the model's structural part
    rng = np.random.default_rng(6)
    n = 8000
    di = rng.uniform(0.0, 1.0, n)
    struct = rng.uniform(0.02, 0.08, n)
    noise = 0.02
    cell_err = rng.normal(0.0, np.sqrt(2.0 * struct))
    e = cell_err + rng.normal(0.0, np.sqrt(noise), n)
    m = fit_error_model(e, struct + noise, di, noise_var=noise, extrapolate="constant")
    assert np.all(np.abs(m.values - 2.0) < 0.25)
    v = m.variance(struct + noise, di)
    assert np.mean(cell_err**2) / np.mean(v) == pytest.approx(1.0, abs=0.05)


def test_quantiles_are_gaussian_on_the_log_scale() -> None:
    m = ErrorModel(
        kind="ratio",
        knots=np.array([0.0, 1.0]),
        values=np.array([2.0, 2.0]),
        slope=0.0,
        noise_var=0.0,
        n=100,
        counts=np.array([50, 50]),
        raw=np.array([2.0, 2.0]),
        di_max=1.0,
    )
    mu, s2 = np.array([1.0, 2.0]), np.array([0.08, 0.02])
    q = m.quantiles(mu, s2, np.array([0.5, 0.5]), (0.05, 0.5, 0.95))
    sd = np.sqrt(2.0 * s2)
    assert np.allclose(np.log(q[:, 1]), mu)
    assert np.allclose(np.log(q[:, 2]), mu + 1.6448536 * sd)
    assert np.allclose(
        m.quantiles(mu, s2, [0.5, 0.5], (0.05,), log=False)[:, 0], mu - 1.6448536 * sd
    )
    frame = m.to_frame()
    assert list(frame.columns) == ["di", "n", "raw", "fitted"]


def test_interval_log_moments_round_trip() -> None:
    mu = np.array([0.5, 2.0, 3.1])
    s = np.array([0.1, 0.3, 0.7])
    for q in ((0.05, 0.95), (0.1, 0.8)):
        lo = np.exp(mu + norm.ppf(q[0]) * s)
        hi = np.exp(mu + norm.ppf(q[1]) * s)
        m, v = interval_log_moments(lo, hi, q)
        assert np.allclose(m, mu) and np.allclose(v, s**2)
    m, v = interval_log_moments(mu - s, mu + s, (norm.cdf(-1), norm.cdf(1)), log=False)
    assert np.allclose(m, mu) and np.allclose(v, s**2)


def test_bad_arguments() -> None:
    e, s2, di, _ = _draws(200, 7, lambda d: 1.0 + d)
    with pytest.raises(ModelError, match="kind"):
        fit_error_model(e, s2, di, kind="isotonic")
    with pytest.raises(ModelError, match="extrapolate"):
        fit_error_model(e, s2, di, extrapolate="spline")
    with pytest.raises(ModelError, match="at least 30"):
        fit_error_model(e[:10], s2[:10], di[:10])
    with pytest.raises(ModelError, match="200, 199 and 200"):
        fit_error_model(e, s2[:-1], di)
    with pytest.raises(ModelError, match="noise_var"):
        fit_error_model(e, s2, di, noise_var=-1.0)


# --------------------------------------------------------------------------- regional error
def test_regional_error_hand_calculation_and_fold_means() -> None:
    # two groups of two: means 1 and 3 about 2 -> MSB = 2 * 1 + 2 * 1 = 4; deviations
    # -1, 1, -1, 1 on 2 df -> MSW = 2; n0 = 2: tau^2 = (4 - 2) / 2 = 1
    e = np.array([0.0, 2.0, 2.0, 4.0])
    g = np.array([0, 0, 1, 1])
    assert regional_error_sd(e, g) == pytest.approx(1.0)
    # equal group means: nothing regional
    assert regional_error_sd(np.array([0.0, 1.0, 1.0, 0.0]), g) == 0.0
    # one group: no between-group information
    assert regional_error_sd(e, np.zeros(4, dtype=int)) == 0.0
    # rows never tested (-1) are left out
    assert regional_error_sd(np.r_[e, 99.0], np.r_[g, -1]) == pytest.approx(1.0)


def test_regional_error_equals_the_fold_mean_estimator_for_balanced_folds() -> None:
    rng = np.random.default_rng(8)
    folds = np.repeat(np.arange(5), 40)
    obs = np.exp(rng.normal(2.0, 0.5, 200))
    pred = obs * np.exp(rng.normal(0.0, 0.3, 200) + rng.normal(0.0, 0.1, 5)[folds])
    cv = pd.DataFrame({"fold": folds, "observed": obs, "predicted": pred})
    e = np.log(pred) - np.log(obs)
    assert regional_error_sd(e, folds) == pytest.approx(cv_block_error_sd(cv), rel=1e-9)


def test_regional_error_with_many_groups_recovers_the_shared_error() -> None:
    # 60 patches of 15 points; each patch shares an error (sd 0.1), each point has its
    # own (sd 0.4); every fold holds 12 patches, so a fold's mean carries 0.1 / sqrt(12)
    rng = np.random.default_rng(9)
    est_groups, est_folds = [], []
    for _ in range(25):
        centres = rng.uniform(0, 1e6, (60, 2))
        xy = np.repeat(centres, 15, axis=0) + rng.normal(0, 2e3, (900, 2))
        patch = np.repeat(np.arange(60), 15)
        folds = patch % 5
        e = rng.normal(0.0, 0.1, 60)[patch] + rng.normal(0.0, 0.4, 900)
        groups = spatial_groups(xy, folds, size=15)
        assert len(np.unique(groups)) == 60
        est_groups.append(regional_error_sd(e, groups))
        est_folds.append(regional_error_sd(e, folds))
    est_groups, est_folds = np.array(est_groups), np.array(est_folds)
    # patches (59 df): the patch-scale error, unbiased in variance and tight; folds
    # (4 df): the fold-scale error, 0.1 / sqrt(12), often estimated as zero
    assert np.mean(est_groups**2) == pytest.approx(0.01, rel=0.15)
    assert np.std(est_groups**2) / 0.01 < 0.5
    assert np.mean(est_folds**2) == pytest.approx(0.01 / 12, rel=0.5)
    assert np.std(est_folds**2) / (0.01 / 12) > 0.8
    assert np.mean(est_folds == 0) > 0.1


def test_regional_error_pooled_over_intervals() -> None:
    rng = np.random.default_rng(10)
    errors, groups = {}, {}
    for k, (own, n) in {"0-30": (0.3, 600), "0-100": (0.5, 400)}.items():
        patch = np.repeat(np.arange(n // 10), 10)
        # regional share of the variance: 0.1^2 / (0.1^2 + 0.3^2) = 0.1 for 0-30,
        # 0.1667^2 / (0.1667^2 + 0.5^2) = 0.1 for 0-100
        tau = own / 3.0
        errors[k] = rng.normal(0.0, tau, n // 10)[patch] + rng.normal(0.0, own, n)
        groups[k] = patch
    sep = regional_error_sd(errors, groups, pool=False)
    pooled = regional_error_sd(errors, groups)
    assert set(pooled) == {"0-30", "0-100"}
    # the pooled share scales each interval by its own variance: ratio ~ 0.5 / 0.3
    assert pooled["0-100"] / pooled["0-30"] == pytest.approx(0.5 / 0.3, rel=0.05)
    assert pooled["0-30"] == pytest.approx(0.1, rel=0.4)
    assert sep["0-100"] == pytest.approx(0.1667, rel=0.5)
    with pytest.raises(ModelError, match="same intervals"):
        regional_error_sd(errors, {"0-30": groups["0-30"]})


def test_a_correlated_residual_field_is_not_taken_for_regional_error() -> None:
    """Five folds of 40 points in compact regions; errors are a residual field only
    (exponential, psill 0.04, range 60 km, nugget 0.05), no regional error. The one-way
    method of moments takes the field's covariance within a fold for regional error
    (its mean, unclipped, is ``c̄``); net of :func:`within_group_covariance` it is zero
    on average, and the field's share is what the draws hold already."""
    v = Variogram("exponential", psill=0.04, range=60e3, nugget=0.05)
    rng = np.random.default_rng(12)
    centres = np.array([[0, 0], [600e3, 0], [0, 600e3], [600e3, 600e3], [300e3, 300e3]])
    xy = np.repeat(centres, 40, axis=0) + rng.normal(0, 60e3, (200, 2))
    folds = np.repeat(np.arange(5), 40)
    cov = v.sill - v(cdist(xy, xy))
    chol = np.linalg.cholesky(cov + 1e-12 * np.eye(200))
    cbar = within_group_covariance(xy, folds, v)
    # by hand: the mean off-diagonal covariance within the folds
    same = (folds[:, None] == folds[None, :]) & ~np.eye(200, dtype=bool)
    assert cbar == pytest.approx(float(cov[same].mean()), rel=1e-12)
    assert 0.2 * v.psill < cbar < v.psill
    raw = []
    for _ in range(400):
        msb, msw, n0, _df = _one_way_components(chol @ rng.standard_normal(200), folds)
        raw.append((msb - msw) / n0)
    raw = np.array(raw)
    se = raw.std() / np.sqrt(len(raw))
    assert abs(raw.mean() - cbar) < 3 * se  # the plain estimator's bias is c̄
    assert raw.mean() > 5 * se  # and it is not zero
    e = chol @ rng.standard_normal(200)
    plain = regional_error_sd(e, folds)
    net = regional_error_sd(e, folds, shared=cbar)
    assert net == pytest.approx(np.sqrt(max(plain**2 - cbar, 0.0)), rel=1e-12)


def test_spatial_groups_stay_within_folds() -> None:
    rng = np.random.default_rng(11)
    xy = rng.uniform(0, 1e5, (100, 2))
    folds = np.r_[np.zeros(40, int), np.ones(55, int), -np.ones(5, int)]
    g = spatial_groups(xy, folds, size=10)
    assert np.all(g[95:] == -1)
    assert set(g[:40]).isdisjoint(set(g[40:95]))
    assert len(np.unique(g[:40])) == 4 and len(np.unique(g[40:95])) == 5
    with pytest.raises(ModelError, match="size"):
        spatial_groups(xy, folds, size=1)


# --------------------------------------------------------------------------- the wrapped model
def _log_trend_on_one_covariate(seed: int, n: int) -> tuple[pd.DataFrame, Any, Any]:
    """Regression kriging on log stocks with a trend in one covariate ``t``, and its AOA
    fitted with five folds: ``(X, model, aoa)``."""
    from mapping.aoa import AreaOfApplicability
    from mapping.models import OrdinaryKriging, RegressionKriging

    rng = np.random.default_rng(seed)
    X = pd.DataFrame(
        {"x": rng.uniform(0, 2e5, n), "y": rng.uniform(0, 2e5, n), "t": rng.uniform(-4, 0, n)}
    )
    y = np.exp(2.0 + 0.2 * X["t"] + rng.normal(0, 0.2, n))
    model = RegressionKriging(
        kriging=OrdinaryKriging(variogram="exponential"), log_transform=True
    ).fit(X, y)
    return X, model, AreaOfApplicability().fit(X, folds=np.arange(n) % 5)


def test_calibrated_model_widens_regression_kriging_where_dissimilar() -> None:
    from mapping.aoa import AreaOfApplicability
    from mapping.predict import _predict_block

    n = 150
    X, model, aoa = _log_trend_on_one_covariate(seed=12, n=n)
    em = ErrorModel(
        kind="ratio",
        knots=np.array([0.0, 0.1]),
        values=np.array([1.0, 2.0]),
        slope=10.0,
        noise_var=0.0,
        n=n,
        counts=np.array([75, 75]),
        raw=np.array([1.0, 2.0]),
        di_max=0.1,
    )
    cal = CalibratedModel(model, em, aoa)
    # a cold cell far outside the training range and a cell among the profiles
    Xn = pd.DataFrame({"x": [1e5, 1e5], "y": [1e5, 1e5], "t": [-2.0, -12.0]})
    comp = model.predict_components(Xn)
    mu, s2 = comp["trend"] + comp["residual"], comp["trend_var"] + comp["krige_var"]
    di = aoa.predict(Xn)[0]
    v = em.variance(s2, di)
    assert v[1] > 5 * s2[1] and di[1] > 1.0
    np.testing.assert_allclose(cal.predict(Xn), model.predict(Xn))  # the mean is unchanged
    mean, std = cal.predict(Xn, return_std=True)
    np.testing.assert_allclose(std, mean * np.sqrt(np.expm1(v)), rtol=1e-12)
    q = cal.predict_quantiles(Xn, (0.05, 0.95))
    np.testing.assert_allclose(np.log(q[:, 1]), mu + 1.6448536 * np.sqrt(v), rtol=1e-6)
    # the grid kernel takes it in place of the model, unchanged
    out = _predict_block(
        {"t": np.array([[-2.0, -12.0]])}, np.array([1e5, 1e5 + 1]), np.array([1e5]), cal
    )
    assert out["upper"][0, 1] / out["lower"][0, 1] > 2 * out["upper"][0, 0] / out["lower"][0, 0]
    assert list(cal.feature_names_in_) == ["x", "y", "t"]
    import pickle  # Dask ships it to workers

    again = pickle.loads(pickle.dumps(cal))
    np.testing.assert_allclose(again.predict_quantiles(Xn, (0.05, 0.95)), q)

    import copy

    # With the map's AOA layer (a copy, as on a Dask worker) the DI is searched once and
    # the statistics do not move.
    class CountingAOA(AreaOfApplicability):
        calls = 0

        def predict(self, X):  # type: ignore[no-untyped-def]
            CountingAOA.calls += 1
            return super().predict(X)

    counting = CountingAOA().fit(X, folds=np.arange(n) % 5)
    layer = copy.deepcopy(counting)
    assert layer.fingerprint() == counting.fingerprint() == aoa.fingerprint()
    assert AreaOfApplicability().fit(X.iloc[:100]).fingerprint() != aoa.fingerprint()
    block = ({"t": np.array([[-2.0, -12.0]])}, np.array([1e5, 1e5 + 1]), np.array([1e5]))
    shared = _predict_block(*block, CalibratedModel(model, em, counting), aoa=layer)
    assert CountingAOA.calls == 1
    alone = _predict_block(*block, cal, aoa=AreaOfApplicability().fit(X.iloc[:100]))
    for k in ("mean", "std", "lower", "median", "upper"):
        np.testing.assert_array_equal(shared[k], out[k])
        np.testing.assert_array_equal(alone[k], out[k])


def test_cross_fitted_coverage_is_nominal_when_the_error_model_is_right() -> None:
    # errors with variance 2 * s2 * (1 + DI): the cross-fitted error model recovers the
    # ratio, so the held-out coverage is the nominal one; the model's own s2 under-covers

    rng = np.random.default_rng(5)
    n = 4000
    di = rng.uniform(0, 1, n)
    s2 = rng.uniform(0.05, 0.2, n)
    e = rng.normal(0, np.sqrt(2 * s2 * (1 + di)))
    folds = rng.integers(0, 5, n)
    rel, by_di = cross_fitted_coverage(e, s2, di, folds, levels=(0.5, 0.9), level=0.9)
    assert rel["observed"].to_numpy() == pytest.approx([0.5, 0.9], abs=0.025)
    # the model's own variance is 2-4 times too small: P(|z| <= 1.645 / sqrt(3)) ~ 0.66
    assert rel.loc[1, "observed_model"] < 0.75
    assert len(by_di) == 10 and by_di["n"].sum() == n
    assert by_di["observed"].between(0.84, 0.96).all()
    # uncalibrated coverage falls with the DI, calibrated does not
    assert by_di["observed_model"].iloc[0] > by_di["observed_model"].iloc[-1] + 0.05


def test_range_term_recovers_the_error_growth_beyond_the_fold_ranges() -> None:
    # CV errors with variance s2 (ratio 1 at every DI) plus b * xd² beyond the range
    rng = np.random.default_rng(21)
    n, b = 6000, 3.0
    di = rng.uniform(0, 1, n)
    s2 = rng.uniform(0.05, 0.2, n)
    # few points beyond their fold's range (as in kNNDM folds): the DI bins, fitted on all
    # points, absorb little of their excess
    xd = np.where(rng.uniform(size=n) < 0.05, rng.uniform(0.2, 0.6, n), 0.0)
    e = rng.normal(0, np.sqrt(s2 + b * xd**2))
    em = fit_error_model(e, s2, di, xd=xd, observed_var=0.5, range_cap=4.0)
    assert em.range_coef == pytest.approx(b, rel=0.2)
    assert em.range_linear == 0.0 and em.range_cap == pytest.approx(2.0)
    # the DI bins carry the beyond-range points' excess as well: 1 + 0.05 b E[xd²] / E[s2]
    # = 1.21 on average over the bins
    assert np.average(em.values, weights=em.counts) == pytest.approx(1.21, abs=0.1)
    # inside the range, or without xd, nothing is added; the cap bounds the term
    v0 = em.variance([0.1, 0.1, 0.1], [0.5, 0.5, 0.5])
    v = em.variance([0.1, 0.1, 0.1], [0.5, 0.5, 0.5], [0.0, 0.3, 10.0])
    assert v[0] == pytest.approx(v0[0])
    assert v[1] == pytest.approx(v0[1] + em.range_coef * 0.09)
    assert v[2] == pytest.approx(2.0)
    # NaN xd (no DI either) adds nothing; too few points beyond the range: no CV term
    assert em.variance([0.1], [0.5], [np.nan])[0] == pytest.approx(v0[0])
    few = np.where(np.arange(n) < 3, 0.2, 0.0)
    assert fit_error_model(e, s2, di, xd=few).range_coef == 0.0
    off = fit_error_model(e, s2, di, xd=xd, range_slope=1.0, range_extrapolation=False)
    assert off.range_coef == 0.0 and off.range_linear == 0.0


def test_feature_variogram_slope_of_a_random_walk() -> None:
    # a Brownian path along one covariate: gamma(h) = sigma² h / 2 exactly in expectation
    rng = np.random.default_rng(8)
    sigma2, slopes = 0.8, []
    for _ in range(100):
        t = np.sort(rng.uniform(0, 1, 400))
        y = np.cumsum(rng.normal(0, np.sqrt(sigma2 * np.diff(t, prepend=0.0))))
        slopes.append(feature_variogram_slope(t[:, None], y, unit=1.0))
    assert np.mean(slopes) == pytest.approx(sigma2 / 2, rel=0.1)
    # the unit rescales h: slope per unit of 2 is twice the slope per unit of 1
    assert feature_variogram_slope(t[:, None], y, unit=2.0) == pytest.approx(2 * slopes[-1])
    assert np.isnan(feature_variogram_slope(np.zeros((2, 1)), [0.0, 1.0]))


def test_range_term_covers_a_flat_extrapolation_of_a_random_walk() -> None:
    # Known truth: f is a Brownian path along a covariate t in [0, 2]; the profiles cover
    # only t <= 1 and a flat model (a forest beyond its training range) predicts f(1)
    # for every t > 1. The error there, f(t) - f(1), has variance sigma² (t - 1): the
    # range term 2 * slope * xd, with the slope of the profiles' feature-space
    # semivariogram, gives nominal 90 % intervals over many worlds.
    from mapping.aoa import AreaOfApplicability

    rng = np.random.default_rng(30)
    sigma2 = 0.5
    em0 = ErrorModel(
        kind="ratio",
        knots=np.array([0.0]),
        values=np.array([1.0]),
        slope=0.0,
        noise_var=0.0,
        n=1,
        counts=np.array([1]),
        raw=np.array([1.0]),
        di_max=1.0,
    )
    inside, n_cells = 0, 0
    for _ in range(60):
        t = np.sort(rng.uniform(0, 2, 800))
        f = np.cumsum(rng.normal(0, np.sqrt(sigma2 * np.diff(t, prepend=0.0))))
        train = t <= 1.0
        X = pd.DataFrame({"x": t * 0.0, "y": t * 0.0, "t": t})
        aoa = AreaOfApplicability().fit(X[train])
        slope = feature_variogram_slope(aoa.transform(X[train]), f[train], unit=aoa.mean_distance_)
        em = dataclasses.replace(em0, range_linear=2 * slope)
        cells = ~train
        xd = aoa.extrapolation(X[cells])
        sd = em.std(np.full(cells.sum(), 1e-12), np.zeros(cells.sum()), xd)
        err = f[cells] - f[train][-1]
        inside += int(np.sum(np.abs(err) <= norm.ppf(0.95) * sd))
        n_cells += int(cells.sum())
    # measured 0.857: one path's semivariogram slope is a noisy estimate (about 40 % from
    # path to path), and a too narrow interval loses more than a too wide one gains
    assert 0.82 <= inside / n_cells <= 0.93
    # without the term the flat model's interval would be empty
    assert em0.variance([1e-12], [0.0], [1.0])[0] == pytest.approx(1e-12)


def test_calibrated_model_widens_cells_beyond_the_training_range() -> None:
    n = 120
    X, model, aoa = _log_trend_on_one_covariate(seed=4, n=n)
    em = ErrorModel(
        kind="ratio",
        knots=np.array([0.0]),
        values=np.array([1.0]),
        slope=0.0,
        noise_var=0.0,
        n=n,
        counts=np.array([n]),
        raw=np.array([1.0]),
        di_max=0.1,
        range_linear=0.5,
    )
    # the same model's variance and DI (one covariate, the same distance to the nearest
    # profile); the second cell lies beyond the coldest profile
    lo, hi = X["t"].min(), X["t"].max()
    Xn = pd.DataFrame({"x": [1e5, 1e5], "y": [1e5, 1e5], "t": [hi + 0.0, lo - 0.5]})
    comp = model.predict_components(Xn)
    s2 = comp["trend_var"] + comp["krige_var"]
    di = aoa.predict(Xn)[0]
    xd = aoa.extrapolation(Xn)
    assert xd[0] == 0.0 and xd[1] > 0
    _, std = CalibratedModel(model, em, aoa).predict(Xn, return_std=True)
    mean = model.predict(Xn)
    v = em.variance(s2, di) + np.array([0.0, 0.5 * xd[1]])
    np.testing.assert_allclose(std, mean * np.sqrt(np.expm1(v)), rtol=1e-9)


def test_map_block_measures_di_and_extrapolation_once_with_the_same_numbers() -> None:
    # The map's AOA layer gives the calibrated model its DI and extrapolation distance
    # (AreaOfApplicability.measure, one encoding); the statistics must be the ones the
    # model computes on its own.
    from mapping.predict import _predict_block

    n = 150
    _, model, aoa = _log_trend_on_one_covariate(seed=9, n=n)
    rng = np.random.default_rng(10)
    em = ErrorModel(
        kind="ratio",
        knots=np.array([0.0, 0.5]),
        values=np.array([1.0, 1.5]),
        slope=0.4,
        noise_var=0.0,
        n=n,
        counts=np.array([n // 2, n - n // 2]),
        raw=np.array([1.0, 1.5]),
        di_max=1.0,
        range_linear=0.5,
    )
    cal = CalibratedModel(model, em, aoa)
    assert cal.uses_extrapolation
    ny, nx = 12, 15
    t = rng.uniform(-6, 1, (ny, nx))  # a third of the cells beyond the training range
    t[3, 4] = np.nan
    xs, ys = np.linspace(0, 2e5, nx), np.linspace(2e5, 0, ny)
    out = _predict_block({"t": t}, xs, ys, cal, (0.05, 0.95), aoa=aoa)
    xx, yy = np.meshgrid(xs, ys)
    ok = np.isfinite(t).ravel()
    cells = pd.DataFrame({"x": xx.ravel()[ok], "y": yy.ravel()[ok], "t": t.ravel()[ok]})
    assert (aoa.extrapolation(cells) > 0).sum() > 20
    alone = cal.predict_stats(cells, (0.05, 0.95))
    for k, v in alone.items():
        np.testing.assert_array_equal(out[k].ravel()[ok], v.astype("float32"), err_msg=k)
    assert np.isnan(out["std"][3, 4]) and np.isnan(out["aoa"][3, 4])
    np.testing.assert_array_equal(out["aoa"].ravel()[ok], aoa.predict(cells)[1].astype("float32"))


def test_extrapolation_sd_by_hand() -> None:
    """The ln-scale error above the in-domain one, from the maps a log model writes:
    ``mean = exp(mu + s2 / 2)``, ``median = exp(mu)``, ``std = mean sqrt(exp(v) - 1)``."""
    em = ErrorModel(kind="ratio", knots=np.array([0.1, 0.5, 1.0]), values=np.array([1.2, 1.5, 3.0]),
                    slope=0.0, noise_var=0.0, n=100, counts=np.array([30, 40, 30]),
                    raw=np.array([1.2, 1.5, 3.0]), di_max=1.2, range_coef=0.5)  # fmt: skip
    mu = np.array([1.0, 2.0, 0.5, 1.5, np.nan])
    s2 = np.array([0.04, 0.09, 0.04, 0.01, 0.04])
    di = np.array([0.05, 0.3, 1.0, 1.0, 1.0])
    xd = np.array([0.0, 0.0, 0.0, 0.4, 0.0])
    v = em.variance(s2, di, xd)
    mean, median = np.exp(mu + s2 / 2), np.exp(mu)
    std = mean * np.sqrt(np.expm1(v))
    got = extrapolation_sd(mean, median, std, em, di_in=0.1)
    # by hand: r(0.1) = 1.2; r(0.3) = 1.35; r(1.0) = 3; the range term 0.5 * 0.4² = 0.08
    want = np.sqrt([0.0, 0.09 * (1.35 - 1.2), 0.04 * (3.0 - 1.2), 0.01 * 1.8 + 0.08, 0.0])
    assert got == pytest.approx(want, abs=1e-7)  # sqrt of rounding at 0
    # a reference DI as dissimilar as the cell leaves only its range term
    assert extrapolation_sd(mean, median, std, em, di_in=1.0)[3] == pytest.approx(0.08**0.5)


def test_reference_di_median_or_the_mean_ratio_by_hand() -> None:
    """The in-domain reference of the shared extrapolation error: the training points'
    median DI, or the first of their DIs where the curve reaches its mean over them."""
    em = ErrorModel(kind="ratio", knots=np.array([0.0, 1.0]), values=np.array([1.0, 3.0]),
                    slope=0.0, noise_var=0.0, n=100, counts=np.array([50, 50]),
                    raw=np.array([1.0, 3.0]), di_max=1.0)  # fmt: skip
    di = np.array([1.0, 0.0, 0.5, 0.25])  # any order
    assert reference_di(em, di) == pytest.approx(0.375)
    # r = 1, 1.5, 2, 3 at 0, 0.25, 0.5, 1; mean 1.875, first reached at 0.5
    assert reference_di(em, di, "mean") == pytest.approx(0.5)
    # a convex curve puts the mean ratio above the median's
    steep = dataclasses.replace(em, knots=np.array([0.0, 0.5, 1.0]), values=np.array([1.0, 1.1, 9.0]),
                                counts=np.array([30, 40, 30]), raw=np.array([1.0, 1.1, 9.0]))  # fmt: skip
    # r = 1, 1.05, 1.1, 9: mean 3.04, first reached only at the largest DI
    assert reference_di(steep, di, "mean") == pytest.approx(1.0)
    # with a second curve, the mean is the second curve's (the one the excess comes from)
    two = dataclasses.replace(em, shared=steep)
    assert reference_di(two, di, "mean") == pytest.approx(1.0)
    assert reference_di(two, di) == pytest.approx(0.375)


def test_extrapolation_sd_with_a_second_curve_by_hand() -> None:
    """With ``ErrorModel.shared`` and the cells' DI, the DI's part of the excess is the
    second curve's rise above the in-domain level; the range term stays the map's."""
    steps = ErrorModel(kind="ratio", knots=np.array([0.1, 0.5, 1.0]), values=np.array([1.2, 1.2, 3.0]),
                       slope=0.0, noise_var=0.0, n=100, counts=np.array([30, 40, 30]),
                       raw=np.array([1.2, 1.2, 3.0]), di_max=1.2, range_coef=0.5)  # fmt: skip
    curve = dataclasses.replace(steps, values=np.array([1.0, 1.6, 2.6]), range_coef=0.0)
    em = dataclasses.replace(steps, shared=curve)
    mu = np.array([1.0, 2.0, 0.5, 1.5])
    s2 = np.array([0.04, 0.09, 0.04, 0.01])
    di = np.array([0.05, 0.3, 1.0, 1.0])
    xd = np.array([0.0, 0.0, 0.0, 0.4])
    v = em.variance(s2, di, xd)  # the cells' own variance: the steps' (and range term)
    np.testing.assert_allclose(v, steps.variance(s2, di, xd))
    mean, median = np.exp(mu + s2 / 2), np.exp(mu)
    std = mean * np.sqrt(np.expm1(v))
    got = extrapolation_sd(mean, median, std, em, di_in=0.1, di=di)
    # by hand: the curve's r(0.1) = 1.0, r(0.3) = 1.3, r(1.0) = 2.6; the steps are flat up
    # to 0.5, so the steps alone give the second cell nothing; the range term 0.5 * 0.4²
    want = np.sqrt([0.0, 0.09 * 0.3, 0.04 * 1.6, 0.01 * 1.6 + 0.08])
    assert got == pytest.approx(want, abs=1e-7)
    alone = extrapolation_sd(mean, median, std, em, di_in=0.1)  # no DI: the steps'
    assert alone == pytest.approx(np.sqrt([0.0, 0.0, 0.04 * 1.8, 0.01 * 1.8 + 0.08]), abs=1e-7)


def test_shared_shape_fits_a_second_curve_and_keeps_the_cells_steps() -> None:
    rng = np.random.default_rng(4)
    n = 400
    d = rng.uniform(0, 2, n)
    s2 = np.full(n, 0.05)
    e = rng.normal(0, np.sqrt(s2 * np.exp(0.8 * d)))
    steps = fit_error_model(e, s2, d)
    both = fit_error_model(e, s2, d, shared_shape="loglinear")
    curve = fit_error_model(e, s2, d, shape="loglinear")
    np.testing.assert_array_equal(both.values, steps.values)
    assert both.range_linear == steps.range_linear and both.slope == steps.slope
    assert both.shared is not None and both.shared.shared is None
    np.testing.assert_array_equal(both.shared.values, curve.values)
    assert both.shared.slope == curve.slope
    assert fit_error_model(e, s2, d, shared_shape="isotonic").shared is None
    with pytest.raises(ModelError, match="loglinear"):
        fit_error_model(e, s2, d, kind="additive", shared_shape="loglinear")


def test_a_variogram_of_standardised_cv_errors_recovers_their_correlation() -> None:
    """Three partitions' errors drawn from a field with a known exponential correlation
    (structured share 0.7, range 20 km) give it back; white errors give no structure; a
    partition given twice is the fit of one; fewer than 10 errors are refused."""
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 200e3, (600, 2))
    cov = 0.7 * np.exp(-cdist(xy, xy) / 20e3) + 0.3 * np.eye(600)
    chol = np.linalg.cholesky(cov)
    errors = [chol @ rng.standard_normal(600) for _ in range(3)]
    v = cv_error_variogram(xy, errors)
    assert v.psill / v.sill == pytest.approx(0.7, abs=0.1)
    assert v.range == pytest.approx(20e3, rel=0.3)
    assert v.sill == pytest.approx(1.0, abs=0.15)
    white = cv_error_variogram(xy, [rng.standard_normal(600) for _ in range(3)])
    assert white.psill / white.sill < 0.05
    one = cv_error_variogram(xy, errors[:1])
    assert cv_error_variogram(xy, [errors[0], errors[0]]) == one
    assert one != v  # the partitions are averaged, not the first taken
    with_nan = [np.where(np.arange(600) < 595, np.nan, e) for e in errors]
    with pytest.raises(ModelError, match="only 5 profiles"):
        cv_error_variogram(xy, with_nan)
