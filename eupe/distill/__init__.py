"""Distillation (the library side of ``eupe-train``, Stages 1-3).

- :mod:`eupe.distill.config`: ``TrainConfig`` and its parts (YAML values live in configs/train/).
- :mod:`eupe.distill.loop`: the training loop shared by the three stages, on Accelerate.
- :mod:`eupe.distill.data`: the data stream: images and cached targets joined by image key.
- :mod:`eupe.distill.targets`: targets behind one interface: the store checks at start-up, decoding
  stored targets, and the online teachers (Stage 3's fallback).
- :mod:`eupe.distill.heads`: adapter heads; :mod:`eupe.distill.losses`: the losses and ``LossConfig``.
- :mod:`eupe.distill.rundir`: the run directory's files, written atomically, checked on resume.
- :mod:`eupe.distill.agreement`: student-teacher agreement on held-out views;
  :mod:`eupe.distill.tracking`: experiment trackers through Accelerate.

Like every package of eupe, this one imports nothing: import a name from the module that defines it.
"""
