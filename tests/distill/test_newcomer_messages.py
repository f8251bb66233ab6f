"""Messages a newcomer meets first: missing weights, a Stage-1 run with no store, loss names.

- the missing-weights error names today's Hugging Face CLI (`hf download REPO`);
- docs/training.md's Stage-1 command with no store there, or none set, names the config key data.store;
- loss terms are named as losses (``*_cos_loss``), and a losses.jsonl of older runs (``*_cos``)
  still reads, and is rewritten with today's names when that run is resumed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from eupe.distill.loop import LossLog, read_loss_log
from eupe.distill.losses import DistillLoss, upgrade_record
from eupe.models.weights import MissingWeightsError, WeightsSource, require
from eupe.train.cli import main as train_main

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "train"
README_STAGE1 = ["--stage", "1", "--config", str(CONFIGS / "stage1_proxy.yaml"),
                 "data.shards=shards/train-{000000..000999}.tar"]


def test_missing_hub_weights_name_the_hf_download_command(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(MissingWeightsError) as err:
        require(WeightsSource(hf_repo="timm/no_such_model.test"), None, "no_such_model")
    message = str(err.value)
    assert "`hf download timm/no_such_model.test`" in message and "huggingface-cli" not in message
    assert "--weights /path/to/model.safetensors" in message


def _one_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("Error: "), err
    return err[0]


def test_readme_stage1_command_without_its_store_names_data_store(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no teachers.zarr here
    assert train_main(README_STAGE1) == 2
    error = _one_error(capsys)
    assert error.startswith("Error: data.store='teachers.zarr': no feature store at teachers.zarr")
    assert ("eupe-cache extract --teacher pecore_g --teacher pelang_g --teacher dinov3_hplus "
            "--data 'shards/train-{000000..000999}.tar' --out teachers.zarr") in error and "set data.store=PATH" in error
    assert not (tmp_path / "runs").exists()


def test_stage1_with_no_store_set_names_the_key(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert train_main(["--stage", "1", "--config", str(CONFIGS / "tiny_stage1.yaml")]) == 2  # no data.store in it
    assert _one_error(capsys).startswith("Error: data.store is not set: set data.store=PATH of the feature store")


def test_loss_terms_are_named_as_losses_and_fall_as_predictions_improve():
    loss = DistillLoss()
    target = {"t": {"summary": torch.randn(2, 8), "patch": torch.randn(2, 2, 2, 8)}}
    far = loss({"t": {"summary": -target["t"]["summary"], "patch": -target["t"]["patch"]}}, target)
    near = loss(target, target)
    assert {"t/summary_cos_loss", "t/patch_cos_loss"} <= set(near) and "t/summary_cos" not in near
    assert far["t/summary_cos_loss"].item() == pytest.approx(2.0, abs=1e-5)  # 1 - cos(-x, x)
    assert near["t/summary_cos_loss"].item() == pytest.approx(0.0, abs=1e-5)


def test_old_loss_logs_read_with_todays_names_and_are_upgraded_on_resume(tmp_path):
    old = [{"step": s, "proxy/summary_cos": 0.5 - s / 10, "proxy/patch_cos": 0.4, "proxy/patch_smooth_l1": 0.1,
            "total": 1.0 - s / 10} for s in range(3)]
    path = tmp_path / "losses.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in old))
    records = read_loss_log(path)
    assert [r["proxy/summary_cos_loss"] for r in records] == [0.5, 0.4, 0.3]
    assert all("proxy/summary_cos" not in r and r["proxy/patch_cos_loss"] == 0.4 for r in records)
    assert upgrade_record({"lr": 1.0, "summary_cos": 2.0}) == {"lr": 1.0, "summary_cos": 2.0}  # not a teacher term
    LossLog(path, start=2, enabled=True)  # a resumed run keeps steps 0-1, with today's names
    kept = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["step"] for r in kept] == [0, 1] and kept[1]["proxy/summary_cos_loss"] == 0.4
