"""The ``medseg`` command line. Each subcommand is a thin wrapper around one library function.

Errors caused by user input (:class:`medseg.errors.MedsegError`) are printed as one line
``error: ...`` with exit code 2; ``medseg --debug ...`` shows the full traceback instead. So
is an ``OSError`` (read-only or full disk, permissions, a link loop, a folder where a file
belongs): writers report ``cannot write PATH: <reason>; <fix>`` themselves
(:class:`~medseg.errors.OutputWriteError`, temporary files already removed); any other one
is worded here by :func:`medseg.io.atomic.os_error_message`.
"""

from __future__ import annotations

import logging
import sys

import click
import typer

try:  # Typer >= 0.20 vendors its own click; its usage errors are not click's
    from typer._click.exceptions import ClickException as _TyperClickException
except ImportError:  # pragma: no cover - older Typer uses click itself
    _TyperClickException = click.ClickException

from medseg import RESEARCH_USE_NOTICE, __version__
from medseg.cli import (
    data_cmds,
    infer_cmds,
    io_cmds,
    model_cmds,
    plan_cmds,
    sample_cmds,
    train_cmds,
    view_cmds,
)
from medseg.errors import MedsegError

app = typer.Typer(
    name="medseg",
    help=f"Medical image segmentation: I/O, training, inference, viewer. {RESEARCH_USE_NOTICE}",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"medseg {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )


for module in (
    io_cmds,
    sample_cmds,
    data_cmds,
    plan_cmds,
    train_cmds,
    model_cmds,
    infer_cmds,
    view_cmds,
):
    module.register(app)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    command = typer.main.get_command(app)
    try:
        result = command.main(args=args, prog_name="medseg", standalone_mode=False)
    except MedsegError as err:
        if debug:
            raise
        typer.echo(f"error: {err.for_cli()}", err=True)
        sys.exit(2)
    except OSError as err:  # the OS refused a file: one line, not a traceback
        if debug:
            raise
        from medseg.io.atomic import os_error_message  # medseg.io is heavy: not for --help

        typer.echo(f"error: {os_error_message(err)}", err=True)
        sys.exit(2)
    except (click.ClickException, _TyperClickException) as err:
        err.show()
        sys.exit(err.exit_code)
    except (click.exceptions.Abort, typer.Abort):
        typer.echo("aborted", err=True)
        sys.exit(130)
    except (click.exceptions.Exit, typer.Exit) as err:
        sys.exit(err.exit_code)
    if isinstance(result, int) and result != 0:
        sys.exit(result)


if __name__ == "__main__":
    main()
