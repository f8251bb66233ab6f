"""Labelled evaluation sets: image folders, webdataset shards, Fashion-MNIST, and their splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from eupe.data.shards import write_shards
from eupe.eval.datasets import (DatasetError, MissingDatasetError, fashion_mnist, fashion_mnist_dir, image_folder,
                                load_split, stratified_split)


def _png(path: Path, value: int, size: tuple[int, int] = (12, 10)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, value, value)).save(path)


@pytest.fixture()
def flat_folder(tmp_path: Path) -> Path:
    """3 classes (sorted: ant, bee, cat) with 4, 4 and 2 images; pixel value = 10 * label + index."""
    for label, (name, count) in enumerate((("cat", 2), ("ant", 4), ("bee", 4))):
        for i in range(count):
            _png(tmp_path / name / f"{i}.png", 10 * label + i)
    return tmp_path


def test_image_folder_sorts_classes_and_decodes_lazily(flat_folder):
    data = image_folder(flat_folder)
    assert data.classes == ["ant", "bee", "cat"]
    assert data.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 2
    image = data.images[0]
    assert image.dtype == torch.uint8 and tuple(image.shape) == (3, 10, 12)
    assert int(image[0, 0, 0]) == 10  # ant/0.png


def test_folder_split_is_stratified_deterministic_and_disjoint(flat_folder):
    train, test = load_split(str(flat_folder), test_fraction=0.5, seed=3)
    again_train, _ = load_split(str(flat_folder), test_fraction=0.5, seed=3)
    assert (len(train), len(test)) == (5, 5)
    assert sorted(test.labels.tolist()) == [0, 0, 1, 1, 2]
    assert again_train.images.items == train.images.items
    assert not set(train.images.items) & set(test.images.items)


def test_stratified_split_keeps_one_training_image_per_class():
    labels = np.array([0, 1, 1, 1])
    train, test = stratified_split(labels, test_fraction=0.9, seed=0)
    assert labels[train].tolist() == [0, 1] and labels[test].tolist() == [1, 1]


def test_predefined_train_val_folders_share_the_train_classes(tmp_path):
    for split, name in (("train", "a"), ("train", "b"), ("val", "b")):
        _png(tmp_path / split / name / "x.png", 5)
    train, test = load_split(str(tmp_path))
    assert train.classes == test.classes == ["a", "b"]
    assert test.labels.tolist() == [1]


def test_val_class_missing_from_train_is_an_error(tmp_path):
    _png(tmp_path / "train" / "a" / "x.png", 5)
    _png(tmp_path / "val" / "zebra" / "x.png", 5)
    with pytest.raises(DatasetError, match="zebra"):
        load_split(str(tmp_path))


def test_limit_caps_each_split(flat_folder):
    train, test = load_split(str(flat_folder), limit=3)
    assert (len(train), len(test)) == (3, 3)


def test_labelled_shards_skip_unlabelled_samples(tmp_path):
    samples = [(f"k{i}", _jpeg(i), "jpg", label) for i, label in enumerate([7, 3, None, 7, 3, 7])]
    write_shards(iter(samples), str(tmp_path / "s-%06d.tar"), 4)
    train, test = load_split(str(tmp_path / "s-{000000..000001}.tar"), test_fraction=0.34)
    assert train.classes == ["3", "7"]
    assert sorted(train.labels.tolist() + test.labels.tolist()) == [0, 0, 1, 1, 1]
    assert train.images[0].shape == (3, 8, 8)


def _jpeg(value: int) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (value * 20, 0, 0)).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_unlabelled_shards_are_refused(tmp_path):
    write_shards(iter([("a", _jpeg(1), "jpg", None)]), str(tmp_path / "u-%06d.tar"), 4)
    with pytest.raises(DatasetError, match=".cls"):
        load_split(str(tmp_path / "u-000000.tar"))


def test_unknown_source_names_the_accepted_kinds(tmp_path):
    with pytest.raises(FileNotFoundError, match="fashion-mnist"):
        load_split(str(tmp_path / "nothing_here"))


def test_missing_fashion_mnist_names_the_debian_package(tmp_path):
    with pytest.raises(MissingDatasetError, match="apt-get install dataset-fashion-mnist"):
        fashion_mnist("train", root=tmp_path)


def test_fashion_mnist_when_installed():
    try:
        fashion_mnist_dir()
    except MissingDatasetError as err:
        pytest.skip(str(err))
    images, labels = fashion_mnist("test", limit=50, seed=1)
    assert images.dtype == torch.uint8 and tuple(images.shape) == (50, 3, 28, 28)
    assert torch.equal(images[:, 0], images[:, 2]) and 0 <= labels.min() and labels.max() <= 9
    full_labels = fashion_mnist("test")[1]
    assert len(full_labels) == 10_000 and np.bincount(full_labels).tolist() == [1000] * 10
