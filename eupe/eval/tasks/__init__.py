"""Evaluation tasks, one module per task behind one seam.

- :mod:`eupe.eval.tasks.base`: the seam (``EvalTask``, ``PresetTask``, ``EvalContext``, ``EvalModel``,
  ``Figure``) and the ``TASKS`` registry that ``register_task`` fills.
- :mod:`eupe.eval.tasks.catalog`: ``TASK_MODULES`` (torch-free), ``load_tasks``, ``get_task``.
- :mod:`eupe.eval.tasks.common`: helpers the tasks share.
- one module per task: ``knn``, ``zeroshot``, ``seg``, ``depth``, ``corr``, ``agreement``, ``pca``.

Like every package of eupe, this one imports nothing: import a name from the module that defines it.
"""
