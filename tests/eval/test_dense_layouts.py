"""ADE20K / NYUv2 / SPair-71k loaders on tiny fake trees, and the errors for a wrong root."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from eupe.cli_support import is_user_error
from eupe.eval.datasets import MissingDatasetError
from eupe.eval.dense.layouts import ade20k_data, nyu_data, spair_pairs
from eupe.eval.tasks.catalog import get_task
from eupe.eval.tasks.base import EvalContext, EvalModel
from eupe.eval.tasks.corr import CorrConfig
from eupe.eval.tasks.depth import DepthConfig
from eupe.eval.tasks.seg import SegConfig


def _rgb(path: Path, height: int, width: int, value: int = 128) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((height, width, 3), value, np.uint8)).save(path)


def _ade(root: Path) -> Path:
    base = root / "ADEChallengeData2016"
    for split in ("training", "validation"):
        for i in range(2):
            _rgb(base / "images" / split / f"ADE_{split}_{i}.jpg", 40, 60)
            label = np.zeros((40, 60), np.uint8)
            label[:, 30:] = 150  # right half: the last class; left half: 0 = "other", ignored
            (base / "annotations" / split).mkdir(parents=True, exist_ok=True)
            Image.fromarray(label).save(base / "annotations" / split / f"ADE_{split}_{i}.png")
    return base


def test_ade20k_reduces_the_zero_label(tmp_path):
    _ade(tmp_path)
    data = ade20k_data(tmp_path, SegConfig(resolution=32), seed=0)
    assert (data.num_classes, len(data.train_images), len(data.val_images)) == (150, 2, 2)
    assert tuple(data.train_labels.shape) == (2, 32, 32)  # short side 32, centre crop
    assert set(data.train_labels.unique().tolist()) == {149, 255}
    assert tuple(data.val_images[0].shape) == (3, 32, 48)  # short side -> 32, aspect kept
    val = data.val_labels[1]
    assert tuple(val.shape) == (40, 60) and val[0, 0] == 255 and val[0, 59] == 149  # full-size GT


def test_ade20k_missing_annotation_names_the_file(tmp_path):
    base = _ade(tmp_path)
    (base / "annotations" / "validation" / "ADE_validation_1.png").unlink()
    with pytest.raises(MissingDatasetError, match="ADE_validation_1.png"):
        ade20k_data(base, SegConfig(resolution=32), seed=0)


def _nyu(root: Path) -> Path:
    for split in ("train", "test"):
        lines = []
        for i in range(2):
            _rgb(root / "kitchen" / f"rgb_{split}{i}.jpg", 480, 640)
            depth = np.full((480, 640), 2500, np.uint16)  # 2.5 m
            Image.fromarray(depth).save(root / "kitchen" / f"sync_depth_{split}{i}.png")
            lines.append(f"/kitchen/rgb_{split}{i}.jpg /kitchen/sync_depth_{split}{i}.png 518.8579")
        (root / f"nyu_{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def test_nyu_reads_the_bts_split_in_metres(tmp_path):
    _nyu(tmp_path / "nyu")
    data = nyu_data(tmp_path, DepthConfig(train=None), seed=0)
    assert tuple(data.train_depth.shape) == (2, 416, 544)
    assert torch.allclose(data.train_depth, torch.tensor(2.5))
    assert tuple(data.train_images[0].shape) == (3, 416, 544)
    assert tuple(data.test_images[1].shape) == (3, 480, 640) and float(data.test_depth[0][0, 0]) == 2.5


def test_nyu_missing_split_file_is_named(tmp_path):
    with pytest.raises(MissingDatasetError, match="nyu_train.txt"):
        nyu_data(tmp_path, DepthConfig(), seed=0)


def _spair(root: Path) -> Path:
    base = root / "SPair-71k"
    _rgb(base / "JPEGImages" / "cat" / "a.jpg", 100, 200, 50)
    _rgb(base / "JPEGImages" / "cat" / "b.jpg", 200, 100, 200)
    (base / "PairAnnotation" / "test").mkdir(parents=True)
    ann = {"category": "cat", "src_imname": "a.jpg", "trg_imname": "b.jpg", "src_kps": [[10, 20], [100, 50]],
           "trg_kps": [[30, 40], [60, 150]], "trg_bndbox": [10, 20, 90, 180], "src_bndbox": [0, 0, 10, 10]}
    (base / "PairAnnotation" / "test" / "0-a-b:cat.json").write_text(json.dumps(ann))
    return base


def test_spair_pads_to_square_and_scales_keypoints_and_bbox(tmp_path):
    _spair(tmp_path)
    pairs = spair_pairs(tmp_path, CorrConfig(resolution=100), seed=0)
    pair = pairs[0]
    assert tuple(pair.source.shape) == (3, 100, 100) and pair.group == "cat"
    assert torch.allclose(pair.source_xy, torch.tensor([[5.0, 10.0], [50.0, 25.0]]))  # x 100/200
    assert torch.allclose(pair.target_xy, torch.tensor([[15.0, 20.0], [30.0, 75.0]]))
    assert pair.scale == pytest.approx(80.0)  # max bbox side 160 x 0.5
    assert float(pair.source[:, 90, 50].mean()) == pytest.approx(1.0)  # white padding below the image


@pytest.mark.parametrize("task", ["seg", "depth", "corr"])
def test_a_wrong_root_is_a_user_error_naming_the_layout(task, tmp_path):
    from eupe.eval.models import load_model

    model = EvalModel("tiny", load_model("dinov2s_imgfocus", test_scale=True))
    with pytest.raises(MissingDatasetError) as err:
        get_task(task).run(model, EvalContext(data=str(tmp_path)))
    assert is_user_error(err.value)
    assert str(tmp_path) in str(err.value) and "expected" in str(err.value)


@pytest.mark.slow
def test_each_task_runs_end_to_end_on_its_dataset_layout(tmp_path):
    """The paper-scale code path (sliding window, Eigen crop, SPair per-class PCK) on the fake trees."""
    from eupe.eval.dense.heads import TrainConfig
    from eupe.eval.models import load_model
    from eupe.eval.tasks.corr import CorrTask
    from eupe.eval.tasks.depth import DepthTask
    from eupe.eval.tasks.seg import SegTask

    model = EvalModel("tiny", load_model("dinov2s_imgfocus", test_scale=True))
    few = TrainConfig(steps=2, batch_size=2, warmup=1)
    _ade(tmp_path), _nyu(tmp_path / "nyu"), _spair(tmp_path)
    ctx = EvalContext(data=str(tmp_path))
    seg = SegTask(SegConfig(resolution=28, stride=14, train=None, val=None, train_config=few)).run(model, ctx)
    depth = DepthTask(DepthConfig(train=None, resolution=112, eigen_crop=True, train_config=few)).run(model, ctx)
    corr = CorrTask(CorrConfig(resolution=56)).run(model, ctx)
    assert [(f.data, f.offline) for f in seg] == [("ADE20K val", False)]
    assert 0.0 <= seg[0].value <= 100.0 and seg[0].settings["val_images"] == 2
    assert depth[0].data == "NYUv2 test (BTS split)" and depth[0].metric == "RMSE" and depth[0].value > 0
    assert depth[0].settings["baseline_mean_depth_rmse"] == pytest.approx(0.0, abs=1e-4)  # constant 2.5 m scene
    assert corr[0].data == "SPair-71k test (56 px)" and list(corr[0].settings["per_class"]) == ["cat"]
    assert corr[0].value in (0.0, 50.0, 100.0)  # two keypoints
