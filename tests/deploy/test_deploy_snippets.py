"""Every code snippet of the model card and of docs/export.md runs as written.

The fenced blocks are taken from the files themselves: ``python`` blocks are executed in a fresh
namespace (with a real ``photo.jpg`` beside them) and the features they compute are compared with
the student's own; ``bash`` blocks' ``eupe-export`` lines run through the command's ``main`` (the
section's ``eupe-eval`` lines are the evaluation tests' to run).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import timm
import torch
from deploy_helpers import photo_file, tiny_student

from eupe.export.cli import main
from eupe.models.checkpoint import save_student

EXPORT_DOC = Path(__file__).resolve().parents[2] / "docs" / "export.md"
FENCE = re.compile(r"```(\w+)\n(.*?)```", re.DOTALL)


def fenced(text: str, language: str) -> list[str]:
    """The code of every fenced block of ``language`` in ``text``."""
    return [code for lang, code in FENCE.findall(text) if lang == language]


def export_section() -> str:
    """docs/export.md from its title to its "What is written and checked" section."""
    text = EXPORT_DOC.read_text()
    start = text.index("# Export (`eupe-export`)")
    return text[start:text.index("\n## What is written and checked", start + 1)]


@pytest.fixture
def photo(tmp_path, monkeypatch, photos):
    """cwd = tmp_path with a real ``photo.jpg``; returns the project's rendering of it at 64 px."""
    monkeypatch.chdir(tmp_path)
    return photo_file(photos, tmp_path)


@pytest.mark.parametrize("name", ["vit_t", "convnext_t"])
def test_card_snippets_run_and_give_the_students_features(tmp_path, photo, name):
    pytest.importorskip("transformers")
    student = tiny_student(name, seed=5).eval()
    run = tmp_path / "run"
    save_student(student, run / "student.safetensors", test_scale=True,
                 info={"stage": 2, "config": {"student_resolutions": [64]}})
    assert main(["--checkpoint", "run", "--resolution", "64", "--out", "export"]) == 0
    blocks = fenced((tmp_path / "export" / "README.md").read_text(), "python")
    assert len(blocks) == 2 and 'timm.create_model("local-dir:export", pretrained=True)' in blocks[0]
    with torch.no_grad():
        expected = student(photo)
    for code in blocks:
        namespace: dict = {}
        exec(compile(code, "card snippet", "exec"), namespace)
        torch.testing.assert_close(namespace["summary"], expected["summary"], atol=1e-5, rtol=0)
        if "patch" in namespace:  # [1, h*w, D] against the student's [1, h, w, D]
            torch.testing.assert_close(namespace["patch"], expected["patch"].flatten(1, 2), atol=1e-5, rtol=0)


@pytest.mark.slow
def test_export_doc_runs_as_written(tmp_path, monkeypatch):
    """docs/export.md's eupe-export lines on a (test-scale) trained run, then its Python load lines."""
    pytest.importorskip("transformers")
    monkeypatch.chdir(tmp_path)
    student = tiny_student("vit_t", seed=6).eval()
    save_student(student, Path("runs/stage2_vit_s/student.safetensors"), test_scale=True, info={"stage": 2})
    torch.manual_seed(0)
    release = timm.create_model("vit_tiny_patch16_dinov3_qkvb", num_classes=0)  # stands in for the release file
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in release.state_dict().items()},
              "vit_tiny_patch16_dinov3_qkvb.eupe_lvd1689m.safetensors")
    section = export_section()
    lines = [line.split("  #")[0] for code in fenced(section, "bash") for line in code.splitlines()
             if line.startswith("eupe-export ")]
    assert len(lines) == 4
    for line in lines:
        assert main(shlex.split(line)[1:]) == 0, line
    assert sorted(p.name for p in Path("export").iterdir()) == [
        "README.md", "config.json", "model.safetensors", "model_256.onnx", "model_256.pte", "model_card.json"]
    assert '"license": "apache-2.0"' in Path("export/config.json").read_text()  # kept by the later exports
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        summary = student(x)["summary"]
    blocks = fenced(section, "python")
    assert len(blocks) == 2
    for code in blocks:
        namespace: dict = {}
        exec(compile(code, "docs/export.md snippet", "exec"), namespace)
        model = namespace["model"]
        with torch.no_grad():
            normalized = (x - student.mean) / student.std
            pooled = model(normalized) if isinstance(model, torch.nn.Module) and not hasattr(model, "timm_model") \
                else model(pixel_values=normalized).pooler_output
        torch.testing.assert_close(pooled, summary, atol=1e-5, rtol=0)
    release_cfg = timm.create_model("local-dir:export_vit_t", pretrained=True).pretrained_cfg
    assert release_cfg["tag"] == "eupe_lvd1689m" and release_cfg["license"] == "fair-noncommercial-research-license"
