"""Evaluation of teachers and students (the library side of ``eupe-eval``).

* ``eupe.eval.protocol``: the protocol's fixed values (T = 0.07, k = 10/20/100/200, resize 256 /
  crop 224); no torch.
* ``eupe.eval.models``: ``load_model(name_or_file, weights, test_scale)`` -> ``Encoder``.
* ``eupe.eval.datasets``: labelled image sets (folders, webdataset shards, Fashion-MNIST) and splits.
* ``eupe.eval.knn``: ``extract_features`` (batched, ``eupe``/``full`` views) and the weighted kNN.
* ``eupe.eval.zeroshot``: the PE-Core text tower (open_clip), cached text classifiers, logits.
* ``eupe.eval.pca``: ``pca_rgb`` and ``write_pca_png``.
* ``eupe.eval.tasks``: the task registry (one module per task) the suite runs.
* ``eupe.eval.dense``: the dense probes' data layouts, heads, features and metrics (segmentation,
  depth, correspondence).
* ``eupe.eval.suite``: ``resolve_model`` (names, NAME=random, files, run dirs) and ``run_suite``.
* ``eupe.eval.report``: ``results.{json,csv,md}`` and ``RUN/evaluations.jsonl``; ``eupe.eval.paper``:
  the paper's published rows; ``eupe.eval.runs``: what a run directory offers (heads, stats).

Import from the submodules: this package imports nothing, so ``eupe-eval --help`` needs no torch.
"""
