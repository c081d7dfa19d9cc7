"""The CV RMSE's block-bootstrap range (mapping.cv_bootstrap, CVResult.bootstrap)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mapping.cv_bootstrap import MIN_BLOCKS, block_bootstrap_rmse, block_ids
from mapping.validation import CVResult, bootstrap_rmse_range, metrics_table


def test_blocks_are_squares_anchored_at_the_origin() -> None:
    x = np.array([0.0, 99_999.0, 100_000.0, -1.0, 50_000.0])
    y = np.array([0.0, 99_999.0, 0.0, 0.0, 150_000.0])
    ids = block_ids(x, y, 100_000.0)
    assert ids[0] == ids[1]  # the same 100 km square
    assert len({ids[0], ids[2], ids[3], ids[4]}) == 4  # east, west, north of it
    # a point's block does not depend on the others
    assert block_ids(x[:2], y[:2], 100_000.0)[0] == block_ids(x[:2], y[:2], 100_000.0)[1]
    with pytest.raises(ValueError, match="block_m"):
        block_ids(x, y, 0.0)


def test_independent_errors_give_the_delta_method_range() -> None:
    """One error per block, independent: the range is the RMSE ± 1.645 standard errors of
    the delta method, SE(RMSE) = sd(e²) / (2 RMSE sqrt(n))."""
    rng = np.random.default_rng(1)
    n = 4000
    e = rng.normal(0.0, 2.0, n)
    lo, hi = block_bootstrap_rmse(e, np.arange(n), n_boot=4000, seed=3)
    rmse = np.sqrt(np.mean(e**2))
    se = np.std(e**2) / (2 * rmse * np.sqrt(n))
    assert lo == pytest.approx(rmse - 1.645 * se, abs=0.15 * se)
    assert hi == pytest.approx(rmse + 1.645 * se, abs=0.15 * se)


def test_blocks_keep_the_correlation_an_ordinary_bootstrap_loses() -> None:
    """Errors shared within clusters (e = a_cluster + b): over many surveys of 40 clusters,
    the block range holds the population RMSE about 90 % of the time; one block per
    point (the ordinary bootstrap) far less."""
    rng = np.random.default_rng(7)
    k, m = 40, 10
    true_rmse = np.sqrt(1.0 + 0.25)  # sd of a = 1, sd of b = 0.5
    clusters = np.repeat(np.arange(k), m)
    inside_block = inside_point = 0
    reps = 300
    for r in range(reps):
        e = rng.normal(0.0, 1.0, k)[clusters] + rng.normal(0.0, 0.5, k * m)
        lo, hi = block_bootstrap_rmse(e, clusters, n_boot=400, seed=r)
        inside_block += lo <= true_rmse <= hi
        lo, hi = block_bootstrap_rmse(e, np.arange(k * m), n_boot=400, seed=r)
        inside_point += lo <= true_rmse <= hi
    assert 0.82 <= inside_block / reps <= 0.95
    assert inside_point / reps < 0.6


def test_weights_are_repeated_points_within_their_block() -> None:
    rng = np.random.default_rng(2)
    e = rng.normal(size=60)
    blocks = np.repeat(np.arange(20), 3)
    w = rng.integers(1, 4, size=60)
    weighted = block_bootstrap_rmse(e, blocks, w.astype(float), seed=5)
    repeated = block_bootstrap_rmse(np.repeat(e, w), np.repeat(blocks, w), seed=5)
    assert weighted == pytest.approx(repeated, rel=1e-12)


def test_too_few_blocks_give_no_range_and_bad_input_is_refused() -> None:
    e = np.ones(50)
    assert np.isnan(block_bootstrap_rmse(e, np.arange(50) % (MIN_BLOCKS - 1))).all()
    assert not np.isnan(block_bootstrap_rmse(e + np.arange(50), np.arange(50) % MIN_BLOCKS)).any()
    with pytest.raises(ValueError, match="same length"):
        block_bootstrap_rmse(e, np.arange(49))
    with pytest.raises(ValueError, match="finite"):
        block_bootstrap_rmse(np.full(50, np.nan), np.arange(50))


def _cv(n: int, rng: np.random.Generator) -> CVResult:
    obs = rng.gamma(4.0, 2.0, n)
    pred = obs + rng.normal(0.0, 1.5, n)
    p = pd.DataFrame(
        {
            "row": np.arange(n),
            "fold": np.arange(n) % 5,
            "observed": obs,
            "predicted": pred,
            "lower": pred - 3,
            "upper": pred + 3,
        }
    )
    return CVResult(p, pd.DataFrame(), metrics_table(obs, pred), (0.05, 0.95), "KNNDM")


def test_cv_result_ranges_at_the_profiles_and_weighted() -> None:
    rng = np.random.default_rng(4)
    n = 300
    cv = _cv(n, rng)
    x, y = rng.uniform(0, 1e6, n), rng.uniform(0, 1e6, n)
    cv.weigh(rng.uniform(0.2, 3.0, n))
    X = pd.DataFrame({"x": x, "y": y})
    assert bootstrap_rmse_range(cv, X, {"block_m": 100_000.0, "seed": 1}) is None
    r = cv.ranges
    assert r is not None and r["cv_blocks"] == len(np.unique(block_ids(x, y, 1e5)))
    assert r["rmse_lower"] < cv.pooled["rmse"] < r["rmse_upper"]
    assert cv.area is not None and r["rmse_area_lower"] < cv.area["rmse"] < r["rmse_area_upper"]
    table = cv.summary().iloc[0]
    for key in ("rmse_lower", "rmse_upper", "rmse_area_lower", "rmse_area_upper", "n_eff"):
        assert key in table.index
    # the study area fits in a few blocks: no range, and the reason in one line
    said = bootstrap_rmse_range(cv, X / 10, {"block_m": 300_000.0, "seed": 1})
    assert said is not None and "cv.bootstrap_block" in said and "300 km" in said
    assert np.isnan(cv.ranges["rmse_lower"])


def test_further_partitions_pool_into_the_metrics_and_ranges() -> None:
    """``CVResult.pool_partitions``: a copy of the first partition changes no figure (each
    profile twice weighs as once, in the metrics and in every bootstrap draw); another
    partition's errors enter the RMSE as the mean of the two mean squares, weighted or not,
    while ``n`` and ``n_eff`` stay the profiles'."""
    rng = np.random.default_rng(8)
    n = 300
    x, y = rng.uniform(0, 1e6, n), rng.uniform(0, 1e6, n)
    X = pd.DataFrame({"x": x, "y": y})
    w = rng.uniform(0.2, 3.0, n)
    ranges = {"block_m": 100_000.0, "seed": 1}

    def finished(cv: CVResult) -> CVResult:
        cv.weigh(w)
        bootstrap_rmse_range(cv, X, ranges)
        return cv

    single = finished(_cv(n, np.random.default_rng(5)).pool_partitions([]))  # no further
    twice = _cv(n, np.random.default_rng(5))
    twice = finished(twice.pool_partitions([twice.predictions.copy()]))
    assert twice.pooled == pytest.approx(single.pooled)
    assert twice.area == pytest.approx(single.area)
    assert twice.ranges == pytest.approx(single.ranges)
    assert twice.summary().iloc[0]["partitions"] == 2
    assert "partitions" not in single.summary().columns

    other = single.predictions[["row", "fold", "observed", "predicted", "lower", "upper"]].copy()
    other["fold"] = rng.permutation(other["fold"].to_numpy())
    other["predicted"] = other["observed"] + rng.normal(0.0, 3.0, n)
    pooled = _cv(n, np.random.default_rng(5)).pool_partitions([other])
    pooled = finished(pooled)
    e1 = (single.predictions["predicted"] - single.predictions["observed"]).to_numpy() ** 2
    e2 = (other["predicted"] - other["observed"]).to_numpy() ** 2
    assert pooled.pooled["rmse"] == pytest.approx(np.sqrt((e1.mean() + e2.mean()) / 2))
    expected = np.sqrt((np.average(e1, weights=w) + np.average(e2, weights=w)) / 2)
    assert pooled.area is not None and pooled.area["rmse"] == pytest.approx(expected)
    assert pooled.pooled["n"] == n and pooled.area["n_eff"] == pytest.approx(single.area["n_eff"])
    assert pooled.ranges["rmse_lower"] < pooled.pooled["rmse"] < pooled.ranges["rmse_upper"]
