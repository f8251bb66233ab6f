"""Labelled image sets for evaluation, with a train/test split.

Sources (``load_split(data, ...)``):

* an image folder ``root/<class_name>/*.jpg|png`` (classes sorted -> labels 0..C-1), split
  deterministically per class by ``test_fraction`` and ``seed``; or a folder with ``train/`` and
  ``val/`` (or ``test/``) subfolders laid out the same way, used as given;
* webdataset shards (a path or brace pattern ending in ``.tar``) whose samples carry a ``.cls``
  label; unlabelled samples are skipped; split like a folder;
* ``fashion-mnist``: the Debian package ``dataset-fashion-mnist`` (60k train / 10k test
  28x28 grey images, MIT), read from ``/usr/share/datasets/fashion-mnist``.

Images stay encoded (or compact) until used: ``LabelledImages.images[i]`` decodes to uint8
``[3, H, W]``. ``limit`` keeps a seeded random subset of at most ``limit`` images per split.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from eupe.data.shards import ShardReader, expand_shards, index_shards
from eupe.eval.protocol import FASHION_MNIST
from eupe.views.source import decode_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
_TEST_DIRS = ("val", "test")


class DatasetError(ValueError):
    """A dataset that exists but cannot be used for evaluation (no labels, empty, mismatched)."""


class MissingDatasetError(FileNotFoundError):
    """A dataset that is not on this machine; the message says how to get it."""


class LazyImages(Sequence):
    """A sequence of images decoded on access by ``load(item)`` -> uint8 ``[3, H, W]``."""

    def __init__(self, items: Sequence, load: Callable[[object], torch.Tensor]) -> None:
        self.items = items
        self.load = load

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.load(self.items[i])

    def take(self, indices: Sequence[int]) -> LazyImages:
        """The images at ``indices``, in that order (nothing is decoded)."""
        return LazyImages([self.items[int(i)] for i in indices], self.load)


@dataclass
class LabelledImages:
    """Images (uint8 ``[3, H, W]`` on access), integer labels and the class names they index."""

    images: LazyImages
    labels: np.ndarray
    classes: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: Sequence[int]) -> LabelledImages:
        """The images at ``indices``, in that order."""
        indices = np.asarray(indices, dtype=np.int64)
        return LabelledImages(self.images.take(indices), self.labels[indices], self.classes)


def _identity(image: torch.Tensor) -> torch.Tensor:
    return image


def _read_file(path: Path) -> torch.Tensor:
    return decode_image(Path(path).read_bytes())


# -- image folders ------------------------------------------------------------------------------

def _class_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def image_folder(root: str | Path, classes: Sequence[str] | None = None) -> LabelledImages:
    """``root/<class_name>/**/*.jpg|png``; labels index ``classes`` (default: sorted subfolders)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} not found")
    names = list(classes) if classes is not None else [d.name for d in _class_dirs(root)]
    index = {name: i for i, name in enumerate(names)}
    files, labels = [], []
    for folder in _class_dirs(root):
        if folder.name not in index:
            raise DatasetError(f"{folder}: class {folder.name!r} does not occur in the training split")
        found = _image_files(folder)
        files += found
        labels += [index[folder.name]] * len(found)
    if not files:
        raise DatasetError(f"{root}: no images in class subfolders (expected {root}/<class>/*.jpg|png)")
    return LabelledImages(LazyImages(files, _read_file), np.asarray(labels, dtype=np.int64), names)


def _predefined_split(root: Path) -> tuple[LabelledImages, LabelledImages] | None:
    test_dir = next((root / d for d in _TEST_DIRS if (root / d).is_dir()), None)
    if not (root / "train").is_dir() or test_dir is None:
        return None
    train = image_folder(root / "train")
    return train, image_folder(test_dir, classes=train.classes)


# -- webdataset shards --------------------------------------------------------------------------

def shard_images(pattern: str) -> LabelledImages:
    """Labelled samples (``.cls``) of webdataset shards; class names are the label numbers."""
    index = index_shards(expand_shards(pattern))
    keep = np.flatnonzero(index.label >= 0)
    if len(keep) == 0:
        raise DatasetError(f"{pattern}: no sample has a .cls label ({len(index)} images indexed)")
    values = np.unique(index.label[keep])
    labels = np.searchsorted(values, index.label[keep]).astype(np.int64)
    reader = ShardReader(index)
    images = LazyImages(list(keep), lambda i: decode_image(reader.read(int(i))))
    return LabelledImages(images, labels, [str(v) for v in values])


# -- Fashion-MNIST (Debian package) -------------------------------------------------------------

def _idx_array(path: Path) -> np.ndarray:
    """An IDX (``*-ubyte.gz``) file as a uint8 array of its stated shape."""
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def fashion_mnist_dir(root: str | Path | None = None) -> Path:
    """Where the Fashion-MNIST files are; MissingDatasetError naming the package when absent."""
    root = Path(root) if root is not None else FASHION_MNIST_DIR
    if not (root / "train-images-idx3-ubyte.gz").is_file():
        raise MissingDatasetError(
            f"Fashion-MNIST not found in {root}: install the Debian package "
            "(apt-get install dataset-fashion-mnist)"
        )
    return root


def fashion_mnist(split: str = "train", limit: int | None = None, seed: int = 0,
                  root: str | Path | None = None) -> tuple[torch.Tensor, np.ndarray]:
    """Fashion-MNIST ``split`` ("train": 60k, "test": 10k) as (uint8 ``[N, 3, 28, 28]``, labels).

    Grey images are repeated over the 3 channels (a view, no copy). ``limit`` keeps a seeded
    random subset. Raises MissingDatasetError when the Debian package is not installed.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    prefix = "train" if split == "train" else "t10k"
    folder = fashion_mnist_dir(root)
    images = _idx_array(folder / f"{prefix}-images-idx3-ubyte.gz")
    labels = _idx_array(folder / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
    keep = subsample(len(labels), limit, seed)
    pixels = torch.from_numpy(images[keep].copy())
    return pixels[:, None].expand(-1, 3, -1, -1), labels[keep]


def _fashion_split(limit: int | None, seed: int) -> tuple[LabelledImages, LabelledImages]:
    classes = list(FASHION_MNIST_CLASSES)
    parts = [fashion_mnist(split, limit, seed) for split in ("train", "test")]
    return tuple(LabelledImages(LazyImages(images, _identity), labels, classes) for images, labels in parts)


# -- splitting ----------------------------------------------------------------------------------

def subsample(n: int, limit: int | None, seed: int) -> np.ndarray:
    """Sorted indices of a seeded random subset of ``range(n)`` of size ``min(n, limit)``."""
    if limit is None or limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices: per class, a seeded ``test_fraction`` goes to test, at least one to train."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_test = min(int(round(len(members) * test_fraction)), len(members) - 1)
        test += members[:n_test].tolist()
        train += members[n_test:].tolist()
    return np.sort(np.asarray(train, dtype=np.int64)), np.sort(np.asarray(test, dtype=np.int64))


def _split(full: LabelledImages, test_fraction: float, seed: int) -> tuple[LabelledImages, LabelledImages]:
    train, test = stratified_split(full.labels, test_fraction, seed)
    if len(test) == 0:
        raise DatasetError(f"no test images: every class has a single image ({len(full)} images)")
    return full.subset(train), full.subset(test)


def _limit(part: LabelledImages, limit: int | None, seed: int) -> LabelledImages:
    return part if limit is None else part.subset(subsample(len(part), limit, seed))


def _load_unsplit_or_split(data: str, test_fraction: float, seed: int) -> tuple[LabelledImages, LabelledImages]:
    path = Path(data)
    if path.is_dir():
        return _predefined_split(path) or _split(image_folder(path), test_fraction, seed)
    if ".tar" in data:
        return _split(shard_images(data), test_fraction, seed)
    raise FileNotFoundError(
        f"--data {data!r}: not a folder, a webdataset shard pattern (*.tar) or {FASHION_MNIST!r}"
    )


def load_split(data: str, test_fraction: float = 0.5, limit: int | None = None,
               seed: int = 0) -> tuple[LabelledImages, LabelledImages]:
    """(train, test) labelled images from a folder, shard pattern or ``fashion-mnist``.

    Predefined splits (``train/`` + ``val/`` folders, Fashion-MNIST) are kept; other sources are
    split per class with ``test_fraction`` and ``seed``. ``limit`` caps each split (seeded subset).
    """
    if data == FASHION_MNIST:
        return _fashion_split(limit, seed)
    train, test = _load_unsplit_or_split(data, test_fraction, seed)
    return _limit(train, limit, seed), _limit(test, limit, seed + 1)
