"""PCA task: the picture of a model's patch tokens (``eupe.eval.pca``), registered like the numeric tasks.

It writes ``ctx.out_dir/pca/<model>.png`` (the input and the first three principal components
of the patch tokens as RGB) of a bundled photo (offline: skimage's ``chelsea``; with a dataset
root, its first image) and returns no Figure: a picture is not a table cell. ``eupe-eval pca``
draws several models side by side.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from eupe.eval.tasks.base import OFFLINE, EvalContext, EvalModel, EvalTask, Figure, register_task


@dataclass
class PcaConfig:
    resolution: int | None = 224
    foreground: bool = False


class PcaTask(EvalTask):
    name = "pca"
    column = "PCA picture"
    Config = PcaConfig
    in_table = False

    def run(self, model: EvalModel, ctx: EvalContext) -> list[Figure]:
        from eupe.eval.pca import write_pca_png

        cfg = self.config(ctx)
        if ctx.out_dir is None:
            return []
        name = re.sub(r"[^A-Za-z0-9._=-]+", "_", model.name)
        write_pca_png({model.name: model.encoder}, _photo(ctx), Path(ctx.out_dir) / "pca" / f"{name}.png",
                      cfg.resolution, foreground=cfg.foreground)
        return []


def _photo(ctx: EvalContext) -> bytes:
    from eupe.assets import bundled_photos

    if ctx.data == OFFLINE:
        return next(p for p in bundled_photos() if p.key == "skimage_chelsea").read_bytes()
    files = sorted(p for p in Path(ctx.data).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not files:
        raise FileNotFoundError(f"--data {ctx.data}: no .jpg/.png image for the PCA picture")
    return files[0].read_bytes()


register_task(PcaTask())
