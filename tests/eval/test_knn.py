"""The weighted kNN protocol on crafted features with known answers (no model involved)."""

from __future__ import annotations

import math

import pytest
import torch

from eupe.eval.knn import knn_predict, knn_top1, knn_top1_for_ks


def _clusters(n_classes: int, per_class: int, dim: int = 32, noise: float = 0.1, seed: int = 0):
    """Well-separated Gaussian clusters: features [n_classes * per_class, dim] and labels."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_classes, dim, generator=gen) * 3
    labels = torch.arange(n_classes).repeat_interleave(per_class)
    return centres[labels] + noise * torch.randn(len(labels), dim, generator=gen), labels


def test_separable_classes_score_one():
    train, train_labels = _clusters(5, 20, seed=0)
    test, test_labels = train + 0.05 * torch.randn_like(train), train_labels
    assert knn_top1(train, train_labels, test, test_labels, k=10) == 1.0
    assert knn_top1_for_ks(train, train_labels, test, test_labels, ks=(1, 20)) == {1: 1.0, 20: 1.0}


def test_scale_of_features_does_not_matter():
    train, labels = _clusters(4, 10, seed=1)
    test = train[::2] * 7.0  # cosine similarity ignores the norm
    preds = knn_predict(train * 0.01, labels, test, k=3)
    assert torch.equal(preds, labels[::2])


def _vote_case():
    """Query e1; one class-0 neighbour at cosine 0.99, two class-1 neighbours at cosine 0.80."""
    a = torch.tensor([[0.99, math.sqrt(1 - 0.99 ** 2), 0.0]])
    b = torch.tensor([[0.8, 0.0, 0.6], [0.8, -0.6, 0.0]])
    train = torch.cat([a, b])
    return train, torch.tensor([0, 1, 1]), torch.tensor([[1.0, 0.0, 0.0]])


def test_k_and_temperature_decide_the_vote():
    train, labels, query = _vote_case()
    assert knn_predict(train, labels, query, k=1).tolist() == [0]
    # k=3, T=0.07: exp(0.99/0.07) = 1.4e6 outweighs 2 * exp(0.80/0.07) = 1.9e5
    assert knn_predict(train, labels, query, k=3).tolist() == [0]
    # k=3, T=1: e^0.99 = 2.69 < 2 * e^0.8 = 4.45, the majority wins
    assert knn_predict(train, labels, query, k=3, temperature=1.0).tolist() == [1]


def test_k_larger_than_train_set_uses_all_neighbours():
    train, labels, query = _vote_case()
    assert knn_predict(train, labels, query, k=50, temperature=1.0).tolist() == [1]


def test_arbitrary_label_values_are_returned():
    train, labels, query = _vote_case()
    assert knn_predict(train, labels * 100 + 7, query, k=1).tolist() == [7]


def test_permuted_train_labels_give_chance_level():
    train, labels = _clusters(10, 100, seed=2)
    shuffled = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(3))]
    acc = knn_top1(train, shuffled, train + 0.05 * torch.randn_like(train), labels, k=20)
    assert acc == pytest.approx(0.1, abs=0.04)


def test_invalid_k_is_rejected():
    train, labels, query = _vote_case()
    with pytest.raises(ValueError, match="k must be"):
        knn_predict(train, labels, query, k=0)
