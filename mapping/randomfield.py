"""Seeded Gaussian random fields on the cells of a grid, made window by window.

A field ``Z`` is stationary, Gaussian, of unit variance and with the *correlation* of a
variogram, ``rho(h) = C(h) / C(0)`` (the nugget share is uncorrelated noise). Its value at a
cell depends only on the seed, the realization number and the cell's position on the grid:

* white noise ``W`` on the cells (or on a coarser lattice, see ``coarsen``) is drawn in fixed
  blocks of :data:`NOISE_BLOCK` x :data:`NOISE_BLOCK` cells, each block from its own stream
  ``SeedSequence(seed, spawn_key=(stream, realization, block row, block column))``;
* ``Z = k * W`` (discrete convolution) with the kernel ``k`` whose lattice autocorrelation is
  ``rho``: ``k = IDFT(sqrt(DFT(rho)))`` on a torus several ranges wide (the square root of the
  circulant-embedding covariance, Dietrich & Newsam 1997), cut where less than ``1e-4`` of
  its energy and ``5e-4`` of its sum lie beyond, and rescaled to unit variance;
* the convolution is done by FFT on fixed, grid-aligned tiles of the lattice (side
  :attr:`GaussianField.tile`, set by the kernels' radius and the grid's shape, never by the
  chunking), each with
  a halo of the kernel's radius and an FFT of one size; a window (a chunk) is cut from the
  tiles it touches. A cell's value, to the last bit, depends only on the seed, the
  realization and the cell, not on the chunking or on the worker that computes it.

With ``coarsen=f`` the structured part of the field is simulated on a lattice of every
``f``-th cell, interpolated bilinearly, and topped up with independent noise so every cell
keeps unit variance (the nugget and the interpolation's lost variance); this is ``f²``
times cheaper for ranges of hundreds of cells. See ``docs/uncertainty.md``.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from scipy import fft as sfft

from mapping._field_kernel import add_topup, bilinear_at
from mapping.exceptions import ConfigError, InputError, ModelError
from mapping.grid import Grid
from mapping.models.variogram import Variogram, unit_semivariance

__all__ = [
    "KERNEL_SUM_TOL",
    "KERNEL_TOL",
    "LATTICE_REACH",
    "MAX_WIDTH_ERROR",
    "NOISE_BLOCK",
    "GaussianField",
    "LatticeKernel",
    "lattice_kernel",
    "lattice_spacing",
]

NOISE_BLOCK = 128
#: Kernel energy left outside the cut radius (before rescaling to unit variance).
KERNEL_TOL = 1e-4
#: Kernel *sum* left outside the cut: the variance of a total over a zone much wider than the
#: range is proportional to ``sum(k)**2``, so this bounds its error (~2 x 5e-4).
KERNEL_SUM_TOL = 5e-4
#: Automatic coarsening: the lattice resolves the kernel's reach with ``LATTICE_REACH`` to
#: ``2 * LATTICE_REACH`` nodes (15 to 30 nodes per range for the exponential model), never
#: finer: a grid of 1 km cells under a 75 km range is simulated on a 4 km lattice, 16x fewer
#: FFT nodes, and its cells keep unit variance (interpolation plus top-up). Reaches shorter
#: than this many cells are simulated on every cell.
LATTICE_REACH = 128
#: Lattice tiles: the field is convolved one fixed, grid-aligned tile at a time, each with an
#: FFT of one size, so the rounding of a cell's value does not depend on the window (chunk)
#: that asks for it. A tile's side is near four kernel radii (a multiple of ``TILE_STEP``
#: lattice cells: the halo then costs at most ~2x the tile's FFT work) and at most
#: ``TILE_MAX`` cells of the grid; given the grid's shape, the grid is split into equal
#: tiles of about that side (one tile when the grid is smaller). Part of the definition of
#: a realization's last bits.
TILE_STEP = 128
TILE_MAX = 2560
_STREAM_LATTICE = 1  # white noise convolved with the kernel
_STREAM_TOPUP = 2  # independent noise per cell (coarsened fields only)
_STREAM_SHARED = 3  # one value per realization: the error shared by all cells
_STREAM_EXTRA = 4  # one more per realization: the extrapolation error shared by all cells
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
    tile
        Side ``(ty, tx)`` of the lattice tiles, each convolved by one FFT of a fixed size
        (:data:`TILE_STEP`).
    """

    kernels: tuple[LatticeKernel, ...]
    coarsen: int
    seed: int
    topup_sd: np.ndarray
    tile: tuple[int, int]
    _token: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        h = hashlib.sha256()
        h.update(repr((self.coarsen, self.seed, NOISE_BLOCK, self.tile)).encode())
        for k in self.kernels:
            h.update(np.ascontiguousarray(k.weights).tobytes())
        h.update(np.ascontiguousarray(self.topup_sd).tobytes())
        object.__setattr__(self, "_token", h.hexdigest())

    def __dask_tokenize__(self) -> tuple[str, str]:
        return ("socmap.GaussianField", self._token)

    def __getstate__(self) -> dict[str, object]:
        # the kernels' spectra are a cache, rebuilt where the field is used
        return {k: v for k, v in self.__dict__.items() if k != "_spectra"}

    @classmethod
    def from_variograms(
        cls,
        variograms: Sequence[Variogram],
        spacing: tuple[float, float],
        seed: int = 0,
        *,
        coarsen: int | None = None,
        tol: float = KERNEL_TOL,
        shape: tuple[int, int] | None = None,
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
            ``None``: ``reach // LATTICE_REACH`` (at least 1), where ``reach`` is the
            longest kernel's reach in cells (:data:`LATTICE_REACH`).
        tol
            Kernel energy allowed outside its cut (see :func:`lattice_kernel`).
        shape
            ``(ny, nx)`` of the grid the field will be asked on, to split it into equal
            tiles (:data:`TILE_STEP`); ``None``: tiles sized from the kernels alone. Any
            window of any grid can still be asked for.
        """
        if int(seed) != seed or seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
        if not variograms:
            raise ModelError("no variogram given")
        dy, dx = (float(s) for s in spacing)
        if coarsen is None:
            # kernel radii: about 8.4 ranges (exponential), 3 (spherical), 2 (Gaussian)
            reach = max(_kernel_reach(v) for v in variograms) / min(dy, dx)
            coarsen = max(1, math.floor(reach / LATTICE_REACH))
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
        halo = (max(k.radius[0] for k in kernels), max(k.radius[1] for k in kernels))
        cells = (None, None) if shape is None else shape
        tile = tuple(_tile_side(r, f, n) for r, n in zip(halo, cells, strict=True))
        return cls(kernels, f, int(seed), topup, tile)  # type: ignore[arg-type]

    @property
    def halo(self) -> tuple[int, int]:
        """Largest kernel radius ``(ry, rx)`` in lattice cells."""
        return (max(k.radius[0] for k in self.kernels), max(k.radius[1] for k in self.kernels))

    # ------------------------------------------------------------------ noise
    def _noise(
        self,
        stream: int,
        r: int,
        i0: int,
        i1: int,
        j0: int,
        j1: int,
        out: np.ndarray | None = None,
        need: np.ndarray | None = None,
    ) -> np.ndarray:
        """Unit white noise on lattice rows ``i0:i1``, columns ``j0:j1`` of realization ``r``
        (written into ``out`` when given; with ``need``, an ``(i1 - i0, j1 - j0)`` mask,
        only the noise blocks holding needed cells are drawn, the rest left unset)."""
        b = NOISE_BLOCK
        out = np.empty((i1 - i0, j1 - j0)) if out is None else out
        for bi in range(i0 // b, (i1 - 1) // b + 1):
            for bj in range(j0 // b, (j1 - 1) // b + 1):
                a0, a1 = max(i0, bi * b), min(i1, (bi + 1) * b)
                c0, c1 = max(j0, bj * b), min(j1, (bj + 1) * b)
                if need is not None and not need[a0 - i0 : a1 - i0, c0 - j0 : c1 - j0].any():
                    continue
                ss = np.random.SeedSequence(
                    self.seed,
                    spawn_key=(_FIELD_TAG, stream, r, bi + _KEY_OFFSET, bj + _KEY_OFFSET),
                )
                block = np.random.Generator(np.random.PCG64(ss)).standard_normal((b, b))
                out[a0 - i0 : a1 - i0, c0 - j0 : c1 - j0] = block[
                    a0 - bi * b : a1 - bi * b, c0 - bj * b : c1 - bj * b
                ]
        return out

    def _kernel_spectra(self) -> tuple[tuple[int, int], list[np.ndarray]]:
        """FFT shape of a tile with its halo, and every kernel's spectrum on it (cached)."""
        cached = self.__dict__.get("_spectra")
        if cached is None:
            (ty, tx), (ry, rx) = self.tile, self.halo
            edge = 1 if self.coarsen > 1 else 0  # the next tile's first node, to interpolate
            fh = sfft.next_fast_len(ty + edge + 2 * ry, real=False)
            fw = sfft.next_fast_len(tx + edge + 2 * rx, real=True)
            specs = []
            for k in self.kernels:
                ky, kx = k.radius
                pad = np.zeros((fh, fw))
                pad[np.ix_(np.arange(-ky, ky + 1) % fh, np.arange(-kx, kx + 1) % fw)] = k.weights
                specs.append(sfft.rfft2(pad))
            cached = ((fh, fw), specs)
            object.__setattr__(self, "_spectra", cached)  # same values in every thread
        return cached

    def _tile_nodes(self, ti: int, tj: int, r: int) -> np.ndarray:
        """Fields on the lattice nodes of tile ``(ti, tj)`` in realization ``r``.

        Returns ``(n_kernels, ty + e, tx + e)``, ``e = 1`` when coarsened (the next tile's
        first row and column, which the tile's last cells interpolate towards). Always one
        FFT of the same size over the same noise: the same bits wherever it is asked for.
        """
        (ty, tx), (ry, rx) = self.tile, self.halo
        (fh, fw), specs = self._kernel_spectra()
        edge = 1 if self.coarsen > 1 else 0
        ni, nj = ty + edge, tx + edge
        i0, j0 = ti * ty, tj * tx
        noise = np.zeros((fh, fw))
        self._noise(
            _STREAM_LATTICE, r, i0 - ry, i0 + ni + ry, j0 - rx, j0 + nj + rx,
            out=noise[: ni + 2 * ry, : nj + 2 * rx],
        )  # fmt: skip
        spec = sfft.rfft2(noise)
        out = np.empty((len(specs), ni, nj))
        for q, ks in enumerate(specs):
            z = sfft.irfft2(spec * ks, s=(fh, fw), overwrite_x=True)
            out[q] = z[ry : ry + ni, rx : rx + nj]
        return out

    def _tile_cells(
        self, nodes: np.ndarray, ti: int, tj: int, rows: range, cols: range
    ) -> np.ndarray:
        """The cells ``rows x cols`` (grid indices, inside tile ``(ti, tj)``) from its nodes."""
        (ty, tx), f = self.tile, self.coarsen
        rr, cc = np.asarray(rows), np.asarray(cols)
        if f == 1:
            return nodes[
                :, rr[0] - ti * ty : rr[-1] + 1 - ti * ty, cc[0] - tj * tx : cc[-1] + 1 - tj * tx
            ]
        ii, u = rr // f - ti * ty, (rr % f) / f
        jj, v = cc // f - tj * tx, (cc % f) / f
        # bilinear, one axis at a time (cell by cell: the same bits in any window)
        zr = nodes[:, ii, :] * (1.0 - u)[:, None] + nodes[:, ii + 1, :] * u[:, None]
        return zr[..., jj] * (1.0 - v) + zr[..., jj + 1] * v

    # ------------------------------------------------------------------ public
    def shared(self, realizations: Sequence[int], stream: int = 0) -> np.ndarray:
        """One standard normal value per realization, the same in every window (``(n,)``).

        ``stream`` 0 is the regional level's shared error, 1 an independent one (the trend's
        extrapolation error shared by every cell, ``uncertainty.shared: extrapolation``)."""
        if stream not in (0, 1):
            raise ValueError(f"stream must be 0 or 1, got {stream!r}")
        tag = _STREAM_SHARED if stream == 0 else _STREAM_EXTRA
        out = np.empty(len(realizations))
        for n, r in enumerate(realizations):
            ss = np.random.SeedSequence(self.seed, spawn_key=(_FIELD_TAG, tag, int(r)))
            out[n] = np.random.Generator(np.random.PCG64(ss)).standard_normal()
        return out

    def window(
        self,
        rows: slice,
        cols: slice,
        realizations: Sequence[int],
        mask: np.ndarray | None = None,
    ) -> np.ndarray:
        """The fields on grid cells ``[rows, cols]`` for the given realization numbers.

        Parameters
        ----------
        rows, cols
            Unit-step slices with explicit, non-negative ``start`` and ``stop``; any
            window of any grid (the field is defined on the infinite lattice).
        realizations
            Realization numbers (non-negative integers); realization ``r`` is the same
            whatever other realizations are asked for.
        mask
            Optional ``(ny, nx)`` booleans: return only these cells, in row-major order;
            tiles holding none of them are not computed (e.g. ocean, or land outside
            every zone). See :meth:`masked_window`.

        Returns
        -------
        numpy.ndarray
            float64, ``(n_kernels, len(realizations), ny, nx)``, or ``(n_kernels,
            len(realizations), mask.sum())`` with ``mask``; bit for bit the same values
            whatever the window or mask (each tile it touches is computed whole).
        """
        r0, r1, c0, c1 = _bounds(rows, cols)
        if mask is not None:
            parts = list(self.masked_window(rows, cols, mask, realizations))
            if parts:
                return np.stack(parts, axis=1)
            return np.empty((len(self.kernels), 0, int(np.count_nonzero(mask))))
        f = self.coarsen
        cy, cx = (t * f for t in self.tile)  # a tile's side in cells
        out = np.empty((len(self.kernels), len(realizations), r1 - r0, c1 - c0))
        for n, r in enumerate(realizations):
            for ti in range(r0 // cy, (r1 - 1) // cy + 1):
                a0, a1 = max(r0, ti * cy), min(r1, (ti + 1) * cy)
                for tj in range(c0 // cx, (c1 - 1) // cx + 1):
                    b0, b1 = max(c0, tj * cx), min(c1, (tj + 1) * cx)
                    nodes = self._tile_nodes(ti, tj, int(r))
                    out[:, n, a0 - r0 : a1 - r0, b0 - c0 : b1 - c0] = self._tile_cells(
                        nodes, ti, tj, range(a0, a1), range(b0, b1)
                    )
            if f > 1:  # independent top-up: the nugget and what interpolation loses
                rr, cc = np.arange(r0, r1), np.arange(c0, c1)
                sd = self.topup_sd[:, rr % f][:, :, cc % f]  # (n_kernels, ny, nx)
                out[:, n] += sd * self._noise(_STREAM_TOPUP, int(r), r0, r1, c0, c1)
        return out

    def masked_window(
        self, rows: slice, cols: slice, mask: np.ndarray, realizations: Sequence[int]
    ) -> Iterator[np.ndarray]:
        """The fields at the ``mask`` cells of ``[rows, cols]``, one realization at a time.

        Yields ``(n_kernels, mask.sum())`` float64 per realization, cells in row-major
        order, bit for bit :meth:`window`'s values at those cells. Only the tiles and the
        top-up noise blocks that hold masked cells are computed; where each masked cell
        sits among the lattice nodes is worked out once for all realizations.
        """
        r0, r1, c0, c1 = _bounds(rows, cols)
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (r1 - r0, c1 - c0):
            raise ValueError(f"mask shape {mask.shape} is not the window's {(r1 - r0, c1 - c0)}")
        f, (ty, tx) = self.coarsen, self.tile
        cy, cx = ty * f, tx * f
        flat = np.flatnonzero(mask)
        ki, kj = np.divmod(flat, mask.shape[1])  # window row, column of each kept cell
        gi, gj = ki + r0, kj + c0  # grid row, column
        ti_of, tj_of = gi // cy, gj // cx
        # per tile: its places in the output, each cell's upper-left node (flat) and, on a
        # coarsened lattice, its fractional offsets down and across
        Plan = tuple[int, int, np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]
        tiles: list[Plan] = []
        width = tx + (1 if f > 1 else 0)  # the nodes' row length (with the next tile's edge)
        for ti, tj in sorted(set(zip(ti_of.tolist(), tj_of.tolist(), strict=True))):
            place = np.flatnonzero((ti_of == ti) & (tj_of == tj))
            base = (gi[place] // f - ti * ty) * width + (gj[place] // f - tj * tx)
            u = v = None
            if f > 1:
                u, v = (gi[place] % f) / f, (gj[place] % f) / f
            tiles.append((ti, tj, place, base, u, v))
        sd = None  # (n_kernels, kept): each kept cell's top-up standard deviation
        if f > 1:
            sd = np.ascontiguousarray(
                self.topup_sd.reshape(len(self.kernels), -1)[:, (gi % f) * f + gj % f]
            )
        for r in realizations:
            out = np.empty((len(self.kernels), len(flat)))
            for ti, tj, place, base, u, v in tiles:
                nf = self._tile_nodes(ti, tj, int(r)).reshape(len(self.kernels), -1)
                if u is None or v is None:
                    out[:, place] = nf[:, base]
                else:  # bilinear, rows first, then columns: the same operations as _tile_cells
                    bilinear_at(nf, width, base, u, v, place, out)
            if sd is not None:  # independent top-up: the nugget and what interpolation loses
                noise = self._noise(_STREAM_TOPUP, int(r), r0, r1, c0, c1, need=mask)
                add_topup(out, sd, noise.ravel(), flat)
            yield out


def _bounds(rows: slice, cols: slice) -> tuple[int, int, int, int]:
    r0, r1, c0, c1 = int(rows.start), int(rows.stop), int(cols.start), int(cols.stop)
    if r1 <= r0 or c1 <= c0:
        raise ValueError(f"empty window {rows}, {cols}")
    return r0, r1, c0, c1


def _tile_side(radius: int, coarsen: int, cells: int | None) -> int:
    """Side of the lattice tiles along one axis (:data:`TILE_STEP`)."""
    cap = max(TILE_STEP, TILE_MAX // coarsen // TILE_STEP * TILE_STEP)
    side = min(cap, TILE_STEP * max(1, math.ceil(4 * radius / TILE_STEP)))
    if cells is None:
        return side
    nodes = max(1, math.ceil(cells / coarsen))
    n_tiles = max(1, math.ceil(nodes / cap), round(nodes / side))
    return math.ceil(nodes / n_tiles)


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


MAX_WIDTH_ERROR = 0.5
"""Largest relative error of a cell's east-west width allowed on a geographic grid.

The lattice of the Monte Carlo fields has one spacing per axis; on a longitude/latitude
grid that is the spacing at the extent's centre latitude ``lat0`` (:meth:`Grid.cell_spacing_m`),
so a cell at latitude ``lat`` is taken to be ``cos(lat0) / cos(lat)`` times its true width
and the residual correlation along a parallel is stretched or squeezed by that factor.
Grids whose extent makes this more than 50 % are refused (a 15° span centred at 65° N is
off by up to 32 %; 50-80° N by 59 %)."""


def lattice_spacing(grid: Grid) -> tuple[float, float]:
    """``(dy, dx)`` of a field's lattice on ``grid``, in metres (the variograms' units).

    Raises
    ------
    InputError
        A geographic grid whose cell widths vary by more than :data:`MAX_WIDTH_ERROR`.
    """
    if not grid.is_geographic:
        xres, yres = grid.resolution
        return (yres, xres)
    problem = lattice_width_problem(grid)
    if problem:
        raise InputError(f"{grid}: {problem}")
    return grid.cell_spacing_m()


def lattice_width_problem(grid: Grid) -> str | None:
    """Why a geographic ``grid`` is too tall for one cell width per axis, or ``None``."""
    if not grid.is_geographic:
        return None
    lo, hi = grid.latitude_span()
    lat0 = np.radians((lo + hi) / 2)
    worst = max(abs(np.cos(np.radians(v)) / np.cos(lat0) - 1.0) for v in (lo, hi))
    if worst <= MAX_WIDTH_ERROR:
        return None
    return (
        f"Monte Carlo residual fields use one cell width per axis, taken at the centre "
        f"latitude; between {lo:.1f} and {hi:.1f} degrees it is off by up to "
        f"{100 * worst:.0f} % (at most {100 * MAX_WIDTH_ERROR:.0f} %): reproject the maps "
        "to an equal-area grid, e.g. EPSG:6931 in the north"
    )
