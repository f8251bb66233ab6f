"""The exporter registry: names, the CLI's choices, the conformance of every format, failing parity."""

from __future__ import annotations

import numpy as np
import pytest

from eupe.deploy.exporters import EXPORTERS, SafetensorsExporter, get_exporter, list_exporters, quantize_choices
from eupe.deploy.parity import FP32, INT8, Tolerance
from eupe.deploy.source import from_checkpoint
from eupe.export.cli import cli, main
from eupe.registry import UnknownNameError


def test_registry_names_and_cli_choices():
    assert list_exporters() == ["safetensors", "executorch", "onnx"]
    choices = {p.name: p.type.choices for p in cli.params if p.name in ("fmt", "quantize")}
    assert list(choices["fmt"]) == list_exporters() and list(choices["quantize"]) == quantize_choices() == ["int8"]
    with pytest.raises(UnknownNameError, match="unknown export format 'tflite'; valid names: safetensors, executorch, onnx"):
        get_exporter("tflite")


def test_unknown_format_and_unsupported_quantization_are_one_line_errors(tmp_path, student_file, capsys):
    assert main(["--checkpoint", str(student_file), "--format", "tflite", "--out", str(tmp_path)]) == 2
    assert "Invalid value for '--format'" in capsys.readouterr().err
    assert main(["--checkpoint", str(student_file), "--format", "onnx", "--quantize", "int8", "--out", str(tmp_path)]) == 2
    assert "--quantize int8 applies to --format executorch only" in capsys.readouterr().err


def test_file_names_and_tolerances():
    names = {(n, r, q): get_exporter(n).filename(r, q) for n in list_exporters() for r in (64, 128) for q in (None, "int8")}
    assert names[("safetensors", 64, None)] == names[("safetensors", 128, None)] == "model.safetensors"
    assert names[("executorch", 64, None)] == "model_64.pte" and names[("executorch", 64, "int8")] == "model_64_int8.pte"
    assert names[("onnx", 128, None)] == "model_128.onnx"
    assert all(get_exporter(n).tolerance(None) == FP32 and get_exporter(n).tolerance("int8") == INT8 for n in list_exporters())


def test_tolerance_bounds():
    result = {"summary_max_abs_diff": 1e-4, "patch_max_abs_diff": 2e-4, "summary_cosine_mean": 0.999,
              "patch_cosine_mean": 0.99}
    assert not FP32.passes(result) and Tolerance("max_abs_diff", 2e-4).passes(result)
    assert INT8.passes(result) and not Tolerance("cosine_mean", 0.995).passes(result)
    assert (str(FP32), str(INT8)) == ("max abs diff <= 0.0001", "mean cosine >= 0.99")


@pytest.mark.slow
@pytest.mark.parametrize("name", list_exporters())
def test_every_format_writes_runs_and_matches_eager(tmp_path, student_file, tiny_vit, name):
    """Conformance: each registered exporter's artifact, run in its runtime, reproduces eager fp32."""
    exporter = get_exporter(name)
    source = from_checkpoint(student_file)
    path = exporter.export(source, tmp_path / exporter.filename(64, None), 64, None)
    assert path.is_file() and path.name == exporter.filename(64, None)
    row = exporter.check(tiny_vit, path, 64, None)
    assert row["passed"] is True and row["runtime"] == exporter.runtime and row["images"] == 3
    assert row["summary_max_abs_diff"] <= 1e-4 and row["patch_max_abs_diff"] <= 1e-4
    assert row["patch_cosine_min"] > 0.99999
    assert path.name in exporter.how_to_load(source, path)


class _NoisySafetensors(SafetensorsExporter):
    """The real safetensors round trip with 1e-3 added to the patch tokens: must fail fp32 parity."""

    def run(self, path, pixels):
        summary, patch = super().run(path, pixels)
        return summary, patch + np.float32(1e-3)


def test_a_runtime_that_drifts_fails_its_check(tmp_path, student_file, tiny_vit, monkeypatch):
    monkeypatch.setitem(EXPORTERS._entries, "noisy", _NoisySafetensors())
    exporter = get_exporter("noisy")
    source = from_checkpoint(student_file)
    path = exporter.export(source, tmp_path / "model.safetensors", 64, None)
    row = exporter.check(tiny_vit, path, 64, None)
    assert row["passed"] is False and row["threshold"] == "max abs diff <= 0.0001"
    assert row["summary_max_abs_diff"] == 0.0 and row["patch_max_abs_diff"] == pytest.approx(1e-3, rel=1e-2)
