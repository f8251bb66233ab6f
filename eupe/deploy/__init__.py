"""Deploying students: timm safetensors, ExecuTorch (XNNPACK, fp32/int8) and ONNX, checked and described.

- :mod:`eupe.deploy.timm_export`: ``export_safetensors`` -> ``model.safetensors`` that timm loads by name.
- :mod:`eupe.deploy.executorch_export`: ``export_pte``, ``run_pte``, ``parity`` (ExecuTorch runtime).
- :mod:`eupe.deploy.onnx_export`: ``export_onnx``, ``run_onnx``, ``onnx_parity`` (onnxruntime).
- :mod:`eupe.deploy.latency`: ``median_latency_ms``, ``bench_eager_vs_pte``.
- :mod:`eupe.deploy.model_card`: ``MODEL_CARD.md`` + ``model_card.json`` next to the artifacts.
- :mod:`eupe.deploy.source`: the student to export (a trained student file or released weights).

ExecuTorch and onnxruntime are imported only when a function needs them.
"""

from eupe.deploy.executorch_export import FeatureTensors, export_pte, parity, run_pte
from eupe.deploy.latency import bench_eager_vs_pte, median_latency_ms
from eupe.deploy.model_card import build_card, write_model_card
from eupe.deploy.onnx_export import export_onnx, onnx_parity, run_onnx
from eupe.deploy.timm_export import export_safetensors

__all__ = [
    "FeatureTensors", "bench_eager_vs_pte", "build_card", "export_onnx", "export_pte", "export_safetensors",
    "median_latency_ms", "onnx_parity", "parity", "run_onnx", "run_pte", "write_model_card",
]
