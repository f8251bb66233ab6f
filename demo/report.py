"""The demo's last steps: export + parity, kNN on real labels, agreement, figures, summary table."""

from __future__ import annotations

import json
from pathlib import Path

import click
import torch

from eupe.distill.agreement import load_distill_model, teacher_agreement
from eupe.distill.loop import LOSS_LOG, read_loss_log
from eupe.distill.targets import teacher_stats
from eupe.eval.datasets import MissingDatasetError, load_split
from eupe.eval.knn import extract_features, knn_top1_for_ks
from eupe.eval.pca import write_pca_png
from eupe.models import Encoder, create_student, create_teacher
from eupe.models.checkpoint import load_student
from eupe.views import decode_image

EVAL_RES = 112  # a multiple of 14 and 16: every model sees the same pixels


def export_and_check(demo) -> dict:
    """Export the Stage-3 student to ExecuTorch through eupe-export, which checks parity itself."""
    from eupe.export.cli import main

    out = demo.out / "export"
    args = ["--checkpoint", str(demo.out / "stage3"), "--format", "executorch", "--resolution", "112", "--out", str(out)]
    click.echo("$ eupe-export " + " ".join(args))
    if main(args) != 0:
        raise click.ClickException("ExecuTorch export failed its parity check")
    card = json.loads((out / "model_card.json").read_text())
    return card["parity"][0]  # one row: the fp32 program at 112 px


def knn_table(demo, models: dict[str, Encoder]) -> tuple[str, dict[str, dict[int, float]]]:
    """kNN top-1 (k=10, 20) on Fashion-MNIST, or foolbox's labelled CIFAR-10 photos without it."""
    try:
        train, test = load_split("fashion-mnist", limit=demo.knn_limit, seed=0)
        source = f"Fashion-MNIST ({len(train.labels)} train / {len(test.labels)} test, Debian dataset-fashion-mnist)"
    except MissingDatasetError as err:
        click.echo(f"{err}; no kNN evaluation")
        return "none", {}
    results = {}
    for name, model in models.items():
        feats = [extract_features(model, part.images, EVAL_RES, batch_size=64) for part in (train, test)]
        results[name] = knn_top1_for_ks(feats[0], torch.as_tensor(train.labels), feats[1], torch.as_tensor(test.labels))
        click.echo(f"kNN {name}: " + ", ".join(f"k={k}: {100 * v:.1f}%" for k, v in results[name].items()))
    return source, results


def agreement(demo) -> dict[str, float]:
    """Distilled student vs the proxy on fresh views of 6 photos the demo holds out of nothing (new seed)."""
    from eupe.assets import imagenet_photos

    proxy = create_teacher("proxy", weights=demo.out / "stage1")
    stats = teacher_stats(str(demo.out / "proxy.zarr"), "proxy")
    images = [(p.key, decode_image(p.read_bytes())) for p in imagenet_photos()[-6:]]
    trained = teacher_agreement(load_distill_model(demo.out / "stage3"), "proxy", proxy, stats, images,
                                views=4, student_resolution=112)
    return trained


def loss_curves(demo) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, stage in zip(axes, ("stage1", "stage2", "stage3")):
        rows = read_loss_log(demo.out / stage / LOSS_LOG)
        ax.plot([r["step"] for r in rows], [r["total"] for r in rows], lw=1.2)
        ax.set(title=f"{stage}: total distillation loss", xlabel="step", ylabel="loss")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = demo.out / "loss_curves.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def pca_figure(demo, models: dict[str, Encoder]) -> Path:
    from eupe.assets import bundled_photos

    photo = next(p for p in bundled_photos() if p.key == "skimage_chelsea")
    return write_pca_png(models, photo.read_bytes(), demo.out / "pca.png", resolution=224)


def eval_models(demo) -> dict[str, Encoder]:
    """The models the evaluation compares: random-init and distilled ViT-T, the proxy, both teachers."""
    torch.manual_seed(0)
    teachers = {name: create_teacher(name) for name in ("dinov2s_imgfocus", "effnet_lite0")}
    return {"ViT-T random init": create_student("vit_t").eval(), "ViT-T distilled (ours)": load_student(demo.out / "stage3"),
            "proxy (stage 1)": create_teacher("proxy", weights=demo.out / "stage1"),
            **{f"teacher {n}": m for n, m in teachers.items()}}


def report(demo, parity: dict, models: dict[str, Encoder], knn: tuple[str, dict]) -> dict:
    """Agreement, loss curves, PCA picture and the summary table (``summary.md``)."""
    agree = agreement(demo)
    curves = loss_curves(demo)
    pca = pca_figure(demo, {"dinov2s_imgfocus": models["teacher dinov2s_imgfocus"], "proxy": models["proxy (stage 1)"],
                            "ViT-T distilled": models["ViT-T distilled (ours)"], "ViT-T random": models["ViT-T random init"]})
    table = summary_markdown(demo, *knn, agree, parity, curves, pca)
    (demo.out / "summary.md").write_text(table)
    click.echo("\n" + table)
    return {"knn": knn[1], "agreement": agree, "parity": parity}


def summary_markdown(demo, source, knn, agree, parity, curves, pca) -> str:
    lines = ["# EUPE demo summary", "", f"kNN top-1 on {source}, {EVAL_RES} px, L2-normalized summary tokens, T = 0.07:", "",
             "| model | k=10 | k=20 |", "|---|---|---|"]
    lines += [f"| {name} | {100 * r[10]:.1f}% | {100 * r[20]:.1f}% |" for name, r in knn.items()]
    lines += ["", f"Distilled ViT-T vs the proxy on {agree['views']} held-out views: summary cosine "
              f"{agree['summary_cos']:.3f}, patch cosine {agree['patch_cos']:.3f}.", ""]
    if parity:
        lines += [f"ExecuTorch (XNNPACK, fp32) vs eager at 112 px on held-out photos: "
                  f"{json.dumps({k: v for k, v in parity.items() if k != 'artifact'})}", ""]
    lines += ["| step | seconds |", "|---|---|"] + [f"| {k} | {v:.0f} |" for k, v in demo.timings.items()]
    lines += ["", f"Figures: {curves.name} (loss per stage), {pca.name} (PCA of patch tokens)."]
    return "\n".join(lines) + "\n"
