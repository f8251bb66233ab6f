"""``eupe-train``: the Accelerate trainer for EUPE Stages 1-3 over cached teacher targets."""

from __future__ import annotations

from typing import Sequence

import click

from eupe import config as config_io
from eupe.cli_support import run
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
    from eupe.distill.loop import train

    cfg = config_io.load(TrainConfig, config_file, overrides)
    if cfg.stage != stage and config_file is not None and "stage" in (_yaml_keys(config_file)):
        raise click.BadParameter(f"--stage {stage} but {config_file} is a stage-{cfg.stage} config")
    cfg.stage = stage
    out = train(cfg, say=click.echo)
    click.echo(f"run directory: {out}")
    return 0


def _yaml_keys(path: str) -> set[str]:
    import yaml

    with open(path) as handle:
        return set(yaml.safe_load(handle) or {})


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``eupe-train``."""
    return run(cli, argv, "eupe-train")


if __name__ == "__main__":  # `accelerate launch -m eupe.train.cli ...`
    raise SystemExit(main())
