"""Inventory report: tables against the zone totals, figures, self-contained HTML, atomic rebuilds.

The output folder used here is built from a synthetic world whose numbers are known by
hand: an EASE-Grid 2.0 North grid of 5 km cells (25 km² each, the projection is
equal-area), four permafrost zones in vertical bands of 20, 12, 8 and 8 columns by 40
rows, and in every zone a density equal to the seed's Table 1 value. Zone totals come
from the real :func:`mapping.zonal.zone_totals`; everything else of the folder (maps,
CV files, manifest) is written with the project's own writers.
"""

from __future__ import annotations

import base64
import io as _io
import re
import shutil
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from PIL import Image

from mapping import io
from mapping.exceptions import InputError
from mapping.grid import Grid
from mapping.report import build_report, inventory_tables, read_run
from mapping.report.charts import plot_observed_vs_predicted
from mapping.report.figures import ZoneOutlines, read_view
from mapping.report.maps import graticule, outline_path, polygon_lines, zone_edges
from mapping.report.tables import display_tables
from mapping.uncertainty import summarise_draws
from mapping.validation import metrics_table
from mapping.zonal import zone_totals

SEED = pd.read_csv(Path(__file__).parent / "data" / "seed_permafrost_soc_tables.csv").set_index(
    "zone"
)
ZONES = ["continuous", "discontinuous", "sporadic", "isolated"]
INTERVALS = ["0-30", "0-100", "0-200", "0-300"]
COUNTS = [3422, 2290, 1296, 720]  # the seed's profiles per interval
WIDTHS = [20, 12, 8, 8]  # columns per zone band
NY = 40
CELL_KM2 = 25.0
# y = 0 runs through the middle of the frame: there the 90°E meridian of EASE-Grid North lies.
GRID = Grid.from_bounds((1.0e6, -1.0e5, 1.0e6 + 5000 * sum(WIDTHS), 1.0e5), 5000, "EPSG:6931")


def _codes() -> np.ndarray:
    return np.repeat(np.repeat(np.arange(1, 5), WIDTHS)[None, :], NY, axis=0)


def _density(iv: str) -> np.ndarray:
    col = f"density_{iv.replace('-', '_')}"
    values = np.array([SEED.loc[z, col] for z in ZONES])
    return values[_codes() - 1].astype("float64")


def _hand_storage_pg(zone: str, iv: str) -> float:
    cells = NY * WIDTHS[ZONES.index(zone)]
    return SEED.loc[zone, f"density_{iv.replace('-', '_')}"] * cells * CELL_KM2 * 1e6 / 1e12


def _make_folder(out: Path) -> None:
    codes = _codes()
    names = dict(enumerate(ZONES, start=1))
    zone_da = GRID.wrap(codes.astype("int32"))
    io.write_cog(zone_da, out / "inputs" / "zones.tif", nodata=0)
    boxes = []
    for k, w in enumerate(WIDTHS):
        c0 = sum(WIDTHS[:k])
        x0, y1 = GRID.transform @ (c0, 0)
        x1, y0 = GRID.transform @ (c0 + w, NY)
        boxes.append(shapely.box(x0, y0, x1, y1))
    gdf = gpd.GeoDataFrame({"zone_code": [1, 2, 3, 4]}, geometry=boxes, crs=GRID.crs)
    gdf.to_file(out / "inputs" / "zones.gpkg")

    densities = {}
    for iv in INTERVALS:
        mean = _density(iv)
        densities[iv] = GRID.wrap(mean.astype("float32").astype("float64"))
        top, bottom = iv.split("-")
        for stat, arr in (("mean", mean), ("lower", 0.8 * mean), ("upper", 1.25 * mean)):
            tags = {"units": "kg C m-2", "statistic": stat, "interval": iv}
            io.write_cog(
                GRID.wrap(arr.astype("float32")),
                out / "maps" / f"soc_{top}_{bottom}cm_{stat}.tif",
                tags=tags,
            )
    table = zone_totals(densities, GRID.wrap(codes), GRID, names=names)
    io.write_table(table, out / "zones" / "storage.csv")

    counts = pd.DataFrame(
        {"top_cm": 0.0, "bottom_cm": [float(iv.split("-")[1]) for iv in INTERVALS],
         "interval": INTERVALS, "n_profiles": COUNTS}
    )  # fmt: skip
    io.write_table(counts, out / "stocks" / "interval_counts.csv")

    rng = np.random.default_rng(1)
    summary = []
    for iv, n in zip(INTERVALS, COUNTS, strict=True):
        obs = rng.gamma(4.0, 5.0, 60)
        pred = obs + rng.normal(0, 3, 60)
        pr = pd.DataFrame({"row": range(60), "fold": np.arange(60) % 5, "observed": obs,
                           "predicted": pred, "lower": pred - 6, "upper": pred + 6})  # fmt: skip
        folder = out / "models" / iv
        m = metrics_table(obs, pred, pr["lower"], pr["upper"])
        pr["weight"] = np.where(obs > np.median(obs), 2.0, 0.5)  # weighted to the area
        io.write_table(pr, folder / "cv_predictions.csv")
        ma = metrics_table(obs, pred, pr["lower"], pr["upper"], weights=pr["weight"])
        area = {"n_eff": ma["n_eff"], **{f"{k}_area": v for k, v in ma.items() if k[0] != "n"}}
        io.write_table(pd.DataFrame([{"splitter": "KNNDM", "lower_q": 0.05, "upper_q": 0.95, **m,
                                      **area}]), folder / "cv_metrics.csv")  # fmt: skip
        if iv != "0-300":  # the last one's plot is redrawn by the report from cv_predictions.csv
            plot_observed_vs_predicted(
                obs, pred, pr["lower"], pr["upper"], path=folder / "observed_vs_predicted.png"
            )
        summary.append({"interval": iv, "n": n, **m})
    io.write_table(pd.DataFrame(summary), out / "models" / "cv_summary.csv")

    manifest = {
        "run_id": "abc123def456",
        "created": "2026-01-01T00:00:00+00:00",
        "seed": 42,
        "config": {
            "seed": 42,
            "zones": {"path": str(out / "inputs" / "zones.gpkg"), "field": "zone_code"},
            "prediction": {"quantiles": [0.05, 0.95]},
            "uncertainty": {"n_realizations": 100, "range": [5.0, 95.0]},
        },
        "inputs": {"/data/profiles.csv": "sha256:00ff"},
        "versions": {"python": "3.11", "numpy": np.__version__},
        "stages": {
            "stocks": {
                "status": "complete",
                "started": "2026-01-01T00:00:01+00:00",
                "seconds": 1.5,
            },
            "zones": {
                "status": "complete",
                "started": "2026-01-01T00:09:00+00:00",
                "seconds": 3.25,
            },
        },
    }
    io.write_json(manifest, out / "manifest.json")


def _add_summary(out: Path) -> pd.DataFrame:
    s = io.read_table(out / "zones" / "storage.csv")
    mc = pd.DataFrame({
        "zone": s["zone"], "interval": s["interval"],
        "storage_median_pg": s["storage_pg"], "storage_lower_pg": 0.9 * s["storage_pg"],
        "storage_upper_pg": 1.1 * s["storage_pg"],
        "independent_lower_pg": 0.99 * s["storage_pg"], "independent_upper_pg": 1.01 * s["storage_pg"],
    })  # fmt: skip
    io.write_table(mc, out / "zones" / "storage_summary.csv")
    return mc


@pytest.fixture(scope="module")
def built_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run") / "out"
    _make_folder(out)
    return out


def _copy(src: Path, dest: Path) -> Path:
    """Copy an output folder; its manifest then names the copy's own zone file."""
    shutil.copytree(src, dest)
    m = io.read_json(dest / "manifest.json")
    m["config"]["zones"]["path"] = str(dest / "inputs" / "zones.gpkg")
    io.write_json(m, dest / "manifest.json")
    return dest


def _keep_maps(out: Path, intervals: list[str]) -> None:
    """Drop the maps of other intervals (fewer figures: faster tests)."""
    keep = {f"soc_{iv.replace('-', '_')}cm_" for iv in intervals}
    for p in (out / "maps").iterdir():
        if not any(p.name.startswith(k) for k in keep):
            p.unlink()


@pytest.fixture
def folder(built_folder: Path, tmp_path: Path) -> Path:
    return _copy(built_folder, tmp_path / "out")


@pytest.fixture(scope="module")
def report(
    built_folder: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Path]]:
    """A full report (with the Monte Carlo summary), built once for the read-only tests."""
    out = _copy(built_folder, tmp_path_factory.mktemp("full") / "out")
    _add_summary(out)
    return out, build_report(out)


# --------------------------------------------------------------------------- tables
def test_tables_equal_the_storage_csv_and_hand_numbers(
    report: tuple[Path, dict[str, Path]],
) -> None:
    out, files = report
    storage = io.read_table(out / "zones" / "storage.csv").replace({"zone": {"all zones": "total"}})
    t1 = io.read_table(files["tables/table1_mean_density.csv"]).set_index("zone")
    t2 = io.read_table(files["tables/table2_storage.csv"]).set_index("zone")
    assert list(t2.index) == [*ZONES, "total"]
    for row in storage.itertuples():
        assert t2.loc[row.zone, row.interval] == pytest.approx(row.storage_pg, rel=1e-12)
        assert t1.loc[row.zone, row.interval] == pytest.approx(row.mean_density_kg_m2, rel=1e-12)
        assert t2.loc[row.zone, "area_km2"] == pytest.approx(row.area_km2, rel=1e-12)
    for zone in ZONES:
        assert t2.loc[zone, "area_km2"] == NY * WIDTHS[ZONES.index(zone)] * CELL_KM2
        for iv in INTERVALS:
            seed = SEED.loc[zone, f"density_{iv.replace('-', '_')}"]
            assert t1.loc[zone, iv] == pytest.approx(seed, rel=1e-6)  # float32 maps
            assert t2.loc[zone, iv] == pytest.approx(_hand_storage_pg(zone, iv), rel=1e-6)
    # continuous, 0-300 cm: 48.73 kg m-2 x 800 cells x 25 km2 = 0.9746 Pg
    assert t2.loc["continuous", "0-300"] == pytest.approx(0.9746, rel=1e-6)
    total = sum(_hand_storage_pg(z, "0-300") for z in ZONES)
    assert t2.loc["total", "0-300"] == pytest.approx(total, rel=1e-6)
    assert t1.loc["total", "0-300"] == pytest.approx(
        total * 1e12 / (NY * sum(WIDTHS) * CELL_KM2 * 1e6), rel=1e-6
    )
    counts = io.read_table(files["tables/profile_counts.csv"])
    assert counts["n_profiles"].tolist() == COUNTS


def test_table2_is_table1_times_area(report: tuple[Path, dict[str, Path]]) -> None:
    _, files = report
    t1 = io.read_table(files["tables/table1_mean_density.csv"]).set_index("zone")
    t2 = io.read_table(files["tables/table2_storage.csv"]).set_index("zone")
    for iv in INTERVALS:
        np.testing.assert_allclose(t2[iv], t1[iv] * t1["area_km2"] * 1e6 / 1e12, rtol=1e-9)


def test_rendered_tables_show_seed_layout_and_ranges(report: tuple[Path, dict[str, Path]]) -> None:
    _, files = report
    md = files["report.md"].read_text()
    page = files["index.html"].read_text()
    # Table 1: the seed's densities and areas in 10^6 km2 (0.020 = 800 cells x 25 km2)
    assert re.search(r"\| continuous \| 0\.020 \| 9\.87 \| 26\.23 \| 40\.60 \| 48\.73 \|", md)
    assert re.search(r"\| profiles \(n\) \|  \| 3,422 \| 2,290 \| 1,296 \| 720 \|", md)
    # Table 2: median (lower-upper) of the Monte Carlo summary, 3 decimals for values < 1 Pg
    v = _hand_storage_pg("continuous", "0-300")
    cell = f"{v:.3f} ({0.9 * v:.3f}–{1.1 * v:.3f})"
    assert cell == "0.975 (0.877–1.072)"
    assert cell in md and cell in page
    assert "5–95 % range" in md
    # the independent-pixel range appears for comparison
    assert f"{0.99 * v:.3f}–{1.01 * v:.3f}" in md
    # JSON for machines carries the same numbers
    doc = io.read_json(files["tables/report.json"])
    row = next(r for r in doc["table2_storage"] if r["zone"] == "continuous")
    assert row["0-300_lower"] == pytest.approx(0.9 * v, rel=1e-6)
    assert doc["storage_unit"] == "Pg" and doc["range_percent"] == [5.0, 95.0]


def test_seed_tables_from_a_storage_table_alone() -> None:
    rows = []
    for zone in [*ZONES, "all zones"]:
        key = "total" if zone == "all zones" else zone
        for iv in INTERVALS:
            d = SEED.loc[key, f"density_{iv.replace('-', '_')}"]
            a = SEED.loc[key, "area_km2"]
            rows.append({"zone": zone, "interval": iv, "area_km2": a, "area_nodata_km2": 0.0,
                         "mean_density_kg_m2": d, "storage_pg": d * a * 1e6 / 1e12})  # fmt: skip
    storage = pd.DataFrame(rows).sample(frac=1.0, random_state=3)  # order must not matter
    t = inventory_tables(storage)
    assert t.intervals == INTERVALS
    assert list(t.table2["zone"]) == [*ZONES, "total"]
    t1, t2, t3 = display_tables(t, "5–95 % range")
    assert t3 is None
    cont = next(r for r in t2.rows if r[0] == "continuous")
    assert cont == ["continuous", "10.70", "105.6", "280.7", "434.4", "521.4"]  # seed: 521.30
    assert next(r for r in t1.rows if r[0] == "isolated")[2:] == [
        "10.33",
        "24.95",
        "36.93",
        "46.52",
    ]


def test_nodata_area_is_footnoted() -> None:
    s = pd.DataFrame({"zone": ["a", "all zones"], "interval": ["0-30", "0-30"],
                      "area_km2": [100.0, 100.0], "area_nodata_km2": [25.0, 25.0],
                      "mean_density_kg_m2": [10.0, 10.0], "storage_pg": [7.5e-7, 7.5e-7]})  # fmt: skip
    t1, _, _ = display_tables(inventory_tables(s), "range")
    assert "25.0 % of a zone's area has no prediction" in t1.foot


def test_summary_columns_in_other_spellings_and_units() -> None:
    s = pd.DataFrame({"zone": ["a", "all zones"], "interval": ["0-30", "0-30"], "area_km2": [1e6, 1e6],
                      "area_nodata_km2": [0.0, 0.0], "mean_density_kg_m2": [10.0, 10.0],
                      "storage_pg": [10.0, 10.0]})  # fmt: skip
    mc = pd.DataFrame({"zone": ["a", "total"], "top_cm": [0, 0], "bottom_cm": [30, 30],
                       "storage_p50_tg": [9900.0, 9900.0], "storage_p05_tg": [8000.0, 8000.0],
                       "storage_p95_tg": [12000.0, 12000.0]})  # fmt: skip
    t = inventory_tables(s, mc)
    assert t.has_range and not t.has_independent
    assert t.long["lower"].tolist() == [8.0, 8.0]
    assert t.long["median"].tolist() == [9.9, 9.9]
    # ranges carried by the zone-totals table itself are used when there is no summary
    with_range = s.assign(storage_lower_pg=[8.0, 8.0], storage_upper_pg=[12.5, 12.5])
    t = inventory_tables(with_range)
    assert t.has_range and t.long["upper"].tolist() == [12.5, 12.5]
    assert t.table2.set_index("zone").loc["a", "0-30_lower"] == 8.0
    notes: list[str] = []
    bad = pd.DataFrame({"zone": ["a"], "interval": ["0-30"], "mystery": [1.0]})
    assert not inventory_tables(s, bad, notes=notes).has_range
    assert any("no recognisable lower/upper" in n for n in notes)


# --------------------------------------------------------------------------- HTML and figures
def test_html_is_self_contained_and_images_decode(report: tuple[Path, dict[str, Path]]) -> None:
    out, files = report
    page = files["index.html"].read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:|//|file:)""", page, re.I)
    assert "<link" not in page and "@import" not in page and "url(" not in page
    assert "<script" not in page
    srcs = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    # 4 intervals x (density + width) + storage chart + 4 observed-vs-predicted plots
    assert len(srcs) == 13
    pngs = sorted(p for k, p in files.items() if k.startswith("figures/") and k.endswith(".png"))
    assert len(pngs) == 13
    # every figure also as PDF (vector), beside its PNG
    pdfs = sorted(p for k, p in files.items() if k.startswith("figures/") and k.endswith(".pdf"))
    assert [p.with_suffix(".png").name for p in pdfs] == [p.name for p in pngs]
    assert all(p.read_bytes().startswith(b"%PDF-") for p in pdfs)
    embedded = {base64.b64decode(s.split(",", 1)[1]) for s in srcs}
    for p in pngs:
        data = p.read_bytes()
        assert data in embedded
        im = Image.open(_io.BytesIO(data))
        im.load()
        assert im.format == "PNG" and min(im.size) > 200
        assert np.asarray(im.convert("L")).std() > 5  # not a blank canvas
    # the plot missing from models/0-300 was redrawn from its CV predictions
    assert "figures/observed_vs_predicted_0-300.png" in files
    assert not (out / "models" / "0-300" / "observed_vs_predicted.png").exists()
    for key, p in files.items():
        assert p == out / "report" / key and p.exists()


def test_cv_table_and_manifest_are_reported(report: tuple[Path, dict[str, Path]]) -> None:
    out, files = report
    cv = io.read_table(files["tables/cv_metrics.csv"]).set_index("interval")
    for iv in INTERVALS:
        pred = io.read_table(out / "models" / iv / "cv_predictions.csv")
        m = metrics_table(pred["observed"], pred["predicted"], pred["lower"], pred["upper"])
        assert cv.loc[iv, "r2"] == pytest.approx(m["r2"])
        assert cv.loc[iv, "picp"] == pytest.approx(m["picp"])
    md = files["report.md"].read_text()
    m = metrics_table(*(io.read_table(out / "models" / "0-30" / "cv_predictions.csv")[c]
                        for c in ("observed", "predicted", "lower", "upper")))  # fmt: skip
    assert f"| 0–30 cm | 60 | KNNDM | {m['r2']:.2f} | {m['rmse']:.2f} |" in md
    # the table weighted to the mapped area, from the weights of the CV predictions
    p = io.read_table(out / "models" / "0-30" / "cv_predictions.csv")
    w = metrics_table(p["observed"], p["predicted"], p["lower"], p["upper"], weights=p["weight"])
    assert w["rmse"] != pytest.approx(m["rmse"])
    row = f"| 0–30 cm | {w['n_eff']:.0f} | {w['r2']:.2f} | {w['rmse']:.2f} | {w['mae']:.2f} |"
    assert row in md and "weighted to the mapped area" in md
    assert "- **run_id**: `abc123def456`" in md and "- **seed**: `42`" in md
    assert "sha256:00ff" in md and "| stocks | complete |" in md
    page = files["index.html"].read_text()
    assert page.index("<td>stocks</td>") < page.index("<td>zones</td>")  # stages in run order


def test_maps_are_read_decimated(tmp_path: Path) -> None:
    big = Grid.from_bounds((0.0, 0.0, 2400 * 1000.0, 1300 * 1000.0), 1000.0, "EPSG:6931")
    rows = np.arange(1300, dtype="float32")[:, None] * np.ones((1, 2400), dtype="float32")
    path = io.write_cog(big.wrap(rows), tmp_path / "soc_0_30cm_mean.tif")
    view = read_view(path)
    assert max(view.shape) <= 1000 and view.decimation > 2
    # the decimated view covers the same extent (bounds from its own transform)
    ny, nx = view.shape
    assert view.transform @ (nx, ny) == pytest.approx(big.transform @ (2400, 1300))
    # rows keep their values (average overviews of a row-constant field)
    col = view.data[:, nx // 2]
    assert np.all(np.diff(col) > 0)
    assert col[0] == pytest.approx(view.decimation / 2, abs=view.decimation)


def test_zone_edges_by_hand() -> None:
    codes = np.array([[1, 1, 2], [1, 1, 2], [3, 3, 3]])
    segs = {tuple(map(tuple, s)) for s in zone_edges(codes).tolist()}
    assert segs == {
        ((2.0, 0.0), (2.0, 1.0)), ((2.0, 1.0), (2.0, 2.0)),  # 1 | 2
        ((0.0, 2.0), (1.0, 2.0)), ((1.0, 2.0), (2.0, 2.0)),  # 1 over 3
        ((2.0, 2.0), (3.0, 2.0)),  # 2 over 3
    }  # fmt: skip
    valid = np.array([[True, True, True], [True, True, True], [False, False, False]])
    edges = zone_edges(codes, valid)  # the bottom row is "no zone": edges to it stay
    assert len(edges) == 5


def test_outlines_from_raster_and_polygons_fall_on_the_zone_boundaries(built_folder: Path) -> None:
    view = read_view(built_folder / "maps" / "soc_0_30cm_mean.tif")
    edges, _ = ZoneOutlines(built_folder / "inputs" / "zones.tif", None).for_view(view)
    xs = sorted({s[0][0] for s in edges if s[0][0] == s[1][0]})  # vertical segments
    assert xs == [20.0, 32.0, 40.0]  # boundaries between the bands; the frame edge is not one
    # polygons stored in EPSG:4326 (densified first, so the round trip is exact enough)
    gdf = gpd.read_file(built_folder / "inputs" / "zones.gpkg")
    geo = gdf.set_geometry(gdf.geometry.segmentize(500.0)).to_crs("EPSG:4326")
    lines = polygon_lines(list(geo.to_crs(GRID.crs).geometry), GRID.transform, tolerance=0.0)
    ring = lines[1]  # the discontinuous band: columns 20..32
    assert ring[:, 0].min() == pytest.approx(20.0, abs=1e-3)
    assert ring[:, 0].max() == pytest.approx(32.0, abs=1e-3)
    assert ring[:, 1].min() == pytest.approx(0.0, abs=1e-3) and ring[:, 1].max() == pytest.approx(
        NY, abs=1e-3
    )


def test_outline_path_merges_cell_edges_into_the_same_lines() -> None:
    from matplotlib.path import Path as MplPath

    rng = np.random.default_rng(0)
    codes = rng.integers(1, 4, size=(30, 40)) * (rng.random((30, 40)) < 0.8)
    edges = zone_edges(codes, codes > 0)
    path = outline_path(edges, [np.array([[0.5, 0.5], [3.0, 4.0], [6.0, 0.0]])])
    moves = np.flatnonzero(path.codes == MplPath.MOVETO)
    assert len(moves) < len(edges) + 1  # runs of edges are one segment each
    # every unit edge lies on exactly one merged segment, and the merged ones on no more
    unit = set()
    verts = path.vertices
    ends = np.r_[moves[1:], len(verts)]
    for a, b in zip(moves[:-1], ends[:-1], strict=True):  # the last subpath is the polyline
        (x0, y0), (x1, y1) = verts[a], verts[b - 1]
        assert b - a == 2 and (x0 == x1 or y0 == y1)
        if x0 == x1:
            unit |= {((x0, y), (x0, y + 1)) for y in np.arange(min(y0, y1), max(y0, y1))}
        else:
            unit |= {((x, y0), (x + 1, y0)) for x in np.arange(min(x0, x1), max(x0, x1))}
    expected = {tuple(map(tuple, sorted(map(tuple, e)))) for e in edges}
    assert unit == expected
    np.testing.assert_array_equal(verts[moves[-1] :], [[0.5, 0.5], [3.0, 4.0], [6.0, 0.0]])
    assert outline_path(np.zeros((0, 2, 2)), []) is None


def test_graticule_on_ease_grid_north() -> None:
    lines = graticule(GRID.crs, GRID.transform, GRID.shape)
    mer = {gl.value: gl for gl in lines if gl.kind == "meridian"}
    # EASE-Grid 2.0 North: x = r sin(lon), y = -r cos(lon); the 90°E meridian is the line y = 0,
    # i.e. row 20 of this frame -- it runs left to right, so north is to the left, not up.
    assert 90.0 in mer and mer[90.0].label == "90°E"
    rows = mer[90.0].rows[np.isfinite(mer[90.0].rows)]
    np.testing.assert_allclose(rows, 20.0, atol=1e-6)
    cols = mer[90.0].cols
    assert cols[0] > cols[-1]  # sampled south to north: columns decrease towards the pole
    # parallels are circles about the pole (pixel (-200, 20) of this frame)
    par = [gl for gl in lines if gl.kind == "parallel"]
    assert par and all(gl.label.endswith("°N") for gl in par)
    for gl in par:
        r = np.hypot(gl.cols + 200.0, gl.rows - 20.0)
        np.testing.assert_allclose(r, r[0], rtol=1e-9)
    # a frame around the pole gets every meridian
    polar = Grid.from_bounds((-2e6, -2e6, 2e6, 2e6), 20_000, "EPSG:6931")
    mer = [gl for gl in graticule(polar.crs, polar.transform, polar.shape) if gl.kind == "meridian"]
    step = 360.0 / len(mer)
    assert step in (30.0, 45.0, 60.0) and len({gl.label for gl in mer}) == len(mer)


# --------------------------------------------------------------------------- robustness
def test_failed_rebuild_leaves_the_previous_report(folder: Path) -> None:
    _keep_maps(folder, ["0-100"])
    build_report(folder)
    before = io.file_checksum(folder / "report")
    cog = folder / "maps" / "soc_0_100cm_upper.tif"
    data = cog.read_bytes()
    cog.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"soc_0_100cm_upper\.tif"):
        build_report(folder)
    assert io.file_checksum(folder / "report") == before
    assert sorted(p.name for p in folder.iterdir()) == [
        "inputs",
        "manifest.json",
        "maps",
        "models",
        "report",
        "stocks",
        "zones",
    ]


def test_rebuild_replaces_the_report(folder: Path) -> None:
    _keep_maps(folder, [])
    build_report(folder)
    (folder / "report" / "stale.txt").write_text("from an older report")
    _add_summary(folder)
    files = build_report(folder, title="Second build")
    assert not (folder / "report" / "stale.txt").exists()
    assert "<title>Second build</title>" in files["index.html"].read_text()
    assert "storage_summary" not in " ".join(io.read_json(files["tables/report.json"])["notes"])


def test_tables_of_a_stage_that_did_not_complete_are_noted(folder: Path) -> None:
    # the uncertainty stage failed on a rerun: its previous summary is still on disk
    _keep_maps(folder, [])
    _add_summary(folder)
    m = io.read_json(folder / "manifest.json")
    m["stages"]["uncertainty"] = {"status": "failed", "started": "2026-01-01T00:10:00+00:00"}
    io.write_json(m, folder / "manifest.json")
    notes = read_run(folder).notes
    assert (
        "The uncertainty stage is 'failed' in the manifest: the Monte Carlo ranges come from "
        "an earlier run and may not match the rest of this report." in notes
    )
    assert not any(n.startswith("The zones stage") for n in notes)  # complete: no note
    m["stages"]["uncertainty"]["status"] = "complete"
    io.write_json(m, folder / "manifest.json")
    assert not any("in the manifest" in n for n in read_run(folder).notes)


def test_missing_optional_inputs(folder: Path) -> None:
    for rel in ("models", "maps"):
        shutil.rmtree(folder / rel)
    (folder / "manifest.json").unlink()
    files = build_report(folder)
    md = files["report.md"].read_text()
    assert "No Monte Carlo summary" in md and "No run manifest" in md
    assert "No cross-validation results" in md and "No prediction maps" in md
    assert "| continuous | 0.020 | 9.87 |" in md
    assert "0.975 (" not in md  # no ranges without the summary
    assert sorted(k for k in files if k.startswith("figures/")) == [
        "figures/storage_by_zone.pdf",
        "figures/storage_by_zone.png",
    ]
    page = files["index.html"].read_text()
    assert len(re.findall(r"<img ", page)) == 1


def test_maps_without_zone_totals_or_zones(folder: Path) -> None:
    shutil.rmtree(folder / "zones")
    (folder / "inputs" / "zones.gpkg").unlink()
    _keep_maps(folder, ["0-30"])
    files = build_report(folder)
    md = files["report.md"].read_text()
    assert "No zone totals" in md and "no zone outlines" in md
    assert "figures/density_0-30.png" in files and "tables/table2_storage.csv" not in files


def test_explicit_zone_raster_and_bad_paths(folder: Path, tmp_path: Path) -> None:
    _keep_maps(folder, ["0-300"])
    files = build_report(folder, zones_path=folder / "inputs" / "zones.tif")
    assert "figures/width_0-300.png" in files and "figures/density_0-30.png" not in files
    with pytest.raises(InputError, match=r"nope\.gpkg: file not found"):
        build_report(folder, zones_path=tmp_path / "nope.gpkg")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="not a socmap output folder"):
        build_report(empty)
    with pytest.raises(InputError, match="output folder not found"):
        build_report(tmp_path / "missing")
    assert not (empty / "report").exists()


def test_summary_from_the_monte_carlo_stage(folder: Path) -> None:
    """The summary as :func:`mapping.uncertainty.summarise_draws` writes it, 2.5-97.5 %."""
    _keep_maps(folder, [])
    storage = io.read_table(folder / "zones" / "storage.csv")
    draws = pd.concat(
        [storage.assign(realization=r, storage_pg=storage["storage_pg"] * f)
         for r, f in enumerate(np.linspace(0.8, 1.2, 41))],
        ignore_index=True,
    )  # fmt: skip
    summary = summarise_draws(draws, ranges=(2.5, 97.5))
    io.write_table(summary, folder / "zones" / "storage_summary.csv")
    files = build_report(folder)
    t2 = io.read_table(files["tables/table2_storage.csv"]).set_index("zone")
    v = storage.set_index(["zone", "interval"]).loc[("isolated", "0-100"), "storage_pg"]
    assert v == pytest.approx(_hand_storage_pg("isolated", "0-100"), rel=1e-6)
    # percentiles of 41 evenly spaced factors 0.80..1.20: 2.5 % -> 0.81, 97.5 % -> 1.19
    assert t2.loc["isolated", "0-100_median"] == pytest.approx(v, rel=1e-9)
    assert t2.loc["isolated", "0-100_lower"] == pytest.approx(0.81 * v, rel=1e-9)
    assert t2.loc["isolated", "0-100_upper"] == pytest.approx(1.19 * v, rel=1e-9)
    md = files["report.md"].read_text()
    assert "2.5–97.5 % range" in md and "No Monte Carlo summary" not in md
    assert io.read_json(files["tables/report.json"])["range_percent"] == [2.5, 97.5]


def test_storage_chart_draws_a_range_the_bar_lies_outside() -> None:
    """A per-interval map's total can fall outside its Monte Carlo range (the realizations
    are ordered by depth, the maps need not be): the chart draws the range as it is."""
    from mapping.report.charts import storage_chart

    table = pd.DataFrame(
        {
            "zone": ["isolated", "isolated", "all zones"],
            "interval": ["0-200", "0-300", "0-300"],
            "value": [9.59, 8.84, 83.05],
            "lower": [7.81, 8.85, 74.46],  # the 0-300 bar lies below its range
            "upper": [12.31, 13.40, 103.66],
            "ind_lower": [np.nan] * 3,
            "ind_upper": [np.nan] * 3,
            "total": [False, False, True],
        }
    )
    fig = storage_chart(table, range_label="5-95 % range")
    spans = set()
    for ax in fig.axes:
        for coll in ax.collections:
            for seg in coll.get_segments():
                ys = np.asarray(seg)[:, 1]
                spans.add((round(float(ys.min()), 6), round(float(ys.max()), 6)))
    assert {(7.81, 12.31), (8.85, 13.4), (74.46, 103.66)} <= spans
