"""Every unusable TrainConfig value ends in one `Error:` line with exit status 2, before any work or write."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from eupe.train.cli import main

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "train"


def _fails(capsys, tmp_path, *args: str, config: str | Path = CONFIGS / "tiny_stage2.yaml", stage: int = 2) -> str:
    out = tmp_path / "run"
    argv = ["--stage", str(stage), "--config", str(config), f"out={out}", f"data.store={tmp_path / 'none.zarr'}", *args]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("Error: "), err
    assert not out.exists()  # refused before anything was written
    return err[0]


@pytest.mark.parametrize("overrides,expected", [
    (["micro_batch=16"], "micro_batch 16 x 1 process(es) is larger than global_batch 8"),
    (["micro_batch=3"], "global_batch 8 is not a multiple of micro_batch 3 x 1 process(es)"),
    (["micro_batch=0"], "micro_batch must be positive, got 0"),
    (["optim.lr=-1e-3"], "optim.lr must be a positive number, got -0.001"),
    (["optim.lr=.nan"], "optim.lr must be a positive number, got nan"),
    (["data.num_workers=-1"], "data.num_workers must be 0 or more, got -1"),
    (["student_resolutions=[65]"], "student_resolutions: 65 is not a positive multiple of vit_t's patch size 16"),
    (["student.name=convnext_t", "student_resolutions=[64,80]"],
     "student_resolutions: 80 is not a positive multiple of convnext_t's patch size 32"),
    (["teachers=[]"], "teachers is empty: name at least one teacher"),
    (["iterations=-5"], "iterations must be positive, got -5"),
    (["iterations=0"], "iterations must be positive, got 0"),
    (["mixed_precision=fp8"], "mixed_precision must be bf16, fp16 or no, got 'fp8'"),
])
def test_unusable_values_are_refused_naming_the_value(capsys, tmp_path, overrides, expected):
    assert expected in _fails(capsys, tmp_path, *overrides)


def test_stage3_without_init_is_refused(capsys, tmp_path):
    line = _fails(capsys, tmp_path, config=CONFIGS / "tiny_stage3.yaml", stage=3)
    assert "stage 3 starts from a Stage-2 run: set init=RUN_DIR" in line


def test_micro_batch_must_divide_the_global_batch_across_processes(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert "global_batch 8 is not a multiple of micro_batch 2 x 3 process(es)" in _fails(capsys, tmp_path,
                                                                                         "micro_batch=2")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert "larger than global_batch 8" in _fails(capsys, tmp_path)


def test_broken_yaml_is_one_error_line(capsys, tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("stage: 2\niterations: [1, 2\n")
    line = _fails(capsys, tmp_path, config=broken)
    assert f"{broken} is not valid YAML" in line


def test_an_override_error_names_the_override_not_the_file(capsys, tmp_path):
    line = _fails(capsys, tmp_path, "optim.lr=fast")
    assert "override 'optim.lr=fast'" in line and "tiny_stage2.yaml" not in line
    line = _fails(capsys, tmp_path, "optim.bogus=1")
    assert "override 'optim.bogus=1'" in line and "tiny_stage2.yaml" not in line


def test_a_file_error_names_the_file(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((CONFIGS / "tiny_stage2.yaml").read_text() + "itrations: 3\n")
    line = _fails(capsys, tmp_path, config=bad)
    assert str(bad) in line and "itrations" in line


def test_the_shipped_configs_are_valid():
    from eupe import config as config_io
    from eupe.distill.config import TrainConfig, validate

    for path in sorted(CONFIGS.glob("*.yaml")):
        cfg = config_io.load(TrainConfig, path)
        cfg.init = cfg.init or "runs/stage2"  # tiny_stage3.yaml takes init as an override
        validate(cfg)
        assert math.isfinite(cfg.optim.lr) and cfg.iterations > 0, path


def test_every_recipe_value_says_whether_the_paper_fixes_it():
    keys = ("iterations:", "global_batch:", "micro_batch:", "head_hidden:", "student_resolutions:", "teacher_resolutions:",
            "optim:", "mixed_precision:", "checkpoint_every:", "data:", "proxy:")
    for path in sorted(CONFIGS.glob("*.yaml")):
        text = path.read_text()
        if path.name.startswith("tiny_"):
            assert "every value here is ours" in text, path
            continue
        for line in text.splitlines():
            if line.startswith(keys):
                assert "# paper" in line or "# ours" in line or "ours" in line.split("#", 1)[-1], (path, line)
