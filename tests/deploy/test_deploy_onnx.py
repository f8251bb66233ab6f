"""ONNX export (dynamo exporter) run by onnxruntime, with a dynamic batch."""

from __future__ import annotations

import pytest

pytest.importorskip("onnxscript", reason="the dynamo ONNX exporter needs onnxscript")

from eupe.deploy.onnx_export import export_onnx, onnx_latency_ms, run_onnx  # noqa: E402
from eupe.deploy.parity import check_pixels, parity  # noqa: E402


def test_onnx_matches_eager_for_any_batch(tmp_path, tiny_vit):
    path = export_onnx(tiny_vit, 64, tmp_path / "vit.onnx")
    pixels = check_pixels(64)
    result = parity(tiny_vit, lambda x: run_onnx(path, x), pixels)
    assert result["summary_max_abs_diff"] <= 1e-4 and result["patch_max_abs_diff"] <= 1e-4
    summary, patch = run_onnx(path, pixels[:1])
    assert summary.shape == (1, 64) and patch.shape == (1, 4, 4, 64)
    assert 0 < onnx_latency_ms(path, 64, repeats=2) < 10_000
