"""``eupe-export``: a trained student (or released EUPE weights) -> a timm / Hub model folder (+ a program).

The folder always holds ``model.safetensors`` + ``config.json`` (timm's and the Hub's own shape:
``timm.create_model("local-dir:FOLDER", pretrained=True)``, ``AutoModel.from_pretrained(FOLDER)``)
and the model card ``README.md`` / ``model_card.json``; ``--format executorch`` / ``onnx`` add their
programs beside them. Adapter heads are never exported. Every artifact is run in its own runtime
(timm from the folder, the ExecuTorch runtime, onnxruntime...) on held-out real photos and compared
with eager PyTorch; the command exits 1 when a check fails (fp32: max abs diff > 1e-4; int8: mean
cosine < 0.99). A folder holding anything else is refused before anything is written (``--force``).
torch, timm and the runtimes are imported inside the command, so ``--help`` answers at once.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import click

from eupe.cli_support import quiet_option, run
from eupe.deploy.exporters import EXPORTERS, Exporter, get_exporter, list_exporters, quantize_choices

if TYPE_CHECKING:
    from eupe.deploy.source import StudentSource

FORMAT_HELP = "; ".join(f"{name}: {EXPORTERS.get(name).help}" for name in list_exporters()) + "."
QUANTIZE_HELP = "only " + ", ".join(n for n in list_exporters() if EXPORTERS.get(n).quantize_choices)


def _source(checkpoint: str | None, student: str | None, weights: str | None) -> StudentSource:
    from eupe.deploy.source import from_checkpoint, from_released

    if bool(checkpoint) == bool(student):
        raise click.UsageError("give either --checkpoint, or --student with --weights")
    if student:
        if not weights:
            raise click.UsageError("--student needs --weights (a local timm-format file of released EUPE weights)")
        return from_released(student, weights)
    if weights:
        raise click.UsageError("--weights goes with --student, not --checkpoint")
    return from_checkpoint(checkpoint)


def _artifact(path: Path, exporter: Exporter, resolution: int, quantize: str | None, load: str) -> dict[str, Any]:
    from eupe.models.weights import file_sha256

    return {"artifact": path.name, "format": exporter.name,
            "resolution": resolution if exporter.per_resolution else "any", "quantize": quantize or "fp32",
            "bytes": path.stat().st_size, "sha256": file_sha256(path), "load": load}


def _report(row: dict[str, Any]) -> None:
    click.echo(f"{row['artifact']} ({row['runtime']}, {row['resolution']} px, {row['images']} photos) vs eager: "
               f"summary max|diff| {row['summary_max_abs_diff']:.3g}, cosine mean {row['summary_cosine_mean']:.6f} "
               f"min {row['summary_cosine_min']:.6f}; patch max|diff| {row['patch_max_abs_diff']:.3g}, cosine mean "
               f"{row['patch_cosine_mean']:.6f} min {row['patch_cosine_min']:.6f} -> "
               f"{'OK' if row['passed'] else 'FAILED'} ({row['threshold']})")


def _export(exporter: Exporter, src: StudentSource, out: Path, resolutions: list[int],
            quantize: str | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Write, run and check one artifact per resolution (one in all for a size-independent format)."""
    from eupe.progress import progress

    artifacts, parity = [], []
    todo = resolutions if exporter.per_resolution else resolutions[:1]
    with progress(total=len(todo), desc=f"export {exporter.name}", unit="artifact") as bar:
        for resolution in todo:
            path = exporter.export(src, out / exporter.filename(resolution, quantize), resolution, quantize)
            click.echo(f"wrote {path}")
            row = exporter.check(src.encoder, path, resolution, quantize)
            _report(row)
            artifacts.append(_artifact(path, exporter, resolution, quantize, exporter.how_to_load(src, path)))
            parity.append(row)
            bar.update(1)
    return artifacts, parity


def _bench(exporter: Exporter, src: StudentSource, out: Path, parity: list[dict[str, Any]], quantize: str | None,
           repeats: int) -> list[dict[str, Any]]:
    """Eager vs the artifact in its runtime, batch 1, at each checked resolution."""
    import torch

    from eupe.deploy.latency import eager_latency_ms

    rows = []
    for checked in parity:
        resolution, path = checked["resolution"], out / checked["artifact"]
        row = {"student": src.encoder.spec.name, "resolution": resolution, "artifact": path.name,
               "program": quantize or "fp32", "eager_ms": eager_latency_ms(src.encoder, resolution, repeats)}
        runtime_ms = exporter.latency_ms(path, resolution, repeats)
        if runtime_ms is not None:
            row.update({f"{exporter.runtime}_ms": runtime_ms, "speedup": row["eager_ms"] / runtime_ms})
        rows.append({**row, "torch_threads": torch.get_num_threads()})
        click.echo("latency " + ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
    return rows


def _check_options(exporter: Exporter, quantize: str | None, resolutions: tuple[int, ...]) -> None:
    if quantize and quantize not in exporter.quantize_choices:
        supported = [n for n in list_exporters() if quantize in EXPORTERS.get(n).quantize_choices]
        raise click.UsageError(f"--quantize {quantize} applies to --format {' or '.join(supported)} only")
    if exporter.per_resolution and len(set(resolutions)) != len(resolutions):
        raise click.UsageError("--resolution values must differ")


def _check_resolutions(src: StudentSource, resolutions: list[int]) -> None:
    for resolution in resolutions:
        try:
            src.encoder.check_input(resolution, resolution)
        except ValueError as err:
            raise click.BadParameter(str(err), param_hint="--resolution") from None


def _license(value: str | None) -> str | None:
    if value is not None and not re.fullmatch(r"[a-z0-9][a-z0-9.+-]*", value):
        raise click.BadParameter(f"{value!r} is not a Hub licence identifier (lower case, e.g. apache-2.0, mit, "
                                 "cc-by-nc-4.0, other)", param_hint="--license")
    return value


def _hub_facts(src: StudentSource, out: Path, name: str | None, datasets: tuple[str, ...]) -> dict[str, Any]:
    """The YAML header's facts: name, licence, the teachers' (or the release's) Hub ids, datasets, the folder."""
    from eupe.deploy.source import shown_path, teacher_hub_ids

    teachers = src.info.get("teachers") or []
    base = [src.encoder.spec.weights.hf_repo] if src.release_tag else teacher_hub_ids(list(teachers))
    return {"name": name or src.name, "license": src.license or src.default_license(),
            "base_model": [b for b in base if b], "datasets": list(datasets), "folder": shown_path(out)}


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--checkpoint", default=None,
              help="A trained student: an eupe-train run directory (Stage 2 or 3) or its student.safetensors.")
@click.option("--student", default=None, help="Registered student name (vit_t, vit_s, vit_b, convnext_t, "
              "convnext_s, convnext_b) to export released EUPE weights; needs --weights.")
@click.option("--weights", default=None,
              help="With --student: a local timm-format weights file of released EUPE weights (or 'eupe' for the HF cache).")
@click.option("--format", "fmt", type=click.Choice(list_exporters()), default="safetensors", show_default=True,
              help=FORMAT_HELP + " The timm / Hub folder (model.safetensors, config.json, README.md) is always written.")
@click.option("--resolution", "resolutions", type=click.IntRange(16), multiple=True, default=(256,), show_default=True,
              help="Input resolution in pixels of the exported program (repeatable: one program each). Must be a multiple "
                   "of the patch size (16 ViT, 32 ConvNeXt). For safetensors: the resolution of the reload check only.")
@click.option("--quantize", type=click.Choice(quantize_choices()), default=None,
              help=f"{QUANTIZE_HELP}: XNNPACK 8-bit static quantization (convs and linears, per-channel weights), "
                   "calibrated on bundled photos.")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Output folder: new, empty, or an earlier export of the same weights (else see --force).")
@click.option("--license", "license_", default=None,
              help="Licence of the export in the card and config.json (a Hub identifier: apache-2.0, mit, cc-by-nc-4.0...). "
                   "Default: 'other' for a trained student (its teachers' and data's terms decide; choose one), the "
                   "release's licence for --student.")
@click.option("--name", default=None, help="The export's name (card title, config tag). Default: <student>-<run directory>.")
@click.option("--dataset", "datasets", multiple=True,
              help="Hub id of a dataset the student was trained on, for the card's header (repeatable).")
@click.option("--force", is_flag=True,
              help="Write into an --out that holds other files or another export: the export's own file names are "
                   "overwritten, nothing else is touched.")
@click.option("--bench", is_flag=True, help="Also time eager vs the exported program(s), batch 1, and record it in the card.")
@click.option("--bench-repeats", default=10, show_default=True, type=click.IntRange(1), help="Timed runs per measurement.")
@click.option("--threads", default=None, type=click.IntRange(1),
              help="Threads for torch and the ExecuTorch XNNPACK threadpool (default: their defaults).")
@quiet_option
def cli(checkpoint, student, weights, fmt, resolutions, quantize, out, license_, name, datasets, force, bench,
        bench_repeats, threads) -> int:
    """Export a student without its adapter heads as a timm / Hugging Face model folder, plus a program for
    phones (ExecuTorch) or ONNX runtimes.

    The folder loads with timm.create_model("local-dir:OUT", pretrained=True) and
    transformers.AutoModel.from_pretrained("OUT"). Each artifact is run once and compared with eager
    PyTorch on held-out bundled photos; the result, the training record, the run's final losses and
    evaluations and (with --bench) latencies go into the card README.md and model_card.json in --out.
    Exits 1 when a comparison fails.
    """
    exporter = get_exporter(fmt)
    _check_options(exporter, quantize, resolutions)
    _license(license_)
    from eupe.deploy.folder import check_out_dir, previous_license
    from eupe.deploy.latency import machine_line, set_threads  # torch and ExecuTorch: only past the option checks
    from eupe.deploy.model_card import build_card, write_model_card
    from eupe.deploy.timm_export import pooling_args

    if threads:
        set_threads(threads)
    src, out_dir, resolutions = _source(checkpoint, student, weights), Path(out), list(resolutions)
    src.license = license_ or previous_license(out_dir, src.encoder.fingerprint)  # a re-export keeps the licence
    pooling_args(src.encoder.spec)  # a student no timm pooling reproduces: refused before any write
    _check_resolutions(src, resolutions)
    check_out_dir(out_dir, src.encoder.fingerprint, force)
    artifacts, parity = _export(get_exporter("safetensors"), src, out_dir, resolutions, None)
    latency = []
    if exporter.name != "safetensors":
        more, checked = _export(exporter, src, out_dir, resolutions, quantize)
        artifacts, parity = artifacts + more, parity + checked
        latency = _bench(exporter, src, out_dir, checked, quantize, bench_repeats) if bench else []
    elif bench:
        latency = _bench(exporter, src, out_dir, parity, quantize, bench_repeats)
    card = build_card(src.describe(), src.info, artifacts, parity, latency, machine_line(),
                      hub=_hub_facts(src, out_dir, name, datasets), run_dir=src.run_dir)
    md, _ = write_model_card(out_dir, card)
    click.echo(f"wrote {md}")
    failed = [row["artifact"] for row in parity if not row["passed"]]
    if failed:
        click.echo(f"Error: parity check failed for {', '.join(failed)}", err=True)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``eupe-export``."""
    return run(cli, argv, "eupe-export")


if __name__ == "__main__":  # `python -m eupe.export.cli`
    raise SystemExit(main())
