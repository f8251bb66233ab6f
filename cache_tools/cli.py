"""``eupe-cache``: run teachers once over a dataset and manage the feature store."""

from __future__ import annotations

import json
from typing import Sequence

import click

from eupe.cache_tools import commands
from eupe.cli_support import run


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Teacher-feature cache: extract features into a Zarr store, inspect and verify it.

    Teachers run once, offline; their summary and patch tokens are stored per image and per
    exact view, so training never has to host the teacher.
    """


def _teacher_rows() -> list[dict]:
    from eupe.models.teachers import list_teachers, teacher_spec, teacher_weights_path

    rows = []
    for name in list_teachers():
        spec = teacher_spec(name)
        path = teacher_weights_path(name)
        rows.append({**spec.describe(), "weights": str(path) if path else None,
                     "description": spec.description})
    return rows


@cli.command("teachers")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of a table.")
def teachers_cmd(as_json: bool) -> None:
    """List the registered teachers: native resolution, patch size, summary token, dims, weights.

    DIMS is summary width / patch width (PE-core's summary is its 1280-d text-aligned embedding).
    WEIGHTS shows where local weights were found, or "missing" (pass --weights PATH to
    extract, or put the file in the local Hugging Face cache).
    """
    rows = _teacher_rows()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    header = f"{'name':<18}{'architecture':<38}{'resolution':>11}{'patch':>6}  {'summary':<15}{'dims':>10}  weights"
    click.echo(header)
    for row in rows:
        where = row["weights"] or f"missing ({row['weights_source']})"
        dims = f"{row['summary_dim']}/{row['patch_dim']}"
        click.echo(f"{row['name']:<18}{row['architecture']:<38}{row['resolution']:>11}{row['patch_size']:>6}  "
                   f"{row['summary']:<15}{dims:>10}  {where}")


for _command in (commands.extract, commands.info, commands.verify, commands.stats, commands.plan, commands.upgrade):
    cli.add_command(_command)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``eupe-cache``."""
    return run(cli, argv, "eupe-cache")


if __name__ == "__main__":  # `python -m eupe.cache_tools.cli`, `accelerate launch -m eupe.cache_tools.cli`
    raise SystemExit(main())
