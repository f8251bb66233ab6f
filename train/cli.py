"""``eupe-train``: the Accelerate trainer for EUPE Stages 1-3 over cached teacher targets.

Importing this module loads only click: torch, timm and accelerate are imported inside the
command, so ``eupe-train --help`` answers at once. The config is validated before any work.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Sequence

import click

from eupe.cli_support import quiet_option

if TYPE_CHECKING:
    from eupe.distill.config import TrainConfig


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--stage", type=click.IntRange(1, 3), required=True,
              help="1: cached teachers -> proxy; 2: proxy cache -> student at a fixed resolution; "
                   "3: from a Stage-2 run, random student/teacher resolutions "
                   "(online fallback for resolutions the cache lacks).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="YAML config merged strictly over the defaults (see configs/train/).")
@click.argument("overrides", nargs=-1)
@quiet_option
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
    from eupe.paths import require_writable

    require_writable(cfg.out, "out=", "the run directory receives the config, checkpoints and logs: choose a "
                     "writable out=")
    from eupe.distill.loop import train

    train(cfg, say=click.echo)  # prints "run directory: ..." from the main process
    return 0


def load_config(config_file: str | None, overrides: Sequence[str]) -> tuple["TrainConfig", dict]:
    """The config and the YAML file's values; an error names the file or the override at fault."""
    from eupe import config as config_io
    from eupe.distill.config import TrainConfig

    return config_io.load_with_values(TrainConfig, config_file, overrides)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``eupe-train``."""
    from eupe.cli_support import run  # light: error classes are looked up, not imported

    return run(cli, argv, "eupe-train")


if __name__ == "__main__":  # `accelerate launch -m eupe.train.cli ...`
    raise SystemExit(main())
