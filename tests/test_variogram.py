"""Variogram models, sample variograms and fitting, against R gstat and analytic values.

Reference numbers come from ``tests/data/gstat/make_reference.R`` (gstat 2.1.0).
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import GSTAT, xy_of
from scipy.special import kv

from mapping.exceptions import ModelError
from mapping.models import Variogram, sample_variogram
from mapping.models.variogram import (
    _initial_parts,
    default_cutoff,
    practical_range_factor,
    unit_semivariance,
)

REF = json.loads((GSTAT / "variogram.json").read_text())
WEIGHTS = {7: "gstat", 1: "npairs", 2: "cressie", 6: "ols"}
GSTAT_MODEL = {"Sph": "spherical", "Exp": "exponential", "Gau": "gaussian", "Mat": "matern"}


# --------------------------------------------------------------------------- sample variogram
def test_default_cutoff_is_gstats(gstat_data: pd.DataFrame) -> None:
    # gstat: 0.33333 (its DEF_fraction) x bounding-box diagonal
    assert default_cutoff(xy_of(gstat_data)) == pytest.approx(
        0.33333 * REF["bbox_diagonal"], rel=1e-15
    )


def test_sample_variogram_equals_gstat_default_binning(gstat_data: pd.DataFrame) -> None:
    s = sample_variogram(xy_of(gstat_data), gstat_data["z"])
    ref = REF["sample_default"]
    assert list(s.columns) == ["np", "dist", "gamma"]
    np.testing.assert_array_equal(s["np"], ref["np"])
    np.testing.assert_allclose(s["dist"], ref["dist"], rtol=1e-12)
    np.testing.assert_allclose(s["gamma"], ref["gamma"], rtol=1e-12)


def test_sample_variogram_equals_gstat_with_cutoff_and_width(gstat_data: pd.DataFrame) -> None:
    ref = REF["sample_custom"]
    s = sample_variogram(
        xy_of(gstat_data), gstat_data["z"], cutoff=ref["cutoff"], width=ref["width"]
    )
    np.testing.assert_array_equal(s["np"], ref["np"])
    np.testing.assert_allclose(s["dist"], ref["dist"], rtol=1e-12)
    np.testing.assert_allclose(s["gamma"], ref["gamma"], rtol=1e-12)


def test_bins_are_closed_on_the_right() -> None:
    # pair distances 1, 2, 3 with width 1: gstat puts d = 1 in the first bin [0, 1],
    # d = 2 in (1, 2], d = 3 in (2, 3]; the cutoff 3 keeps d = 3
    xy = np.array([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]])
    z = np.array([0.0, 1.0, 3.0])
    s = sample_variogram(xy, z, cutoff=3.0, width=1.0)
    np.testing.assert_array_equal(s["np"], [1, 1, 1])
    np.testing.assert_allclose(s["dist"], [1.0, 2.0, 3.0])
    np.testing.assert_allclose(s["gamma"], [0.5, 2.0, 4.5])  # (z_i - z_j)^2 / 2
    assert len(sample_variogram(xy, z, cutoff=2.5, width=1.0)) == 2  # d = 3 beyond the cutoff


# --------------------------------------------------------------------------- fitting
def _fit_id(f: dict) -> str:
    return f"{f['model']}-m{f['fit_method']}-{'nug' if f['fit_nugget'] else 'nonug'}"


FITS = [
    pytest.param(
        f,
        "sample_custom" if i == len(REF["fits"]) - 1 else "sample_default",
        id=_fit_id(f) + ("-custom" if i == len(REF["fits"]) - 1 else ""),
    )
    for i, f in enumerate(REF["fits"])
]


def _sample(which: str) -> pd.DataFrame:
    r = REF[which]
    return pd.DataFrame({"np": r["np"], "dist": r["dist"], "gamma": r["gamma"]})


@pytest.mark.parametrize(("ref", "which"), FITS)
def test_starting_values_are_gstats(ref: dict, which: str) -> None:
    s = _sample(which)
    parts = _initial_parts(
        GSTAT_MODEL[ref["model"]], s["dist"].to_numpy(), s["gamma"].to_numpy(), ref["fit_nugget"]
    )
    main = parts[-1]
    assert main.sill == pytest.approx(ref["init"]["psill"], rel=1e-14)
    assert main.range == pytest.approx(ref["init"]["range"], rel=1e-14)
    nugget = parts[0].sill if ref["fit_nugget"] else 0.0
    assert nugget == pytest.approx(ref["init"]["nugget"], rel=1e-14)


@pytest.mark.parametrize(("ref", "which"), FITS)
def test_fit_agrees_with_gstat_fit_variogram(ref: dict, which: str) -> None:
    """The issue's criterion is 5 %; gstat's iteration is reproduced, so it agrees to 1e-9."""
    v = Variogram.fit_sample(
        _sample(which),
        GSTAT_MODEL[ref["model"]],
        fit_nugget=ref["fit_nugget"],
        weights=WEIGHTS[ref["fit_method"]],
        nu=ref["kappa"],
    )
    for name in ("psill", "range", "nugget"):
        assert getattr(v, name) == pytest.approx(ref[name], rel=0.05, abs=1e-12), name
        assert getattr(v, name) == pytest.approx(ref[name], rel=1e-9, abs=1e-12), name


def test_fit_from_points_is_fit_of_sample_variogram(gstat_data: pd.DataFrame) -> None:
    ref = REF["fits"][0]  # Sph, fit.method 7, default binning
    v = Variogram.fit(xy_of(gstat_data), gstat_data["z"], "spherical")
    assert (v.psill, v.range, v.nugget) == pytest.approx(
        (ref["psill"], ref["range"], ref["nugget"]), rel=1e-9
    )


def test_fit_recovers_parameters_of_a_simulated_field() -> None:
    """Exponential field (gstools), psill 1, range 5, nugget 0.2, 3000 points in 100 x 100.

    The fitted values of one realisation scatter (relative sd over realisations:
    psill 13 %, range 21 %, nugget 24 %, sill 11 %); the mean over four seeded
    realisations is held to psill 15 %, range 30 %, nugget 40 %, sill 10 %.
    """
    gs = pytest.importorskip("gstools")
    fits = []
    for seed in range(4):
        rng = np.random.default_rng(seed)
        x, y = rng.uniform(0, 100, 3000), rng.uniform(0, 100, 3000)
        field = gs.SRF(gs.Exponential(dim=2, var=1.0, len_scale=5.0), seed=seed)((x, y))
        z = field + rng.normal(0.0, math.sqrt(0.2), x.size)
        v = Variogram.fit(np.column_stack([x, y]), z, "exponential")
        fits.append((v.psill, v.range, v.nugget, v.sill))
    psill, range_, nugget, sill = np.mean(fits, axis=0)
    assert psill == pytest.approx(1.0, rel=0.15)
    assert range_ == pytest.approx(5.0, rel=0.30)
    assert nugget == pytest.approx(0.2, rel=0.40)
    assert sill == pytest.approx(1.2, rel=0.10)


def test_too_few_lags_give_a_nugget_model() -> None:
    # cutoff 0.33333 x 5: only the pair at distance 1, gamma = (1 - 0)^2 / 2
    xy = np.array([[0.0, 0.0], [1.0, 0.0], [5.0, 0.0]])
    with pytest.warns(RuntimeWarning, match="only 1 non-empty lag"):
        v = Variogram.fit(xy, [0.0, 1.0, 2.0], "spherical")
    assert (v.psill, v.nugget) == (0.0, 0.5)


# --------------------------------------------------------------------------- model values
def test_model_values_by_hand() -> None:
    sph = Variogram("spherical", psill=2.0, range=100.0, nugget=0.5)
    # h = a/2: 1.5 * 0.5 - 0.5 * 0.125 = 0.6875 of the partial sill
    np.testing.assert_allclose(sph([0.0, 50.0, 100.0, 250.0]), [0.0, 0.5 + 2.0 * 0.6875, 2.5, 2.5])
    exp = Variogram("exponential", psill=2.0, range=100.0, nugget=0.5)
    np.testing.assert_allclose(exp(100.0), 0.5 + 2.0 * (1 - math.exp(-1)))
    gau = Variogram("gaussian", psill=2.0, range=100.0, nugget=0.5)
    np.testing.assert_allclose(gau(200.0), 0.5 + 2.0 * (1 - math.exp(-4)))
    # covariance = sill - gamma, and the sill at h = 0 (gstat)
    np.testing.assert_allclose(sph.covariance([0.0, 50.0, 300.0]), [2.5, 2.0 * 0.3125, 0.0])


def test_matern_is_gstats_mat() -> None:
    h = np.array([1.0, 30.0, 100.0, 400.0])
    # kappa = 0.5 is the exponential model; kappa = 1.5 has the closed form (1 + x) e^-x
    m05 = Variogram("matern", 1.0, 100.0, nu=0.5)
    # (1 - correlation cancels at small h: compare to 1e-9 relative)
    np.testing.assert_allclose(m05(h), Variogram("exponential", 1.0, 100.0)(h), rtol=1e-9)
    m15 = Variogram("matern", 1.0, 100.0, nu=1.5)
    x = h / 100.0
    np.testing.assert_allclose(m15(h), 1 - (1 + x) * np.exp(-x), rtol=1e-9)
    # general kappa: 1 - 2^(1-k)/Gamma(k) x^k K_k(x)
    m = Variogram("matern", 1.0, 100.0, nu=0.8)
    np.testing.assert_allclose(m(h), 1 - 2**0.2 / math.gamma(0.8) * x**0.8 * kv(0.8, x), rtol=1e-9)


def test_value_object() -> None:
    v = Variogram("Sph", 0.9, 3000, 0.1)  # gstat names are accepted
    assert v.model == "spherical" and v.sill == pytest.approx(1.0)
    assert v == Variogram.from_dict(v.to_dict()) and hash(v) == hash(
        Variogram.from_dict(v.to_dict())
    )
    assert v.to_gstat() == 'vgm(psill = 0.9, model = "Sph", range = 3000, nugget = 0.1)'
    with pytest.raises(AttributeError):
        v.psill = 2.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model": "cubic", "psill": 1, "range": 1}, "variogram model 'cubic' is not supported"),
        ({"model": "spherical", "psill": -1, "range": 1}, "psill and nugget must be >= 0"),
        ({"model": "spherical", "psill": 1, "range": 0}, "range must be > 0"),
        ({"model": "spherical", "psill": 0, "range": 1}, "sill"),
        ({"model": "matern", "psill": 1, "range": 1, "nu": 0}, "nu"),
        ({"model": "spherical", "psill": "a", "range": 1}, "psill must be a number"),
    ],
)
def test_invalid_variograms_are_model_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        Variogram(**kwargs)


# --------------------------------------------------------------------------- clustered data
CLUSTERED = json.loads((GSTAT / "clustered_fit.json").read_text())


def _case(name: str) -> pd.DataFrame:
    c = CLUSTERED[name]
    return pd.DataFrame({"np": c["np"], "dist": c["dist"], "gamma": c["gamma"]})


def test_clustered_fit_follows_gstat_to_the_refit_without_a_warning() -> None:
    """Residuals of clustered profiles (``make_clustered_fit.R``): the free-nugget stage
    spends all 200 of gstat 2.1's iterations heading for a negative nugget; the refit with
    the nugget at zero converges. 50 iterations (gstat < 2.1) stopped half-way, at a
    different model (range 62 km instead of 16.6 km), with a warning."""
    ref = CLUSTERED["clustered"]
    assert CLUSTERED["gstat_version"] == "2.1.0"
    assert any("No convergence after 200" in w for w in ref["warnings"])  # gstat's first stage
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # our final stage converges: nothing to report
        v = Variogram.fit_sample(_case("clustered"), "exponential")
    assert v.nugget == 0.0 and ref["nugget"] == 0.0
    assert v.psill == pytest.approx(ref["psill"], rel=1e-7)
    assert v.range == pytest.approx(ref["range"], rel=1e-7)


def test_a_real_non_convergence_warns_once() -> None:
    ref = CLUSTERED["ill_posed"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        v = Variogram.fit_sample(_case("ill_posed"), "exponential")
    messages = [str(w.message) for w in caught]
    assert messages == ["variogram fit (exponential): no convergence after 200 iterations"]
    assert ref["warnings"] == ["No convergence after 200 iterations: try different initial values?"]
    # both stop after the same 200 steps of the same iteration
    for name in ("psill", "range", "nugget"):
        assert getattr(v, name) == pytest.approx(ref[name], rel=1e-6), name


# --------------------------------------------------------------------------- range bound
@pytest.mark.parametrize(
    ("model", "nu"), [("spherical", 0.5), ("exponential", 0.5), ("gaussian", 0.5), ("matern", 1.5)]
)
def test_practical_range_factor_reaches_95_percent_of_the_sill(model: str, nu: float) -> None:
    a = 1234.0
    f = practical_range_factor(model, nu)
    assert float(unit_semivariance(model, np.array([f * a]), a, nu)[0]) == pytest.approx(
        0.95 if model != "spherical" else 1.0, abs=1e-9
    )


def _rising_sample() -> pd.DataFrame:
    """Semivariances still rising linearly at the last lag: no sill within the data."""
    dist = np.arange(1, 16) * 20_000.0
    return pd.DataFrame({"np": 400 + 10 * np.arange(15), "dist": dist, "gamma": 0.05 + dist / 1e6})


def test_a_range_beyond_the_largest_lag_is_held_there() -> None:
    s = _rising_sample()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        free = Variogram.fit_sample(s, "exponential", bound_range=False)
    # gstat's iteration walks range and sill off together (a near-linear model)
    assert free.range * practical_range_factor("exponential") > 10 * s["dist"].max()
    assert free.psill > 10 * s["gamma"].max()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        v = Variogram.fit_sample(s, "exponential")
    assert [str(w.message) for w in caught if "range held" in str(w.message)] != []
    assert not any("no convergence" in str(w.message) for w in caught)
    assert v.range == pytest.approx(s["dist"].max() / math.log(20.0), rel=1e-12)
    # the sills are the weighted least-squares fit at that range (N / h^2, gstat's weights)
    h, g, n = s["dist"].to_numpy(), s["gamma"].to_numpy(), s["np"].to_numpy(float)
    X = np.column_stack([unit_semivariance("exponential", h, v.range), np.ones_like(h)])
    sw = np.sqrt(n / h**2)
    psill, nugget = np.linalg.lstsq(X * sw[:, None], g * sw, rcond=None)[0]
    assert (v.psill, v.nugget) == pytest.approx((psill, nugget), rel=1e-6)
    assert v.psill + v.nugget < 2 * g.max()


@pytest.mark.parametrize(("ref", "which"), FITS)
def test_a_fit_within_the_bound_is_gstats_unchanged(ref: dict, which: str) -> None:
    kw = dict(fit_nugget=ref["fit_nugget"], weights=WEIGHTS[ref["fit_method"]], nu=ref["kappa"])
    model = GSTAT_MODEL[ref["model"]]
    assert Variogram.fit_sample(_sample(which), model, **kw) == Variogram.fit_sample(
        _sample(which), model, bound_range=False, **kw
    )


def test_the_config_switch_reaches_the_kriging() -> None:
    from mapping.config import ModelConfig
    from mapping.models.factory import build_model

    on = build_model(ModelConfig(), seed=0, categorical=None)
    off = build_model(ModelConfig(variogram={"bound_range": False}), seed=0, categorical=None)
    assert on.kriging.bound_range is True and off.kriging.bound_range is False
