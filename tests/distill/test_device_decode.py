"""Cached targets decoded on the training step's device equal today's per-sample CPU path.

The DataLoader can ship the stored codec components (``Batch.stored``) and the step decode and
normalize them batched (``TargetDecoder``); on CPU that gives exactly the values of
``TeacherGroup.reader.targets`` + ``normalize`` per sample, for fp16, int8 and compact stores, and a short
training run's losses do not move. On a CUDA device the decode equals the CPU decode.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from eupe.cache_tools.cli import main as cache_main
from eupe.distill.data import DistillDataset
from eupe.distill.stats import normalize, teacher_stats
from eupe.distill.targets import StoredTargets, TargetDecoder
from eupe.store.store import FeatureStore

CODECS = ("fp16", "int8", "compact")
TEACHER = "dinov3_hplus"
SAMPLES = [(0, 0, 64, 0), (3, 1, 64, 0), (5, 0, 64, 0), (7, 1, 64, 0)]  # (row, view, student res, teacher res)
CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "train"


@pytest.fixture(scope="module")
def stores(tmp_path_factory, photo_shards) -> dict[str, str]:
    """One tiny store per codec (test-scale DINOv3-H+, 8 real photos, 2 views), with statistics."""
    root = tmp_path_factory.mktemp("decode")
    out = {}
    for codec in CODECS:
        path = str(root / f"{codec}.zarr")
        with contextlib.redirect_stdout(io.StringIO()):
            assert cache_main(["extract", "--teacher", TEACHER, "--test-scale", "--data", photo_shards, "--out", path,
                               "--views", "2", "--resolution", "64", "--limit", "8", "--images-per-chunk", "4",
                               "--num-workers", "0", "--codec", codec]) == 0
            teacher_stats(path, TEACHER)
        out[codec] = path
    return out


def _dataset(path: str, decode: bool) -> DistillDataset:
    return DistillDataset(path, [TEACHER], {TEACHER: teacher_stats(path, TEACHER, say=lambda _: None)}, decode=decode)


def _per_sample_reference(path: str) -> dict[str, torch.Tensor]:
    """Today's path: numpy decode of one (row, view) at a time, normalized, then stacked."""
    group = FeatureStore.open(path).teacher(TEACHER)
    stats = teacher_stats(path, TEACHER, say=lambda _: None)[64]
    items = [normalize({k: torch.from_numpy(v) for k, v in group.reader.targets(row, 64, k).items()}, stats)
             for row, k, _, _ in SAMPLES]
    return {kind: torch.stack([i[kind] for i in items]) for kind in ("summary", "patch")}


@pytest.mark.parametrize("codec", CODECS)
def test_batched_decode_equals_the_per_sample_cpu_path(stores, codec):
    reference = _per_sample_reference(stores[codec])
    lazy = _dataset(stores[codec], decode=False).__getitems__(SAMPLES)
    assert not lazy.targets and set(lazy.stored) == {TEACHER}
    stored = lazy.stored[TEACHER]
    group = FeatureStore.open(stores[codec]).teacher(TEACHER)
    h, w = group.grids[64]
    for name, (dtype, suffix) in group.codec.components(h * w, group.dim).items():  # shipped as stored
        assert stored.parts["patch"][name].dtype == getattr(torch, np.dtype(dtype).name)
        assert tuple(stored.parts["patch"][name].shape) == (len(SAMPLES), *suffix)
    decoded = TargetDecoder(_dataset(stores[codec], decode=False).stats)(TEACHER, stored)
    eager = _dataset(stores[codec], decode=True).__getitems__(SAMPLES)
    assert not eager.stored
    for kind in ("summary", "patch"):
        assert decoded[kind].shape == reference[kind].shape and decoded[kind].dtype == torch.float32
        assert reference[kind].abs().max() > 0.5  # real, normalized targets
        assert torch.equal(decoded[kind], reference[kind])  # same float32 operations: bit for bit
        assert torch.equal(eager.targets[TEACHER][kind], reference[kind])


def test_stored_components_are_far_smaller_than_decoded_targets(stores):
    batch = _dataset(stores["int8"], decode=False).__getitems__(SAMPLES)
    shipped = sum(t.nbytes for named in batch.stored[TEACHER].parts.values() for t in named.values())
    decoded = sum(t.nbytes for t in _per_sample_reference(stores["int8"]).values())
    assert shipped < 0.3 * decoded  # int8 codes + one float32 scale per token vs float32 values


def _losses(run: Path) -> list[float]:
    return [json.loads(line)["total"] for line in (run / "losses.jsonl").read_text().splitlines()]


def _train(store: str, out: Path, decode_on_device: bool, workers: int) -> list[float]:
    from eupe.distill.loop import Trainer
    from eupe.train.cli import load_config

    cfg, _ = load_config(str(CONFIGS / "tiny_stage2.yaml"),
                         [f"data.store={store}", f"out={out}", "teachers=[{name: dinov3_hplus, test_scale: true}]",
                          "iterations=4", "checkpoint_every=4", f"data.num_workers={workers}"])
    trainer = Trainer(cfg, say=lambda _: None, decode_on_device=decode_on_device)
    trainer.setup()
    assert trainer.dataset.decode is not decode_on_device
    trainer.run()
    return _losses(out)


def test_a_short_training_run_is_unchanged_by_where_targets_decode(stores, tmp_path):
    in_loader = _train(stores["compact"], tmp_path / "loader", decode_on_device=False, workers=0)
    on_device = _train(stores["compact"], tmp_path / "device", decode_on_device=True, workers=1)  # across a worker
    assert len(in_loader) == 4 and len(set(in_loader)) == 4
    assert on_device == in_loader  # bit for bit: same formulas, same float32 operations


@pytest.mark.gpu
@pytest.mark.parametrize("codec", CODECS)
def test_decode_on_the_gpu_equals_the_cpu_decode(stores, codec):
    stored = _dataset(stores[codec], decode=False).__getitems__(SAMPLES).stored[TEACHER]
    decoder = TargetDecoder(_dataset(stores[codec], decode=False).stats)
    cpu = decoder(TEACHER, stored)
    on_gpu = stored.pin_memory().to(torch.device("cuda"))
    assert isinstance(on_gpu, StoredTargets) and on_gpu.device.type == "cuda"
    gpu = decoder(TEACHER, on_gpu)
    for kind in ("summary", "patch"):
        assert gpu[kind].device.type == "cuda"
        torch.testing.assert_close(gpu[kind].cpu(), cpu[kind], rtol=1e-6, atol=1e-6)
