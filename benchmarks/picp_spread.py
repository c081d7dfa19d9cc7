#!/usr/bin/env python
"""How far would a perfectly calibrated predictor's per-world PICP and RMS z scatter?

    python benchmarks/picp_spread.py SUITE_OUT [SUITE_OUT ...] [--sims 200] [--seed 0]
                                     [--vario-cells 4000] [--coupling fitted]
                                     [--correlation fitted]
                                     [--range-scale 1.0] [--csv /tmp/picp_spread.csv]

``SUITE_OUT`` is an ``--out`` folder of ``benchmarks/world_suite.py`` (``worlds/<name>/``
with the truth and the finished ``socmap run`` in ``run/``). Nothing is rerun and nothing
is written, except the optional ``--csv`` table (keep it under ``/tmp``).

The suite's per-world targets are pixel PICP of the 5-95 % interval in [0.88, 0.92] and
RMS z in [0.9, 1.1], in every depth interval of every world. Within one world the errors
are spatially correlated, so a world holds few independent error "patches" and even an
exactly calibrated predictor scores a PICP that scatters around 0.90. This script
measures that scatter, world by world and interval by interval:

1. **Realised errors.** For each land cell the suite scores (finite ``lower``, ``upper``
   and truth: :func:`mapping.synthetic.judge.picp`), the standardized log-scale error
   ``z = z95 * (2 log t - log lo - log hi) / (log hi - log lo)``. The run's intervals are
   symmetric in log around the median, so ``|z| <= z95`` is exactly the suite's
   ``lower <= truth <= upper``; the realised PICP and RMS z are the suite's own
   (:func:`mapping.synthetic.judge.picp`, :func:`mapping.synthetic.judge.rms_z`, the
   same truth and maps as ``benchmarks/world_suite.py``).
2. **Their spatial correlation.** An exponential variogram (nugget + partial sill +
   range, gstat conventions) fitted to ``z`` at ``--vario-cells`` random cells with
   :meth:`mapping.models.variogram.Variogram.fit` (gstat's binning and weights, distances
   in the grid's working CRS), one per interval; only its correlation ``C(h) / C(0)``
   is used. ``--range-scale`` multiplies the fitted ranges (sensitivity).
3. **A perfect predictor.** ``--sims`` unit-variance Gaussian fields with that
   correlation on the world's grid (white noise convolved with
   :func:`mapping.randomfield.lattice_kernel`, the project's moving-average kernel, on
   the lattice spacing of :func:`mapping.randomfield.lattice_spacing`), read at the same
   land cells. The four intervals' fields are coupled by correlated white noise so their
   cell-by-cell correlation is the realised ``z``'s (``--coupling fitted``); ``shared``
   drives all intervals with the same noise (the project's Monte Carlo choice), and
   ``independent`` draws them apart. Each field is taken as the error ``z`` of an exactly
   calibrated predictor: its PICP is the share of ``|z| <= z95``. With ``--correlation
   truth`` the fields take the truth's own residual correlation instead (exponential,
   ``spec.residual_range_m``, no nugget, the same at every depth; use it with
   ``--coupling shared``): the errors of a predictor that knows the trend and nothing of
   the residual, the most correlated a calibrated predictor's errors can be. Its RMS z is that of a
   lognormal predictor with the run's own log-scale spread ``s`` per cell (``mean =
   exp(mu + s^2 / 2)``, ``std = mean * sqrt(exp(s^2) - 1)``, truth ``exp(mu + s z)``).

Printed: per world and interval the realised figure, the perfect predictor's 5-95 %
range, its probability of landing inside the target band and where the realised value
falls in its distribution (``rank``: share of perfect predictor draws below it); then the
summary over all worlds: the expected number of worlds with all four intervals inside
the band (simulated jointly, and as the product under independence), the number of
realised figures outside the perfect predictor's own 90 % range, and the pooled PICP's
spread. A world is simulated independently of the others, so the k-th draws of all worlds
form one draw of the whole suite.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import fft as sfft
from scipy.stats import norm

sys.path.insert(0, str(Path(__file__).resolve().parent))

from world_suite import INTERVALS, _read, _truth

from mapping.grid import Grid
from mapping.models.variogram import Variogram
from mapping.randomfield import lattice_kernel, lattice_spacing
from mapping.synthetic.judge import picp, rms_z

Z95 = float(norm.ppf(0.95))
PICP_BAND = (0.88, 0.92)
RMSZ_BAND = (0.9, 1.1)
COUPLINGS = ("fitted", "shared", "independent")
CORRELATIONS = ("fitted", "truth")


# --------------------------------------------------------------------------- data
@dataclass
class IntervalErrors:
    """One depth interval of one world: the realised errors and their variogram.

    Attributes
    ----------
    label
        ``"top-bottom"`` in cm, as the suite writes it.
    valid
        ``(ny, nx)`` cells the suite scores (finite lower, upper and truth).
    z
        Standardized log-scale error at the ``valid`` cells (row-major order).
    s
        Log-scale standard deviation ``(log hi - log lo) / (2 z95)`` at the same cells.
    picp, rms_z
        The suite's realised pixel PICP and RMS z.
    variogram
        Exponential variogram fitted to ``z``.
    range_bounded
        The fit put the practical range beyond the largest lag and it was held there
        (:meth:`mapping.models.variogram.Variogram.fit_sample`).
    """

    label: str
    valid: np.ndarray
    z: np.ndarray
    s: np.ndarray
    picp: float
    rms_z: float
    variogram: Variogram | None = None
    range_bounded: bool = False


@dataclass
class WorldErrors:
    """The realised errors of one world and the grid they live on."""

    suite: str
    name: str
    grid: Grid
    intervals: list[IntervalErrors] = field(default_factory=list)


def _grid(world_dir: Path) -> Grid:
    import rasterio

    with rasterio.open(world_dir / "elevation.tif") as src:
        return Grid(src.crs, src.transform, (src.height, src.width))


def load_world(world_dir: Path) -> WorldErrors:
    """Read one world's truth and ``socmap run`` maps and form the realised errors.

    Parameters
    ----------
    world_dir
        ``SUITE_OUT/worlds/<name>``.

    Returns
    -------
    WorldErrors
        Without variograms (see :func:`fit_variograms`).
    """
    run = world_dir / "run" / "maps"
    out = WorldErrors(world_dir.parents[1].name, world_dir.name, _grid(world_dir))
    for top, bottom in INTERVALS:
        truth = _truth(world_dir, top, bottom)
        m = {s: _read(run / f"soc_{top}_{bottom}cm_{s}.tif") for s in ("mean", "std")}
        lo = _read(run / f"soc_{top}_{bottom}cm_lower.tif")
        hi = _read(run / f"soc_{top}_{bottom}cm_upper.tif")
        valid = np.isfinite(lo) & np.isfinite(hi) & np.isfinite(truth)
        llo, lhi, lt = np.log(lo[valid]), np.log(hi[valid]), np.log(truth[valid])
        z = Z95 * (2.0 * lt - llo - lhi) / (lhi - llo)
        iv = IntervalErrors(
            label=f"{top}-{bottom}",
            valid=valid,
            z=z,
            s=(lhi - llo) / (2.0 * Z95),
            picp=picp(lo, hi, truth),
            rms_z=rms_z(m["mean"], m["std"], truth),
        )
        mismatch = abs(float(np.mean(np.abs(z) <= Z95)) - iv.picp)
        if mismatch > 1e-3:
            raise RuntimeError(
                f"{world_dir}: {iv.label}: |z| <= z95 gives a PICP {mismatch:.4f} off the "
                "suite's; the interval is not symmetric in log around its centre"
            )
        out.intervals.append(iv)
    return out


def fit_variograms(
    world: WorldErrors, n_cells: int, rng: np.random.Generator, model: str = "exponential"
) -> None:
    """Fit a variogram to each interval's ``z`` at ``n_cells`` random cells (in place).

    Distances are in the grid's working CRS (metres; a local equal-area plane on a
    longitude/latitude grid), the binning and weights gstat's defaults.
    """
    for iv in world.intervals:
        rows, cols = np.nonzero(iv.valid)
        pick = rng.choice(len(rows), size=min(n_cells, len(rows)), replace=False)
        x, y = world.grid.working_xy(rows[pick], cols[pick])
        with warnings.catch_warnings(record=True) as held:
            warnings.simplefilter("always")
            iv.variogram = Variogram.fit(np.column_stack([x, y]), iv.z[pick], model)
        iv.range_bounded = any("range held" in str(w.message) for w in held)


def truth_variograms(world: WorldErrors, world_dir: Path) -> None:
    """Give every interval the truth's own residual correlation (in place).

    The synthetic truth is ``ln rho0 = trend + eps`` with ``eps`` an exponential field of
    range ``spec.residual_range_m`` and no nugget, the same at every depth
    (``mapping.synthetic``). A predictor that knows the trend but has learnt nothing of
    ``eps`` has exactly ``eps`` as its log error: the most correlated errors a perfectly
    calibrated predictor can have on that world (kriging from the profiles only shortens
    the correlation). Replaces the variograms fitted to ``z`` (the table then shows
    the truth's: sill 1, no nugget).
    """
    spec = json.loads((world_dir / "truth" / "world.json").read_text())["spec"]
    for iv in world.intervals:
        iv.variogram = Variogram("exponential", psill=1.0, range=float(spec["residual_range_m"]))
        iv.range_bounded = False


# --------------------------------------------------------------------------- simulation
def _centred(w: np.ndarray, ry: int, rx: int) -> np.ndarray:
    """Kernel ``w`` zero-padded to ``(2 ry + 1, 2 rx + 1)``, centre kept."""
    out = np.zeros((2 * ry + 1, 2 * rx + 1))
    hy, hx = w.shape[0] // 2, w.shape[1] // 2
    out[ry - hy : ry + hy + 1, rx - hx : rx + hx + 1] = w
    return out


def _nearest_correlation(r: np.ndarray) -> np.ndarray:
    """Clip a symmetric matrix's eigenvalues at zero and rescale it to a unit diagonal."""
    r = 0.5 * (r + r.T)
    lam, vec = np.linalg.eigh(r)
    r = (vec * np.clip(lam, 0.0, None)) @ vec.T
    d = np.sqrt(np.clip(np.diag(r), 1e-12, None))
    return r / np.outer(d, d)


def noise_mixing(
    kernels: Sequence[np.ndarray], target: np.ndarray, coupling: str
) -> tuple[np.ndarray, np.ndarray]:
    """Mixing matrix of the intervals' white noise, and the cell-by-cell correlation it gives.

    With white noises of correlation ``R`` the fields ``k_i * W_i`` have the lag-0
    correlation ``R_ij * sum(k_i k_j)``; ``fitted`` solves it for the ``target``
    correlation (the realised ``z``'s), ``shared`` sets ``R = 1`` and ``independent``
    ``R = I``.

    Parameters
    ----------
    kernels
        Centred kernels of one shape, each of unit energy.
    target
        ``(n, n)`` realised correlation between the intervals' ``z``.
    coupling
        One of :data:`COUPLINGS`.

    Returns
    -------
    mixing, achieved
        ``A`` with ``A A^T = R`` and the lag-0 correlation ``R * G`` of the fields.
    """
    n = len(kernels)
    g = np.array([[float(np.sum(a * b)) for b in kernels] for a in kernels])
    if coupling == "fitted":
        r = _nearest_correlation(np.clip(target / g, -1.0, 1.0))
    elif coupling == "shared":
        r = np.ones((n, n))
    elif coupling == "independent":
        r = np.eye(n)
    else:
        raise ValueError(f"coupling {coupling!r}: use one of {', '.join(COUPLINGS)}")
    lam, vec = np.linalg.eigh(r)
    mixing = vec * np.sqrt(np.clip(lam, 0.0, None))
    return mixing, r * g


@dataclass
class Draws:
    """A perfect predictor's figures, ``(sims, n_intervals)`` each, and its set-up."""

    picp: np.ndarray
    rms_z: np.ndarray
    inside: np.ndarray
    cells: np.ndarray
    achieved: np.ndarray
    target: np.ndarray
    kernel_radius: tuple[int, int]


def simulate_world(
    world: WorldErrors,
    sims: int,
    rng: np.random.Generator,
    *,
    coupling: str = "fitted",
    range_scale: float = 1.0,
    batch: int = 4,
) -> Draws:
    """Draw ``sims`` error fields of a perfectly calibrated predictor on one world.

    Parameters
    ----------
    world
        With variograms (:func:`fit_variograms`).
    sims
        Number of draws.
    rng
        Source of the white noise.
    coupling
        How the intervals' fields are coupled, see :func:`noise_mixing`.
    range_scale
        Factor on every fitted range.
    batch
        Draws convolved at once (memory: about ``batch * 4 * 8`` bytes per FFT node).

    Returns
    -------
    Draws
    """
    ivs = world.intervals
    spacing = lattice_spacing(world.grid)
    raw = []
    for iv in ivs:
        assert iv.variogram is not None
        v = iv.variogram.replace(range=iv.variogram.range * range_scale)
        raw.append(lattice_kernel(v, spacing).weights)
    ry = max(w.shape[0] // 2 for w in raw)
    rx = max(w.shape[1] // 2 for w in raw)
    kernels = [_centred(w, ry, rx) for w in raw]
    common = np.logical_and.reduce([iv.valid for iv in ivs])
    target = np.corrcoef(np.array([iv.z[common[iv.valid]] for iv in ivs]))
    mixing, achieved = noise_mixing(kernels, target, coupling)

    # bounding box of the scored cells; noise on it plus a halo of the kernel's radius
    any_valid = np.logical_or.reduce([iv.valid for iv in ivs])
    rows, cols = np.nonzero(any_valid)
    r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    ny, nx = r1 - r0, c1 - c0
    noise_shape = (ny + 2 * ry, nx + 2 * rx)
    fy = sfft.next_fast_len(ny + 4 * ry, real=False)
    fx = sfft.next_fast_len(nx + 4 * rx, real=True)
    spectra = np.stack([sfft.rfft2(k.astype(np.float32), s=(fy, fx)) for k in kernels])
    masks = [iv.valid[r0:r1, c0:c1] for iv in ivs]
    s2 = [iv.s**2 for iv in ivs]

    n = len(ivs)
    inside = np.empty((sims, n))
    sq = np.empty((sims, n))
    cells = np.array([m.sum() for m in masks], dtype=float)
    for start in range(0, sims, batch):
        b = min(batch, sims - start)
        white = rng.standard_normal((b, n, *noise_shape), dtype=np.float32)
        f = sfft.rfft2(white, s=(fy, fx), axes=(-2, -1))
        f = np.einsum("ij,bj...->bi...", mixing.astype(np.float32), f) * spectra
        fields = sfft.irfft2(f, s=(fy, fx), axes=(-2, -1))[
            :, :, 2 * ry : 2 * ry + ny, 2 * rx : 2 * rx + nx
        ]
        for i in range(n):
            z = fields[:, i][:, masks[i]].astype(np.float64)  # (b, cells), row-major
            inside[start : start + b, i] = np.sum(np.abs(z) <= Z95, axis=1)
            # lognormal predictor of log-sd s: (mean - truth) / std, truth = exp(mu + s z)
            half = 0.5 * s2[i]
            zl = (np.exp(half) - np.exp(np.sqrt(s2[i]) * z)) / (
                np.exp(half) * np.sqrt(np.expm1(s2[i]))
            )
            sq[start : start + b, i] = np.mean(zl**2, axis=1)
    return Draws(
        picp=inside / cells,
        rms_z=np.sqrt(sq),
        inside=inside,
        cells=cells,
        achieved=achieved,
        target=target,
        kernel_radius=(ry, rx),
    )


# --------------------------------------------------------------------------- summaries
def _in_band(x: np.ndarray, band: tuple[float, float]) -> np.ndarray:
    return (x >= band[0]) & (x <= band[1])


def world_rows(world: WorldErrors, draws: Draws) -> list[dict[str, object]]:
    """One table row per interval: realised figures against the perfect predictor's."""
    rows = []
    for i, iv in enumerate(world.intervals):
        v = iv.variogram
        assert v is not None
        p, q = draws.picp[:, i], draws.rms_z[:, i]
        var = float(np.var(p, ddof=1))
        rows.append(
            {
                "suite": world.suite,
                "world": world.name,
                "interval": iv.label,
                "cells": int(draws.cells[i]),
                "nugget_share": v.nugget / v.sill,
                "range_km": v.range / 1000.0,
                "sill": v.sill,
                "range_bounded": iv.range_bounded,
                "picp": iv.picp,
                "picp_q05": float(np.quantile(p, 0.05)),
                "picp_q50": float(np.quantile(p, 0.50)),
                "picp_q95": float(np.quantile(p, 0.95)),
                "picp_sd": math.sqrt(var),
                "n_eff": 0.9 * 0.1 / var if var > 0 else math.inf,
                "p_band": float(np.mean(_in_band(p, PICP_BAND))),
                "picp_rank": float(np.mean(p < iv.picp)),
                "rms_z": iv.rms_z,
                "rmsz_q05": float(np.quantile(q, 0.05)),
                "rmsz_q95": float(np.quantile(q, 0.95)),
                "p_band_rmsz": float(np.mean(_in_band(q, RMSZ_BAND))),
                "rmsz_rank": float(np.mean(q < iv.rms_z)),
            }
        )
    return rows


def _fmt_table(df: pd.DataFrame) -> str:
    cols = {
        "world": "{}",
        "interval": "{}",
        "sill": "{:.2f}",
        "nugget_share": "{:.2f}",
        "range_km": "{:.0f}",
        "picp": "{:.3f}",
        "picp_q05": "{:.3f}",
        "picp_q95": "{:.3f}",
        "n_eff": "{:.0f}",
        "p_band": "{:.2f}",
        "picp_rank": "{:.2f}",
        "rms_z": "{:.2f}",
        "rmsz_q05": "{:.2f}",
        "rmsz_q95": "{:.2f}",
        "p_band_rmsz": "{:.2f}",
        "rmsz_rank": "{:.2f}",
    }
    head = (
        "| world | interval | sill | nugget share | range km | PICP | perfect 5-95 % | n_eff "
        "| P(0.88-0.92) | rank | RMS z | perfect 5-95 % | P(0.9-1.1) | rank |"
    )
    lines = [head, "|" + "---|" * 14]
    for r in df.itertuples(index=False):
        f = {k: cols[k].format(getattr(r, k)) for k in cols}
        flag = " *" if r.picp_rank < 0.05 or r.picp_rank > 0.95 else ""
        flagz = " *" if r.rmsz_rank < 0.05 or r.rmsz_rank > 0.95 else ""
        lines.append(
            f"| {r.suite}/{f['world']} | {f['interval']} | {f['sill']} | {f['nugget_share']} | "
            f"{f['range_km']}{' b' if r.range_bounded else ''} | {f['picp']}{flag} | {f['picp_q05']}-{f['picp_q95']} | "
            f"{f['n_eff']} | {f['p_band']} | {f['picp_rank']} | {f['rms_z']}{flagz} | "
            f"{f['rmsz_q05']}-{f['rmsz_q95']} | {f['p_band_rmsz']} | {f['rmsz_rank']} |"
        )
    return "\n".join(lines)


def suite_summary(
    df: pd.DataFrame, joint_picp: list[np.ndarray], joint_rmsz: list[np.ndarray]
) -> list[str]:
    """Lines of the summary over all worlds of one or more suites.

    Parameters
    ----------
    df
        :func:`world_rows` of every world.
    joint_picp, joint_rmsz
        Per world, ``(sims,)`` booleans: all intervals of that draw inside the band.
    """
    out = []
    n_worlds = df.groupby(["suite", "world"]).ngroups
    n_fig = len(df)
    for what, col, band, joint, rank in (
        ("pixel PICP", "picp", PICP_BAND, joint_picp, "picp_rank"),
        ("RMS z", "rms_z", RMSZ_BAND, joint_rmsz, "rmsz_rank"),
    ):
        pb = "p_band" if col == "picp" else "p_band_rmsz"
        realised = df.groupby(["suite", "world"])[col].apply(
            lambda s, band=band: bool(_in_band(s.to_numpy(), band).all())
        )
        p_joint = np.array([j.mean() for j in joint])
        p_indep = df.groupby(["suite", "world"], sort=False)[pb].prod().to_numpy()
        # the number of worlds with all intervals in the band: a sum of independent
        # Bernoulli draws (Poisson-binomial); its distribution from the joint draws
        counts = np.sum(np.array(joint), axis=0)
        low = (df[rank] < 0.05).sum()
        high = (df[rank] > 0.95).sum()
        out += [
            f"{what}, band {band[0]}-{band[1]}:",
            f"  realised: {int(_in_band(df[col].to_numpy(), band).sum())} of {n_fig} "
            f"world x interval figures in the band; {int(realised.sum())} of {n_worlds} "
            "worlds with every interval in it",
            f"  perfect predictor, per figure: P(in band) median {df[pb].median():.2f} "
            f"(range {df[pb].min():.2f}-{df[pb].max():.2f}); expected figures in band "
            f"{df[pb].sum():.1f} of {n_fig}",
            f"  perfect predictor, all intervals of a world in band: expected "
            f"{p_joint.sum():.2f} of {n_worlds} worlds (intervals simulated jointly), "
            f"{p_indep.sum():.2f} if the intervals were independent; "
            f"P(0 worlds) = {np.mean(counts == 0):.2f}, "
            f"5-95 % of the count {np.quantile(counts, 0.05):.0f}-{np.quantile(counts, 0.95):.0f}",
            f"  realised outside the perfect predictor's own 90 % range: {low + high} of "
            f"{n_fig} (expected {0.1 * n_fig:.1f} by chance): {low} below, {high} above",
        ]
    return out


# --------------------------------------------------------------------------- main
def _worlds(roots: Sequence[Path], only: Sequence[str] | None) -> list[Path]:
    dirs = []
    for root in roots:
        for d in sorted((root / "worlds").iterdir()):
            if not (d / "run" / "maps").is_dir():
                continue
            if only and d.name not in only:
                continue
            dirs.append(d)
    return dirs


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; see the module docstring."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("suite", nargs="+", type=Path, help="world_suite.py --out folder(s)")
    ap.add_argument("--sims", type=int, default=200, help="perfect predictor draws per world")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vario-cells", type=int, default=4000, help="cells per variogram fit")
    ap.add_argument("--coupling", choices=COUPLINGS, default="fitted")
    ap.add_argument(
        "--correlation",
        choices=CORRELATIONS,
        default="fitted",
        help="fitted: variograms of the realised z; truth: the truth's residual field's",
    )
    ap.add_argument("--range-scale", type=float, default=1.0, help="factor on fitted ranges")
    ap.add_argument("--only", nargs="*", help="only these world names")
    ap.add_argument("--csv", type=Path, help="write the per-interval table here (under /tmp)")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    rows: list[dict[str, object]] = []
    joint_picp, joint_rmsz, pooled_in, pooled_n = [], [], [], []
    fits = []
    for k, wdir in enumerate(_worlds(args.suite, args.only)):
        rng = np.random.default_rng([args.seed, k])
        world = load_world(wdir)
        fit_variograms(world, args.vario_cells, rng)
        if args.correlation == "truth":
            truth_variograms(world, wdir)
        draws = simulate_world(
            world, args.sims, rng, coupling=args.coupling, range_scale=args.range_scale
        )
        rows += world_rows(world, draws)
        joint_picp.append(_in_band(draws.picp, PICP_BAND).all(axis=1))
        joint_rmsz.append(_in_band(draws.rms_z, RMSZ_BAND).all(axis=1))
        pooled_in.append(draws.inside)
        pooled_n.append(draws.cells)
        off = np.abs(draws.achieved - draws.target)[np.triu_indices(len(world.intervals), 1)]
        fits.append(
            f"{world.suite}/{world.name}: kernel radius {draws.kernel_radius} cells; "
            + "; ".join(f"{iv.label}: {iv.variogram.to_gstat()}" for iv in world.intervals)  # type: ignore[union-attr]
            + f"; interval correlation target {np.round(draws.target[0, 1:], 2).tolist()}, "
            f"max |achieved - target| {off.max():.3f}"
        )
        print(
            f"{world.suite}/{world.name} done ({time.perf_counter() - t0:.0f} s)",
            file=sys.stderr,
            flush=True,
        )
    df = pd.DataFrame(rows)
    print(
        f"\nVariograms simulated ({args.correlation}; exponential, gstat range = scale "
        "parameter, metres):"
    )
    print("\n".join(fits))
    print(
        f"\nPer world and interval ({args.sims} draws, correlation {args.correlation}, "
        f"coupling {args.coupling}, "
        f"range x {args.range_scale}); * = realised outside the perfect predictor's 5-95 %, "
        "b = range held at the largest lag, rank = share of perfect draws below the realised:"
    )
    print(_fmt_table(df))
    print()
    suites = list(dict.fromkeys(df["suite"]))
    keys = list(dict.fromkeys(zip(df["suite"], df["world"], strict=True)))
    for name in [*suites, "all"] if len(suites) > 1 else suites:
        pick = [i for i, k in enumerate(keys) if name in ("all", k[0])]
        print(f"== {name} ({len(pick)} worlds) ==")
        sub = df if name == "all" else df[df["suite"] == name]
        print(
            "\n".join(
                suite_summary(sub, [joint_picp[i] for i in pick], [joint_rmsz[i] for i in pick])
            )
        )
    # pooled over the worlds: draw k of every world is one draw of the suite
    ins, cells = np.sum(pooled_in, axis=0), np.sum(pooled_n, axis=0)
    pooled = ins / cells  # (sims, intervals)
    real = df.groupby("interval", sort=False).apply(
        lambda g: float(np.sum(g["picp"] * g["cells"]) / g["cells"].sum()), include_groups=False
    )
    print("pooled pixel PICP over all worlds, per interval: realised vs perfect 5-95 %:")
    for i, lab in enumerate(real.index):
        print(
            f"  {lab}: {real[lab]:.3f} vs {np.quantile(pooled[:, i], 0.05):.3f}-"
            f"{np.quantile(pooled[:, i], 0.95):.3f} "
            f"(P(0.88-0.92) = {np.mean(_in_band(pooled[:, i], PICP_BAND)):.2f})"
        )
    if args.csv:
        df.to_csv(args.csv, index=False)
    print(f"\nwall time {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
