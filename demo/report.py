"""The demo's last steps: export + parity, the evaluation suite (--quick, offline), agreement, figures, summary."""

from __future__ import annotations

import json
from pathlib import Path

import click
import torch

from eupe.distill.agreement import load_distill_model, teacher_agreement
from eupe.distill.loop import LOSS_LOG, read_loss_log
from eupe.distill.stats import teacher_stats
from eupe.eval.pca import write_pca_png
from eupe.models.features import Encoder
from eupe.models.students import create_student
from eupe.models.teachers import create_teacher
from eupe.models.checkpoint import load_student
from eupe.views.source import decode_image

EVAL_RES = 112  # a multiple of 14 and 16: every model sees the same pixels


def export_and_check(demo) -> dict:
    """Export the Stage-3 student to ExecuTorch through eupe-export, which checks parity itself."""
    from eupe.export.cli import main

    out = demo.out / "export"
    args = ["--checkpoint", str(demo.out / "stage3"), "--format", "executorch", "--resolution", "112", "--out", str(out),
            "--force"]  # the demo's own folder: a re-run replaces its export
    click.echo("$ eupe-export " + " ".join(args))
    if main(args) != 0:
        raise click.ClickException("ExecuTorch export failed its parity check")
    card = json.loads((out / "model_card.json").read_text())
    return next(row for row in card["parity"] if row["artifact"].endswith(".pte"))  # the fp32 program at 112 px


def suite_models(demo) -> dict[str, str]:
    """Demo row name -> ``eupe-eval suite --model`` value: both teachers, the proxy, the student, a random floor."""
    return {"ViT-T random init": "vit_t=random", "ViT-T distilled (ours)": str(demo.out / "stage3"),
            "proxy (stage 1)": f"proxy={demo.out / 'stage1'}",
            **{f"teacher {n}": n for n in ("dinov2s_imgfocus", "effnet_lite0")}}


def suite_table(demo) -> tuple[str, dict[str, dict[int, float]]]:
    """``eupe-eval suite --quick`` over the demo's models (every registered task, offline fixtures).

    Returns the kNN source and ``{demo row: {k: top-1 (0..1)}}`` for the summary; the suite's own
    table (results.md, with the paper's rows apart) is printed and kept in ``DIR/eval``.
    """
    from eupe.evaluation.cli import main

    specs = suite_models(demo)
    args = ["suite", *[a for spec in specs.values() for a in ("--model", spec)], "--quick", "--data", "offline",
            "--set", f"knn.limit={demo.knn_limit}", "--out", str(demo.out / "eval")]
    click.echo("$ eupe-eval " + " ".join(args))
    if main(args) != 0:
        raise click.ClickException("the evaluation suite failed")
    result = json.loads((demo.out / "eval" / "results.json").read_text())
    rows = {m["spec"]: m["name"] for m in result["models"]}
    knn: dict[str, dict[int, float]] = {}
    source = "none"
    for name, spec in specs.items():
        figures = [f for f in result["figures"] if f["model"] == rows[spec] and f["task"] == "knn" and f["value"] is not None]
        if figures:
            knn[name] = {int(f["metric"].split("@")[1]): f["value"] / 100 for f in figures}
            source = figures[0]["data"].removeprefix("offline: ")
    return source, knn


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
    lines = ["# EUPE demo summary", "", f"kNN top-1 on {source}, {EVAL_RES} px, resize-256/crop-224 views, "
             "L2-normalized summary tokens, T = 0.07 (full table with the paper's rows: eval/results.md):", "",
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
