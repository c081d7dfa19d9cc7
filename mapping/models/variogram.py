"""Variogram models, sample variograms and weighted least-squares fitting.

Parameters follow R gstat's ``vgm()`` conventions exactly, so a variogram can be
carried between this package and gstat without conversion:

======================  =========  ==================================================
model                   gstat      semivariance for h > 0 (``gamma(0) = 0``)
======================  =========  ==================================================
``"spherical"``         ``Sph``    ``c0 + c (1.5 h/a - 0.5 (h/a)^3)`` for h < a, ``c0 + c`` beyond
``"exponential"``       ``Exp``    ``c0 + c (1 - exp(-h/a))``
``"gaussian"``          ``Gau``    ``c0 + c (1 - exp(-(h/a)^2))``
``"matern"``            ``Mat``    ``c0 + c (1 - 2^(1-nu)/Gamma(nu) (h/a)^nu K_nu(h/a))``
======================  =========  ==================================================

``c0`` is the nugget, ``c`` the partial sill (``psill``) and ``a`` the ``range``:
the distance where the spherical model reaches the sill, and the scale parameter
of the other three (their practical ranges are about ``3a``, ``sqrt(3) a`` and,
for the Matern model, a value that depends on ``nu``). ``nu`` is gstat's ``kappa``;
``nu = 0.5`` is the exponential model.

The sample variogram and the fit reproduce gstat's ``variogram()`` and
``fit.variogram()`` (gstat 2.1, C sources ``sem.c``, ``fit.c``, ``vario_fn.c``):

* cutoff ``0.33333`` x the bounding-box diagonal (gstat's literal ``DEF_fraction``),
  ``n_lags = 15`` bins of width ``cutoff / 15``; a pair at distance ``d`` goes to bin
  ``floor(d / width)``, except that a distance on a bin boundary belongs to the bin
  below, so bins are ``(a, b]`` and the first one is ``[0, width]``; pairs beyond the
  cutoff are dropped; ``dist`` is the mean pair distance in the bin and
  ``gamma = sum (z_i - z_j)^2 / (2 N)``; empty bins are left out.
* starting values as gstat's ``vgm("Sph")`` (all ``NA``): range ``max(dist) / 3``,
  nugget ``mean(gamma[:3])``, partial sill ``mean(gamma[-5:])``.
* gstat's Gauss-Newton iteration on all sills and ranges at once, weights fixed at
  the first step (``fit.method = 7``: ``N_j / h_j^2`` by default), steps scaled down
  when ``|step|^2 / |parameters|^2 > 0.2`` (gstat's bound), stop when the weighted SSE changes by less than
  1e-5 relative (at most 200 steps, gstat 2.1's ``DEF_iter``); a negative sill is set
  to zero and the fit repeated with that sill fixed and the ranges reset, as
  ``fit.variogram`` does.
  The bounded steps are slow: on clustered data the free-nugget stage can take all
  200 of them to walk to the negative nugget it is heading for, which the refit
  then fixes at zero. Only a final stage that does not converge is reported (one
  ``RuntimeWarning``); gstat also warns about a first stage superseded by the refit.
  The search directions use gstat's derivatives as written (numerical for Matern),
  so the fitted values agree with gstat's to the iteration's tolerance.
* one departure, on by default (``bound_range``): a practical range beyond the largest
  lag of the sample variogram is not identified by the data (the semivariances still
  rise at the last lag; gstat's iteration then walks the range and the sill off together,
  e.g. a range of 10^5 km with a sill of 100 in log units, a near-linear model whose sill
  nothing measured). The range is then held where the practical range (95 % of the
  sill) equals the largest lag and the sills are refitted, as scikit-gstat bounds its fits
  (range at most ``maxlag``); one ``RuntimeWarning`` says so. A fit within the bound is
  gstat's, unchanged.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from mapping.exceptions import ModelError

MODELS = ("spherical", "exponential", "gaussian", "matern")
GSTAT_NAMES = {"spherical": "Sph", "exponential": "Exp", "gaussian": "Gau", "matern": "Mat"}
_ALIASES = {
    **{m: m for m in MODELS},
    **{g.lower(): m for m, g in GSTAT_NAMES.items()},
    "gauss": "gaussian",
}
WEIGHTS = {"gstat": 7, "npairs": 1, "cressie": 2, "ols": 6}
"""Fit weights by name and their gstat ``fit.method`` code: ``"gstat"`` = ``N_j / h_j^2``
(gstat's default), ``"npairs"`` = ``N_j``, ``"cressie"`` = ``N_j / gamma(h_j)^2`` with
gamma from the starting model, ``"ols"`` = unweighted."""

_CUTOFF_FRACTION = 0.33333  # gstat DEF_fraction, not 1/3: bins must match gstat's exactly
_FIT_LIMIT = 1.0e-5  # gstat DEF_fit_limit
_FIT_ITER = 200  # gstat 2.1 DEF_iter (50 before gstat 2.1)
_DA_DELTA = 1.0e-3  # gstat DA_DELTA, relative step of the numerical range derivative
_GL_ZERO = np.finfo(float).eps * 10.0  # gstat DEF_zero


def normalise_model(model: str) -> str:
    """Return the canonical model name for ``model`` (also accepts gstat's ``"Sph"`` etc.)."""
    key = str(model).strip().lower()
    if key not in _ALIASES:
        raise ModelError(
            f"variogram model {model!r} is not supported; use one of {', '.join(MODELS)}"
        )
    return _ALIASES[key]


# --------------------------------------------------------------------------- unit models
def unit_semivariance(model: str, h: ArrayLike, range_: float, nu: float = 0.5) -> NDArray:
    """Semivariance of a model with unit partial sill and no nugget (gstat ``fn_*``).

    Zero at ``h == 0``; tends to one at large ``h``.
    """
    h = np.asarray(h, dtype=float)
    out = np.zeros_like(h)
    pos = h > 0
    hr = h[pos] / range_
    if model == "spherical":
        out[pos] = np.where(hr >= 1.0, 1.0, hr * (1.5 - 0.5 * hr * hr))
    elif model == "exponential":
        out[pos] = 1.0 - np.exp(-hr)
    elif model == "gaussian":
        out[pos] = 1.0 - np.exp(-(hr * hr))
    elif model == "matern":
        out[pos] = 1.0 - matern_correlation(hr, nu)
    else:  # pragma: no cover - guarded by normalise_model
        raise ModelError(f"unknown variogram model {model!r}")
    return out


def practical_range_factor(model: str, nu: float = 0.5) -> float:
    """Distance, in units of the range ``a``, where a model reaches 95 % of its sill.

    1 for the spherical model (its sill is reached at ``a``), ``ln 20 = 3.0`` for the
    exponential, ``sqrt(ln 20) = 1.73`` for the Gaussian; for the Matern model the root
    of its correlation at 0.05 for the smoothness ``nu``.

    Examples
    --------
    >>> round(practical_range_factor("exponential"), 4), practical_range_factor("spherical")
    (2.9957, 1.0)
    """
    model = normalise_model(model)
    if model == "spherical":
        return 1.0
    if model == "exponential":
        return math.log(20.0)
    if model == "gaussian":
        return math.sqrt(math.log(20.0))
    from scipy.optimize import brentq

    return float(
        brentq(lambda x: float(matern_correlation(np.array([x]), nu)[0]) - 0.05, 1e-6, 600.0)
    )


def matern_correlation(hr: ArrayLike, nu: float) -> NDArray:
    """``2^(1-nu)/Gamma(nu) x^nu K_nu(x)`` for scaled distances ``x > 0`` (gstat ``Mat``).

    As in gstat, the correlation is exactly zero beyond ``x = 600``.
    """
    from scipy.special import gamma as gamma_fn
    from scipy.special import kv

    x = np.asarray(hr, dtype=float)
    out = np.zeros_like(x)
    near = x <= 600.0
    xn = x[near]
    out[near] = (2.0 ** (1.0 - nu) / gamma_fn(nu)) * xn**nu * kv(nu, xn)
    return out


def _unit_range_derivative(model: str, h: NDArray, range_: float, nu: float) -> NDArray:
    """d/d(range) of the unit semivariance, as gstat's ``da_fn_*`` / ``da_general``.

    gstat's Gaussian derivative (``-h/a^2 exp(-(h/a)^2)``) is kept as written: it only
    steers the search, and keeping it makes the fitted values agree with gstat's.
    """
    r = range_
    if model == "spherical":
        hr2 = h / (r * r)
        return np.where(h > r, 0.0, 1.5 * hr2 * (-1.0 + h * hr2))
    if model == "exponential":
        hr = -h / r
        return (hr / r) * np.exp(hr)
    if model == "gaussian":
        hr = h / r
        return (-hr / r) * np.exp(-(hr * hr))
    # Matern: central difference with a relative step of 1e-3 (gstat da_general)
    r = max(1e-20, r)
    hi = unit_semivariance(model, h, r * (1.0 + _DA_DELTA), nu)
    lo = unit_semivariance(model, h, r * (1.0 - _DA_DELTA), nu)
    return (hi - lo) / (2.0 * r * _DA_DELTA)


# --------------------------------------------------------------------------- value object
@dataclass(frozen=True)
class Variogram:
    """An isotropic variogram model with a nugget, in gstat ``vgm()`` conventions.

    Parameters
    ----------
    model
        ``"spherical"``, ``"exponential"``, ``"gaussian"`` or ``"matern"`` (gstat's
        ``"Sph"``, ``"Exp"``, ``"Gau"``, ``"Mat"`` are accepted too).
    psill
        Partial sill ``c`` of the structured part (>= 0).
    range
        gstat's range ``a`` (> 0), in the units of the coordinates (metres).
    nugget
        Nugget variance ``c0`` (>= 0).
    nu
        Matern smoothness (gstat's ``kappa``); ignored by the other models.

    Examples
    --------
    >>> v = Variogram("spherical", psill=0.9, range=3000.0, nugget=0.1)
    >>> float(v(3000.0)), float(v.covariance(0.0))
    (1.0, 1.0)
    >>> v.to_gstat()
    'vgm(psill = 0.9, model = "Sph", range = 3000, nugget = 0.1)'
    """

    model: str
    psill: float
    range: float
    nugget: float = 0.0
    nu: float = 0.5

    _fields: ClassVar[tuple[str, ...]] = ("model", "psill", "range", "nugget", "nu")

    def __post_init__(self) -> None:
        object.__setattr__(self, "model", normalise_model(self.model))
        for name in ("psill", "range", "nugget", "nu"):
            value = getattr(self, name)
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise ModelError(f"variogram {name} must be a number, got {value!r}") from None
            if not math.isfinite(value):
                raise ModelError(f"variogram {name} must be finite, got {value!r}")
            object.__setattr__(self, name, value)
        if self.psill < 0 or self.nugget < 0:
            raise ModelError(
                f"variogram psill and nugget must be >= 0, got psill={self.psill:g}, "
                f"nugget={self.nugget:g}"
            )
        if self.psill + self.nugget <= 0:
            raise ModelError("variogram sill (psill + nugget) must be > 0")
        if self.range <= 0:
            raise ModelError(f"variogram range must be > 0, got {self.range:g}")
        if self.nu <= 0:
            raise ModelError(f"variogram nu (Matern kappa) must be > 0, got {self.nu:g}")

    # ------------------------------------------------------------------ values
    @property
    def sill(self) -> float:
        """Total sill ``psill + nugget`` = the covariance at distance zero."""
        return self.psill + self.nugget

    def __call__(self, h: ArrayLike) -> NDArray:
        """Semivariance ``gamma(h)``; zero at ``h == 0``, ``nugget + psill * f(h)`` beyond."""
        h = np.asarray(h, dtype=float)
        unit = unit_semivariance(self.model, h, self.range, self.nu)
        return np.where(h > 0, self.nugget + self.psill * unit, 0.0)

    def covariance(self, h: ArrayLike) -> NDArray:
        """Covariance ``C(h) = sill - gamma(h)``: ``sill`` at ``h == 0`` (as in gstat)."""
        return self.sill - self(h)

    # ------------------------------------------------------------------ conversions
    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for JSON metadata); :meth:`from_dict` is the inverse."""
        return {name: getattr(self, name) for name in self._fields}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Variogram:
        unknown = set(d) - set(cls._fields)
        if unknown:
            raise ModelError(f"variogram: unknown key(s) {', '.join(sorted(unknown))}")
        return cls(**d)

    def to_gstat(self) -> str:
        """The equivalent R gstat ``vgm()`` call."""
        args = f'psill = {self.psill:.15g}, model = "{GSTAT_NAMES[self.model]}", range = {self.range:.15g}'
        if self.nugget > 0:
            args += f", nugget = {self.nugget:.15g}"
        if self.model == "matern":
            args += f", kappa = {self.nu:.15g}"
        return f"vgm({args})"

    def replace(self, **changes: Any) -> Variogram:
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(
        cls,
        coords: ArrayLike,
        values: ArrayLike,
        model: str = "spherical",
        *,
        cutoff: float | None = None,
        n_lags: int = 15,
        width: float | None = None,
        fit_nugget: bool = True,
        weights: str = "gstat",
        nu: float = 0.5,
        bound_range: bool = True,
    ) -> Variogram:
        """Fit a variogram model to data as gstat's ``fit.variogram(variogram(...), vgm(model))``.

        Parameters
        ----------
        coords
            ``(n, 2)`` coordinates in a projected CRS (metres).
        values
            ``(n,)`` values (for regression kriging: the trend's residuals).
        model
            Model name, see :class:`Variogram`.
        cutoff, n_lags, width
            Binning, see :func:`sample_variogram`.
        fit_nugget
            Fit a nugget (gstat ``vgm(NA, model, NA, NA)``); ``False`` fixes it at zero.
        weights
            ``"gstat"`` (``N_j / h_j^2``, gstat's default ``fit.method = 7``),
            ``"npairs"``, ``"cressie"`` or ``"ols"``; see :data:`WEIGHTS`.
        nu
            Matern smoothness, held fixed.
        bound_range
            Hold the practical range at most at the largest lag (see the module's
            docstring); ``False`` is gstat's fit exactly.

        Returns
        -------
        Variogram
        """
        sample = sample_variogram(coords, values, cutoff=cutoff, n_lags=n_lags, width=width)
        return cls.fit_sample(
            sample, model, fit_nugget=fit_nugget, weights=weights, nu=nu, bound_range=bound_range
        )

    @classmethod
    def fit_sample(
        cls,
        sample: pd.DataFrame,
        model: str = "spherical",
        *,
        fit_nugget: bool = True,
        weights: str = "gstat",
        nu: float = 0.5,
        bound_range: bool = True,
    ) -> Variogram:
        """Fit a model to a sample variogram (columns ``np``, ``dist``, ``gamma``).

        ``bound_range``: see :meth:`fit`.
        """
        model = normalise_model(model)
        if weights not in WEIGHTS:
            raise ModelError(
                f"variogram weights {weights!r} not supported; use one of {', '.join(WEIGHTS)}"
            )
        missing = {"np", "dist", "gamma"} - set(sample.columns)
        if missing:
            raise ModelError(f"sample variogram lacks column(s) {', '.join(sorted(missing))}")
        s = sample[sample["np"] > 0]
        npairs = s["np"].to_numpy(float)
        dist = s["dist"].to_numpy(float)
        gamma = s["gamma"].to_numpy(float)
        n_par = 3 if fit_nugget else 2
        if len(s) == 0:
            raise ModelError(
                "variogram fit: no pair of points within the cutoff (empty sample variogram); "
                "raise the cutoff or give the variogram explicitly"
            )
        if WEIGHTS[weights] == 7 and np.any(dist == 0):
            raise ModelError(
                "variogram fit with weights='gstat' (N/h^2) fails on a lag of mean distance 0 "
                "(duplicate locations only); use weights='npairs'"
            )
        if len(s) < n_par:
            return cls._nugget_fallback(
                model, npairs, dist, gamma, WEIGHTS[weights], nu,
                f"only {len(s)} non-empty lag(s) for {n_par} parameters",
            )  # fmt: skip
        # the fit's own warnings (singular steps, no convergence) are moot when its
        # result is replaced by the nugget model: hold them until that is known
        with warnings.catch_warnings(record=True) as held:
            warnings.simplefilter("always")
            psill, range_, nugget = _fit_gstat(
                model, nu, npairs, dist, gamma, fit_nugget, WEIGHTS[weights]
            )
        # the data place a practical range only up to the largest lag
        bound = float(np.max(dist)) / practical_range_factor(model, nu) if bound_range else math.inf
        unbounded, bounded = range_, ""
        if math.isfinite(range_) and range_ > bound * (1.0 + 1e-9):
            with warnings.catch_warnings(record=True) as held:
                warnings.simplefilter("always")
                psill, range_, nugget = _fit_gstat(
                    model, nu, npairs, dist, gamma, fit_nugget, WEIGHTS[weights], range_=bound
                )
            bounded = (
                f"variogram fit ({model}): range {unbounded:.4g} puts the practical range "
                f"beyond the largest lag ({np.max(dist):.4g}), where the data cannot place it; "
                f"range held at {bound:.4g}, sills refitted"
            )
        if not (math.isfinite(range_) and range_ > 0 and psill + nugget > 0):
            return cls._nugget_fallback(
                model, npairs, dist, gamma, WEIGHTS[weights], nu,
                f"no valid model (psill={psill:.4g}, range={range_:.4g}, nugget={nugget:.4g})",
            )  # fmt: skip
        for w in held:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        if bounded:
            warnings.warn(bounded, RuntimeWarning, stacklevel=3)
        return cls(model, psill=psill, range=range_, nugget=nugget, nu=nu)

    @classmethod
    def _nugget_fallback(
        cls,
        model: str,
        npairs: NDArray,
        dist: NDArray,
        gamma: NDArray,
        method: int,
        nu: float,
        why: str,
    ) -> Variogram:
        """The pure-nugget model that fits the lags best under the fit's own weights.

        Residuals with no spatial structure (or too few lags to see one) are white
        noise: the weighted mean of the semivariances is the least-squares nugget
        (gstat's ``fit.variogram(v, vgm(NA, "Nug", 0))``). The model keeps its name
        and a nominal range (a third of the largest lag, gstat's starting value); with
        ``psill = 0`` neither matters. One ``RuntimeWarning`` says so.
        """
        if method == 6:
            w = np.ones_like(dist)
        elif method == 7:
            w = npairs / (dist * dist)
        else:  # npairs; Cressie's N / gamma0^2 with a constant model is the same
            w = npairs
        nugget = float(np.sum(w * gamma) / np.sum(w))
        if not (math.isfinite(nugget) and nugget > 0):
            raise ModelError(
                f"variogram fit ({model}): {why}, and the semivariances give no positive "
                "nugget either; give the variogram explicitly"
            )
        warnings.warn(
            f"variogram fit ({model}): {why}; using a pure nugget model "
            f"(nugget={nugget:.4g}, no spatial correlation)",
            RuntimeWarning,
            stacklevel=3,
        )
        return cls(model, psill=0.0, range=float(np.max(dist)) / 3.0, nugget=nugget, nu=nu)


# --------------------------------------------------------------------------- sample variogram
def default_cutoff(coords: ArrayLike) -> float:
    """gstat's default cutoff: 0.33333 x the diagonal of the data's bounding box."""
    xy = _as_coords(coords)
    d = float(np.sqrt(np.sum((xy.max(axis=0) - xy.min(axis=0)) ** 2)))
    return 1.0 if d == 0.0 else d * _CUTOFF_FRACTION


def sample_variogram(
    coords: ArrayLike,
    values: ArrayLike,
    *,
    cutoff: float | None = None,
    n_lags: int = 15,
    width: float | None = None,
) -> pd.DataFrame:
    """Isotropic sample (experimental) variogram, binned exactly as gstat's ``variogram()``.

    Parameters
    ----------
    coords
        ``(n, 2)`` coordinates.
    values
        ``(n,)`` values.
    cutoff
        Largest pair distance used; default one third (gstat: 0.33333) of the
        bounding-box diagonal.
    n_lags
        Number of equal-width bins when ``width`` is not given (gstat: 15).
    width
        Bin width; default ``cutoff / n_lags``.

    Returns
    -------
    pandas.DataFrame
        One row per non-empty bin: ``np`` (pairs), ``dist`` (mean pair distance),
        ``gamma`` (semivariance), as gstat's columns of the same names.
    """
    xy = _as_coords(coords)
    z = np.asarray(values, dtype=float).ravel()
    if len(z) != len(xy):
        raise ModelError(f"sample variogram: {len(xy)} coordinates but {len(z)} values")
    if not np.all(np.isfinite(z)):
        raise ModelError("sample variogram: values contain NaN or infinity")
    if len(z) < 2:
        raise ModelError("sample variogram needs at least 2 points")
    if cutoff is None:
        cutoff = default_cutoff(xy)
    if width is None:
        if n_lags < 1:
            raise ModelError(f"n_lags must be >= 1, got {n_lags}")
        width = cutoff / n_lags
    if not (cutoff > 0 and width > 0):
        raise ModelError(f"cutoff and width must be > 0, got {cutoff:g} and {width:g}")
    n_bins = math.floor(cutoff / width) + 1  # gstat allocates one bin more
    npairs = np.zeros(n_bins, dtype=np.int64)
    dsum = np.zeros(n_bins)
    gsum = np.zeros(n_bins)
    n = len(z)
    # pairs (i, j) with j < i, in row blocks to bound memory
    block = max(1, int(4_000_000 // max(n, 1)))
    for start in range(1, n, block):
        stop = min(n, start + block)
        rows = np.arange(start, stop)
        dx = xy[rows, None, 0] - xy[None, :stop, 0]
        dy = xy[rows, None, 1] - xy[None, :stop, 1]
        d = np.sqrt(dx * dx + dy * dy)
        lower = np.arange(stop)[None, :] < rows[:, None]
        keep = lower & (d <= cutoff)
        d = d[keep]
        diff = (z[rows, None] - z[None, :stop])[keep]
        frac = d / width
        idx = np.floor(frac)
        idx = np.where((d > 0) & (frac == idx), idx - 1, idx).astype(np.int64)
        npairs += np.bincount(idx, minlength=n_bins)[:n_bins]
        dsum += np.bincount(idx, weights=d, minlength=n_bins)[:n_bins]
        gsum += np.bincount(idx, weights=diff * diff, minlength=n_bins)[:n_bins]
    nz = npairs > 0
    return pd.DataFrame(
        {
            "np": npairs[nz],
            "dist": dsum[nz] / npairs[nz],
            "gamma": gsum[nz] / (2.0 * npairs[nz]),
        }
    )


def _as_coords(coords: ArrayLike) -> NDArray:
    xy = np.asarray(coords, dtype=float)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise ModelError(f"coordinates must be an (n, 2) array, got shape {xy.shape}")
    if not np.all(np.isfinite(xy)):
        raise ModelError("coordinates contain NaN or infinity")
    return xy


# --------------------------------------------------------------------------- gstat's fit
@dataclass
class _Part:
    model: str  # "nugget" or a model name
    sill: float
    range: float
    fit_sill: bool
    fit_range: bool


def _initial_parts(model: str, dist: NDArray, gamma: NDArray, fit_nugget: bool) -> list[_Part]:
    """Starting values of gstat's ``vgm_fill_na`` for ``vgm(NA, model, NA[, NA])``."""
    parts = []
    if fit_nugget:
        parts.append(_Part("nugget", float(np.mean(gamma[:3])), 0.0, True, False))
    parts.append(_Part(model, float(np.mean(gamma[-5:])), float(np.max(dist)) / 3.0, True, True))
    return parts


def _part_unit(p: _Part, h: NDArray, nu: float) -> NDArray:
    if p.model == "nugget":
        return (h != 0).astype(float)
    return unit_semivariance(p.model, h, p.range, nu)


def _semivariance(parts: list[_Part], h: NDArray, nu: float) -> NDArray:
    return sum(p.sill * _part_unit(p, h, nu) for p in parts)  # type: ignore[return-value]


def _fit_gstat(
    model: str,
    nu: float,
    npairs: NDArray,
    dist: NDArray,
    gamma: NDArray,
    fit_nugget: bool,
    method: int,
    range_: float | None = None,
) -> tuple[float, float, float]:
    parts = _initial_parts(model, dist, gamma, fit_nugget)
    if range_ is not None:  # the sills only, at this range (a linear fit)
        for p in parts:
            if p.model != "nugget":
                p.range, p.fit_range = float(range_), False
    initial_ranges = [p.range for p in parts]
    while True:
        parts, converged = _wls_fit(parts, nu, npairs, dist, gamma, method)
        negative = [p for p in parts if p.sill < 0]
        if not negative:
            break
        # fit.variogram: fix negative sills at zero, reset ranges, fit again
        for p, r0 in zip(parts, initial_ranges, strict=True):
            if p.sill < 0:
                p.sill, p.fit_sill = 0.0, False
            p.range = r0
    if not converged:
        warnings.warn(
            f"variogram fit ({model}): no convergence after {_FIT_ITER} iterations",
            RuntimeWarning,
            stacklevel=3,
        )
    nugget = sum(p.sill for p in parts if p.model == "nugget")
    main = next(p for p in parts if p.model != "nugget")
    return main.sill, main.range, nugget


def _wls_fit(
    parts: list[_Part],
    nu: float,
    npairs: NDArray,
    dist: NDArray,
    gamma: NDArray,
    method: int,
) -> tuple[list[_Part], bool]:
    """gstat ``wls_fit`` + ``fit_GaussNewton`` (fit.c)."""
    for p in parts:
        if p.sill == 0.0 and p.fit_sill:
            p.sill = 1.0  # gstat: "avoid lot'o trouble"
    # weights, fixed from the starting model (gstat fills them at iteration 0 only)
    if method == 6:
        w = np.ones_like(dist)
    elif method == 1:
        w = npairs.copy()
    elif method == 7:
        w = npairs / (dist * dist)
    else:  # 2: N_j / gamma(h_j)^2 of the starting model
        s = _semivariance(parts, dist, nu)
        if np.any(np.abs(s) <= 1e-30):
            raise ModelError("variogram fit: infinite weight (model semivariance 0 at a lag)")
        w = npairs / (s * s)

    def sse() -> float:
        r = gamma - _semivariance(parts, dist, nu)
        return float(np.sum(w * r * r))

    old = np.finfo(float).max
    n_iter = 0
    while True:
        singular, bounded = _gauss_newton_step(parts, nu, dist, gamma, w)
        if singular:
            warnings.warn("variogram fit: singular model", RuntimeWarning, stacklevel=4)
            return parts, True
        err = sse()
        step = old - err
        if err > _GL_ZERO:
            with np.errstate(over="ignore"):  # the first step is DBL_MAX / SSE, as in gstat
                step /= err
        n_iter += 1
        old = err
        if (0.0 <= step < _FIT_LIMIT and not bounded) or n_iter == _FIT_ITER:
            return parts, n_iter < _FIT_ITER


def _gauss_newton_step(
    parts: list[_Part], nu: float, dist: NDArray, gamma: NDArray, w: NDArray
) -> tuple[bool, bool]:
    cols, start, targets = [], [], []
    for i, p in enumerate(parts):
        if p.fit_sill:
            cols.append(_part_unit(p, dist, nu))
            start.append(p.sill)
            targets.append((i, "sill"))
        if p.fit_range:
            cols.append(p.sill * _unit_range_derivative(p.model, dist, p.range, nu))
            start.append(p.range)
            targets.append((i, "range"))
    if not cols:
        return False, False
    X = np.column_stack(cols)
    if X.shape[0] < X.shape[1]:
        return True, False
    y = gamma - _semivariance(parts, dist, nu)
    sw = np.sqrt(w)
    Xw, yw = X * sw[:, None], y * sw
    xtx = Xw.T @ Xw
    try:
        chol = np.linalg.cholesky(xtx)
    except np.linalg.LinAlgError:
        return True, False
    beta = np.linalg.solve(chol.T, np.linalg.solve(chol, Xw.T @ yw))
    bounded = False
    if any(kind == "range" for _, kind in targets):
        # gstat's v_norm2 (mtrx.c) is the *squared* 2-norm: the ratio is of squares
        s = float(beta @ beta) / float(np.dot(start, start))
        if s > 0.2:  # gstat: "don't allow steps > 20%"
            beta *= 0.2 / s
            bounded = True
    for (i, kind), b0, b in zip(targets, start, beta, strict=True):
        setattr(parts[i], kind, b0 + b)
    return False, bounded
