#!/usr/bin/env python
"""Write the bad-input corpus in ``tests/data/bad/``.

    python tests/data/make_bad_inputs.py [--out tests/data/bad]

The corpus is a tiny *valid* workflow (``base/``: a 40 x 48-cell synthetic world on
EASE-Grid 2.0 North at 10 km, three covariates, 60 profiles, permafrost zones as
polygons and raster, the true 0-30 cm density and ``run.yaml``) and, next to it, one
small file per way an input can be wrong. Every bad file is derived from a base file
and breaks exactly one rule, so the error it must raise is known (the table in
``README.md``; ``tests/test_bad_inputs.py`` runs every case through the CLI).

Everything comes from one seed through :mod:`mapping.synthetic`; the files are
byte-identical from run to run with the same library versions (GeoTIFFs carry no
timestamp; the GeoPackage's is fixed). ``SHA256SUMS`` lists the checksums.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio
from affine import Affine

from mapping.synthetic import CRS, make_world, sample_profiles, zone_polygons

SEED = 20260705
SHAPE = (40, 48)  # (ny, nx); not square, so a transposed array cannot pass
RESOLUTION = 10_000.0
N_PROFILES = 60
NODATA = -9999.0
BLOCK = 16  # tiled GeoTIFFs with several blocks, so truncation loses whole blocks
FIXED_TIMESTAMP = "2026-01-01T00:00:00Z"
COVARIATES = ("elevation", "maat", "landcover")
PROFILE_COLUMNS = [
    "profile_id",
    "lon",
    "lat",
    "top_cm",
    "bottom_cm",
    "soc_pct",
    "bulk_density_g_cm3",
    "coarse_fraction_pct",
    "horizon_area_pct",
]

# file -> (what is wrong, where the error must point). The test reads this table.
CASES: dict[str, tuple[str, str]] = {
    "horizons_overlapping.csv": (
        "horizon 2 of profile P003 starts 5 cm above horizon 1's bottom",
        "P003, lines 8, 9",
    ),
    "horizons_top_ge_bottom.csv": ("top_cm equals bottom_cm", "P001, line 4"),
    "horizons_negative_soc.csv": ("soc_pct is -1.2", "P002, line 5"),
    "horizons_soc_over_100.csv": ("soc_pct is 112", "P001, line 3"),
    "horizons_missing_column.csv": ("no bottom_cm column", "column bottom_cm"),
    "horizons_text_in_numeric.csv": ("soc_pct reads 'n.d.'", "P001, line 4"),
    "horizons_duplicate_rows.csv": ("one horizon written twice", "P001, lines 3, 4"),
    "horizons_empty.csv": ("zero bytes", "the file"),
    "horizons_header_only.csv": ("a header and no rows", "the file"),
    "horizons_latitude_out_of_range.csv": ("lat 95.5", "P001, line 2"),
    "horizons_outside_grid.csv": (
        "valid profiles, all in southern Africa",
        "the file and the grid",
    ),
    "covariate_truncated.tif": ("maat.tif cut to half its length", "the file"),
    "covariate_other_crs.tif": ("valid maat on UTM 33N (central Europe)", "the file, both CRSs"),
    "covariate_all_nodata.tif": ("every cell is nodata", "the file"),
    "zones_off_grid.gpkg": ("the zone polygons moved 6000 km away", "the file"),
    "zones_off_grid.tif": ("the zone raster moved 6000 km away", "the file"),
    "config_unknown_key.yaml": ("'n_tree' under model", "key model.n_tree"),
    "config_wrong_type.yaml": ("prediction.chunks is 'big'", "key prediction.chunks"),
    "config_missing_file.yaml": ("a covariate path that does not exist", "key covariates.1.path"),
    "config_python_tag.yaml": ("a !!python/object/apply tag", "the file, line 2"),
    "config_output_not_writable.yaml": ("output under a regular file", "key output"),
}


# --------------------------------------------------------------------------- writers
def write_tif(
    path: Path,
    data: np.ndarray,
    *,
    transform: Affine,
    crs: str = CRS,
    nodata: float | None = NODATA,
    tags: dict[str, str] | None = None,
) -> None:
    """A small tiled DEFLATE GeoTIFF (no timestamp, so the bytes are reproducible)."""
    with rasterio.open(
        path, "w", driver="GTiff", width=data.shape[1], height=data.shape[0], count=1,
        dtype=data.dtype.name, crs=crs, transform=transform, nodata=nodata, tiled=True,
        blockxsize=BLOCK, blockysize=BLOCK, compress="DEFLATE",
    ) as dst:  # fmt: skip
        dst.write(data, 1)
        if tags:
            dst.update_tags(**tags)


def write_csv(path: Path, df: pd.DataFrame) -> None:
    df.to_csv(path, index=False, lineterminator="\n")


def write_gpkg(path: Path, gdf: object, layer: str) -> None:
    import pyogrio

    pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": FIXED_TIMESTAMP})
    try:
        pyogrio.write_dataframe(gdf, path, layer=layer)
    finally:
        pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": None})


RUN_YAML = """\
# The tiny valid workflow the bad-input cases are variations of (paths relative to this file).
seed: 7
output: ../out
profiles: {path: profiles.csv}
stocks: {depths: ["0-30"], method: linear}
covariates:
  - {name: elevation, path: elevation.tif}
  - {name: maat, path: maat.tif}
  - {name: landcover, path: landcover.tif, kind: categorical}
model:
  type: regression_kriging
  trend: random_forest
  params: {n_estimators: 20, min_samples_leaf: 3}
  variogram: {model: exponential}
  n_neighbors: 16
cv: {method: kfold, n_splits: 3}
prediction: {chunks: 32}
zones:
  path: zones.gpkg
  field: zone_code
  names: {1: continuous, 2: discontinuous, 3: sporadic, 4: isolated}
"""


def _config(**replace: str) -> str:
    """``base/run.yaml`` as seen from the corpus folder, with some lines replaced."""
    text = RUN_YAML.replace("../out", "out")
    for name in ("profiles.csv", "elevation.tif", "maat.tif", "landcover.tif", "zones.gpkg"):
        text = text.replace(f"path: {name}", f"path: base/{name}")
    text = text.split("\n", 1)[1]  # drop the comment line
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    return text


# --------------------------------------------------------------------------- the corpus
def generate(out: Path) -> None:
    """Write the corpus into ``out`` (an empty folder)."""
    base = out / "base"
    base.mkdir()
    world = make_world(SEED, SHAPE, RESOLUTION)
    t = world.transform

    # ---- the valid tiny world
    for name in COVARIATES:
        a = world.covariates[name]
        if name == "landcover":
            write_tif(base / "landcover.tif", a.astype("uint8"), transform=t, nodata=0)
        else:
            arr = np.where(world.mask, a, NODATA).astype("float32")
            write_tif(base / f"{name}.tif", arr, transform=t)
    write_tif(base / "zones.tif", world.zones.astype("uint8"), transform=t, nodata=0)
    write_gpkg(base / "zones.gpkg", zone_polygons(world), "zones")
    truth = np.where(world.mask, world.true_stock(0, 30), NODATA).astype("float32")
    write_tif(base / "soc_0_30cm_true.tif", truth, transform=t,
              tags={"units": "kg C m-2", "interval": "0-30", "statistic": "truth"})  # fmt: skip
    prof = sample_profiles(world, N_PROFILES, SEED)[PROFILE_COLUMNS].copy()
    codes = {pid: f"P{i + 1:03d}" for i, pid in enumerate(dict.fromkeys(prof["profile_id"]))}
    prof["profile_id"] = prof["profile_id"].map(codes)
    prof = prof.round({"lon": 6, "lat": 6, "soc_pct": 3, "bulk_density_g_cm3": 3,
                       "coarse_fraction_pct": 1})  # fmt: skip
    for col in ("top_cm", "bottom_cm", "horizon_area_pct"):
        prof[col] = prof[col].round().astype(int)
    write_csv(base / "profiles.csv", prof)
    (base / "run.yaml").write_text(RUN_YAML)

    # ---- horizon tables: the first profiles, one rule broken each (CSV line = row + 2)
    whole = prof.groupby("profile_id", sort=False)["horizon_area_pct"].min().eq(100)
    ids = list(whole[whole].index[:3])  # three profiles without cryoturbated pairs
    small = (
        prof[prof["profile_id"].isin(ids)]
        .groupby("profile_id", sort=False)
        .head(3)  # their top three horizons
        .reset_index(drop=True)
    )
    assert len(small) == 9 and small["profile_id"].tolist() == [i for i in ids for _ in range(3)]

    def variant(name: str, df: pd.DataFrame) -> None:
        write_csv(out / name, df)

    df = small.copy()
    df.loc[7, "top_cm"] = df.loc[6, "bottom_cm"] - 5  # third profile: overlaps the horizon above
    variant("horizons_overlapping.csv", df)

    df = small.copy()
    df.loc[2, "top_cm"] = df.loc[2, "bottom_cm"]
    variant("horizons_top_ge_bottom.csv", df)

    df = small.copy()
    df.loc[3, "soc_pct"] = -1.2
    variant("horizons_negative_soc.csv", df)

    df = small.copy()
    df.loc[1, "soc_pct"] = 112.0
    variant("horizons_soc_over_100.csv", df)

    variant("horizons_missing_column.csv", small.drop(columns="bottom_cm"))

    df = small.copy().astype({"soc_pct": object})
    df.loc[2, "soc_pct"] = "n.d."
    variant("horizons_text_in_numeric.csv", df)

    df = pd.concat([small.iloc[:2], small.iloc[1:]], ignore_index=True)  # row 1 twice
    variant("horizons_duplicate_rows.csv", df)

    (out / "horizons_empty.csv").write_bytes(b"")
    (out / "horizons_header_only.csv").write_text(",".join(PROFILE_COLUMNS) + "\n")

    df = small.copy()
    df.loc[0, "lat"] = 95.5
    variant("horizons_latitude_out_of_range.csv", df)

    df = small.copy()  # valid horizons, positions moved to southern Africa
    df["lon"] = 20.0 + (df["lon"] - df["lon"].min())
    df["lat"] = -25.0 - (df["lat"] - df["lat"].min())
    variant("horizons_outside_grid.csv", df)

    # ---- rasters
    data = (base / "maat.tif").read_bytes()
    (out / "covariate_truncated.tif").write_bytes(data[: len(data) // 2])

    maat = np.where(world.mask, world.covariates["maat"], NODATA).astype("float32")
    utm = Affine(RESOLUTION, 0.0, 300_000.0, 0.0, -RESOLUTION, 5_600_000.0)  # around 50 N, 13 E
    write_tif(out / "covariate_other_crs.tif", maat, transform=utm, crs="EPSG:32633")
    write_tif(out / "covariate_all_nodata.tif", np.full(SHAPE, NODATA, "float32"), transform=t)

    far = 6_000_000.0  # metres: far off the grid, still on the projection's plane
    polys = zone_polygons(world)
    polys["geometry"] = polys.geometry.translate(xoff=-far, yoff=-far)
    write_gpkg(out / "zones_off_grid.gpkg", polys, "zones")
    moved = Affine(t.a, t.b, t.c - far, t.d, t.e, t.f - far)
    write_tif(out / "zones_off_grid.tif", world.zones.astype("uint8"), transform=moved, nodata=0)

    # ---- configs (paths relative to the corpus folder; output: out)
    (out / "config_unknown_key.yaml").write_text(_config(**{"  n_neighbors: 16": "  n_tree: 16"}))
    (out / "config_wrong_type.yaml").write_text(_config(**{"chunks: 32": "chunks: big"}))
    (out / "config_missing_file.yaml").write_text(_config(**{"base/maat.tif": "base/maat_v2.tif"}))
    (out / "config_python_tag.yaml").write_text(
        _config(**{"output: out": "output: !!python/object/apply:os.system ['touch pwned']"})
    )
    (out / "not_a_folder").write_text("a regular file where the output's parent folder should be\n")
    (out / "config_output_not_writable.yaml").write_text(
        _config(**{"output: out": "output: not_a_folder/out"})
    )

    readme = ["# Bad-input corpus", "", textwrap.dedent(__doc__).strip(), "",
              "| file | what is wrong | the error names |", "|---|---|---|"]  # fmt: skip
    readme += [f"| `{f}` | {what} | {where} |" for f, (what, where) in CASES.items()]
    readme += ["", "`not_a_folder` is a regular file: `config_output_not_writable.yaml` puts the"
               " output under it, which no user (root included) can create.", ""]  # fmt: skip
    (out / "README.md").write_text("\n".join(readme))
    sums = []
    for p in sorted(q for q in out.rglob("*") if q.is_file() and q.name != "SHA256SUMS"):
        sums.append(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(out)}")
    (out / "SHA256SUMS").write_text("\n".join(sums) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "bad")
    args = parser.parse_args(argv)
    dest: Path = args.out
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        generate(tmp)
        if dest.exists():
            shutil.rmtree(dest)
        tmp.chmod(0o755)  # mkdtemp makes it private
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"bad-input corpus written to {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
