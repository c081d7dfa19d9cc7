"""Config loading and atomic writes."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import dask.array as da
import pandas as pd
import pytest
from conftest import run_cli_output

from mapping.config import load_config, parse_interval
from mapping.exceptions import ConfigError, InputError, OutputError
from mapping.io import atomic_path, read_table, write_table
from mapping.testing import raise_if_dask_computes


def _write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "profiles.csv").write_text("profile_id,lon,lat,top_cm,bottom_cm,soc_pct\n")
    p = tmp_path / "cfg.yaml"
    p.write_text(textwrap.dedent(text))
    return p


def test_relative_paths_resolve_against_config_folder(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, "output: out\nprofiles: {path: profiles.csv}\n"))
    assert cfg.profiles.path == (tmp_path / "profiles.csv").resolve()
    assert cfg.output == (tmp_path / "out").resolve()
    assert cfg.stocks.intervals() == [(0, 30), (0, 100), (0, 200), (0, 300)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("output: o\nprofiles: {path: profiles.csv}\ncolour: red\n", "colour: unknown key"),
        ("output: o\nprofiles: {path: profiles.csv, sep: x}\n", "profiles.sep: unknown key"),
        ("output: o\nprofiles: {path: nope.csv}\n", "profiles.path: file not found"),
        ("output: o\nprofiles: {path: profiles.csv}\nseed: abc\n", "seed: "),
        ("profiles: {path: profiles.csv}\n", "output: required key is missing"),
        ("output: o\nprofiles: {path: profiles.csv}\nstocks: {depths: [30-0]}\n", "stocks.depths"),
        ("output: o\nprofiles: {path: profiles.csv}\nstocks: {method: cubic}\n", "stocks.method"),
        (
            "output: o\nprofiles: {path: profiles.csv}\n"
            "prediction: {calibration: {shape: loglinear, kind: additive}}\n",
            "prediction.calibration: shape loglinear needs kind ratio",
        ),
        (
            "output: o\nprofiles: {path: profiles.csv}\n"
            "prediction: {calibration: {shared_shape: loglinear, kind: additive}}\n",
            "prediction.calibration: shape loglinear needs kind ratio",
        ),
        (
            "output: o\nprofiles: {path: profiles.csv}\n"
            "prediction: {aoa: false, calibration: {shared_shape: loglinear}}\n",
            "prediction: calibration.shared_shape needs the DI map (aoa: true)",
        ),
        (
            "output: o\nprofiles: {path: profiles.csv}\nuncertainty: {reference: p90}\n",
            "uncertainty.reference",
        ),
        (
            "output: o\nprofiles: {path: profiles.csv}\nmodel: {type: random_forest}\n"
            "uncertainty: {level: local}\n",
            "uncertainty.level: local needs model.type: regression_kriging",
        ),
        (
            "output: o\nprofiles: {path: profiles.csv}\nmodel: {type: boosted_trees}\n"
            "uncertainty: {zone_error: cv}\n",
            "uncertainty.zone_error: cv needs model.type: regression_kriging",
        ),
        (
            "output: o\nprofiles: {path: profiles.csv, crs: EPSG:999999}\n",
            "profiles.crs: 'EPSG:999999' is not a CRS",
        ),
        (
            "output: o\nprofiles: {path: profiles.csv}\ngrid: {crs: 'EASE north'}\n",
            "grid.crs: 'EASE north' is not a CRS",
        ),
        (
            "output: o\nprofiles: {path: profiles.csv}\nuncertainty: {range: [0.05, 0.95]}\n",
            "uncertainty.range: percentiles, not fractions: [5, 95] for [0.05, 0.95]",
        ),
        (
            "output: o\nprofiles: {path: profiles.csv}\nuncertainty: {range: [95, 5]}\n",
            "uncertainty.range: percentiles with 0 <= lower < upper <= 100",
        ),
        (
            "output: o\nprofiles: {path: profiles.csv}\nstocks: {depths: [0-30, 0-30, 0-100]}\n",
            "stocks.depths: 0-30 is given twice",
        ),
        (
            "output: o\nprofiles: {path: profiles.csv}\n"
            "model: {depth: layered, layers: [0, 30, 100, 300]}\nprediction: {depths: [0-400]}\n",
            "prediction.depths: 0-400 reaches below the deepest model.layers break (300 cm)",
        ),
        (
            "output: o\nprofiles: {path: profiles.csv}\n"
            "grid: {crs: EPSG:4326, resolution: 0.1, bounds: [107, 52, 157, 95]}\n",
            "grid: bounds: latitudes 52 to 95 must lie in [-90, 90]",
        ),
        (
            "output: o\nprofiles: {path: profiles.csv}\n"
            "grid: {crs: EPSG:4326, resolution: 0.25, bounds: [-190, 60, 190, 72]}\n",
            "grid: bounds: longitudes -190 to 190 span 380, more than the globe's 360",
        ),
        ("output: [unclosed\n", "invalid YAML at line"),
        ("- a\n- b\n", "must be a mapping"),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, text))
    msg = str(info.value)
    assert expected in msg
    assert "cfg.yaml" in msg
    assert "\n" not in msg


def test_the_totals_options_of_kriging_stay_with_kriging(tmp_path: Path) -> None:
    text = (
        "output: o\nprofiles: {path: profiles.csv}\nuncertainty: {level: local, zone_error: cv}\n"
    )
    cfg = load_config(_write(tmp_path, text))
    assert (cfg.uncertainty.level, cfg.uncertainty.zone_error) == ("local", "cv")
    trees = load_config(
        _write(
            tmp_path, "output: o\nprofiles: {path: profiles.csv}\nmodel: {type: random_forest}\n"
        )
    )
    assert (trees.uncertainty.level, trees.uncertainty.zone_error) == ("constant", "none")


def test_yaml_is_loaded_safely(tmp_path: Path) -> None:
    text = (
        "output: !!python/object/apply:os.system ['touch pwned']\nprofiles: {path: profiles.csv}\n"
    )
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(_write(tmp_path, text))
    assert not (tmp_path / "pwned").exists()


def test_parse_interval() -> None:
    assert parse_interval("15-30") == (15.0, 30.0)
    with pytest.raises(ValueError):
        parse_interval("30-15")
    with pytest.raises(ValueError):
        parse_interval("abc")


def test_atomic_path_leaves_destination_untouched_on_failure(tmp_path: Path) -> None:
    dest = tmp_path / "table.csv"
    dest.write_text("old")
    with pytest.raises(ZeroDivisionError), atomic_path(dest) as tmp:
        tmp.write_text("half")
        1 / 0  # noqa: B018
    assert dest.read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["table.csv"]


def test_write_and_read_table_round_trip(tmp_path: Path) -> None:
    df = pd.DataFrame({"a": [1, 2], "b": [0.5, 1.5]})
    for suffix in (".csv", ".parquet"):
        out = write_table(df, tmp_path / f"t{suffix}")
        pd.testing.assert_frame_equal(read_table(out), df)


def test_read_table_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(InputError, match=r"empty\.csv: file is empty"):
        read_table(empty)
    header = tmp_path / "header.csv"
    header.write_text("a,b\n")
    with pytest.raises(InputError, match="header but no rows"):
        read_table(header)
    with pytest.raises(InputError, match="file not found"):
        read_table(tmp_path / "missing.csv")


def test_unwritable_output(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")  # a file where a folder is needed: unwritable even for root
    with pytest.raises(OutputError, match="cannot create output folder"):
        write_table(pd.DataFrame({"a": [1]}), blocker / "sub" / "t.csv")


def test_laziness_guard_fails_on_compute() -> None:
    x = da.ones(10, chunks=5) + 1
    with pytest.raises(RuntimeError, match="Too many computes"), raise_if_dask_computes():
        x.sum().compute()


def test_block_cv_needs_a_block_size(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cv: block_size"):
        load_config(
            _write(tmp_path, "output: o\nprofiles: {path: profiles.csv}\ncv: {method: block}\n")
        )


def test_outputs_get_the_usual_permissions(tmp_path: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    out = write_table(pd.DataFrame({"a": [1]}), tmp_path / "t.csv")
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask
    with atomic_path(tmp_path / "folder", is_dir=True) as tmp:
        (tmp / "f.txt").write_text("x")
    assert (tmp_path / "folder").stat().st_mode & 0o777 == 0o777 & ~umask


def test_cli_depth_lists_refuse_repeats_and_empty_lists(tmp_path: Path, capsys) -> None:
    profiles = Path(__file__).resolve().parents[1] / "sample_rasters" / "profiles.csv"
    code, _, err = run_cli_output(
        ["stocks", profiles, "-o", tmp_path / "s", "--depths", "0-30,0-30"], capsys
    )
    assert code == 2 and "--depths: an interval is given twice (0-30,0-30)" in err
    assert not (tmp_path / "s").exists()
    config = _write(tmp_path, "output: o\nprofiles: {path: profiles.csv}\n")
    for depths, said in (("", "--depths: no interval in ''"), ("0-50,0-50", "0-50 is given twice")):
        code, _, err = run_cli_output(["predict", config, "--depths", depths], capsys)
        assert code == 2 and said in err, err
