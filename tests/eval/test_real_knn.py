"""extract_features + kNN with the real effnet_lite0 teacher on real ImageNet photos."""

from __future__ import annotations

import torch

from eupe.eval.datasets import load_split
from eupe.eval.knn import extract_features, knn_top1_for_ks


def test_effnet_finds_the_other_crop_of_each_photo(two_crop_folder, effnet):
    train, test = load_split(str(two_crop_folder))
    assert (len(train), len(test), len(train.classes)) == (20, 20, 19)  # two photos share class 609
    train_feats = extract_features(effnet, train.images, batch_size=8)
    test_feats = extract_features(effnet, test.images, batch_size=8)
    assert tuple(train_feats.shape) == (20, 1280) and train_feats.dtype == torch.float32
    top1 = knn_top1_for_ks(train_feats, train.labels, test_feats, test.labels, ks=(1, 10))
    assert top1[1] >= 0.9 and top1[10] >= 0.9  # measured: 1.0 and 1.0
    shuffled = torch.as_tensor(train.labels)[torch.randperm(20, generator=torch.Generator().manual_seed(0))]
    assert knn_top1_for_ks(train_feats, shuffled, test_feats, test.labels, ks=(1,))[1] <= 0.3


def test_features_follow_the_requested_resolution(two_crop_folder, effnet):
    train, _ = load_split(str(two_crop_folder), limit=2)
    native = extract_features(effnet, train.images)
    small = extract_features(effnet, train.images, resolution=100)  # rounded down to 96 (stride 32)
    assert native.shape == small.shape
    assert not torch.allclose(native, small, atol=1e-3)
    again = extract_features(effnet, train.images, resolution=96, batch_size=1)
    assert torch.allclose(small, again, atol=1e-4)
