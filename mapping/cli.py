"""The ``socmap`` command line.

Thin: parse arguments, load the config, call the pipeline or one stage.
User errors (:class:`~mapping.exceptions.MappingError`) print one line on
stderr and exit with status 2, with no traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from mapping.exceptions import MappingError

app = typer.Typer(
    name="socmap",
    help="Soil organic carbon maps and zone totals with honest uncertainty.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

ConfigArg = Annotated[Path, typer.Argument(help="Workflow config (YAML).", show_default=False)]


def _print_version(value: bool) -> None:
    if value:
        from mapping import __version__

        typer.echo(f"socmap {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print the socmap version and exit.",
            callback=_print_version,
            is_eager=True,
        ),
    ] = False,
) -> None:
    """Soil organic carbon maps and zone totals with honest uncertainty."""


def _echo(msg: str) -> None:
    typer.echo(msg, err=True)


@app.command()
def validate(config: ConfigArg) -> None:
    """Check a workflow config, its inputs and its output folder without writing anything.

    Runs the checks ``socmap run`` makes before its first stage (what it refuses, this
    refuses) and prints every path resolved, the profiles on the grid, the aligned
    covariate stack and the zones.
    """
    from mapping.config import load_config
    from mapping.run.preflight import preflight

    cfg = load_config(config)
    report = preflight(cfg)
    typer.echo(f"config OK: {cfg.source}")
    for line in report.lines():
        typer.echo(f"  {line}")


@app.command()
def stocks(
    profiles: Annotated[Path, typer.Argument(help="Horizon table (CSV, Parquet or GeoPackage).")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output folder.")],
    depths: Annotated[
        str | None, typer.Option(help="Intervals, e.g. 0-30,0-100,0-200,0-300.")
    ] = None,
    method: Annotated[str | None, typer.Option(help="spline or linear.")] = None,
    lam: Annotated[
        float | None, typer.Option("--lambda", help="Spline smoothing (default 0.1).")
    ] = None,
    on_invalid: Annotated[str | None, typer.Option(help="error or skip invalid profiles.")] = None,
    column: Annotated[list[str] | None, typer.Option(help="CANONICAL=NAME, repeatable.")] = None,
    ptf: Annotated[str | None, typer.Option(help="Bulk-density PTF (default hossain2015).")] = None,
    tolerance: Annotated[
        float | None, typer.Option("--tolerance-cm", help="Depth tolerance, cm.")
    ] = None,
    layer: Annotated[str | None, typer.Option(help="GeoPackage layer.")] = None,
    config: Annotated[
        Path | None, typer.Option(help="Take defaults from a workflow config.")
    ] = None,
) -> None:
    """SOC stocks per profile at standard depth intervals."""
    import time

    from rich.console import Console
    from rich.table import Table

    from mapping.config import StocksConfig, load_config, parse_interval
    from mapping.depths import compute_stocks, left_out_text, write_stocks
    from mapping.exceptions import ConfigError
    from mapping.profiles import parse_column_options, read_horizons

    t0 = time.perf_counter()
    st, columns, crs = StocksConfig(), {}, None
    if config is not None:
        cfg = load_config(config, check_files=False)
        st, columns, crs = cfg.stocks, dict(cfg.profiles.columns), cfg.profiles.crs
    columns.update(parse_column_options(column or []))
    try:
        intervals = (
            [parse_interval(d) for d in depths.split(",")] if depths is not None else st.intervals()
        )
    except ValueError as exc:
        raise ConfigError(f"--depths: {exc}") from None
    if len(set(intervals)) < len(intervals):
        raise ConfigError(f"--depths: an interval is given twice ({depths})")
    horizons = read_horizons(profiles, columns=columns, layer=layer, crs=crs)
    method = method or st.method
    result = compute_stocks(
        horizons,
        intervals,
        method=method,
        lam=st.spline_lambda if lam is None else lam,
        tolerance_cm=st.depth_tolerance_cm if tolerance is None else tolerance,
        bulk_density_ptf=ptf or st.bulk_density_ptf,
        source=str(profiles),
        on_invalid=on_invalid or st.on_invalid,
    )
    write_stocks(result, out)

    table = Table(title=f"profiles per interval ({method})")
    table.add_column("interval (cm)")
    table.add_column("profiles", justify="right")
    table.add_column("left out")
    for row in result.counts.itertuples():
        why = left_out_text(row)
        if getattr(row, "n_on_rock", 0):
            why = ", ".join(filter(None, [why, f"({int(row.n_on_rock)} counted down to rock)"]))
        table.add_row(row.interval, str(row.n_profiles), why or "none")
    console = Console()
    console.print(table)
    n_prof = result.stocks["profile_id"].nunique()
    first = result.counts.iloc[0]  # every valid profile is counted in each interval's row
    n_valid = int(first["n_profiles"] + first["n_start_below"] + first["n_end_above"])
    typer.echo(
        f"stocks of {n_prof} of {n_valid} valid profiles written to {out} in "
        f"{time.perf_counter() - t0:.1f} s"
    )
    for row in result.counts.itertuples():
        if left_out_text(row):
            typer.echo(f"{row.interval} cm: {left_out_text(row)} (left out of this interval)")
    if len(result.invalid):
        typer.echo(
            f"{len(result.invalid)} invalid profiles skipped: see {out / 'invalid_profiles.csv'}"
        )


@app.command()
def integrate(
    density: Annotated[
        list[Path], typer.Argument(help="SOC density rasters (kg C m-2), one per interval.")
    ],
    zones: Annotated[
        Path, typer.Option(help="Zones: a code raster or polygons (GPKG, SHP, GeoParquet).")
    ],
    out: Annotated[
        Path, typer.Option("-o", "--out", help="Output table (.csv, .json or .parquet).")
    ],
    zone_names: Annotated[
        str | None, typer.Option(help="CODE=NAME list, e.g. 1=continuous,2=sporadic.")
    ] = None,
    zone_field: Annotated[
        str | None, typer.Option(help="Polygon attribute holding the zone code or name.")
    ] = None,
    zone_layer: Annotated[
        str | None, typer.Option(help="Layer of a multi-layer polygon file.")
    ] = None,
    zone_nodata: Annotated[
        list[int] | None, typer.Option(help="Zone code meaning 'no zone' (repeatable).")
    ] = None,
    interval: Annotated[
        str | None, typer.Option(help="TOP-BOTTOM (cm) for rasters without tags or name.")
    ] = None,
    unit: Annotated[str, typer.Option(help="Storage unit: Pg or Tg.")] = "Pg",
    chunks: Annotated[int, typer.Option(help="Chunk size (cells) for reading rasters.")] = 1024,
    band: Annotated[int | None, typer.Option(help="Band of multi-band density rasters.")] = None,
    allow_statistic: Annotated[
        bool, typer.Option("--allow-statistic", help="Sum maps tagged as quantile, std or AOA too.")
    ] = False,
) -> None:
    """Area, mean SOC density and storage per zone and depth interval."""
    from mapping.config import parse_interval
    from mapping.exceptions import ConfigError, OutputError
    from mapping.io import write_table
    from mapping.zonal import integrate_files
    from mapping.zones import parse_zone_names

    if out.suffix.lower() not in {".csv", ".json", ".parquet"}:
        raise OutputError(
            f"{out}: unsupported table format {out.suffix!r}; use .csv, .json or .parquet"
        )
    if unit not in {"Pg", "Tg"}:
        raise ConfigError(f"--unit: {unit!r} is not Pg or Tg")
    if chunks < 1:
        raise ConfigError(f"--chunks: {chunks} cells; give a positive chunk size (e.g. 1024)")
    if band is not None and band < 1:
        raise ConfigError(f"--band: {band}; bands are numbered from 1")
    try:
        iv = parse_interval(interval) if interval else None
    except ValueError as exc:
        raise ConfigError(f"--interval: {exc}") from None
    table = integrate_files(
        density,
        zones,
        zone_names=parse_zone_names(zone_names),
        zone_field=zone_field,
        zone_layer=zone_layer,
        zone_nodata=zone_nodata or (),
        interval=iv,
        unit=unit,
        chunks=chunks,
        band=band,
        allow_statistic=allow_statistic,
    )
    write_table(table, out)
    col = f"storage_{unit.lower()}"
    for row in table.itertuples():
        typer.echo(
            f"{row.interval:>8} cm  {row.zone:<16} {row.area_km2:14,.0f} km2  "
            f"{row.mean_density_kg_m2:7.2f} kg C m-2  {getattr(row, col):10.3f} {unit}"
        )
    typer.echo(f"zone totals written to {out}")


@app.command()
def plan(
    config: ConfigArg,
    workers: Annotated[
        list[int] | None,
        typer.Option("--workers", "-n", help="Worker counts to estimate (repeatable)."),
    ] = None,
    threads_per_worker: Annotated[
        int, typer.Option(help="Threads (tasks at once) per worker.")
    ] = 1,
    sample_chunks: Annotated[int, typer.Option(help="Chunks to predict for the calibration.")] = 3,
    calibrate: Annotated[
        bool, typer.Option(help="Time a sample of chunks (off: sizes only).")
    ] = True,
) -> None:
    """Grid size, chunks, memory per worker and expected time: size a cluster before a run."""
    from mapping.cluster import usable_cores
    from mapping.config import load_config
    from mapping.exceptions import ConfigError
    from mapping.run.plan import default_workers_table, make_plan

    for name, value in (("--threads-per-worker", threads_per_worker),
                        ("--sample-chunks", sample_chunks),
                        *(("--workers", n) for n in workers or [])):  # fmt: skip
        if value < 1:
            raise ConfigError(f"{name}: {value}; give at least 1")
    cfg = load_config(config, check_files=False)  # a plan needs no input to be present yet
    result = make_plan(cfg, threads_per_worker=threads_per_worker, calibrate=calibrate,
                       sample_chunks=sample_chunks, echo=_echo)  # fmt: skip
    typer.echo(f"plan for {cfg.source}")
    for line in result.lines(workers or default_workers_table(usable_cores())):
        typer.echo(f"  {line}")


SchedulerOpt = Annotated[
    str | None,
    typer.Option(
        help="Dask scheduler: tcp:// or tls://HOST:PORT of a running cluster (default: a local cluster)."
    ),
]
DashboardOpt = Annotated[
    str | None,
    typer.Option(
        help="Where the local cluster's dashboard listens (default: the config's dashboard, "
        "127.0.0.1:8787); 0.0.0.0:8787 exposes it to other machines without authentication; "
        "'off' disables it."
    ),
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Re-run every stage, even unchanged ones.")]


def _run_until(
    config: Path,
    until: str | None,
    scheduler: str | None,
    force: bool,
    dashboard: str | None = None,
) -> None:
    import logging

    from mapping.config import load_config
    from mapping.run import run_stages, stage_list

    logger = logging.getLogger("socmap")
    if not logger.handlers:  # our own messages only; Dask's chatter stays quiet
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("socmap: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    cfg = load_config(config)
    if dashboard is not None:
        from mapping.config import valid_dashboard
        from mapping.exceptions import ConfigError

        try:
            cfg = cfg.model_copy(update={"dashboard": valid_dashboard(dashboard)})
        except ValueError as exc:
            raise ConfigError(f"--dashboard: {exc}") from None
    try:
        ctx = run_stages(
            cfg, stage_list(cfg), until=until, force=force, scheduler=scheduler, echo=typer.echo
        )
    except KeyboardInterrupt:  # typer turns it into exit status 130 without a word
        _echo("socmap: interrupted; run it again to resume from the finished stages and chunks")
        raise
    typer.echo(f"outputs in {ctx.out} (manifest: {ctx.out / 'manifest.json'})")


@app.command()
def run(
    config: ConfigArg,
    scheduler: SchedulerOpt = None,
    force: ForceOpt = False,
    dashboard: DashboardOpt = None,
) -> None:
    """Run the whole workflow: stocks, covariates, fit, predict, zone totals, report."""
    _run_until(config, None, scheduler, force, dashboard)


@app.command()
def fit(config: ConfigArg, force: ForceOpt = False) -> None:
    """Fit one model per depth interval (with cross-validation); runs earlier stages as needed."""
    _run_until(config, "fit", None, force)


@app.command()
def predict(
    config: ConfigArg,
    scheduler: SchedulerOpt = None,
    force: ForceOpt = False,
    dashboard: DashboardOpt = None,
    depths: Annotated[
        str | None,
        typer.Option(
            help="More intervals mapped from the layered depth model without refitting, "
            "e.g. 0-50,0-150 (needs model.depth: layered)."
        ),
    ] = None,
) -> None:
    """Predict SOC density maps (COG) per depth interval; runs earlier stages as needed."""
    extra = _depth_list(depths) if depths is not None else []
    if extra:  # refused before any stage runs, not after the fit and the maps
        from mapping.config import load_config
        from mapping.run import predict_depths
        from mapping.run.layered import check_extra_depths

        cfg = load_config(config)
        check_extra_depths(cfg, extra)
    _run_until(config, "predict", scheduler, force, dashboard)
    if extra:
        for label, files in predict_depths(
            cfg, extra, scheduler=scheduler, echo=typer.echo
        ).items():
            typer.echo(f"{label} cm: {', '.join(sorted(str(p) for p in set(files.values())))}")


def _depth_list(text: str) -> list[str]:
    """``"0-50,0-150"`` as checked interval strings; a bad one is a one-line error."""
    from mapping.exceptions import ConfigError
    from mapping.units import parse_interval

    out = [d.strip() for d in text.split(",") if d.strip()]
    if not out:
        raise ConfigError(f"--depths: no interval in {text!r} (e.g. 0-50,0-150)")
    seen = set()
    for d in out:
        try:
            iv = parse_interval(d)
        except (ValueError, ConfigError) as exc:
            raise ConfigError(f"--depths: {exc}") from None
        if iv in seen:
            raise ConfigError(f"--depths: {d} is given twice")
        seen.add(iv)
    return out


@app.command()
def report(
    out: Annotated[Path, typer.Argument(help="Output folder of a run.", show_default=False)],
    config: Annotated[
        Path | None, typer.Option(help="The run's config (for zone outlines).")
    ] = None,
) -> None:
    """Rebuild the inventory report (HTML, Markdown, tables) of an output folder."""
    from mapping.config import load_config
    from mapping.exceptions import ConfigError
    from mapping.report import build_report

    cfg = load_config(config) if config is not None else None
    if cfg is not None and Path(cfg.output).resolve() != Path(out).resolve():
        raise ConfigError(
            f"--config {config}: its output is {cfg.output}, not {out}: the report would show "
            "another run's config"
        )
    zones = cfg.zones if cfg is not None else None
    files = build_report(
        out,
        config=cfg,
        zones_path=zones.path if zones is not None else None,
        zone_field=zones.field if zones is not None else None,
    )
    typer.echo(f"report: {files['index.html']}")


@app.command()
def design(
    config: ConfigArg,
    n: Annotated[int, typer.Option("--n", help="Number of new profile sites.")],
    target: Annotated[
        list[str] | None,
        typer.Option(
            "--target",
            help="Zone total to shrink, ZONE/INTERVAL (e.g. continuous/0-100, all/0-300); "
            "repeat for several. Default: every zone and all zones in every interval.",
        ),
    ] = None,
    access: Annotated[
        Path | None,
        typer.Option(help="Access-cost raster: cells with a valid cost are reachable."),
    ] = None,
    max_cost: Annotated[
        float | None, typer.Option(help="Largest access cost reachable (with --access).")
    ] = None,
    max_distance_km: Annotated[
        float | None,
        typer.Option(help="Reachable within this distance (km) of the run's profiles or --roads."),
    ] = None,
    roads: Annotated[
        Path | None,
        typer.Option(help="Vector layer (roads, rivers) --max-distance-km is measured from."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("-o", "--out", help="GeoPackage to write (default OUT/design/sites.gpkg)."),
    ] = None,
) -> None:
    """Propose N new profile sites that shrink the ranges of the chosen zone totals most."""
    from mapping.config import load_config
    from mapping.exceptions import ConfigError
    from mapping.run.design import run_design

    if n < 1:
        raise ConfigError(f"--n: the number of sites must be at least 1, got {n}")
    if access is not None and max_distance_km is not None:
        raise ConfigError("--access and --max-distance-km: give one of them")
    if roads is not None and max_distance_km is None:
        raise ConfigError("--roads needs --max-distance-km")
    if max_cost is not None and access is None:
        raise ConfigError("--max-cost needs --access")
    if max_distance_km is not None and not max_distance_km > 0:
        raise ConfigError(f"--max-distance-km must be positive, got {max_distance_km}")
    cfg = load_config(config)
    paths, _, table, _ = run_design(
        cfg,
        n,
        targets=target,
        access=access,
        max_cost=max_cost,
        max_distance_km=max_distance_km,
        roads=roads,
        out=out,
        echo=typer.echo,
    )
    for r in table.itertuples(index=False):
        typer.echo(
            f"{r.zone} {r.interval} cm: range expected to shrink by {r.expected_reduction_pct:.1f} %"
            f" (at most {r.max_reduction_pct:.1f} % from any {n} sites: {r.shared_pct:.0f} % of"
            " its variance is the error every cell shares)"
        )
    typer.echo(f"sites: {paths['sites']} (targets: {paths['targets']})")
    if out is None:
        typer.echo(f"`socmap report {cfg.output}` adds the map of the sites to the report")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``socmap`` console script."""
    import warnings

    # Python warnings are held until the command ends: a user error prints its one line
    # alone (the warnings on the way to it are symptoms of the same cause); otherwise
    # each distinct warning is printed once, on one line.
    with warnings.catch_warnings(record=True) as held:
        warnings.simplefilter("default")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=PendingDeprecationWarning)
        try:
            app(args=argv, prog_name="socmap")  # standalone: usage errors exit 2 by themselves
        except MappingError as exc:
            _echo(f"socmap: error: {exc}")
            return exc.exit_code
        except KeyboardInterrupt:
            _echo("socmap: interrupted")
            return 130
        except SystemExit as exc:  # click ends standalone runs with SystemExit, also on success
            code = exc.code
            _show_warnings(held)
            return code if isinstance(code, int) else (0 if code is None else 1)
    _show_warnings(held)
    return 0


def console() -> None:
    """The ``socmap`` console script: :func:`main`, then a quick exit.

    After a run the interpreter's exit would spend 2-3 s on work nobody needs: waiting for
    the idle helper processes' own orderly exit, then full garbage collections over the
    millions of objects of the imported libraries while the modules are torn down.
    Everything is written and closed by then, so the helpers are stopped and the objects
    still alive are frozen out of those collections (they are freed all the same).
    """
    import gc

    code = main()
    cluster = sys.modules.get("mapping.cluster")
    if cluster is not None:
        cluster.stop_helpers()
    gc.freeze()
    sys.exit(code)


def _show_warnings(held: list) -> None:  # type: ignore[type-arg]
    counts: dict[str, int] = {}
    for w in held:
        text = f"{w.category.__name__}: {str(w.message).strip().splitlines()[0] if str(w.message).strip() else ''}"
        counts[text] = counts.get(text, 0) + 1
    for text, n in counts.items():
        _echo(f"socmap: warning{f' (x{n})' if n > 1 else ''}: {text}")


if __name__ == "__main__":  # pragma: no cover
    console()
