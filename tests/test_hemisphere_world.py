"""The hemisphere world generator at a tiny size: determinism, resumption, tiling
independence and a truth consistent with its covariates and zones."""

from __future__ import annotations

import hashlib
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio

from mapping.config import load_config
from mapping.synthetic import (
    STANDARD_DEPTHS,
    ZONE_NAMES,
    TruthParameters,
    scale_depth,
    trend_log_density,
    validate_horizons,
)

SCRIPT = Path(__file__).resolve().parents[1] / "workflows" / "make_hemisphere_world.py"
sys.path.insert(0, str(SCRIPT.parent))  # the generator's module sits beside its script
from hemisphere_world import COVARIATE_LAYERS, HemisphereSpec, generate  # noqa: E402

SPEC = HemisphereSpec(seed=11, cells=128, tile=48, n_profiles=60)  # 3 x 3 tiles, ragged edge


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1, masked=True)


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hemi") / "world"
    generate(out, SPEC)
    return out


def test_writes_a_ready_world(world_dir: Path) -> None:
    cfg = load_config(world_dir / "hemisphere.yaml")
    assert [c.name for c in cfg.covariates] == list(COVARIATE_LAYERS)
    assert cfg.model.log_transform and cfg.model.variogram.cutoff == 300000
    with rasterio.open(world_dir / "elevation.vrt") as src:
        assert src.crs.to_epsg() == 6931
        assert (src.width, src.height) == (128, 128)
        assert src.transform.a == pytest.approx(14e6 / 128)
        assert (src.bounds.left, src.bounds.top) == (-7e6, 7e6)
    prof = pd.read_csv(world_dir / "profiles.csv")
    sample = pd.read_csv(Path(__file__).resolve().parents[1] / "sample_rasters" / "profiles.csv")
    assert list(prof.columns) == list(sample.columns)
    validate_horizons(prof)
    bottoms = prof.groupby("profile_id")["bottom_cm"].max()
    assert 50 <= len(bottoms) <= 60
    # fewer profiles reach deeper
    reach = [(bottoms >= d).sum() for d in (30, 100, 200, 300)]
    assert reach == sorted(reach, reverse=True) and reach[-1] < reach[0]


def test_rerun_writes_nothing_and_resume_restores_bytes(world_dir: Path) -> None:
    before = _digests(world_dir)
    mtimes = {p: p.stat().st_mtime_ns for p in world_dir.rglob("*") if p.is_file()}
    generate(world_dir, SPEC)
    assert _digests(world_dir) == before
    assert {p: p.stat().st_mtime_ns for p in world_dir.rglob("*") if p.is_file()} == mtimes
    # a tile interrupted before its record, and a mosaic not yet written: both redone
    tile = next(iter(sorted((world_dir / "tiles" / "maat").glob("*.tif"))))
    tile.unlink()
    (world_dir / "tiles" / "done" / (tile.stem + ".json")).unlink()
    (world_dir / "profiles.csv").unlink()
    (world_dir / "maat.vrt").unlink()
    generate(world_dir, SPEC)
    assert _digests(world_dir) == before


def test_same_seed_same_bytes_other_spec_refused(world_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "again"
    r = subprocess.run(
        [sys.executable, str(SCRIPT), str(other), "--cells", "128", "--tile", "48",
         "--profiles", "60", "--seed", "11", "--quiet"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert _digests(other) == _digests(world_dir)
    r = subprocess.run(
        [sys.executable, str(SCRIPT), str(other), "--cells", "128", "--seed", "12", "--quiet"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert r.returncode == 2
    assert "spec" in r.stderr and "Traceback" not in r.stderr


def test_tiling_does_not_change_the_maps(world_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "tiled"
    generate(other, HemisphereSpec(seed=11, cells=128, tile=64, n_profiles=60))
    for name in [*COVARIATE_LAYERS, "permafrost_zones"]:
        a, b = _read(world_dir / f"{name}.vrt"), _read(other / f"{name}.vrt")
        assert np.array_equal(a.mask, b.mask) and np.array_equal(a.filled(0), b.filled(0)), name
    a, b = _read(world_dir / "truth/soc_0_100cm.vrt"), _read(other / "truth/soc_0_100cm.vrt")
    assert np.array_equal(a.filled(0), b.filled(0))


def test_truth_matches_covariates_and_zones(world_dir: Path) -> None:
    cov = {n: _read(world_dir / f"{n}.vrt") for n in COVARIATE_LAYERS}
    land = ~cov["elevation"].mask
    assert 0.2 < land.mean() < 0.5
    for n in COVARIATE_LAYERS:  # one land mask for every layer
        assert np.array_equal(~cov[n].mask, land), n
    zones = _read(world_dir / "permafrost_zones.vrt").filled(0)
    assert set(np.unique(zones[land])) == {0, 1, 2, 3, 4}
    assert not zones[~land].any()
    stock = {b: _read(world_dir / f"truth/soc_0_{b:g}cm.vrt") for _, b in STANDARD_DEPTHS}
    for s in stock.values():
        assert np.array_equal(~s.mask, land)
    # the depth profile: S(0, d) = rho0 k / 100 (1 - exp(-d / k)), k from maat and land cover
    vals = {n: cov[n].filled(0).astype(float)[land] for n in COVARIATE_LAYERS}
    vals["landcover"] = vals["landcover"].astype(int)
    k = scale_depth(vals)
    s30, s300 = stock[30].filled(np.nan)[land], stock[300].filled(np.nan)[land]
    ratio = (1 - np.exp(-30 / k)) / (1 - np.exp(-300 / k))
    np.testing.assert_allclose(s30 / s300, ratio, rtol=2e-5)
    # ln rho0 - trend(covariates) is the residual field: mean 0, variance psill
    rho0 = s300 * 100 / k / (1 - np.exp(-300 / k))
    eps = np.log(rho0) - trend_log_density(vals)
    psill = TruthParameters().residual.psill
    assert abs(eps.mean()) < 4 * math.sqrt(psill / 50)  # field nearly white at 109 km cells
    assert 0.6 * psill < eps.var() < 1.5 * psill
    # zone totals are the sums of the true stocks over the zone raster
    totals = pd.read_csv(world_dir / "truth" / "zone_totals.csv")
    area = (14e6 / 128) ** 2
    for code, name in ZONE_NAMES.items():
        row = totals[(totals.zone == name) & (totals.bottom_cm == 100)].iloc[0]
        sel = zones == code
        assert row.area_km2 == pytest.approx(sel.sum() * area / 1e6)
        want = float(stock[100].filled(0)[sel].astype(float).sum()) * area / 1e12
        assert row.storage_pg == pytest.approx(want, rel=1e-5)
    perm = totals[(totals.zone == "permafrost_region") & (totals.bottom_cm == 30)].iloc[0]
    assert perm.area_km2 == pytest.approx((zones > 0).sum() * area / 1e6)
