"""Where the work runs: Dask schedulers, progress display and block-wise computing.

The same lazy graph runs on any scheduler:

* ``None`` or ``"local"`` (default): a :class:`distributed.LocalCluster` sized to the
  machine (one single-threaded worker process per usable core, memory split evenly);
* ``"tcp://HOST:PORT"`` (or ``tls://``): an existing Dask distributed cluster, e.g. one
  started by dask-jobqueue on SLURM/PBS or by dask-kubernetes / dask-gateway;
* a path to a scheduler file (``dask scheduler --scheduler-file scheduler.json``);
* ``"threads"`` or ``"synchronous"``: Dask's in-process schedulers, no cluster (debugging).

Long computations show a rich progress bar when stdout is a terminal and plain log lines
(on stderr) otherwise; :func:`compute_with_progress` and :func:`store_blocks` do both.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import importlib
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dask
import numpy as np

from mapping.exceptions import ConfigError, SchedulerError

if TYPE_CHECKING:
    import dask.array
    from distributed import Client

log = logging.getLogger("socmap")

LOCAL_SCHEDULERS = ("threads", "synchronous")
SMALL_WORK_CELLS = 2_000_000
"""Grids of at most this many cells run on in-process threads when no scheduler is named:
a local cluster's start-up, worker imports and model shipping (4-8 s on 2 cores) cost more
than its processes save on such a grid (``benchmarks/bench_sample_run.py``)."""
WORKER_TRIM_THRESHOLD = 65536
"""distributed's default ``MALLOC_TRIM_THRESHOLD_`` for the workers it spawns. It hands
every freed page back at once, so each new block of a prediction faults its pages in
again: a quarter of a worker's CPU time went to the kernel on the hemisphere world
(``benchmarks/bench_malloc.py``). socmap's local clusters leave glibc's own, adaptive
thresholds in place instead (unless the Dask config or the environment sets another)."""
WORKER_GDAL_CACHE_MB = 256
"""GDAL's block cache (MB) of a local cluster's workers and, unless ``GDAL_CACHEMAX`` is set,
of every process that imports :mod:`mapping.io`. GDAL's default, 5 % of the machine's
memory per process, fills with covariate blocks a chunk reads once and while the COG driver
builds overviews; a larger cache only holds memory."""
DEFAULT_DASHBOARD = "127.0.0.1:8787"
"""Where a local cluster's dashboard listens unless told otherwise: loopback only."""
_ADDRESS = re.compile(r"^(tcp|tls|ucx)://[^\s/:]+(:\d+)?/?$")


# --------------------------------------------------------------------------- memory
def release_memory() -> None:
    """Collect garbage and hand the heap's free pages back to the operating system.

    glibc keeps freed memory in its arenas for reuse (one per thread that allocated), so a
    process that has held a stage's blocks stays that large afterwards; the next stage
    then adds its own peak on top. ``malloc_trim(0)`` returns the free pages (what dask
    distributed does for its workers). A no-op where the C library has no
    ``malloc_trim``.

    What survives the collection is frozen out of later ones (``gc.freeze``): the
    imported libraries' millions of objects made every full collection of a run cost
    ~0.2 s; later collections scan only what was made since. Frozen objects are still
    freed by reference counting; only a cycle among them would wait for the process's end.
    """
    gc.collect()
    gc.freeze()
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # pragma: no cover - musl and other C libraries
        pass


# --------------------------------------------------------------------------- sizing
def usable_cores() -> int:
    """Cores this process may run on (CPU affinity / cgroup aware where the OS says so)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return max(1, os.cpu_count() or 1)


def process_map(
    func: Callable[..., Any], jobs: Sequence[dict[str, Any]], n_jobs: int | None = None
) -> Iterator[Any]:
    """``func(**job)`` for every job, run by up to ``n_jobs`` processes: this one and
    ``n_jobs - 1`` helpers.

    For work that holds the GIL (fitting many small forests, drawing figures) and whose
    inputs and results pickle cheaply. The helpers are loky's reusable pool, so a second
    call in the same run finds them started and their imports done. One job, or
    ``n_jobs`` 1, runs in this process alone.

    The first jobs go to the helpers when this is called and the next whenever one
    finishes; this process runs the next job not yet started whenever it waits for a
    result. It has its imports done while a helper is still starting (about 3 s of
    imports on this class of machine), and two processes on two cores do not share them
    with a third. Results are yielded in the order of ``jobs`` (the caller can do other
    work meanwhile, or write one result while the next is computed) and equal the
    in-process results: every job carries its own seeds, and a job run here has one
    BLAS/OpenMP thread as a helper has. An exception of a job is raised here, with its own
    type, when its result is read.

    Parameters
    ----------
    func
        A module-level function (it is pickled by reference).
    jobs
        Keyword arguments of each call.
    n_jobs
        Processes at most, this one included; ``None``: the usable cores
        (:func:`usable_cores`).
    """
    n = min(len(jobs), n_jobs or usable_cores())
    if n <= 1:
        return (func(**job) for job in jobs)
    return _SharedJobs(func, list(jobs), n - 1).results()


_HELPERS: list[Any] = []  # the loky executor process_map started, if any


def stop_helpers() -> None:
    """Stop :func:`process_map`'s helper processes now, without their interpreter's exit.

    For the end of a command: an idle helper otherwise lives until this process exits,
    which then waits for the helper's own orderly exit (about a second of garbage
    collection over its imported libraries) before its own. The helpers hold no state
    and no open files; a later :func:`process_map` starts new ones.
    """
    while _HELPERS:
        _HELPERS.pop().shutdown(wait=True, kill_workers=True)


# What the jobs of a run import (the fit's forests and kriging, the report's figures):
# a helper started ahead of its first job imports them meanwhile.
JOB_MODULES = ("mapping.validation", "mapping.report.figures")


def _start_helper(parent: int) -> None:
    """A helper's initializer: end with ``parent`` (the process that started it), then
    import :data:`JOB_MODULES` (by name, to keep this module light).

    ``parent`` comes from the parent itself, not from ``os.getppid()`` here: on a loaded
    machine the initializer can run after the parent was killed, when ``getppid()``
    already names init and the watch would wait for the wrong process.
    """
    watch = threading.Thread(
        target=_exit_with_parent, args=(parent,), daemon=True, name="socmap-parent"
    )
    watch.start()
    for name in JOB_MODULES:
        importlib.import_module(name)


def _exit_with_parent(parent: int, interval: float = 0.5) -> None:
    """End this helper once ``parent`` is gone (it was killed: no orderly shutdown came).

    An idle helper does not notice its parent's death: it would wait for jobs until loky's
    idle timeout (300 s), keeping the parent's stdout and stderr open (a ``socmap run |
    tee log`` killed with SIGKILL would hang that long).
    """
    while os.getppid() == parent:
        time.sleep(interval)
    os._exit(1)


def _executor(helpers: int) -> Any:
    """loky's reusable pool of ``helpers`` processes (started, or reused as it is)."""
    from joblib.externals.loky import get_reusable_executor

    # one BLAS/OpenMP thread per process: the cores are shared out by processes
    env = {v: "1" for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                            "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")}  # fmt: skip
    executor = get_reusable_executor(
        max_workers=helpers,
        env=env,
        timeout=300,
        initializer=_start_helper,
        initargs=(os.getpid(),),
    )
    if executor not in _HELPERS:
        _HELPERS.append(executor)
    return executor


def start_helpers(n_jobs: int | None = None) -> None:
    """Start :func:`process_map`'s helper processes now, ahead of their first jobs.

    A helper spends ~3 s importing the libraries of its jobs; started when a run starts
    (:func:`mapping.run.runner.run_stages`, when the fit is to run), it does so on the
    other core while this process runs the stages before the fit, and the fit's first
    jobs find it ready. No job is sent: loky measures a helper's memory
    after its first job as the reference of its leak check, which must be a real job.
    ``n_jobs`` as in :func:`process_map`; a no-op for one process.
    """
    helpers = (n_jobs or usable_cores()) - 1
    if helpers < 1:
        return
    executor = _executor(helpers)
    with contextlib.suppress(AttributeError):  # loky's start without a job (private)
        executor._ensure_executor_running()


class _SharedJobs:
    """Jobs taken in order by ``helpers`` loky processes and by this process."""

    def __init__(self, func: Callable[..., Any], jobs: list[dict[str, Any]], helpers: int) -> None:
        self.func, self.jobs = func, jobs
        self.lock = threading.Lock()
        self.done = threading.Condition(self.lock)
        self.next = 0  # the next job not yet started
        self.outcome: dict[int, tuple[bool, Any]] = {}  # index -> (ok, result or exception)
        self.executor = _executor(helpers)
        for _ in range(helpers):
            self._send()

    def _take(self) -> int | None:
        with self.lock:
            if self.next >= len(self.jobs):
                return None
            self.next += 1
            return self.next - 1

    def _send(self) -> None:
        i = self._take()
        if i is None:
            return
        try:
            future = self.executor.submit(self.func, **self.jobs[i])
        except RuntimeError:  # the pool shut down: this process is exiting on an error
            return
        future.add_done_callback(functools.partial(self._finished, i))

    def _finished(self, i: int, future: Any) -> None:
        exc = future.exception()
        with self.done:
            self.outcome[i] = (exc is None, future.result() if exc is None else exc)
            self.done.notify_all()
        self._send()  # keep the helper busy

    def _ready(self, i: int) -> bool:
        return i in self.outcome

    def _run_here(self, i: int) -> None:
        from threadpoolctl import threadpool_limits

        try:
            with threadpool_limits(limits=1):
                out: tuple[bool, Any] = (True, self.func(**self.jobs[i]))
        except Exception as exc:  # raised when its result is read, as a helper's
            out = (False, exc)
        with self.done:
            self.outcome[i] = out
            self.done.notify_all()

    def results(self) -> Iterator[Any]:
        try:
            for i in range(len(self.jobs)):
                while True:
                    with self.done:
                        if i in self.outcome:
                            ok, value = self.outcome.pop(i)
                            break
                    j = self._take()
                    if j is not None:
                        self._run_here(j)
                        continue
                    with self.done:
                        self.done.wait_for(functools.partial(self._ready, i))
                if not ok:
                    raise value
                yield value
        finally:  # a failed job or a caller that stops reading: start no more jobs
            with self.lock:
                self.next = len(self.jobs)


def default_workers(
    n_workers: int | None = None, threads_per_worker: int | None = None
) -> tuple[int, int]:
    """``(n_workers, threads_per_worker)`` for a local cluster sized to the machine.

    Prediction kernels spend much of their time in Python-level model code that holds
    the GIL, so the default is one single-threaded worker process per usable core.
    """
    cores = usable_cores()
    threads = int(threads_per_worker or 1)
    workers = int(n_workers or max(1, cores // threads))
    if workers < 1 or threads < 1:
        raise ConfigError(
            f"n_workers={n_workers}, threads_per_worker={threads_per_worker}: must be >= 1"
        )
    return workers, threads


# --------------------------------------------------------------------------- clients
def scheduler_kind(scheduler: str | os.PathLike[str] | None) -> str:
    """Classify a scheduler spec: ``"local"``, ``"address"``, ``"file"`` or ``"threads"``.

    Raises
    ------
    ConfigError
        The spec is none of the accepted forms.
    """
    if scheduler is None or str(scheduler).strip().lower() in {"", "local"}:
        return "local"
    text = str(scheduler).strip()
    if text.lower() in LOCAL_SCHEDULERS:
        return "threads"
    if _ADDRESS.match(text):
        return "address"
    if text.endswith(".json") or Path(text).is_file():
        return "file"
    raise ConfigError(
        f"scheduler: {text!r} is not 'local', 'threads', 'synchronous', an address "
        "like tcp://HOST:PORT or a scheduler file (.json)"
    )


@contextlib.contextmanager
def dask_client(
    scheduler: str | os.PathLike[str] | Client | None = None,
    n_workers: int | None = None,
    threads_per_worker: int | None = None,
    *,
    memory_limit: str | float | None = "auto",
    dashboard_address: str | None = DEFAULT_DASHBOARD,
    echo: Callable[[str], None] | None = None,
    timeout: float = 20.0,
    security: Any = None,
    n_cells: int | None = None,
) -> Iterator[Client | None]:
    """Run the enclosed computations on a Dask scheduler; print where its dashboard is.

    Parameters
    ----------
    scheduler
        ``"local"`` for a new local cluster sized to the machine, ``"tcp://HOST:PORT"``
        for an existing cluster, a scheduler-file path, ``"threads"``/``"synchronous"``
        for Dask's in-process schedulers (then ``None`` is yielded), or a
        :class:`distributed.Client` to use as it is (dask-gateway, dask-kubernetes and
        notebooks hand out clients). ``None`` uses the session's default client when
        there is one, else starts a local cluster. A client this function did not
        create is not closed on exit.
    n_workers, threads_per_worker
        Size of a local cluster (default: one single-threaded worker per usable core).
        Ignored when connecting to an existing cluster.
    memory_limit
        Per-worker memory limit of a local cluster (``"auto"``: total memory / workers).
    dashboard_address
        Where a local cluster serves its dashboard (``None`` to disable); a busy port
        falls back on a free one. The default listens on the loopback interface only:
        the dashboard has no authentication, so ``"0.0.0.0:8787"`` (every interface)
        must be asked for.
    echo
        Where the one-line description (with the dashboard link) goes; default stderr.
    timeout
        Seconds to wait when connecting to an existing scheduler.
    n_cells
        Cells of the work (e.g. the grid's). With ``scheduler=None``, no session client
        and at most :data:`SMALL_WORK_CELLS` cells, Dask's in-process threads run it
        instead of a new local cluster (``"local"`` always starts one). Results do not
        depend on the scheduler.
    security
        A :class:`distributed.security.Security` with the TLS certificates of a
        ``tls://`` scheduler (see :func:`tls_security`); ``None`` takes them from
        Dask's configuration (``DASK_DISTRIBUTED__COMM__TLS__*`` environment variables).

    Yields
    ------
    distributed.Client or None
        The client, also installed as the default scheduler inside the block.

    Raises
    ------
    SchedulerError
        An existing scheduler cannot be reached.

    Examples
    --------
    >>> from mapping.cluster import dask_client
    >>> with dask_client("synchronous") as client:
    ...     print(client)
    None
    """
    say = echo or _stderr
    given = _given_client(scheduler)
    if given is not None:
        n = len(given.scheduler_info(n_workers=-1).get("workers", {}))
        say(
            f"dask: using client of {given.scheduler.address}, {n} worker(s); dashboard {_dashboard(given)}"
        )
        with dask.config.set(scheduler=given.get):
            yield given
        return
    kind = scheduler_kind(scheduler)
    small = _small(scheduler, n_cells)
    if kind == "threads" or small:
        name = in_process_scheduler(scheduler)
        why = f", {n_cells:,} cells: no cluster needed" if small else ", no cluster"
        say(f"dask: in-process '{name}' scheduler{why} (no dashboard)")
        with dask.config.set(scheduler=name):
            yield None
        return

    from distributed import Client, LocalCluster

    if kind == "local":
        workers, threads = default_workers(n_workers, threads_per_worker)
        with contextlib.ExitStack() as stack:
            stack.enter_context(_worker_environ_config())
            # distributed warns when port 8787 is taken and picks another; the link we
            # print is the one it ends up serving.
            cluster = stack.enter_context(
                LocalCluster(
                    n_workers=workers,
                    threads_per_worker=threads,
                    processes=True,
                    memory_limit=memory_limit,
                    dashboard_address=dashboard_address,
                    # scheduler, nannies and workers on loopback only, whatever the
                    # dashboard does; workers serve no dashboard of their own
                    host="127.0.0.1",
                    worker_dashboard_address=None,
                    silence_logs=logging.ERROR,
                )
            )
            client = stack.enter_context(Client(cluster, set_as_default=True))
            mem = _format_bytes(_worker_memory(client))
            link = _dashboard(client) if dashboard_address is not None else "disabled"
            if dashboard_address is not None and not _is_loopback(dashboard_address):
                link += " (reachable from other machines, no authentication)"
            say(
                f"dask: local cluster, {workers} worker(s) x {threads} thread(s), {mem} each; "
                f"dashboard {link}"
            )
            yield client
        return

    if security is None and str(scheduler).strip().lower().startswith("tls://"):
        security = _security_from_dask_config(str(scheduler))
    try:
        if kind == "file":
            client = Client(
                scheduler_file=str(scheduler),
                timeout=timeout,
                set_as_default=True,
                security=security,
            )
        else:
            client = Client(str(scheduler), timeout=timeout, set_as_default=True, security=security)
    except (OSError, TimeoutError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SchedulerError(f"scheduler {scheduler}: cannot connect ({first})") from None
    try:
        n = len(client.scheduler_info(n_workers=-1).get("workers", {}))
        say(
            f"dask: connected to {client.scheduler.address}, {n} worker(s); dashboard {_dashboard(client)}"
        )
        yield client
    finally:
        client.close()


def _worker_environ_config() -> Any:
    """Dask config for a local cluster's workers: glibc's adaptive malloc trimming and a
    bounded GDAL block cache.

    distributed's own trim threshold (:data:`WORKER_TRIM_THRESHOLD`) is dropped, and
    ``GDAL_CACHEMAX`` is set to :data:`WORKER_GDAL_CACHE_MB` (GDAL's default, 5 % of the
    machine's memory per process, fills with covariate blocks a chunk reads once); a value
    the user set in the Dask config or in the environment is kept.
    """
    key = "distributed.nanny.pre-spawn-environ"
    environ = dict(dask.config.get(key, default={}) or {})
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ and str(
        environ.get("MALLOC_TRIM_THRESHOLD_")
    ) == str(WORKER_TRIM_THRESHOLD):
        environ["MALLOC_TRIM_THRESHOLD_"] = None  # distributed: None unsets the variable
    if "GDAL_CACHEMAX" not in os.environ and "GDAL_CACHEMAX" not in environ:
        environ["GDAL_CACHEMAX"] = str(WORKER_GDAL_CACHE_MB)
    return dask.config.set({key: environ})


def _is_loopback(address: str) -> bool:
    """Whether ``HOST:PORT`` (or ``:PORT``, every interface) listens on loopback only."""
    import ipaddress

    host = address.rsplit(":", 1)[0].strip("[]") if ":" in address else address
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # "" (every interface) or a host name
        return False


def _security_from_dask_config(scheduler: str) -> Any:
    """Dask's TLS settings for a ``tls://`` scheduler; a one-line error when there are none."""
    from distributed.security import Security

    sec: Any = Security()  # reads distributed.comm.tls.* (DASK_DISTRIBUTED__COMM__TLS__* vars)
    if not (sec.tls_ca_file and sec.tls_client_cert):
        raise SchedulerError(
            f"scheduler {scheduler}: a tls:// scheduler needs certificates; set tls: {{ca_file, "
            "cert, key}} in the config or DASK_DISTRIBUTED__COMM__TLS__CA_FILE, "
            "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT and DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY"
        )
    return sec


def tls_security(
    ca_file: str | os.PathLike[str],
    cert: str | os.PathLike[str],
    key: str | os.PathLike[str] | None = None,
) -> Any:
    """A :class:`distributed.security.Security` for a client of a ``tls://`` scheduler.

    Parameters
    ----------
    ca_file
        PEM file of the certificate authority that signed the scheduler's and the
        workers' certificates.
    cert, key
        PEM certificate of this client and its private key (``key=None`` when the
        certificate file holds the key too).

    Returns
    -------
    distributed.security.Security
        With ``require_encryption=True``: no plain ``tcp://`` connection is made.
    """
    from distributed.security import Security

    for what, path in (("ca_file", ca_file), ("cert", cert), ("key", key)):
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"tls: {what}: {path} is not a file")
    return Security(
        tls_ca_file=str(ca_file),
        tls_client_cert=str(cert),
        tls_client_key=None if key is None else str(key),
        require_encryption=True,
    )


def _is_client(obj: Any) -> bool:
    try:
        from distributed import Client
    except ImportError:  # pragma: no cover
        return False
    return isinstance(obj, Client)


def _given_client(scheduler: Any) -> Client | None:
    """The client :func:`dask_client` uses as it is: ``scheduler`` itself, or with no
    scheduler named, the session's running default client."""
    if _is_client(scheduler):
        return scheduler  # type: ignore[no-any-return]
    return _default_client() if scheduler is None else None


def _small(scheduler: Any, n_cells: int | None) -> bool:
    """No scheduler named and a grid small enough for in-process threads."""
    return scheduler is None and n_cells is not None and n_cells <= SMALL_WORK_CELLS


def in_process(scheduler: Any, n_cells: int | None) -> bool:
    """Whether :func:`dask_client` with ``scheduler`` and ``n_cells`` runs the work on Dask's
    in-process schedulers (threads or synchronous) rather than on a cluster."""
    if _given_client(scheduler) is not None:
        return False
    return scheduler_kind(scheduler) == "threads" or _small(scheduler, n_cells)


def in_process_scheduler(scheduler: Any) -> str:
    """Dask's in-process scheduler for ``scheduler``: ``"synchronous"`` when so named, else
    ``"threads"``."""
    return "synchronous" if str(scheduler).lower() == "synchronous" else "threads"


def _default_client() -> Client | None:
    try:
        from distributed import default_client
    except ImportError:  # pragma: no cover
        return None
    try:
        client = default_client()
    except ValueError:  # no client in this session
        return None
    return client if client.status == "running" else None


def _dashboard(client: Client) -> str:
    try:
        link = client.dashboard_link
    except Exception:
        return "not available"
    return link or "not available"


def _worker_memory(client: Client) -> float:
    workers = client.scheduler_info(n_workers=-1).get("workers", {})
    limits = [w.get("memory_limit") or 0 for w in workers.values()]
    return float(min(limits)) if limits else 0.0


def _format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def current_client(collection: Any = None) -> Client | None:
    """The distributed client Dask would use now, or ``None`` for an in-process scheduler.

    Honours ``dask.config.set(scheduler=...)`` blocks, so a local scheduler set inside
    a ``with`` wins over a default client, exactly as ``dask.compute`` decides.
    """
    from dask.base import get_scheduler

    get = get_scheduler(collections=[collection] if collection is not None else None)
    owner = getattr(get, "__self__", None)
    try:
        from distributed import Client
    except ImportError:  # pragma: no cover
        return None
    return owner if isinstance(owner, Client) else None


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- progress
class _Display:
    """A rich progress bar on a terminal, or a few plain log lines elsewhere."""

    def __init__(self, label: str, total: int | None = None, *, unit: str = "tasks") -> None:
        self.label = label
        self.unit = unit
        self.total = total
        self.done = 0
        self.t0 = time.perf_counter()
        self._last_log = self.t0
        self._last_pct = 0
        self._rich: Any = None
        self._task: Any = None
        self._lock = threading.Lock()
        if sys.stdout.isatty():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._rich = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn(unit),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self._rich.start()
            self._task = self._rich.add_task(label, total=total)
        else:
            _stderr(f"{label}: started" + (f" ({total} {unit})" if total else ""))

    def set_total(self, total: int) -> None:
        with self._lock:
            self.total = total
            if self._rich is not None:
                self._rich.update(self._task, total=total)

    def advance(self, n: int = 1) -> None:
        self.update(self.done + n)

    def update(self, done: int) -> None:
        with self._lock:
            self.done = done
            if self._rich is not None:
                self._rich.update(self._task, completed=done)
                return
            if not self.total:
                return
            pct = int(100 * done / self.total)
            now = time.perf_counter()
            # one line per 10 % or per 30 s, whichever comes first
            if pct // 10 > self._last_pct // 10 or now - self._last_log > 30:
                self._last_pct, self._last_log = pct, now
                _stderr(
                    f"{self.label}: {pct:3d}% ({done}/{self.total} {self.unit}, {now - self.t0:.1f} s)"
                )

    def close(self, ok: bool = True) -> None:
        if self._rich is not None:
            self._rich.stop()
        elif ok:
            _stderr(f"{self.label}: done in {time.perf_counter() - self.t0:.1f} s")
        else:
            _stderr(f"{self.label}: failed after {time.perf_counter() - self.t0:.1f} s")


class _LocalProgress:
    """Dask callbacks that drive a :class:`_Display` under the in-process schedulers."""

    def __init__(self, label: str) -> None:
        from dask.callbacks import Callback

        display_holder: dict[str, _Display] = {}

        class _CB(Callback):  # type: ignore[misc]
            def _start_state(self, dsk: Any, state: Any) -> None:
                total = sum(len(state[k]) for k in ("ready", "waiting", "running", "finished"))
                display_holder["d"].set_total(total)

            def _posttask(
                self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any
            ) -> None:
                display_holder["d"].update(len(state["finished"]))

        self.label = label
        self._holder = display_holder
        self._cb = _CB()

    def __enter__(self) -> _LocalProgress:
        self._holder["d"] = _Display(self.label)
        self._cb.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._cb.__exit__(*exc)
        self._holder["d"].close(ok=exc[0] is None)


def _distributed_progress(futures: Sequence[Any], label: str) -> None:
    """Block until ``futures`` (and everything they depend on) finish, showing progress."""
    display = _Display(label)
    try:
        from distributed.diagnostics.progressbar import TextProgressBar

        class _Bar(TextProgressBar):  # type: ignore[misc]
            def _draw_bar(self, remaining: int, all: int, **kwargs: Any) -> None:
                display.set_total(all)
                display.update(all - remaining)

            def _draw_stop(self, **kwargs: Any) -> None:
                pass

        _Bar(list(futures), interval="500ms", complete=True)
    except ImportError:  # pragma: no cover - very old distributed
        from distributed import wait

        wait(list(futures))
    finally:
        ok = all(f.status == "finished" for f in futures)
        display.close(ok=ok)


def compute_with_progress(
    *collections: Any, label: str = "computing", **kwargs: Any
) -> tuple[Any, ...]:
    """``dask.compute(*collections)`` with a progress bar (or log lines off a terminal).

    Works under the in-process schedulers (Dask callbacks) and under a distributed
    client (the scheduler's progress feed); returns what ``dask.compute`` returns.

    Parameters
    ----------
    *collections
        Dask collections (arrays, datasets, delayed objects, ...).
    label
        What the bar says.
    **kwargs
        Passed to ``dask.compute`` / ``Client.compute``.
    """
    client = current_client(collections[0] if collections else None)
    if client is None:
        with _LocalProgress(label):
            return dask.compute(*collections, **kwargs)
    futures = client.compute(list(collections), **kwargs)
    return gather_with_progress(client, futures, label=label)


def gather_with_progress(
    client: Client, futures: Sequence[Any], *, label: str = "computing"
) -> tuple[Any, ...]:
    """The results of ``futures`` (submitted earlier, e.g. to overlap with other work),
    waited for with a progress bar."""
    _distributed_progress(futures, label)
    return tuple(client.gather(list(futures)))


# --------------------------------------------------------------------------- block-wise
BlockWriter = Callable[[int, tuple[slice, slice], np.ndarray], None]


class _StoreTarget:
    """``dask.array.store`` target that hands each (k, window) block to ``write``."""

    def __init__(self, write: BlockWriter, display: _Display | None = None) -> None:
        self.write = write
        self.display = display

    def __setitem__(self, key: tuple[slice, slice, slice], value: np.ndarray) -> None:
        ks, ys, xs = key
        for i, k in enumerate(range(*ks.indices(ks.stop))):
            self.write(k, (ys, xs), np.asarray(value[i]))


def store_blocks(
    arrays: Sequence[dask.array.Array], write: BlockWriter, *, label: str = "writing"
) -> int:
    """Compute 2-D Dask arrays block by block and hand every block to ``write``.

    The arrays (same shape; they usually share upstream tasks, e.g. the statistics of one
    prediction) are computed in one graph, so shared work is done once, and no more than
    a few blocks are in memory at any time: under the in-process schedulers through
    :func:`dask.array.store` with a lock, under a distributed client by streaming the
    finished blocks back as they complete. ``write(k, (row_slice, col_slice), block)`` is
    always called in this process, one call at a time, so it may write to an open file.

    Returns
    -------
    int
        The number of spatial blocks written.
    """
    import dask.array as da

    if not arrays:
        return 0
    shape = arrays[0].shape
    if any(a.shape != shape or a.ndim != 2 for a in arrays):
        raise ValueError(
            f"store_blocks needs 2-D arrays of one shape, got {[a.shape for a in arrays]}"
        )
    chunks = arrays[0].chunks
    stacked = da.stack([a if a.chunks == chunks else a.rechunk(chunks) for a in arrays])
    stacked = stacked.rechunk({0: -1})
    n_blocks = len(chunks[0]) * len(chunks[1])
    client = current_client(stacked)
    if client is None:
        lock = threading.Lock()
        with _LocalProgress(label):
            da.store(stacked, _StoreTarget(write), lock=lock, compute=True)
        return n_blocks

    offsets = [np.cumsum((0, *c)) for c in chunks]
    blocks = stacked.to_delayed(optimize_graph=True)  # (1, nby, nbx)
    where = [(i, j) for i in range(blocks.shape[1]) for j in range(blocks.shape[2])]

    def hand_over(n: int, block: np.ndarray) -> None:
        i, j = where[n]
        window = (
            slice(int(offsets[0][i]), int(offsets[0][i + 1])),
            slice(int(offsets[1][j]), int(offsets[1][j + 1])),
        )
        for k in range(block.shape[0]):
            write(k, window, np.asarray(block[k]))

    stream_results(client, [blocks[0, i, j] for i, j in where], hand_over, label=label)
    return n_blocks


def stream_results(
    client: Client,
    collections: Sequence[Any],
    handle: Callable[[int, Any], None],
    *,
    label: str = "computing",
    unit: str = "blocks",
) -> None:
    """Compute ``collections`` on ``client`` and call ``handle(n, result)`` in this process
    as each finishes, in completion order, releasing each result once handled.

    The collections are submitted as one graph (shared inputs such as a fitted model are
    sent once); only the results not yet handled are held here, so a stream of blocks
    never piles up in this process.
    """
    from distributed import as_completed

    futures = client.compute(list(collections))
    index = {f.key: n for n, f in enumerate(futures)}
    display = _Display(label, len(futures), unit=unit)
    ok = False
    try:
        done = 0
        queue = as_completed(futures, with_results=True)
        del futures  # only as_completed keeps them, so each result is released once handled
        for fut, result in queue:
            handle(index.pop(fut.key), result)
            fut.release()
            del fut, result
            done += 1
            display.update(done)
        ok = True
    finally:
        display.close(ok=ok)


# --------------------------------------------------------------------------- memory
class PeakRSS:
    """Sample the resident memory of this process and its children (e.g. local workers).

    Use as a context manager; ``peak`` is the largest *sum* over the process tree seen
    at any sample, in bytes; ``peak_main`` the largest of this process alone and
    ``peak_by_pid`` the largest of each child process.
    """

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.peak = 0
        self.peak_main = 0
        self.peak_by_pid: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        import psutil

        me = psutil.Process()
        total = 0
        try:
            main = me.memory_info().rss
            total = main
            for child in me.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    rss = child.memory_info().rss
                    total += rss
                    self.peak_by_pid[child.pid] = max(self.peak_by_pid.get(child.pid, 0), rss)
        except psutil.Error:  # pragma: no cover
            return
        self.peak = max(self.peak, total)
        self.peak_main = max(self.peak_main, main)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRSS:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
