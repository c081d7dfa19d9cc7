"""Horizon tables: schema, column mapping and validity checks.

A horizon table has one row per horizon (or per sampled depth range) of a
soil profile. Its canonical columns are

=========================  =====================================================
``profile_id``             profile (pedon) identifier
``lon``, ``lat``           position, degrees (EPSG:4326)
``top_cm``, ``bottom_cm``  depth range, cm below the surface
``soc_pct``                organic carbon, % by mass (or ``soc_g_kg``, g/kg)
``bulk_density_g_cm3``     fine-earth bulk density; may be missing (see
                           :mod:`mapping.bulk_density`)
``coarse_fraction_pct``    coarse fragments > 2 mm, vol %; optional, 0 if absent
``horizon_area_pct``       share of the pedon face the horizon occupies, %;
                           optional, 100 if absent (cryoturbated horizons < 100)
``n_pct`` / ``n_g_kg``     total nitrogen; optional
``lithic_contact_cm``      depth of a lithic (bedrock) contact, cm below the
                           surface, on any horizon of the profile; optional. A
                           profile whose horizons reach it serves deeper
                           intervals, with zero stock below the rock
=========================  =====================================================

Other spellings are mapped with ``columns={canonical: name_in_file}``. Any
other column is carried along untouched.

:func:`check_horizons` applies the validity rules documented in
``docs/stocks.md``; a table that breaks them raises
:class:`~mapping.exceptions.HorizonTableError` with a one-line message naming
the file, the profiles and the lines, or, with ``on_invalid="skip"``, loses
the offending profiles, which are listed in a report table.
"""

from __future__ import annotations

import difflib
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyproj

from mapping.bulk_density import BD_MAX, BD_MIN
from mapping.exceptions import ConfigError, HorizonTableError, InputError
from mapping.io import read_csv_text_column, read_table

PROFILE_ID = "profile_id"
LINE = "_line"
"""Column holding the line (CSV) or row number of each horizon, for messages."""

CANONICAL: tuple[str, ...] = (
    "profile_id",
    "lon",
    "lat",
    "top_cm",
    "bottom_cm",
    "soc_pct",
    "soc_g_kg",
    "bulk_density_g_cm3",
    "coarse_fraction_pct",
    "horizon_area_pct",
    "n_pct",
    "n_g_kg",
    "lithic_contact_cm",
)
REQUIRED: tuple[str, ...] = ("profile_id", "lon", "lat", "top_cm", "bottom_cm")
NUMERIC: tuple[str, ...] = CANONICAL[1:]
DEPTH_VALUE_COLUMNS: tuple[str, ...] = (
    "soc_g_kg",
    "bulk_density_g_cm3",
    "coarse_fraction_pct",
    "horizon_area_pct",
    "n_g_kg",
)

AREA_TOLERANCE_PCT = 1.0
"""Area shares of one depth range may sum to 100 ± this many percentage points."""
_MAX_LISTED = 3  # problems spelled out in an error message


# --------------------------------------------------------------------------- reading
def read_horizons(
    path: str | os.PathLike[str],
    columns: dict[str, str] | None = None,
    layer: str | None = None,
    max_rows: int | None = None,
    crs: str | None = None,
) -> pd.DataFrame:
    """Read a horizon table (CSV, Parquet or GeoPackage) with canonical column names.

    Parameters
    ----------
    path
        The table. GeoPackage point layers get ``lon``/``lat`` from the geometry.
    columns
        Canonical name -> name in the file, for columns spelled differently,
        e.g. ``{"soc_pct": "OC_percent"}``.
    layer
        GeoPackage layer (default: the first).
    max_rows
        Refuse a table of more rows than this before reading it whole (bounded memory).
    crs
        CRS of ``lon``/``lat`` (``profiles.crs``; default EPSG:4326). A GeoPackage's own
        CRS wins: its points come out in EPSG:4326, or in its own CRS when ``crs`` names
        that one; any other ``crs`` is an error naming the file
        (:func:`mapping.io.read_table`).

    Returns
    -------
    pandas.DataFrame
        The table with mapped columns renamed to their canonical names, other
        columns unchanged, and a ``_line`` column: the line of each row in a
        CSV file (the header is line 1), or the 1-based row number in Parquet
        and GeoPackage files. ``df.attrs["source"]`` is the path and
        ``df.attrs["line_label"]`` is ``"line"`` or ``"row"``.

    Raises
    ------
    HorizonTableError
        Unreadable, empty or header-only file; a mapped column not in the file; a
        GeoPackage in a CRS other than ``crs`` and EPSG:4326.
    """
    p = Path(path)
    try:
        df = read_table(p, layer=layer, max_rows=max_rows, crs=crs)
    except HorizonTableError:
        raise
    except InputError as exc:
        raise HorizonTableError(str(exc)) from None
    df = map_columns(df, columns or {}, source=str(p))
    is_csv = p.suffix.lower() == ".csv"
    if is_csv and PROFILE_ID in df.columns and pd.api.types.is_numeric_dtype(df[PROFILE_ID]):
        _check_numeric_ids(p, (columns or {}).get(PROFILE_ID, PROFILE_ID), df[PROFILE_ID])
    df[LINE] = np.arange(len(df)) + (2 if is_csv else 1)
    df.attrs["source"] = str(p)
    df.attrs["line_label"] = "line" if is_csv else "row"
    df.attrs["crs"] = crs  # lon/lat in degrees unless a projected profiles.crs says metres
    return df


def served_depth(horizons: pd.DataFrame, tolerance_cm: float = 0.0) -> pd.Series:
    """Per profile (index: ``profile_id``, sorted), the depth its horizons serve intervals
    to: the deepest bottom, or infinity when the horizons reach the profile's
    ``lithic_contact_cm`` within ``tolerance_cm`` (below the rock the stock is 0, so every
    deeper interval is served, as :func:`mapping.depths.compute_stocks` serves it)."""
    g = horizons.groupby(PROFILE_ID)
    deepest = g["bottom_cm"].max().astype(float)
    if "lithic_contact_cm" in horizons.columns:
        rock = g["lithic_contact_cm"].max().astype(float)
        deepest = deepest.where(~(deepest >= rock - tolerance_cm), np.inf)
    return deepest


def _check_numeric_ids(path: Path, name: str, parsed: pd.Series) -> None:
    """A CSV's profile ids read as numbers must stay distinct: ``01`` and ``1`` (or
    ``1.0``) would merge two profiles into one without a word."""
    raw = read_csv_text_column(path, name)
    key = pd.DataFrame({"raw": raw.to_numpy(), "num": parsed.to_numpy()}).dropna()
    spellings = key.drop_duplicates().groupby("num")["raw"].unique()
    clash = spellings[spellings.map(len) > 1]
    if len(clash):
        a, b = clash.iloc[0][:2]
        raise HorizonTableError(
            f"{path}: column {name}: profile ids {a!r} and {b!r} read as the same number "
            f"({clash.index[0]:g}); make them distinct or keep them as text (e.g. 'P{a}')"
        )


def parse_column_options(options: list[str] | tuple[str, ...]) -> dict[str, str]:
    """Parse repeated ``canonical=name`` command-line options into a mapping."""
    mapping: dict[str, str] = {}
    for opt in options:
        canonical, sep, name = opt.partition("=")
        canonical, name = canonical.strip(), name.strip()
        if not sep or not canonical or not name:
            raise ConfigError(f"--column {opt!r}: expected CANONICAL=NAME, e.g. soc_pct=OC")
        mapping[canonical] = name
    return mapping


def map_columns(df: pd.DataFrame, columns: dict[str, str], source: str = "<table>") -> pd.DataFrame:
    """Rename file columns to canonical names (``columns`` is canonical -> file name)."""
    unknown = sorted(set(columns) - set(CANONICAL))
    if unknown:
        raise HorizonTableError(
            f"{source}: unknown canonical column {unknown[0]!r} in the column mapping; "
            f"known: {', '.join(CANONICAL)}"
        )
    rename: dict[str, str] = {}
    for canonical, name in columns.items():
        if name == canonical:
            continue
        if name not in df.columns:
            raise HorizonTableError(
                f"{source}: column {name!r} (mapped to {canonical}) not found; "
                f"the file has: {', '.join(map(str, df.columns))}"
            )
        if canonical in df.columns:
            raise HorizonTableError(
                f"{source}: both {canonical!r} and {name!r} (mapped to {canonical}) are present; "
                "drop one or map the other"
            )
        rename[name] = canonical
    if len(set(rename.values())) < len(rename):
        raise HorizonTableError(f"{source}: two file columns are mapped to the same canonical name")
    out = df.rename(columns=rename)
    out.attrs = dict(df.attrs)
    return out


# --------------------------------------------------------------------------- checks
class _Issues:
    """Problems found in a table: (row positions, profile, reason)."""

    def __init__(self) -> None:
        self.records: list[tuple[np.ndarray, object, str]] = []
        self.text: dict[str, np.ndarray] = {}  # rows with text in a numeric column

    def missing(self, col: str, values: np.ndarray) -> np.ndarray:
        """NaN rows of a column that are not already reported as text."""
        return np.isnan(values) & ~self.text.get(col, False)

    def add(self, rows: np.ndarray, pid: object, reason: str) -> None:
        self.records.append((np.atleast_1d(np.asarray(rows, dtype=np.int64)), pid, reason))

    def add_rows(
        self, mask: np.ndarray, df: pd.DataFrame, template: str, *values: np.ndarray
    ) -> None:
        """Add one issue per True row of ``mask``.

        The reason is ``template.format(*[_fmt(v[i]) for v in values])``.
        """
        for i in np.flatnonzero(mask):
            reason = template.format(*(_fmt(v[i]) for v in values))
            self.records.append((np.array([i]), df[PROFILE_ID].iat[i], reason))

    def bad_rows(self, n: int) -> np.ndarray:
        bad = np.zeros(n, dtype=bool)
        for rows, _, _ in self.records:
            bad[rows] = True
        return bad

    def __len__(self) -> int:
        return len(self.records)


def _fmt(x: object) -> str:
    if isinstance(x, float | np.floating):
        return f"{float(x):g}"
    return repr(x) if isinstance(x, str) else str(x)


def _lines_text(lines: list[int], label: str) -> str:
    """``"row 3"``, ``"rows 3, 5"`` or ``"rows 3-40, 42"`` (runs of three or more joined)."""
    if len(lines) == 1:
        return f"{label} {lines[0]}"
    parts: list[str] = []
    start = prev = lines[0]
    for x in [*lines[1:], None]:
        if x is not None and x == prev + 1:
            prev = x
            continue
        parts.extend([f"{start}-{prev}"] if prev - start >= 2 else map(str, range(start, prev + 1)))
        if x is not None:
            start = prev = x
    return f"{label}s {', '.join(parts)}"


def check_horizons(
    df: pd.DataFrame,
    source: str,
    on_invalid: str = "error",
    *,
    tolerance_cm: float = 0.0,
    area_tolerance_pct: float = AREA_TOLERANCE_PCT,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Check a horizon table; return the valid horizons and a report of invalid profiles.

    Parameters
    ----------
    df
        Horizons with canonical column names (see :func:`read_horizons`).
    source
        Name of the table for messages (usually its path).
    on_invalid
        ``"error"``: raise on the first invalid table. ``"skip"``: drop every
        profile with a problem and list it in the report.
    tolerance_cm
        Gaps and overlaps between horizons up to this thickness are accepted.
    area_tolerance_pct
        Accepted deviation of summed area shares from 100 %.

    Returns
    -------
    valid, invalid
        ``valid``: the horizons of valid profiles, numeric columns as floats,
        ``soc_pct`` and ``soc_g_kg`` both filled, ``bulk_density_g_cm3`` (NaN
        where missing), ``coarse_fraction_pct`` (default 0),
        ``horizon_area_pct`` (default 100), ``n_pct``/``n_g_kg`` when nitrogen
        is given, carried columns and ``_line``. ``invalid``: one row per
        dropped profile with ``profile_id``, ``lines`` (``;``-separated) and
        ``reason``.

    Raises
    ------
    HorizonTableError
        A required column is missing; with ``on_invalid="error"`` any invalid
        profile; with ``"skip"`` when no valid profile is left.
    """
    if on_invalid not in {"error", "skip"}:
        raise ConfigError(f"on_invalid must be 'error' or 'skip' (got {on_invalid!r})")
    label = df.attrs.get("line_label", "line" if LINE in df.columns else "row")
    degrees = _in_degrees(df.attrs.get("crs"))
    df = df.reset_index(drop=True).copy()
    if LINE not in df.columns:
        df[LINE] = np.arange(1, len(df) + 1)
    _check_columns(df, source)
    _warn_unused_lookalikes(df, source)
    if len(df) == 0:
        raise HorizonTableError(f"{source}: table has no rows")

    soc_column = "soc_pct" if "soc_pct" in df.columns else "soc_g_kg"
    issues = _Issues()
    _check_values(df, issues, degrees=degrees)
    _check_profiles(df, issues, tolerance_cm, area_tolerance_pct)
    _warn_unlikely_units(df.loc[~issues.bad_rows(len(df))], source, soc_column, label)

    report = _report(df, issues, label)
    if len(report) and on_invalid == "error":
        raise HorizonTableError(_error_message(source, report, label))
    bad_ids = set(report[PROFILE_ID]) if len(report) else set()
    keep = ~df[PROFILE_ID].isin(bad_ids) & df[PROFILE_ID].notna()
    valid = df.loc[keep].reset_index(drop=True)
    if len(valid) == 0:
        raise HorizonTableError(
            f"{source}: no valid profile left ({len(report)} invalid); "
            + _error_message(source, report, label).split(": ", 1)[1]
        )
    valid.attrs = {"source": source, "line_label": label}
    return valid, report


def _check_columns(df: pd.DataFrame, source: str) -> None:
    missing = [c for c in REQUIRED if c not in df.columns]
    if "soc_pct" not in df.columns and "soc_g_kg" not in df.columns:
        missing.append("soc_pct (or soc_g_kg)")
    if missing:
        have = ", ".join(str(c) for c in df.columns if c != LINE)
        raise HorizonTableError(
            f"{source}: missing required column {missing[0]}"
            + (f" (+{len(missing) - 1} more)" if len(missing) > 1 else "")
            + f"; the table has: {have}; map other spellings with --column CANONICAL=NAME"
        )


def _in_degrees(crs: object) -> bool:
    """Whether ``lon``/``lat`` of a table read in ``crs`` (``profiles.crs``; ``None``:
    EPSG:4326) are degrees, so that their ranges can be checked."""
    if crs is None:
        return True
    try:
        return bool(pyproj.CRS.from_user_input(crs).is_geographic)
    except pyproj.exceptions.CRSError:
        return True  # read in the API with a CRS pyproj cannot read (a config refuses it)


def _key(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


#: Common spellings of the optional columns, compared without case and punctuation. A
#: column left unmapped is ignored, and the stock computed as if the quantity were absent
#: (bulk density estimated everywhere, no coarse fragments, full area): names the
#: similarity test below misses (``BD``, ``CF``) are caught here.
ALIASES: dict[str, tuple[str, ...]] = {
    "bulk_density_g_cm3": ("bd", "db", "bdod", "bulk_density", "bulkdensity", "bulk_dens",
                           "bd_g_cm3", "bd_fine_earth", "bdfi", "density"),
    "coarse_fraction_pct": ("cf", "cfvo", "coarse", "coarse_fragments", "coarse_pct",
                            "cf_pct", "gravel", "gravel_pct", "rock_fragments",
                            "rock_fragments_pct", "stones", "stoniness", "skeleton"),
    "horizon_area_pct": ("area_pct", "area_share", "horizon_area", "horizon_share"),
    "lithic_contact_cm": ("lithic_contact", "bedrock_depth", "depth_to_bedrock",
                          "rock_depth"),
    "n_pct": ("n", "tn", "total_n", "nitrogen", "n_tot", "ntot"),
}  # fmt: skip
_ALIAS_OF = {_key(a): canon for canon, names in ALIASES.items() for a in names}


def _warn_unused_lookalikes(df: pd.DataFrame, source: str) -> None:
    """Warn of a column that looks like an optional canonical one the table lacks
    (``coarse_fraction`` or ``CF`` for ``coarse_fraction_pct``): it would be ignored, and
    the stock computed as if the quantity were absent (no coarse fragments, full area)."""
    have = [str(c) for c in df.columns if c != LINE]
    for canon in CANONICAL:
        if canon in df.columns or canon in REQUIRED or canon in ("soc_pct", "soc_g_kg"):
            continue
        if canon in ("n_pct", "n_g_kg") and ("n_pct" in df.columns or "n_g_kg" in df.columns):
            continue
        others = [c for c in have if c not in CANONICAL]
        close = [c for c in others if _ALIAS_OF.get(_key(c)) == canon]
        close = close or difflib.get_close_matches(canon, others, n=1, cutoff=0.75)
        if close:
            warnings.warn(
                f"{source}: column {close[0]!r} is not used; if it is {canon}, map it with "
                f"--column {canon}={close[0]} (profiles.columns in a config)",
                UserWarning,
                stacklevel=3,
            )


def _check_values(df: pd.DataFrame, issues: _Issues, *, degrees: bool = True) -> None:
    """Row-level checks; coerces numeric columns to float in place. ``degrees``: lon/lat
    are longitudes and latitudes (else coordinates of a projected ``profiles.crs``)."""
    if not pd.api.types.is_numeric_dtype(df[PROFILE_ID]):
        # "A " and "A" are one profile; an id of blanks is no id
        df[PROFILE_ID] = df[PROFILE_ID].map(
            lambda v: (v.strip() or None) if isinstance(v, str) else v
        )
    pid = df[PROFILE_ID]
    issues.add_rows(pid.isna().to_numpy(), df, "profile_id is missing")
    if pd.api.types.is_float_dtype(pid) and pid.notna().all():
        if np.all(np.mod(pid.to_numpy(), 1) == 0):
            df[PROFILE_ID] = pid.astype(np.int64)

    for col in NUMERIC:
        if col not in df.columns:
            continue
        raw = df[col]
        if pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw):
            num = raw.astype(float)
        else:
            stripped = raw.map(lambda v: v.strip() if isinstance(v, str) else v)
            num = pd.to_numeric(stripped, errors="coerce").astype(float)
            text = (raw.notna() & num.isna()).to_numpy()
            issues.text[col] = text
            shown = raw.map(str).to_numpy()  # quoted by _fmt
            issues.add_rows(text, df, col + " is not a number ({})", shown)
        inf = np.isinf(num.to_numpy())
        issues.add_rows(inf, df, col + " is not finite")
        issues.text[col] = issues.text.get(col, np.zeros(len(df), dtype=bool)) | inf
        df[col] = num.mask(inf)  # reported once; no range messages for it

    def need(col: str) -> np.ndarray:
        return df[col].to_numpy()

    for col in REQUIRED[1:]:
        issues.add_rows(issues.missing(col, need(col)), df, col + " is missing")

    lon, lat, top, bot = need("lon"), need("lat"), need("top_cm"), need("bottom_cm")
    with np.errstate(invalid="ignore"):
        if degrees:
            issues.add_rows((lon < -180) | (lon >= 360), df, "lon {} outside [-180, 360)", lon)
            issues.add_rows((lat < -90) | (lat > 90), df, "lat {} outside [-90, 90]", lat)
        issues.add_rows(top < 0, df, "top_cm {} is negative (depths are cm below the surface)", top)
        issues.add_rows(top >= bot, df, "top_cm {} >= bottom_cm {}", top, bot)

    _unify_units(df, issues, "soc", required=True)
    _unify_units(df, issues, "n", required=False)

    if "bulk_density_g_cm3" not in df.columns:
        df["bulk_density_g_cm3"] = np.nan
    bd = need("bulk_density_g_cm3")
    with np.errstate(invalid="ignore"):
        bad_bd = (bd < BD_MIN) | (bd > BD_MAX)
    issues.add_rows(bad_bd, df, f"bulk_density_g_cm3 {{}} outside {BD_MIN:g}-{BD_MAX:g}", bd)

    if "coarse_fraction_pct" not in df.columns:
        df["coarse_fraction_pct"] = 0.0
    df["coarse_fraction_pct"] = df["coarse_fraction_pct"].fillna(0.0)
    cf = need("coarse_fraction_pct")
    issues.add_rows((cf < 0) | (cf > 100), df, "coarse_fraction_pct {} outside 0-100", cf)
    given = cf[np.isfinite(cf) & (cf > 0)]
    if len(given) >= 5 and given.max() <= 1.0:
        # volume percents all at most 1 % are rare; fractions (0.35 for 35 %) are common
        warnings.warn(
            f"coarse_fraction_pct: all {len(given)} values given are at most 1 (largest "
            f"{given.max():g}); the column is in percent (35 for 35 %), not a fraction",
            UserWarning,
            stacklevel=3,
        )

    if "horizon_area_pct" not in df.columns:
        df["horizon_area_pct"] = 100.0
    df["horizon_area_pct"] = df["horizon_area_pct"].fillna(100.0)
    area = need("horizon_area_pct")
    issues.add_rows((area <= 0) | (area > 100), df, "horizon_area_pct {} outside (0, 100]", area)

    if "lithic_contact_cm" in df.columns:
        rock = need("lithic_contact_cm")
        with np.errstate(invalid="ignore"):
            issues.add_rows(rock <= 0, df, "lithic_contact_cm {} is not positive", rock)
        # one contact per profile: the values given (on any of its horizons) must agree
        spread = df.groupby(PROFILE_ID, dropna=False)["lithic_contact_cm"].transform(
            lambda v: v.max() - v.min()
        )
        issues.add_rows(
            (spread > 0).to_numpy(), df, "lithic_contact_cm {} differs between horizons", rock
        )


#: The median horizon of a table holds at most this much organic carbon per m³ of fine
#: earth (kg C m⁻³, SOC × bulk density): mineral horizons hold 5-60, the densest peats
#: about 100 (50 % C at 0.2 g cm⁻³). SOC in g/kg read as % makes it ten times larger.
MEDIAN_DENSITY_MAX = 100.0
#: The median profile of a survey ends between these depths (cm): depths in mm put it
#: ten times deeper, depths in m a hundred times shallower.
MEDIAN_BOTTOM_CM = (5.0, 400.0)
#: Depths that databases use for "no lower boundary recorded": read as centimetres they
#: carry the last horizon's carbon down to 10-1000 m.
NO_BOTTOM_CODES = (999.0, 9999.0, 99999.0)


def _warn_unlikely_units(
    df: pd.DataFrame, source: str, soc_column: str, label: str = "line"
) -> None:
    """Warn where a table's values read in the documented units look like another unit's
    (SOC as a fraction or in g/kg under ``soc_pct``, depths in mm or m, coarse fragments
    as fractions in some profiles, "no bottom" coded as 999 cm): each gives stocks wrong
    by a factor and passes every range check."""
    if len(df) == 0:
        return
    soc = df["soc_pct"].to_numpy(float)
    given = soc[np.isfinite(soc) & (soc > 0)]
    if len(given) >= 5 and given.max() <= 1.0:
        largest = given.max() * (1 if soc_column == "soc_pct" else 10)
        warnings.warn(
            f"{source}: {soc_column}: all {len(given)} values are at most 1 % (largest "
            f"{largest:g}); SOC is read as % by mass (soc_pct, 2.5 for 2.5 %) or g/kg "
            "(soc_g_kg); a fraction (0.025) gives stocks 100 times too small",
            UserWarning,
            stacklevel=3,
        )
    density = soc * df["bulk_density_g_cm3"].to_numpy(float) * 10.0  # kg C m⁻³
    density = density[np.isfinite(density)]
    if len(density) >= 5 and np.median(density) > MEDIAN_DENSITY_MAX:
        warnings.warn(
            f"{source}: {soc_column} x bulk_density_g_cm3: the median horizon holds "
            f"{np.median(density):.0f} kg C per m3 of fine earth, more than the densest peats "
            f"(~{MEDIAN_DENSITY_MAX:g}); is {soc_column} in "
            f"{'g/kg (use soc_g_kg)' if soc_column == 'soc_pct' else 'another unit'}?",
            UserWarning,
            stacklevel=3,
        )
    _warn_mixed_coarse_units(df, source)
    _warn_repeated_profiles(df, source)
    coded = df["bottom_cm"].isin(NO_BOTTOM_CODES).to_numpy()
    if coded.any():
        first = df.loc[coded].iloc[0]
        warnings.warn(
            f"{source}: bottom_cm: {int(coded.sum())} horizon(s) end at "
            f"{first['bottom_cm']:g} cm (first: profile {first[PROFILE_ID]!r} "
            f"{label} {first[LINE]}), a common code for 'no lower boundary'; read "
            "as a depth it carries the horizon's carbon down to it: give the depth sampled",
            UserWarning,
            stacklevel=3,
        )
    bottom = float(df.groupby(PROFILE_ID)["bottom_cm"].max().median())
    shallow, deep = MEDIAN_BOTTOM_CM
    if np.isfinite(bottom) and not shallow <= bottom <= deep:
        unit = "mm" if bottom > deep else "m"
        warnings.warn(
            f"{source}: bottom_cm: the median profile ends at {bottom:g} cm; depths are cm "
            f"below the surface, and depths in {unit} give wrong stocks",
            UserWarning,
            stacklevel=3,
        )


def _warn_repeated_profiles(df: pd.DataFrame, source: str) -> None:
    """Warn where profiles under different ids hold the same coordinates and horizons.

    The same pedon entered twice (two surveys merged, one id each) counts twice in the fit
    and in the cross-validation, whose held-out copy is predicted from its twin: the CV
    looks better than it is (on the sample, 100 twins lift the 0-30 cm CV R² from 0.67 to
    0.71)."""
    cols = ["lon", "lat", "top_cm", "bottom_cm", "soc_pct"]
    if df.empty or not set(cols) <= set(df.columns):
        return
    rows = df.sort_values([PROFILE_ID, "top_cm", "bottom_cm"], kind="stable")
    sig = rows.groupby(PROFILE_ID, sort=False)[cols].apply(
        lambda g: hash(tuple(np.round(g.to_numpy(float), 6).ravel()))
    )
    twins = sig[sig.duplicated(keep=False)]
    if twins.empty:
        return
    first = twins.index[twins == twins.iloc[0]].tolist()
    n = int(sig.duplicated(keep="first").sum())
    warnings.warn(
        f"{source}: {n} profile(s) repeat another's coordinates and horizons under another "
        f"id (e.g. {first[0]!r} and {first[1]!r}): the same pedon counts twice in the fit "
        "and the cross-validation, where each copy is predicted from its twin",
        UserWarning,
        stacklevel=4,
    )


def _warn_mixed_coarse_units(df: pd.DataFrame, source: str) -> None:
    """Warn where some profiles give coarse fragments as fractions and others in percent.

    Tables merged from several surveys can mix the two; a fraction (0.35 for 35 %) read
    as percent leaves the fragments out, and the profile's stock is up to
    ``1 / (1 - f)`` times too large. A table of fractions only is warned of in
    :func:`_check_values`. A profile looks like fractions when every coarse value it
    gives is at most 1 and one is below 1 (a percent table's trace gravel is 1, rarely
    less on every horizon); it takes at least three such profiles, a tenth of those giving
    coarse fragments, beside profiles in percent."""
    cf = df.loc[df["coarse_fraction_pct"] > 0, [PROFILE_ID, "coarse_fraction_pct"]]
    if cf.empty:
        return
    per = cf.groupby(PROFILE_ID, sort=False)["coarse_fraction_pct"].agg(["max", "min"])
    fraction = per.index[(per["max"] <= 1.0) & (per["min"] < 1.0)]
    percent = per["max"] > 1.0
    # a percent table has the odd profile with trace gravel below 1 % on every horizon
    # (1-2 of 93-663 in the synthetic worlds); a merged survey brings many
    if len(fraction) < 3 or len(fraction) < 0.1 * len(per) or not percent.any():
        return
    shown = ", ".join(repr(p) for p in fraction[:3])
    more = f" and {len(fraction) - 3} more" if len(fraction) > 3 else ""
    warnings.warn(
        f"{source}: coarse_fraction_pct: {len(fraction)} profile(s) ({shown}{more}) give "
        f"every value at most 1 while {int(percent.sum())} give percent up to "
        f"{per['max'].max():g}; if some surveys gave fractions (0.35 for 35 %), convert them: "
        "read as percent their coarse fragments are left out and their stocks too large",
        UserWarning,
        stacklevel=4,
    )


def _unify_units(df: pd.DataFrame, issues: _Issues, stem: str, *, required: bool) -> None:
    """Fill ``<stem>_pct`` and ``<stem>_g_kg`` from whichever is given; check ranges."""
    pct, gkg = f"{stem}_pct", f"{stem}_g_kg"
    if pct not in df.columns and gkg not in df.columns:
        return
    p = df[pct].to_numpy() if pct in df.columns else np.full(len(df), np.nan)
    g = df[gkg].to_numpy() if gkg in df.columns else np.full(len(df), np.nan)
    both = ~np.isnan(p) & ~np.isnan(g)
    with np.errstate(invalid="ignore"):
        clash = both & (np.abs(g - 10 * p) > 0.005 * np.maximum(np.abs(g), 1e-9))
    issues.add_rows(clash, df, f"{pct} {{}} and {gkg} {{}} disagree", p, g)
    value = np.where(np.isnan(g), 10 * p, g)
    if required:
        text = issues.text.get(pct, False) | issues.text.get(gkg, False)
        name = pct if pct in df.columns else gkg
        issues.add_rows(np.isnan(value) & ~text, df, name + " is missing")
    # messages quote the unit of the file
    if pct in df.columns:
        label, shown = pct, np.where(np.isnan(p), value / 10, p)
    else:
        label, shown = gkg, value
    with np.errstate(invalid="ignore"):
        issues.add_rows(value < 0, df, label + " {} is negative", shown)
        issues.add_rows(value > 1000, df, label + " {} above 100 % (1000 g/kg)", shown)
    df[gkg] = value
    df[pct] = value / 10


def layer_table(h: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split each profile at every horizon boundary into elementary layers.

    Parameters
    ----------
    h
        Horizons with a ``_pid`` integer profile code, ``top_cm``,
        ``bottom_cm`` and a ``_row`` column.

    Returns
    -------
    layers
        ``_pid, _layer, u, v``: consecutive boundaries of each profile, sorted.
    members
        ``_layer, _row``: which horizons cover which layer. Layers covered by
        no horizon are gaps.
    """
    z = np.concatenate([h["top_cm"].to_numpy(), h["bottom_cm"].to_numpy()])
    p = np.concatenate([h["_pid"].to_numpy(), h["_pid"].to_numpy()])
    b = (
        pd.DataFrame({"_pid": p, "z": z})
        .drop_duplicates()
        .sort_values(["_pid", "z"], kind="stable")
    )
    bp, bz = b["_pid"].to_numpy(), b["z"].to_numpy()
    same = bp[1:] == bp[:-1]
    layers = pd.DataFrame({"_pid": bp[:-1][same], "u": bz[:-1][same], "v": bz[1:][same]})
    layers["_layer"] = np.arange(len(layers))
    m = h[["_pid", "_row", "top_cm", "bottom_cm"]].merge(layers, on="_pid")
    m = m[(m["u"] >= m["top_cm"]) & (m["v"] <= m["bottom_cm"])]
    return layers, m[["_layer", "_row"]].reset_index(drop=True)


def _check_profiles(df: pd.DataFrame, issues: _Issues, tol: float, area_tol: float) -> None:
    """Profile-level checks on the rows that passed the row-level checks."""
    ok = ~issues.bad_rows(len(df))
    h = df.loc[ok].copy()
    if len(h) == 0:
        return
    h["_row"] = np.flatnonzero(ok)
    h["_pid"] = pd.factorize(h[PROFILE_ID])[0]
    pid_of = h.groupby("_pid", sort=True)[PROFILE_ID].first().to_numpy()

    # one position per profile
    g = h.groupby("_pid")
    spread = (g["lon"].max() - g["lon"].min()).to_numpy() + (
        g["lat"].max() - g["lat"].min()
    ).to_numpy()
    for k in np.flatnonzero(spread > 1e-9):
        rows = h.loc[h["_pid"] == k, "_row"].to_numpy()
        issues.add(rows, pid_of[k], "conflicting coordinates (lon/lat differ between its rows)")

    # exact duplicates of every canonical value
    key = ["_pid", "top_cm", "bottom_cm", *[c for c in DEPTH_VALUE_COLUMNS if c in h.columns]]
    dup = h.duplicated(subset=key, keep=False).to_numpy()
    dup_pids = set()
    if dup.any():
        for _, grp in h.loc[dup].groupby(key, dropna=False):
            kd = int(grp["_pid"].iat[0])
            dup_pids.add(kd)
            issues.add(grp["_row"].to_numpy(), pid_of[kd], "duplicate rows")
    h = h[~h["_pid"].isin(dup_pids)]
    if len(h) == 0:
        return

    # soil below the rock contradicts the contact: its carbon would be counted
    if "lithic_contact_cm" in h.columns:
        rock = h.groupby("_pid")["lithic_contact_cm"].transform("max").to_numpy()
        with np.errstate(invalid="ignore"):
            below = h["bottom_cm"].to_numpy() > rock + tol
        for k in np.unique(h["_pid"].to_numpy()[below]):
            sel = below & (h["_pid"].to_numpy() == k)
            deepest = float(h["bottom_cm"].to_numpy()[sel].max())
            issues.add(
                h["_row"].to_numpy()[sel],
                pid_of[k],
                f"horizons reach {deepest:g} cm, below the lithic contact at "
                f"{float(rock[sel][0]):g} cm",
            )

    layers, members = layer_table(h)
    members = members.merge(h[["_row", "horizon_area_pct", "top_cm", "bottom_cm"]], on="_row")
    agg = members.groupby("_layer").agg(n=("_row", "size"), area=("horizon_area_pct", "sum"))
    layers = layers.join(agg, on="_layer")
    layers["n"] = layers["n"].fillna(0).astype(int)
    thick = (layers["v"] - layers["u"]).to_numpy()
    counted = thick > tol

    # gaps: no horizon covers a layer thicker than the tolerance
    gap = counted & (layers["n"].to_numpy() == 0)
    for j in np.flatnonzero(gap):
        lay = layers.iloc[j]
        hp = h[h["_pid"] == lay["_pid"]]
        near = hp[(hp["bottom_cm"] == lay["u"]) | (hp["top_cm"] == lay["v"])]["_row"].to_numpy()
        issues.add(near, pid_of[int(lay["_pid"])], f"gap between {lay['u']:g} and {lay['v']:g} cm")

    # area shares of every covered layer must sum to 100 %. The tolerance excuses a thin
    # mismatch of horizon boundaries (an overlap or a gap in one column of a cryoturbated
    # face), judged over the whole run of consecutive layers that share the mismatch: a
    # second series of 1-cm samples over a horizon is a 30-cm overlap, not thirty thin ones
    area = layers["area"].to_numpy()
    n_mem = layers["n"].to_numpy()
    excess = np.abs(area - 100) > area_tol
    side = np.where(n_mem == 0, -1, np.sign(area - 100) * excess).astype(int)
    u, v = layers["u"].to_numpy(), layers["v"].to_numpy()
    run = _runs(layers["_pid"].to_numpy(), u, v, side)
    run_thick = np.bincount(run, weights=v - u)[run]
    off = (n_mem > 0) & (side != 0) & (run_thick > tol)
    # rows of one depth range whose shares exceed 100 %: conflicting, however thin
    same = members.groupby(["_layer", "top_cm", "bottom_cm"])["horizon_area_pct"].transform("sum")
    clash = members.loc[(same > 100 + area_tol).to_numpy(), "_layer"].unique()
    off |= layers["_layer"].isin(clash).to_numpy() & (side > 0)
    rows_of = members.groupby("_layer")["_row"].apply(np.asarray)
    # one message per run of flagged layers
    for r in np.unique(run[off]):
        js = np.flatnonzero(off & (run == r))
        rows = np.unique(np.concatenate([rows_of[layers["_layer"].iat[j]] for j in js]))
        mem = h.set_index("_row").loc[rows]
        k = pid_of[int(layers["_pid"].iat[js[0]])]
        where = f"{u[js[0]]:g}-{v[js[-1]]:g} cm"
        total = area[js].max() if side[js[0]] > 0 else area[js].min()
        if side[js[0]] > 0 and (mem["horizon_area_pct"] >= 100 - area_tol).all():
            one = mem["top_cm"].nunique() == 1 and mem["bottom_cm"].nunique() == 1
            what = "conflicting rows for the same depth range" if one else "overlapping horizons"
            issues.add(rows, k, f"{what} at {where} not explained by area shares (sum {total:g} %)")
        else:
            issues.add(rows, k, f"area shares at {where} sum to {total:g} %, not 100 %")


def _runs(pid: np.ndarray, u: np.ndarray, v: np.ndarray, side: np.ndarray) -> np.ndarray:
    """Run id of every layer (sorted by profile and depth): consecutive layers of one
    profile with the same ``side`` share a run."""
    start = np.ones(len(pid), dtype=bool)
    start[1:] = (pid[1:] != pid[:-1]) | (side[1:] != side[:-1]) | (u[1:] != v[:-1])
    return np.cumsum(start) - 1


def _report(df: pd.DataFrame, issues: _Issues, label: str) -> pd.DataFrame:
    cols = [PROFILE_ID, "lines", "reason"]
    if not len(issues):
        return pd.DataFrame({c: pd.Series(dtype=object) for c in cols})
    line_of = df[LINE].to_numpy()
    recs = []
    for order, (rows, pid, reason) in enumerate(issues.records):
        ln = sorted(int(x) for x in line_of[rows])
        recs.append((order, pid, ln, f"{_lines_text(ln, label)}: {reason}"))
    # missing profile ids are reported row by row
    out = []
    by_pid: dict[object, list] = {}
    for order, pid, ln, text in recs:
        keyp = ("<missing>", order) if pd.isna(pid) else pid
        by_pid.setdefault(keyp, []).append((ln, text))
    for keyp, items in by_pid.items():
        pid = "" if isinstance(keyp, tuple) else keyp
        all_lines = sorted({x for ln, _ in items for x in ln})
        out.append(
            {
                PROFILE_ID: pid,
                "lines": ";".join(map(str, all_lines)),
                "reason": "; ".join(t for _, t in items),
            }
        )
    rep = pd.DataFrame(out, columns=cols)
    first = rep["lines"].str.split(";").str[0].astype(int)
    return rep.iloc[np.argsort(first.to_numpy(), kind="stable")].reset_index(drop=True)


def _error_message(source: str, report: pd.DataFrame, label: str) -> str:
    parts = []
    for _, r in report.head(_MAX_LISTED).iterrows():
        who = f"profile {r[PROFILE_ID]!r}" if r[PROFILE_ID] != "" else "row without profile_id"
        # the first few of a profile's problems (the report table keeps them all): a table
        # in the wrong CRS or unit breaks a rule on every line
        reasons = r["reason"].split("; ")
        rest = len(reasons) - _MAX_LISTED
        parts.append(
            f"{who} {'; '.join(reasons[:_MAX_LISTED])}{f' (+{rest} more)' if rest > 0 else ''}"
        )
    more = len(report) - _MAX_LISTED
    tail = f" (+{more} more invalid profiles)" if more > 0 else ""
    msg = f"{source}: invalid horizons: " + "; ".join(parts) + tail
    msg += "; fix the table or drop these profiles with --on-invalid skip"
    return " ".join(msg.split())  # one line, whatever the values contained
