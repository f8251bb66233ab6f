"""``eupe-eval``: kNN, PCA visualisations and teacher agreement (lands with the export issue)."""

from __future__ import annotations

from typing import Sequence

import click

from eupe.cli_support import run


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Evaluate teachers and students: kNN top-1, PCA of patch tokens, agreement with a teacher.

    Subcommands (knn, pca, agreement) land with the export/eval issue.
    """


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``eupe-eval``."""
    return run(cli, argv, "eupe-eval")
