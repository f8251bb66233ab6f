"""Fixtures: a small labelled image folder of real ImageNet photos (two different crops of each), the
real EfficientNet-Lite0 and the Debian Fashion-MNIST folder (skipped, with the reason, when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

CROP = 0.8  # each split sees a different 80% corner of the photo


def _crops(path: Path, side: int = 160) -> dict[str, Image.Image]:
    with Image.open(path) as img:
        img = img.convert("RGB")
        w, h = img.size
        cw, ch = int(w * CROP), int(h * CROP)
        boxes = {"train": (0, 0, cw, ch), "val": (w - cw, h - ch, w, h)}
        return {split: img.crop(box).resize((side, side), Image.BICUBIC) for split, box in boxes.items()}


def write_two_crop_folder(root: Path, photos) -> Path:
    """``root/{train,val}/<label>/<key>.jpg``: top-left crop for train, bottom-right for val."""
    for photo in photos:
        for split, crop in _crops(photo.path).items():
            folder = root / split / f"{photo.label:04d}"
            folder.mkdir(parents=True, exist_ok=True)
            crop.save(folder / f"{photo.key}.jpg", quality=90)
    return root


@pytest.fixture(scope="session")
def two_crop_folder(labelled_photos, tmp_path_factory) -> Path:
    return write_two_crop_folder(tmp_path_factory.mktemp("two_crops"), labelled_photos)


@pytest.fixture(scope="session")
def effnet():
    from eupe.eval.models import load_model
    from eupe.models.weights import MissingWeightsError

    try:
        return load_model("effnet_lite0")
    except MissingWeightsError as err:
        pytest.skip(str(err))


@pytest.fixture(scope="session")
def fashion() -> Path:
    """The installed Fashion-MNIST folder (`make fashion-mnist`); the test is skipped without it."""
    from eupe.eval.datasets import fashion_mnist_dir

    try:
        return fashion_mnist_dir()
    except FileNotFoundError as err:
        pytest.skip(str(err))
