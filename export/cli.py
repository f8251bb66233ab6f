"""``eupe-export``: a trained student (or released EUPE weights) -> timm safetensors, ExecuTorch or ONNX.

Adapter heads are never exported: students are saved without them. Every export is checked
against eager PyTorch on held-out real photos (timm reload, the ExecuTorch runtime or
onnxruntime) and described in ``MODEL_CARD.md`` / ``model_card.json`` next to the artifacts.
The command exits 1 when a check fails (fp32: max abs diff > 1e-4; int8: mean cosine < 0.99).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import click
import torch

from eupe.cli_support import run
from eupe.deploy import executorch_export as et
from eupe.deploy.latency import machine_line
from eupe.deploy.model_card import build_card, write_model_card
from eupe.deploy.source import StudentSource, from_checkpoint, from_released
from eupe.models.weights import file_sha256

FORMATS = ("safetensors", "executorch", "onnx")


def _source(checkpoint: str | None, student: str | None, weights: str | None) -> StudentSource:
    if bool(checkpoint) == bool(student):
        raise click.UsageError("give either --checkpoint, or --student with --weights")
    if student:
        if not weights:
            raise click.UsageError("--student needs --weights (a local timm-format file of released EUPE weights)")
        return from_released(student, weights)
    if weights:
        raise click.UsageError("--weights goes with --student, not --checkpoint")
    return from_checkpoint(checkpoint)


def _artifact(path: Path, fmt: str, resolution: int | None, quantize: str | None, load: str) -> dict[str, Any]:
    return {"artifact": path.name, "format": fmt, "resolution": resolution or "any",
            "quantize": quantize or "fp32", "bytes": path.stat().st_size, "sha256": file_sha256(path), "load": load}


def _parity_row(path: Path, runtime: str, resolution: int, result: dict[str, float], quantize: str | None,
                images: int) -> dict[str, Any]:
    threshold = (f"max abs diff <= {et.FP32_TOLERANCE:g}" if quantize is None
                 else f"mean cosine >= {et.INT8_MIN_COSINE}")
    return {"artifact": path.name, "runtime": runtime, "resolution": resolution, "images": images, **result,
            "threshold": threshold, "passed": et.passes(result, quantize)}


def _report(row: dict[str, Any]) -> None:
    click.echo(f"{row['artifact']} ({row['runtime']}, {row['resolution']} px, {row['images']} photos) vs eager: "
               f"summary max|diff| {row['summary_max_abs_diff']:.3g}, cosine mean {row['summary_cosine_mean']:.6f} "
               f"min {row['summary_cosine_min']:.6f}; patch max|diff| {row['patch_max_abs_diff']:.3g}, cosine mean "
               f"{row['patch_cosine_mean']:.6f} min {row['patch_cosine_min']:.6f} -> "
               f"{'OK' if row['passed'] else 'FAILED'} ({row['threshold']})")


def _export_safetensors(src: StudentSource, out: Path, resolutions: list[int]) -> tuple[list, list]:
    from eupe.deploy.timm_export import export_safetensors, timm_reload_diff

    path = export_safetensors(src.encoder, out, test_scale=src.test_scale, info=src.info)
    pixels = et.check_pixels(resolutions[0])
    diff = timm_reload_diff(src.encoder, path, pixels)
    load = (f"timm.create_model('{src.encoder.spec.timm_name}', pretrained=True, "
            f"pretrained_cfg_overlay=dict(file='{path.name}'), **timm_kwargs)")
    click.echo(f"wrote {path} (timm name {src.encoder.spec.timm_name}); timm reload max|diff| {diff:.3g}")
    row = {"artifact": path.name, "runtime": "timm", "resolution": resolutions[0], "images": len(pixels),
           "forward_features_max_abs_diff": diff, "threshold": f"max abs diff <= {et.FP32_TOLERANCE:g}",
           "passed": diff <= et.FP32_TOLERANCE}
    return [_artifact(path, "safetensors", None, None, load)], [row]


def _export_executorch(src: StudentSource, out: Path, resolutions: list[int], quantize: str | None) -> tuple[list, list]:
    artifacts, parity = [], []
    for res in resolutions:
        path = et.export_pte(src.encoder, res, out / f"model_{res}{'_' + quantize if quantize else ''}.pte", quantize)
        pixels = et.check_pixels(res)
        row = _parity_row(path, "executorch", res, et.parity(src.encoder, path, pixels), quantize, len(pixels))
        _report(row)
        artifacts.append(_artifact(path, "executorch", res, quantize, "executorch.runtime.Runtime.get().load_program(path)"))
        parity.append(row)
    return artifacts, parity


def _export_onnx(src: StudentSource, out: Path, resolutions: list[int]) -> tuple[list, list]:
    from eupe.deploy.onnx_export import export_onnx, onnx_parity

    artifacts, parity = [], []
    for res in resolutions:
        path = export_onnx(src.encoder, res, out / f"model_{res}.onnx")
        pixels = et.check_pixels(res)
        row = _parity_row(path, "onnxruntime", res, onnx_parity(src.encoder, path, pixels), None, len(pixels))
        _report(row)
        artifacts.append(_artifact(path, "onnx", res, None, "onnxruntime.InferenceSession(path)"))
        parity.append(row)
    return artifacts, parity


def _bench(src: StudentSource, artifacts: list[dict[str, Any]], out: Path, resolutions: list[int],
           repeats: int) -> list[dict[str, Any]]:
    from eupe.deploy.latency import bench_eager_vs_pte, eager_latency_ms

    ptes = {a["resolution"]: {a["quantize"]: out / a["artifact"]} for a in artifacts if a["format"] == "executorch"}
    if ptes:
        rows = bench_eager_vs_pte(src.encoder, ptes, repeats)
    else:
        rows = [{"student": src.encoder.spec.name, "resolution": r, "program": "eager",
                 "eager_ms": eager_latency_ms(src.encoder, r, repeats), "torch_threads": torch.get_num_threads()}
                for r in resolutions]
    for row in rows:
        click.echo("latency " + ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
    return rows


def _check_options(fmt: str, quantize: str | None, resolutions: tuple[int, ...]) -> None:
    if quantize and fmt != "executorch":
        raise click.UsageError("--quantize applies to --format executorch only")
    if fmt != "safetensors" and len(set(resolutions)) != len(resolutions):
        raise click.UsageError("--resolution values must differ")


def _check_resolutions(src: StudentSource, resolutions: list[int]) -> None:
    for res in resolutions:
        try:
            src.encoder.check_input(res, res)
        except ValueError as err:
            raise click.BadParameter(str(err), param_hint="--resolution") from None


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--checkpoint", default=None,
              help="A trained student: an eupe-train run directory or its student.safetensors.")
@click.option("--student", default=None, help="Registered student name (vit_t, vit_s, vit_b, convnext_t, "
              "convnext_s, convnext_b) to export released EUPE weights; needs --weights.")
@click.option("--weights", default=None,
              help="With --student: a local timm-format weights file of released EUPE weights (or 'eupe' for the HF cache).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="safetensors", show_default=True,
              help="safetensors: timm-loadable weights; executorch: XNNPACK .pte program(s); onnx: ONNX graph(s).")
@click.option("--resolution", "resolutions", type=click.IntRange(16), multiple=True, default=(256,), show_default=True,
              help="Input side in pixels of the exported program (repeatable: one program each). Must be a multiple "
                   "of the patch size (16 ViT, 32 ConvNeXt). For safetensors: the side of the reload check only.")
@click.option("--quantize", type=click.Choice(et.QUANTIZE_CHOICES), default=None,
              help="executorch only: XNNPACK 8-bit static quantization (convs and linears, per-channel weights), "
                   "calibrated on bundled photos.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output directory (created if absent).")
@click.option("--bench", is_flag=True, help="Also time eager vs the exported program(s), batch 1, and record it in the card.")
@click.option("--bench-repeats", default=10, show_default=True, type=click.IntRange(1), help="Timed runs per measurement.")
@click.option("--threads", default=None, type=click.IntRange(1),
              help="Threads for torch and the ExecuTorch XNNPACK threadpool (default: their defaults).")
def cli(checkpoint, student, weights, fmt, resolutions, quantize, out, bench, bench_repeats, threads) -> int:
    """Export a student without its adapter heads, for timm, for phones (ExecuTorch) or for ONNX runtimes.

    The export is run once and compared with eager PyTorch on held-out bundled photos; the
    result, the training record from the student file and (with --bench) latencies go into
    MODEL_CARD.md and model_card.json in --out. Exits 1 when the comparison fails.
    """
    _check_options(fmt, quantize, resolutions)
    if threads:
        from eupe.deploy.latency import set_threads

        set_threads(threads)
    src, out_dir, res = _source(checkpoint, student, weights), Path(out), list(resolutions)
    _check_resolutions(src, res)
    if fmt == "safetensors":
        artifacts, parity = _export_safetensors(src, out_dir, res)
    elif fmt == "executorch":
        artifacts, parity = _export_executorch(src, out_dir, res, quantize)
    else:
        artifacts, parity = _export_onnx(src, out_dir, res)
    latency = _bench(src, artifacts, out_dir, res, bench_repeats) if bench else []
    md, _ = write_model_card(out_dir, build_card(src.describe(), src.info, artifacts, parity, latency, machine_line()))
    click.echo(f"wrote {md}")
    failed = [row["artifact"] for row in parity if not row["passed"]]
    if failed:
        click.echo(f"Error: parity check failed for {', '.join(failed)}", err=True)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``eupe-export``."""
    return run(cli, argv, "eupe-export")
