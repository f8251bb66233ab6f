"""``eupe-export`` end to end through ``main``: artifacts, parity lines, model card, exit codes."""

from __future__ import annotations

import json

import pytest
import timm
import torch
from safetensors.torch import save_file

from eupe.deploy.timm_export import load_timm
from eupe.export.cli import main


def _card(out):
    assert (out / "README.md").is_file() and (out / "config.json").is_file()
    return json.loads((out / "model_card.json").read_text())


def test_cli_safetensors(tmp_path, student_file, tiny_vit, capsys):
    out = tmp_path / "export"
    assert main(["--checkpoint", str(student_file.parent), "--format", "safetensors", "--resolution", "64",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "model.safetensors (timm, 64 px, 3 photos) vs eager: summary max|diff| 0, cosine mean 1.000000" in printed
    assert "patch max|diff| 0, " in printed and "-> OK (max abs diff <= 0.0001)" in printed
    pixels = torch.rand(1, 3, 64, 64)
    x = (pixels - tiny_vit.mean) / tiny_vit.std
    with torch.no_grad():
        assert torch.equal(load_timm(out / "model.safetensors").forward_features(x), tiny_vit.backbone.forward_features(x))
    card = _card(out)
    assert card["student"]["name"] == "vit_t" and card["student"]["test_scale"] is True
    assert card["training"]["teachers"] == ["proxy"] and card["training"]["metrics"] == {"knn_top1": 0.42}
    assert card["parity"][0]["passed"] is True and card["parity"][0]["patch_max_abs_diff"] == 0.0
    assert card["artifacts"][0]["artifact"] == "model.safetensors" and card["artifacts"][0]["resolution"] == "any"


@pytest.mark.slow
def test_cli_executorch_with_bench(tmp_path, student_file, capsys):
    out = tmp_path / "export"
    assert main(["--checkpoint", str(student_file), "--format", "executorch", "--resolution", "64",
                 "--out", str(out), "--bench", "--bench-repeats", "2"]) == 0
    printed = capsys.readouterr().out
    assert "model_64.pte (executorch, 64 px, 3 photos) vs eager" in printed and "-> OK" in printed
    assert (out / "model_64.pte").stat().st_size > 10_000
    card = _card(out)
    parity = card["parity"][0]
    assert parity["passed"] is True and parity["patch_max_abs_diff"] <= 1e-4
    latency = card["latency"][0]
    assert latency["program"] == "fp32" and latency["artifact"] == "model_64.pte" and latency["executorch_ms"] > 0
    assert latency["speedup"] == pytest.approx(latency["eager_ms"] / latency["executorch_ms"])
    assert "model_64.pte" in (out / "README.md").read_text()


@pytest.mark.slow
def test_cli_exports_released_weights_by_student_name(tmp_path, capsys):
    torch.manual_seed(0)
    backbone = timm.create_model("vit_tiny_patch16_dinov3_qkvb", num_classes=0)  # stands in for the release file
    weights = tmp_path / "vit_t.eupe_lvd1689m.safetensors"
    save_file({k: v.contiguous() for k, v in backbone.state_dict().items()}, str(weights))
    out = tmp_path / "export"
    assert main(["--student", "vit_t", "--weights", str(weights), "--resolution", "64", "--out", str(out)]) == 0
    exported = load_timm(out / "model.safetensors")
    assert all(torch.equal(v, backbone.state_dict()[k]) for k, v in exported.state_dict().items())
    assert _card(out)["student"]["origin"] == weights.name  # never an absolute path of this machine


@pytest.mark.parametrize("args, message", [
    (["--format", "safetensors"], "either --checkpoint"),
    (["--student", "vit_t"], "--student needs --weights"),
    (["--checkpoint", "CKPT", "--quantize", "int8"], "--quantize int8 applies to --format executorch only"),
    (["--checkpoint", "missing_run"], "Error:"),
])
def test_cli_user_errors(tmp_path, student_file, capsys, args, message):
    args = [str(student_file) if a == "CKPT" else str(tmp_path / a) if a == "missing_run" else a for a in args]
    assert main([*args, "--out", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err
