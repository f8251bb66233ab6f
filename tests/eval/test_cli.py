"""``eupe-eval knn`` and ``eupe-eval pca`` end to end through ``main(argv)``."""

from __future__ import annotations

import json

from PIL import Image

from eupe.evaluation.cli import main
from eupe.models.checkpoint import save_student
from eupe.models.students import create_student


def test_knn_on_a_folder_prints_top1_per_k(two_crop_folder, capsys):
    argv = ["knn", "--model", "effnet_lite0", "--data", str(two_crop_folder), "--k", "1", "--k", "5",
            "--resolution", "128", "--json"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["train_images"], result["test_images"], result["classes"]) == (20, 20, 19)
    assert result["resolution"] == 128 and result["temperature"] == 0.07
    assert set(result["top1"]) == {"1", "5"} and min(result["top1"].values()) >= 0.9  # measured 1.0


def test_knn_text_output_with_a_trained_student_file(two_crop_folder, tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    save_student(create_student("vit_t", test_scale=True), run_dir / "student.safetensors", test_scale=True)
    argv = ["knn", "--model", str(run_dir), "--data", str(two_crop_folder / "train"),
            "--test-fraction", "0.5", "--k", "3", "--resolution", "64"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "resolution 64" in out and "k=3" in out and "top-1" in out


def test_knn_user_errors_exit_2(two_crop_folder, tmp_path, capsys):
    data = ["--data", str(two_crop_folder)]
    assert main(["knn", "--model", "no_such_model", *data]) == 2
    assert "unknown model 'no_such_model'" in capsys.readouterr().err
    assert main(["knn", "--model", "vit_s", *data]) == 2
    assert "--weights" in capsys.readouterr().err
    assert main(["knn", "--model", "effnet_lite0", "--data", str(tmp_path / "missing")]) == 2
    assert "not a folder" in capsys.readouterr().err
    assert main(["knn", "--model", "effnet_lite0", "--data", str(tmp_path)]) == 2
    assert "no images" in capsys.readouterr().err


def test_pca_writes_one_png_with_a_panel_per_model(photos, tmp_path, capsys):
    out = tmp_path / "figs" / "pca.png"
    argv = ["pca", "--model", "effnet_lite0", "--model", "vit_t", "--image", str(photos[1].path),
            "--out", str(out), "--resolution", "96", "--panel-size", "64", "--test-scale"]
    assert main(argv) == 0
    assert "wrote" in capsys.readouterr().out
    with Image.open(out) as sheet:
        assert sheet.size == (3 * 64, 64 + 18)


def test_help_mentions_the_subcommands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "kNN" in out and "knn" in out and "pca" in out
    assert main(["pca", "--help"]) == 0 and "--panel-size" in capsys.readouterr().out
