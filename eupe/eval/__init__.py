"""Evaluation of teachers and students: kNN top-1 of summary features, PCA maps of patch tokens.

* ``eupe.eval.models``: ``load_model(name_or_file, weights, test_scale)`` -> ``Encoder``.
* ``eupe.eval.datasets``: labelled image sets (folders, webdataset shards, Fashion-MNIST) and splits.
* ``eupe.eval.knn``: ``extract_features`` and the weighted kNN protocol (``knn_top1``, T = 0.07).
* ``eupe.eval.pca``: ``pca_rgb`` and ``write_pca_png``.
"""

from eupe.eval.datasets import (
    DatasetError,
    LabelledImages,
    MissingDatasetError,
    fashion_mnist,
    image_folder,
    load_split,
)
from eupe.eval.knn import TEMPERATURE, extract_features, knn_predict, knn_top1, knn_top1_for_ks
from eupe.eval.models import load_model
from eupe.eval.pca import pca_rgb, write_pca_png

__all__ = [
    "DatasetError", "LabelledImages", "MissingDatasetError", "TEMPERATURE", "extract_features",
    "fashion_mnist", "image_folder", "knn_predict", "knn_top1", "knn_top1_for_ks", "load_model",
    "load_split", "pca_rgb", "write_pca_png",
]
