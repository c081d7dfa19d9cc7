"""``socmap run`` end to end on the sample data: every stage, the manifest, re-runs, ranges."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from conftest import ROOT, SAMPLE_WORKFLOW, sample_config

from mapping import io, zonal
from mapping.cli import main
from mapping.cv_bootstrap import block_bootstrap_rmse, block_ids
from mapping.report.tables import fmt_number
from mapping.run import manifest as manifest_module
from mapping.run import preflight, stages
from mapping.validation import metrics_table

STAGES = ["stocks", "training", "fit", "predict", "zones", "uncertainty", "thaw", "report"]
TRUE_TOTALS = ROOT / "sample_rasters" / "truth" / "zone_totals.csv"


def _config(tmp: Path, n_realizations: int = 40) -> Path:
    cfg = sample_config(tmp / "out")
    cfg["stocks"]["depths"] = ["0-30"]
    cfg["model"]["params"]["n_estimators"] = 60
    cfg["cv"]["repeats"] = 2  # a further partition to pool (the sample's 3 cost a third more)
    # The zone-total check below needs the regional error of geographical kNNDM folds: on
    # the sample world the trend's regional bias lies in geography (the warm, sparsely
    # sampled south), and feature-space folds (the default) see a regional error of only
    # 0.03 in log there, too small to cover the isolated zone at 0-30 cm
    # (docs/uncertainty.md).
    cfg["cv"]["space"] = "geographical"
    cfg["uncertainty"] = {
        "n_realizations": n_realizations,
        "range": [5.0, 95.0],
        "regional": "folds",
    }
    cfg["scheduler"] = "threads"
    path = tmp / "sample.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


# How often the first run built the grid, the covariate stack and the zone layout.
BUILT: dict[str, int] = {}


def _counting(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        BUILT[name] = BUILT.get(name, 0) + 1
        return fn(*args, **kwargs)

    return wrapper


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("pipeline")
    cfg = _config(tmp)
    with pytest.MonkeyPatch.context() as mp:
        for module in (stages, preflight):
            mp.setattr(module, "target_grid", _counting("grid", module.target_grid))
            mp.setattr(module, "build_stack", _counting("stack", module.build_stack))
        mp.setattr(preflight, "load_zone_layout", _counting("zones", preflight.load_zone_layout))
        mp.setattr(zonal, "load_zone_layout", _counting("zones", zonal.load_zone_layout))
        assert main(["run", str(cfg)]) == 0
    return cfg, tmp / "out"


def test_grid_stack_and_zones_are_built_once_per_run(first_run: tuple[Path, Path]) -> None:
    """The preflight checks build the grid, the stack and the zones (every cell's code
    checked before the first stage); every stage of the same run takes them from the run
    context."""
    assert BUILT == {"grid": 1, "stack": 1, "zones": 1}


def test_every_stage_completes_with_checksummed_outputs(first_run: tuple[Path, Path]) -> None:
    _, out = first_run
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["stages"]) == set(STAGES)
    for name in STAGES:
        rec = manifest["stages"][name]
        assert rec["status"] == "complete", name
        for rel, checksum in rec["outputs"].items():
            assert (out / rel).is_file(), rel
            assert checksum.startswith("sha256:")
    assert manifest["seed"] == yaml.safe_load(SAMPLE_WORKFLOW.read_text())["seed"]
    assert "rasterio" in manifest["versions"] and "gdal" in manifest["versions"]
    assert all(k.startswith("/") for k in manifest["inputs"])  # resolved paths
    # every interval's cells were predicted: no kriging system failed to factorise
    intervals = {p.name for p in (out / "models").iterdir() if p.is_dir()}
    assert manifest["stages"]["predict"]["failed_cells"] == dict.fromkeys(intervals, 0)
    html = (out / "report" / "index.html").read_text()
    assert "Table 2" in html and "http://" not in html and "https://" not in html


def test_cross_validation_is_also_weighted_to_the_mapped_area(first_run: tuple[Path, Path]) -> None:
    """``cv.weighting: area`` (the default): a weight per CV prediction, the weighted metrics
    in ``cv_metrics.csv`` recomputed from them (every partition's, with ``cv.repeats: 2``:
    each profile once per partition, with its weight), and a second table
    in the report."""
    _, out = first_run
    pred = pd.read_csv(out / "models" / "0-30" / "cv_predictions.csv")
    further = pd.read_csv(out / "models" / "0-30" / "cv_repeats.csv")
    cvm = pd.read_csv(out / "models" / "0-30" / "cv_metrics.csv").iloc[0]
    assert set(further["repeat"]) == {1} and cvm["partitions"] == 2
    w = pred["weight"].to_numpy()
    assert w.mean() == pytest.approx(1.0) and w.min() > 0 and w.std() > 0.1
    weight = pred.set_index("profile_id")["weight"]
    every = pd.concat([pred, further.assign(weight=weight.loc[further["profile_id"]].to_numpy())])
    cols = ["observed", "predicted", "lower", "upper", "weight"]
    m = metrics_table(*(every[c] for c in cols[:4]), weights=every["weight"])
    for key in ("rmse", "mae", "mbe", "r2", "picp"):
        assert cvm[f"{key}_area"] == pytest.approx(m[key]), key
    first = metrics_table(*(pred[c] for c in cols[:4]), weights=w)
    assert cvm["n_eff"] == pytest.approx(first["n_eff"]) and cvm["n_eff"] < cvm["n"] == len(pred)
    # the sample profiles cluster in the warm south: the area's error is not the profiles'
    assert cvm["rmse_area"] != pytest.approx(cvm["rmse"], rel=0.02)
    assert "weighted to the mapped area" in (out / "report" / "report.md").read_text()


def test_a_run_leaves_no_object_frozen(first_run: tuple[Path, Path]) -> None:
    """release_memory freezes the survivors between stages; the run thaws them at its end,
    so cycles a caller drops later are collected."""
    import gc

    assert gc.get_freeze_count() == 0


def test_cv_rmse_has_its_block_bootstrap_range(first_run: tuple[Path, Path]) -> None:
    """``cv.bootstrap`` (default 1000 replicates of 100 km blocks): every interval's CV table
    holds the RMSE's 90 % range, recomputed here from the CV predictions of every partition
    (``cv.repeats``: a block drawn brings its profiles' rows of each) and the profiles'
    coordinates with the run's seed."""
    _, out = first_run
    seed = json.loads((out / "manifest.json").read_text())["seed"]
    xy = pd.read_parquet(out / "training" / "training.parquet")[["profile_id", "x", "y"]]
    summary = pd.read_csv(out / "models" / "cv_summary.csv").set_index("interval")
    for label in summary.index:
        pred = pd.read_csv(out / "models" / label / "cv_predictions.csv")
        further = pd.read_csv(out / "models" / label / "cv_repeats.csv")
        weight = pred.set_index("profile_id")["weight"]
        further["weight"] = weight.loc[further["profile_id"]].to_numpy()
        pred = pd.concat([pred, further], ignore_index=True)
        pred = pred.merge(xy.drop_duplicates("profile_id"), on="profile_id", how="left")
        pred = pred[(pred["fold"] >= 0) & pred["predicted"].notna()]
        cvm = pd.read_csv(out / "models" / label / "cv_metrics.csv").iloc[0]
        blocks = block_ids(pred["x"].to_numpy(), pred["y"].to_numpy(), 100_000.0)
        err = (pred["predicted"] - pred["observed"]).to_numpy()
        lo, hi = block_bootstrap_rmse(err, blocks, seed=seed)
        alo, ahi = block_bootstrap_rmse(err, blocks, pred["weight"].to_numpy(), seed=seed)
        assert (cvm["rmse_lower"], cvm["rmse_upper"]) == pytest.approx((lo, hi), rel=1e-12)
        assert (cvm["rmse_area_lower"], cvm["rmse_area_upper"]) == pytest.approx(
            (alo, ahi), rel=1e-12
        )
        assert cvm["cv_blocks"] == blocks.max() + 1 >= 10
        assert cvm["rmse_lower"] < cvm["rmse"] < cvm["rmse_upper"]
        assert summary.loc[label, "rmse_upper"] == cvm["rmse_upper"]
    report = (out / "report" / "report.md").read_text()
    assert f"{fmt_number(cvm['rmse'], 2)} ({fmt_number(cvm['rmse_lower'], 2)}" in report


def test_monte_carlo_range_contains_the_true_total_and_is_wider_than_independent_pixels(
    first_run: tuple[Path, Path],
) -> None:
    _, out = first_run
    summary = pd.read_csv(out / "zones" / "storage_summary.csv")
    truth = pd.read_csv(TRUE_TOTALS)
    true_total = truth.query("zone == 'permafrost_region' and bottom_cm == 30")["storage_pg"].item()
    row = summary.query("zone == 'all zones' and interval == '0-30'").iloc[0]
    assert row["storage_lower_pg"] <= true_total <= row["storage_upper_pg"]
    # every zone too: the trend's regional error (cross-validated) is in the shared error
    zones = summary.query("interval == '0-30' and zone != 'all zones'").merge(
        truth.query("bottom_cm == 30")[["zone", "storage_pg"]], on="zone"
    )
    assert len(zones) == 4
    inside = (zones["storage_lower_pg"] <= zones["storage_pg"]) & (
        zones["storage_pg"] <= zones["storage_upper_pg"]
    )
    assert inside.all(), zones.loc[~inside, ["zone", "storage_pg", "storage_lower_pg"]]
    mc_width = row["storage_upper_pg"] - row["storage_lower_pg"]
    pixel_width = (
        row["independent_pixel_storage_upper_pg"] - row["independent_pixel_storage_lower_pg"]
    )
    # spatially correlated errors: far wider than the independent-pixel range
    assert mc_width > 5 * pixel_width
    # the storage table is the integral of the mean map; the MC mean stays close to it
    storage = pd.read_csv(out / "zones" / "storage.csv")
    mean_map_total = storage.query("zone == 'all zones'")["storage_pg"].item()
    assert abs(row["storage_mean_pg"] - mean_map_total) < 0.25 * mc_width


def test_rerun_reuses_unchanged_stages_and_redoes_only_what_changed(
    first_run: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, out = first_run
    capsys.readouterr()
    assert main(["run", str(cfg)]) == 0
    text = capsys.readouterr().out
    for name in STAGES:
        assert f"[{name}] unchanged" in text, name

    _config(cfg.parent, n_realizations=30)  # only the Monte Carlo settings change
    assert main(["run", str(cfg)]) == 0
    text = capsys.readouterr().out
    for name in ["stocks", "training", "fit", "predict", "zones"]:
        assert f"[{name}] unchanged" in text, name
    for name in ["uncertainty", "report"]:
        assert f"[{name}] running" in text, name
    summary = pd.read_csv(out / "zones" / "storage_summary.csv")
    assert set(summary["n_realizations"]) == {30}


def test_a_run_folder_copied_elsewhere_resumes_as_it_stands(
    first_run: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Fingerprints name inputs by content: the copy's stages are all reused, and so are
    they when an input is renamed but not changed (a changed input reruns: the test above)."""
    cfg, out = first_run
    assert main(["run", str(cfg)]) == 0  # whatever an earlier test left: complete
    copy = tmp_path / "moved" / "out"
    shutil.copytree(out, copy)
    config = yaml.safe_load(cfg.read_text())
    config["output"] = str(copy)
    moved = tmp_path / "moved" / "sample.yaml"
    moved.write_text(yaml.safe_dump(config, sort_keys=False))
    capsys.readouterr()
    assert main(["run", str(moved)]) == 0
    text = capsys.readouterr().out
    for name in STAGES:
        assert f"[{name}] unchanged" in text, name
    before = json.loads((out / "manifest.json").read_text())["stages"]
    after = json.loads((copy / "manifest.json").read_text())["stages"]
    assert {k: v["outputs"] for k, v in after.items()} == {
        k: v["outputs"] for k, v in before.items()
    }

    # the same profiles under another name: still nothing to redo
    profiles = Path(config["profiles"]["path"])
    renamed = tmp_path / "moved" / "horizons.csv"
    shutil.copyfile(profiles, renamed)
    config["profiles"]["path"] = str(renamed)
    moved.write_text(yaml.safe_dump(config, sort_keys=False))
    assert main(["run", str(moved)]) == 0
    text = capsys.readouterr().out
    for name in STAGES:
        assert f"[{name}] unchanged" in text, name
    # once a stage reruns (here the Monte Carlo), the manifest names the inputs the config
    # now names, with their checksums
    config["uncertainty"]["n_realizations"] = 25
    moved.write_text(yaml.safe_dump(config, sort_keys=False))
    assert main(["run", str(moved)]) == 0
    assert "[uncertainty] running" in capsys.readouterr().out
    inputs = json.loads((copy / "manifest.json").read_text())["inputs"]
    assert str(profiles) not in inputs
    assert (
        inputs[str(renamed)]
        == json.loads((out / "manifest.json").read_text())["inputs"][str(profiles)]
    )


def test_a_changed_code_reruns_every_stage(
    first_run: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A run resumed with other code recomputes: socmap's sources enter every fingerprint by
    their checksum (the distribution's version is the same across commits)."""
    cfg, out = first_run
    assert main(["run", str(cfg)]) == 0  # whatever an earlier test left: complete
    copy = tmp_path / "again" / "out"
    shutil.copytree(out, copy)
    config = yaml.safe_load(cfg.read_text())
    config["output"] = str(copy)
    again = tmp_path / "again" / "sample.yaml"
    again.write_text(yaml.safe_dump(config, sort_keys=False))
    recorded = json.loads((copy / "manifest.json").read_text())["versions"]
    assert recorded["socmap_source"] == io.source_checksum(manifest_module._PACKAGE_DIR)

    real = manifest_module.package_versions
    monkeypatch.setattr(
        manifest_module,
        "package_versions",
        lambda: {**real(), "socmap_source": "sha256:" + "0" * 64},  # one edited line
    )
    capsys.readouterr()
    assert main(["run", str(again)]) == 0
    text = capsys.readouterr().out
    for name in STAGES:
        assert f"[{name}] running" in text, name


def test_the_source_checksum_follows_the_sources_not_their_caches(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "a.py").write_text("x = 1\n")
    (pkg / "sub" / "b.py").write_text("y = 2\n")
    first = io.file_checksum(pkg, pattern="*.py")
    (pkg / "sub" / "b.cpython-311.pyc").write_bytes(b"\x00compiled")
    (pkg / "notes.txt").write_text("not code")
    assert io.file_checksum(pkg, pattern="*.py") == first
    (pkg / "sub" / "b.py").rename(pkg / "b.py")  # the same code in another module
    moved = io.file_checksum(pkg, pattern="*.py")
    assert moved != first
    (pkg / "b.py").write_text("y = 3\n")
    assert io.file_checksum(pkg, pattern="*.py") not in (first, moved)
