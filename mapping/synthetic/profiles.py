"""Soil profiles sampled from the synthetic world: sites (:func:`sample_sites`) and horizons
whose stocks integrate the true density (:func:`sample_profiles`), with their checks."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pandas as pd

from mapping.bulk_density import get_ptf
from mapping.synthetic.truth import SOC_MAX_PCT, TruthParameters, interval_stock
from mapping.synthetic.world import SyntheticWorld, to_lonlat

# --------------------------------------------------------------------------- profiles
DEPTH_CLASSES: tuple[tuple[float, float, float], ...] = (
    # (probability, shallowest, deepest) of the profile bottom (cm)
    (0.03, 10, 30),
    (0.32, 30, 100),
    (0.28, 100, 200),
    (0.166, 200, 300),
    (0.204, 300, 351),
)
"""Shares of profile bottoms (allocated as exact quotas), so that 100 / 67 / 38 / 21 %
of the profiles that reach 30 cm also reach 100 / 200 / 300 cm, as in the
3422 / 2290 / 1296 / 720 profiles of the seed's compilation."""


class _Land:
    """The land cells of a world, with the generator the sites are drawn from."""

    def __init__(self, world: SyntheticWorld, rng: np.random.Generator) -> None:
        self.world, self.rng = world, rng
        self.cells = np.argwhere(world.mask)
        self.length = max(world.shape) * world.resolution  # the world's longer side, m

    def contains(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Whether each point lies on a land cell."""
        ny, nx = self.world.shape
        r, c = self.world.rowcol(x, y)
        ok = (r >= 0) & (r < ny) & (c >= 0) & (c < nx)
        out = np.zeros(x.shape, bool)
        out[ok] = self.world.mask[r[ok], c[ok]]
        return out

    def random(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` points uniform within random land cells."""
        rng, res = self.rng, self.world.resolution
        left, _, _, top = self.world.bounds
        rc = self.cells[rng.integers(0, len(self.cells), n)]
        x = left + (rc[:, 1] + rng.uniform(0, 1, n)) * res
        y = top - (rc[:, 0] + rng.uniform(0, 1, n)) * res
        return x, y


def _corridor_sites(land: _Land, m: int) -> tuple[np.ndarray, np.ndarray]:
    """``m`` sites along a road or river: a persistent random walk heading roughly towards
    the pole, denser around three hot spots."""
    rng, length = land.rng, land.length
    path = [np.array(land.random(1)).ravel()]
    heading = math.atan2(-path[0][1], -path[0][0]) + rng.normal(0, 0.6)
    for _ in range(400):
        heading += rng.normal(0, 0.2)
        step = 0.006 * length * np.array([math.cos(heading), math.sin(heading)])
        nxt = path[-1] + step
        if not land.contains(np.array([nxt[0]]), np.array([nxt[1]]))[0]:
            break
        path.append(nxt)
        if len(path) > 120:
            break
    pts = np.array(path)
    seg = np.r_[0.0, np.cumsum(np.hypot(*np.diff(pts, axis=0).T))]
    hot = rng.uniform(0, seg[-1], 3)
    got_x, got_y = np.empty(0), np.empty(0)
    while got_x.size < m:
        k = 4 * m
        s = np.where(
            rng.uniform(size=k) < 0.7,
            rng.choice(hot, k) + rng.normal(0, 0.006 * length, k),
            rng.uniform(0, seg[-1], k),
        )
        s = np.clip(s, 0, seg[-1])
        px = np.interp(s, seg, pts[:, 0]) + rng.normal(0, 0.002 * length, k)
        py = np.interp(s, seg, pts[:, 1]) + rng.normal(0, 0.002 * length, k)
        ok = land.contains(px, py)
        got_x, got_y = np.r_[got_x, px[ok]], np.r_[got_y, py[ok]]
    return got_x[:m], got_y[:m]


def _station_sites(land: _Land, m: int) -> tuple[np.ndarray, np.ndarray]:
    """``m`` sites in a tight cluster around a field station."""
    rng, length = land.rng, land.length
    c = np.array(land.random(1)).ravel()
    got_x, got_y = np.empty(0), np.empty(0)
    while got_x.size < m:
        px = c[0] + rng.normal(0, 0.004 * length, 4 * m + 4)
        py = c[1] + rng.normal(0, 0.004 * length, 4 * m + 4)
        ok = land.contains(px, py)
        got_x, got_y = np.r_[got_x, px[ok]], np.r_[got_y, py[ok]]
    return got_x[:m], got_y[:m]


def _site_bottoms(rng: np.random.Generator, survey: np.ndarray) -> np.ndarray:
    """Profile bottoms (cm): depth classes in fixed quotas (largest remainder), deeper ones
    more often at stations; 30 % of the deeper cores end at their class's round depth."""
    n = len(survey)
    probs = np.array([c[0] for c in DEPTH_CLASSES])
    quota = np.floor(probs * n).astype(int)
    extra = np.argsort(-(probs * n - quota), kind="stable")[: n - quota.sum()]
    quota[extra] += 1
    key = rng.uniform(size=n) + 0.2 * np.char.startswith(survey, "station")
    cls = np.empty(n, dtype=int)
    cls[np.argsort(key, kind="stable")] = np.repeat(np.arange(len(probs)), quota)
    lo = np.array([c[1] for c in DEPTH_CLASSES])[cls]
    hi = np.array([c[2] for c in DEPTH_CLASSES])[cls]
    bottom = rng.integers(lo, hi).astype(float)
    exact = (rng.uniform(size=n) < 0.3) & (lo >= 30)  # cores taken to a round depth
    bottom[exact] = lo[exact]
    return bottom


def sample_sites(world: SyntheticWorld, n_profiles: int = 500, seed: int = 0) -> pd.DataFrame:
    """Profile locations and bottoms, clustered as real soil surveys are.

    About 55 % of the profiles lie along four road/river corridors (denser at a
    few places along each), 20 % around four field stations (more deep cores
    there), and 25 % are scattered over the land. Every site lies in the
    inner 80 % of a land cell, so rounding lon/lat to 1e-6° never moves it to
    another cell.

    Returns
    -------
    pandas.DataFrame
        ``profile_id, survey, x, y, lon, lat, row, col, bottom_cm``.
    """
    if n_profiles < 1:
        raise ValueError("n_profiles must be positive")
    rng = np.random.default_rng([int(seed), 11])
    land = _Land(world, rng)
    res = world.resolution
    left, _, _, top = world.bounds

    n_corr = round(0.55 * n_profiles)
    n_stat = round(0.20 * n_profiles)
    n_scat = n_profiles - n_corr - n_stat
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    labels: list[str] = []

    per = np.diff(np.linspace(0, n_corr, 5).round().astype(int))
    for i, m in enumerate(per):
        px, py = _corridor_sites(land, int(m))
        xs.append(px)
        ys.append(py)
        labels += [f"corridor_{i + 1}"] * m

    per = np.diff(np.linspace(0, n_stat, 5).round().astype(int))
    for i, m in enumerate(per):
        px, py = _station_sites(land, int(m))
        xs.append(px)
        ys.append(py)
        labels += [f"station_{chr(65 + i)}"] * m

    # scattered
    px, py = land.random(n_scat)
    xs.append(px)
    ys.append(py)
    labels += ["scattered"] * n_scat

    x = np.concatenate(xs)
    y = np.concatenate(ys)
    row, col = world.rowcol(x, y)
    # keep each site in the inner 80 % of its cell
    fx = np.clip((x - left) / res - col, 0.1, 0.9)
    fy = np.clip((top - y) / res - row, 0.1, 0.9)
    x = left + (col + fx) * res
    y = top - (row + fy) * res
    lon, lat = to_lonlat().transform(x, y)

    survey = np.array(labels)
    bottom = _site_bottoms(rng, survey)
    width = len(str(len(x)))
    return pd.DataFrame(
        {
            "profile_id": [f"P{i + 1:0{max(4, width)}d}" for i in range(len(x))],
            "survey": survey,
            "x": x,
            "y": y,
            "lon": lon,
            "lat": lat,
            "row": row,
            "col": col,
            "bottom_cm": bottom,
        }
    )


# Bulk density follows the default pedotransfer function (mapping.bulk_density), so that the
# PTF the stock stage uses for missing values is a mean-unbiased estimator of the world's BD.
# mineral horizons richer than this SOC x BD (% x g cm-3; SOC about 10.5 %) are buried organic layers
_MINERAL_MAX = 8.0
_POCKET_DENSITY = 75.0  # kg C m-3 aimed at in cryoturbated pockets (organic material)


def _ptf() -> Any:

    return get_ptf("default")


def _solve_soc(x: float, organic: bool) -> float:
    """SOC (%) on one branch of the default PTF with ``SOC * PTF(SOC) = x``.

    ``SOC * PTF(SOC)`` rises monotonically on the mineral branch (SOC below the
    organic threshold) and falls monotonically on the organic branch up to
    :data:`SOC_MAX_PCT`; ``x`` outside a branch's range is clipped to its end.
    """
    from scipy.optimize import brentq

    ptf = _ptf()
    thr = ptf.organic_threshold_pct
    if organic:
        f = ptf.organic

        def gap(s: float) -> float:
            return s * float(f(s)) - x

        lo, hi = thr, SOC_MAX_PCT
        if gap(lo) <= 0:  # denser than organic material on the PTF can be: SOC at the threshold
            return lo
        if gap(hi) >= 0:
            return hi
        return float(brentq(gap, lo, hi, xtol=1e-12, rtol=1e-12))
    g = ptf.mineral

    def gap_m(s: float) -> float:
        return s * float(g(s)) - x

    lo, hi = 1e-6, thr * (1.0 - 1e-12)
    if gap_m(hi) <= 0:
        return hi
    return float(brentq(gap_m, lo, hi, xtol=1e-12, rtol=1e-12))


def _split_on_ptf(
    qq: float, prefer_organic: bool, scatter_sd: float, rng: np.random.Generator
) -> tuple[float, float, bool]:
    """SOC (%), BD (g cm-3) and organic flag of fine earth with ``SOC * BD = qq``.

    BD is the default PTF's value at the horizon's SOC times ``exp(e)``, ``e ~
    N(-sd^2/2, sd^2)`` (mean-unbiased natural scatter), and SOC is solved so that
    the product reproduces ``qq``. Material the preferred branch cannot hold
    goes to the other one: an organic horizon poorer in carbon than organic
    material on the PTF ever is (about 60 kg C m-3 at SOC 60 %) becomes a
    humus-rich mineral horizon, a mineral one richer than SOC x BD = 8 a buried
    organic layer.
    """
    ptf = _ptf()
    thr = ptf.organic_threshold_pct
    e = rng.normal(-0.5 * scatter_sd**2, scatter_sd)
    x = qq * math.exp(-e)  # = SOC * PTF(SOC) for BD = PTF(SOC) * exp(e)
    organic_low = SOC_MAX_PCT * float(ptf.organic(SOC_MAX_PCT))  # about 6.1
    mineral_high = thr * float(ptf.mineral(thr))  # about 12.0
    organic = x >= organic_low if prefer_organic else x >= min(_MINERAL_MAX, mineral_high)
    soc = _solve_soc(x, organic)
    return soc, qq / soc, organic


def sample_profiles(
    world: SyntheticWorld,
    n_profiles: int = 500,
    seed: int = 0,
    *,
    noise: bool = True,
    missing_bd: float = 0.12,
    sites: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """A horizon table of profiles drawn from the world's true density.

    Sites come from :func:`sample_sites` with the same ``seed``. Each horizon's
    stock is the exact integral of the density of the site's cell (see
    :func:`interval_stock`), split into SOC, bulk density and coarse fragments
    so that ``soc_pct * bulk_density_g_cm3 * (1 - coarse_fraction_pct/100) *
    thickness_cm / 10 * horizon_area_pct / 100``, summed over the profile,
    equals the true stock. Bulk density is the default pedotransfer
    function's value at the horizon's SOC with mean-unbiased scatter
    (``params.bd_scatter_sd``), so the stock stage's estimate of a missing
    value is unbiased. Wetland profiles start with a thick surface layer,
    others with a thin one; these are organic (Oi/Oe/Oa, SOC 17-60 %) where
    their carbon density reaches what organic material on the PTF holds
    (about 60 kg C m-3 and more) and humus-rich mineral horizons otherwise.
    About one profile in twenty in the colder zones has a cryoturbated pair
    of horizons sharing a depth range (a carbon-rich pocket, ``Ojj`` when
    organic, ``Ajj`` otherwise, and its mineral matrix, area
    shares summing to 100).

    Parameters
    ----------
    world
        The synthetic world.
    n_profiles
        Number of profiles.
    seed
        Seed of the sites, horizons and noise.
    noise
        Add the short-range and laboratory noise of ``world.params``; with
        ``False`` the stocks are exact and no bulk density is missing.
    missing_bd
        Target share of horizons without bulk density (``noise=True`` only).
    sites
        Sites as :func:`sample_sites` returns them (``profile_id, survey, lon,
        lat, row, col, bottom_cm``); default ``sample_sites(world, n_profiles, seed)``.

    Returns
    -------
    pandas.DataFrame
        ``profile_id, lon, lat, top_cm, bottom_cm, horizon, soc_pct,
        bulk_density_g_cm3, coarse_fraction_pct, horizon_area_pct, n_pct,
        survey``.
    """
    if sites is None:
        sites = sample_sites(world, n_profiles, seed)
    rng = np.random.default_rng([int(seed), 22])
    p = world.params
    lc_all = world.covariates["landcover"]
    rows: list[dict[str, Any]] = []
    for site in sites.itertuples(index=False):
        r, c = int(site.row), int(site.col)
        rho0 = float(world.surface_density[r, c])
        k = float(world.scale_depth[r, c])
        lc = int(lc_all[r, c])
        zone = int(world.zones[r, c])
        depth = float(site.bottom_cm)
        scale = (
            math.exp(rng.normal(-0.5 * p.profile_noise_sd**2, p.profile_noise_sd)) if noise else 1.0
        )

        bounds, kinds = _horizon_bounds(rng, lc, depth)
        cryo_at = _pocket_horizon(rng, zone, lc, bounds, kinds)

        cf_profile = (
            rng.uniform(15, 50)
            if lc == 4
            else (rng.uniform(1, 15) if rng.uniform() < 0.35 else 0.0)
        )
        for i, ((a, b), kind) in enumerate(zip(bounds, kinds, strict=True)):
            s = scale * float(interval_stock(a, b, rho0, k))
            q = s / ((b - a) / 100.0)  # mean density of the horizon, kg m-3
            if i == cryo_at:
                share = float(rng.choice([20, 25, 30, 35, 40]))
                # an organic pocket where the matrix can spare the carbon
                ratio = min(max(rng.uniform(1.8, 2.6), _POCKET_DENSITY / q), 80.0 / share)
                q1 = q * ratio
                q2 = (q - share / 100.0 * q1) / (1.0 - share / 100.0)
                parts = [("Ojj", q1, share, "pocket"), ("Bgjj", q2, 100.0 - share, "mineral")]
            else:
                name = _horizon_name(kind, a, b, zone)
                parts = [(name, q, 100.0, kind)]
            for name, qh, area, kd in parts:
                lab = _lab_values(rng, p, (name, qh, kd), cf_profile, (a, b, zone), noise)
                rows.append(
                    {
                        "profile_id": site.profile_id,
                        "lon": site.lon,
                        "lat": site.lat,
                        "top_cm": a,
                        "bottom_cm": b,
                        "horizon": lab["horizon"],
                        "soc_pct": lab["soc_pct"],
                        "bulk_density_g_cm3": lab["bulk_density_g_cm3"],
                        "coarse_fraction_pct": lab["coarse_fraction_pct"],
                        "horizon_area_pct": area,
                        "n_pct": lab["n_pct"],
                        "survey": site.survey,
                    }
                )
    df = pd.DataFrame(rows)
    if noise and missing_bd > 0:
        _drop_bulk_density(df, rng, missing_bd)
    validate_horizons(df)
    return df


def _horizon_bounds(
    rng: np.random.Generator, lc: int, depth: float
) -> tuple[list[tuple[float, float]], list[str]]:
    """Horizon ``(top, bottom)`` and kind: an organic layer (thick in wetlands), then mineral
    horizons thickening with depth, down to the profile's ``depth``."""
    h_org = {1: rng.uniform(4, 18), 2: rng.uniform(4, 14), 3: rng.uniform(30, 130), 4: 0.0}[lc]
    h_org = min(float(round(h_org)), depth)
    tops = [0.0]
    kinds: list[str] = []
    while tops[-1] < depth:
        z = tops[-1]
        organic = z < h_org
        t = round(rng.uniform(10, 30) if organic else rng.uniform(8, 30) * (1.0 + z / 150.0))
        end = h_org if organic else depth
        nxt = min(z + t, end)
        if end - nxt < 4:
            nxt = end
        tops.append(float(nxt))
        kinds.append("organic" if organic else "mineral")
    return list(itertools.pairwise(tops)), kinds


def _pocket_horizon(
    rng: np.random.Generator,
    zone: int,
    lc: int,
    bounds: list[tuple[float, float]],
    kinds: list[str],
) -> int:
    """Index of the mineral horizon holding a cryoturbated pocket, -1 for none (tundra and
    wetland of the two colder zones, about one profile in eight of them)."""
    if zone in (1, 2) and lc in (1, 3) and rng.uniform() < 0.12:
        cands = [
            i
            for i, (a, b) in enumerate(bounds)
            if kinds[i] == "mineral" and 10 <= a <= 100 and b - a >= 8
        ]
        if cands:
            return int(rng.choice(cands))
    return -1


def _lab_values(
    rng: np.random.Generator,
    p: TruthParameters,
    part: tuple[str, float, str],
    cf_profile: float,
    where: tuple[float, float, int],
    noise: bool,
) -> dict[str, Any]:
    """Horizon name, SOC %, bulk density, coarse fragments and N % of one horizon (or
    pocket) whose mean carbon density is ``qh`` kg m-3; ``part`` is ``(name, qh, kind)``,
    ``where`` is ``(top, bottom, zone)``."""
    name, qh, kd = part
    a, b, zone = where
    cf = round(cf_profile * (0.6 + 0.8 * rng.uniform()), 1) if cf_profile > 0 else 0.0
    if kd != "mineral" or qh / 10.0 >= _MINERAL_MAX:
        cf = 0.0  # organic material carries no stones
    soc, bd, organic = _split_on_ptf(
        qh / (10.0 * (1.0 - cf / 100.0)), kd != "mineral", p.bd_scatter_sd, rng
    )
    if organic:
        if cf > 0:  # re-split without stones
            cf = 0.0
            soc, bd, organic = _split_on_ptf(qh / 10.0, True, p.bd_scatter_sd, rng)
        if kd == "mineral":
            name = "Ob"  # too rich in carbon for mineral soil: a buried organic layer
    if not organic and kd != "mineral":
        # too poor in carbon for organic material on the PTF: humus-rich mineral
        name = "Ajj" if kd == "pocket" else _horizon_name("mineral", a, b, zone)
    cn = rng.uniform(22, 30) if organic else rng.uniform(15, 22)
    if noise:
        soc *= math.exp(rng.normal(-0.5 * p.soc_lab_sd**2, p.soc_lab_sd))
        bd *= math.exp(rng.normal(-0.5 * p.bd_lab_sd**2, p.bd_lab_sd))
        bd = max(bd, 0.05)  # a lab never reports less
    return {
        "horizon": name,
        "soc_pct": soc,
        "bulk_density_g_cm3": bd,
        "coarse_fraction_pct": cf,
        "n_pct": soc / cn,
    }


def _drop_bulk_density(df: pd.DataFrame, rng: np.random.Generator, missing_bd: float) -> None:
    """Blank bulk densities in place: whole profiles (older surveys) plus scattered horizons."""
    pids = df["profile_id"].unique()
    no_bd = set(rng.choice(pids, round(0.6 * missing_bd * len(pids)), replace=False))
    drop = np.array(df["profile_id"].isin(no_bd))
    drop |= rng.uniform(size=len(df)) < 0.4 * missing_bd
    df.loc[drop, "bulk_density_g_cm3"] = np.nan


def _horizon_name(kind: str, top: float, bottom: float, zone: int) -> str:
    if kind == "organic":
        return "Oi" if top == 0 and bottom <= 10 else ("Oe" if top < 30 else "Oa")
    if top < 20:
        return "A"
    if top < 100:
        return "Bg"
    return "Cf" if zone > 0 else "C"


def validate_horizons(df: pd.DataFrame) -> None:
    """Check the strict validity rules the sample data promise; raise ``ValueError`` if broken.

    Per profile: ``top < bottom``; horizons contiguous from 0 cm without gaps or
    overlaps, except groups sharing the same depth range whose
    ``horizon_area_pct`` sum to 100; SOC in (0, 100] %; BD in [0.05, 2.65]
    g cm-3 where given; coarse fragments in [0, 100) %; lon in [-180, 180], lat
    in [-90, 90].
    """
    bad = []
    if not (df["top_cm"] < df["bottom_cm"]).all():
        bad.append("top_cm >= bottom_cm")
    if not df["soc_pct"].between(0, 100, inclusive="right").all():
        bad.append("soc_pct outside (0, 100]")
    bd = df["bulk_density_g_cm3"].dropna()
    if not bd.between(0.05, 2.65).all():
        bad.append("bulk_density_g_cm3 outside [0.05, 2.65]")
    if not df["coarse_fraction_pct"].between(0, 100, inclusive="left").all():
        bad.append("coarse_fraction_pct outside [0, 100)")
    if not (df["lon"].between(-180, 180).all() and df["lat"].between(-90, 90).all()):
        bad.append("coordinates out of range")
    for pid, g in df.groupby("profile_id", sort=False):
        layers = g.groupby(["top_cm", "bottom_cm"], sort=True)["horizon_area_pct"].sum()
        if not np.allclose(layers.to_numpy(), 100.0):
            bad.append(f"{pid}: area shares of a depth range do not sum to 100")
        tops = layers.index.get_level_values(0).to_numpy()
        bottoms = layers.index.get_level_values(1).to_numpy()
        if tops[0] != 0 or not np.array_equal(tops[1:], bottoms[:-1]):
            bad.append(f"{pid}: horizons not contiguous from 0 cm")
        if len({(a, b) for a, b in zip(g["top_cm"], g["bottom_cm"], strict=True)}) != len(layers):
            bad.append(f"{pid}: inconsistent depth ranges")
        if bad:
            break
    if bad:
        raise ValueError("invalid synthetic horizons: " + "; ".join(bad[:5]))
