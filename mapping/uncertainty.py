"""Uncertainty of zone totals by Monte Carlo, with spatially correlated errors.

A map gives, for every cell, a predicted SOC density ``m`` and its standard deviation ``s``.
The error of a zone *total* depends on how the cell errors co-vary: added as if independent,
they nearly cancel over a zone of a million cells; in reality they are correlated over the
range of the residual variogram. Each Monte Carlo realization ``r`` is a density field

* ``normal``:    ``d_r = max(0, m + s * Z_r)``
* ``lognormal``: ``d_r = m * exp(sigma * Z_r - sigma² / 2)``, ``sigma² = ln(1 + (s / m)²)``
  (same mean and standard deviation as ``m``, ``s``; always positive)

where ``Z_r`` is a stationary Gaussian field with unit variance and the *correlation* of the
fitted residual variogram, ``rho(h) = C(h) / C(0)`` (the nugget share is uncorrelated noise).
Each realization is integrated per zone with :func:`mapping.zonal.zone_sums_block`; the
spread of the totals over realizations is their uncertainty.

The field is built so that any window of cells can be made on its own, with values that
depend only on the seed, the realization number and the cell's position on the grid:

* white noise ``W`` on the cells (or on a coarser lattice, see ``coarsen``) is drawn in fixed
  blocks of :data:`NOISE_BLOCK` x :data:`NOISE_BLOCK` cells, each block from its own stream
  ``SeedSequence(seed, spawn_key=(stream, realization, block row, block column))``;
* ``Z = k * W`` (discrete convolution) with the kernel ``k`` whose lattice autocorrelation is
  ``rho``: ``k = IDFT(sqrt(DFT(rho)))`` on a torus several ranges wide (the square root of the
  circulant-embedding covariance, Dietrich & Newsam 1997), cut where less than ``1e-4`` of
  its energy and ``5e-4`` of its sum lie beyond, and rescaled to unit variance;
* a window is convolved by FFT with a halo of the kernel's radius, so the result for a cell
  does not depend on the window (the chunking) or on the worker that computes it.

With ``coarsen=f`` the structured part of the field is simulated on a lattice of every
``f``-th cell, interpolated bilinearly, and topped up with independent noise so every cell
keeps unit variance (the nugget and the interpolation's lost variance); this is ``f²``
times cheaper for ranges of hundreds of cells. See ``docs/uncertainty.md`` for the model,
its assumptions and measured costs.

A variogram cannot show an error common to the whole map, such as the uncertainty of the
residuals' mean level (:func:`residual_mean_sd`); ``common_sd`` adds one standard normal per
realization, shared by all cells, and takes its share out of each cell's own variance.

Cumulative intervals (same top, deeper bottom: ``0-30, 0-100, 0-200, 0-300``) use the same
noise ``W`` (each interval its own kernel if its variogram differs) and, in every
realization and cell, the running maximum down the column: ``d(0-100) >= d(0-30)``, so the
totals are consistent in every realization.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd
from scipy import fft as sfft

from mapping.cluster import compute_with_progress
from mapping.exceptions import ConfigError, GridMismatchError, InputError, ModelError
from mapping.grid import Grid
from mapping.models.variogram import Variogram, unit_semivariance
from mapping.units import format_interval, parse_interval
from mapping.zonal import (
    ALL_ZONES,
    UNITS,
    ZoneCoverage,
    ZoneLayout,
    exact_to_float,
    prepare_zones,
    zone_sums_block,
)

if TYPE_CHECKING:
    import dask.array
    import xarray as xr


__all__ = [
    "DISTRIBUTIONS",
    "NOISE_BLOCK",
    "GaussianField",
    "LatticeKernel",
    "attach_ranges",
    "cv_block_error_sd",
    "independent_pixel_range",
    "lattice_kernel",
    "realization_block",
    "residual_mean_sd",
    "residual_variogram",
    "summarise_draws",
    "zone_total_draws",
]

#: Side of the fixed blocks of white noise (cells of the lattice); part of the definition of
#: a realization: changing it changes the draws (not their statistics).
NOISE_BLOCK = 128
#: Kernel energy left outside the cut radius (before rescaling to unit variance).
KERNEL_TOL = 1e-4
#: Kernel *sum* left outside the cut: the variance of a total over a zone much wider than the
#: range is proportional to ``sum(k)**2``, so this bounds its error (~2 x 5e-4).
KERNEL_SUM_TOL = 5e-4
#: Largest kernel radius (cells) simulated at full resolution when ``coarsen`` is automatic.
MAX_HALO = 768
DISTRIBUTIONS = ("normal", "lognormal")

_STREAM_LATTICE = 1  # white noise convolved with the kernel
_STREAM_TOPUP = 2  # independent noise per cell (coarsened fields only)
_STREAM_SHARED = 3  # one value per realization: the error shared by all cells
_KEY_OFFSET = 1 << 30  # block indices are negative in the halo; spawn keys must not be
_FIELD_TAG = 0x534F43  # "SOC": this stage's stream among others drawn from one seed


# =============================================================================== kernel
class LatticeKernel(NamedTuple):
    """A moving-average kernel on a lattice and how well it reproduces its target.

    Attributes
    ----------
    weights
        ``(2 ry + 1, 2 rx + 1)`` float64, centred, symmetric; ``sum(weights**2)`` is the
        target variance (1, or the structured share ``psill / sill``).
    spacing
        Lattice spacing ``(dy, dx)`` in the grid's CRS units.
    max_correlation_error
        Largest absolute difference between the kernel's lattice autocorrelation and the
        target correlation, over all lags.
    """

    weights: np.ndarray
    spacing: tuple[float, float]
    max_correlation_error: float

    @property
    def radius(self) -> tuple[int, int]:
        """``(ry, rx)``: the halo a window needs, in lattice cells."""
        return (self.weights.shape[0] // 2, self.weights.shape[1] // 2)


def _correlation(v: Variogram, h: np.ndarray, structured_only: bool) -> np.ndarray:
    """``C(h) / C(0)``; with ``structured_only`` the nugget's delta at ``h = 0`` is left out."""
    struct = v.psill / v.sill * (1.0 - unit_semivariance(v.model, h, v.range, v.nu))
    if structured_only:
        return struct
    return struct + np.where(np.asarray(h) == 0, v.nugget / v.sill, 0.0)


def _decay_distance(v: Variogram, rel: float = 1e-5) -> float:
    """Distance beyond which the structured covariance stays below ``rel`` of the partial sill."""
    if v.psill == 0:
        return 0.0
    h = v.range * np.geomspace(1e-3, 1e4, 4001)
    c = 1.0 - unit_semivariance(v.model, h, v.range, v.nu)
    big = np.flatnonzero(np.abs(c) > rel)
    return float(h[big[-1]]) if big.size else float(h[0])


@functools.lru_cache(maxsize=64)
def _kernel_reach(variogram: Variogram, structured_only: bool = False) -> float:
    """Radius of the kernel (distance units), from a kernel on a lattice of ``range / 6``.

    The kernel's reach is not the covariance's: the spherical model is zero beyond its range
    but its kernel needs about three ranges (its sum converges slowly).
    """
    if variogram.psill == 0:
        return 0.0
    step = variogram.range / 6.0
    k = _lattice_kernel(variogram, (step, step), structured_only, KERNEL_TOL, KERNEL_SUM_TOL, 0.0)
    return float(max(k.radius) * step)


def _cut_ring(ring: np.ndarray, values: np.ndarray, tol: float) -> int:
    """Smallest ring index beyond which the sum of ``values`` stays within ``tol`` of the total."""
    per_ring = np.bincount(ring.ravel(), values.ravel())
    beyond = np.cumsum(per_ring[::-1])[::-1] - per_ring  # sum over rings > i
    bad = np.flatnonzero(np.abs(beyond) > tol * abs(per_ring.sum()))
    return int(bad[-1]) + 1 if bad.size else 0


def lattice_kernel(
    variogram: Variogram,
    spacing: tuple[float, float],
    *,
    structured_only: bool = False,
    tol: float = KERNEL_TOL,
    sum_tol: float = KERNEL_SUM_TOL,
) -> LatticeKernel:
    """Kernel ``k`` whose lattice autocorrelation is the variogram's correlation.

    Convolving unit white noise on the lattice with ``k`` gives a stationary Gaussian field
    with covariance ``sum_u k(u) k(u + h) = rho(h)``. ``k`` is the square root of the
    covariance's circulant embedding on a torus three decay distances wide,
    ``IDFT(sqrt(max(DFT(rho), 0)))``, cut to the smallest rectangle that leaves less than
    ``tol`` of its energy and ``sum_tol`` of its sum outside (the sum fixes the variance of
    totals over zones much wider than the range), and rescaled so ``sum(k**2)`` is the
    target variance.

    Parameters
    ----------
    variogram
        The residual variogram; only its correlation (``C(h) / C(0)``) is used.
    spacing
        ``(dy, dx)`` of the lattice, in the variogram's distance units.
    structured_only
        Leave the nugget out (its share ``nugget / sill`` is then added elsewhere as
        independent noise); the target variance is ``psill / sill``.
    tol, sum_tol
        Energy and sum allowed outside the cut, relative to the whole kernel's.

    Returns
    -------
    LatticeKernel

    Examples
    --------
    >>> k = lattice_kernel(Variogram("exponential", psill=1.0, range=3.0), (1.0, 1.0))
    >>> round(float((k.weights**2).sum()), 12), k.max_correlation_error < 1e-3
    (1.0, True)
    """
    dy, dx = (float(s) for s in spacing)
    if not (dy > 0 and dx > 0):
        raise ModelError(f"lattice spacing {spacing!r} must be positive")
    # half the torus: twice the kernel's reach, estimated on a coarse lattice
    reach = _kernel_reach(variogram, structured_only)
    return _lattice_kernel(variogram, (dy, dx), structured_only, tol, sum_tol, reach)


def _lattice_kernel(
    variogram: Variogram,
    spacing: tuple[float, float],
    structured_only: bool,
    tol: float,
    sum_tol: float,
    reach: float,
) -> LatticeKernel:
    dy, dx = spacing
    target_var = variogram.psill / variogram.sill if structured_only else 1.0
    if target_var == 0.0:
        return LatticeKernel(np.zeros((1, 1)), (dy, dx), 0.0)
    # half the torus: past where the covariance has decayed and past twice the kernel's
    # reach; checked against the radius found below
    half = max(1.5 * _decay_distance(variogram), 2.2 * reach)
    for _ in range(6):
        my = sfft.next_fast_len(max(64, 2 * math.ceil(half / dy) + 2), real=False)
        mx = sfft.next_fast_len(max(64, 2 * math.ceil(half / dx) + 2), real=True)
        iy = np.minimum(np.arange(my), my - np.arange(my))
        ix = np.minimum(np.arange(mx), mx - np.arange(mx))
        h = np.hypot(iy[:, None] * dy, ix[None, :] * dx)
        rho = _correlation(variogram, h, structured_only)
        eig = np.clip(sfft.rfft2(rho).real, 0.0, None)
        k = sfft.irfft2(np.sqrt(eig), s=(my, mx))
        # radius: rings of one (smallest) cell; energy left outside each ring
        step = min(dy, dx)
        ring = np.floor(h / step).astype(np.int64)
        n_ring = max(_cut_ring(ring, k * k, tol), _cut_ring(ring, k, sum_tol))
        r_m = (n_ring + 1) * step  # keep offsets closer than this
        ry, rx = math.ceil(r_m / dy) - 1, math.ceil(r_m / dx) - 1
        if 4 * ry < my and 4 * rx < mx:
            break
        half *= 2.0  # the kernel reaches round the torus: widen it
    else:  # pragma: no cover - only for pathological variograms
        raise ModelError(f"variogram {variogram.to_gstat()}: kernel does not decay on the lattice")
    w = k[np.ix_(np.arange(-ry, ry + 1) % my, np.arange(-rx, rx + 1) % mx)]
    w = w * math.sqrt(target_var / float((w * w).sum()))
    # quality: the cut kernel's autocorrelation against the target at every lag it reaches
    py = sfft.next_fast_len(4 * ry + 2, real=False)
    px = sfft.next_fast_len(4 * rx + 2, real=True)
    acf = sfft.irfft2(np.abs(sfft.rfft2(w, s=(py, px))) ** 2, s=(py, px))
    ly = np.minimum(np.arange(py), py - np.arange(py)) * dy
    lx = np.minimum(np.arange(px), px - np.arange(px)) * dx
    target = _correlation(variogram, np.hypot(ly[:, None], lx[None, :]), structured_only)
    err = float(np.abs(acf - target).max())
    return LatticeKernel(np.ascontiguousarray(w), (dy, dx), err)


# =============================================================================== field
@dataclass(frozen=True, eq=False)
class GaussianField:
    """Seeded unit-variance Gaussian fields on the cells of a grid, made window by window.

    One instance holds one kernel per distinct variogram; all kernels convolve the *same*
    white noise, so the fields of different depth intervals are strongly correlated (and
    identical when their variograms are). Build it with :meth:`from_variograms`.

    Attributes
    ----------
    kernels
        One :class:`LatticeKernel` per variogram (on the coarse lattice when ``coarsen > 1``).
    coarsen
        Lattice step in cells (1 = every cell).
    seed
        Non-negative integer seed.
    topup_sd
        ``(n_kernels, coarsen, coarsen)``: standard deviation of the independent noise added
        to a cell at offset ``(row % coarsen, col % coarsen)`` from the lattice; zero when
        ``coarsen == 1``.
    """

    kernels: tuple[LatticeKernel, ...]
    coarsen: int
    seed: int
    topup_sd: np.ndarray
    _token: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        h = hashlib.sha256()
        h.update(repr((self.coarsen, self.seed, NOISE_BLOCK)).encode())
        for k in self.kernels:
            h.update(np.ascontiguousarray(k.weights).tobytes())
        h.update(np.ascontiguousarray(self.topup_sd).tobytes())
        object.__setattr__(self, "_token", h.hexdigest())

    def __dask_tokenize__(self) -> tuple[str, str]:
        return ("socmap.GaussianField", self._token)

    @classmethod
    def from_variograms(
        cls,
        variograms: Sequence[Variogram],
        spacing: tuple[float, float],
        seed: int = 0,
        *,
        coarsen: int | None = None,
        tol: float = KERNEL_TOL,
    ) -> GaussianField:
        """Kernels for ``variograms`` on a lattice of cell size ``spacing = (dy, dx)``.

        Parameters
        ----------
        variograms
            One per field (e.g. per depth interval); their correlation is used.
        spacing
            Cell size ``(dy, dx)`` in the variograms' distance units.
        seed
            Non-negative integer.
        coarsen
            Simulate the structured part on every ``coarsen``-th cell and interpolate;
            ``None`` = 1 unless the kernel radius would exceed :data:`MAX_HALO` cells.
        tol
            Kernel energy allowed outside its cut (see :func:`lattice_kernel`).
        """
        if int(seed) != seed or seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
        if not variograms:
            raise ModelError("no variogram given")
        dy, dx = (float(s) for s in spacing)
        if coarsen is None:
            # kernel radii: about 8.4 ranges (exponential), 3 (spherical), 2 (Gaussian)
            reach = max(_kernel_reach(v) for v in variograms) / min(dy, dx)
            coarsen = max(1, math.ceil(reach / MAX_HALO))
        if int(coarsen) != coarsen or coarsen < 1:
            raise ConfigError(f"coarsen must be a positive integer, got {coarsen!r}")
        f = int(coarsen)
        kernels = tuple(
            lattice_kernel(v, (f * dy, f * dx), structured_only=f > 1, tol=tol) for v in variograms
        )
        topup = np.zeros((len(kernels), f, f))
        if f > 1:
            u = np.arange(f) / f
            for q, k in enumerate(kernels):
                topup[q] = np.sqrt(np.clip(1.0 - _bilinear_variance(k.weights, u, u), 0.0, None))
        return cls(kernels, f, int(seed), topup)

    @property
    def halo(self) -> tuple[int, int]:
        """Largest kernel radius ``(ry, rx)`` in lattice cells."""
        return (max(k.radius[0] for k in self.kernels), max(k.radius[1] for k in self.kernels))

    # ------------------------------------------------------------------ noise
    def _noise(
        self, stream: int, r: int, i0: int, i1: int, j0: int, j1: int, out: np.ndarray | None = None
    ) -> np.ndarray:
        """Unit white noise on lattice rows ``i0:i1``, columns ``j0:j1`` of realization ``r``
        (written into ``out`` when given)."""
        b = NOISE_BLOCK
        out = np.empty((i1 - i0, j1 - j0)) if out is None else out
        for bi in range(i0 // b, (i1 - 1) // b + 1):
            for bj in range(j0 // b, (j1 - 1) // b + 1):
                ss = np.random.SeedSequence(
                    self.seed,
                    spawn_key=(_FIELD_TAG, stream, r, bi + _KEY_OFFSET, bj + _KEY_OFFSET),
                )
                block = np.random.Generator(np.random.PCG64(ss)).standard_normal((b, b))
                a0, a1 = max(i0, bi * b), min(i1, (bi + 1) * b)
                c0, c1 = max(j0, bj * b), min(j1, (bj + 1) * b)
                out[a0 - i0 : a1 - i0, c0 - j0 : c1 - j0] = block[
                    a0 - bi * b : a1 - bi * b, c0 - bj * b : c1 - bj * b
                ]
        return out

    def _lattice(
        self, i0: int, i1: int, j0: int, j1: int, realizations: Sequence[int]
    ) -> np.ndarray:
        """Fields on lattice nodes ``i0:i1, j0:j1``: ``(n_kernels, n_realizations, ni, nj)``."""
        ry, rx = self.halo
        ni, nj = i1 - i0, j1 - j0
        fh = sfft.next_fast_len(ni + 2 * ry, real=False)
        fw = sfft.next_fast_len(nj + 2 * rx, real=True)
        specs = []
        for k in self.kernels:
            ky, kx = k.radius
            pad = np.zeros((fh, fw))
            pad[np.ix_(np.arange(-ky, ky + 1) % fh, np.arange(-kx, kx + 1) % fw)] = k.weights
            specs.append(sfft.rfft2(pad))
        del pad
        out = np.empty((len(self.kernels), len(realizations), ni, nj))
        noise = np.zeros((fh, fw))
        prod = np.empty_like(specs[0]) if len(specs) > 1 else None
        for n, r in enumerate(realizations):
            self._noise(
                _STREAM_LATTICE, int(r), i0 - ry, i1 + ry, j0 - rx, j1 + rx,
                out=noise[: ni + 2 * ry, : nj + 2 * rx],
            )  # fmt: skip
            spec = sfft.rfft2(noise)
            for q, ks in enumerate(specs):
                tmp = np.multiply(spec, ks, out=spec if prod is None else prod)
                z = sfft.irfft2(tmp, s=(fh, fw), overwrite_x=True)
                out[q, n] = z[ry : ry + ni, rx : rx + nj]
        return out

    # ------------------------------------------------------------------ public
    def shared(self, realizations: Sequence[int]) -> np.ndarray:
        """One standard normal value per realization, the same in every window (``(n,)``)."""
        out = np.empty(len(realizations))
        for n, r in enumerate(realizations):
            ss = np.random.SeedSequence(self.seed, spawn_key=(_FIELD_TAG, _STREAM_SHARED, int(r)))
            out[n] = np.random.Generator(np.random.PCG64(ss)).standard_normal()
        return out

    def window(self, rows: slice, cols: slice, realizations: Sequence[int]) -> np.ndarray:
        """The fields on grid cells ``[rows, cols]`` for the given realization numbers.

        Parameters
        ----------
        rows, cols
            Unit-step slices with explicit, non-negative ``start`` and ``stop``; any
            window of any grid (the field is defined on the infinite lattice).
        realizations
            Realization numbers (non-negative integers); realization ``r`` is the same
            whatever other realizations are asked for.

        Returns
        -------
        numpy.ndarray
            float64, ``(n_kernels, len(realizations), ny, nx)``.
        """
        r0, r1, c0, c1 = int(rows.start), int(rows.stop), int(cols.start), int(cols.stop)
        if r1 <= r0 or c1 <= c0:
            raise ValueError(f"empty window {rows}, {cols}")
        f = self.coarsen
        if f == 1:
            return self._lattice(r0, r1, c0, c1, realizations)
        i0, i1 = r0 // f, (r1 - 1) // f + 2  # lattice nodes around the window
        j0, j1 = c0 // f, (c1 - 1) // f + 2
        zc = self._lattice(i0, i1, j0, j1, realizations)
        rr, cc = np.arange(r0, r1), np.arange(c0, c1)
        ii, u = rr // f - i0, (rr % f) / f
        jj, v = cc // f - j0, (cc % f) / f
        # bilinear, one axis at a time
        zr = zc[..., ii, :] * (1.0 - u)[:, None] + zc[..., ii + 1, :] * u[:, None]
        z = zr[..., jj] * (1.0 - v) + zr[..., jj + 1] * v
        sd = self.topup_sd[:, rr % f][:, :, cc % f]  # (n_kernels, ny, nx)
        for n, r in enumerate(realizations):
            eps = self._noise(_STREAM_TOPUP, int(r), r0, r1, c0, c1)
            z[:, n] += sd * eps
        return z


def _bilinear_variance(w: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Variance of the bilinear interpolation, at fractions ``(u_i, v_j)``, of a field with kernel ``w``."""
    py = sfft.next_fast_len(2 * w.shape[0] + 2, real=False)
    px = sfft.next_fast_len(2 * w.shape[1] + 2, real=True)
    acf = sfft.irfft2(np.abs(sfft.rfft2(w, s=(py, px))) ** 2, s=(py, px))
    c0, cy, cx, cd = acf[0, 0], acf[1, 0], acf[0, 1], acf[1, 1]
    uu, vv = u[:, None], v[None, :]
    # nodes (0,0), (0,1), (1,0), (1,1); covariances by lag; the kernel is mirror-symmetric
    wts = [(1 - uu) * (1 - vv), (1 - uu) * vv, uu * (1 - vv), uu * vv]
    lag = {(0, 0): c0, (0, 1): cx, (1, 0): cy, (1, 1): cd}
    nodes = [(0, 0), (0, 1), (1, 0), (1, 1)]
    var = np.zeros((len(u), len(v)))
    for a, (ya, xa) in enumerate(nodes):
        for b, (yb, xb) in enumerate(nodes):
            var += wts[a] * wts[b] * lag[(abs(ya - yb), abs(xa - xb))]
    return var


# =============================================================================== densities
def _to_density(
    m: np.ndarray,
    s: np.ndarray,
    z: np.ndarray,
    distribution: str,
    common_sd: float = 0.0,
    g: np.ndarray | None = None,
) -> np.ndarray:
    """One interval's density realizations from mean, std (``(ny, nx)``) and ``z`` (``(n, ny, nx)``).

    ``g`` (``(n,)``) is the standard normal error shared by every cell of a realization;
    ``common_sd`` its standard deviation (kg C m⁻² for ``normal``, log units for
    ``lognormal``), capped at each cell's own; the cell's local part keeps the rest of its
    variance, so the marginal distribution of every cell is unchanged.
    """
    bad = ~(np.isfinite(m) & np.isfinite(s))
    shared = common_sd > 0 and g is not None
    gg = np.asarray(g, dtype="float64").reshape(-1, 1, 1) if shared else 0.0
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if distribution == "normal":
            if shared:
                c = np.minimum(common_sd, s)
                d = m + np.sqrt(np.maximum(s * s - c * c, 0.0)) * z + c * gg
            else:
                d = m + s * z
            d = np.maximum(d, 0.0)
        else:
            s2 = np.log1p((s / m) ** 2)
            if shared:
                c = np.minimum(common_sd, np.sqrt(s2))
                d = m * np.exp(np.sqrt(np.maximum(s2 - c * c, 0.0)) * z + c * gg - 0.5 * s2)
            else:
                d = m * np.exp(np.sqrt(s2) * z - 0.5 * s2)
            d = np.where(m > 0, d, 0.0)  # a non-positive mean holds nothing
    return np.where(bad, np.nan, d)


def _cumulative(cur: np.ndarray, prev: np.ndarray | None) -> np.ndarray:
    """``max(cur, prev)`` cell by cell; nodata in ``cur`` stays nodata, in ``prev`` is ignored."""
    if prev is None:
        return cur
    return np.where(np.isnan(cur), cur, np.fmax(cur, prev))


def realization_block(
    means: Sequence[np.ndarray],
    stds: Sequence[np.ndarray],
    z: np.ndarray,
    intervals: Sequence[tuple[float, float]],
    *,
    kernel_of: Sequence[int] | None = None,
    distribution: str = "normal",
    cumulative: bool = True,
    common_sd: Sequence[float] | None = None,
    shared: np.ndarray | None = None,
) -> np.ndarray:
    """Density realizations of one block for every interval (pure NumPy).

    Parameters
    ----------
    means, stds
        Per interval, ``(ny, nx)`` predicted mean and standard deviation (kg C m⁻²; NaN =
        nodata), in the order of ``intervals``.
    z
        ``(n_kernels, n, ny, nx)`` unit-variance fields (:meth:`GaussianField.window`).
    intervals
        ``(top_cm, bottom_cm)`` per interval; intervals sharing a top must come in order
        of increasing bottom.
    kernel_of
        Index into ``z``'s first axis for each interval; default all 0.
    distribution
        ``"normal"`` (clipped at zero) or ``"lognormal"``.
    cumulative
        Make every realization monotone down each column of intervals that share a top
        (running maximum); ``False`` only to see what the constraint changes.
    common_sd, shared
        Per interval, the standard deviation of an error shared by all cells (see
        :func:`zone_total_draws`), and the ``(n,)`` standard normal values of that error
        in each realization.

    Returns
    -------
    numpy.ndarray
        ``(n_intervals, n, ny, nx)`` float64, kg C m⁻².
    """
    kernel_of = [0] * len(intervals) if kernel_of is None else list(kernel_of)
    common = [0.0] * len(intervals) if common_sd is None else list(common_sd)
    out = np.empty((len(intervals), z.shape[1], *z.shape[2:]))
    prev: dict[float, np.ndarray] = {}
    for k, (top, _bottom) in enumerate(intervals):
        d = _to_density(means[k], stds[k], z[kernel_of[k]], distribution, common[k], shared)
        if cumulative:
            d = _cumulative(d, prev.get(top))
            prev[top] = d
        out[k] = d
    return out


def _draw_block(
    field: GaussianField,
    realizations: tuple[int, ...],
    means: list[np.ndarray],
    stds: list[np.ndarray],
    area: np.ndarray,
    zone_block: Any,
    origin: tuple[int, int],
    spec: tuple[Any, ...],
) -> np.ndarray:
    """Per-zone sums of the realizations of one chunk: ``(n_intervals, n, n_zones, 3)``."""
    intervals, kernel_of, distribution, common, n_zones, sub = spec
    index, partial = zone_block if isinstance(zone_block, tuple) else (zone_block, None)
    ny, nx = np.shape(means[0])
    n = len(realizations)
    # exact partial sums (Python ints), added across chunks and rounded once: the totals
    # of every realization are the same for any chunking and worker count
    out = np.empty((len(intervals), n, n_zones, 3), dtype=object)
    has_data = any(bool(np.isfinite(m).any()) for m in means)
    if not has_data:  # no cell to simulate: zone areas only
        empty = zone_sums_block(
            np.full((ny, nx), np.nan), area, index, n_zones, partial, exact=True
        )
        out[:] = empty
        return out
    r0, c0 = origin
    for b in range(0, n, sub):
        reals = realizations[b : b + sub]
        z = field.window(slice(r0, r0 + ny), slice(c0, c0 + nx), reals)
        g = field.shared(reals) if any(common) else None
        prev: dict[float, np.ndarray] = {}
        for k, (top, _bottom) in enumerate(intervals):
            m = np.asarray(means[k], dtype="float64")  # one interval at a time: less memory
            sd = np.asarray(stds[k], dtype="float64")
            dk = _to_density(m, sd, z[kernel_of[k]], distribution, common[k], g)
            d = _cumulative(dk, prev.get(top))
            prev[top] = d
            out[k, b : b + len(reals)] = zone_sums_block(
                d, area, index, n_zones, partial, exact=True
            )
    return out


# =============================================================================== inputs
def residual_variogram(model: Any) -> Variogram:
    """The fitted residual variogram of a model (``RegressionKriging.variogram_``).

    Raises
    ------
    ModelError
        The model has no fitted residual variogram (a tree model, or residuals all equal);
        fit one to its out-of-bag or cross-validated residuals with
        :meth:`mapping.models.variogram.Variogram.fit`.
    """
    v = getattr(model, "variogram_", None)
    if not isinstance(v, Variogram):
        raise ModelError(
            f"{type(model).__name__} has no fitted residual variogram (variogram_); fit one to "
            "its out-of-bag or cross-validated residuals with Variogram.fit"
        )
    return v


def _squeeze(arr: Any, what: str) -> Any:
    for dim in list(arr.dims[:-2]):
        if arr.sizes[dim] != 1:
            raise InputError(f"{what}: expected one band, got {arr.sizes[dim]} along {dim!r}")
        arr = arr.isel({dim: 0}, drop=True)
    return arr


def _intervals(
    means: Mapping[str, Any], stds: Mapping[str, Any]
) -> list[tuple[str, float, float, Any, Any]]:
    if not isinstance(means, Mapping) or not isinstance(stds, Mapping) or not means:
        raise InputError("means and stds must be non-empty mappings of interval ('0-30') to map")

    def keyed(maps: Mapping[str, Any], what: str) -> dict[tuple[float, float], Any]:
        out = {}
        for key, arr in maps.items():
            try:
                iv = parse_interval(key)
            except ValueError:
                raise InputError(
                    f"{what} {key!r}: key is not a depth interval such as '0-30'"
                ) from None
            if iv in out:
                raise InputError(f"{what}: interval {format_interval(*iv)} given twice")
            out[iv] = arr
        return out

    m, s = keyed(means, "means"), keyed(stds, "stds")
    if set(m) != set(s):
        miss = sorted(set(m) ^ set(s))[0]
        side = "stds" if miss in m else "means"
        raise InputError(f"{side}: no map for interval {format_interval(*miss)}")
    return [(format_interval(*iv), iv[0], iv[1], m[iv], s[iv]) for iv in sorted(m)]


def _variograms(
    variogram: Variogram | Mapping[str, Variogram], labels: Sequence[str]
) -> list[Variogram]:
    if isinstance(variogram, Variogram):
        return [variogram] * len(labels)
    if not isinstance(variogram, Mapping):
        raise ModelError(
            f"variogram must be a Variogram or a mapping, got {type(variogram).__name__}"
        )
    by_label = {}
    for key, v in variogram.items():
        try:
            label = format_interval(*parse_interval(key))
        except ValueError:
            raise ModelError(
                f"variogram {key!r}: key is not a depth interval such as '0-30'"
            ) from None
        if not isinstance(v, Variogram):
            raise ModelError(f"variogram {key!r}: expected a Variogram, got {type(v).__name__}")
        by_label[label] = v
    missing = [lab for lab in labels if lab not in by_label]
    if missing:
        raise ModelError(f"variogram: no variogram for interval {missing[0]}")
    return [by_label[lab] for lab in labels]


def _common_sd(common_sd: float | Mapping[str, float], labels: Sequence[str]) -> list[float]:
    if isinstance(common_sd, Mapping):
        by_label = {}
        for key, value in common_sd.items():
            try:
                by_label[format_interval(*parse_interval(key))] = value
            except ValueError:
                raise ConfigError(
                    f"common_sd {key!r}: key is not a depth interval such as '0-30'"
                ) from None
        missing = [lab for lab in labels if lab not in by_label]
        if missing:
            raise ConfigError(f"common_sd: no value for interval {missing[0]}")
        values = [by_label[lab] for lab in labels]
    else:
        values = [common_sd] * len(labels)
    out = []
    for v in values:
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise ConfigError(f"common_sd must be a number >= 0, got {v!r}") from None
        if not (math.isfinite(f) and f >= 0):
            raise ConfigError(f"common_sd must be a number >= 0, got {v!r}")
        out.append(f)
    return out


def cv_block_error_sd(
    cv: pd.DataFrame,
    *,
    log: bool = True,
    group: str = "fold",
    observed: str = "observed",
    predicted: str = "predicted",
) -> float:
    """Regional (block-scale) error of a map, from spatial cross-validation.

    The error a trend makes over a whole region (a random forest cannot extrapolate into
    warm, sparsely sampled land) is shared by the region's cells; a residual variogram,
    fitted at the profiles, does not show it. Spatial cross-validation does: each fold of
    a kNNDM (or block) split is predicted from the others, so the mean error of a fold is
    the error of the map's level over an area predicted at the distances of the map. Its
    spread over folds contains, besides that regional error ``tau``, the sampling noise of
    a mean of ``n_k`` profile errors. The one-way random-effects method of moments
    separates the two:

    ``tau² = max(0, var_k(ē_k) − mean_k(s_k² / n_k))``

    with ``ē_k``, ``s_k²`` and ``n_k`` the mean, variance (ddof 1) and count of the errors
    ``e = ln(predicted) − ln(observed)`` (``predicted − observed`` with ``log=False``) in
    fold ``k``, and ``var_k`` the variance (ddof 1) of the fold means. With ``K`` folds the
    estimate has ``K − 1`` degrees of freedom: it is a scale, not a precise figure.

    Parameters
    ----------
    cv
        Out-of-fold predictions: one row per profile with the fold, observed and
        predicted values (``models/<interval>/cv_predictions.csv``).
    log
        Errors on the log scale (for models fitted on log stocks; the result is then in
        log units, as ``common_sd`` of :func:`zone_total_draws` needs with
        ``lognormal``); rows with a value <= 0 are left out.
    group, observed, predicted
        Column names.

    Returns
    -------
    float
        ``tau`` (log units, or the values' units with ``log=False``); 0.0 with fewer than
        two folds of at least two profiles.

    Raises
    ------
    InputError
        A column is missing.

    Examples
    --------
    >>> cv = pd.DataFrame({"fold": [1, 1, 2, 2], "observed": [1.0, 1.0, 1.0, 1.0],
    ...                    "predicted": [0.0, 2.0, 2.0, 4.0]})
    >>> cv_block_error_sd(cv, log=False)  # var of (1, 3) = 2, noise (2/2 + 2/2)/2 = 1
    1.0
    """
    missing = [c for c in (group, observed, predicted) if c not in cv.columns]
    if missing:
        raise InputError(f"cross-validation table lacks column {missing[0]!r}")
    obs = cv[observed].to_numpy(float)
    pred = cv[predicted].to_numpy(float)
    ok = np.isfinite(obs) & np.isfinite(pred)
    if log:
        ok &= (obs > 0) & (pred > 0)
        err = np.log(pred[ok]) - np.log(obs[ok])
    else:
        err = pred[ok] - obs[ok]
    stats = pd.Series(err).groupby(cv[group].to_numpy()[ok]).agg(["mean", "var", "size"])
    stats = stats[stats["size"] >= 2]
    if len(stats) < 2:
        return 0.0
    between = float(stats["mean"].var(ddof=1))
    noise = float((stats["var"] / stats["size"]).mean())
    return math.sqrt(max(between - noise, 0.0))


def residual_mean_sd(model: Any) -> float:
    """Standard error of the residuals' mean level under the model's own variogram.

    ``sqrt(1 / (1' K⁻¹ 1))``, ``K`` the covariance of the residuals at the training
    locations (``RegressionKriging.kriging_``), is the standard deviation of the
    generalised-least-squares estimate of their mean: with clustered data and a long
    range it is far larger than ``sd / sqrt(n)``. An error of that size is shared by every
    cell that is not close to data, so it belongs in ``common_sd`` of
    :func:`zone_total_draws` (on the log scale for models with ``log_transform``).

    Raises
    ------
    ModelError
        The model has no fitted residual kriging.
    """
    from scipy.linalg import cho_factor, cho_solve
    from scipy.spatial.distance import cdist

    variogram = residual_variogram(model)
    ok = getattr(model, "kriging_", model)
    xy = getattr(ok, "xy_", None)
    if xy is None:
        raise ModelError(f"{type(model).__name__} holds no training locations (kriging_.xy_)")
    xy = np.asarray(xy, dtype="float64")
    cov = variogram.covariance(cdist(xy, xy))
    one = np.ones(len(xy))
    try:
        w = cho_solve(cho_factor(cov), one)
    except np.linalg.LinAlgError:
        w = np.linalg.lstsq(cov, one, rcond=None)[0]
    return float(math.sqrt(1.0 / float(one @ w)))


def _check_distribution(distribution: str) -> str:
    if distribution not in DISTRIBUTIONS:
        raise ConfigError(f"distribution {distribution!r} is not one of {', '.join(DISTRIBUTIONS)}")
    return distribution


def _check_unit(unit: str) -> float:
    if unit not in UNITS:
        raise ConfigError(f"unit {unit!r} is not one of {', '.join(UNITS)}")
    return UNITS[unit]


def _check_ranges(ranges: Sequence[float]) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in ranges)
    except (TypeError, ValueError):
        raise ConfigError(f"ranges {ranges!r} must be two percentiles, e.g. (5, 95)") from None
    if not 0 <= lo < hi <= 100:
        raise ConfigError(f"ranges {ranges!r}: percentiles must satisfy 0 <= lower < upper <= 100")
    return lo, hi


MAX_WIDTH_ERROR = 0.5
"""Largest relative error of a cell's east-west width allowed on a geographic grid.

The lattice of the Monte Carlo fields has one spacing per axis; on a longitude/latitude
grid that is the spacing at the extent's centre latitude ``lat0`` (:meth:`Grid.cell_spacing_m`),
so a cell at latitude ``lat`` is taken to be ``cos(lat0) / cos(lat)`` times its true width
and the residual correlation along a parallel is stretched or squeezed by that factor.
Grids whose extent makes this more than 50 % are refused (a 15° span centred at 65° N is
off by up to 32 %; 50-80° N by 59 %)."""


def _lattice_spacing(grid: Grid) -> tuple[float, float]:
    # (dy, dx) of the field's lattice in metres.
    if not grid.is_geographic:
        xres, yres = grid.resolution
        return (yres, xres)
    lo, hi = grid.latitude_span()
    lat0 = np.radians((lo + hi) / 2)
    worst = max(abs(np.cos(np.radians(v)) / np.cos(lat0) - 1.0) for v in (lo, hi))
    if not worst <= MAX_WIDTH_ERROR:
        raise InputError(
            f"{grid}: Monte Carlo residual fields use one cell width per axis, taken at the "
            f"centre latitude; between {lo:.1f} and {hi:.1f} degrees it is off by up to "
            f"{100 * worst:.0f} % (at most {100 * MAX_WIDTH_ERROR:.0f} %): reproject the maps "
            "to an equal-area grid, e.g. EPSG:6931 in the north"
        )
    return grid.cell_spacing_m()


@dataclass
class _Prepared:
    labels: list[str]
    intervals: list[tuple[float, float]]
    means: list[Any]  # dask arrays chunked like the plan
    stds: list[Any]
    layout: ZoneLayout
    rows: tuple[int, ...]
    cols: tuple[int, ...]


def _prepare(
    means: Mapping[str, Any],
    stds: Mapping[str, Any],
    zones: Any,
    grid: Grid,
    names: Mapping[int, str] | None,
    chunks: int | tuple[int, int],
) -> _Prepared:
    import dask.array as da

    items = _intervals(means, stds)
    rows, cols = grid.chunk_sizes(chunks)
    mlist: list[Any] = []
    slist: list[Any] = []
    for label, _top, _bottom, m, s in items:
        for arr, what, dest in ((m, "mean", mlist), (s, "std", slist)):
            arr = _squeeze(arr, f"{what} {label}")
            g = Grid.from_dataarray(arr)
            if g != grid:
                raise GridMismatchError(f"{what} {label} is on {g}, expected {grid}")
            data = arr.data
            if not isinstance(data, da.Array):
                data = da.from_array(np.asarray(data), chunks=(rows, cols))
            dest.append(data.rechunk((rows, cols)))  # native dtype; float64 per task
    layout = (
        zones if isinstance(zones, ZoneLayout) else prepare_zones(zones, grid, names, chunks=chunks)
    )
    if layout.grid != grid:
        raise GridMismatchError(f"zones are on {layout.grid}, maps are on {grid}")
    return _Prepared(
        labels=[it[0] for it in items],
        intervals=[(it[1], it[2]) for it in items],
        means=mlist,
        stds=slist,
        layout=layout,
        rows=rows,
        cols=cols,
    )


def _auto_chunks(field: GaussianField) -> int:
    # a window is the chunk plus the kernel's halo on each side: chunks of about four
    # radii keep the halo's share of the FFT work below ~2x
    ry, rx = field.halo
    reach = max(ry, rx) * field.coarsen
    # (capped: a task holds a few arrays of the window, ~1 GB at 2560 + 2 x 625 cells)
    return int(min(2560, max(1024, 256 * math.ceil(4 * reach / 256))))


# =============================================================================== draws
def _draw_sums(
    prep: _Prepared,
    grid: Grid,
    field: GaussianField,
    kernel_of: Sequence[int],
    distribution: str,
    common: Sequence[float],
    n_realizations: int,
    batch: int,
) -> dask.array.Array:
    import dask
    import dask.array as da

    rows, cols = prep.rows, prep.cols
    m_blocks = [m.to_delayed(optimize_graph=False) for m in prep.means]
    s_blocks = [s.to_delayed(optimize_graph=False) for s in prep.stds]
    area = grid.cell_area(chunks=(rows[0], cols[0])).rechunk((rows, cols))
    a_blocks = area.to_delayed(optimize_graph=False)
    z_blocks = prep.layout.blocks(rows, cols)
    field_key = dask.delayed(field, pure=True, traverse=False)
    n_zones = prep.layout.n_zones
    n_int = len(prep.intervals)
    # realizations per pass: about 8 M values at a time, on the lattice and on the cells
    ry, rx = field.halo
    window = (rows[0] // field.coarsen + 2 * ry + 2) * (cols[0] // field.coarsen + 2 * rx + 2)
    sub = max(1, min(batch, (8 << 20) // max(window, rows[0] * cols[0], 1)))
    spec = (tuple(prep.intervals), tuple(kernel_of), distribution, tuple(common), n_zones, sub)
    r_off = np.concatenate([[0], np.cumsum(rows)]).astype(int)
    c_off = np.concatenate([[0], np.cumsum(cols)]).astype(int)
    per_batch = []
    for b0 in range(0, n_realizations, batch):
        reals = tuple(range(b0, min(n_realizations, b0 + batch)))
        parts = []
        for i in range(len(rows)):
            for j in range(len(cols)):
                task = dask.delayed(_draw_block, pure=True)(
                    field_key,
                    reals,
                    [mb[i, j] for mb in m_blocks],
                    [sb[i, j] for sb in s_blocks],
                    a_blocks[i, j],
                    z_blocks[i, j],
                    (int(r_off[i]), int(c_off[j])),
                    spec,
                )
                parts.append(
                    da.from_delayed(task, shape=(n_int, len(reals), n_zones, 3), dtype=object)
                )
        total = da.stack(parts).sum(axis=0, dtype=object)  # exact: any order, same sum
        per_batch.append(total.map_blocks(exact_to_float, dtype="float64"))
    return da.concatenate(per_batch, axis=1)


def zone_total_draws(
    means: Mapping[str, xr.DataArray],
    stds: Mapping[str, xr.DataArray],
    zones: ZoneLayout | xr.DataArray | ZoneCoverage,
    grid: Grid,
    variogram: Variogram | Mapping[str, Variogram],
    n_realizations: int = 100,
    seed: int = 0,
    chunks: int | tuple[int, int] | None = None,
    *,
    distribution: str = "normal",
    names: Mapping[int, str] | None = None,
    unit: str = "Pg",
    coarsen: int | None = None,
    common_sd: float | Mapping[str, float] = 0.0,
    batch: int = 10,
    progress: bool = False,
) -> pd.DataFrame:
    """Monte Carlo draws of the storage of every zone and interval, with correlated errors.

    Realization ``r`` of the density of a cell is ``m + s * Z_r`` (``normal``, clipped at
    zero) or its lognormal analogue with the same mean and standard deviation, where
    ``Z_r`` is a unit-variance Gaussian field with the correlation of ``variogram``
    (:class:`GaussianField`). Realizations are generated and integrated chunk by chunk
    (one task per chunk and ``batch`` of realizations); no task holds more than a chunk.

    Parameters
    ----------
    means, stds
        Predicted mean and standard deviation of SOC density (kg C m⁻², NaN = nodata) on
        ``grid``, keyed by interval (``{"0-30": da, "0-100": da}``); lazy or not.
    zones
        A :class:`~mapping.zonal.ZoneLayout` from :func:`~mapping.zonal.prepare_zones`,
        or zone codes on ``grid`` (DataArray), or a :class:`~mapping.zonal.ZoneCoverage`.
    grid
        The maps' grid; must be projected (the variogram's distances are in its units).
    variogram
        Residual variogram (e.g. ``RegressionKriging.variogram_``), one for all intervals
        or one per interval; only its correlation is used, ``s`` gives the scale.
    n_realizations
        Number of realizations; realization ``r`` does not depend on this number.
    seed
        Non-negative integer; with the grid and the inputs it fixes every draw.
    chunks
        Chunk size in cells (int or ``(cy, cx)``); ``None`` picks one from the kernel's
        radius. The draws do not depend on it (beyond rounding).
    distribution
        ``"normal"`` or ``"lognormal"`` (use it for models fitted on log stocks).
    names
        Zone names by code, when ``zones`` is not a prepared layout.
    unit
        ``"Pg"`` or ``"Tg"``.
    coarsen
        See :meth:`GaussianField.from_variograms`.
    common_sd
        Standard deviation of an error shared by every cell of the map (one value, or one
        per interval): the uncertainty of the model's regional level, which no variogram
        shows (:func:`residual_mean_sd`). In kg C m⁻² with ``normal``, in log units with
        ``lognormal``. Each cell's own standard deviation is kept: the shared part is
        taken out of it (capped at it), the rest stays local.
    batch
        Realizations per task.
    progress
        Show a progress bar.

    Returns
    -------
    pandas.DataFrame
        Long table, one row per interval x zone x realization, zones followed by
        ``all zones``: ``realization, zone, zone_code, interval, top_cm, bottom_cm,
        storage_pg`` (``storage_tg``). ``attrs`` hold the unit, seed, distribution,
        ``coarsen`` and the kernels' largest correlation error.

    Raises
    ------
    InputError, GridMismatchError, ModelError, ConfigError
        Inconsistent maps, zones or variograms, a geographic grid spanning too many
        latitudes (:data:`MAX_WIDTH_ERROR`), bad parameters.
    """
    import dask

    scale = _check_unit(unit)
    distribution = _check_distribution(distribution)
    if int(n_realizations) != n_realizations or n_realizations < 1:
        raise ConfigError(f"n_realizations must be a positive integer, got {n_realizations!r}")
    if int(batch) != batch or batch < 1:
        raise ConfigError(f"batch must be a positive integer, got {batch!r}")
    spacing = _lattice_spacing(grid)
    labels = [it[0] for it in _intervals(means, stds)]
    vlist = _variograms(variogram, labels)
    distinct = list(dict.fromkeys(vlist))
    kernel_of = [distinct.index(v) for v in vlist]
    field = GaussianField.from_variograms(distinct, spacing, seed, coarsen=coarsen)
    prep = _prepare(means, stds, zones, grid, names, chunks or _auto_chunks(field))
    common = _common_sd(common_sd, labels)
    sums = _draw_sums(
        prep, grid, field, kernel_of, distribution, common, int(n_realizations), int(batch)
    )
    if progress:
        (result,) = compute_with_progress(sums, label="Monte Carlo zone totals")
    else:
        (result,) = dask.compute(sums)
    storage = np.asarray(result)[..., 2] / scale  # (n_int, n, n_zones)
    draws = _long_table(prep, storage, unit)
    draws.attrs.update(
        {
            "storage_unit": unit,
            "seed": int(seed),
            "n_realizations": int(n_realizations),
            "distribution": distribution,
            "coarsen": field.coarsen,
            "chunks": (prep.rows[0], prep.cols[0]),
            "common_sd": dict(zip(labels, common, strict=True)),
            "kernel_max_correlation_error": max(k.max_correlation_error for k in field.kernels),
            "variograms": {lab: v.to_dict() for lab, v in zip(labels, vlist, strict=True)},
        }
    )
    return draws


def _long_table(prep: _Prepared, storage: np.ndarray, unit: str) -> pd.DataFrame:
    n_int, n, n_zones = storage.shape
    total = storage.sum(axis=2, keepdims=True)
    values = np.concatenate([storage, total], axis=2)  # (n_int, n, n_zones + 1)
    values = values.transpose(0, 2, 1)  # interval, zone, realization
    zones = np.array([*prep.layout.names, ALL_ZONES], dtype=object)
    codes = pd.array([*prep.layout.codes, pd.NA], dtype="Int64")
    nz = n_zones + 1
    iz = np.tile(np.repeat(np.arange(nz), n), n_int)
    ik = np.repeat(np.arange(n_int), nz * n)
    return pd.DataFrame(
        {
            "realization": np.tile(np.arange(n), n_int * nz),
            "zone": zones[iz],
            "zone_code": codes[iz],
            "interval": np.array(prep.labels, dtype=object)[ik],
            "top_cm": np.array([iv[0] for iv in prep.intervals])[ik],
            "bottom_cm": np.array([iv[1] for iv in prep.intervals])[ik],
            f"storage_{unit.lower()}": values.ravel(),
        }
    )


# =============================================================================== summaries
_KEYS = ["zone", "zone_code", "interval", "top_cm", "bottom_cm"]


def _storage_column(df: pd.DataFrame) -> tuple[str, float]:
    for u, size in UNITS.items():
        col = f"storage_{u.lower()}"
        if col in df.columns:
            return col, size
    raise InputError(
        f"draws have no storage column ({', '.join('storage_' + u.lower() for u in UNITS)})"
    )


def summarise_draws(
    draws: pd.DataFrame, ranges: Sequence[float] = (5, 95), unit: str = "Pg"
) -> pd.DataFrame:
    """Median and percentile range of every total from :func:`zone_total_draws`.

    Parameters
    ----------
    draws
        The long table of draws.
    ranges
        Lower and upper percentile of the range (default 5 and 95: a 90 % range).
    unit
        ``"Pg"`` or ``"Tg"`` for the output (the draws may be in either).

    Returns
    -------
    pandas.DataFrame
        One row per interval x zone (``all zones`` included), in the draws' order:
        ``zone, zone_code, interval, top_cm, bottom_cm, n_realizations, storage_mean_pg,
        storage_median_pg, storage_lower_pg, storage_upper_pg, lower_pct, upper_pct``
        (``_tg`` with ``unit="Tg"``). Percentiles interpolate linearly between draws.
    """
    scale = _check_unit(unit)
    lo, hi = _check_ranges(ranges)
    col, size = _storage_column(draws)
    missing = [c for c in [*_KEYS, "realization"] if c not in draws.columns]
    if missing:
        raise InputError(f"draws lack column(s) {', '.join(missing)}")
    values = draws[col].to_numpy(float) * (size / scale)
    key = draws["interval"].astype(str) + "\x00" + draws["zone"].astype(str)
    codes, uniques = pd.factorize(key, sort=False)
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(uniques) + 1))
    u = unit.lower()
    rows = []
    for g in range(len(uniques)):
        idx = order[bounds[g] : bounds[g + 1]]
        v = values[idx]
        p = np.percentile(v, [lo, 50.0, hi])
        meta = draws.iloc[idx[0]]
        rows.append(
            {
                **{k: meta[k] for k in _KEYS},
                "n_realizations": len(v),
                f"storage_mean_{u}": float(v.mean()),
                f"storage_median_{u}": float(p[1]),
                f"storage_lower_{u}": float(p[0]),
                f"storage_upper_{u}": float(p[2]),
                "lower_pct": lo,
                "upper_pct": hi,
            }
        )
    out = pd.DataFrame(rows)
    out["zone_code"] = out["zone_code"].astype("Int64")
    out.attrs.update({**draws.attrs, "storage_unit": unit, "range_pct": (lo, hi)})
    return out


def attach_ranges(totals: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """Add the Monte Carlo median and range to the table of :func:`mapping.zonal.zone_totals`.

    Rows are matched on ``interval`` and ``zone``; the summary's unit must be the table's.
    Returns a new table with ``storage_median_pg, storage_lower_pg, storage_upper_pg``
    (``_tg``) after the storage column.
    """
    col, _ = _storage_column(totals)
    u = col.removeprefix("storage_")
    add = [f"storage_median_{u}", f"storage_lower_{u}", f"storage_upper_{u}"]
    missing = [c for c in add if c not in summary.columns]
    if missing:
        raise InputError(f"summary has no {missing[0]}; summarise the draws in the table's unit")
    out = totals.merge(summary[["interval", "zone", *add]], on=["interval", "zone"], how="left")
    cols = list(totals.columns)
    pos = cols.index(col) + 1
    out = out[cols[:pos] + add + cols[pos:]]
    out.attrs.update(totals.attrs)
    return out


# =============================================================================== independent pixels
def _pixel_block(
    means: list[np.ndarray], stds: list[np.ndarray], area: np.ndarray, zone_block: Any, n_zones: int
) -> np.ndarray:
    """Per interval and zone: sum w A m, sum w A s, sum (w A s)^2 -> ``(n_int, n_zones, 3)``."""
    index, partial = zone_block if isinstance(zone_block, tuple) else (zone_block, None)
    sq = None if partial is None else (partial[0], partial[1], partial[2] ** 2)
    out = np.empty((len(means), n_zones, 3), dtype=object)  # exact sums, rounded once
    for k, (m, s) in enumerate(zip(means, stds, strict=True)):
        m = np.asarray(m, dtype="float64")
        s = np.asarray(s, dtype="float64")
        bad = ~(np.isfinite(m) & np.isfinite(s))
        m = np.where(bad, np.nan, m)
        s = np.where(bad, np.nan, s)
        lin = zone_sums_block(np.stack([m, s]), area, index, n_zones, partial, exact=True)
        var = zone_sums_block(area * s * s, area, index, n_zones, sq, exact=True)
        out[k, :, 0] = lin[0, :, 2]
        out[k, :, 1] = lin[1, :, 2]
        out[k, :, 2] = var[:, 2]
    return out


def independent_pixel_range(
    means: Mapping[str, xr.DataArray],
    stds: Mapping[str, xr.DataArray],
    zones: ZoneLayout | xr.DataArray | ZoneCoverage,
    grid: Grid,
    ranges: Sequence[float] = (5, 95),
    unit: str = "Pg",
    chunks: int | tuple[int, int] = 1024,
    *,
    names: Mapping[int, str] | None = None,
) -> pd.DataFrame:
    """The range of every zone total if cell errors were independent (for comparison).

    The total ``T = sum_i w_i A_i m_i`` gets the variance ``sum_i (w_i A_i s_i)^2`` and a
    normal range ``T + z_p sd`` (central limit theorem over many cells). Also reported:
    the standard deviation under *perfect* correlation, ``sum_i w_i A_i s_i`` (what summing
    pixel quantiles amounts to). The Monte Carlo range lies between the two.

    Parameters
    ----------
    means, stds, zones, grid, names
        As for :func:`zone_total_draws`.
    ranges
        Lower and upper percentile.
    unit
        ``"Pg"`` or ``"Tg"``.
    chunks
        Chunk size in cells.

    Returns
    -------
    pandas.DataFrame
        One row per interval x zone plus ``all zones``: ``zone, zone_code, interval,
        top_cm, bottom_cm, storage_pg, storage_sd_pg, storage_lower_pg,
        storage_upper_pg, storage_sd_full_correlation_pg, lower_pct, upper_pct``
        (``_tg`` with ``unit="Tg"``).
    """
    import dask
    import dask.array as da
    from scipy.stats import norm

    scale = _check_unit(unit)
    lo, hi = _check_ranges(ranges)
    prep = _prepare(means, stds, zones, grid, names, chunks)
    rows, cols = prep.rows, prep.cols
    m_blocks = [m.to_delayed(optimize_graph=False) for m in prep.means]
    s_blocks = [s.to_delayed(optimize_graph=False) for s in prep.stds]
    area = grid.cell_area(chunks=(rows[0], cols[0])).rechunk((rows, cols))
    a_blocks = area.to_delayed(optimize_graph=False)
    z_blocks = prep.layout.blocks(rows, cols)
    n_zones, n_int = prep.layout.n_zones, len(prep.intervals)
    parts = []
    for i in range(len(rows)):
        for j in range(len(cols)):
            task = dask.delayed(_pixel_block, pure=True)(
                [mb[i, j] for mb in m_blocks],
                [sb[i, j] for sb in s_blocks],
                a_blocks[i, j],
                z_blocks[i, j],
                n_zones,
            )
            parts.append(da.from_delayed(task, shape=(n_int, n_zones, 3), dtype=object))
    (sums,) = dask.compute(da.stack(parts).sum(axis=0, dtype=object))
    sums = exact_to_float(sums)
    sums = np.concatenate([sums, sums.sum(axis=1, keepdims=True)], axis=1) / np.array(
        [scale, scale, scale * scale]
    )
    z_lo, z_hi = norm.ppf(lo / 100.0), norm.ppf(hi / 100.0)
    u = unit.lower()
    zones_l = [*prep.layout.names, ALL_ZONES]
    codes = [*prep.layout.codes, pd.NA]
    rows_out = []
    for k, (label, (top, bottom)) in enumerate(zip(prep.labels, prep.intervals, strict=True)):
        for z, (name, code) in enumerate(zip(zones_l, codes, strict=True)):
            total, sd_full, var = sums[k, z]
            sd = math.sqrt(max(var, 0.0))
            rows_out.append(
                {
                    "zone": name,
                    "zone_code": code,
                    "interval": label,
                    "top_cm": top,
                    "bottom_cm": bottom,
                    f"storage_{u}": total,
                    f"storage_sd_{u}": sd,
                    f"storage_lower_{u}": total + z_lo * sd,
                    f"storage_upper_{u}": total + z_hi * sd,
                    f"storage_sd_full_correlation_{u}": sd_full,
                    "lower_pct": lo,
                    "upper_pct": hi,
                }
            )
    out = pd.DataFrame(rows_out)
    out["zone_code"] = out["zone_code"].astype("Int64")
    out.attrs.update({"storage_unit": unit, "range_pct": (lo, hi)})
    return out
