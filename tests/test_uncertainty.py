"""Monte Carlo zone totals with spatially correlated errors (mapping.uncertainty).

Checked against the analytic variance of a total, against truths drawn by an independent
simulator (circulant embedding, mapping.synthetic), and against the committed sample data's
known truth; plus invariance to chunking, workers and seeds, and consistent cumulative
intervals in every realization.
"""

from __future__ import annotations

import json
from pathlib import Path

import dask
import numpy as np
import pandas as pd
import pytest
import rasterio
from scipy.stats import norm

from mapping import synthetic
from mapping.exceptions import ConfigError, GridMismatchError, InputError, MappingError, ModelError
from mapping.grid import Grid
from mapping.io import raster_grid
from mapping.models.variogram import Variogram
from mapping.randomfield import GaussianField, lattice_kernel
from mapping.residual_errors import (
    LocalLevel,
    cv_block_error_sd,
    gls_mean_sd,
    residual_mean_sd,
    residual_variogram,
)
from mapping.uncertainty import (
    attach_ranges,
    independent_pixel_range,
    mean_shifts,
    realization_block,
    summarise_draws,
    zone_total_draws,
)
from mapping.zonal import zone_totals
from mapping.zones import prepare_zones, zone_coverage_from_polygons

SAMPLE = Path(__file__).resolve().parents[1] / "sample_rasters"
NAMES = {1: "a", 2: "b", 3: "c"}


# ----------------------------------------------------------------------------- helpers
def small_world(ny: int = 30, nx: int = 44, res: float = 1000.0, seed: int = 0):
    """A projected grid with smooth mean and std fields, three zones and some nodata."""
    grid = Grid.from_bounds((1e6, 1e6, 1e6 + nx * res, 1e6 + ny * res), res, "EPSG:6931")
    yy, xx = np.mgrid[0:ny, 0:nx] / max(ny, nx)
    mean = 8.0 + 4.0 * np.sin(3 * xx) + 3.0 * yy
    std = 0.15 * mean + 0.5 * xx
    zones = np.ones((ny, nx), dtype="int32")
    zones[:, nx // 2 :] = 2
    zones[ny // 2 :, nx // 3 :] = 3
    zones[:2, :3] = 0  # no zone
    mean[5:7, 20:26] = np.nan  # nodata
    return grid, mean, std, zones


def zone_map(grid: Grid, zones: np.ndarray):
    """Zone codes on the grid; 0 is "no zone"."""
    return grid.wrap(zones).rio.write_nodata(0)


def lagged_correlation(v: Variogram, dy: float, dx: float, iy, ix) -> np.ndarray:
    """C(h) / C(0) straight from the variogram (gstat conventions), by lattice lag."""
    h = np.hypot(np.asarray(iy) * dy, np.asarray(ix) * dx)
    return np.where(h == 0, 1.0, v.covariance(h) / v.sill)


def pair_correlation(v: Variogram, dy: float, dx: float, rr, cc) -> np.ndarray:
    """The model correlation between every pair of the cells ``(rr, cc)``: ``(n, n)``."""
    rr, cc = np.asarray(rr), np.asarray(cc)
    return lagged_correlation(v, dy, dx, rr[:, None] - rr[None, :], cc[:, None] - cc[None, :])


def kernel_autocorrelation(w: np.ndarray, iy: int, ix: int) -> float:
    """sum_u w(u) w(u + (iy, ix)), by direct shifting (no FFT)."""
    ny, nx = w.shape
    a = w[max(0, -iy) : ny - max(0, iy), max(0, -ix) : nx - max(0, ix)]
    b = w[max(0, iy) : ny - max(0, -iy), max(0, ix) : nx - max(0, -ix)]
    return float((a * b).sum())


def read_band(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        a = src.read(1).astype("float64")
        if src.nodata is not None:
            a[a == src.nodata] = np.nan
    return a


# ----------------------------------------------------------------------------- the kernel
@pytest.mark.parametrize(
    ("variogram", "spacing"),
    [
        (Variogram("exponential", psill=1.0, range=4000.0), (1000.0, 1000.0)),
        (Variogram("exponential", psill=0.6, range=3000.0, nugget=0.4), (1000.0, 1000.0)),
        (Variogram("spherical", psill=2.0, range=9000.0, nugget=0.5), (1000.0, 1500.0)),
        (Variogram("gaussian", psill=1.0, range=5000.0), (1000.0, 1000.0)),
        (Variogram("matern", psill=1.0, range=2000.0, nu=1.5), (1000.0, 1000.0)),
    ],
)
def test_kernel_autocorrelation_is_the_variogram_correlation(variogram, spacing):
    k = lattice_kernel(variogram, spacing)
    w = k.weights
    assert w.shape[0] % 2 == 1 and w.shape[1] % 2 == 1
    np.testing.assert_allclose(w, w[::-1, ::-1], atol=1e-15)  # symmetric
    dy, dx = spacing
    for iy, ix in [(0, 0), (0, 1), (1, 0), (1, 1), (2, 3), (5, 0), (0, 7), (4, 4)]:
        want = float(lagged_correlation(variogram, dy, dx, iy, ix))
        assert kernel_autocorrelation(w, iy, ix) == pytest.approx(want, abs=5e-4), (iy, ix)
    # the variance of a total over a zone much wider than the range is (sum w)^2 = sum_h rho(h)
    ry, rx = 4 * w.shape[0], 4 * w.shape[1]
    iy, ix = np.mgrid[-ry : ry + 1, -rx : rx + 1]
    assert float(w.sum()) ** 2 == pytest.approx(
        float(lagged_correlation(variogram, dy, dx, iy, ix).sum()), rel=2e-3
    )
    assert k.max_correlation_error < 5e-4


def test_kernel_of_a_pure_nugget_is_white_noise():
    k = lattice_kernel(Variogram("exponential", psill=0.0, range=1.0, nugget=2.0), (1000.0, 1000.0))
    assert k.weights.shape == (1, 1) and k.weights[0, 0] == pytest.approx(1.0)


# ----------------------------------------------------------------------------- the field
def test_field_values_do_not_depend_on_the_window():
    v = Variogram("exponential", psill=1.0, range=3000.0, nugget=0.2)
    for coarsen in (1, 3):
        f = GaussianField.from_variograms(
            [v, v.replace(range=6000.0)], (1000.0, 1000.0), 7, coarsen=coarsen
        )
        cy, cx = (t * coarsen for t in f.tile)
        assert cy < 390 and cx < 400  # the big window spans several tiles
        big = f.window(slice(0, 390), slice(0, 400), [0, 3])
        for rows, cols in [
            (slice(0, 13), slice(0, 11)),
            (slice(129, 390), slice(17, 400)),
            (slice(40, 41), slice(5, 6)),
            (slice(cy - 7, cy + 5), slice(cx - 1, cx + 1)),  # across a tile corner
        ]:
            part = f.window(rows, cols, [3, 0])
            # the same bits: every cell comes from its tile's own FFT, whatever the window
            np.testing.assert_array_equal(part[:, ::-1], big[:, :, rows, cols])
        # realization 3 alone equals realization 3 among others
        np.testing.assert_array_equal(f.window(slice(0, 390), slice(0, 400), [3])[:, 0], big[:, 1])


def test_masked_window_is_the_window_at_the_masked_cells_and_skips_empty_tiles(monkeypatch):
    v = Variogram("exponential", psill=1.0, range=3000.0, nugget=0.2)
    for coarsen in (1, 3):
        f = GaussianField.from_variograms([v, v.replace(range=6000.0)], (1000.0, 1000.0), 7,
                                          coarsen=coarsen)  # fmt: skip
        cy, cx = (t * coarsen for t in f.tile)
        rows, cols = slice(0, 2 * cy + 5), slice(0, 2 * cx)  # 3 x 2 tiles
        full = f.window(rows, cols, [4, 1])
        mask = np.zeros(full.shape[2:], dtype=bool)
        mask[3 : cy // 2, 1 : cx + 9] = True  # two tiles of the top row
        mask[2 * cy + 2, 5] = True  # one cell of a bottom tile
        calls: list[tuple[int, int]] = []
        real = GaussianField._tile_nodes

        def counted(self, ti, tj, r, calls=calls, real=real):
            calls.append((ti, tj))
            return real(self, ti, tj, r)

        monkeypatch.setattr(GaussianField, "_tile_nodes", counted)
        got = f.window(rows, cols, [4, 1], mask=mask)
        monkeypatch.undo()
        np.testing.assert_array_equal(got, full[:, :, mask])  # same bits, row-major order
        # only the tiles holding masked cells are convolved: (0, 0), (0, 1), (2, 0)
        assert sorted(set(calls)) == [(0, 0), (0, 1), (2, 0)] and len(calls) == 6
    with pytest.raises(ValueError, match="mask shape"):
        f.window(rows, cols, [0], mask=mask[:-1])


def test_field_is_the_moving_average_of_its_noise_across_tile_seams():
    # Z(p) = sum_u k(u) W(p + u) (k symmetric), summed directly here: the tiles are only a
    # way to compute the convolution, so the field's covariance is the kernel's
    # autocorrelation, i.e. the variogram's correlation, also for pairs across a seam
    from mapping.randomfield import _STREAM_LATTICE

    v = Variogram("spherical", psill=0.8, range=9000.0, nugget=0.2)
    f = GaussianField.from_variograms([v, v.replace(range=4000.0)], (1000.0, 1500.0), 4)
    (ty, tx), (ry, rx) = f.tile, f.halo
    cells = [(ty - 1, tx - 1), (ty, tx), (ty - 1, tx), (0, 0), (2 * ty + 3, 1)]
    z = {c: f.window(slice(c[0], c[0] + 1), slice(c[1], c[1] + 1), [2])[:, 0, 0, 0] for c in cells}
    for i, j in cells:
        w_noise = f._noise(_STREAM_LATTICE, 2, i - ry, i + ry + 1, j - rx, j + rx + 1)
        for q, k in enumerate(f.kernels):
            ky, kx = k.radius
            direct = float(
                (k.weights * w_noise[ry - ky : ry + ky + 1, rx - kx : rx + kx + 1]).sum()
            )
            assert z[(i, j)][q] == pytest.approx(direct, abs=1e-12), (i, j, q)


def test_field_has_unit_variance_and_the_model_correlation():
    v = Variogram("exponential", psill=0.75, range=4000.0, nugget=0.25)
    f = GaussianField.from_variograms([v], (1000.0, 1000.0), 3, coarsen=1)
    ty, tx = f.tile  # a window on the corner of four tiles: pairs across the seams count
    z = f.window(slice(ty - 30, ty + 30), slice(tx - 30, tx + 30), range(120))[0]
    n = z.shape[0]
    # pooled over cells; realizations are independent, so the error is ~ sqrt(2 / n) / sqrt(m)
    assert z.mean() == pytest.approx(0.0, abs=0.03)
    assert (z**2).mean() == pytest.approx(1.0, abs=0.04)
    for lag in (1, 4, 10):
        r = 0.5 * ((z[:, :, :-lag] * z[:, :, lag:]).mean() + (z[:, :-lag] * z[:, lag:]).mean())
        assert r == pytest.approx(float(lagged_correlation(v, 1000, 1000, 0, lag)), abs=0.05), lag
    # independent realizations: the correlation between realization means is ~0
    cell = z[:, 30, 30]
    assert abs(np.corrcoef(cell[:-1], cell[1:])[0, 1]) < 0.3
    assert n == 120


def test_coarsened_field_keeps_unit_variance_at_every_offset():
    v = Variogram("exponential", psill=0.8, range=12000.0, nugget=0.2)
    f = GaussianField.from_variograms([v], (1000.0, 1000.0), 5, coarsen=4)
    assert f.coarsen == 4
    # exact variance by offset: lattice part (bilinear) + top-up = 1
    z = f.window(slice(0, 48), slice(0, 48), range(150))[0]
    var = (z**2).mean(axis=0)  # per cell, over realizations
    by_offset = np.array([[var[i::4, j::4].mean() for j in range(4)] for i in range(4)])
    np.testing.assert_allclose(by_offset, 1.0, atol=0.1)
    r8 = (z[:, :, :-8] * z[:, :, 8:]).mean()
    assert r8 == pytest.approx(float(lagged_correlation(v, 1000, 1000, 0, 8)), abs=0.08)


def test_automatic_coarsening_follows_the_kernel_reach(monkeypatch):
    import mapping.randomfield as rf

    monkeypatch.setattr(rf, "LATTICE_REACH", 10)  # small, to keep the kernels small
    cell = (1000.0, 1000.0)
    # kernel reach: ~8.4 ranges (exponential), ~3 for the spherical although its
    # covariance stops at one range
    short = GaussianField.from_variograms([Variogram("exponential", 1.0, 2000.0)], cell)
    exp = GaussianField.from_variograms([Variogram("exponential", 1.0, 5000.0)], cell)
    sph = GaussianField.from_variograms([Variogram("spherical", 1.0, 10_000.0)], cell)
    assert short.coarsen == 1 and max(short.halo) > 10  # reach < 2 x 10 cells: every cell
    assert exp.coarsen == 4 and 5 <= max(exp.halo) <= 20  # reach 42 cells: a 4-cell lattice
    assert sph.coarsen == 3 and 5 <= max(sph.halo) <= 20  # reach 30 cells
    # the longest kernel sets the lattice for all
    both = GaussianField.from_variograms(
        [Variogram("exponential", 1.0, 2000.0), Variogram("exponential", 1.0, 5000.0)], cell
    )
    assert both.coarsen == 4


# ----------------------------------------------------------------------------- analytic variance
@pytest.mark.parametrize("coarsen", [4, 8])
def test_coarsened_field_gives_the_analytic_variance_of_zone_totals(coarsen):
    # 1 km cells, range 12 km: a lattice of 4 or 8 km (3 or 1.5 nodes per range, coarser
    # than the automatic 15-30) still gives the totals' variance: the interpolation keeps
    # the field's integral scale, the top-up keeps each cell's variance
    ny, nx = 48, 60
    grid = Grid.from_bounds((1e6, 1e6, 1e6 + nx * 1000.0, 1e6 + ny * 1000.0), 1000.0, "EPSG:6931")
    mean = np.full((ny, nx), 10.0)
    std = np.full((ny, nx), 2.0)
    zones = np.ones((ny, nx), dtype="int32")
    zones[:, nx // 2 :] = 2
    v = Variogram("exponential", psill=0.8, range=12000.0, nugget=0.2)
    n = 1200
    draws = zone_total_draws(
        {"0-30": grid.wrap(mean)}, {"0-30": grid.wrap(std)}, zone_map(grid, zones), grid, v,
        n_realizations=n, seed=3, chunks=24, names=NAMES, unit="Tg", batch=200,
        coarsen=coarsen,
    )  # fmt: skip
    assert draws.attrs["coarsen"] == coarsen
    rr, cc = np.mgrid[0:ny, 0:nx]
    rho = pair_correlation(v, 1000.0, 1000.0, rr.ravel(), cc.ravel())
    area = grid.cell_area().ravel() / 1e9
    for code, name in [(1, "a"), (2, "b"), (None, "all zones")]:
        w = area * 2.0 * ((zones.ravel() > 0) if code is None else (zones.ravel() == code))
        var = float(w @ rho @ w)
        got = draws.loc[draws["zone"] == name, "storage_tg"].to_numpy()
        se = np.sqrt(2.0 / (n - 1))
        assert got.var(ddof=1) / var == pytest.approx(1.0, abs=4 * se), name


@pytest.mark.parametrize("common", [0.0, 1.2])
def test_monte_carlo_variance_of_zone_totals_matches_the_analytic_variance(common):
    grid, mean, std, zones = small_world(ny=9, nx=12)
    mean[5:7, 4:6] = np.nan
    v = Variogram("exponential", psill=0.7, range=3000.0, nugget=0.3)
    n = 1500
    draws = zone_total_draws(
        {"0-30": grid.wrap(mean)}, {"0-30": grid.wrap(std)}, zone_map(grid, zones), grid, v,
        n_realizations=n, seed=11, chunks=16, names=NAMES, unit="Tg", batch=500,
        common_sd=common,
    )  # fmt: skip
    # analytic: Var(sum_i a_i d_i) = sum_ij a_i a_j s_i s_j rho(h_ij), a = cell area in the zone;
    # with a shared error c_i = min(common, s_i): sum_ij a_i a_j (l_i l_j rho_ij + c_i c_j),
    # l_i = sqrt(s_i^2 - c_i^2)
    area = grid.cell_area()
    ok = np.isfinite(mean)
    rr, cc = np.nonzero(ok)
    dy, dx = grid.resolution[1], grid.resolution[0]
    rho = pair_correlation(v, dy, dx, rr, cc)
    c = np.minimum(common, std[ok])
    local = np.sqrt(std[ok] ** 2 - c**2)
    assert (std[ok] > common).mean() > 0.5  # the cap binds in some cells, not in most
    for code, name in [(1, "a"), (2, "b"), (3, "c"), (None, "all zones")]:
        sel = (zones[ok] > 0) if code is None else (zones[ok] == code)
        w = np.where(sel, area[ok] / 1e9, 0.0)  # Tg per kg m-2
        var = float((w * local) @ rho @ (w * local)) + float(w @ c) ** 2
        var_independent = float(((w * std[ok]) ** 2).sum())
        total = float((area[ok] * mean[ok] / 1e9)[sel].sum())
        got = draws.loc[draws["zone"] == name, "storage_tg"].to_numpy()
        assert len(got) == n
        se = np.sqrt(2.0 / (n - 1))
        assert got.var(ddof=1) / var == pytest.approx(1.0, abs=4 * se), name
        assert got.mean() == pytest.approx(total, abs=4 * np.sqrt(var / n)), name
        assert var_independent < 0.5 * var  # the test tells correlated from independent


def test_residual_mean_sd_by_hand():
    from mapping.models.kriging import OrdinaryKriging, RegressionKriging

    rng = np.random.default_rng(3)
    X = pd.DataFrame(
        {"x": rng.uniform(0, 1e5, 40), "y": rng.uniform(0, 1e5, 40), "c": rng.normal(size=40)}
    )
    y = 1.0 + X["c"] + rng.normal(0, 0.3, 40)
    # a pure nugget: independent residuals, the mean's standard error is sqrt(sill / n)
    white = RegressionKriging(
        kriging=OrdinaryKriging(
            variogram=Variogram("exponential", psill=0.0, range=1.0, nugget=2.0)
        )
    )
    assert residual_mean_sd(white.fit(X, y)) == pytest.approx(np.sqrt(2.0 / 40), rel=1e-12)
    # correlated residuals: 1 / sqrt(1' K^-1 1), here against a direct inverse
    v = Variogram("spherical", psill=1.5, range=3e4, nugget=0.5)
    model = RegressionKriging(kriging=OrdinaryKriging(variogram=v)).fit(X, y)
    xy = X[["x", "y"]].to_numpy()
    h = np.hypot(*(xy[:, None, :] - xy[None, :, :]).transpose(2, 0, 1))
    k_inv = np.linalg.inv(np.where(h == 0, v.sill, v.covariance(h)))
    assert residual_mean_sd(model) == pytest.approx(1 / np.sqrt(k_inv.sum()), rel=1e-9)
    assert residual_mean_sd(model) > np.sqrt(v.sill / 40)  # correlation: fewer effective points


def test_local_level_by_hand():
    """``LocalLevel``: one datum, ``a = gamma(d) / sill``; many, the level's part of the
    universal-kriging variance of a block mean (ordinary kriging with a Lagrange
    multiplier, solved here on its own) minus the simple-kriging one is ``(sd a_B)²``,
    ``a_B`` the block's mean ``a``."""
    v = Variogram("exponential", psill=1.5, range=2e4, nugget=0.0)
    one = LocalLevel(v, [[0.0, 0.0]])
    d = np.array([0.0, 5e3, 2e4, 1e6])
    assert one.sd == pytest.approx(np.sqrt(v.sill), rel=1e-12)
    np.testing.assert_allclose(one.weight(d, np.zeros(4)), v(d) / v.sill, rtol=1e-12, atol=1e-15)
    rng = np.random.default_rng(5)
    xy = rng.uniform(0, 1e5, (30, 2))
    v = Variogram("spherical", psill=1.2, range=4e4, nugget=0.3)
    lev = LocalLevel(v, xy)
    assert lev.sd == pytest.approx(residual_mean_sd_of(v, xy), rel=1e-9)
    bx, by = np.meshgrid(np.linspace(6e4, 9e4, 16), np.linspace(1e4, 4e4, 16))
    block = np.column_stack([bx.ravel(), by.ravel()])
    a = lev.weight(block[:, 0], block[:, 1])
    assert 0.0 < a.min() and a.max() < 1.0  # no clipping: the identity is exact
    dist = lambda p, q: np.hypot(*(p[:, None, :] - q[None, :, :]).transpose(2, 0, 1))  # noqa: E731
    K = np.where(dist(xy, xy) == 0, v.sill, v.covariance(dist(xy, xy)))
    kb = v.covariance(dist(xy, block)).mean(axis=1)
    cbb = v.covariance(dist(block, block)).mean()  # the block's cells are distinct points
    n = len(xy)
    A = np.block([[K, np.ones((n, 1))], [np.ones((1, n)), np.zeros((1, 1))]])
    lam = np.linalg.solve(A, np.append(kb, 1.0))
    ok_var = cbb - lam[:n] @ kb - lam[n]
    sk_var = cbb - kb @ np.linalg.solve(K, kb)
    assert ok_var - sk_var == pytest.approx((lev.sd * a.mean()) ** 2, rel=1e-9)
    far = lev.weight(np.array([1e7]), np.array([1e7]))
    assert far[0] == pytest.approx(1.0, abs=1e-12)  # beyond the range: all the level
    # the same weights (a layered model's intervals share one level): one map for them,
    # and one solve of K^-1 1, made on first use
    fresh = LocalLevel(v, xy)
    assert "u" not in vars(fresh) and fresh.sd == lev.sd and "u" in vars(fresh)
    assert lev.same_as(LocalLevel(Variogram("spherical", psill=1.2, range=4e4, nugget=0.3), xy))
    assert not lev.same_as(LocalLevel(v, xy[::-1]))
    assert not lev.same_as(LocalLevel(Variogram("spherical", psill=1.2, range=5e4), xy))


def test_gls_weights_of_many_points_match_a_direct_solve():
    """``K⁻¹ 1`` is built a block of rows at a time and factorised in place: with 2,500
    points (three blocks) it is the direct solve's, and a duplicate location without a
    nugget (``K`` singular) falls back to least squares, whose ``1' K⁻¹ 1`` is the one
    of the distinct points."""
    rng = np.random.default_rng(11)
    xy = rng.uniform(0, 2e6, (2500, 2))
    v = Variogram("exponential", psill=0.06, range=4e4, nugget=0.02)
    lev = LocalLevel(v, xy)
    h = np.hypot(*(xy[:, None, :] - xy[None, :, :]).transpose(2, 0, 1))
    want = np.linalg.solve(v.covariance(h), np.ones(len(xy)))
    np.testing.assert_allclose(lev.u, want, rtol=1e-9)
    few = xy[:40]
    pure = Variogram("exponential", psill=1.0, range=4e5, nugget=0.0)
    twice = np.vstack([few, few[:1]])
    assert gls_mean_sd(pure, twice) == pytest.approx(residual_mean_sd_of(pure, few), rel=1e-6)


def test_local_level_of_a_chunk_at_its_place_in_the_grid():
    """The Monte Carlo's chunks take ``a`` at their own zone cells: a chunk's weight map
    equals the grid-wide one at the same cells (rows and columns offset), NaN outside the
    zones, and the term built from it keeps the rest of the shared sd."""
    from mapping.uncertainty import _level_weight, _local_common

    grid, *_ = small_world(ny=9, nx=12)
    lev = LocalLevel(Variogram("exponential", psill=1.0, range=2500.0, nugget=0.1),
                     [[1.0015e6, 1.0035e6], [1.0085e6, 1.0065e6]])  # fmt: skip
    flat = np.array([0, 5, 9, 17, 30, 47])  # the zone cells of the 6 x 8 chunk
    zone = np.full((6, 8), -1, dtype="int32")
    zone.ravel()[flat] = [0, 1, 1, 0, 2, 0]
    a = _level_weight(grid, lev, zone, (3, 9), (4, 12))
    assert a.shape == (6, 8)
    r, c = np.divmod(flat, 8)
    want = lev.weight(*grid.working_xy(r + 3, c + 4))
    assert 0.05 < want.min() and want.max() < 0.999  # a varies over these cells
    np.testing.assert_array_equal(a.ravel()[flat], want)
    assert np.isnan(np.delete(a.ravel(), flat)).all()  # outside the zones: not computed
    common = np.hypot(lev.sd, 0.2)
    (got,) = _local_common([common], [(lev.sd, 0)], [want.reshape(1, -1)])
    np.testing.assert_allclose(got[0], np.sqrt(0.2**2 + (lev.sd * want) ** 2), rtol=1e-12)
    ones = np.ones((1, len(flat)))  # a second level's weights: a = 1 keeps the whole term
    same = _local_common([(common, 0.3), common, common], [None, (lev.sd, 1), (lev.sd, 0)],
                         [want.reshape(1, -1), ones])  # fmt: skip
    assert same[0] == (common, 0.3)  # an interval without a local level keeps its term
    np.testing.assert_allclose(same[1], common, rtol=1e-12)
    np.testing.assert_array_equal(same[2], got)  # each interval its own level's weights


def test_local_level_leaves_out_data_beyond_its_cutoff():
    """``LocalLevel.weight`` over an area many cutoffs wide, a few grid rows at a time: the
    data beyond ``cutoff`` of a block are left out and ``a`` is that of every datum's
    covariance to ``TOLERANCE``; exactly so for the spherical model, whose covariance ends
    at its range."""
    from mapping.residual_errors import TOLERANCE

    rng = np.random.default_rng(11)
    xy = rng.uniform(0, 2e6, (400, 2))
    gy, gx = np.mgrid[0:60, 0:60] * 2.2e6 / 59 - 1e5  # a 60 x 60 grid, row-major
    pts = np.column_stack([gx.ravel(), gy.ravel()])
    pts[[0, 1000, 2000]] = xy[:3]  # cells on a datum: the nugget's covariance too
    for v in (Variogram("exponential", psill=0.06, range=3e4, nugget=0.02),
              Variogram("gaussian", psill=1.0, range=5e4, nugget=0.0),
              Variogram("matern", psill=0.5, range=2e4, nugget=0.1, nu=1.5),
              Variogram("spherical", psill=0.3, range=9e4, nugget=0.05)):  # fmt: skip
        lev = LocalLevel(v, xy)
        # blocks of 5 rows (1.9e5 m) leave out the data beyond 2 cutoffs of them
        assert v.range <= lev.cutoff and 2 * lev.cutoff + 1.9e5 < 1.5e6, v.model
        k = v.covariance(np.hypot(*(pts[:, None] - xy[None]).transpose(2, 0, 1)))
        every = np.clip(1.0 - k @ lev.u, 0.0, 1.0)
        got = lev.weight(pts[:, 0], pts[:, 1], block=300)
        assert np.abs(got - every).max() <= TOLERANCE, v.model
        assert got[[0, 1000, 2000]].max() < 0.9 and got.max() > 0.99  # pinned at the data
        if v.model == "spherical":
            np.testing.assert_allclose(got, every, rtol=0, atol=1e-12)


def residual_mean_sd_of(v: Variogram, xy: np.ndarray) -> float:
    """``1 / sqrt(1' K⁻¹ 1)`` by a direct inverse."""
    h = np.hypot(*(xy[:, None, :] - xy[None, :, :]).transpose(2, 0, 1))
    return float(1 / np.sqrt(np.linalg.inv(np.where(h == 0, v.sill, v.covariance(h))).sum()))


def test_zone_total_variance_with_a_local_level():
    """``local_level``: each cell carries ``sd a`` of the level (and all of the rest of
    ``common_sd``), so the analytic variance is ``sum_ij w_i w_j l_i l_j rho_ij + (sum w c)²``
    with ``c = min(sqrt(common² - sd² (1 - a²)), s)``; the zone full of data loses most of
    the level's part, the zone far from it keeps it whole (the same draws as a constant)."""
    grid, mean, std, zones = small_world(ny=9, nx=12)
    v = Variogram("exponential", psill=0.7, range=3000.0, nugget=0.3)
    rows, cols = np.nonzero(zones[:, :3] == 1)  # profiles on the west half of zone a
    x, y = grid.working_xy(rows, cols)
    lev = LocalLevel(Variogram("exponential", psill=1.0, range=250.0, nugget=0.05),
                     np.column_stack([x, y]))  # fmt: skip
    common = float(np.hypot(1.2, 0.4))  # the level and a regional error, kg m-2
    kw = dict(n_realizations=1500, seed=4, chunks=16, names=NAMES, unit="Tg", batch=500)
    maps, sds = {"0-30": grid.wrap(mean)}, {"0-30": grid.wrap(std)}
    lev3 = LocalLevel(lev.variogram, lev.xy)
    lev3.sd = 1.2  # the level as the run's common_sd holds it (a depends on u alone)
    draws = zone_total_draws(maps, sds, zone_map(grid, zones), grid, v, common_sd=common,
                             local_level={"0-30": lev3}, **kw)  # fmt: skip
    flat = zone_total_draws(maps, sds, zone_map(grid, zones), grid, v, common_sd=common, **kw)
    assert draws.attrs["local_level"] is True and flat.attrs["local_level"] is False
    area = grid.cell_area()
    ok = np.isfinite(mean)
    rr, cc = np.nonzero(ok)
    rho = pair_correlation(v, grid.resolution[1], grid.resolution[0], rr, cc)
    a = lev.weight(*grid.working_xy(rr, cc))
    c = np.minimum(np.sqrt(np.maximum(common**2 - lev3.sd**2 * (1 - a * a), 0.0)), std[ok])
    local = np.sqrt(np.maximum(std[ok] ** 2 - c**2, 0.0))
    c0 = np.minimum(common, std[ok])  # the constant level
    local0 = np.sqrt(np.maximum(std[ok] ** 2 - c0**2, 0.0))
    n = kw["n_realizations"]
    se = np.sqrt(2.0 / (n - 1))
    for code, name in [(1, "a"), (2, "b"), (None, "all zones")]:
        sel = (zones[ok] > 0) if code is None else (zones[ok] == code)
        w = np.where(sel, area[ok] / 1e9, 0.0)
        var = float((w * local) @ rho @ (w * local)) + float(w @ c) ** 2
        got = draws.loc[draws["zone"] == name, "storage_tg"].to_numpy()
        var0 = float((w * local0) @ rho @ (w * local0)) + float(w @ c0) ** 2
        assert got.var(ddof=1) / var == pytest.approx(1.0, abs=4 * se), name
        if name == "a":  # the data's zone: visibly narrower than with the constant level
            assert var < 0.7 * var0
            base = flat.loc[flat["zone"] == name, "storage_tg"].to_numpy()
            assert got.var(ddof=1) < (1 - 4 * se) * base.var(ddof=1)
    far = zones[ok] == 2  # zone b lies beyond the data's range: a = 1, the same draws
    assert a[far].min() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(
        draws.loc[draws["zone"] == "b", "storage_tg"],
        flat.loc[flat["zone"] == "b", "storage_tg"],
        rtol=1e-6,  # a = 1 to within exp(-16)
    )
    with pytest.raises(InputError, match="local_level '0-50'"):
        zone_total_draws(maps, sds, zone_map(grid, zones), grid, v, n_realizations=2,
                         local_level={"0-50": lev3})  # fmt: skip


def test_independent_pixel_range_by_hand():
    grid, mean, std, zones = small_world(ny=8, nx=10)
    out = independent_pixel_range(
        {"0-30": grid.wrap(mean)}, {"0-30": grid.wrap(std)}, zone_map(grid, zones), grid,
        ranges=(10, 90), unit="Tg", chunks=3, names=NAMES,
    )  # fmt: skip
    area = grid.cell_area()
    ok = np.isfinite(mean)
    z90 = norm.ppf(0.9)
    for code, name in [(1, "a"), (3, "c"), (None, "all zones")]:
        sel = ok & ((zones > 0) if code is None else (zones == code))
        total = (area * mean)[sel].sum() / 1e9
        sd = np.sqrt(((area * std)[sel] ** 2).sum()) / 1e9
        row = out.loc[out["zone"] == name].iloc[0]
        assert row["storage_tg"] == pytest.approx(total, rel=1e-12)
        assert row["storage_sd_tg"] == pytest.approx(sd, rel=1e-12)
        assert row["storage_lower_tg"] == pytest.approx(total - z90 * sd, rel=1e-12)
        assert row["storage_upper_tg"] == pytest.approx(total + z90 * sd, rel=1e-12)
        assert row["storage_sd_full_correlation_tg"] == pytest.approx(
            (area * std)[sel].sum() / 1e9, rel=1e-12
        )
    assert list(out["zone"]) == ["a", "b", "c", "all zones"]


def test_independent_pixels_with_fractional_polygon_cover():
    import geopandas as gpd
    import shapely

    grid = Grid.from_bounds((0, 0, 6000, 4000), 1000.0, "EPSG:6931")
    mean = np.full(grid.shape, 10.0)
    std = np.full(grid.shape, 2.0)
    # a polygon over columns 0-1 and half of column 2, all rows
    gdf = gpd.GeoDataFrame({"z": [1]}, geometry=[shapely.box(0, 0, 2500, 4000)], crs="EPSG:6931")
    cov = zone_coverage_from_polygons(gdf, grid, "z")
    out = independent_pixel_range(
        {"0-30": grid.wrap(mean)}, {"0-30": grid.wrap(std)}, cov, grid, unit="Tg"
    )
    row = out.iloc[0]
    a = 1e6
    assert row["storage_tg"] == pytest.approx(10 * a * (8 + 4 * 0.5) / 1e9)
    # whole cells add (A s)^2, half cells (A s / 2)^2
    assert row["storage_sd_tg"] == pytest.approx(np.sqrt(8 * (2 * a) ** 2 + 4 * (a) ** 2) / 1e9)


# ----------------------------------------------------------------------------- known truth: coverage
def test_ranges_cover_truths_drawn_by_an_independent_simulator():
    """50 truths with correlated lognormal errors (circulant embedding); the 90 % Monte Carlo
    range of each zone total covers them at about the nominal rate, the independent-pixel
    range does not."""
    world = synthetic.make_world(seed=4, shape=(64, 64))
    grid = world.grid
    res = world.params.residual  # exponential, psill 0.09, range 75 km
    trend = synthetic.interval_stock(0, 30, np.exp(world.trend()), world.scale_depth)
    median = np.where(world.mask, trend, np.nan)
    m = median * np.exp(res.psill / 2)
    s = m * np.sqrt(np.expm1(res.psill))
    zones = grid.wrap(world.zones.astype("int32")).rio.write_nodata(0)
    names = {c: n for c, n in synthetic.ZONE_NAMES.items() if (world.zones == c).any()}
    v = Variogram("exponential", psill=res.psill, range=res.range)
    maps = ({"0-30": grid.wrap(m)}, {"0-30": grid.wrap(s)})
    draws = zone_total_draws(
        *maps, zones, grid, v, n_realizations=200, seed=1, distribution="lognormal", names=names
    )
    mc = summarise_draws(draws, ranges=(5, 95))
    ind = independent_pixel_range(*maps, zones, grid, ranges=(5, 95), names=names)
    rng = np.random.default_rng(2024)
    area = world.cell_area_m2
    hits_mc, hits_ind = [], []
    for _ in range(50):
        eps = synthetic.gaussian_random_field(grid.shape, world.resolution, res, rng)
        truth = median * np.exp(eps)
        for _, row in mc.iterrows():
            sel = (
                (world.zones > 0)
                if row["zone"] == "all zones"
                else (world.zones == row["zone_code"])
            )
            total = np.nansum(truth[sel]) * area / 1e12
            hits_mc.append(
                (row["zone"], row["storage_lower_pg"] <= total <= row["storage_upper_pg"])
            )
            irow = ind.loc[ind["zone"] == row["zone"]].iloc[0]
            hits_ind.append(irow["storage_lower_pg"] <= total <= irow["storage_upper_pg"])
    hits = pd.DataFrame(hits_mc, columns=["zone", "hit"])
    assert hits["hit"].mean() >= 0.82
    assert hits.groupby("zone")["hit"].mean().min() >= 0.7
    assert np.mean(hits_ind) <= 0.4
    width_mc = (mc["storage_upper_pg"] - mc["storage_lower_pg"]).to_numpy()
    width_ind = (ind["storage_upper_pg"] - ind["storage_lower_pg"]).to_numpy()
    assert np.all(width_ind < 0.35 * width_mc)


def test_sample_data_truth_lies_in_the_ranges():
    """The committed sample world: the 'model' is the truth's own trend and residual
    variance; the true totals (truth/*.tif) fall in every 90 % range, the pixel intervals
    cover 85-95 % of the true cells, the independent-pixel ranges miss most totals."""
    params = json.loads((SAMPLE / "truth" / "parameters.json").read_text())
    res = params["truth"]["residual"]
    cov = {k: read_band(SAMPLE / f"{k}.tif") for k in ("elevation", "maat", "ndvi", "twi")}
    cov["precipitation"] = read_band(SAMPLE / "truth" / "precipitation_5km.tif")
    lc = read_band(SAMPLE / "landcover.tif")
    cov["landcover"] = np.where(np.isnan(lc), 0, lc).astype(int)
    log_rho0 = synthetic.trend_log_density(cov)
    k = synthetic.scale_depth(cov)
    grid = raster_grid(SAMPLE / "truth" / "soc_0_30cm.tif")
    zones = grid.wrap(read_band(SAMPLE / "permafrost_zones.tif"))
    s2 = res["psill"] + res["nugget"]
    means, stds, truths = {}, {}, {}
    z90 = norm.ppf(0.95)
    for top, bottom in synthetic.STANDARD_DEPTHS:
        label = f"{top}-{bottom}"
        median = synthetic.interval_stock(top, bottom, np.exp(log_rho0), k)
        truth = read_band(SAMPLE / "truth" / f"soc_{top}_{bottom}cm.tif")
        means[label] = grid.wrap(median * np.exp(s2 / 2))
        stds[label] = grid.wrap(median * np.exp(s2 / 2) * np.sqrt(np.expm1(s2)))
        truths[label] = grid.wrap(truth)
        ok = np.isfinite(truth)
        inside = np.abs(np.log(truth[ok] / median[ok])) <= z90 * np.sqrt(s2)
        assert 0.85 <= inside.mean() <= 0.95
    v = Variogram(res["model"], psill=res["psill"], range=res["range"], nugget=res["nugget"])
    names = {int(c): n for c, n in params["zones"]["codes"].items()}
    draws = zone_total_draws(
        means,
        stds,
        zones,
        grid,
        v,
        n_realizations=100,
        seed=0,
        distribution="lognormal",
        names=names,
    )
    mc = summarise_draws(draws)
    true = zone_totals(truths, zones, grid, names=names)[["zone", "interval", "storage_pg"]]
    ind = independent_pixel_range(means, stds, zones, grid, names=names)
    both = mc.merge(true, on=["zone", "interval"]).merge(
        ind[["zone", "interval", "storage_lower_pg", "storage_upper_pg"]],
        on=["zone", "interval"],
        suffixes=("", "_ind"),
    )
    assert len(both) == 20  # 4 intervals x (4 zones + all)
    inside = (both["storage_lower_pg"] <= both["storage_pg"]) & (
        both["storage_pg"] <= both["storage_upper_pg"]
    )
    assert inside.all(), both.loc[~inside]
    inside_ind = (both["storage_lower_pg_ind"] <= both["storage_pg"]) & (
        both["storage_pg"] <= both["storage_upper_pg_ind"]
    )
    assert inside_ind.mean() < 0.25
    # the true totals match the published ones (truth/zone_totals.csv)
    published = pd.read_csv(SAMPLE / "truth" / "zone_totals.csv")
    row = published.query("zone == 'continuous' and bottom_cm == 300").iloc[0]
    got = true.query("zone == 'continuous' and interval == '0-300'")["storage_pg"].iloc[0]
    assert got == pytest.approx(row["storage_pg"], rel=1e-5)


# ----------------------------------------------------------------------------- invariance
def _draws(grid, mean, std, zones, **kw):
    m2 = mean * 2.6
    s2 = std * 2.2
    v = {
        "0-30": Variogram("exponential", 1.0, 3000.0, nugget=0.1),
        "0-100": Variogram("spherical", 0.8, 7000.0, nugget=0.2),
    }
    return zone_total_draws(
        {"0-30": grid.wrap(mean), "0-100": grid.wrap(m2)},
        {"0-30": grid.wrap(std), "0-100": grid.wrap(s2)},
        kw.pop("zones_arg", None) or zone_map(grid, zones), grid, v,
        n_realizations=kw.pop("n", 12), seed=kw.pop("seed", 5), names=NAMES,
        common_sd=kw.pop("common", {"0-30": 0.5, "0-100": 0.0}), **kw,
    )  # fmt: skip


def test_draws_do_not_depend_on_chunking():
    grid, mean, std, zones = small_world()
    mean[:, 40:] = np.nan  # a whole chunk (at chunks=(10, 40)) without data
    ref = _draws(grid, mean, std, zones, chunks=64)
    for chunks in (7, (10, 40), 16, (30, 13)):
        got = _draws(grid, mean, std, zones, chunks=chunks, batch=5)
        pd.testing.assert_frame_equal(got, ref, check_exact=True)
    # many chunks (8 x 11 >= MANY_CHUNKS): one task per chunk for all realizations
    from mapping import uncertainty

    assert 8 * 11 >= uncertainty.MANY_CHUNKS > 5 * 2
    got = _draws(grid, mean, std, zones, chunks=4, batch=5)
    pd.testing.assert_frame_equal(got, ref, check_exact=True)


def test_draws_with_polygon_zones_do_not_depend_on_chunking():
    import geopandas as gpd
    import shapely

    grid, mean, std, _ = small_world()
    left, bottom, _, top = grid.bounds
    gdf = gpd.GeoDataFrame(
        {"z": [1, 2]},
        geometry=[
            shapely.box(left + 2300, bottom + 1700, left + 20400, top - 3300),
            shapely.Point(left + 30000, bottom + 15000).buffer(9000),
        ],
        crs="EPSG:6931",
    )
    cov = zone_coverage_from_polygons(gdf, grid, "z")
    a = _draws(grid, mean, std, None, zones_arg=cov, chunks=9)
    b = _draws(grid, mean, std, None, zones_arg=cov, chunks=(25, 17))
    np.testing.assert_array_equal(a["storage_pg"], b["storage_pg"])
    assert list(a["zone"].unique()) == ["a", "b", "c", "all zones"]  # c: named, not on the map
    assert (a.loc[a["zone"] == "c", "storage_pg"] == 0).all()
    assert (a.loc[a["zone"] == "b", "storage_pg"] > 0).all()


def test_draws_do_not_depend_on_workers():
    grid, mean, std, zones = small_world()
    with dask.config.set(scheduler="threads", num_workers=1):
        one = _draws(grid, mean, std, zones, chunks=12)
    with dask.config.set(scheduler="threads", num_workers=2):
        two = _draws(grid, mean, std, zones, chunks=12)
    np.testing.assert_array_equal(one["storage_pg"], two["storage_pg"])
    # (separate worker processes: benchmarks/bench_uncertainty.py, a local cluster of 1 and 2)


def test_chunks_outside_every_zone_are_skipped_with_the_same_totals():
    import dataclasses

    import dask.array as da

    grid, mean, std, zones = small_world()
    zones[:, :] = 0
    zones[3:11, 30:41] = 1  # zones in two corners of a grid that is mostly "no zone"
    zones[24:29, 2:9] = 2
    layout = prepare_zones(
        grid.wrap(da.from_array(zones, chunks=8)).rio.write_nodata(0), grid, NAMES
    )
    rows, cols = grid.chunk_sizes(7)
    assert 0 < layout.occupied(rows, cols).sum() < 0.6 * len(rows) * len(cols)
    dense = dataclasses.replace(layout, found=None)  # every chunk summed
    assert dense.occupied(rows, cols).all()
    for chunks in (7, (10, 40)):
        sparse_d = _draws(grid, mean, std, None, zones_arg=layout, chunks=chunks)
        dense_d = _draws(grid, mean, std, None, zones_arg=dense, chunks=chunks)
        pd.testing.assert_frame_equal(sparse_d, dense_d, check_exact=True)
        maps = ({"0-30": grid.wrap(mean)}, {"0-30": grid.wrap(std)})
        a = independent_pixel_range(*maps, layout, grid, chunks=chunks)
        b = independent_pixel_range(*maps, dense, grid, chunks=chunks)
        pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert (sparse_d.loc[sparse_d["zone"] == "c", "storage_pg"] == 0).all()
    # and the maps' chunks outside every zone are never read
    seen: list[tuple[int, int]] = []

    def record(block, block_info=None):
        if block_info is not None:
            seen.append(tuple(block_info[0]["chunk-location"]))
        return block

    lazy = da.from_array(mean, chunks=(rows, cols)).map_blocks(record, dtype="float64")
    for kw in ({}, {"variogram": {"0-30": Variogram("exponential", 1.0, 3000.0)}}):
        seen.clear()
        maps = ({"0-30": grid.wrap(lazy)}, {"0-30": grid.wrap(std)})
        if kw:
            zone_total_draws(*maps, layout, grid, kw["variogram"], n_realizations=3, chunks=7)
        else:
            independent_pixel_range(*maps, layout, grid, chunks=7)
        assert set(seen) == {tuple(ij) for ij in np.argwhere(layout.occupied(rows, cols))}


# ----------------------------------------------------------------------------- seeds
def test_seeds_reproduce_and_realizations_are_stable():
    grid, mean, std, zones = small_world(ny=20, nx=20)
    a = _draws(grid, mean, std, zones, chunks=8, n=10, seed=3)
    b = _draws(grid, mean, std, zones, chunks=8, n=10, seed=3)
    c = _draws(grid, mean, std, zones, chunks=8, n=10, seed=4)
    longer = _draws(grid, mean, std, zones, chunks=20, n=25, seed=3, batch=7)
    np.testing.assert_array_equal(a["storage_pg"], b["storage_pg"])
    assert not np.allclose(a["storage_pg"], c["storage_pg"])
    first10 = longer[longer["realization"] < 10].reset_index(drop=True)
    np.testing.assert_array_equal(first10["storage_pg"], a["storage_pg"])
    assert a["storage_pg"].nunique() > 0.9 * len(a)  # realizations differ


# ----------------------------------------------------------------------------- cumulative intervals
def test_cumulative_intervals_are_consistent_in_every_realization():
    grid, mean, std, zones = small_world()
    rng = np.random.default_rng(0)
    labels = ["0-30", "0-100", "0-200", "0-300"]
    # means that break the order in places, very different uncertainties and variograms
    factors = dict(zip(labels, (1, 2.2, 3.1, 3.6), strict=True))
    means = {
        lab: grid.wrap(mean * f * rng.uniform(0.6, 1.4, mean.shape)) for lab, f in factors.items()
    }
    spread = dict(zip(labels, (1.5, 1.0, 3.0, 0.5), strict=True))
    stds = {lab: grid.wrap(std * f) for lab, f in spread.items()}
    vg = {
        "0-30": Variogram("exponential", 1.0, 2000.0, nugget=0.5),
        "0-100": Variogram("spherical", 1.0, 6000.0),
        "0-200": Variogram("gaussian", 1.0, 4000.0, nugget=0.1),
        "0-300": Variogram("exponential", 1.0, 8000.0),
    }
    for dist, common in (
        ("normal", 0.0),
        ("lognormal", {"0-30": 0.2, "0-100": 0.0, "0-200": 0.1, "0-300": 0.3}),
    ):
        d = zone_total_draws(
            means,
            stds,
            zone_map(grid, zones),
            grid,
            vg,
            n_realizations=30,
            seed=2,
            chunks=16,
            distribution=dist,
            names=NAMES,
            common_sd=common,
        )
        wide = d.pivot_table(
            index=["zone", "realization"], columns="interval", values="storage_pg"
        )[labels]
        assert (np.diff(wide.to_numpy(), axis=1) >= -1e-15).all()

    # cell by cell, and what the constraint changes
    f = GaussianField.from_variograms(list(vg.values()), (1000.0, 1000.0), 9)
    z = f.window(slice(0, 30), slice(0, 44), range(6))
    iv = [(0.0, 30.0), (0.0, 100.0), (0.0, 200.0), (0.0, 300.0)]
    args = ([means[lab].values for lab in labels], [stds[lab].values for lab in labels], z, iv)
    dens = realization_block(*args, kernel_of=[0, 1, 2, 3])
    raw = realization_block(*args, kernel_of=[0, 1, 2, 3], cumulative=False)
    diff = np.diff(dens, axis=0)
    assert np.all(diff[np.isfinite(diff)] >= 0)
    assert (np.diff(raw, axis=0) < 0).any()  # without the constraint the order breaks
    np.testing.assert_array_equal(dens[0], raw[0])  # the top interval is never changed
    assert np.isnan(dens[:, :, 5:7, 20:26]).all()  # nodata stays nodata


def test_cumulative_maximum_keeps_deeper_data_under_shallow_nodata():
    m = [np.array([[np.nan, 5.0]]), np.array([[7.0, np.nan]])]
    s = [np.zeros((1, 2)), np.zeros((1, 2))]
    z = np.zeros((1, 1, 1, 2))
    d = realization_block(m, s, z, [(0, 30), (0, 100)])
    np.testing.assert_array_equal(d[:, 0, 0], [[np.nan, 5.0], [7.0, np.nan]])


def test_distributions_match_mean_and_std():
    m = np.full((1, 1), 10.0)
    s = np.full((1, 1), 4.0)
    z = norm.ppf((np.arange(20000) + 0.5) / 20000).reshape(1, -1, 1, 1)
    for dist in ("normal", "lognormal"):
        d = realization_block([m], [s], z, [(0, 30)], distribution=dist)[0, :, 0, 0]
        assert d.mean() == pytest.approx(10.0, rel=2e-3)
        assert d.std() == pytest.approx(4.0, rel=2e-2)
        assert d.min() >= 0
    # with an error shared by all cells, each cell keeps its mean and standard deviation
    rng = np.random.default_rng(8)
    zz = rng.standard_normal((1, 200_000, 1, 1))
    g = rng.standard_normal(200_000)
    for dist, common in (("normal", 3.0), ("normal", 9.0), ("lognormal", 0.2), ("lognormal", 2.0)):
        d = realization_block(
            [m], [s], zz, [(0, 30)], distribution=dist, common_sd=[common], shared=g
        )
        d = d[0, :, 0, 0]
        assert d.mean() == pytest.approx(10.0, rel=1e-2), (dist, common)
        assert d.std() == pytest.approx(4.0 if dist == "lognormal" else 3.96, rel=2e-2), (
            dist,
            common,
        )
    d = realization_block(
        [np.array([[0.0, -1.0]])],
        [np.ones((1, 2))],
        z[:, :5].reshape(1, 5, 1, 1).repeat(2, -1),
        [(0, 30)],
        distribution="lognormal",
    )
    assert (d == 0).all()


# ----------------------------------------------------------------------------- summaries and API
def test_summarise_draws_by_hand():
    draws = pd.DataFrame(
        {
            "realization": np.tile(np.arange(100), 2),
            "zone": ["a"] * 100 + ["all zones"] * 100,
            "zone_code": pd.array([1] * 100 + [pd.NA] * 100, dtype="Int64"),
            "interval": "0-30",
            "top_cm": 0.0,
            "bottom_cm": 30.0,
            "storage_pg": np.r_[np.arange(1.0, 101.0)[::-1], np.arange(2.0, 202.0, 2.0)],
        }
    )
    out = summarise_draws(draws, ranges=(5, 95), unit="Tg")
    a = out.iloc[0]
    assert a["zone"] == "a" and a["zone_code"] == 1 and a["n_realizations"] == 100
    assert a["storage_median_tg"] == pytest.approx(50.5e3)
    assert a["storage_lower_tg"] == pytest.approx(5.95e3)  # linear between the 5th and 6th
    assert a["storage_upper_tg"] == pytest.approx(95.05e3)
    assert a["storage_mean_tg"] == pytest.approx(50.5e3)
    assert out.iloc[1]["storage_median_tg"] == pytest.approx(101e3)
    assert pd.isna(out.iloc[1]["zone_code"])

    totals = pd.DataFrame(
        {
            "zone": ["a", "all zones"],
            "interval": "0-30",
            "area_km2": [1.0, 1.0],
            "storage_pg": [50.0, 100.0],
            "x": 1,
        }
    )
    merged = attach_ranges(totals, summarise_draws(draws))
    assert list(merged.columns) == [
        "zone",
        "interval",
        "area_km2",
        "storage_pg",
        "storage_median_pg",
        "storage_lower_pg",
        "storage_upper_pg",
        "x",
    ]
    assert merged["storage_upper_pg"].iloc[1] == pytest.approx(2 * 95.05)


def test_draws_table_layout_and_attrs():
    grid, mean, std, zones = small_world(ny=10, nx=12)
    d = _draws(grid, mean, std, zones, n=4, chunks=6)
    assert list(d.columns) == [
        "realization",
        "zone",
        "zone_code",
        "interval",
        "top_cm",
        "bottom_cm",
        "storage_pg",
    ]
    assert len(d) == 2 * 4 * 4  # intervals x (3 zones + all) x realizations
    one = d[d["realization"] == 2]
    for iv in ("0-30", "0-100"):
        part = one[one["interval"] == iv].set_index("zone")["storage_pg"]
        assert part["all zones"] == pytest.approx(part[["a", "b", "c"]].sum(), rel=1e-14)
    assert d.attrs["storage_unit"] == "Pg" and d.attrs["seed"] == 5
    assert d.attrs["kernel_max_correlation_error"] < 1e-3


def test_prepared_layout_and_residual_variogram_of_a_model():
    from mapping.models.kriging import OrdinaryKriging, RegressionKriging

    grid, mean, std, zones = small_world(ny=10, nx=12)
    layout = prepare_zones(zone_map(grid, zones), grid, NAMES, chunks=5)
    rng = np.random.default_rng(1)
    X = pd.DataFrame(
        {"x": rng.uniform(0, 5e4, 60), "y": rng.uniform(0, 5e4, 60), "c": rng.normal(size=60)}
    )
    y = 2 * X["c"] + np.sin(X["x"] / 8e3) + rng.normal(0, 0.1, 60)
    model = RegressionKriging(
        kriging=OrdinaryKriging(variogram=Variogram("exponential", 0.5, 8000.0, nugget=0.01))
    ).fit(X, y)
    v = residual_variogram(model)
    d = zone_total_draws(
        {"0-30": grid.wrap(mean)}, {"0-30": grid.wrap(std)}, layout, grid, v, n_realizations=3
    )
    assert set(d["zone"]) == {"a", "b", "c", "all zones"}
    with pytest.raises(ModelError, match="variogram_"):
        residual_variogram(object())


@pytest.mark.parametrize(
    ("change", "error", "text"),
    [
        ({"stds": {}}, InputError, "stds: no map for interval 0-30"),
        (
            {"variogram": {"0-100": Variogram("exponential", 1.0, 1000.0)}},
            ModelError,
            "no variogram for interval 0-30",
        ),
        ({"distribution": "gamma"}, ConfigError, "distribution 'gamma'"),
        ({"n_realizations": 0}, ConfigError, "n_realizations"),
        ({"seed": -1}, ConfigError, "seed"),
        ({"common_sd": -0.1}, ConfigError, "common_sd"),
        ({"common_sd": {"0-100": 0.1}}, ConfigError, "common_sd: no value for interval 0-30"),
        ({"unit": "Gt"}, ConfigError, "unit 'Gt'"),
        ({"shared_fraction": 1.5}, ConfigError, "shared_fraction must be at most 1"),
        ({"shared_fraction": -0.2}, ConfigError, ">= 0"),
        ({"means": {"top": None}}, InputError, "'top'"),
    ],
)
def test_bad_arguments_are_one_line_user_errors(change, error, text):
    grid, mean, std, zones = small_world(ny=6, nx=6)
    kw = {
        "means": {"0-30": grid.wrap(mean)},
        "stds": {"0-30": grid.wrap(std)},
        "zones": zone_map(grid, zones),
        "grid": grid,
        "variogram": Variogram("exponential", 1.0, 1000.0),
        "n_realizations": 2,
    }
    kw.update(change)
    with pytest.raises(error, match=text) as info:
        zone_total_draws(**kw)
    assert isinstance(info.value, MappingError) and "\n" not in str(info.value)


def test_geographic_grids_and_misaligned_maps_are_refused():
    geo = Grid.from_bounds(
        (0, 40, 2, 80), 0.25, "EPSG:4326"
    )  # cos 80° / cos 60° = 0.35: widths off by 65 %
    ones = geo.wrap(np.ones(geo.shape))
    with pytest.raises(InputError, match=r"between 40.0 and 80.0 degrees.*off by up to 65 %"):
        zone_total_draws(
            {"0-30": ones},
            {"0-30": ones},
            geo.wrap(np.ones(geo.shape, int)),
            geo,
            Variogram("exponential", 1.0, 1e4),
        )
    grid, mean, std, zones = small_world(ny=6, nx=6)
    other = Grid.from_bounds((0, 0, 6000, 6000), 1000.0, "EPSG:6931")
    with pytest.raises(GridMismatchError, match="mean 0-30"):
        zone_total_draws(
            {"0-30": other.wrap(mean)},
            {"0-30": grid.wrap(std)},
            zone_map(grid, zones),
            grid,
            Variogram("exponential", 1.0, 1e3),
        )
    with pytest.raises(ConfigError, match="percentiles"):
        summarise_draws(pd.DataFrame({"storage_pg": [1.0]}), ranges=(50, 40))


def test_cv_block_error_sd_by_hand_and_on_a_known_regional_error():
    from mapping.exceptions import InputError

    # fold means 1 and 3 (variance 2); within-fold variances 2 and 2 over 2 rows: noise 1
    cv = pd.DataFrame(
        {"fold": [1, 1, 2, 2], "observed": [1.0] * 4, "predicted": [0.0, 2.0, 2.0, 4.0]}
    )
    assert cv_block_error_sd(cv, log=False) == pytest.approx(1.0, rel=1e-12)
    # log errors: ln 2 and ln 4 in fold 1, ln 2 and ln 4 in fold 2 -> no regional error
    cv_log = cv.assign(predicted=[2.0, 4.0, 2.0, 4.0])
    assert cv_block_error_sd(cv_log) == 0.0
    # a single fold says nothing about the spread between regions
    assert cv_block_error_sd(cv.query("fold == 1"), log=False) == 0.0
    with pytest.raises(InputError, match="'fold'"):
        cv_block_error_sd(cv.drop(columns="fold"))
    # synthetic: 400 folds of 30 profiles, regional log error sd 0.1, profile noise sd 0.5;
    # the raw sd of the fold means (sqrt(0.1² + 0.5²/30) = 0.13) overstates it
    rng = np.random.default_rng(7)
    fold = np.repeat(np.arange(400), 30)
    log_err = rng.normal(0.0, 0.1, 400)[fold] + rng.normal(0.0, 0.5, fold.size)
    obs = rng.lognormal(2.0, 0.6, fold.size)
    syn = pd.DataFrame({"fold": fold, "observed": obs, "predicted": obs * np.exp(log_err)})
    assert cv_block_error_sd(syn) == pytest.approx(0.1, abs=0.015)


def _all_zone_draws(d: np.ndarray, labels: list[str], area: float) -> pd.DataFrame:
    """Storage (Pg) per realization of each interval of ``d`` (``(k, n, 1, cells)``)."""
    n, parts = d.shape[1], []
    for k, iv in enumerate(labels):
        part = pd.DataFrame({"realization": np.arange(n), "zone": "all zones", "interval": iv})
        part["zone_code"] = pd.NA
        part["top_cm"], part["bottom_cm"] = 0.0, float(iv.split("-")[1])
        part["storage_pg"] = d[k].sum(axis=(1, 2)) * area / 1e12
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def test_mean_shifts_flag_a_deeper_interval_lifted_by_the_ordering() -> None:
    """Two intervals sharing a top; the deeper map is the smaller (as per-interval maps can
    be). Drawn as increments, the deeper realizations equal the shallower ones: lifted by
    the maps' own disorder, 10 / 9.5 - 1, and flagged. The running maximum of independent
    draws (``cumulative="max"``, the former scheme) lifts them by E[max(X, Y)] - E[Y]."""
    rng = np.random.default_rng(3)
    n, cells, area = 400, 50, 1e6  # m2 per cell; storage in Pg = kg / 1e12
    m = [np.full((1, cells), 10.0), np.full((1, cells), 9.5)]
    s = [np.full((1, cells), 3.0), np.full((1, cells), 3.0)]
    z = rng.standard_normal((2, n, 1, cells))
    iv, labels = [(0, 200), (0, 300)], ["0-200", "0-300"]
    totals = pd.DataFrame(
        {"zone": "all zones", "interval": labels,
         "storage_pg": [10.0 * cells * area / 1e12, 9.5 * cells * area / 1e12]}
    )  # fmt: skip
    d = realization_block(m, s, z, iv, kernel_of=[0, 1], distribution="lognormal")
    np.testing.assert_array_equal(d[1], d[0])  # no increment where the deeper map is smaller
    out = mean_shifts(_all_zone_draws(d, labels, area), totals)
    assert list(out["interval"]) == ["0-300"]
    assert out["shift"].iloc[0] == pytest.approx(10 / 9.5 - 1, abs=4 * out["noise"].iloc[0])

    lifted = realization_block(
        m, s, z, iv, kernel_of=[0, 1], distribution="lognormal", cumulative="max"
    )
    out = mean_shifts(_all_zone_draws(lifted, labels, area), totals)
    # independent lognormal cells (cv 0.3): E[max] by simulation of the same model, 2e5 pairs
    sig = np.sqrt(np.log1p(0.3**2))
    big = np.random.default_rng(4).standard_normal((2, 200_000))
    x = 10.0 * np.exp(sig * big[0] - sig**2 / 2)
    y = 9.5 * np.exp(np.sqrt(np.log1p((3 / 9.5) ** 2)) * big[1] - np.log1p((3 / 9.5) ** 2) / 2)
    expected = np.maximum(x, y).mean() / 9.5 - 1.0
    assert out["shift"].iloc[0] == pytest.approx(expected, abs=4 * out["noise"].iloc[0])
    assert out["shift"].iloc[0] > 0.1
    # no shift without the ordering
    plain = realization_block(
        m, s, z, iv, kernel_of=[0, 1], distribution="lognormal", cumulative=False
    )
    assert mean_shifts(_all_zone_draws(plain, labels, area), totals).empty
    with pytest.raises(ValueError, match="cumulative"):
        realization_block(m, s, z, iv, cumulative="min")
    with pytest.raises(InputError, match="storage_pg"):
        draws = _all_zone_draws(plain, labels, area)
        mean_shifts(draws, totals.rename(columns={"storage_pg": "storage_tg"}))


@pytest.mark.parametrize("kernels", [[0, 0, 0], [0, 1, 2]])
def test_increments_keep_each_maps_mean_and_order_every_realization(kernels: list[int]) -> None:
    """Ordered maps whose deeper intervals spread much wider (as per-interval deep models
    do: cv 0.3, 0.6, 0.9): drawn as increments, every realization is ordered in every cell,
    each interval keeps its map's mean (to Monte Carlo noise) and, with one field for all,
    its standard deviation to a few per cent (comonotone lognormal increments add their
    standard deviations nearly exactly). The running maximum lifts the deepest mean (by
    4 % with one field, 31 % with independent ones). Independent fields per interval (the extreme case) keep the means and
    narrow the deeper spreads, as the module docstring says."""
    rng = np.random.default_rng(11)
    n = 200_000
    m = [np.full((1, 1), v) for v in (10.0, 14.0, 16.0)]
    s = [np.full((1, 1), v) for v in (3.0, 8.4, 14.4)]
    z = rng.standard_normal((3, n, 1, 1))
    iv = [(0, 30), (0, 100), (0, 200)]
    d = realization_block(m, s, z, iv, kernel_of=kernels, distribution="lognormal")[:, :, 0, 0]
    assert (np.diff(d, axis=0) >= 0).all()
    se = np.array([3.0, 8.4, 14.4]) / np.sqrt(n)
    assert np.all(np.abs(d.mean(axis=1) - [10.0, 14.0, 16.0]) < 5 * se * 3)  # heavy tails
    if kernels == [0, 0, 0]:
        np.testing.assert_allclose(d.std(axis=1), [3.0, 8.4, 14.4], rtol=0.06)
    else:
        assert d.std(axis=1)[0] == pytest.approx(3.0, rel=0.02)
        assert np.all(d.std(axis=1)[1:] < [8.4, 14.4])
    lifted = realization_block(
        m, s, z, iv, kernel_of=kernels, distribution="lognormal", cumulative="max"
    )[:, :, 0, 0]
    assert lifted.mean(axis=1)[2] > (1.03 if kernels == [0, 0, 0] else 1.2) * 16.0


def test_a_shared_fraction_of_each_cells_variance() -> None:
    """``(sd, fraction)``: every cell shares ``sd² + fraction × its own log variance``
    (capped at it); the cells keep their marginal distribution, and two cells with
    independent local fields correlate (on the log scale) by ``c1 c2 / (σ1 σ2)``."""
    rng = np.random.default_rng(8)
    n = 40_000
    m = [np.array([[10.0, 20.0, 5.0]])]
    s = [np.array([[2.0, 10.0, 5.0]])]  # log sd 0.198, 0.472, 0.833
    z = rng.standard_normal((1, n, 1, 3))  # independent local fields
    g = rng.standard_normal(n)
    sig = np.sqrt(np.log1p((s[0] / m[0]) ** 2)).ravel()
    for level, frac in [(0.0, 0.3), (0.1, 0.2), (0.15, 0.0)]:
        d = realization_block(
            m, s, z, [(0, 30)], distribution="lognormal", common_sd=[(level, frac)], shared=g
        )[0, :, 0, :]
        assert d.mean(axis=0) == pytest.approx(m[0].ravel(), rel=0.02)
        assert d.std(axis=0) == pytest.approx(s[0].ravel(), rel=0.05)
        c = np.sqrt(np.minimum(level**2 + frac * sig**2, sig**2))
        r = np.corrcoef(np.log(d).T)
        for i, j in [(0, 1), (0, 2), (1, 2)]:
            assert r[i, j] == pytest.approx(c[i] * c[j] / (sig[i] * sig[j]), abs=0.015)
    # a plain sd is the old constant term, to the bit
    a = realization_block(m, s, z[:, :50], [(0, 30)], distribution="lognormal",
                          common_sd=[0.15], shared=g[:50])  # fmt: skip
    b = realization_block(m, s, z[:, :50], [(0, 30)], distribution="lognormal",
                          common_sd=[(0.15, 0.0)], shared=g[:50])  # fmt: skip
    assert np.array_equal(a, b)


def test_an_extrapolation_error_shared_with_its_own_normal() -> None:
    """``extra_sd``: a second shared error, per cell, independent of ``common_sd``'s: every
    cell keeps its marginal distribution, and two cells with independent local fields
    correlate on the log scale by ``(c_i c_j + x_i x_j) / (σ_i σ_j)``, ``x`` capped at what
    ``c`` leaves; a deeper interval's increment shares the same part of its variance."""
    rng = np.random.default_rng(9)
    n = 40_000
    m = [np.array([[10.0, 20.0, 5.0, 8.0]])]
    s = [np.array([[2.0, 10.0, 5.0, 1.0]])]
    x = [np.array([[0.0, 0.3, 0.6, 0.9]])]  # the last above the cell's own log sd: capped
    z = rng.standard_normal((1, n, 1, 4))  # independent local fields
    g, h = rng.standard_normal(n), rng.standard_normal(n)
    sig = np.sqrt(np.log1p((s[0] / m[0]) ** 2)).ravel()
    level = 0.1
    d = realization_block(m, s, z, [(0, 30)], distribution="lognormal", common_sd=[level],
                          shared=g, extra_sd=x, extra=h)[0, :, 0, :]  # fmt: skip
    assert d.mean(axis=0) == pytest.approx(m[0].ravel(), rel=0.02)
    assert d.std(axis=0) == pytest.approx(s[0].ravel(), rel=0.05)
    c = np.minimum(level, sig)
    xc = np.minimum(x[0].ravel(), np.sqrt(sig**2 - c**2))
    assert xc[3] < x[0][0, 3]  # the cap binds
    r = np.corrcoef(np.log(d).T)
    for i, j in [(0, 1), (0, 2), (1, 2), (1, 3), (2, 3)]:
        want = (c[i] * c[j] + xc[i] * xc[j]) / (sig[i] * sig[j])
        assert r[i, j] == pytest.approx(want, abs=0.015), (i, j)
    # without its normals the term stays in each cell's own part: the marginals are kept
    d0 = realization_block(m, s, z, [(0, 30)], distribution="lognormal", common_sd=[level],
                           shared=g, extra_sd=x)[0, :, 0, :]  # fmt: skip
    assert d0.std(axis=0) == pytest.approx(s[0].ravel(), rel=0.05)
    assert abs(np.corrcoef(np.log(d0).T)[1, 2] - c[1] * c[2] / (sig[1] * sig[2])) < 0.015
    # normal draws, two cumulative intervals: the increment shares the same part of its
    # own variance, so the deeper interval's shared sd is x30 + sqrt(share) * sd(increment)
    m2 = [np.full((1, 2), 100.0), np.full((1, 2), 200.0)]
    s2 = [np.full((1, 2), 4.0), np.full((1, 2), 7.0)]
    x2 = [np.array([[2.0, 0.0]]), np.array([[5.0, 0.0]])]
    zz = rng.standard_normal((1, n, 1, 2))
    dd = realization_block(m2, s2, zz, [(0, 30), (0, 100)], common_sd=[0.0, 0.0],
                           extra_sd=x2, extra=h)[:, :, 0, :]  # fmt: skip
    assert dd[1].std(axis=0) == pytest.approx([7.0, 7.0], rel=0.03)
    # cell 0 against cell 1 (nothing shared) and against the shared normal itself
    assert abs(np.corrcoef(dd[1, :, 0], dd[1, :, 1])[0, 1]) < 0.02
    share = 5.0**2 / 7.0**2
    want = 2.0 + np.sqrt(share) * (7.0 - 4.0)
    assert np.cov(dd[1, :, 0], h)[0, 1] == pytest.approx(want, rel=0.05)


@pytest.mark.parametrize("common", [0.0, 1.2])
def test_zone_total_variance_with_a_shared_extrapolation_error(common):
    """Analytic variance of the zone totals with ``extrapolation_sd``:
    ``sum_ij a_i a_j l_i l_j rho_ij + (sum a c)² + (sum a x)²``, ``x`` capped at
    ``sqrt(s² - c²)``, ``l`` the rest; an interval left out of the mapping has none."""
    grid, mean, std, zones = small_world(ny=9, nx=12)
    mean[5:7, 4:6] = np.nan
    _, xx = np.mgrid[0:9, 0:12]
    xsd = np.where(xx > 6, 0.5 * std, 0.0)
    xsd[0, 11] = 50.0  # capped at the cell's own
    xsd[3, 3] = np.nan  # no term
    v = Variogram("exponential", psill=0.7, range=3000.0, nugget=0.3)
    n = 1500
    maps = {"0-30": grid.wrap(mean), "0-100": grid.wrap(2 * mean)}
    sds = {"0-30": grid.wrap(std), "0-100": grid.wrap(2 * std)}
    draws = zone_total_draws(
        maps, sds, zone_map(grid, zones), grid, v,
        n_realizations=n, seed=11, chunks=16, names=NAMES, unit="Tg", batch=500,
        common_sd=common, extrapolation_sd={"0-30": grid.wrap(xsd)},
    )  # fmt: skip
    assert draws.attrs["extrapolation_shared"] is True
    area = grid.cell_area()
    ok = np.isfinite(mean)
    rr, cc = np.nonzero(ok)
    rho = pair_correlation(v, grid.resolution[1], grid.resolution[0], rr, cc)
    c = np.minimum(common, std[ok])
    x = np.minimum(np.nan_to_num(xsd[ok]), np.sqrt(std[ok] ** 2 - c**2))
    local = np.sqrt(np.maximum(std[ok] ** 2 - c**2 - x**2, 0.0))
    # 0-100 cm has no term, but its increment shares the 0-30 cm's normal: only 0-30 here
    sel_draws = draws[draws["interval"] == "0-30"]
    for code, name in [(1, "a"), (2, "b"), (None, "all zones")]:
        sel = (zones[ok] > 0) if code is None else (zones[ok] == code)
        w = np.where(sel, area[ok] / 1e9, 0.0)
        var = float((w * local) @ rho @ (w * local)) + float(w @ c) ** 2 + float(w @ x) ** 2
        l0 = w * np.sqrt(std[ok] ** 2 - c**2)
        without = float(l0 @ rho @ l0) + float(w @ c) ** 2
        got = sel_draws.loc[sel_draws["zone"] == name, "storage_tg"].to_numpy()
        se = np.sqrt(2.0 / (n - 1))
        assert got.var(ddof=1) / var == pytest.approx(1.0, abs=4 * se), name
        if name == "b":  # x > 0 only in the east: zone b's variance visibly grows
            assert var > (1 + 4 * se) * without
    with pytest.raises(InputError, match="extrapolation_sd '0-50'"):
        zone_total_draws(maps, sds, zone_map(grid, zones), grid, v, n_realizations=2,
                         extrapolation_sd={"0-50": grid.wrap(xsd)})  # fmt: skip
