"""Shared plumbing for the click applications: ``main(argv) -> int`` and clean user errors.

Errors a user can fix (unknown names, missing weights, bad configs or inputs) are printed
as one ``Error: ...`` line with exit status 2 instead of a traceback.
"""

from __future__ import annotations

import sys
from typing import Sequence

import click

from eupe.config import ConfigError
from eupe.models.weights import MissingWeightsError
from eupe.registry import UnknownNameError
from eupe.store.extract import StoreWriteError
from eupe.store.store import StoreMismatchError

USER_ERRORS: tuple[type[Exception], ...] = (
    ConfigError, MissingWeightsError, UnknownNameError, StoreMismatchError, StoreWriteError, FileNotFoundError,
)


def run(command: click.Command, argv: Sequence[str] | None, prog_name: str) -> int:
    """Run a click command like a console script would, returning the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        result = command.main(args=args, prog_name=prog_name, standalone_mode=False)
    except click.exceptions.Exit as stop:
        return stop.exit_code
    except click.ClickException as err:
        err.show()
        return err.exit_code
    except click.Abort:
        click.echo("Aborted.", err=True)
        return 1
    except USER_ERRORS as err:
        click.echo(f"Error: {err}", err=True)
        return 2
    return result if isinstance(result, int) else 0
