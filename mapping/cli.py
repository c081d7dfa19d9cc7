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


@app.callback()
def _root() -> None:
    """Soil organic carbon maps and zone totals with honest uncertainty."""


def _echo(msg: str) -> None:
    typer.echo(msg, err=True)


@app.command()
def validate(config: ConfigArg) -> None:
    """Check a workflow config and its inputs without running anything."""
    from mapping.config import load_config

    cfg = load_config(config)
    typer.echo(f"config OK: {cfg.source}")
    typer.echo(f"  profiles: {cfg.profiles.path}")
    typer.echo(f"  depths:   {', '.join(cfg.stocks.depths)} ({cfg.stocks.method})")
    typer.echo(f"  output:   {cfg.output}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``socmap`` console script."""
    try:
        app(args=argv, prog_name="socmap")  # standalone: usage errors exit 2 by themselves
    except MappingError as exc:
        _echo(f"socmap: error: {exc}")
        return exc.exit_code
    except KeyboardInterrupt:
        _echo("socmap: interrupted")
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
