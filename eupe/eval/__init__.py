"""Evaluation of teachers and students (the library side of ``eupe-eval``): kNN top-1, PCA maps.

* ``eupe.eval.protocol``: the protocol's fixed values (T = 0.07, k = 10, 20); no torch.
* ``eupe.eval.models``: ``load_model(name_or_file, weights, test_scale)`` -> ``Encoder``.
* ``eupe.eval.datasets``: labelled image sets (folders, webdataset shards, Fashion-MNIST) and splits.
* ``eupe.eval.knn``: ``extract_features`` and the weighted kNN protocol (``knn_top1``, ``knn_top1_for_ks``).
* ``eupe.eval.pca``: ``pca_rgb`` and ``write_pca_png``.

Import from the submodules: this package imports nothing, so ``eupe-eval --help`` needs no torch.
"""
