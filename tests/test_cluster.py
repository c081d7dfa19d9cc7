"""Schedulers: the same workflow locally and on a real cluster on loopback; progress."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import dask
import dask.array as da
import numpy as np
import pandas as pd
import psutil
import pytest
import rasterio
import xarray as xr
from conftest import run_cli
from sklearn.linear_model import BayesianRidge

from mapping.cluster import (
    SMALL_WORK_CELLS,
    PeakRSS,
    compute_with_progress,
    dask_client,
    default_workers,
    in_process,
    process_map,
    scheduler_kind,
)
from mapping.config import load_config
from mapping.exceptions import ConfigError, SchedulerError
from mapping.grid import Grid
from mapping.layout import RunFolder
from mapping.predict import predict_grid, write_prediction
from mapping.run.manifest import Manifest
from mapping.run.runner import StageContext, _fit_ahead
from mapping.run.stages import grid_and_stack

GRID = Grid.from_bounds(
    (500_000, -1_000_000, 500_000 + 90 * 1000, -1_000_000 + 70 * 1000), 1000.0, "EPSG:6931"
)


def _stack() -> xr.Dataset:
    y, x = GRID.coords()
    yy, xx = np.meshgrid(y, x, indexing="ij")
    a = np.cos((xx - 500_000) / 20_000) + (yy + 1_000_000) / 70_000
    b = np.hypot(xx - 540_000, yy + 960_000) / 50_000
    a[30:35, 40:60] = np.nan
    ds = xr.Dataset({"a": (("y", "x"), a), "b": (("y", "x"), b)}, coords={"y": y, "x": x})
    return GRID.attach(ds.chunk({"y": 32, "x": 32}))


def _model() -> BayesianRidge:
    rng = np.random.default_rng(3)
    X = pd.DataFrame({"a": rng.normal(0, 1, 120), "b": rng.uniform(0, 2, 120)})
    X["x"] = rng.uniform(500_000, 590_000, 120)
    X["y"] = rng.uniform(-1_000_000, -930_000, 120)
    t = 10 + 3 * X.a - 2 * X.b + 1e-5 * (X.x - 500_000) + rng.normal(0, 0.5, 120)
    return BayesianRidge().fit(X, t)


def test_scheduler_specs(tmp_path: Path) -> None:
    assert scheduler_kind(None) == "local"
    assert scheduler_kind("local") == "local"
    assert scheduler_kind("tcp://10.0.0.5:8786") == "address"
    assert scheduler_kind("threads") == "threads"
    assert scheduler_kind(str(tmp_path / "scheduler.json")) == "file"
    with pytest.raises(ConfigError, match="scheduler: 'tcp:/oops'"):
        scheduler_kind("tcp:/oops")
    workers, threads = default_workers()
    assert workers >= 1 and threads == 1
    assert default_workers(3, 2) == (3, 2)


def test_unreachable_scheduler_is_a_user_error() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(SchedulerError, match=rf"tcp://127.0.0.1:{port}: cannot connect"):
        with dask_client(f"tcp://127.0.0.1:{port}", timeout=1.0, echo=lambda m: None):
            pass  # pragma: no cover


def test_in_process_scheduler_and_plain_progress_lines(capfd: pytest.CaptureFixture[str]) -> None:
    lines: list[str] = []
    with dask_client("synchronous", echo=lines.append) as client:
        assert client is None
        assert dask.config.get("scheduler") == "synchronous"
        x = da.arange(1000, chunks=100)
        (total, squares) = compute_with_progress(x.sum(), (x**2).sum(), label="summing")
    assert (total, squares) == (499_500, sum(i * i for i in range(1000)))
    assert "synchronous" in lines[0]
    err = capfd.readouterr().err  # not a terminal: plain log lines on stderr
    assert "summing: started" in err and "summing: done" in err and "100%" in err


def test_small_work_runs_on_threads_unless_a_cluster_is_asked_for() -> None:
    lines: list[str] = []
    with dask_client(None, echo=lines.append, n_cells=SMALL_WORK_CELLS) as client:
        assert client is None  # no cluster started for a sample-sized grid
        assert dask.config.get("scheduler") == "threads"
        assert int(da.arange(10, chunks=3).sum().compute()) == 45
    assert "threads" in lines[0] and f"{SMALL_WORK_CELLS:,} cells" in lines[0]
    # explicitly named schedulers are obeyed whatever the size
    with dask_client("synchronous", echo=lines.append, n_cells=10) as client:
        assert client is None and dask.config.get("scheduler") == "synchronous"
    # in_process says the same as dask_client does, before any client is started
    assert in_process(None, SMALL_WORK_CELLS) and not in_process(None, SMALL_WORK_CELLS + 1)
    assert in_process("threads", 10**9) and in_process("synchronous", None)
    assert not in_process("local", 10) and not in_process("tcp://127.0.0.1:8786", 10)


def test_a_small_in_process_run_reads_its_covariates_once(tmp_path: Path) -> None:
    """grid_and_stack holds a small stack in memory for an in-process run (the same values
    as the lazy stack) and leaves it lazy for a run on a cluster."""
    shutil.copytree(Path(__file__).parent / "data" / "bad", tmp_path / "corpus")
    cfg = load_config(tmp_path / "corpus" / "base" / "run.yaml")
    held = StageContext(config=cfg, out=cfg.output)
    _, stack = grid_and_stack(held)
    assert held.stack_held
    lazy = StageContext(config=cfg, out=cfg.output, scheduler="tcp://127.0.0.1:8786")
    _, lazy_stack = grid_and_stack(lazy)
    assert not lazy.stack_held
    for name in stack.data_vars:
        assert stack[name].chunks == lazy_stack[name].chunks
        # held: every chunk already an array in memory; lazy: the reads are still to run
        held_chunks = dict(stack[name].data.__dask_graph__()).values()
        lazy_chunks = dict(lazy_stack[name].data.__dask_graph__()).values()
        assert all(isinstance(v, np.ndarray) for v in held_chunks)
        assert not any(isinstance(v, np.ndarray) for v in lazy_chunks)
        np.testing.assert_array_equal(stack[name].values, lazy_stack[name].values)


def _seeded_draws(seed: int, n: int) -> np.ndarray:
    if seed < 0:
        raise ConfigError(f"seed {seed}: negative")
    return np.random.default_rng(seed).normal(size=n)


def _pid_and_draws(seed: int, n: int) -> tuple[int, np.ndarray]:
    time.sleep(0.2)  # long enough that both processes take jobs
    return os.getpid(), _seeded_draws(seed, n)


def test_process_map_equals_in_process_results_in_job_order() -> None:
    jobs = [{"seed": s, "n": 1000 + s} for s in (5, 1, 4, 2, 3)]
    expected = [_seeded_draws(**j) for j in jobs]
    for n_jobs in (1, 2):
        got = list(process_map(_seeded_draws, jobs, n_jobs))
        assert len(got) == len(expected)
        for g, e in zip(got, expected, strict=True):
            assert np.array_equal(g, e)  # same bits, same order
    # a job's exception arrives with its own type and message, from a helper process (the
    # first job goes to one) or from this process (which takes the second while waiting)
    bad = {"seed": -1, "n": 3}
    for batch in ([bad, *jobs], [jobs[0], bad], [*jobs, bad]):
        with pytest.raises(ConfigError, match="seed -1: negative"):
            list(process_map(_seeded_draws, batch, 2))
    # results stay in job order when this process and a helper share the jobs
    got = list(process_map(_pid_and_draws, jobs, 2))
    assert [np.array_equal(g[1], e) for g, e in zip(got, expected, strict=True)] == [True] * 5
    assert len({pid for pid, _ in got}) == 2 and os.getpid() in {pid for pid, _ in got}


def test_process_map_sends_no_job_to_a_pool_shut_down(tmp_path: Path) -> None:
    """The caller fails while a helper still runs a job, and the process exits (the pool
    shuts down): the helper's finished job must not try to start the next one (that
    printed a second, misleading traceback after the real error)."""
    script = tmp_path / "fail.py"
    script.write_text(
        "import time\n"
        "from mapping.cluster import process_map\n"
        "def f(seed):\n"
        "    time.sleep(0.3)\n"
        "    return seed\n"
        "if __name__ == '__main__':\n"
        "    results = process_map(f, [{'seed': s} for s in range(6)], 2)\n"
        "    next(results)\n"
        "    raise ValueError('the real error')\n"
    )
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert "ValueError: the real error" in run.stderr
    assert "exception calling callback" not in run.stderr
    assert "ShutdownExecutorError" not in run.stderr


def test_helpers_start_before_their_first_job_imported_and_stop_on_request(tmp_path: Path) -> None:
    """start_helpers starts the helper with no job sent (its imports done by its initializer),
    process_map's jobs then run in that same process, and stop_helpers ends it."""
    script = tmp_path / "warm.py"
    script.write_text(
        "import json, os, sys, time\n"
        "import psutil\n"
        "from mapping.cluster import process_map, start_helpers, stop_helpers\n"
        "def f(seed):\n"
        "    time.sleep(0.3)\n"
        "    return os.getpid(), 'mapping.validation' in sys.modules\n"
        "if __name__ == '__main__':\n"
        "    me = psutil.Process()\n"
        "    start_helpers(2)\n"
        "    deadline = time.time() + 60\n"
        "    while not me.children() and time.time() < deadline:\n"
        "        time.sleep(0.05)\n"
        "    before = [c.pid for c in me.children()]\n"
        "    got = list(process_map(f, [{'seed': s} for s in range(4)], 2))\n"
        "    stop_helpers()\n"
        "    alive = [c.pid for c in me.children() if c.status() != psutil.STATUS_ZOMBIE]\n"
        "    print(json.dumps({'before': before, 'got': got, 'me': os.getpid(), 'alive': alive}))\n"
    )
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    helpers = {pid for pid, _ in out["got"]} - {out["me"]}
    assert len(helpers) == 1  # one helper for two processes
    helper = helpers.pop()
    assert helper in out["before"]  # started before any job was sent
    assert all(imported for pid, imported in out["got"] if pid == helper)  # by its initializer
    assert helper not in out["alive"]


def test_peak_rss_sees_an_allocation() -> None:
    with PeakRSS(interval=0.02) as before:
        pass
    with PeakRSS(interval=0.02) as rss:
        block = np.ones(300 * 2**20 // 8)  # 300 MiB, touched
        time.sleep(0.1)
        del block
    assert rss.peak - before.peak > 250 * 2**20


@pytest.mark.cluster
def test_default_local_cluster_prints_dashboard(monkeypatch: pytest.MonkeyPatch) -> None:
    # a nanny started with distributed's defaults earlier in this process (another test's
    # cluster) left its MALLOC_TRIM_THRESHOLD_ in os.environ, which later workers inherit
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    lines: list[str] = []
    with dask_client(n_workers=1, dashboard_address=":0", echo=lines.append) as client:
        assert len(client.scheduler_info(n_workers=-1)["workers"]) == 1
        assert da.ones(10, chunks=5).sum().compute() == 10
        # the workers keep glibc's adaptive trimming, not distributed's 64 KiB threshold
        env = client.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_"))
        assert list(env.values()) == [None]
        # and a bounded GDAL block cache (GDAL's default is 5 % of the machine per process)
        assert list(client.run(lambda: os.environ.get("GDAL_CACHEMAX")).values()) == ["256"]
        assert client.run(lambda: os.environ.get("OMP_NUM_THREADS")) != {}  # rest kept
        # inside a session that has a client, the default is that client, left open
        with dask_client(echo=lines.append) as same:
            assert same is client
        with dask_client(client, echo=lines.append) as same:
            assert same is client
        assert client.status == "running"
    assert "local cluster, 1 worker(s) x 1 thread(s)" in lines[0]
    assert "dashboard http://" in lines[0]
    assert lines[1].startswith("dask: using client of tcp://127.0.0.1:")
    # a threshold the user set is kept
    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": 7}):
        with dask_client(n_workers=1, dashboard_address=None, echo=lines.append) as client:
            env = client.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_"))
    assert list(env.values()) == ["7"]


@contextlib.contextmanager
def _loopback_cluster(tmp_path: Path) -> Iterator[str]:
    """A real ``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1."""
    sched_file = tmp_path / "scheduler.json"
    dask_cli = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    procs = [
        subprocess.Popen(
            [*dask_cli, "--host", "127.0.0.1", "--port", "0", "--dashboard-address", "127.0.0.1:0",
             "--scheduler-file", str(sched_file)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
    ]  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while not sched_file.exists() or not sched_file.read_text().strip():
            if time.monotonic() > deadline or procs[0].poll() is not None:
                raise RuntimeError("dask scheduler did not start")
            time.sleep(0.1)
        address = json.loads(sched_file.read_text())["address"]
        for _ in range(2):
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1",
                     "--no-nanny", "--no-dashboard", "--host", "127.0.0.1"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )
            )  # fmt: skip
        yield address
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover
                p.kill()
                p.wait()


@pytest.mark.cluster
def test_loopback_cluster_gives_identical_maps(tmp_path: Path) -> None:
    from distributed import get_task_stream

    model = _model()
    prediction = predict_grid(model, _stack(), GRID, chunks=24)
    with dask.config.set(scheduler="threads"):
        local = write_prediction(prediction, tmp_path / "local", (0, 30), run_id="r")

    lines: list[str] = []
    with _loopback_cluster(tmp_path) as address:
        with dask_client(address, echo=lines.append) as client:
            client.wait_for_workers(2, timeout=20)
            with get_task_stream(client) as stream:
                remote = write_prediction(prediction, tmp_path / "remote", (0, 30), run_id="r")
            workers = {t["worker"] for t in stream.data if "socmap-predict" in str(t["key"])}
    assert lines and f"connected to {address}" in lines[0] and "dashboard" in lines[0]
    assert workers and all(w.startswith("tcp://127.0.0.1:") for w in workers)
    assert (
        set(local)
        == set(remote)
        == {"mean", "median", "lower", "upper", "std", "relative_uncertainty"}
    )
    for name in local:
        with rasterio.open(local[name]) as a, rasterio.open(remote[name]) as b:
            x, y = a.read(1), b.read(1)
        np.testing.assert_array_equal(x, y)
        assert np.isnan(x).sum() == 5 * 20  # the hole in covariate a


# --------------------------------------------------------------------------- socmap plan
def _plan_config(tmp_path: Path, extra: str = "", model: str = "random_forest") -> Path:
    cfg = tmp_path / "plan.yaml"
    cfg.write_text(
        "output: out\n"
        "profiles: {path: profiles.csv}\n"
        "stocks: {depths: ['0-30', '0-100']}\n"
        "grid: {crs: 'EPSG:6931', resolution: 1000, bounds: [0, 0, 1300000, 1000000]}\n"
        f"model: {{type: {model}, params: {{n_estimators: 5, max_depth: 4}}, log_transform: true}}\n"
        "prediction: {chunks: 512}\n" + extra
    )
    return cfg


def test_plan_sizes_by_hand(tmp_path: Path) -> None:
    from mapping.cluster import WORKER_GDAL_CACHE_MB
    from mapping.config import load_config
    from mapping.run.plan import BATCH_OVERHEAD, TASK_OVERHEAD, WORKER_BASELINE, make_plan

    extra = "covariates:\n" + "".join(f"  - {{name: c{i}, path: c{i}.tif}}\n" for i in range(3))
    cfg = load_config(_plan_config(tmp_path, extra), check_files=False)
    plan = make_plan(cfg, threads_per_worker=2, calibrate=False)
    assert plan.grid.shape == (1000, 1300) and plan.cells == 1_300_000
    assert plan.n_chunks == 2 * 3  # ceil(1000 / 512) x ceil(1300 / 512)
    assert plan.intervals == ["0-30", "0-100"]
    assert plan.outputs == ["mean", "median", "lower", "upper", "std", "di", "aoa"]
    cells = 512 * 512
    task = cells * (3 * 8 + 7 * 4) * TASK_OVERHEAD + cells * (3 + 2) * 8 * BATCH_OVERHEAD
    assert plan.task_bytes == int(task)
    gdal = WORKER_GDAL_CACHE_MB * 2**20  # the block cache a local cluster's workers get
    assert plan.worker_bytes == int(WORKER_BASELINE + gdal + 2 * task)  # no model: none counted
    text = "\n".join(plan.lines())
    assert "1,000 x 1,300 cells" in text and "6 per interval, 12 tasks" in text
    assert "leaves out the model's size" in text


def test_plan_says_how_it_prices_a_layered_run(tmp_path: Path) -> None:
    """A layered config is priced as per-interval models; the plan says so, and in which
    direction each estimate errs. A per-interval config gets no such note."""
    from mapping.config import load_config
    from mapping.run.plan import make_plan

    extra = "covariates:\n  - {name: c0, path: c0.tif}\n"
    per = load_config(_plan_config(tmp_path, extra), check_files=False)
    assert not any("layered" in n for n in make_plan(per, calibrate=False).notes)
    text = (
        _plan_config(tmp_path, extra)
        .read_text()
        .replace("log_transform: true}", "log_transform: true, depth: layered}")
    )
    (tmp_path / "plan.yaml").write_text(text)
    layered = load_config(tmp_path / "plan.yaml", check_files=False)
    assert layered.model.depth == "layered"
    note = next(n for n in make_plan(layered, calibrate=False).notes if "layered" in n)
    assert "an upper bound" in note and "a lower bound" in note
    assert "model.depth: layered" in "\n".join(make_plan(layered, calibrate=False).lines())


def test_plan_calibrates_with_stand_in_then_with_fitted_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import joblib

    from mapping.config import load_config
    from mapping.io import write_cog
    from mapping.run.plan import make_plan, stand_in_model

    grid = Grid.from_bounds((0, 0, 700_000, 600_000), 1000.0, "EPSG:6931")
    y, x = grid.coords()
    for i, f in enumerate((np.sin, np.cos)):
        z = f(np.add.outer(y / 9e4, x / 7e4) + i).astype("float32")
        z[:200, :] = np.nan  # 1/3 of the grid is nodata
        write_cog(grid.wrap(z), tmp_path / f"c{i}.tif", overviews=False)
    extra = "covariates:\n  - {name: c0, path: c0.tif}\n  - {name: c1, path: c1.tif}\n"
    cfg_path = _plan_config(tmp_path, extra)
    (tmp_path / "profiles.csv").write_text("profile_id,lon,lat,top_cm,bottom_cm,soc_pct\n")
    cfg = load_config(cfg_path, check_files=False)
    plan = make_plan(cfg, sample_chunks=2)
    cal = plan.calibration
    assert cal is not None and cal.chunks == 2
    assert "stand-in QuantileRandomForest" in cal.model
    assert cal.covariates == "read from the covariate files"
    assert (
        abs(cal.valid_share - 400 * 700 / (1000 * 1300)) < 0.01
    )  # covariates cover part of the grid
    assert 0 < plan.seconds(8) < plan.seconds(2) < plan.seconds(1)

    # with profiles to read, the stand-in learns from one row per profile, as the fit will
    # (a forest grows deeper with more rows, and its prediction slower)
    rows = [
        f"P{i:04d},{100 + i * 0.01:.2f},68.5,{top},{top + 30},1.5"
        for i in range(300)
        for top in (0, 30)
    ]
    (tmp_path / "profiles.csv").write_text(
        "profile_id,lon,lat,top_cm,bottom_cm,soc_pct\n" + "\n".join(rows) + "\n"
    )
    from mapping.run.plan import MIN_STAND_IN_ROWS, _profile_count

    assert _profile_count(cfg) == 300
    plan = make_plan(cfg, sample_chunks=1)
    assert plan.calibration is not None and "300 rows, one per profile" in plan.calibration.model
    # and the whole run is estimated stage by stage, the fit from the timed stand-in's fit
    assert plan.run is not None and plan.run.seconds["fit"] > 0
    assert plan.run.seconds["predict"] == plan.seconds(plan.run.cores)
    assert "zones" not in plan.run.seconds  # the config names no zones

    # a table of two profiles gives a stand-in of the fewest rows a forest can work with
    (tmp_path / "profiles.csv").write_text(
        "profile_id,lon,lat,top_cm,bottom_cm,soc_pct\n" + "\n".join(rows[:4]) + "\n"
    )
    assert _profile_count(cfg) == 2
    plan = make_plan(cfg, sample_chunks=1)
    assert plan.calibration is not None
    assert f"{MIN_STAND_IN_ROWS} rows:" in plan.calibration.model

    # a fitted model in the output folder is used instead of a stand-in
    fitted = stand_in_model(cfg, ["c0", "c1"], grid, n_train=200)
    (tmp_path / "out" / "models" / "0-30").mkdir(parents=True)
    joblib.dump(fitted, tmp_path / "out" / "models" / "0-30" / "model.joblib")
    plan = make_plan(cfg, sample_chunks=1)
    assert plan.calibration is not None and plan.calibration.model.startswith("fitted model")
    assert plan.model_bytes > 0 and not plan.notes
    assert plan.calibration.interval_seconds and len(plan.calibration.interval_seconds) == 1
    # with a model for every interval, each is timed and the rate is their mean
    (tmp_path / "out" / "models" / "0-100").mkdir(parents=True)
    joblib.dump(fitted, tmp_path / "out" / "models" / "0-100" / "model.joblib")
    plan = make_plan(cfg, sample_chunks=1)
    cal = plan.calibration
    assert cal is not None and cal.model.startswith("fitted models of 2 intervals")
    assert len(cal.interval_seconds) == 2
    assert cal.predict_seconds == pytest.approx(sum(cal.interval_seconds) / 2)
    assert cal.read_chunks >= cal.chunks  # chunks without data are read too

    capsys.readouterr()
    assert run_cli(["plan", str(cfg_path), "--workers", "4", "--sample-chunks", "1"]) == 0
    out = capsys.readouterr().out
    assert "memory/worker:" in out and "fitted model" in out
    assert "4 worker(s) x 1 thread(s):" in out
    assert "whole run here: ~" in out and "peak memory of the process tree" in out
    assert run_cli(["plan", str(tmp_path / "missing.yaml")]) == 2
    assert capsys.readouterr().err.strip().endswith("missing.yaml: config file not found")


def test_plan_writes_and_assembles_only_chunks_with_data(tmp_path: Path) -> None:
    """Chunks without data are read but write no file and add nothing to the COGs; the
    share of cells in chunks with data comes from the stack's sample, by hand here."""
    import dataclasses

    from mapping.config import load_config
    from mapping.covariates import build_stack, summarize_stack
    from mapping.io import write_cog
    from mapping.run.plan import PARALLEL_EFFICIENCY, Calibration, make_plan

    grid = Grid.from_bounds((0, 0, 1_300_000, 1_000_000), 1000.0, "EPSG:6931")
    z = np.full(grid.shape, np.nan, dtype="float32")
    z[600:700, 100:200] = 1.0  # data in the chunk of rows 512-999 x cols 0-511 only
    z[50, 1290] = 2.0  # and one cell in the chunk of rows 0-511 x cols 1024-1299
    write_cog(grid.wrap(z), tmp_path / "c0.tif", overviews=False)
    extra = "covariates:\n  - {name: c0, path: c0.tif}\n"
    cfg = load_config(_plan_config(tmp_path, extra), check_files=False)
    summary = summarize_stack(build_stack(cfg.covariates, grid, chunks=512), sample=1300)
    assert summary.sample_factor == 1  # every cell sampled: the share is exact
    assert summary.data_chunk_share(512) == pytest.approx((488 * 512 + 512 * 276) / 1_300_000)
    coarse = summarize_stack(build_stack(cfg.covariates, grid, chunks=512), sample=256)
    assert coarse.sample_factor == 6
    assert coarse.data_chunk_share(512) == pytest.approx(
        488 * 512 / 1_300_000
    )  # a lone cell missed
    assert coarse.data_chunk_share(2000) == 1.0  # one chunk holds the whole grid

    plan = make_plan(cfg, calibrate=False)
    cal = Calibration(
        chunks=2, cells=2000, valid_cells=1000, predict_seconds=0.01, read_seconds=0.5,
        tile_seconds=0.2, assemble_seconds=0.6, written_cells=10_000, written_maps=6,
        valid_share=0.01, model="m", covariates="c", read_chunks=5, data_chunk_share=0.25,
    )  # fmt: skip
    plan = dataclasses.replace(plan, calibration=cal)
    chunk_cells = 1_300_000 / 6
    read, model = 0.5 / 5, 0.01 / 1000 * chunk_cells * 0.01  # reads of every chunk
    files = 6 * 0.25 * chunk_cells * 0.2 / 10_000  # files of the chunks with data only
    compute = 2 * (6 * (read + model) + files)
    one_map = 1_300_000 * 0.25 * 0.6 / (10_000 * 6)
    assemble = 2 * 8 * one_map  # mean, median, lower, upper, std, di, aoa, relative unc.
    assert plan.seconds(1) == pytest.approx(compute + assemble)
    eff = 2 * PARALLEL_EFFICIENCY
    assert plan.seconds(2) == pytest.approx(
        max((compute + assemble) / eff, compute / eff + 4 * one_map)
    )
    full = dataclasses.replace(plan, calibration=dataclasses.replace(cal, data_chunk_share=1.0))
    assert full.seconds(1) == pytest.approx(
        compute + 6 * 2 * 0.75 * chunk_cells * 0.2 / 10_000 + 4 * assemble
    )


def test_whole_run_estimate_by_hand(tmp_path: Path) -> None:
    import geopandas as gpd
    import pandas as pd
    import shapely

    from mapping.config import load_config
    from mapping.io import write_cog
    from mapping.run import estimate as est

    grid = Grid.from_bounds((0, 0, 1_300_000, 1_000_000), 1000.0, "EPSG:6931")
    zones = np.zeros(grid.shape, dtype="int32")
    zones[100:300, 600:1000] = 1  # 80,000 zone cells, all in chunks of rows 0-511
    zones[900:950, 0:10] = 2
    write_cog(grid.wrap(zones).rio.write_nodata(0), tmp_path / "zones.tif", overviews=False)
    extra = (
        "zones: {path: zones.tif, names: {1: a, 2: b}}\n"
        "uncertainty: {n_realizations: 10}\n"
        "stocks: {depths: ['0-30', '0-100'], depth_tolerance_cm: 5}\n"
    )
    cfg = load_config(_plan_config(tmp_path, extra), check_files=False)
    inside, chunked = est.zone_cover(cfg, grid, 512)
    assert inside == pytest.approx((80_000 + 500) / 1_300_000, rel=0.02)  # decimated read
    # chunks holding a zone cell: rows 0-511 x cols 512-1023 and rows 512-999 x cols 0-511
    assert chunked == pytest.approx((512 * 512 + 488 * 512) / 1_300_000)
    # polygons: the same by area and by the chunks they touch
    gdf = gpd.GeoDataFrame(
        {"z": [1]}, geometry=[shapely.box(600e3, 700e3, 1000e3, 900e3)], crs=6931
    )
    gdf.to_file(tmp_path / "zones.gpkg")
    cfg_v = load_config(
        _plan_config(tmp_path, extra.replace("zones.tif", "zones.gpkg, field: z")),
        check_files=False,
    )
    assert est.zone_cover(cfg_v, grid, 512) == pytest.approx(
        (80_000 / 1_300_000, 512**2 / 1_300_000)
    )

    table = pd.DataFrame(
        {"profile_id": ["a", "a", "b", "c", "c"], "bottom_cm": [30, 96, 25, 20, 40]}
    )
    assert est.profiles_reaching(cfg, table) == [3, 1]  # 0-30 within 5 cm: b; 0-100: a only
    # c's horizons reach its rock at 40 cm: it serves 0-100 cm too (stock 0 below the rock);
    # b's rock at 60 cm is below its last horizon (25 cm), so b does not
    rock = table.assign(lithic_contact_cm=[None, None, 60.0, 40.0, 40.0])
    assert est.profiles_reaching(cfg, rock) == [3, 2]

    e = est.estimate_run(
        cfg, cells=1_300_000, valid_share=0.5, predict_seconds=100.0,
        speed=2.0, fit_one_seconds=4.0, n_profiles=3,
        reaching=[3, 1], zones=(0.1, 0.4), cores=2, worker_bytes=2**30,
    )  # fmt: skip
    speed, cores = 2.0, 2
    fit = [4.0 * est.FIT_PASSES, 4.0 * est.FIT_PASSES / 3]  # two intervals on two processes
    assert e.seconds["fit"] == pytest.approx(max(max(fit), sum(fit) / 2))
    # cv.repeats: every further partition adds its folds' fits
    rep = cfg.model_copy(update={"cv": cfg.cv.model_copy(update={"repeats": 3})})
    r = est.estimate_run(
        rep, cells=1_300_000, valid_share=0.5, predict_seconds=100.0,
        speed=2.0, fit_one_seconds=4.0, n_profiles=3,
        reaching=[3, 1], zones=(0.1, 0.4), cores=2, worker_bytes=2**30,
    )  # fmt: skip
    passes = est.FIT_PASSES + 2 * cfg.cv.n_splits
    assert r.seconds["fit"] == pytest.approx(4.0 * passes)
    assert any(f"{passes:g} passes per interval (3 CV partitions)" in b for b in r.basis)
    assert e.seconds["predict"] == 100.0
    zone_cells, chunk_cells = 1_300_000 * 0.1, 1_300_000 * 0.4
    assert e.seconds["zones"] == pytest.approx(
        chunk_cells * 2 * est.ZONES_US * 1e-6 * speed / cores
    )
    draws = 10 * 2 * (est.REALIZATION_SECONDS + zone_cells * est.MC_US * 1e-6)
    assert e.seconds["uncertainty"] == pytest.approx(draws * speed / cores)
    # the Monte Carlo lattice spans the grid: a grid of a tenth of the hemisphere's extent
    # draws its lattice in a tenth of the time (the per-cell part is unchanged)
    small = est.estimate_run(
        cfg, cells=1_300_000, valid_share=0.5, predict_seconds=100.0,
        speed=2.0, fit_one_seconds=4.0, n_profiles=3, reaching=[3, 1], zones=(0.1, 0.4),
        cores=2, worker_bytes=2**30, extent_m2=est.REFERENCE_EXTENT_M2 / 10,
    )  # fmt: skip
    draws = 10 * 2 * (est.REALIZATION_SECONDS / 10 + zone_cells * est.MC_US * 1e-6)
    assert small.seconds["uncertainty"] == pytest.approx(draws * speed / cores)
    assert small.seconds["uncertainty"] < 0.5 * e.seconds["uncertainty"]
    # three figures per interval, each at the cost of a full (1000 x 1000) map view
    report = est.REPORT_SECONDS + 6 * est.REPORT_MAP_SECONDS * 1.0
    assert e.seconds["report"] == pytest.approx(report * speed / cores)
    fixed = est.FIXED_SECONDS + est.FIXED_SECONDS_PER_MCELL * 1.3
    assert e.seconds["start-up, stocks, training"] == pytest.approx(fixed * speed)
    # a sample-sized grid (400 x 320) draws views of 0.128 million pixels: a cheaper report
    sample = est.estimate_run(
        cfg, cells=128_000, valid_share=0.5, predict_seconds=100.0,
        speed=2.0, fit_one_seconds=4.0, n_profiles=3, reaching=[3, 1], zones=(0.1, 0.4),
        cores=2, worker_bytes=2**30, shape=(400, 320),
    )  # fmt: skip
    report = est.REPORT_SECONDS + 6 * est.REPORT_MAP_SECONDS * 0.128
    assert sample.seconds["report"] == pytest.approx(report * speed / cores)
    assert est.map_view_mpx((14_000, 14_000)) == 1.0  # decimated by 14
    assert est.map_view_mpx((1001, 10)) == pytest.approx(501 * 5 / 1e6)  # by 2, rounded up
    assert e.total == pytest.approx(sum(e.seconds.values()))
    # the Monte Carlo's chunk in flight is at most the grid (1.3 M cells < a 2334^2 chunk)
    mc_bytes = est.CLIENT_BASELINE + 2 * 1_300_000 * est.MC_BYTES_PER_CELL
    assert e.peak_bytes == int(max(2 * 2**30 + est.CLIENT_BASELINE, mc_bytes))
    big = est.estimate_run(
        cfg, cells=196_000_000, valid_share=0.5, predict_seconds=100.0,
        speed=2.0, fit_one_seconds=4.0, n_profiles=3, reaching=[3, 1], zones=(0.1, 0.4),
        cores=2, worker_bytes=2**30,
    )  # fmt: skip
    mc_bytes = est.CLIENT_BASELINE + 2 * est.MC_CHUNK_CELLS * est.MC_BYTES_PER_CELL
    assert big.peak_bytes == int(mc_bytes) > e.peak_bytes


def test_release_memory_freezes_what_survives_and_a_run_thaws_it() -> None:
    """Between stages the survivors are frozen out of later collections (each full
    collection of the imported libraries cost ~0.2 s); the run unfreezes them at its end."""
    import gc

    from mapping.cluster import release_memory

    gc.unfreeze()
    release_memory()
    try:
        assert gc.get_freeze_count() > 10_000  # numpy, pandas, sklearn, ... are loaded
        kept = []
        kept.append(kept)  # a cycle made after the freeze is still collected
        del kept
        assert gc.collect() >= 1
    finally:
        gc.unfreeze()


@pytest.mark.parametrize("wait_s", [1.0, 0.0])
def test_a_killed_process_leaves_no_helper_holding_its_pipes(tmp_path: Path, wait_s: float) -> None:
    """A process killed with SIGKILL runs no exit code: its helper must end by itself, or it
    idles for loky's 300 s timeout with the dead process's stdout and stderr open. Killed
    at once (``wait_s`` 0), the parent is gone before its helper's initializer runs: the
    helper must still know whom it serves."""
    script = tmp_path / "killed.py"
    script.write_text(
        "import os, signal, time\n"
        "import psutil\n"
        "from mapping.cluster import start_helpers\n"
        "me = psutil.Process()\n"
        "start_helpers(2)\n"
        "helpers, deadline = [], time.time() + 60\n"
        "while not helpers and time.time() < deadline:\n"
        "    helpers = [c.pid for c in me.children() if 'popen_loky' in ' '.join(c.cmdline())]\n"
        "    time.sleep(0.05)\n"
        "print(helpers[0], flush=True)\n"
        f"time.sleep({wait_s})\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    out, _ = proc.communicate(timeout=90)  # returns once every holder of the pipes is gone
    assert proc.returncode == -signal.SIGKILL
    helper = int(out.split()[0])
    deadline = time.time() + 10
    while psutil.pid_exists(helper) and time.time() < deadline:
        if psutil.Process(helper).status() == psutil.STATUS_ZOMBIE:
            break
        time.sleep(0.1)
    assert not psutil.pid_exists(helper) or psutil.Process(helper).status() == psutil.STATUS_ZOMBIE


def test_runs_start_the_helpers_ahead_only_when_the_fit_is_to_run(tmp_path: Path) -> None:
    cfg = load_config(Path(__file__).parent / "data" / "bad" / "base" / "run.yaml")
    stages = [SimpleNamespace(name=n) for n in ("stocks", "training", "fit", "predict", "report")]

    def ahead(fit_status: str | None, until: str | None = None, force: bool = False) -> bool:
        manifest = Manifest(RunFolder(tmp_path / (fit_status or "none")), cfg)
        if fit_status:
            manifest.record("fit", status=fit_status)
        return _fit_ahead(manifest, stages, until, force)  # type: ignore[arg-type]

    assert ahead(None) and ahead("running") and ahead("failed")
    assert not ahead("complete")  # reused (the report starts its helper when it needs one)
    assert ahead("complete", force=True)
    assert not ahead(None, until="training") and ahead(None, until="fit")
    empty = Manifest(RunFolder(tmp_path / "empty"), cfg)
    assert not _fit_ahead(empty, stages[:2], None, True)  # type: ignore[arg-type]
