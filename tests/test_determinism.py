"""Same config and seed, same numbers: whatever the number of workers and the chunk size.

The tiny workflow of ``tests/data/bad/base/run.yaml`` (regression kriging on a 40 x 48 grid,
one depth interval, zone totals) runs three times from scratch:

* ``A``: Dask's synchronous scheduler (one worker), ``prediction.chunks: 64`` (one chunk);
* ``A2``: the same again;
* ``B``: a two-worker distributed cluster on loopback (processes), ``prediction.chunks: 16``
  (nine chunks, spread over the workers).

``A`` and ``A2`` must agree byte for byte on every table and map. ``B`` must agree with ``A``
within stated tolerances: maps (float32, kg C m-2) to 1e-6 relative plus 1e-6 kg C m-2 with
the same nodata cells, zone totals to 1e-9 relative (a sum over other chunks adds in
another order). Tables that come before prediction do not depend on chunks or workers
and must be byte-identical. Model pickles are left out of byte comparisons: scikit-learn's
tree-node records carry uninitialised padding bytes; the maps made from them are compared.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio

from mapping.config import load_config
from mapping.run import run_stages, stage_list

CORPUS = Path(__file__).parent / "data" / "bad"
MAP_RTOL, MAP_ATOL = 1e-6, 1e-6  # kg C m-2 (measured: 0, the maps are byte-identical)
TABLE_RTOL = 1e-9
# Outputs that do not depend on chunks or workers (computed before prediction).
UPSTREAM = (
    "stocks/stocks.csv",
    "stocks/interval_counts.csv",
    "training/training.parquet",
    "training/excluded_profiles.csv",
    "models/0-30/cv_predictions.csv",
    "models/0-30/cv_metrics.csv",
    "models/0-30/metadata.json",
    "models/cv_summary.csv",
)


def _run(root: Path, chunks: int, scheduler: str) -> Path:
    shutil.copytree(CORPUS, root)
    cfg_path = root / "base" / "run.yaml"
    text = cfg_path.read_text()
    assert "prediction: {chunks: 32}" in text
    cfg_path.write_text(
        text.replace("prediction: {chunks: 32}", f"prediction: {{chunks: {chunks}}}")
    )
    cfg = load_config(cfg_path)
    stages = [s for s in stage_list(cfg) if s.name != "report"]  # its HTML carries a build time
    run_stages(cfg, stages, scheduler=scheduler, echo=lambda _: None)
    return cfg.output


def _digests(out: Path) -> dict[str, str]:
    return {
        str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name != "manifest.json" and p.suffix != ".joblib"
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from distributed import LocalCluster

    root = tmp_path_factory.mktemp("determinism")
    out = {
        "A": _run(root / "A", 64, "synchronous"),
        "A2": _run(root / "A2", 64, "synchronous"),
    }
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        out["B"] = _run(root / "B", 16, cluster.scheduler_address)
    return out


def test_two_identical_runs_are_byte_identical(runs: dict[str, Path]) -> None:
    a, a2 = _digests(runs["A"]), _digests(runs["A2"])
    assert a == a2
    assert {"zones/storage.csv", "maps/soc_0_30cm_mean.tif", *UPSTREAM} <= set(a)


def test_upstream_tables_do_not_depend_on_chunks_or_workers(runs: dict[str, Path]) -> None:
    a, b = _digests(runs["A"]), _digests(runs["B"])
    for rel in UPSTREAM:
        assert a[rel] == b[rel], rel


def test_maps_agree_across_chunks_and_workers(runs: dict[str, Path]) -> None:
    names = sorted(p.name for p in (runs["A"] / "maps").glob("*.tif"))
    assert names == sorted(p.name for p in (runs["B"] / "maps").glob("*.tif"))
    assert len(names) == 8  # mean, median, lower, upper, std, relative_uncertainty, di, aoa
    for name in names:
        with (
            rasterio.open(runs["A"] / "maps" / name) as fa,
            rasterio.open(runs["B"] / "maps" / name) as fb,
        ):
            assert fa.profile["transform"] == fb.profile["transform"] and fa.crs == fb.crs
            a, b = fa.read(1), fb.read(1)
        assert a.shape == (40, 48)
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=name)
        assert np.isfinite(a).sum() > 1000, name  # most land cells predicted
        np.testing.assert_allclose(b, a, rtol=MAP_RTOL, atol=MAP_ATOL, equal_nan=True, err_msg=name)


def test_zone_totals_agree_across_chunks_and_workers(runs: dict[str, Path]) -> None:
    a = pd.read_csv(runs["A"] / "zones" / "storage.csv")
    b = pd.read_csv(runs["B"] / "zones" / "storage.csv")
    assert len(a) >= 5  # four zones and their total
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=TABLE_RTOL, atol=0.0)
    assert (a["storage_pg"] > 0).all()
