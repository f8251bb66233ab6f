"""The paper's published figures (full datasets), shown beside measured rows and never mixed with them.

From published summaries of the EUPE paper and the DINOv3 model card, as gathered in
``shared/eval-protocols.md`` §5 (the T/S/ConvNeXt rows come from one secondary summary: lower
confidence). ``None``: not published. Keys of each row are task names (``knn``, ``zeroshot``,
``seg``, ``depth``, ``corr``); ``PAPER_COLUMNS`` names the dataset and metric of each.
"""

from __future__ import annotations

PAPER_COLUMNS: dict[str, str] = {
    "knn": "IN1k kNN top-1",
    "zeroshot": "IN1k zero-shot top-1",
    "seg": "ADE20K mIoU",
    "depth": "NYUv2 RMSE (m, lower is better)",
    "corr": "SPair-71k PCK@0.1",
}

PAPER_ROWS: list[dict] = [
    {"model": "EUPE-ViT-B", "knn": 84.1, "zeroshot": 79.7, "seg": 52.4, "depth": None, "corr": 51.3,
     "note": "NYUv2 not published (ablation Stage 1+3: 0.388)"},
    {"model": "PEcore-B", "knn": 79.7, "zeroshot": 78.4, "seg": None, "depth": None, "corr": None, "note": ""},
    {"model": "SigLIP2-B", "knn": 83.2, "zeroshot": 78.2, "seg": None, "depth": None, "corr": None, "note": ""},
    {"model": "DINOv3-ViT-B", "knn": 83.0, "zeroshot": None, "seg": 51.8, "depth": 0.373, "corr": None,
     "note": "NYUv2 from the DINOv3 model card (its protocol); SPair: the card's 57.2 uses DINOv3's own setting"},
    {"model": "EUPE-ViT-T", "knn": 66.3, "zeroshot": None, "seg": 36.7, "depth": None, "corr": None,
     "note": "secondary summary"},
    {"model": "EUPE-ViT-S", "knn": 78.2, "zeroshot": None, "seg": 46.6, "depth": None, "corr": None,
     "note": "secondary summary"},
    {"model": "EUPE-ConvNeXt-T", "knn": None, "zeroshot": None, "seg": 43.5, "depth": None, "corr": None,
     "note": "secondary summary"},
    {"model": "EUPE-ConvNeXt-B", "knn": None, "zeroshot": None, "seg": 48.9, "depth": None, "corr": None,
     "note": "secondary summary"},
]

PAPER_SOURCE = "paper figures on the full datasets (published summaries of the EUPE paper; DINOv3 model card)"
