"""Shared plumbing for the click applications: ``main(argv) -> int`` and clean user errors.

Errors a user can fix (unknown names, missing weights, bad configs, datasets or stores) are
printed as one ``Error: ...`` line with exit status 2 instead of a traceback. The error classes
are looked up in ``sys.modules`` rather than imported here, so a CLI module that imports this
stays light (``--help`` never loads torch); an exception can only be an instance of a class whose
module is already imported.
"""

from __future__ import annotations

import signal
import sys
from typing import Sequence

import click

# (module, class) of every error that means "the user can fix this"
USER_ERRORS: tuple[tuple[str, str], ...] = (
    ("eupe.config", "ConfigError"),
    ("eupe.models.weights", "MissingWeightsError"),
    ("eupe.models.weights", "WeightsFileError"),
    ("eupe.registry", "UnknownNameError"),
    ("eupe.store.layout", "StoreError"),
    ("eupe.store.layout", "StoreWriteError"),
    ("eupe.data.shards", "DatasetError"),
    ("eupe.deploy.folder", "ExportFolderError"),
    ("eupe.deploy.timm_export", "UnsupportedStudentError"),
    ("eupe.distill.rundir", "RunError"),
    ("eupe.paths", "PathError"),
    ("builtins", "FileNotFoundError"),
    ("eupe.eval.datasets", "DatasetError"),
    ("eupe.eval.tasks.base", "TaskOptionError"),
    ("eupe.eval.tasks.base", "NotAvailableError"),
    ("eupe.eval.zeroshot", "TextTowerError"),
    ("eupe.eval.suite", "ModelSpecError"),
)


def _set_quiet(_ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    from eupe.progress import set_quiet  # stdlib only: --help stays fast

    set_quiet(value)
    return value


# every long command: `--quiet` turns off its progress bar / progress lines (eupe.progress)
quiet_option = click.option("--quiet", "-q", is_flag=True, expose_value=False, callback=_set_quiet,
                            help="No progress bar or progress lines (results and errors still print). "
                                 "Without a terminal, progress is one line every $EUPE_PROGRESS_INTERVAL s (30).")


class Interrupted(Exception):
    """SIGTERM (or SIGINT) arrived; work finished so far is kept."""


def is_user_error(err: BaseException) -> bool:
    """One of USER_ERRORS, or an operating-system error on a user's path (read-only medium,
    permission, full disk, not a regular file: ``eupe.paths.USER_ERRNOS``)."""
    from eupe.paths import is_user_os_error  # stdlib only

    if is_user_os_error(err):
        return True
    for module, name in USER_ERRORS:
        cls = getattr(sys.modules.get(module), name, None)
        if cls is not None and isinstance(err, cls):
            return True
    return False


def user_message(err: BaseException) -> str:
    """The one line a user error prints after ``Error: ``."""
    from eupe.paths import is_user_os_error, os_error_message

    return os_error_message(err) if is_user_os_error(err) else str(err)


def _on_signal(signum: int, _frame) -> None:
    raise Interrupted(signal.Signals(signum).name)


def run(command: click.Command, argv: Sequence[str] | None, prog_name: str) -> int:
    """Run a click command like a console script would, returning the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    from eupe.progress import set_quiet

    set_quiet(False)  # a previous in-process call's --quiet does not carry over
    previous = signal.signal(signal.SIGTERM, _on_signal) if _main_thread() else None
    try:
        result = command.main(args=args, prog_name=prog_name, standalone_mode=False)
    except click.exceptions.Exit as stop:
        return stop.exit_code
    except click.ClickException as err:
        err.show()
        return err.exit_code
    except (click.Abort, KeyboardInterrupt, Interrupted) as err:
        what = "SIGINT" if not isinstance(err, Interrupted) else str(err)
        click.echo(f"Interrupted ({what}): completed work is saved; re-run the same command to continue.", err=True)
        return 130 if what == "SIGINT" else 143
    except Exception as err:  # noqa: BLE001 - user errors become one line, the rest propagate
        if not is_user_error(err):
            raise
        click.echo(f"Error: {user_message(err)}", err=True)
        return 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return result if isinstance(result, int) else 0


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
