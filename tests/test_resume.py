"""Killed runs resume from finished stages and finished chunks; a lost worker costs nothing.

The tiny workflow of ``tests/data/bad/base/run.yaml`` runs on a 5 km grid (80 x 96 cells,
30 chunks of 16 x 16) so that prediction takes long enough to be interrupted. Each test
fits first (in-process), then runs ``python -m mapping.cli run`` as a separate process and
interrupts it during prediction, once a number of chunks have been kept in
``maps/.partial/``:

* SIGINT: exit status 130, the manifest says ``predict: interrupted``;
* then SIGKILL of a second run, which itself resumed from the first one's chunks: the
  manifest is left at ``predict: running``;
* a last run resumes from the chunks kept and ends with maps and zone totals byte-identical
  to a run that was never interrupted.

A real Dask cluster (a scheduler and two workers, separate processes on loopback, started
here) loses one worker (SIGKILL) during prediction; the run completes with identical
outputs.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import stage_status

from mapping.config import load_config
from mapping.run import run_stages, stage_list

CORPUS = Path(__file__).parent / "data" / "bad"
GRID = 'grid: {crs: "EPSG:6931", resolution: 5000, bounds: [1920000, 1610000, 2400000, 2010000]}'
N_CHUNKS = 30  # (80 / 16) x (96 / 16)


def _setup(root: Path) -> Path:
    """A corpus copy whose workflow predicts on the 5 km grid; returns the config."""
    shutil.copytree(CORPUS, root)
    cfg = root / "base" / "run.yaml"
    text = cfg.read_text().replace("stocks: {", GRID + "\nstocks: {", 1)
    cfg.write_text(text.replace("prediction: {chunks: 32}", "prediction: {chunks: 16}"))
    return cfg


def _run(cfg_path: Path, until: str | None = None, scheduler: str = "synchronous") -> list[str]:
    said: list[str] = []
    cfg = load_config(cfg_path)
    stages = [s for s in stage_list(cfg) if s.name != "report"]  # its HTML carries a build time
    run_stages(cfg, stages, until=until, scheduler=scheduler, echo=said.append)
    return said


def _results(out: Path) -> dict[str, str]:
    files = [*sorted(_final_maps(out)), out / "zones" / "storage.csv"]
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _final_maps(out: Path) -> list[Path]:
    return [p for p in (out / "maps").glob("*.tif") if not p.name.startswith(".")]


def _chunks(out: Path) -> int:
    return len(list((out / "maps" / ".partial" / "soc_0_30cm").glob("r*_c*.npy")))


def _start_and_stop(cfg: Path, at: int, stop: object, scheduler: str = "synchronous") -> tuple:
    """Start ``socmap run`` in a process; call ``stop(proc)`` once ``at`` chunks are kept."""
    out = cfg.parent.parent / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mapping.cli", "run", str(cfg), "--scheduler", scheduler],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    t0 = time.monotonic()
    while _chunks(out) < at and proc.poll() is None and time.monotonic() - t0 < 240:
        time.sleep(0.005)
    kept = _chunks(out)
    stop(proc)  # type: ignore[operator]
    stdout, stderr = proc.communicate(timeout=240)
    return proc.returncode, kept, stdout, stderr


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Maps and zone totals of an uninterrupted run."""
    cfg = _setup(tmp_path_factory.mktemp("reference") / "corpus")
    _run(cfg)
    out = cfg.parent.parent / "out"
    assert len(_final_maps(out)) == 7  # with relative_uncertainty
    assert not (out / "maps" / ".partial").exists()  # removed once the maps are in place
    return _results(out)


def test_sigint_then_sigkill_then_resume(tmp_path: Path, reference: dict[str, str]) -> None:
    cfg = _setup(tmp_path / "corpus")
    out = tmp_path / "corpus" / "out"
    _run(cfg, until="fit")

    code, kept1, _, err = _start_and_stop(cfg, 4, lambda p: p.send_signal(signal.SIGINT))
    assert code == 130, err
    assert err.strip().splitlines()[-1].startswith("socmap: interrupted; run it again to resume")
    assert 4 <= kept1 < N_CHUNKS
    assert stage_status(out)["predict"] == "interrupted"
    assert not _final_maps(out)

    code, kept2, said, _ = _start_and_stop(cfg, kept1 + 6, lambda p: p.kill())
    assert code == -signal.SIGKILL
    assert "[fit] unchanged" in said  # finished stages are reused
    assert f"[predict 0-30 cm] {kept1} of {N_CHUNKS} chunks kept from an interrupted run" in said
    assert kept1 + 6 <= kept2 < N_CHUNKS
    assert stage_status(out)["predict"] == "running"
    assert not _final_maps(out)  # staging files of the killed run are hidden temporaries

    said = _run(cfg)
    resumed = [line for line in said if "kept from an interrupted run" in line]
    assert resumed == [
        f"[predict 0-30 cm] {_first_int(resumed)} of {N_CHUNKS} chunks kept from an interrupted run"
    ]
    assert _first_int(resumed) >= kept2
    assert set(stage_status(out).values()) == {"complete"}
    assert _results(out) == reference
    assert not (out / "maps" / ".partial").exists()
    assert not [p for p in (out / "maps").iterdir() if p.name.startswith(".")]  # no temporaries


def _first_int(lines: list[str]) -> int:
    return int(lines[0].split("] ", 1)[1].split()[0])


COMPUTED: list[tuple[int, int]] = []


def _source_block(block: object, block_info: dict | None = None) -> object:
    (r0, _), (c0, _) = block_info[None]["array-location"]  # type: ignore[index]
    COMPUTED.append((r0, c0))  # which chunk was computed
    return block


def _prediction(chunks: int = 4) -> object:
    """A small lazy prediction-like Dataset (two statistics, 8 x 12 cells)."""
    import dask.array as da
    import xarray as xr

    base = da.arange(96, chunks=96).reshape(8, 12).rechunk(chunks).astype("float32")
    base = base.map_blocks(_source_block, dtype="float32")
    return xr.Dataset({"mean": (("y", "x"), base), "std": (("y", "x"), base / 10)})


def test_chunk_store_keeps_finished_chunks_and_computes_only_the_others(tmp_path: Path) -> None:
    import dask
    import numpy as np

    from mapping.run.checkpoint import ChunkStore

    pred = _prediction()
    store = ChunkStore(tmp_path / "p", "key-1", pred)
    assert (store.n_chunks, store.reused) == (6, 0)
    # Two chunks finish (all their statistics), a third only half: only two are kept.
    for (i, j), k in [((0, 0), 0), ((0, 0), 1), ((1, 2), 1), ((1, 2), 0), ((0, 1), 0)]:
        rows, cols = slice(4 * i, 4 * i + 4), slice(4 * j, 4 * j + 4)
        store.on_block(k, (rows, cols), pred[["mean", "std"][k]].values[rows, cols])
    assert sorted(p.name for p in (tmp_path / "p").glob("r*.npy")) == ["r0_c0.npy", "r1_c2.npy"]

    store = ChunkStore(tmp_path / "p", "key-1", pred)
    assert store.reused == 2
    np.save(store.path(0, 0), np.full((2, 4, 4), -1.0, "float32"))  # mark the kept chunk
    resumed = store.dataset()
    COMPUTED.clear()
    with dask.config.set(scheduler="synchronous"):
        mean = resumed["mean"].values
    assert (mean[:4, :4] == -1).all()  # read from its file
    assert sorted(set(COMPUTED)) == [(0, 4), (0, 8), (4, 0), (4, 4)]  # the others computed
    np.testing.assert_array_equal(mean[4:, :], np.arange(48, 96).reshape(4, 12))

    # Another key (another model or config) or another chunking: nothing is reused.
    assert ChunkStore(tmp_path / "p", "key-2", pred).reused == 0
    assert not list((tmp_path / "p").glob("r*.npy"))
    store = ChunkStore(tmp_path / "q", "key-1", pred)
    store.on_block(0, (slice(0, 4), slice(0, 4)), np.zeros((4, 4)))
    store.on_block(1, (slice(0, 4), slice(0, 4)), np.zeros((4, 4)))
    assert ChunkStore(tmp_path / "q", "key-1", _prediction(chunks=8)).reused == 0


def _start_cluster(folder: Path) -> tuple[str, subprocess.Popen, list[subprocess.Popen]]:
    sched_file = folder / "scheduler.json"
    common = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    scheduler = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
         "--port", "0", "--no-dashboard", "--scheduler-file", str(sched_file)],
        **common,
    )  # fmt: skip
    t0 = time.monotonic()
    while not sched_file.exists() and time.monotonic() - t0 < 60:
        time.sleep(0.05)
    address = json.loads(sched_file.read_text())["address"]
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "distributed.cli.dask_worker",
                address,
                "--nthreads",
                "1",
                "--no-nanny",
                "--no-dashboard",
                "--memory-limit",
                "2GB",
                "--local-directory",
                str(folder / f"worker{i}"),
            ],
            **common,
        )
        for i in range(2)
    ]
    from distributed import Client

    with Client(address, timeout=60) as client:
        client.wait_for_workers(2, timeout=60)
    return address, scheduler, workers


def test_a_worker_lost_during_prediction(tmp_path: Path, reference: dict[str, str]) -> None:
    import threading

    cfg = _setup(tmp_path / "corpus")
    out = tmp_path / "corpus" / "out"
    _run(cfg, until="fit")
    address, scheduler, workers = _start_cluster(tmp_path)
    said: list[str] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            said.extend(_run(cfg, scheduler=address))
        except BaseException as exc:  # reported below
            errors.append(exc)

    try:
        thread = threading.Thread(target=run)
        thread.start()
        t0 = time.monotonic()
        while _chunks(out) < 2 and thread.is_alive() and time.monotonic() - t0 < 240:
            time.sleep(0.005)
        kept = _chunks(out)
        workers[0].kill()
        thread.join(timeout=240)
        assert workers[0].wait(timeout=30) == -signal.SIGKILL
        assert not errors, errors
        assert 2 <= kept < N_CHUNKS  # the worker died with chunks still to predict
        assert any("dask: connected to" in line and "2 worker(s)" in line for line in said)
        assert set(stage_status(out).values()) == {"complete"}
        assert _results(out) == reference
    finally:
        for p in (*workers, scheduler):
            if p.poll() is None:
                p.terminate()
                p.wait(timeout=30)
