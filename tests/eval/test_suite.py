"""``eupe-eval suite`` end to end: results.{json,csv,md}, paper rows apart, evaluations.jsonl, user errors."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from eupe.evaluation.cli import main
from eupe.models.checkpoint import save_student
from eupe.models.students import create_student

pytest.importorskip("open_clip")


def _run_dir(tmp_path, heads: bool = False):
    run = tmp_path / "run"
    run.mkdir()
    student = create_student("vit_t", test_scale=True)
    save_student(student, run / "student.safetensors", test_scale=True)
    (run / "config.yaml").write_text("teachers:\n- name: pecore_g\n  weights: null\ndata:\n  store: ''\n")
    if heads:
        from eupe.distill.heads import HEADS_FILENAME, DistillModel

        torch.manual_seed(0)
        model = DistillModel(student, {"pecore_g": (1280, 1536)}, 16)
        torch.save(model.heads.state_dict(), run / HEADS_FILENAME)
        (run / "stats").mkdir()
        rng = np.random.default_rng(0)
        np.savez(run / "stats" / "pecore_g_r448.npz", summary_mean=rng.normal(size=1280), summary_std=rng.uniform(
            0.5, 2.0, size=1280), patch_mean=np.zeros(1536), patch_std=np.ones(1536))
    return run


def test_suite_writes_the_table_with_paper_rows_and_run_evaluations(two_crop_folder, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = _run_dir(tmp_path)
    out = tmp_path / "suite"
    argv = ["suite", "--model", "vit_t=random", "--model", str(run), "--data", f"knn={two_crop_folder}",
            "--task", "knn", "--task", "zeroshot", "--set", "knn.resolution=64", "--out", str(out), "--test-scale"]
    assert main(argv) == 0
    result = json.loads((out / "results.json").read_text())
    figures = result["figures"]
    knn = [f for f in figures if f["task"] == "knn"]
    assert [f["metric"] for f in knn[:4]] == ["top1@10", "top1@20", "top1@100", "top1@200"]
    assert {f["model"] for f in figures} == {"vit_t=random", "run"}  # no absolute path as a row name
    assert all(f["offline"] is False and "two_crops" in f["data"] for f in knn)
    assert all(f["settings"]["transform"] == "eupe" and f["settings"]["resolution"] == 64 for f in knn)
    zs = [f for f in figures if f["task"] == "zeroshot"]
    assert all(f["value"] is None and f["reason"] for f in zs)
    assert str(tmp_path) not in (out / "results.json").read_text()
    rows = list(csv.reader((out / "results.csv").open()))
    header = rows[0]
    assert header[:2] == ["model", "source"] and any(h.startswith("kNN top-1 (top1@20)") for h in header)
    assert "IN1k kNN top-1 [paper, full dataset]" in header
    by_model = {r[0]: dict(zip(header, r)) for r in rows[1:]}
    assert by_model["EUPE-ViT-B"]["source"] == "paper" and by_model["EUPE-ViT-B"]["IN1k kNN top-1 [paper, full dataset]"] == "84.1"
    assert by_model["EUPE-ViT-B"]["SPair-71k PCK@0.1 [paper, full dataset]"] == "51.3"
    knn_col = next(h for h in header if h.startswith("kNN top-1"))
    assert by_model["EUPE-ViT-B"][knn_col] == ""  # paper figures never under a measured column
    assert by_model["vit_t=random"][knn_col] == f"{next(f['value'] for f in knn if f['metric'] == 'top1@20'):.4g}"
    md = (out / "results.md").read_text()
    assert "| EUPE-ViT-B | 84.1 | 79.7 | 52.4 |" in md and "n/a" in md and "Not available:" in md
    lines = [json.loads(line) for line in (run / "evaluations.jsonl").read_text().splitlines()]
    assert [(r["task"], r["metric"]) for r in lines] == [("knn", "top1@10"), ("knn", "top1@20"), ("knn", "top1@100"),
                                                         ("knn", "top1@200"), ("zeroshot", "top1")]
    assert lines[0]["command"].startswith("eupe-eval suite --model vit_t=random --model run ")
    assert str(tmp_path) not in (run / "evaluations.jsonl").read_text()
    assert set(lines[0]) == {"task", "metric", "value", "data", "offline", "settings", "fingerprint", "command",
                             "date", "reason"}
    assert "Paper (" in capsys.readouterr().out


def test_run_dir_pecore_head_is_mapped_back_through_the_frozen_stats(tmp_path):
    from eupe.distill.agreement import load_distill_model
    from eupe.eval.suite import resolve_model

    run = _run_dir(tmp_path, heads=True)
    model = resolve_model(str(run))
    assert model.clip_summary is not None and model.run_dir == run
    pixels = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        normalized = load_distill_model(run)(pixels)["pecore_g"]["summary"]
        stats = np.load(run / "stats" / "pecore_g_r448.npz")
        expected = normalized * torch.from_numpy(stats["summary_std"]).float() + torch.from_numpy(stats["summary_mean"]).float()
        assert torch.allclose(model.clip_summary(pixels), expected, atol=1e-5)


@pytest.mark.parametrize("args, words", [
    (["--model", "no_such_model"], "unknown model 'no_such_model'"),
    (["--model", "effnet_lite0=random"], "random init is for student architectures"),
    (["--model", "vit_t=random", "--data", "{missing}"], "does not exist"),
    (["--model", "vit_t=random", "--data", "segx=/tmp"], "no task 'segx'"),
    (["--model", "vit_t=random", "--set", "knn.nope=1"], "has no setting nope"),
    (["--model", "vit_t=random", "--text-weights", "{missing}"], "--text-weights"),
    (["--model", "vit_t=random", "--data", "knn={empty}", "--task", "knn"], "no images"),
])
def test_suite_user_errors_exit_2_with_one_error_line(args, words, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    args = [a.format(missing=tmp_path / "missing", empty=tmp_path / "empty") for a in args]
    assert main(["suite", *args, "--out", str(tmp_path / "out"), "--test-scale"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("Error: ") and words in err[-1]
    assert not any(line.startswith("Traceback") for line in err)
    assert not (tmp_path / "out" / "results.json").exists()


def test_single_task_command_without_text_tower_is_an_error(tmp_path, capsys):
    assert main(["zeroshot", "--model", "pecore_g", "--test-scale"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("Error: zeroshot: no text tower weights: pass --text-weights")


def test_na_cells_join_the_measured_column_and_reasons_are_listed():
    from eupe.eval.report import results_csv, results_markdown
    from eupe.eval.tasks.base import Figure

    figs = [Figure(task="knn", metric="top1@20", value=70.5, model="a", fingerprint="fa", data="offline: X",
                   offline=True),
            Figure(task="knn", metric="top1@10", value=71.0, model="a", fingerprint="fa", data="offline: X",
                   offline=True),
            Figure(task="zeroshot", metric="top1", value=None, model="a", fingerprint="fa", data="offline: Y",
                   offline=True, reason="no CLIP head"),
            Figure(task="knn", metric="top1@20", value=None, model="b", fingerprint="fb", data="offline: Z",
                   offline=True, reason="no data"),
            Figure(task="zeroshot", metric="top1", value=55.0, model="b", fingerprint="fb", data="offline: W",
                   offline=True)]
    md = results_markdown(figs)
    assert "| model | kNN top-1 (top1@20) [offline: X] | zero-shot top-1 (top1) [offline: W] |" in md
    assert "| a | 70.5 | n/a |" in md and "| b | n/a | 55 |" in md
    assert "- a / zeroshot: no CLIP head" in md and "- b / knn: no data" in md
    header = results_csv(figs).splitlines()[0]
    assert header.count("kNN top-1 (top1") == 1 and "top1@10" not in header  # the headline metric only


def test_knn_command_appends_to_a_run_directory(two_crop_folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = _run_dir(tmp_path)
    argv = ["knn", "--model", "run", "--data", str(two_crop_folder), "--k", "3", "--resolution", "64"]
    assert main(argv) == 0 and main(argv) == 0  # appended twice: one line per figure per run
    lines = [json.loads(line) for line in (run / "evaluations.jsonl").read_text().splitlines()]
    assert [(r["task"], r["metric"]) for r in lines] == [("knn", "top1@3")] * 2
    assert lines[0]["value"] == lines[1]["value"] and 0.0 <= lines[0]["value"] <= 100.0
    assert lines[0]["settings"]["transform"] == "eupe" and lines[0]["command"].startswith("eupe-eval knn --model run")
    assert str(tmp_path) not in (run / "evaluations.jsonl").read_text()
