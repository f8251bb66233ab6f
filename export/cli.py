"""``eupe-export``: trained student -> timm safetensors and ExecuTorch program (export issue)."""

from __future__ import annotations

from typing import Sequence

import click

from eupe.cli_support import run


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--checkpoint", required=True, help="A run directory or checkpoint file of eupe-train.")
@click.option("--format", "fmt", type=click.Choice(["safetensors", "executorch", "onnx"]), default="safetensors",
              show_default=True, help="Artifact to produce.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output directory.")
def cli(checkpoint: str, fmt: str, out: str) -> int:
    """Export a trained student without its adapter heads, for timm or for phones (ExecuTorch)."""
    raise click.ClickException("eupe-export is not implemented yet (export issue)")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``eupe-export``."""
    return run(cli, argv, "eupe-export")
