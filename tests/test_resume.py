"""Killed runs resume from finished stages and finished chunks; a lost worker costs nothing.

The tiny workflow of ``tests/data/bad/base/run.yaml`` runs on a 5 km grid (80 x 96 cells,
30 chunks of 16 x 16) so that prediction takes long enough to be interrupted. Each test
fits first (in-process), then runs ``python -m mapping.cli run`` as a separate process and
interrupts it during prediction, once a number of chunks have been written to their files
in ``maps/.partial/``:

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
from mapping.grid import Grid
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
    return len(list((out / "maps" / ".partial" / "soc_0_30cm").glob("r*_c*.tif")))


# ``python -m mapping.cli`` with SIGINT raising KeyboardInterrupt. A process started as a
# background job of a non-interactive shell (``pytest ... &`` in a script) inherits SIGINT
# ignored, and Python then leaves it ignored: the interrupt below would be lost.
_MAIN = (
    "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "from mapping.cli import main; sys.exit(main())"
)


def _start_and_stop(cfg: Path, at: int, stop: object, scheduler: str = "synchronous") -> tuple:
    """Start ``socmap run`` in a process; call ``stop(proc)`` once ``at`` chunks are kept."""
    out = cfg.parent.parent / "out"
    proc = subprocess.Popen(
        [sys.executable, "-c", _MAIN, "run", str(cfg), "--scheduler", scheduler],
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
    assert len(_final_maps(out)) == 8  # with relative_uncertainty and the DI
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
GRID12 = Grid.from_bounds((0.0, 0.0, 12_000.0, 8_000.0), 1000.0, "EPSG:3413")


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
    return GRID12.attach(
        xr.Dataset(
            {"mean": (("y", "x"), base), "std": (("y", "x"), base / 10)},
            coords=dict(zip(("y", "x"), GRID12.coords(), strict=True)),
        )
    )


def _items(ds: object, folder: Path) -> list:
    return [(folder / f"{n}.tif", ds[n], {"statistic": n}) for n in ("mean", "std")]  # type: ignore[index]


def test_chunk_files_are_the_record_and_only_missing_chunks_are_computed(tmp_path: Path) -> None:
    import dask
    import numpy as np
    import rasterio

    from mapping.io import tiles, write_tiled_cogs

    partial = tmp_path / "p"

    # A run killed while writing: it had finished the chunks of the first row (their files
    # are complete; the others' files do not exist, as after a kill, since a file is
    # written under a temporary name and renamed).
    def killed(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tiles, "_assemble", killed)
        with dask.config.set(scheduler="synchronous"), pytest.raises(KeyboardInterrupt):
            write_tiled_cogs(_items(_prediction(), tmp_path / "a"), tiles=partial, key="key-1")
    for p in partial.glob("r1_c*.tif"):
        p.unlink()
    kept = sorted(p.name for p in partial.glob("r*_c*.tif"))
    finished = [(0, 0), (0, 1), (0, 2)]
    assert kept == ["r0_c0.tif", "r0_c1.tif", "r0_c2.tif"]
    assert not (tmp_path / "a").exists()  # no map
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name]  # no temporary

    # Mark a kept chunk: the resumed maps must read it from its file, not compute it.
    i, j = finished[0]
    with rasterio.open(partial / f"r{i}_c{j}.tif", "r+") as dst:
        dst.write(np.full((2, 4, 4), -1.0, "float32"))
    resumed: list[tuple[int, int]] = []
    COMPUTED.clear()
    with dask.config.set(scheduler="synchronous"):
        done = write_tiled_cogs(
            _items(_prediction(), tmp_path / "b"),
            tiles=partial,
            key="key-1",
            on_resume=lambda n, total: resumed.append((n, total)),
        )
    assert resumed == [(len(kept), 6)] and done.reused == len(kept)
    assert sorted((r // 4, c // 4) for r, c in COMPUTED) == sorted(
        {(a, b) for a in range(2) for b in range(3)} - set(finished)
    )  # only the chunks without a file
    with rasterio.open(done.paths[0]) as src:
        mean = src.read(1)
    expected = np.arange(96, dtype="float32").reshape(8, 12)
    expected[4 * i : 4 * i + 4, 4 * j : 4 * j + 4] = -1  # read from its file
    np.testing.assert_array_equal(mean, expected)
    assert not partial.exists()  # removed once the maps are in place

    # Another key (another model or config) or another chunking: nothing is reused.
    for key, chunks in (("key-2", 4), ("key-1", 8)):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(tiles, "_assemble", killed)
            with dask.config.set(scheduler="synchronous"), pytest.raises(KeyboardInterrupt):
                write_tiled_cogs(_items(_prediction(), tmp_path / "c"), tiles=partial, key="key-1")
        assert len(list(partial.glob("r*_c*.tif"))) == 6
        resumed.clear()
        COMPUTED.clear()
        with dask.config.set(scheduler="synchronous"):
            write_tiled_cogs(
                _items(_prediction(chunks), tmp_path / "d"),
                tiles=partial,
                key=key,
                on_resume=lambda n, total: resumed.append((n, total)),
            )
        assert not resumed and len(COMPUTED) == (6 if chunks == 4 else 2)


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
