"""Uncertainty of zone totals by Monte Carlo, with spatially correlated errors.

A map gives, for every cell, a predicted SOC density ``m`` and its standard deviation ``s``.
The error of a zone *total* depends on how the cell errors co-vary: added as if independent,
they nearly cancel over a zone of a million cells; in reality they are correlated over the
range of the residual variogram. Each Monte Carlo realization ``r`` is a density field

* ``normal``:    ``d_r = max(0, m + s * Z_r)``
* ``lognormal``: ``d_r = m * exp(sigma * Z_r - sigma² / 2)``, ``sigma² = ln(1 + (s / m)²)``
  (same mean and standard deviation as ``m``, ``s``; always positive)

where ``Z_r`` is a stationary Gaussian field with unit variance and the *correlation* of the
fitted residual variogram (:class:`mapping.randomfield.GaussianField`, whose value at a cell
depends only on the seed, the realization and the cell). :func:`realization_block` turns a
window of ``Z`` into densities; :func:`zone_total_draws` runs it on every chunk of the grid
(one ``dask.array.blockwise`` layer over chunks x batches of realizations) and integrates
each realization per zone with :func:`mapping.zonal.zone_sums_block`, exactly, so the
totals do not depend on the chunking or the workers. The spread of the totals over
realizations is their uncertainty.

A variogram cannot show an error common to the whole map, such as the uncertainty of the
residuals' mean level (:func:`mapping.residual_errors.residual_mean_sd`); ``common_sd`` adds
one standard normal per realization, shared by all cells, and takes its share out of each
cell's own variance.

Cumulative intervals (same top, deeper bottom: ``0-30, 0-100, 0-200, 0-300``) are drawn
down the column as increments: ``d(0-100) = d(0-30) + i``, where the increment ``i >= 0``
has the mean ``max(m(0-100) - m(0-30), 0)`` and the standard deviation ``max(s(0-100),
s'(0-30)) - s'(0-30)`` (``s'`` the running maximum of the standard deviations up the
column) and is drawn with the deeper interval's own field (its kernel). Every
realization is then ordered by depth in every cell, each cell keeps its map's mean
wherever the maps are ordered, and its standard deviation wherever they grow with depth
(exactly for ``normal`` draws on one kernel where the clipping at zero does not bite; to
the coupling of the fields otherwise: comonotone lognormal increments add a little less).
The running maximum of independently drawn intervals, used before, lifted a deeper
interval whose spread is wider than the shallower one's: its totals came out above its
own map's (``cumulative="max"`` keeps it for comparison).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mapping.cluster import compute_with_progress
from mapping.draw_summary import (
    _check_ranges,
    _check_unit,
    attach_ranges,
    mean_shifts,
    summarise_draws,
)
from mapping.exceptions import ConfigError, GridMismatchError, InputError
from mapping.grid import Grid
from mapping.models.variogram import Variogram
from mapping.randomfield import GaussianField, lattice_spacing
from mapping.residual_errors import interval_common_sd, interval_variograms
from mapping.units import format_interval, interval_key
from mapping.zonal import (
    ALL_ZONES,
    ExactZoneSums,
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
    "attach_ranges",
    "draw_chunks",
    "independent_pixel_range",
    "mean_shifts",
    "realization_block",
    "summarise_draws",
    "zone_total_draws",
]

DISTRIBUTIONS = ("normal", "lognormal")


# =============================================================================== densities
class _Density:
    """One interval's density realizations from mean and std, per-cell terms made once.

    ``m``, ``s``: the interval's mean and standard deviation (any shape); ``common_sd``
    the standard deviation of the error every cell shares (kg C m⁻² for ``normal``, log
    units for ``lognormal``), capped at each cell's own; the cell's local part keeps the
    rest of its variance, so the marginal distribution of every cell is unchanged.
    ``extra_sd`` (per cell, same units) is a second error every cell shares, with its own
    standard normal (the trend's extrapolation error, :func:`zone_total_draws`), capped at
    what ``common_sd`` leaves; ``extra_share`` gives it instead as a share of each cell's
    own variance (an increment down the column takes its deeper interval's share).
    Calling it with ``z`` (``(n, *m.shape)``) and the ``(n,)`` shared standard normals
    ``g`` (and ``h`` for the second) gives the realizations; realizations of one chunk
    reuse the terms.
    """

    def __init__(
        self,
        m: np.ndarray,
        s: np.ndarray,
        distribution: str,
        common_sd: float | tuple[float, float] = 0.0,
        extra_sd: np.ndarray | None = None,
        extra_share: np.ndarray | None = None,
    ):
        m = np.asarray(m, dtype="float64")  # maps may be float32 (COGs)
        s = np.asarray(s, dtype="float64")
        # (sd, fraction): a constant sd and a fraction of each cell's own variance
        level, frac = common_sd if isinstance(common_sd, tuple) else (common_sd, 0.0)
        self.m, self.distribution = m, distribution
        # the level may be one value or one per cell (uncertainty.level: local)
        self.active = bool(np.any(np.asarray(level) > 0)) or frac > 0
        self.extra = extra_sd is not None or extra_share is not None
        self.bad = ~(np.isfinite(m) & np.isfinite(s))
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            var = s * s if distribution == "normal" else np.log1p((s / m) ** 2)
            self.unshared = s if distribution == "normal" else np.sqrt(var)
            if distribution != "normal":
                self.half = 0.5 * var
                self.holds_nothing = ~(m > 0)  # a non-positive mean holds nothing
            room = var
            if self.active:
                if frac > 0:
                    self.c = np.sqrt(np.minimum(level * level + frac * var, var))
                else:
                    self.c = np.minimum(level, self.unshared)
                room = np.maximum(var - self.c * self.c, 0.0)
            if self.extra:
                x2 = (
                    np.asarray(extra_sd, dtype="float64") ** 2
                    if extra_sd is not None
                    else np.asarray(extra_share, dtype="float64") * var
                )
                x2 = np.minimum(np.where(np.isfinite(x2), np.maximum(x2, 0.0), 0.0), room)
                self.x = np.sqrt(x2)
                # the share of the cell's variance it holds, for the increment below it
                self.x_share = np.where(var > 0, x2 / var, 0.0)
                room = room - x2
            if self.active or self.extra:
                self.local = np.sqrt(np.maximum(room, 0.0))

    def __call__(
        self, z: np.ndarray, g: np.ndarray | None = None, h: np.ndarray | None = None
    ) -> np.ndarray:
        shared = self.active and g is not None
        extra = self.extra and h is not None
        lead = [1] * self.m.ndim
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            if not (shared or extra):
                d = self.unshared * z
            else:
                sd = self.local
                if (self.active and not shared) or (self.extra and not extra):
                    # a shared error given no normals stays in the cell's own part
                    v = self.local**2
                    if self.active and not shared:
                        v = v + self.c**2
                    if self.extra and not extra:
                        v = v + self.x**2
                    sd = np.sqrt(v)
                d = sd * z
            # the shared errors, one value per realization (leading axis)
            if shared:
                d += self.c * np.asarray(g, dtype="float64").reshape(-1, *lead)
            if extra:
                d += self.x * np.asarray(h, dtype="float64").reshape(-1, *lead)
            if self.distribution == "normal":
                d += self.m
                np.maximum(d, 0.0, out=d)
            else:
                d -= self.half
                np.exp(d, out=d)
                d *= self.m
                d[:, self.holds_nothing] = 0.0
        d[:, self.bad] = np.nan
        return d


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
    ``common_sd`` its standard deviation, see :class:`_Density`.
    """
    return _Density(m, s, distribution, common_sd)(z, g)


def _holds_shared(common: float | tuple[float, float]) -> bool:
    """Whether an interval's ``common`` term (an sd, or ``(sd, fraction)``) is not zero."""
    values = common if isinstance(common, tuple) else (common,)
    return any(bool(np.any(np.asarray(v) > 0)) for v in values)  # a level may be per cell


def _cumulative(cur: np.ndarray, prev: np.ndarray | None) -> np.ndarray:
    """``max(cur, prev)`` cell by cell; nodata in ``cur`` stays nodata, in ``prev`` is ignored."""
    if prev is None:
        return cur
    return np.where(np.isnan(cur), cur, np.fmax(cur, prev))


@dataclass
class _Level:
    """One interval's draws: its own :class:`_Density`, and for an interval below another
    of the same top the :class:`_Density` of its increment (``inc``) and where the
    shallower interval has no data (``alone``: drawn from its own density there)."""

    own: _Density
    inc: _Density | None = None
    alone: np.ndarray | None = None


def _levels(
    means: Sequence[np.ndarray],
    stds: Sequence[np.ndarray],
    intervals: Sequence[tuple[float, float]],
    distribution: str,
    common: Sequence[float | tuple[float, float]],
    cumulative: bool | str,
    extra: Sequence[np.ndarray | None] | None = None,
) -> list[_Level]:
    """Each interval's :class:`_Level` (see the module docstring: draws as increments);
    ``extra`` the per-cell sd of the second shared error per interval (or ``None``)."""
    extra = [None] * len(intervals) if extra is None else list(extra)
    levels: list[_Level] = []
    above: dict[float, tuple[np.ndarray, np.ndarray]] = {}  # top -> (mean, running max of sd)
    for k, (top, _bottom) in enumerate(intervals):
        m = np.asarray(means[k], dtype="float64")
        sd = np.asarray(stds[k], dtype="float64")
        level = _Level(_Density(m, sd, distribution, common[k], extra_sd=extra[k]))
        if cumulative is True and top in above:
            pm, ps = above[top]
            with np.errstate(invalid="ignore"):
                gain = np.maximum(m - pm, 0.0)  # NaN where either has no data
                grown = np.fmax(sd, ps)  # ps is NaN where the shallower has no data
                share = level.own.x_share if level.own.extra else None
                level.inc = _Density(gain, grown - ps, distribution, common[k], extra_share=share)
                level.alone = np.isnan(pm) & np.isfinite(m)
            above[top] = (np.where(np.isnan(pm), m, pm + gain), grown)
        else:
            above[top] = (m, sd)
        levels.append(level)
    return levels


def realization_block(
    means: Sequence[np.ndarray],
    stds: Sequence[np.ndarray],
    z: np.ndarray,
    intervals: Sequence[tuple[float, float]],
    *,
    kernel_of: Sequence[int] | None = None,
    distribution: str = "normal",
    cumulative: bool | str = True,
    common_sd: Sequence[float] | None = None,
    shared: np.ndarray | None = None,
    extra_sd: Sequence[np.ndarray | None] | None = None,
    extra: np.ndarray | None = None,
) -> np.ndarray:
    """Density realizations of one block for every interval (pure NumPy).

    Parameters
    ----------
    means, stds
        Per interval, ``(ny, nx)`` predicted mean and standard deviation (kg C m⁻²; NaN =
        nodata), in the order of ``intervals``.
    z
        ``(n_kernels, n, ny, nx)`` unit-variance fields (:meth:`mapping.randomfield.GaussianField.window`).
    intervals
        ``(top_cm, bottom_cm)`` per interval; intervals sharing a top must come in order
        of increasing bottom.
    kernel_of
        Index into ``z``'s first axis for each interval; default all 0.
    distribution
        ``"normal"`` (clipped at zero) or ``"lognormal"``.
    cumulative
        ``True``: draw the intervals that share a top as increments down the column, so
        every realization is monotone with depth and keeps each map's mean (module
        docstring); ``"max"``: draw each interval alone and take the running maximum
        (lifts a deeper interval with a wider spread); ``False``: each alone, unordered.
    common_sd, shared
        Per interval, the standard deviation of an error shared by all cells (see
        :func:`zone_total_draws`), and the ``(n,)`` standard normal values of that error
        in each realization.
    extra_sd, extra
        Per interval, ``(ny, nx)`` standard deviations of a second error shared by all
        cells (``extrapolation_sd`` of :func:`zone_total_draws`; ``None``: none), and its
        ``(n,)`` standard normal values.

    Returns
    -------
    numpy.ndarray
        ``(n_intervals, n, ny, nx)`` float64, kg C m⁻².
    """
    if cumulative not in (True, False, "max"):
        raise ValueError(f"cumulative must be True, False or 'max', not {cumulative!r}")
    common = [0.0] * len(intervals) if common_sd is None else list(common_sd)
    levels = _levels(means, stds, intervals, distribution, common, cumulative, extra_sd)
    return _realize(levels, z, intervals, kernel_of, cumulative, shared, extra)


def _realize(
    levels: Sequence[_Level],
    z: np.ndarray,
    intervals: Sequence[tuple[float, float]],
    kernel_of: Sequence[int] | None,
    cumulative: bool | str,
    shared: np.ndarray | None,
    extra: np.ndarray | None = None,
) -> np.ndarray:
    """:func:`realization_block` with each interval's :class:`_Level` made already."""
    kernel_of = [0] * len(intervals) if kernel_of is None else list(kernel_of)
    out = np.empty((len(intervals), z.shape[1], *z.shape[2:]))
    prev: dict[float, np.ndarray] = {}
    for k, (top, _bottom) in enumerate(intervals):
        level, zk = levels[k], z[kernel_of[k]]
        if level.inc is not None and top in prev:
            d = prev[top] + level.inc(zk, shared, extra)  # NaN where either has no data
            if level.alone is not None and level.alone.any():
                d[:, level.alone] = level.own(zk, shared, extra)[:, level.alone]
        else:
            d = level.own(zk, shared, extra)
            if cumulative == "max":
                d = _cumulative(d, prev.get(top))
        prev[top] = d
        out[k] = d
    return out


def _zone_block(zone: Any, rows: slice, cols: slice) -> tuple[np.ndarray, Any]:
    """``(zone index, partial cells)`` of a chunk, from a zone-index block or a coverage."""
    if isinstance(zone, ZoneCoverage):
        return zone.block(rows, cols)
    return np.asarray(zone), None


def _zone_cells(index: np.ndarray, partial: Any) -> tuple[np.ndarray, np.ndarray, Any]:
    """The cells of a chunk that lie in some zone: ``(mask, flat indices, partial)``, the
    partial cells renumbered to their place among the kept cells."""
    mask = np.asarray(index) >= 0
    pieces = partial is not None and len(partial[0]) > 0
    if pieces:
        mask.ravel()[partial[0]] = True
    flat = np.flatnonzero(mask)
    if pieces:
        place = np.full(mask.size, -1, dtype="int64")
        place[flat] = np.arange(len(flat))
        partial = (place[partial[0]], partial[1], partial[2])
    return mask, flat, partial


def _draw_block(
    where: tuple[slice, slice],
    area: np.ndarray,
    zone: Any,
    field: GaussianField,
    spec: tuple[Any, ...],
    realizations: np.ndarray,
    *maps: np.ndarray,
) -> np.ndarray:
    """Exact per-zone sums of the realizations of one chunk: ``(1, 1, n_int, n, n_zones, 3)``.

    ``maps`` are the chunk's means then stds (then the extrapolation sds when the spec has
    them), one per interval, then the distinct level weights of the intervals with a local
    level (:func:`_level_weight`); ``where`` its slices of the grid. The densities are
    :func:`realization_block`'s, ``sub`` realizations at a time, made only for the cells
    that lie in a zone (the others add nothing to any total): a chunk of ocean or of land
    outside the zones costs no field and no density.
    """
    intervals, kernel_of, distribution, common, n_zones, sub, has_extra, local = spec
    rows, cols = where
    index, partial = _zone_block(zone, rows, cols)
    reals = [int(r) for r in realizations]
    # exact partial sums (Python ints), added across chunks and rounded once: the totals
    # of every realization are the same for any chunking and worker count
    out = np.empty((1, 1, len(intervals), len(reals), n_zones, 3), dtype=object)
    mask, flat, partial = _zone_cells(index, partial)
    if not len(flat):
        out[:] = 0
        return out

    def kept(a: np.ndarray) -> np.ndarray:  # the zone cells as a (1, n) block
        return np.asarray(a).ravel()[flat].reshape(1, -1)

    means = [kept(m) for m in maps[: len(intervals)]]
    sums = ExactZoneSums(kept(area), kept(index), n_zones, partial)  # zone areas summed once
    if not any(bool(np.isfinite(m).any()) for m in means):  # nothing to simulate: areas only
        out[:] = sums(np.full((1, len(flat)), np.nan))[0]
        return out
    n_int = len(intervals)
    stds = [kept(maps[n_int + k]) for k in range(n_int)]
    extra = [kept(maps[2 * n_int + k]) for k in range(n_int)] if has_extra else None
    if local is not None:  # per interval None or (the level's sd, its weight map)
        weights = [kept(a) for a in maps[(3 if has_extra else 2) * n_int :]]
        common = _local_common(common, local, weights)
    levels = _levels(means, stds, intervals, distribution, common, True, extra)
    per_interval = [copy.copy(sums) for _ in intervals]  # each keeps its own last nodata
    fields = field.masked_window(rows, cols, mask, reals)  # one realization at a time
    for b in range(0, len(reals), sub):
        part = reals[b : b + sub]
        z = np.stack([next(fields) for _ in part], axis=1)  # (n_kernels, n, kept)
        dens = _realize(
            levels,
            z.reshape(z.shape[0], z.shape[1], 1, z.shape[2]),
            intervals,
            kernel_of,
            True,
            field.shared(part) if any(_holds_shared(c) for c in common) else None,
            field.shared(part, stream=1) if has_extra else None,
        )
        for k in range(len(intervals)):
            out[0, 0, k, b : b + len(part)] = per_interval[k](dens[k])
    return out


def _local_common(
    common: Sequence[Any],
    levels: Sequence[tuple[float, int] | None],
    weights: Sequence[np.ndarray],
) -> list[Any]:
    """Each interval's shared sd at the chunk's zone cells (``(1, n)``) with its residual
    level carried as the cells carry it (:class:`mapping.residual_errors.LocalLevel`): the
    level's variance ``sd²`` becomes ``(sd a)²``, whatever else the term holds (the regional
    CV error) stays as it is. ``levels`` holds, per interval, None (a constant level) or
    ``(sd, i)``: the level's sd and its weights ``a`` as ``weights[i]``."""
    out: list[Any] = []
    for term, level in zip(common, levels, strict=True):
        if level is None:
            out.append(term)
            continue
        level_sd, i = level
        a = weights[i]
        sd, frac = term if isinstance(term, tuple) else (term, None)
        sd = np.sqrt(np.maximum(sd * sd - level_sd**2 * (1.0 - a * a), 0.0))
        out.append(sd if frac is None else (sd, frac))
    return out


def _level_weight(
    grid: Grid, level: Any, zone: Any, rows: tuple[int, int], cols: tuple[int, int]
) -> np.ndarray:
    """``a = 1 - k'K⁻¹1`` (``LocalLevel.weight``) of the cells ``rows[0]:rows[1]``,
    ``cols[0]:cols[1]`` of ``grid`` that lie in a zone (``zone``: the chunk's zone-index
    block or the coverage, as :func:`_draw_block` takes it), NaN at the others: float64."""
    where = (slice(*rows), slice(*cols))
    mask, flat, _ = _zone_cells(*_zone_block(zone, *where))
    out = np.full(mask.shape, np.nan)
    r, c = np.divmod(flat, cols[1] - cols[0])
    out.ravel()[flat] = level.weight(*grid.working_xy(r + rows[0], c + cols[0]))
    return out


def _level_weight_map(
    grid: Grid, level: Any, rows: Sequence[int], cols: Sequence[int], source: Any
) -> dask.array.Array:
    """:func:`_level_weight` as a Dask array chunked ``(rows, cols)``, one task per chunk;
    ``source`` the zones (:attr:`ZoneLayout.source`: a zone-index array or a coverage).

    Not a ``map_blocks`` (Blockwise) layer: the Monte Carlo's blockwise layer would fuse
    it into every (chunk, realization batch) task and compute each chunk's weights once
    per batch (10 times over on the sample world)."""
    import dask
    import dask.array as da
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    g = dask.delayed(grid, pure=True, traverse=False)
    lev = dask.delayed(level, pure=True, traverse=False)
    if isinstance(source, ZoneCoverage):  # one graph key holding the coverage
        cover = dask.delayed(source, pure=True, traverse=False)
        zone_key, deps = (lambda i, j: cover.key), [g, lev, cover]
    else:  # the zone-index chunks, as the Monte Carlo reads them
        zarr = source.rechunk((tuple(rows), tuple(cols)))
        zone_key, deps = (lambda i, j: (zarr.name, i, j)), [g, lev, zarr]
    name = "level-weight-" + tokenize(g.key, lev.key, deps[-1], tuple(rows), tuple(cols))
    r, c = np.cumsum([0, *rows]).tolist(), np.cumsum([0, *cols]).tolist()
    layer: dict[Any, Any] = {
        (name, i, j): (
            _level_weight, g.key, lev.key, zone_key(i, j), (r[i], r[i + 1]), (c[j], c[j + 1])
        )
        for i in range(len(rows))
        for j in range(len(cols))
    }  # fmt: skip
    graph = HighLevelGraph.from_collections(name, layer, dependencies=deps)
    return da.Array(graph, name, chunks=(tuple(rows), tuple(cols)), dtype="float64",
                    meta=np.empty((0, 0)))  # fmt: skip


def _zone_sums_layer(
    block: Any,
    prep: _Prepared,
    grid: Grid,
    *args: Any,
    realizations: Any = None,
    maps: Sequence[Any] = (),
) -> dask.array.Array:
    """One ``dask.array.blockwise`` layer of ``block`` over the chunks of the maps, summed.

    ``block(where, area, zone, *args, [realizations,] *means, *stds, *extras, *maps)``
    returns the exact per-zone sums of one chunk (and one batch of ``realizations``, a
    chunked Dask array of realization numbers, when given) with two leading axes of
    length 1; they are added exactly over the chunks (any order: the same sum) and rounded
    once. Returns float64
    ``(n_int, [n,] n_zones, 3)``.
    """
    import dask
    import dask.array as da
    from dask.layers import ArraySliceDep

    rows, cols = prep.rows, prep.cols
    area = grid.cell_area(chunks=(rows[0], cols[0])).rechunk((rows, cols))
    source = prep.layout.source
    if isinstance(source, ZoneCoverage):  # one graph key holding the coverage
        zone: tuple[Any, Any] = (dask.delayed(source, pure=True, traverse=False), None)
    else:
        zone = (source.rechunk((rows, cols)), "ij")
    lead = () if realizations is None else (realizations, "r")
    out_ind = "ijk" + ("r" if lead else "") + "zs"
    sums = da.blockwise(
        block,
        out_ind,
        ArraySliceDep((rows, cols)),
        "ij",
        area,
        "ij",
        *zone,
        *(a for arg in args for a in (arg, None)),
        *lead,
        *(a for m in (*prep.means, *prep.stds, *prep.extras, *maps) for a in (m, "ij")),
        new_axes={"k": len(prep.intervals), "z": prep.layout.n_zones, "s": 3},
        adjust_chunks={"i": 1, "j": 1},
        align_arrays=False,  # all chunked alike by _prepare
        dtype=object,
        meta=np.empty((0,) * len(out_ind), dtype=object),
    )
    occupied = prep.layout.occupied(rows, cols)
    if occupied.any() and not occupied.all():
        # only the chunks that hold a zone cell: the others add nothing, and culling the
        # graph to these blocks means their maps are never read
        sums = da.concatenate([sums.blocks[i, j] for i, j in np.argwhere(occupied)], axis=0)
    total = sums.sum(axis=(0, 1), dtype=object)  # exact: any order, same sum
    return total.map_blocks(exact_to_float, dtype="float64")


# =============================================================================== inputs


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
            iv = interval_key(key, what, InputError)
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


def _check_distribution(distribution: str) -> str:
    if distribution not in DISTRIBUTIONS:
        raise ConfigError(f"distribution {distribution!r} is not one of {', '.join(DISTRIBUTIONS)}")
    return distribution


@dataclass
class _Prepared:
    labels: list[str]
    intervals: list[tuple[float, float]]
    means: list[Any]  # dask arrays chunked like the plan
    stds: list[Any]
    layout: ZoneLayout
    rows: tuple[int, ...]
    cols: tuple[int, ...]
    extras: list[Any] = dataclasses.field(default_factory=list)  # extrapolation sds, or none


def _prepare(
    means: Mapping[str, Any],
    stds: Mapping[str, Any],
    zones: Any,
    grid: Grid,
    names: Mapping[int, str] | None,
    chunks: int | tuple[int, int],
    extras: Mapping[str, Any] | None = None,
) -> _Prepared:
    import dask.array as da

    items = _intervals(means, stds)
    rows, cols = grid.chunk_sizes(chunks)
    mlist: list[Any] = []
    slist: list[Any] = []
    xlist: list[Any] = []
    xs = _by_interval(extras, [it[0] for it in items], "extrapolation_sd")
    for label, _top, _bottom, m, s in items:
        todo = [(m, "mean", mlist), (s, "std", slist)]
        if xs is not None:
            todo.append((xs[label], "extrapolation sd", xlist))
        for arr, what, dest in todo:
            if arr is None:  # an interval without an extrapolation term: none shared
                dest.append(da.zeros(grid.shape, dtype="float32", chunks=(rows, cols)))
                continue
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
        extras=xlist,
    )


def _by_interval(values: Mapping[str, Any] | None, labels: Sequence[str], what: str) -> dict | None:
    """``values`` (argument ``what``: ``extrapolation_sd``, ``local_level``) keyed by the
    intervals' labels (``None`` where one has none)."""
    if values is None:
        return None
    if not isinstance(values, Mapping):
        raise InputError(f"{what} must be a mapping of interval ('0-30') to its value")
    out: dict[str, Any] = dict.fromkeys(labels)
    for key, value in values.items():
        label = format_interval(*interval_key(key, what, InputError))
        if label not in out:
            raise InputError(f"{what} {key!r}: no mean map for interval {label}")
        out[label] = value
    return out


def _auto_chunks(field: GaussianField) -> tuple[int, int]:
    # whole tiles of the field (a chunk that cuts a tile computes all of it), at least
    # ~1024 cells a side so the chunks' own overheads stay small
    sides = [t * field.coarsen for t in field.tile]
    return (sides[0] * math.ceil(1024 / sides[0]), sides[1] * math.ceil(1024 / sides[1]))


def draw_chunks(
    grid: Grid,
    variogram: Variogram | Mapping[str, Variogram],
    labels: Sequence[str],
    coarsen: int | None = None,
) -> tuple[int, int]:
    """The chunk shape :func:`zone_total_draws` uses with ``chunks=None`` (whole tiles of
    the Gaussian field). Maps opened with it are read once per chunk, no rechunking."""
    field, _, _ = _field(grid, variogram, labels, 0, coarsen)
    return _auto_chunks(field)


def _field(
    grid: Grid,
    variogram: Variogram | Mapping[str, Variogram],
    labels: Sequence[str],
    seed: int,
    coarsen: int | None,
) -> tuple[GaussianField, list[int], list[Variogram]]:
    """The Gaussian field of the intervals' distinct variograms, which kernel each interval
    uses, and the interval variograms."""
    vlist = interval_variograms(variogram, list(labels))
    distinct = list(dict.fromkeys(vlist))
    kernel_of = [distinct.index(v) for v in vlist]
    field = GaussianField.from_variograms(
        distinct, lattice_spacing(grid), seed, coarsen=coarsen, shape=grid.shape
    )
    return field, kernel_of, vlist


# =============================================================================== draws
MANY_CHUNKS = 16
"""With at least this many map chunks, one Monte Carlo task per chunk (all realizations)."""


def _draw_sums(
    prep: _Prepared,
    grid: Grid,
    field: GaussianField,
    kernel_of: Sequence[int],
    distribution: str,
    common: Sequence[Any],
    n_realizations: int,
    batch: int,
    local_level: Sequence[Any] | None = None,
) -> dask.array.Array:
    import dask
    import dask.array as da

    rows, cols = prep.rows, prep.cols
    # realizations per pass: about 8 M values at a time, on a tile and on the cells
    (ty, tx), (ry, rx) = field.tile, field.halo
    window = (ty + 2 * ry + 1) * (tx + 2 * rx + 1)
    cells = len(prep.intervals) * rows[0] * cols[0]
    sub = max(1, min(batch, (8 << 20) // max(window, cells, 1)))
    n_zones = prep.layout.n_zones
    # the distinct LocalLevels, each one weight map and one solve of K⁻¹1 (equal levels,
    # as a layered model's intervals have, are read from the first of them)
    distinct: list[Any] = []
    levels: list[tuple[float, int] | None] = []
    for lev in local_level or ():
        if lev is None:
            levels.append(None)
            continue
        i = next((i for i, d in enumerate(distinct) if d.same_as(lev)), len(distinct))
        if i == len(distinct):
            distinct.append(lev)
        levels.append((distinct[i].sd, i))
    spec = (
        tuple(prep.intervals),
        tuple(kernel_of),
        distribution,
        tuple(common),
        n_zones,
        sub,
        bool(prep.extras),
        None if local_level is None else tuple(levels),
    )
    field_key = dask.delayed(field, pure=True, traverse=False)  # one key, not one per task
    if len(rows) * len(cols) >= MANY_CHUNKS:
        # Enough chunks to share out: all realizations of a chunk in one task, so each
        # chunk of the maps is read once and let go, instead of being held until its last
        # batch runs (a hemisphere's maps held whole: 12 GB). Same totals (exact sums).
        batch = n_realizations
    reals = da.arange(n_realizations, chunks=batch)
    # the level weights as maps: one task per chunk, shared by all its realization batches
    # and by the intervals with the same level (a layered model's: one kriged level)
    weights = [_level_weight_map(grid, lev, rows, cols, prep.layout.source) for lev in distinct]
    return _zone_sums_layer(
        _draw_block, prep, grid, field_key, spec, realizations=reals, maps=weights
    )


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
    shared_fraction: float | Mapping[str, float] = 0.0,
    extrapolation_sd: Mapping[str, xr.DataArray] | None = None,
    local_level: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Monte Carlo draws of the storage of every zone and interval, with correlated errors.

    Realization ``r`` of the density of a cell is ``m + s * Z_r`` (``normal``, clipped at
    zero) or its lognormal analogue with the same mean and standard deviation, where
    ``Z_r`` is a unit-variance Gaussian field with the correlation of ``variogram``
    (:class:`mapping.randomfield.GaussianField`). Realizations are made by
    :func:`realization_block` and integrated per zone chunk by chunk, in one
    ``dask.array.blockwise`` layer (one task per chunk and ``batch`` of realizations); a
    task holds one chunk and one tile of the field with its halo.

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
        radius (whole tiles of the field). The draws do not depend on it, to the last bit.
    distribution
        ``"normal"`` or ``"lognormal"`` (use it for models fitted on log stocks).
    names
        Zone names by code, when ``zones`` is not a prepared layout.
    unit
        ``"Pg"`` or ``"Tg"``.
    coarsen
        See :meth:`mapping.randomfield.GaussianField.from_variograms`.
    common_sd
        Standard deviation of an error shared by every cell of the map (one value, or one
        per interval): the uncertainty of the model's regional level, which no variogram
        shows (:func:`mapping.residual_errors.residual_mean_sd`). In kg C m⁻² with ``normal``, in log units with
        ``lognormal``. Each cell's own standard deviation is kept: the shared part is
        taken out of it (capped at it), the rest stays local.
    shared_fraction
        A fraction (0–1, one value or one per interval) of each cell's own variance (of its
        log for ``lognormal``) that is shared by every cell as well, on top of ``common_sd``:
        a regional error that grows where the cells' errors do (``uncertainty.shared:
        proportional``). The cell's total variance is kept.
    extrapolation_sd
        Per interval (keys as ``means``; an interval left out has none), a map of the
        standard deviation of a second error shared by every cell, with its own standard
        normal per realization, independent of ``common_sd``'s: the trend's error where the
        cells are dissimilar to the training data, above what the error model gives cells
        inside its domain (``uncertainty.shared: extrapolation``,
        :func:`mapping.run.shared_error.extrapolation_sd`). Same units as ``common_sd``;
        capped at what ``common_sd`` leaves of each cell's own variance, which is kept.
    local_level
        Per interval (keys as ``means``; an interval left out keeps ``common_sd`` as it
        is), a :class:`mapping.residual_errors.LocalLevel`: the residual level's error
        ``sd`` inside ``common_sd`` is carried by each cell with the weight ``a`` the
        kriging leaves the mean there (``uncertainty.level: local``): the shared sd of a
        cell becomes ``sqrt(common_sd² - sd² (1 - a²))``, and the rest of its variance stays
        its own.
    batch
        Realizations per task; all of them in one task per chunk when the maps have
        :data:`MANY_CHUNKS` chunks or more (each map chunk is then read once and let go).
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
        latitudes (:data:`mapping.randomfield.MAX_WIDTH_ERROR`), bad parameters.
    """
    import dask

    scale = _check_unit(unit)
    distribution = _check_distribution(distribution)
    if int(n_realizations) != n_realizations or n_realizations < 1:
        raise ConfigError(f"n_realizations must be a positive integer, got {n_realizations!r}")
    if int(batch) != batch or batch < 1:
        raise ConfigError(f"batch must be a positive integer, got {batch!r}")
    labels = [it[0] for it in _intervals(means, stds)]
    field, kernel_of, vlist = _field(grid, variogram, labels, seed, coarsen)
    prep = _prepare(
        means, stds, zones, grid, names, chunks or _auto_chunks(field), extrapolation_sd
    )
    sds = interval_common_sd(common_sd, labels)
    common: list[Any] = list(sds)
    fractions = interval_common_sd(shared_fraction, labels)
    if any(f > 1 for f in fractions):
        raise ConfigError(f"shared_fraction must be at most 1, got {max(fractions)!r}")
    if any(f > 0 for f in fractions):
        common = [(c, f) for c, f in zip(common, fractions, strict=True)]
    keyed = _by_interval(local_level, labels, "local_level")
    local = None
    if keyed and any(v is not None for v in keyed.values()):
        local = [keyed[k] for k in labels]
    sums = _draw_sums(
        prep,
        grid,
        field,
        kernel_of,
        distribution,
        common,
        int(n_realizations),
        int(batch),
        local,
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
            "common_sd": dict(zip(labels, sds, strict=True)),
            "shared_fraction": dict(zip(labels, fractions, strict=True)),
            "extrapolation_shared": bool(prep.extras),
            "local_level": bool(local),
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


# =============================================================================== independent pixels
def _pixel_block(
    where: tuple[slice, slice], area: np.ndarray, zone: Any, n_zones: int, *maps: np.ndarray
) -> np.ndarray:
    """Per interval and zone, exactly: ``sum w A m, sum w A s, sum (w A s)^2`` ->
    ``(1, 1, n_int, n_zones, 3)``; ``maps`` are the chunk's means then stds."""
    index, partial = _zone_block(zone, *where)
    n_int = len(maps) // 2
    sq = None if partial is None else (partial[0], partial[1], partial[2] ** 2)
    out = []
    for m, s in zip(maps[:n_int], maps[n_int:], strict=True):
        m = np.asarray(m, dtype="float64")
        s = np.asarray(s, dtype="float64")
        bad = ~(np.isfinite(m) & np.isfinite(s))
        m = np.where(bad, np.nan, m)
        s = np.where(bad, np.nan, s)
        lin = zone_sums_block(np.stack([m, s]), area, index, n_zones, partial, exact=True)
        var = zone_sums_block(area * s * s, area, index, n_zones, sq, exact=True)
        out.append(np.stack([lin[0, :, 2], lin[1, :, 2], var[:, 2]], axis=-1))
    return np.stack(out)[None, None]


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
    from scipy.stats import norm

    scale = _check_unit(unit)
    lo, hi = _check_ranges(ranges)
    prep = _prepare(means, stds, zones, grid, names, chunks)
    (sums,) = dask.compute(_zone_sums_layer(_pixel_block, prep, grid, prep.layout.n_zones))
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
