"""The export folder in timm's and the Hub's shape, as a user loads it with no eupe code.

``timm.create_model("local-dir:EXPORT", pretrained=True)`` with no other argument gives pooled
features equal to the student's distilled summary (ViT and ConvNeXt); timm's data config +
``create_transform`` give the project's own preprocessing of a real photo (same tensor);
Transformers' ``AutoModel`` loads the same weights and features; the config carries this export's
identity; bad input ends in one ``Error:`` line with nothing overwritten.
"""

from __future__ import annotations

import json
import os
import stat

import pytest
import timm
import torch
from deploy_helpers import photo_file, tiny_student
from PIL import Image

from eupe.deploy.timm_export import POOLING, UnsupportedStudentError, pooling_args
from eupe.export.cli import main
from eupe.models.checkpoint import save_student
from eupe.models.students import student_spec

RESOLUTION = {"vit_t": 64, "convnext_t": 64}
LOSSES = ['{"step": 0, "total": 3.0, "proxy/summary_cos": 0.9, "proxy/loss": 3.0}',
          '{"step": 1, "total": 2.5, "proxy/summary_cos": 0.7, "proxy/patch_cos": 0.6, "proxy/loss": 2.5}',
          '{"step": 2, "tot']  # a torn last line, as a killed trainer leaves it


def _run(root, name):
    """A run directory as eupe-train leaves it: student file (trained at 64 px), losses, evaluations."""
    run = root / f"stage2_{name}"
    run.mkdir(parents=True)
    info = {"stage": 2, "teachers": {"proxy": "f" * 64}, "store": str(root.resolve() / "proxy.zarr"),
            "config": {"stage": 2, "student_resolutions": [RESOLUTION[name]], "data": {"store": str(root.resolve() / "proxy.zarr")}}}
    save_student(tiny_student(name, seed=3), run / "student.safetensors", test_scale=True, info=info)
    (run / "losses.jsonl").write_text("\n".join(LOSSES))
    return run


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _export(run, out, *args):
    return main(["--checkpoint", str(run), "--resolution", "64", "--out", str(out), *args])


@pytest.mark.parametrize("name", ["vit_t", "convnext_t"])
def test_local_dir_loads_with_the_distilled_summary_and_training_preprocessing(in_tmp, photos, name):
    run = _run(in_tmp, name)
    assert _export(run, "export") == 0
    model = timm.create_model("local-dir:export", pretrained=True).eval()  # no other argument
    config = timm.data.resolve_model_data_config(model)
    assert config["input_size"] == (3, 64, 64) and config["crop_pct"] == 1.0 and config["crop_mode"] == "squash"
    pixels01 = photo_file(photos, in_tmp)
    student = tiny_student(name, seed=3).eval()
    expected = (pixels01 - student.mean) / student.std  # the project's preprocessing: render + the model's mean/std
    got = timm.data.create_transform(**config)(Image.open("photo.jpg").convert("RGB"))[None]
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)  # same tensor
    with torch.no_grad():
        pooled, summary = model(got), student(pixels01)["summary"]
        cosine = torch.nn.functional.cosine_similarity(pooled, summary).min().item()
        assert cosine >= 0.9999 and torch.allclose(pooled, summary, atol=1e-5)
        if name == "vit_t":  # the pooling in config.json matters: timm's default ("avg") is not the summary
            model.reset_classifier(0, "avg")
            assert torch.nn.functional.cosine_similarity(model(got), summary).min() < 0.999


@pytest.mark.parametrize("name", ["vit_t", "convnext_t"])
def test_transformers_automodel_gives_the_same_features(in_tmp, photos, name):
    transformers = pytest.importorskip("transformers")
    assert _export(_run(in_tmp, name), "export") == 0
    model = transformers.AutoModel.from_pretrained("export").eval()
    processor = transformers.AutoImageProcessor.from_pretrained("export")
    pixels01 = photo_file(photos, in_tmp)
    inputs = processor(Image.open("photo.jpg").convert("RGB"), return_tensors="pt")
    student = tiny_student(name, seed=3).eval()
    torch.testing.assert_close(inputs["pixel_values"], (pixels01 - student.mean) / student.std, atol=1e-6, rtol=0)
    with torch.no_grad():
        out = model(**inputs)
        ref = student(pixels01)
    torch.testing.assert_close(out.pooler_output, ref["summary"], atol=1e-5, rtol=0)
    if name == "vit_t":  # last_hidden_state: prefix + patch tokens
        patch = out.last_hidden_state[:, 5:].reshape(ref["patch"].shape)
        torch.testing.assert_close(patch, ref["patch"], atol=1e-5, rtol=0)


def test_config_and_card_carry_this_exports_identity(in_tmp):
    run = _run(in_tmp, "vit_t")
    (run / "evaluations.jsonl").write_text(
        '{"task": "knn", "metric": "top1@20", "value": 71.2, "data": "offline: Fashion-MNIST (1000/1000)", "offline": true,'
        ' "settings": {"k": 20}, "fingerprint": null, "command": "eupe-eval knn --model stage2_vit_t", '
        '"date": "2026-12-07T02:10:00Z", "reason": null}\n{"task": "agree\n'
        '{"task": "agreement", "metric": "summary_cos", "value": null, "data": "offline: photos", "offline": true,'
        ' "settings": {}, "fingerprint": null, "command": "eupe-eval agreement --run stage2_vit_t", "date": "2026-12-07T02:11:00Z",'
        ' "reason": "no teacher weights"}\n')
    assert _export(run, "export", "--license", "apache-2.0", "--dataset", "zalando-datasets/fashion_mnist") == 0
    config = json.loads((in_tmp / "export" / "config.json").read_text())
    assert config["architecture"] == "vit_tiny_patch16_dinov3_qkvb" and config["num_classes"] == 0
    assert config["num_features"] == 64 and config["model_args"]["global_pool"] == "token"
    assert {k: config["model_args"][k] for k in ("embed_dim", "depth", "num_heads")} == {"embed_dim": 64, "depth": 2, "num_heads": 2}
    cfg = config["pretrained_cfg"]
    assert cfg["tag"] == "vit_t_stage2_vit_t" and cfg["license"] == "apache-2.0" and "eupe_lvd1689m" not in json.dumps(config)
    assert cfg["mean"] == [0.485, 0.456, 0.406] and cfg["interpolation"] == "bilinear" and cfg["input_size"] == [3, 64, 64]
    model = timm.create_model("local-dir:export", pretrained=True)
    assert model.pretrained_cfg["tag"] == "vit_t_stage2_vit_t" and model.pretrained_cfg["license"] == "apache-2.0"
    text = (in_tmp / "export" / "README.md").read_text()
    header = text.split("---\n")[1]
    import yaml

    meta = yaml.safe_load(header)
    assert meta["library_name"] == "timm" and meta["license"] == "apache-2.0"
    assert meta["pipeline_tag"] == "image-feature-extraction" and "timm" in meta["tags"]
    assert meta["datasets"] == ["zalando-datasets/fashion_mnist"]
    assert "### Final losses (step 1, total 2.5)" in text and "| teacher | summary_cos | patch_cos | loss |" in text
    assert "| proxy | 0.7 | 0.6 | 2.5 |" in text
    card = json.loads((in_tmp / "export" / "model_card.json").read_text())
    assert card["final_losses"] == {"step": 1, "total": 2.5,
                                    "teachers": {"proxy": {"summary_cos": 0.7, "patch_cos": 0.6, "loss": 2.5}}}
    assert [(e["task"], e["value"], e["command"]) for e in card["evaluations"]] == [
        ("knn", 71.2, "eupe-eval knn --model stage2_vit_t"), ("agreement", None, "eupe-eval agreement --run stage2_vit_t")]
    assert "| knn | top1@20 | 71.2 | offline: Fashion-MNIST (1000/1000) | eupe-eval knn --model stage2_vit_t |" in text
    assert "no teacher weights" in text
    for written in ("README.md", "model_card.json", "config.json"):
        assert str(in_tmp.resolve()) not in (in_tmp / "export" / written).read_text()  # no absolute path
    assert '"store": "proxy.zarr"' in text  # the run's absolute store path, shown relative to the cwd


def test_default_license_is_other_and_release_keeps_its_own(in_tmp):
    assert _export(_run(in_tmp, "convnext_t"), "export") == 0
    config = json.loads((in_tmp / "export" / "config.json").read_text())
    assert config["pretrained_cfg"]["license"] == "other" and config["model_args"]["global_pool"] == "avg"
    assert "in12k" not in json.dumps(config)  # timm's default convnext_tiny tag is not ours
    assert "license: other\nlicense_name: unspecified\n" in (in_tmp / "export" / "README.md").read_text()


def test_exported_files_honour_the_umask(in_tmp):
    old = os.umask(0o027)
    try:
        assert _export(_run(in_tmp, "vit_t"), "export") == 0
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (in_tmp / "export").iterdir()}
    assert modes == dict.fromkeys(["README.md", "config.json", "model.safetensors", "model_card.json"], 0o640)


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_a_folder_with_other_files_is_refused_and_kept(in_tmp, capsys):
    run = _run(in_tmp, "vit_t")
    out = in_tmp / "mine"
    out.mkdir()
    (out / "README.md").write_text("my notes")
    (out / "model.safetensors").write_bytes(b"not yours")
    before = _snapshot(out)
    assert _export(run, out) == 2
    err = capsys.readouterr().err
    assert err.startswith("Error: --out") and "README.md, model.safetensors" in err and "--force" in err
    assert len(err.strip().splitlines()) == 1 and _snapshot(out) == before  # nothing overwritten
    assert _export(run, out, "--force") == 0
    assert (out / "config.json").is_file() and (out / "README.md").read_text().startswith("---\n")


def test_reexport_of_the_same_weights_updates_and_other_weights_need_force(in_tmp, capsys):
    run = _run(in_tmp, "vit_t")
    assert _export(run, "export") == 0
    assert _export(run, "export") == 0  # same weights: the card is updated
    other = in_tmp / "other"
    other.mkdir()
    save_student(tiny_student("vit_t", seed=4), other / "student.safetensors", test_scale=True)
    before = _snapshot(in_tmp / "export")
    capsys.readouterr()
    assert _export(other, "export") == 2
    assert "holds the export of other weights" in capsys.readouterr().err and _snapshot(in_tmp / "export") == before


def _run_without_student(root, kind):
    run = root / kind
    run.mkdir()
    if kind == "stage1":
        (run / "proxy.safetensors").write_bytes(b"x")
    if kind == "unfinished":
        (run / "checkpoints").mkdir()
    return run


@pytest.mark.parametrize("kind, message", [("stage1", "is a Stage-1 run: it holds the proxy teacher"),
                                           ("unfinished", "its training has not finished"),
                                           ("empty", "holds no student weights")])
def test_a_run_without_weights_is_one_error_line(in_tmp, capsys, kind, message):
    assert _export(_run_without_student(in_tmp, kind), "export") == 2
    err = capsys.readouterr().err
    assert err.startswith("Error: ") and message in err and len(err.strip().splitlines()) == 1
    assert not (in_tmp / "export").exists()


def test_an_unknown_student_family_is_refused(in_tmp, capsys):
    assert main(["--student", "resnet_t", "--weights", "w.safetensors", "--out", "export"]) == 2
    assert "Error: " in capsys.readouterr().err and not (in_tmp / "export").exists()
    from dataclasses import replace

    with pytest.raises(UnsupportedStudentError, match="no timm pooling reproduces"):
        pooling_args(replace(student_spec("vit_t"), summary="mean"))
    assert set(POOLING) == {student_spec(n).summary for n in ("vit_t", "vit_s", "vit_b", "convnext_t", "convnext_s", "convnext_b")}


def test_a_bad_license_is_a_usage_error(in_tmp, capsys):
    assert _export(_run(in_tmp, "vit_t"), "export", "--license", "Apache 2") == 2
    assert "not a Hub licence identifier" in capsys.readouterr().err and not (in_tmp / "export").exists()
