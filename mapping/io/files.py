"""Files that are not rasters: atomic writes, tables, JSON, text, models, arrays, zone polygons.

Every writer goes through :func:`atomic_path`: the data is written to a temporary name in
the destination folder and renamed into place, so a killed run never leaves a file that
looks complete.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyproj

from mapping.exceptions import InputError, OutputError

TABLE_SUFFIXES = {".csv", ".parquet", ".pq", ".gpkg"}


# --------------------------------------------------------------------------- atomic writes
def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    On any exception the temporary file (or folder) is removed and ``path`` is
    left exactly as it was.

    Parameters
    ----------
    path
        Final destination.
    is_dir
        Yield a temporary *directory* instead of a file name.
    """
    dest = Path(path)
    parent = dest.parent if str(dest.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{parent}: cannot create output folder ({exc.strerror})") from None
    if not os.access(parent, os.W_OK):
        raise OutputError(f"{parent}: output folder is not writable")
    prefix = f".{dest.name}."
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=parent))
    else:
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=".tmp" + dest.suffix, dir=parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        # mkstemp/mkdtemp create private (0600/0700) entries: give outputs the usual umask mode
        os.chmod(tmp, (0o777 if is_dir else 0o666) & ~_UMASK)
        if is_dir and dest.exists():
            _remove(dest)
        os.replace(tmp, dest)
    except BaseException as exc:
        _remove(tmp)
        if _disk_full(exc):
            raise OutputError(
                f"{dest}: disk full or file too large while writing ({_os_reason(exc)}); "
                "nothing was written under this name"
            ) from None
        raise


def _disk_full(exc: BaseException) -> bool:
    """Whether a write failed for want of space (ENOSPC, EDQUOT, EFBIG; GDAL says it in words)."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return True
    text = str(exc).lower()
    return isinstance(exc, OSError | RuntimeError) and (
        "no space left" in text or "disk space" in text or "file too large" in text
    )


def _os_reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _remove(p: Path) -> None:
    import shutil

    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def remove_output(path: str | os.PathLike[str]) -> None:
    """Remove a file or folder an earlier run wrote (nothing happens if it is gone)."""
    _remove(Path(path))


def file_checksum(
    path: str | os.PathLike[str], algorithm: str = "sha256", pattern: str = "*"
) -> str:
    """Return ``"<algorithm>:<hexdigest>"`` of a file (or of every file under a folder
    whose name matches ``pattern``, with its relative path)."""
    h = hashlib.new(algorithm)
    p = Path(path)
    files = sorted(q for q in p.rglob(pattern) if q.is_file()) if p.is_dir() else [p]
    for f in files:
        if p.is_dir():
            h.update(str(f.relative_to(p)).encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return f"{algorithm}:{h.hexdigest()}"


@functools.cache
def source_checksum(package: str | os.PathLike[str]) -> str:
    """Checksum of a package's Python sources (every ``*.py`` under ``package``, with their
    relative paths; compiled caches left out), computed once per process: the identity of
    the code that made a run's numbers, which a version string that no release bumps is not."""
    return file_checksum(package, pattern="*.py")


# --------------------------------------------------------------------------- tables
def read_table(
    path: str | os.PathLike[str],
    *,
    layer: str | None = None,
    max_rows: int | None = None,
    crs: Any = None,
) -> pd.DataFrame:
    """Read a CSV, Parquet or GeoPackage table into a DataFrame.

    GeoPackage point layers get ``lon``/``lat`` columns from their geometry when
    the table has none. The file's CRS is authoritative: the points are converted
    to longitude/latitude (EPSG:4326), or kept as they are when ``crs`` (the CRS the
    caller reads ``lon``/``lat`` in, e.g. ``profiles.crs``) is the file's own CRS; a
    ``crs`` that is neither is an :class:`InputError` naming the file. Points of a
    layer without a CRS are taken to be in ``crs``. Errors name the file. With
    ``max_rows``, a longer table is refused before it is read whole (CSV: at most
    ``max_rows + 1`` rows are parsed; Parquet and GeoPackage: the count in the file's
    metadata), so memory stays bounded.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: file not found")
    if p.is_dir():
        raise InputError(f"{p}: is a folder, expected a table file")
    suffix = p.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise InputError(f"{p}: unsupported table format {suffix!r}; use .csv, .parquet or .gpkg")
    if p.stat().st_size == 0:
        raise InputError(f"{p}: file is empty")

    def too_long(n: int) -> InputError:
        return InputError(
            f"{p}: {'more than ' if suffix == '.csv' else ''}{n - 1 if suffix == '.csv' else n} "
            f"rows, above the limit of {max_rows} (profiles.max_rows in the config)"
        )

    try:
        if suffix == ".csv":
            nrows = None if max_rows is None else max_rows + 1
            df = pd.read_csv(p, nrows=nrows, **csv_dialect(p))
            if max_rows is not None and len(df) > max_rows:
                raise too_long(len(df))
        elif suffix in {".parquet", ".pq"}:
            if max_rows is not None:
                import pyarrow.parquet as pq

                n = pq.ParquetFile(p).metadata.num_rows
                if n > max_rows:
                    raise too_long(n)
            df = pd.read_parquet(p)
        else:
            if max_rows is not None:
                import pyogrio

                n = int(pyogrio.read_info(p, layer=layer).get("features") or 0)
                if n > max_rows:
                    raise too_long(n)
            df = _read_gpkg_points(p, layer, crs)
    except pd.errors.EmptyDataError:
        raise InputError(f"{p}: file is empty") from None
    except pd.errors.ParserError as exc:
        raise InputError(f"{p}: cannot parse table ({str(exc).splitlines()[0]})") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{p}: cannot read table ({str(exc).splitlines()[0]})") from None
    if len(df) == 0:
        raise InputError(f"{p}: table has a header but no rows")
    return df


def read_csv_text_column(path: str | os.PathLike[str], name: str) -> pd.Series:
    """One column of a CSV file as the text written in it (stripped; missing: NaN), in
    the file's dialect: what ``read_table`` may have parsed as numbers, spelled as given."""
    col = pd.read_csv(path, usecols=[name], dtype=str, **csv_dialect(path))[name]
    return col.str.strip()


_SEPARATORS = (",", ";", "\t", "|")
_DECIMAL_COMMA = re.compile(r"^\s*[-+]?\d+,\d+(?:[eE][-+]?\d+)?\s*$")


def csv_dialect(path: str | os.PathLike[str], sample_bytes: int = 1 << 16) -> dict[str, str]:
    """Encoding, field separator and decimal mark of a CSV file, from its first lines.

    UTF-8 (with or without a byte-order mark), else Windows-1252, else Latin-1 (which
    decodes any byte). The separator is the one of ``, ; TAB |`` that splits the header
    and the next lines into the same number of fields, the most fields first; with a
    separator other than ``,``, numbers written ``12,5`` mean a decimal comma (a common
    spreadsheet export). Returns keyword arguments for :func:`pandas.read_csv`.
    """
    raw = Path(path).read_bytes()[:sample_bytes]
    encoding = "utf-8-sig"
    for enc in ("utf-8-sig", "cp1252", "latin-1"):
        try:
            text = raw.decode(enc)
        except UnicodeDecodeError as exc:
            cut = len(raw) == sample_bytes and exc.start >= len(raw) - 3
            if enc == "utf-8-sig" and cut:  # a character cut by the sample
                text = raw[: exc.start].decode(enc)
            else:
                continue
        encoding = enc
        break
    lines = [ln for ln in text.splitlines()[:50] if ln.strip()]
    if len(raw) == sample_bytes and len(lines) > 1:
        lines = lines[:-1]  # the last line may be cut
    best, best_n = ",", 1
    for sep in _SEPARATORS:
        counts = {ln.count(sep) for ln in lines[:20]}
        if len(counts) == 1 and (n := counts.pop() + 1) > best_n:
            best, best_n = sep, n
    out = {"encoding": encoding, "sep": best}
    if best != ",":
        fields = (f.strip('"') for ln in lines[1:] for f in ln.split(best))
        if any(_DECIMAL_COMMA.match(f) for f in fields):
            out["decimal"] = ","
    return out


def _read_gpkg_points(p: Path, layer: str | None, crs: Any = None) -> pd.DataFrame:
    import pyogrio

    gdf = pyogrio.read_dataframe(p, layer=layer)
    if "geometry" in gdf and gdf.geometry.notna().any():
        if gdf.crs is not None and not {"lon", "lat"} <= set(gdf.columns):
            gdf = gdf.to_crs(_points_crs(p, gdf.crs, crs))
        if "lon" not in gdf.columns:
            gdf["lon"] = gdf.geometry.x
        if "lat" not in gdf.columns:
            gdf["lat"] = gdf.geometry.y
    return pd.DataFrame(gdf.drop(columns="geometry", errors="ignore"))


def _points_crs(p: Path, have: pyproj.CRS, want: Any) -> pyproj.CRS:
    # The CRS a GeoPackage's points are converted to: EPSG:4326 (the default of
    # profiles.crs), or the file's own CRS when the caller reads lon/lat in that one.
    wgs84 = pyproj.CRS.from_epsg(4326)
    if want is None:
        return wgs84
    try:
        want_crs = pyproj.CRS.from_user_input(want)
    except pyproj.exceptions.CRSError as exc:
        raise InputError(f"{p}: CRS {want!r} for the points is not understood ({exc})") from None
    if want_crs.equals(wgs84, ignore_axis_order=True):
        return wgs84
    if want_crs.equals(have, ignore_axis_order=True):
        return have
    auth = have.to_authority(min_confidence=100)
    name = f"{auth[0]}:{auth[1]}" if auth else repr(have.name)
    raise InputError(
        f"{p}: the points are in {name}, not in {want} (profiles.crs); a GeoPackage's own CRS "
        f"is used: leave profiles.crs out or set it to {name}"
    )


def write_table(df: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write a DataFrame atomically as CSV or Parquet (by suffix)."""
    p = Path(path)
    suffix = p.suffix.lower()
    with atomic_path(p) as tmp:
        if suffix == ".csv":
            df.to_csv(tmp, index=False)
        elif suffix in {".parquet", ".pq"}:
            df.to_parquet(tmp, index=False)
        elif suffix == ".json":
            tmp.write_text(df.to_json(orient="records", indent=1))
        else:
            raise OutputError(f"{p}: unsupported table format {suffix!r}")
    return p


def write_points(
    df: pd.DataFrame,
    path: str | os.PathLike[str],
    *,
    x: str = "lon",
    y: str = "lat",
    crs: Any = "EPSG:4326",
    layer: str | None = None,
) -> Path:
    """Write a table of points atomically as a GeoPackage (geometry from columns ``x``, ``y``)."""
    import geopandas as gpd

    p = Path(path)
    gdf = gpd.GeoDataFrame(df, geometry=gpd.points_from_xy(df[x], df[y]), crs=crs)
    with atomic_path(p) as tmp:
        tmp.unlink()  # the GeoPackage driver creates its own file
        gdf.to_file(tmp, driver="GPKG", layer=layer or p.stem, engine="pyogrio")
    return p


def write_json(obj: Any, path: str | os.PathLike[str]) -> Path:
    """Write a JSON document atomically (sorted keys, numpy scalars converted)."""
    p = Path(path)
    with atomic_path(p) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default))
    return p


def write_text(text: str, path: str | os.PathLike[str]) -> Path:
    """Write a text file atomically."""
    p = Path(path)
    with atomic_path(p) as tmp:
        tmp.write_text(text)
    return p


def write_bytes(data: bytes, path: str | os.PathLike[str]) -> Path:
    """Write bytes (a PNG, ...) atomically."""
    p = Path(path)
    with atomic_path(p) as tmp:
        tmp.write_bytes(data)
    return p


def write_model(obj: Any, path: str | os.PathLike[str]) -> Path:
    """Persist a fitted estimator (or any picklable object) atomically with joblib."""
    import joblib  # imported with scikit-learn anyway; kept off the cheap import path

    p = Path(path)
    with atomic_path(p) as tmp:
        joblib.dump(obj, tmp)
    return p


def read_model(path: str | os.PathLike[str]) -> Any:
    """Load an object written by :func:`write_model` (trusted files only: it unpickles)."""
    import joblib  # imported with scikit-learn anyway; kept off the cheap import path

    return joblib.load(Path(path))


def read_text(path: str | os.PathLike[str]) -> str:
    """Read a whole (small) text file; ``OSError`` and ``UnicodeDecodeError`` propagate so
    the caller can name what it was reading."""
    return Path(path).read_text()


def save_array(arr: np.ndarray, path: str | os.PathLike[str]) -> Path:
    """Write one array as ``.npy`` atomically."""
    p = Path(path)
    with atomic_path(p) as tmp:
        np.save(tmp, arr)
    return p


def load_array(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an array written by :func:`save_array` (no pickles)."""
    return np.load(path, allow_pickle=False)


def read_bytes(path: str | os.PathLike[str]) -> bytes:
    """Read a whole (small) file as bytes; a missing file is an :class:`InputError`."""
    p = Path(path)
    try:
        return p.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{p}: file not found") from None
    except OSError as exc:
        raise InputError(f"{p}: cannot read file ({exc.strerror})") from None


def read_json(path: str | os.PathLike[str]) -> Any:
    p = Path(path)
    try:
        return json.loads(p.read_text())
    except FileNotFoundError:
        raise InputError(f"{p}: file not found") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{p}: invalid JSON at line {exc.lineno}") from None


# --------------------------------------------------------------------------- zones
_PARQUET_SUFFIXES = {".parquet", ".geoparquet", ".pq"}


def read_vector(path: str | os.PathLike[str], layer: str | None = None) -> Any:
    """Read any vector layer (roads, rivers, points) into a GeoDataFrame; errors name the file."""
    import pyogrio

    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: file not found")
    try:
        gdf = pyogrio.read_dataframe(p, layer=layer)
    except (OSError, ValueError, RuntimeError, pyogrio.errors.DataSourceError) as exc:
        raise InputError(f"{p}: cannot read ({str(exc).splitlines()[0]})") from None
    if len(gdf) == 0 or gdf.geometry.isna().all():
        raise InputError(f"{p}: layer has no features")
    if gdf.crs is None:
        raise InputError(f"{p}: layer has no CRS")
    return gdf


def read_zones_vector(path: str | os.PathLike[str], layer: str | None = None) -> Any:
    """Read zone polygons (GeoPackage, Shapefile, GeoParquet, ...) into a GeoDataFrame.

    Errors name the file: missing, unreadable, no features, or not polygons.
    """
    import geopandas as gpd
    import pyogrio

    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: file not found")
    try:
        if p.suffix.lower() in _PARQUET_SUFFIXES:
            gdf = gpd.read_parquet(p)
        else:
            gdf = pyogrio.read_dataframe(p, layer=layer)
    except (OSError, ValueError, RuntimeError, pyogrio.errors.DataSourceError) as exc:
        raise InputError(f"{p}: cannot read polygons ({str(exc).splitlines()[0]})") from None
    if len(gdf) == 0:
        raise InputError(f"{p}: layer has no features")
    kinds = set(gdf.geom_type.dropna())
    if not kinds or not kinds <= {"Polygon", "MultiPolygon"}:
        raise InputError(
            f"{p}: expected polygons, found {', '.join(sorted(kinds)) or 'no geometry'}"
        )
    return gdf


def _json_default(o: Any) -> Any:

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
