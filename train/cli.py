"""``eupe-train``: the Accelerate trainer for EUPE Stages 1-3 (lands with the trainer issue)."""

from __future__ import annotations

from typing import Sequence

import click

from eupe.cli_support import run


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--stage", type=click.IntRange(1, 3), required=True,
              help="1: teachers -> proxy; 2: proxy -> student at fixed resolution; 3: multi-resolution.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML config (see configs/).")
@click.argument("overrides", nargs=-1)
def cli(stage: int, config_file: str | None, overrides: tuple[str, ...]) -> int:
    """Distil cached teacher features into a student (or the Stage-1 proxy).

    OVERRIDES are key=value pairs applied over the config, e.g. `optim.lr=1e-4`.
    """
    raise click.ClickException("eupe-train is not implemented yet (trainer issue)")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``eupe-train``."""
    return run(cli, argv, "eupe-train")
