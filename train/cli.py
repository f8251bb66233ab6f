"""``eupe-train``: the Accelerate trainer for EUPE Stages 1-3 over cached teacher targets.

Importing this module loads only click: torch, timm and accelerate are imported inside the
command, so ``eupe-train --help`` answers at once. The config is validated before any work.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import click

if TYPE_CHECKING:
    from eupe.distill.config import TrainConfig


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--stage", type=click.IntRange(1, 3), required=True,
              help="1: cached teachers -> proxy; 2: proxy cache -> student at a fixed resolution; "
                   "3: from a Stage-2 run, random student/teacher scales (online fallback for scales the cache lacks).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="YAML config merged strictly over the defaults (see configs/train/).")
@click.argument("overrides", nargs=-1)
def cli(stage: int, config_file: str | None, overrides: tuple[str, ...]) -> int:
    """Distil cached teacher features into a student (or, in Stage 1, into the proxy).

    OVERRIDES are key=value pairs applied over the config, e.g. `optim.lr=1e-4 out=runs/x
    data.store=features.zarr`. The resolved config is written to the run directory. Re-running
    the same command resumes from the newest checkpoint and follows the same data order.

    Multi-GPU: `accelerate launch --multi_gpu --num_processes 8 -m eupe.train.cli --stage 2 ...`.
    """
    from eupe.distill.config import validate

    cfg, values = load_config(config_file, overrides)
    if cfg.stage != stage and "stage" in values:
        raise click.BadParameter(f"--stage {stage} but {config_file} is a stage-{cfg.stage} config")
    cfg.stage = stage
    validate(cfg, world_size=int(os.environ.get("WORLD_SIZE", "1")))
    from eupe.distill.loop import train

    train(cfg, say=click.echo)  # prints "run directory: ..." from the main process
    return 0


def load_config(config_file: str | None, overrides: Sequence[str]) -> tuple["TrainConfig", dict]:
    """The config and the YAML file's values; an error names the file or the override at fault."""
    from eupe import config as config_io
    from eupe.config import ConfigError
    from eupe.distill.config import TrainConfig

    values = _yaml_values(config_file) if config_file else {}
    try:
        config_io.build(TrainConfig, values)
    except ConfigError as err:
        raise ConfigError(f"{config_file}: {err}") from None
    for i, item in enumerate(overrides):
        try:
            config_io.build(TrainConfig, values, overrides[: i + 1])
        except ConfigError as err:
            raise ConfigError(f"override {item!r}: {err}") from None
    return config_io.build(TrainConfig, values, overrides), values


def _yaml_values(config_file: str) -> dict:
    import yaml

    from eupe.config import ConfigError

    path = Path(config_file)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        values = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path} is not valid YAML: {' '.join(str(err).split())}") from None
    if values is not None and not isinstance(values, dict):
        raise ConfigError(f"config file {path} must hold a mapping at top level")
    return values or {}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``eupe-train``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or HELP & set(args):
        return _help(args)
    from eupe.cli_support import run  # imports torch and timm (through eupe.models): only for real work

    return run(cli, args, "eupe-train")


HELP = {"-h", "--help"}


def _help(args: list[str]) -> int:
    """Help and usage errors answered by click alone, without the heavy imports of cli_support."""
    try:
        cli.main(args=args, prog_name="eupe-train", standalone_mode=False)
    except click.exceptions.Exit as stop:
        return stop.exit_code
    except click.ClickException as err:
        err.show()
        return err.exit_code
    return 0


if __name__ == "__main__":  # `accelerate launch -m eupe.train.cli ...`
    raise SystemExit(main())
