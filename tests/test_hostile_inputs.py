"""Hostile and huge inputs: refused in one line, in bounded memory, leaving nothing behind.

* a YAML "billion laughs" (aliases expanding to 9**9 values) inside a real config key;
* a GeoTIFF whose header claims 10**6 x 10**6 cells (sparse: a few MB on disk) as the
  grid-defining covariate, under an address-space limit of 3 GB;
* horizon tables longer than ``profiles.max_rows``: a 10-million-row Parquet file (only its
  metadata is read) and a CSV against a small configured limit;
* a full disk (a 1 MB tmpfs, mounted when the tests run as root) under a table, a JSON and
  a COG writer;
* a first covariate in another CRS with ``grid: like: first_covariate``: the error names
  that file, and no warning comes before it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import tracemalloc
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
from rasterio.transform import from_origin

from mapping import io
from mapping.cli import main
from mapping.config import load_config
from mapping.exceptions import ConfigError, HorizonTableError, OutputError
from mapping.grid import Grid
from mapping.profiles import read_horizons

CORPUS = Path(__file__).parent / "data" / "bad"


def _corpus(tmp_path: Path) -> Path:
    shutil.copytree(CORPUS, tmp_path / "c")
    return tmp_path / "c" / "base" / "run.yaml"


def _cli(argv: list[str], capfd: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    capfd.readouterr()
    code = main(argv)
    return code, capfd.readouterr().err.strip().splitlines()


# --------------------------------------------------------------------------- YAML alias bomb
BOMB = textwrap.dedent(
    """\
    a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
    b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
    c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
    d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
    e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
    f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
    g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
    h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
    i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
    """
)


def test_yaml_alias_bomb_is_refused_without_growing_memory(tmp_path: Path) -> None:
    base = _corpus(tmp_path)
    # the bomb sits in a real key: validating 9**9 = 387 million depth strings would hang
    text = base.read_text().replace('stocks: {depths: ["0-30"], method: linear}\n', "")
    bomb = base.with_name("bomb.yaml")
    bomb.write_text("x-" + BOMB.replace("\n", "\nx-", 8) + "stocks: {depths: *i}\n" + text)
    tracemalloc.start()
    try:
        with pytest.raises(ConfigError, match=r"bomb.yaml: YAML aliases .* more than 100000"):
            load_config(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 5 * 2**20, peak  # the expansion is counted, never built
    # aliases that expand to little are still fine
    small = base.with_name("small.yaml")
    small.write_text("stocks: {depths: &d ['0-30'], method: linear}\n" + text)
    assert load_config(small).stocks.depths == ["0-30"]


def test_yaml_alias_bomb_through_the_cli_is_one_line(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BOMB)
    code, err = _cli(["validate", str(bomb)], capfd)
    assert code == 2 and len(err) == 1
    assert err[0].startswith("socmap: error: ") and "YAML aliases" in err[0]


# --------------------------------------------------------------------------- huge raster header
def _sparse_huge_tif(path: Path) -> None:
    """10**6 x 10**6 float32 cells on EASE-Grid 2.0 North, no tile written (a few MB)."""
    profile = dict(
        driver="GTiff", width=1_000_000, height=1_000_000, count=1, dtype="float32",
        crs="EPSG:6931", transform=from_origin(-9_000_000.0, 9_000_000.0, 18.0, 18.0),
        tiled=True, blockxsize=2048, blockysize=2048, compress="deflate", BIGTIFF="YES",
        SPARSE_OK=True, nodata=-9999.0,
    )  # fmt: skip
    with rasterio.open(path, "w", **profile):
        pass
    assert path.stat().st_size < 20 * 2**20


def _limited(script: str, limit_gb: float = 3.0) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a fresh interpreter with its address space capped."""
    cap = int(limit_gb * 2**30)
    pre = (
        "import resource\n"
        f"resource.setrlimit(resource.RLIMIT_AS, ({cap}, {cap}))\n"
    )  # fmt: skip
    return subprocess.run(
        [sys.executable, "-c", pre + textwrap.dedent(script)],
        capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip


@pytest.mark.slow
def test_huge_raster_header_is_refused_or_lazy(tmp_path: Path) -> None:
    huge = tmp_path / "huge.tif"
    _sparse_huge_tif(huge)
    cfg = _corpus(tmp_path)
    cfg.write_text(
        cfg.read_text().replace(
            "{name: elevation, path: elevation.tif}", f"{{name: elevation, path: {huge}}}"
        )
    )
    # as the grid of a run (chunks of 32): refused in one line naming the file, under 3 GB
    done = _limited(
        f"""
        import sys
        from mapping.cli import main
        sys.exit(main(["validate", {str(cfg)!r}]))
        """
    )
    err = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(err) == 1 and err[0].startswith(f"socmap: error: {huge}: the grid is 1000000 x"), err
    assert "prediction.chunks" in err[0]
    # with large chunks the stack is lazy: headers only, and a corner reads one chunk
    done = _limited(
        f"""
        import numpy as np
        from mapping.covariates import build_stack
        from types import SimpleNamespace as NS
        stack = build_stack([NS(name="elevation", path={str(huge)!r}, kind="continuous")],
                            chunks=4096)
        corner = stack["elevation"][:3, :3].values
        print(stack["elevation"].shape, int(np.isnan(corner).sum()))
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["(1000000,", "1000000)", "9"]  # nodata everywhere


# --------------------------------------------------------------------------- long tables
def test_ten_million_row_parquet_is_refused_from_its_metadata(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = 10_000_000
    table = pa.table(
        {
            "profile_id": pa.array(np.zeros(n, dtype=np.int32)),
            "top_cm": pa.array(np.zeros(n, dtype=np.int8)),
        }
    )
    path = tmp_path / "horizons.parquet"
    pq.write_table(table, path, row_group_size=1_000_000)
    del table
    tracemalloc.start()
    try:
        with pytest.raises(
            HorizonTableError,
            match=r"10000000 rows, above the limit of 5000000 \(profiles.max_rows",
        ):
            read_horizons(path, max_rows=5_000_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2**20  # the rows are never read


def test_csv_longer_than_the_configured_limit_is_refused(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    cfg = _corpus(tmp_path)
    n_rows = len(pd.read_csv(cfg.parent / "profiles.csv"))
    assert n_rows == 387
    assert len(read_horizons(cfg.parent / "profiles.csv", max_rows=387)) == 387
    with pytest.raises(HorizonTableError, match=r"more than 386 rows, above the limit of 386"):
        read_horizons(cfg.parent / "profiles.csv", max_rows=386)
    cfg.write_text(
        cfg.read_text().replace(
            "profiles: {path: profiles.csv}", "profiles: {path: profiles.csv, max_rows: 100}"
        )
    )
    code, err = _cli(["validate", str(cfg)], capfd)
    assert code == 2 and len(err) == 1, err
    assert "profiles.csv: more than 100 rows, above the limit of 100 (profiles.max_rows" in err[0]


# --------------------------------------------------------------------------- full disk
@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MB tmpfs (needs root and a kernel that lets this process mount)."""
    mnt = tmp_path / f"tiny-{uuid.uuid4().hex[:6]}"
    mnt.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_full_disk_leaves_no_partial_file_and_says_so(full_disk: Path) -> None:
    rng = np.random.default_rng(0)
    big = pd.DataFrame(rng.random((60_000, 4)), columns=list("abcd"))  # ~4 MB of CSV
    with pytest.raises(OutputError) as err:
        io.write_table(big, full_disk / "table.csv")
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"{full_disk / 'table.csv'}: disk full")
    assert "No space left on device" in msg and "nothing was written" in msg
    assert list(full_disk.iterdir()) == []  # neither the final name nor a temporary
    with pytest.raises(OutputError, match="disk full"):
        io.write_json({"values": rng.random(200_000).tolist()}, full_disk / "big.json")
    assert list(full_disk.iterdir()) == []
    # a COG larger than the disk: staged and copied by GDAL, cleaned up on failure
    grid = Grid.from_bounds((0, 0, 1000 * 600, 1000 * 600), 1000.0, "EPSG:6931")
    noise = grid.wrap(rng.random(grid.shape).astype("float32"))
    with pytest.raises(OutputError) as err:
        io.write_cog(noise, full_disk / "map.tif", overviews=False)
    assert "\n" not in str(err.value) and str(err.value).startswith(str(full_disk / "map.tif"))
    assert "disk" in str(err.value).lower()
    assert list(full_disk.iterdir()) == []
    # and small files still fit: the disk works, it is only full
    io.write_table(big.head(10), full_disk / "small.csv")
    assert [p.name for p in full_disk.iterdir()] == ["small.csv"]


# --------------------------------------------------------------------------- grid-defining file
def test_first_covariate_in_another_crs_is_named_and_no_warning_comes_first(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    import warnings

    cfg = _corpus(tmp_path)
    other = cfg.parent.parent / "covariate_other_crs.tif"
    cfg.write_text(
        cfg.read_text().replace(
            "{name: elevation, path: elevation.tif}",
            "{name: elevation, path: ../covariate_other_crs.tif}",
        )
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, err = _cli(["run", str(cfg)], capfd)
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(
        f"socmap: error: {other.resolve()}: covariate 'elevation' defines the grid"
    )
    assert "EPSG:32633" in err[0] and "'maat': EPSG:6931" in err[0]
    assert not [w for w in caught if not issubclass(w.category, DeprecationWarning)]
    assert not (cfg.parent.parent / "out").exists()  # nothing written
