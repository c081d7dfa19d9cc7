"""Network exposure: loopback by default, the dashboard exposed only when asked, TLS clusters.

* A real run of the tiny workflow (``tests/data/bad/base/run.yaml``) up to the maps on a
  local cluster: every listening socket of the process tree (this process and the
  cluster's nannies and workers), sampled with psutil while it runs, is on loopback.
* ``dashboard: 0.0.0.0:PORT`` does expose the dashboard, and says so.
* A ``tls://`` scheduler and worker on loopback with certificates made here (a throw-away
  CA): socmap's client code connects with the certificates of the config's ``tls``
  section or of Dask's environment variables, predicts a small map, and refuses to
  connect without certificates in one line.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dask
import numpy as np
import pandas as pd
import psutil
import pytest
import rasterio
import xarray as xr
from sklearn.linear_model import BayesianRidge

from mapping.cluster import dask_client, tls_security
from mapping.config import load_config
from mapping.exceptions import ConfigError, SchedulerError
from mapping.grid import Grid
from mapping.predict import predict_grid, write_prediction

CORPUS = Path(__file__).parent / "data" / "bad"


# --------------------------------------------------------------------------- sockets
def _listening(proc: psutil.Process) -> set[tuple[int, str, int]]:
    """``(pid, ip, port)`` of every listening TCP socket of ``proc`` and its children."""
    found = set()
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            for c in p.net_connections(kind="inet"):
                if c.status == psutil.CONN_LISTEN:
                    found.add((p.pid, c.laddr.ip, c.laddr.port))
    return found


class _SocketSampler:
    """Collect the listening sockets of this process tree every 50 ms."""

    def __init__(self) -> None:
        self.seen: set[tuple[int, str, int]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._me = psutil.Process()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.seen |= _listening(self._me)
            self._stop.wait(0.05)

    def __enter__(self) -> _SocketSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _loopback(ip: str) -> bool:
    return ipaddress.ip_address(ip).is_loopback


@pytest.mark.cluster
@pytest.mark.slow
def test_a_run_listens_on_loopback_only(tmp_path: Path) -> None:
    from mapping.run import run_stages, stage_list

    shutil.copytree(CORPUS, tmp_path / "c")
    cfg = load_config(tmp_path / "c" / "base" / "run.yaml")
    assert cfg.scheduler is None and cfg.dashboard == "127.0.0.1:8787"  # the defaults
    said: list[str] = []
    before = _listening(psutil.Process())
    with _SocketSampler() as sampler:
        # the corpus grid is small enough for in-process threads; "local" starts the
        # cluster a grid above mapping.cluster.SMALL_WORK_CELLS gets by default
        run_stages(cfg, stage_list(cfg), until="predict", echo=said.append, scheduler="local")
    assert (cfg.output / "maps" / "soc_0_30cm_mean.tif").is_file()
    assert any("local cluster" in s and "dashboard http://127.0.0.1:" in s for s in said), said
    new = sampler.seen - before
    # the scheduler, its dashboard, and a nanny and a worker per process
    assert len({port for _, _, port in new}) >= 4, new
    exposed = sorted(s for s in new if not _loopback(s[1]))
    assert not exposed, f"listening beyond the machine: {exposed}"


@pytest.mark.cluster
def test_dashboard_is_exposed_only_when_asked() -> None:
    me = psutil.Process()
    lines: list[str] = []
    with dask_client(n_workers=1, dashboard_address="0.0.0.0:0", echo=lines.append) as client:
        port = int(client.dashboard_link.split(":")[2].split("/")[0])
        wide = {ip for _, ip, p in _listening(me) if p == port}
        others = {ip for _, ip, p in _listening(me) if p != port}
    assert wide == {"0.0.0.0"}
    assert others and all(_loopback(ip) for ip in others)  # scheduler, nanny, worker
    assert "reachable from other machines, no authentication" in lines[0]


def test_dashboard_option_is_checked(tmp_path: Path) -> None:
    shutil.copytree(CORPUS, tmp_path / "c")
    path = tmp_path / "c" / "base" / "run.yaml"
    text = path.read_text()
    path.write_text(text + "dashboard: 0.0.0.0:8787\n")
    assert load_config(path).dashboard == "0.0.0.0:8787"
    path.write_text(text + "dashboard: null\n")
    assert load_config(path).dashboard is None
    path.write_text(text + "dashboard: everywhere\n")
    with pytest.raises(ConfigError, match=r"run.yaml: dashboard: dashboard 'everywhere' is not"):
        load_config(path)


# --------------------------------------------------------------------------- TLS
def _make_certificates(folder: Path) -> dict[str, Path]:
    """A CA and a certificate for 127.0.0.1 / localhost signed by it (PEM files)."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("socmap test CA"))
        .issuer_name(name("socmap test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = {"ca": folder / "ca.pem", "cert": folder / "cert.pem", "key": folder / "key.pem"}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


@contextlib.contextmanager
def _tls_cluster(tmp_path: Path, certs: dict[str, Path]) -> Iterator[str]:
    """A ``dask scheduler`` and one ``dask worker`` speaking TLS only, on 127.0.0.1."""
    tls = ["--tls-ca-file", str(certs["ca"]), "--tls-cert", str(certs["cert"]),
           "--tls-key", str(certs["key"])]  # fmt: skip
    sched_file = tmp_path / "scheduler.json"
    env = {**os.environ, "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_scheduler", "--protocol", "tls",
             "--host", "127.0.0.1", "--port", "0", "--dashboard-address", "127.0.0.1:0",
             "--scheduler-file", str(sched_file), *tls],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        )
    ]  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not sched_file.exists() or not sched_file.read_text().strip():
            if time.monotonic() > deadline or procs[0].poll() is not None:
                raise RuntimeError("dask scheduler did not start")
            time.sleep(0.1)
        address = json.loads(sched_file.read_text())["address"]
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1",
                 "--no-nanny", "--no-dashboard", "--host", "127.0.0.1", *tls],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
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


GRID = Grid.from_bounds((500_000, -1_000_000, 530_000, -980_000), 1000.0, "EPSG:6931")


def _stack() -> xr.Dataset:
    y, x = GRID.coords()
    yy, xx = np.meshgrid(y, x, indexing="ij")
    a = np.cos((xx - 500_000) / 9_000) + (yy + 1_000_000) / 20_000
    ds = xr.Dataset({"a": (("y", "x"), a)}, coords={"y": y, "x": x})
    return GRID.attach(ds.chunk({"y": 8, "x": 16}))


def _model() -> BayesianRidge:
    rng = np.random.default_rng(5)
    X = pd.DataFrame({"a": rng.normal(0, 1, 60)})
    X["x"] = rng.uniform(500_000, 530_000, 60)
    X["y"] = rng.uniform(-1_000_000, -980_000, 60)
    return BayesianRidge().fit(X, 10 + 3 * X.a + rng.normal(0, 0.3, 60))


@pytest.fixture(scope="module")
def tls_setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, Path]]]:
    tmp = tmp_path_factory.mktemp("tls")
    certs = _make_certificates(tmp)
    with _tls_cluster(tmp, certs) as address:
        yield address, certs


@pytest.mark.cluster
def test_tls_cluster_with_certificates_from_the_config(
    tls_setup: tuple[str, dict[str, Path]], tmp_path: Path
) -> None:
    from distributed import get_task_stream

    address, certs = tls_setup
    assert address.startswith("tls://127.0.0.1:")
    # the config's tls section, as the predict stage reads it
    cfg_path = tmp_path / "run.yaml"
    shutil.copytree(CORPUS, tmp_path / "c")
    cfg_path = tmp_path / "c" / "base" / "run.yaml"
    cfg_path.write_text(
        cfg_path.read_text()
        + f"scheduler: {address}\ntls: {{ca_file: {certs['ca']}, cert: {certs['cert']}, "
        f"key: {certs['key']}}}\n"
    )
    cfg = load_config(cfg_path)
    assert cfg.tls is not None
    security = tls_security(cfg.tls.ca_file, cfg.tls.cert, cfg.tls.key)
    prediction = predict_grid(_model(), _stack(), GRID, chunks=8)
    with dask.config.set(scheduler="synchronous"):
        local = write_prediction(prediction, tmp_path / "local", (0, 30), run_id="r")
    lines: list[str] = []
    with dask_client(cfg.scheduler, echo=lines.append, security=security) as client:
        client.wait_for_workers(1, timeout=20)
        with get_task_stream(client) as stream:
            remote = write_prediction(prediction, tmp_path / "remote", (0, 30), run_id="r")
        workers = {t["worker"] for t in stream.data if "socmap-predict" in str(t["key"])}
    assert f"connected to {address}" in lines[0]
    assert workers and all(w.startswith("tls://127.0.0.1:") for w in workers)
    for name in local:
        with rasterio.open(local[name]) as a, rasterio.open(remote[name]) as b:
            np.testing.assert_array_equal(a.read(1), b.read(1))


@pytest.mark.cluster
def test_tls_cluster_with_certificates_from_the_environment(
    tls_setup: tuple[str, dict[str, Path]],
) -> None:
    address, certs = tls_setup
    env = {
        **os.environ,
        "DASK_DISTRIBUTED__COMM__TLS__CA_FILE": str(certs["ca"]),
        "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT": str(certs["cert"]),
        "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY": str(certs["key"]),
    }
    script = textwrap.dedent(
        f"""
        import dask.array as da
        from mapping.cluster import dask_client
        with dask_client({address!r}, echo=print) as client:
            client.wait_for_workers(1, timeout=20)
            print("sum", int(da.arange(1000, chunks=100).sum().compute()))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert f"connected to {address}" in done.stdout
    assert "sum 499500" in done.stdout


@pytest.mark.cluster
def test_tls_scheduler_without_certificates_is_one_line(
    tls_setup: tuple[str, dict[str, Path]], tmp_path: Path
) -> None:
    address, certs = tls_setup
    with dask.config.set({"distributed.comm.tls.ca-file": None}):
        with pytest.raises(SchedulerError, match=r"tls:// scheduler needs certificates") as err:
            with dask_client(address, echo=lambda m: None):
                pass
    assert "\n" not in str(err.value)
    # a plain tcp:// client cannot talk to it either: one line, no hang
    plain = address.replace("tls://", "tcp://")
    with pytest.raises(SchedulerError, match=r"cannot connect") as err:
        with dask_client(plain, echo=lambda m: None, timeout=3.0):
            pass
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"tls: ca_file: .*missing.pem is not a file"):
        tls_security(tmp_path / "missing.pem", certs["cert"], certs["key"])
