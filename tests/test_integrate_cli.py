"""``socmap integrate``: rasters and polygons in, zone totals table out; user errors exit 2."""

from __future__ import annotations

import json
import os
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import rasterio.features
import shapely
from affine import Affine
from conftest import run_cli_output

from mapping import zonal
from mapping.grid import Grid
from mapping.zones import load_zone_layout

GRID = Grid.from_bounds((-400_000, -2_000_000, 200_000, -1_600_000), 10_000, "EPSG:6931")  # 40x60
NAMES = "1=continuous,2=discontinuous,3=sporadic,4=isolated"


def _write_tif(
    path: Path,
    array: np.ndarray,
    grid: Grid,
    *,
    nodata: float | None = None,
    tags: dict[str, str] | None = None,
) -> Path:
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=grid.shape[1],
        height=grid.shape[0],
        count=1,
        dtype=array.dtype,
        crs=grid.crs.to_wkt(),
        transform=grid.transform,
        nodata=nodata,
    ) as dst:
        dst.write(array, 1)
        if tags:
            dst.update_tags(**tags)
    return path


def _zone_codes(shape: tuple[int, int]) -> np.ndarray:
    """Codes 1..4 in 5x5-cell blocks, 0 (nodata) in the first row."""
    rng = np.random.default_rng(7)
    coarse = rng.integers(1, 5, size=(shape[0] // 5 + 1, shape[1] // 5 + 1))
    z = np.kron(coarse, np.ones((5, 5), dtype="uint8"))[: shape[0], : shape[1]].astype("uint8")
    z[0, :] = 0
    return z


def _density(shape: tuple[int, int], scale: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(8)
    d = (rng.gamma(4.0, 5.0, size=shape) * scale).astype("float32")
    d[rng.random(shape) < 0.03] = -9999.0
    return d


def _expected(density: np.ndarray, codes: np.ndarray) -> dict[int, tuple[float, float, float]]:
    """Hand totals on the equal-area grid (100 km2 cells): area, nodata area, storage (Pg)."""
    out = {}
    for c in range(1, 5):
        inz = codes == c
        valid = inz & (density != -9999.0)
        storage = density[valid].astype("float64").sum() * 1e8 / 1e12
        out[c] = (inz.sum() * 100.0, (inz & ~valid).sum() * 100.0, storage)
    return out


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Path]:
    codes = _zone_codes(GRID.shape)
    d30 = _density(GRID.shape)
    paths = {
        "zones": _write_tif(tmp_path / "zones.tif", codes, GRID, nodata=0),
        # interval from the file name
        "d30": _write_tif(tmp_path / "soc_0_30cm_mean.tif", d30, GRID, nodata=-9999.0),
        # interval from the tags (the name says nothing), density in t C/ha
        "d100": _write_tif(
            tmp_path / "deep.tif",
            np.where(d30 == -9999.0, -9999.0, d30 * 25.0).astype("float32"),
            GRID,
            nodata=-9999.0,
            tags={"interval": "0-100", "units": "t C ha-1"},
        ),
    }
    return paths


def test_raster_zones_give_the_hand_totals_in_csv_and_json(
    world: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out" / "storage.csv"
    code, stdout, err = run_cli_output(
        [
            "integrate",
            world["d100"],
            world["d30"],
            "--zones",
            world["zones"],
            "--zone-names",
            NAMES,
            "-o",
            out,
        ],
        capsys,
    )
    assert code == 0, err
    assert "zone totals written" in stdout
    t = pd.read_csv(out)
    for col in (
        "zone",
        "zone_code",
        "top_cm",
        "bottom_cm",
        "area_km2",
        "area_nodata_km2",
        "mean_density_kg_m2",
        "storage_pg",
    ):
        assert col in t.columns
    assert list(t["interval"].unique()) == ["0-30", "0-100"]
    codes = _zone_codes(GRID.shape)
    with rasterio.open(world["d30"]) as src:
        d30 = src.read(1)
    hand = _expected(d30, codes)
    names = dict(item.split("=") for item in NAMES.split(","))
    for interval, factor in (("0-30", 1.0), ("0-100", 2.5)):  # 25 t/ha = 2.5 kg/m2
        rows = t[t["interval"] == interval].set_index("zone")
        for c, (area, nodata_area, storage) in hand.items():
            row = rows.loc[names[str(c)]]
            assert row["zone_code"] == c
            assert row["area_km2"] == pytest.approx(area, rel=1e-12)
            assert row["area_nodata_km2"] == pytest.approx(nodata_area, abs=1e-6)
            assert row["storage_pg"] == pytest.approx(storage * factor, rel=1e-6)
            assert row["mean_density_kg_m2"] == pytest.approx(
                storage * factor * 1e12 / ((area - nodata_area) * 1e6), rel=1e-6
            )
        total = rows.loc["all zones"]
        assert total["area_km2"] == pytest.approx(sum(h[0] for h in hand.values()))
        assert total["storage_pg"] == pytest.approx(sum(h[2] for h in hand.values()) * factor)
    assert os.listdir(out.parent) == ["storage.csv"]  # no temporary files left

    js = tmp_path / "storage.json"
    code, _, err = run_cli_output(
        ["integrate", world["d30"], "--zones", world["zones"], "--unit", "Tg", "-o", js], capsys
    )
    assert code == 0, err
    records = json.loads(js.read_text())
    assert [r["zone"] for r in records] == ["1", "2", "3", "4", "all zones"]
    assert records[0]["storage_tg"] == pytest.approx(hand[1][2] * 1e3, rel=1e-6)
    assert records[-1]["zone_code"] is None


def test_polygon_zones_match_raster_zones(
    world: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    codes = _zone_codes(GRID.shape)
    label = {1: "continuous", 2: "discontinuous", 3: "sporadic", 4: "isolated"}
    feats = [
        (shapely.geometry.shape(g), label[int(v)])
        for g, v in rasterio.features.shapes(codes, mask=codes > 0, transform=GRID.transform)
    ]
    gdf = gpd.GeoDataFrame(
        {"zone_name": [f[1] for f in feats]}, geometry=[f[0] for f in feats], crs=GRID.crs
    )
    # another polar CRS (conformal): the polygons are densified there and reprojected back
    gdf = gdf.set_geometry(gdf.segmentize(500.0)).to_crs("EPSG:3413")
    gdf.to_file(tmp_path / "zones.gpkg", layer="permafrost")
    gdf.to_parquet(tmp_path / "zones.parquet")
    gdf.to_file(tmp_path / "zones.shp")
    raster_csv = tmp_path / "raster.csv"
    code, _, err = run_cli_output(
        [
            "integrate",
            world["d30"],
            "--zones",
            world["zones"],
            "--zone-names",
            NAMES,
            "-o",
            raster_csv,
        ],
        capsys,
    )
    assert code == 0, err
    ref = pd.read_csv(raster_csv).set_index("zone")
    for src in ("zones.gpkg", "zones.parquet", "zones.shp"):
        out = tmp_path / f"{src}.csv"
        argv = [
            "integrate",
            world["d30"],
            "--zones",
            tmp_path / src,
            "--zone-field",
            "zone_name",
            "--zone-names",
            NAMES,
            "-o",
            out,
        ]
        code, _, err = run_cli_output(argv, capsys)
        assert code == 0, err
        got = pd.read_csv(out).set_index("zone")
        assert list(got.index) == list(ref.index)
        # polygons went through another projection and back: edges are no longer exactly on
        # cell edges, but the areas of equal-area-projected polygons are kept
        np.testing.assert_allclose(got["area_km2"], ref["area_km2"], rtol=2e-3)
        np.testing.assert_allclose(got["storage_pg"], ref["storage_pg"], rtol=5e-3)
        total_area = got.loc["all zones", "area_km2"]
        assert total_area == pytest.approx(ref.loc["all zones", "area_km2"], rel=1e-6)


def test_zone_raster_on_other_grids_is_aligned_by_pixel_shares_or_nearest(
    world: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    codes = _zone_codes(GRID.shape)
    # finer (2 km): each 10 km cell holds 25 fine cells, 14 of its own code and 11 of another,
    # the centre cell among them: each code gets its share of the cell (mode would give the
    # whole cell to the majority, nearest to the centre's code)
    fine_grid = Grid(
        GRID.crs, GRID.transform * Affine.scale(0.2), (GRID.shape[0] * 5, GRID.shape[1] * 5)
    )
    fine = np.kron(codes, np.ones((5, 5), dtype="uint8"))
    other = (fine % 4 + 1).astype("uint8")
    pattern = np.zeros((5, 5), dtype=bool)
    pattern.ravel()[[1, 3, 5, 7, 9, 11, 12, 13, 15, 17, 19]] = True  # 12: the centre
    mask = np.tile(pattern, GRID.shape) & (fine > 0)
    fine = np.where(mask, other, fine)
    _write_tif(tmp_path / "fine.tif", fine, fine_grid, nodata=0)
    # coarser (20 km), no nodata declared, background 0 named with --zone-nodata
    coarse_grid = Grid(
        GRID.crs, GRID.transform * Affine.scale(2), (GRID.shape[0] // 2, GRID.shape[1] // 2)
    )
    coarse = codes[::2, ::2].copy()
    _write_tif(tmp_path / "coarse.tif", coarse, coarse_grid)

    results = []
    for chunks in ("7", "1024"):
        out = tmp_path / f"fine{chunks}.csv"
        code, _, err = run_cli_output(
            [
                "integrate",
                world["d30"],
                "--zones",
                tmp_path / "fine.tif",
                "--chunks",
                chunks,
                "-o",
                out,
            ],
            capsys,
        )
        assert code == 0, err
        results.append(pd.read_csv(out))
    pd.testing.assert_frame_equal(results[0], results[1])
    t = results[0].set_index("zone")
    for c in range(1, 5):  # 4 km² a pixel (equal-area cells of 100 km²)
        assert t.loc[str(c), "area_km2"] == pytest.approx((fine == c).sum() * 4.0)
    assert t.loc["all zones", "area_km2"] == pytest.approx((fine > 0).sum() * 4.0)

    out = tmp_path / "coarse.csv"
    code, _, err = run_cli_output(
        [
            "integrate",
            world["d30"],
            "--zones",
            tmp_path / "coarse.tif",
            "--zone-nodata",
            "0",
            "-o",
            out,
        ],
        capsys,
    )
    assert code == 0, err
    t = pd.read_csv(out).set_index("zone")
    up = np.kron(coarse, np.ones((2, 2), dtype="uint8"))
    for c in range(1, 5):
        assert t.loc[str(c), "area_km2"] == pytest.approx((up == c).sum() * 100.0)
    assert "0" not in t.index


def test_interval_option_for_rasters_without_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dens = _write_tif(tmp_path / "density.tif", np.full(GRID.shape, 2.0, "float32"), GRID)
    zones = _write_tif(tmp_path / "z.tif", np.ones(GRID.shape, "uint8"), GRID)
    out = tmp_path / "t.csv"
    code, _, err = run_cli_output(["integrate", dens, "--zones", zones, "-o", out], capsys)
    assert code == 2 and "no depth interval" in err and "--interval" in err
    assert not out.exists()
    code, _, err = run_cli_output(
        ["integrate", dens, "--zones", zones, "--interval", "30-100", "-o", out], capsys
    )
    assert code == 0, err
    t = pd.read_csv(out)
    assert (t["top_cm"] == 30).all() and (t["bottom_cm"] == 100).all()
    assert t["storage_pg"].iloc[-1] == pytest.approx(2.0 * 2400 * 100e6 / 1e12)


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing_density", "nope_0_30cm.tif: file not found"),
        ("missing_zones", "absent.gpkg: file not found"),
        ("unknown_field", "no zone field 'kind'; fields are: zone_name"),
        ("raster_off_grid", "far.tif: no zone falls on the grid of"),
        ("polygons_off_grid", "far.gpkg: no zone falls on the grid of"),
        ("same_interval", "interval 0-30 already comes from"),
        ("bad_names", "--zone-names: 'continuous' is not CODE=NAME"),
        ("bad_suffix", "unsupported table format '.xlsx'"),
    ],
)
def test_user_errors_exit_2_with_one_line_and_no_output(
    case: str,
    expected: str,
    world: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "result.csv"
    zones, extra = world["zones"], []
    density = [world["d30"]]
    if case == "missing_density":
        density = [tmp_path / "nope_0_30cm.tif"]
    elif case == "missing_zones":
        zones = tmp_path / "absent.gpkg"
    elif case == "unknown_field":
        gdf = gpd.GeoDataFrame(
            {"zone_name": ["a"]}, geometry=[shapely.box(*GRID.bounds)], crs=GRID.crs
        )
        zones = tmp_path / "z.gpkg"
        gdf.to_file(zones)
        extra = ["--zone-field", "kind"]
    elif case == "raster_off_grid":
        far = Grid.from_bounds((1_000_000, 1_000_000, 1_100_000, 1_100_000), 10_000, "EPSG:6931")
        zones = _write_tif(tmp_path / "far.tif", np.ones(far.shape, "uint8"), far, nodata=0)
    elif case == "polygons_off_grid":
        gdf = gpd.GeoDataFrame({"z": [1]}, geometry=[shapely.box(1e6, 1e6, 2e6, 2e6)], crs=GRID.crs)
        zones = tmp_path / "far.gpkg"
        gdf.to_file(zones)
    elif case == "same_interval":
        density = [
            world["d30"],
            _write_tif(tmp_path / "soc_0_30cm_second.tif", _density(GRID.shape), GRID),
        ]
    elif case == "bad_names":
        extra = ["--zone-names", "continuous"]
    elif case == "bad_suffix":
        out = tmp_path / "result.xlsx"
    code, _, err = run_cli_output(
        ["integrate", *density, "--zones", zones, *extra, "-o", out], capsys
    )
    assert code == 2
    assert err.startswith("socmap: error: ")
    assert expected in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".result")]


def test_a_prepared_zone_layout_is_reused_and_gives_the_same_totals(
    world: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run prepares its zones once: integrate_files takes that layout for rasters on its
    grid instead of preparing the zone file again, with the same table."""
    names = {1: "continuous", 2: "discontinuous", 3: "sporadic", 4: "isolated"}
    dens = [world["d100"], world["d30"]]
    fresh = zonal.integrate_files(dens, world["zones"], zone_names=names, chunks=16)
    layout = load_zone_layout(world["zones"], GRID, names, chunks=16)

    def no_second_preparation(*args: object, **kwargs: object) -> None:
        raise AssertionError("zones prepared again")

    monkeypatch.setattr(zonal, "load_zone_layout", no_second_preparation)
    reused = zonal.integrate_files(dens, world["zones"], zone_names=names, chunks=16, layout=layout)
    pd.testing.assert_frame_equal(fresh, reused)
    assert len(fresh) > 4  # both intervals, every zone and the total


@pytest.mark.parametrize(
    ("name", "tags"),
    [("soc_0_30cm_upper.tif", None), ("ocs_0-30cm_Q0.95.tif", None), ("soc_0_30cm_std.tif", None),
     ("a_0_30cm.tif", {"STATISTIC": "95th percentile"}),
     ("b_0_30cm.tif", {"statistic": "standard deviation"})],
)  # fmt: skip
def test_quantile_and_spread_maps_are_refused_by_name_or_any_tag_spelling(
    name: str, tags: dict[str, str] | None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = _density(GRID.shape)
    zones = _write_tif(tmp_path / "zones.tif", _zone_codes(GRID.shape), GRID, nodata=0)
    path = _write_tif(tmp_path / name, d, GRID, nodata=-9999.0, tags=tags)
    out = tmp_path / "r.csv"
    code, _, err = run_cli_output(["integrate", path, "--zones", zones, "-o", out], capsys)
    assert code == 2 and "not a mean density" in err and not out.exists(), err
    code, _, _ = run_cli_output(
        ["integrate", path, "--zones", zones, "-o", out, "--allow-statistic"], capsys
    )
    assert code == 0 and out.exists()


def test_a_map_in_another_unit_is_read_by_any_units_key_or_warned_of(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    codes = _zone_codes(GRID.shape)
    d = _density(GRID.shape)
    grams = np.where(d == -9999.0, -9999.0, d * 1000.0).astype("float32")  # g C m-2
    zones = _write_tif(tmp_path / "zones.tif", codes, GRID, nodata=0)
    want = sum(v[2] for v in _expected(d, codes).values())
    # the unit as a dataset tag under "UNITS": read, the total in Pg as in kg m-2
    tagged = _write_tif(tmp_path / "g_0_30cm.tif", grams, GRID, nodata=-9999.0,
                        tags={"UNITS": "g m-2"})  # fmt: skip
    out = tmp_path / "tagged.csv"
    assert run_cli_output(["integrate", tagged, "--zones", zones, "-o", out], capsys)[0] == 0
    total = pd.read_csv(out).set_index("zone").loc["all zones", "storage_pg"]
    assert total == pytest.approx(want, rel=1e-5)
    # no unit: summed as kg m-2, 1000 times too much, and said so (20 kg m-2 mean over
    # 30 cm is 0.67 per cm, silent; 20,000 is 667, above 1)
    bare = _write_tif(tmp_path / "bare_0_30cm.tif", grams, GRID, nodata=-9999.0)
    code, out_text, err = run_cli_output(
        ["integrate", bare, "--zones", zones, "-o", tmp_path / "bare.csv"], capsys
    )
    assert code == 0
    assert f"{bare}: the zones' mean density is " in err + out_text
    assert "twice what pure peat holds (~0.5); is the map in another unit" in err + out_text
    # in kg m-2 (0.67 per cm): no word
    kg = _write_tif(tmp_path / "kg_0_30cm.tif", d, GRID, nodata=-9999.0)
    code, out_text, err = run_cli_output(
        ["integrate", kg, "--zones", zones, "-o", tmp_path / "kg.csv"], capsys
    )
    assert code == 0 and "mean density" not in err + out_text


def test_a_scale_factor_tag_without_the_band_scale_is_warned_of(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    codes = _zone_codes(GRID.shape)
    d = _density(GRID.shape)
    raw = np.where(d == -9999.0, -32768, np.round(d * 100)).astype("int16")  # hundredths
    zones = _write_tif(tmp_path / "zones.tif", codes, GRID, nodata=0)
    loose = _write_tif(tmp_path / "loose_0_30cm.tif", raw, GRID, nodata=-32768,
                       tags={"scale_factor": "0.01", "add_offset": "0"})  # fmt: skip
    code, _, err = run_cli_output(
        ["integrate", loose, "--zones", zones, "-o", tmp_path / "loose.csv"], capsys
    )
    assert code == 0
    assert f"{loose}: tagged scale_factor=0.01, add_offset=0, but the band has no scale" in err
    # the same raw values with GDAL's band scale: read scaled, the hand total, no word
    banded = _write_tif(tmp_path / "band_0_30cm.tif", raw, GRID, nodata=-32768)
    with rasterio.open(banded, "r+") as dst:
        dst.scales = (0.01,)
    out = tmp_path / "band.csv"
    code, _, err = run_cli_output(["integrate", banded, "--zones", zones, "-o", out], capsys)
    assert code == 0 and "scale_factor" not in err
    want = sum(v[2] for v in _expected(np.where(d == -9999.0, d, raw / 100.0), codes).values())
    got = pd.read_csv(out).set_index("zone").loc["all zones", "storage_pg"]
    assert got == pytest.approx(want, rel=1e-6)
