"""``eupe-eval suite | knn | pca | agreement | <task>``: the evaluation suite and single tasks.

Thin click wrappers over ``eupe.eval``. ``suite`` runs every registered task (``eupe.eval.tasks``)
over every model and writes ``results.{json,csv,md}``; every registered task without a hand-written
command here gets a generated one (``eupe-eval zeroshot``, and each task module added later).
torch, timm and the models are imported inside the commands, so ``eupe-eval --help`` answers at once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import click

from eupe.cli_support import quiet_option, run
from eupe.eval.protocol import DEFAULT_KS, DEFAULT_TRANSFORM, FASHION_MNIST, TEMPERATURE, TRANSFORMS
from eupe.evaluation.task_commands import TaskGroup, invocation, set_invocation, suite_command

if TYPE_CHECKING:
    import torch

    from eupe.eval.datasets import LabelledImages
    from eupe.models.features import Encoder


@click.group(cls=TaskGroup, context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Evaluate teachers and students: the suite (kNN, zero-shot, dense probes...), PCA maps, agreement.

    A model is a registered teacher or student name (see `eupe-cache teachers`), optionally with
    --weights, or a trained student (a run directory or its student.safetensors).
    `eupe-eval suite --model A --model B --out DIR` runs every task and writes the table.
    """


def _device(device: str | None) -> torch.device:
    import torch

    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def _load(spec: str, weights: str | None, test_scale: bool, device: torch.device) -> Encoder:
    from eupe.eval.models import load_model

    try:
        return load_model(spec, weights, test_scale).to(device)
    except ValueError as err:
        raise click.UsageError(str(err)) from None


def _features(model: Encoder, part: LabelledImages, what: str, resolution: int | None, batch_size: int,
              transform: str = "full") -> torch.Tensor:
    from eupe.eval.knn import extract_features
    from eupe.progress import progress

    with progress(total=len(part), desc=f"{model.spec.name} {what}", unit="img") as bar:
        return extract_features(model, part.images, resolution, batch_size, bar.update, transform)


def _knn_text(result: dict) -> str:
    lines = [f"{result['model']} on {result['data']}: {result['train_images']} train / {result['test_images']} "
             f"test images, {result['classes']} classes, resolution {result['resolution']}, T={result['temperature']}"]
    lines += [f"  k={k:<4d} top-1 {100 * acc:6.2f}%" for k, acc in result["top1"].items()]
    return "\n".join(lines)


@cli.command()
@click.option("--model", "model_spec", required=True, metavar="NAME_OR_FILE",
              help="Teacher or student name, or a trained student (run directory or student.safetensors).")
@click.option("--weights", default=None, help="Weights file for a registered name (e.g. released EUPE safetensors).")
@click.option("--data", required=True, metavar="SOURCE",
              help=f"Labelled images: a folder root/<class>/*.jpg (or with train/ and val/ subfolders), "
                   f"webdataset shards with .cls labels ('shards-{{000..009}}.tar'), or {FASHION_MNIST!r}.")
@click.option("--k", "ks", multiple=True, type=click.IntRange(1), default=DEFAULT_KS, show_default=True,
              help="Number of neighbours (repeatable).")
@click.option("--limit", default=None, type=click.IntRange(1),
              help="At most N train and N test images (seeded subset).")
@click.option("--test-fraction", default=0.5, show_default=True,
              type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="Share of each class held out as test when the source has no split of its own.")
@click.option("--seed", default=0, show_default=True, help="Seed of the split and of --limit.")
@click.option("--resolution", default=None, type=click.IntRange(1), help="Input resolution in pixels (default: the model's).")
@click.option("--transform", default=DEFAULT_TRANSFORM, show_default=True, type=click.Choice(TRANSFORMS),
              help="eupe: resize 256 then centre-crop 224 (scaled to --resolution); full: squash the whole image.")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1), help="Images per forward.")
@click.option("--device", default=None, help="torch device (default: cuda when available, else cpu).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON.")
@click.option("--test-scale", is_flag=True, hidden=True, help="Tiny random-init models (tests).")
@quiet_option
def knn(model_spec, weights, data, ks, limit, test_fraction, seed, resolution, transform, batch_size, device,
        as_json, test_scale) -> int:
    """kNN top-1 of a model's summary features on a labelled image set.

    DINOv2/DINOv3/EUPE protocol: one view per image at the model's resolution (resize 256 then
    centre-crop 224 by default), L2-normalized summary features, each test image classified by the
    vote of its k most cosine-similar train images weighted by exp(similarity / 0.07). A run
    directory as --model gets the figures appended to RUN/evaluations.jsonl.
    """
    from eupe.eval.datasets import DatasetError, load_split
    from eupe.eval.knn import eval_resolution, knn_top1_for_ks

    try:
        train, test = load_split(data, test_fraction, limit, seed)
    except DatasetError as err:
        raise click.UsageError(str(err)) from None
    model = _load(model_spec, weights, test_scale, _device(device))
    train_feats = _features(model, train, "train", resolution, batch_size, transform)
    test_feats = _features(model, test, "test", resolution, batch_size, transform)
    top1 = knn_top1_for_ks(train_feats, train.labels, test_feats, test.labels, ks)
    result = {"model": model_spec, "fingerprint": model.fingerprint, "data": data,
              "train_images": len(train), "test_images": len(test), "classes": len(train.classes),
              "resolution": eval_resolution(model, resolution), "transform": transform,
              "temperature": TEMPERATURE, "top1": top1}
    _record_knn(model_spec, result, seed)
    click.echo(json.dumps(result, indent=2) if as_json else _knn_text(result))
    return 0


def _record_knn(model_spec: str, result: dict, seed: int) -> None:
    """Append the figures to RUN/evaluations.jsonl when the model is a training run directory."""
    from eupe.eval.report import append_evaluations, portable_path
    from eupe.eval.runs import is_run_dir
    from eupe.eval.tasks.base import Figure

    if not is_run_dir(model_spec):
        return
    settings = {key: result[key] for key in ("train_images", "test_images", "classes", "resolution", "transform",
                                             "temperature")}
    data = result["data"]
    label = f"offline: Fashion-MNIST ({result['train_images']} train / {result['test_images']} test)" \
        if data == FASHION_MNIST else portable_path(str(Path(data).resolve())) if Path(data).exists() else data
    figures = [Figure(task="knn", metric=f"top1@{k}", value=round(100 * acc, 2), model=model_spec,
                      fingerprint=result["fingerprint"], data=label, offline=data == FASHION_MNIST,
                      settings={**settings, "k": k, "seed": seed})
               for k, acc in result["top1"].items()]
    append_evaluations(model_spec, figures, invocation())


def _display_name(spec: str, taken: dict) -> str:
    path = Path(spec)
    name = path.parent.name if path.suffix == ".safetensors" and path.parent.name else path.name or spec
    return name if name not in taken else f"{name} #{len(taken) + 1}"


@cli.command()
@click.option("--model", "model_specs", multiple=True, required=True, metavar="NAME[=WEIGHTS]|FILE",
              help="Model to show (repeatable): a name, NAME=WEIGHTS_FILE, or a trained student file/run dir.")
@click.option("--image", required=True, type=click.Path(exists=True, dir_okay=False), help="Input image.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="PNG to write.")
@click.option("--resolution", default=None, type=click.IntRange(1),
              help="Model input resolution (default: each model's own, rounded down to its patch size).")
@click.option("--panel-size", default=256, show_default=True, type=click.IntRange(16),
              help="Side of each panel in the PNG, in pixels.")
@click.option("--foreground", is_flag=True,
              help="DINOv2-style: threshold the first component, PCA of the foreground only (background black).")
@click.option("--device", default=None, help="torch device (default: cuda when available, else cpu).")
@click.option("--test-scale", is_flag=True, hidden=True, help="Tiny random-init models (tests).")
def pca(model_specs, image, out, resolution, panel_size, foreground, device, test_scale) -> int:
    """PCA of patch tokens: the input and one map per model, side by side, in one PNG.

    Each map shows the first three principal components of the model's patch tokens on this
    image as red, green and blue; similar colours mean similar features.
    """
    from eupe.eval.models import split_model_arg
    from eupe.eval.pca import write_pca_png
    from eupe.views.source import ImageDecodeError

    models: dict[str, Encoder] = {}
    for arg in model_specs:
        spec, weights = split_model_arg(arg)
        models[_display_name(spec, models)] = _load(spec, weights, test_scale, _device(device))
    try:
        path = write_pca_png(models, Path(image).read_bytes(), out, resolution, panel_size, foreground)
    except ImageDecodeError as err:
        raise click.UsageError(f"--image {image}: {err}") from None
    click.echo(f"wrote {path} ({len(models)} model(s), panels of {panel_size}px)")
    return 0


@cli.command()
@click.option("--run", "run_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="A Stage-2/3 (or Stage-1) run directory: its student and adapter heads are compared.")
@click.option("--teacher", required=True, help="Teacher whose outputs the heads should match (as in training).")
@click.option("--weights", default=None, help="Teacher weights (a proxy run directory for `proxy`).")
@click.option("--store", required=True, help="Feature store holding the teacher: its frozen normalization statistics are used.")
@click.option("--data", required=True, metavar="SOURCE",
              help="Held-out images: an image folder or a webdataset pattern (labels not needed).")
@click.option("--views", default=4, show_default=True, type=click.IntRange(1), help="Fresh views per image.")
@click.option("--seed", default=10_000, show_default=True, help="View seed (use one training did not use).")
@click.option("--limit", default=16, show_default=True, type=click.IntRange(1), help="Images to use.")
@click.option("--resolution", default=None, type=click.IntRange(1), help="Student input resolution (default: its own).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON.")
@quiet_option
def agreement(run_dir, teacher, weights, store, data, views, seed, limit, resolution, as_json) -> int:
    """Cosine between the student's head outputs and the teacher's outputs on held-out views.

    The teacher runs online on fresh views (an unused seed) of the given images; its outputs are
    normalized with the store's statistics, exactly like the training targets.
    """
    from eupe.distill.agreement import load_distill_model, teacher_agreement
    from eupe.distill.stats import teacher_stats
    from eupe.models.teachers import create_teacher
    from eupe.progress import progress

    model = load_distill_model(run_dir)
    if teacher not in model.teachers:
        raise click.BadParameter(f"{run_dir} has heads for {', '.join(model.teachers)}, not {teacher!r}")
    encoder = create_teacher(teacher, weights)
    images = _unlabelled(data, limit)
    with progress(total=len(images), desc=f"agreement {teacher}", unit="img") as bar:
        result = teacher_agreement(model, teacher, encoder, teacher_stats(store, teacher), images, views, seed,
                                   resolution or model.student.spec.resolution, progress=bar.update)
    click.echo(json.dumps(result, indent=2) if as_json else
               f"{teacher}: summary cosine {result['summary_cos']:.4f}, patch cosine {result['patch_cos']:.4f} "
               f"over {result['views']} held-out views")
    return 0


def _unlabelled(data: str, limit: int) -> list[tuple[str, torch.Tensor]]:
    """(key, uint8 image) of the first ``limit`` images of a folder (recursive) or webdataset."""
    from eupe.data.shards import ShardReader, expand_shards, index_shards
    from eupe.views.source import decode_image

    if Path(data).is_dir():
        files = sorted(p for p in Path(data).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp"))
        return [(str(f.relative_to(data)), decode_image(f.read_bytes())) for f in files[:limit]]
    index = index_shards(expand_shards(data))
    reader = ShardReader(index)
    return [(str(index.keys[i]), decode_image(reader.read(i))) for i in range(min(limit, len(index)))]


cli.add_command(suite_command)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``eupe-eval``."""
    import sys

    set_invocation(list(sys.argv[1:] if argv is None else argv))
    return run(cli, argv, "eupe-eval")


if __name__ == "__main__":  # `python -m eupe.evaluation.cli`
    raise SystemExit(main())
