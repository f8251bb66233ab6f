"""Deploying students (the library side of ``eupe-export``): a timm / Hub model folder, ExecuTorch and ONNX.

- :mod:`eupe.deploy.exporters`: the registry of export formats, one ``Exporter`` each (export, run,
  tolerance, how to load); ``get_exporter``, ``list_exporters``.
- :mod:`eupe.deploy.parity`: held-out photos, ``compare`` with eager, ``Tolerance`` (fp32 / int8).
- :mod:`eupe.deploy.traceable`: the delegate-friendly copy the graph exporters trace.
- :mod:`eupe.deploy.timm_export`, :mod:`eupe.deploy.executorch_export`, :mod:`eupe.deploy.onnx_export`:
  the three backends (write and run an artifact); timm_export writes ``config.json`` with the
  pooling that is the distilled summary (``POOLING``).
- :mod:`eupe.deploy.latency`: ``median_latency_ms`` and eager / ``.pte`` timings.
- :mod:`eupe.deploy.model_card`: the card's facts (final losses, ``evaluations.jsonl``, no absolute
  paths), written as ``README.md`` (:mod:`eupe.deploy.card_text`: Hub YAML header, usage snippets)
  + ``model_card.json``.
- :mod:`eupe.deploy.folder`: what ``--out`` may hold (``--force``).
- :mod:`eupe.deploy.source`: the student to export (a trained student file or released weights).

Like every package of eupe, this one imports nothing: import a name from the module that defines it
(torch, ExecuTorch and onnxruntime load only with the submodules that need them).
"""
