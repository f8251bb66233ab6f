"""Fixtures for feature-store tests: real webdataset shards of the bundled photos, run helpers."""

from __future__ import annotations

import pytest

from eupe.assets import write_photo_shards


@pytest.fixture(scope="session")
def photo_shards(tmp_path_factory, photos, labelled_photos) -> str:
    """12 real photos (downscaled JPEGs) in 3 shards; returns a brace pattern."""
    out = tmp_path_factory.mktemp("shards")
    write_photo_shards(out, (photos + labelled_photos)[:12], per_shard=4, max_side=160)
    return str(out / "photos-{000000..000002}.tar")


@pytest.fixture(scope="session")
def corrupt_shard(tmp_path_factory, photos) -> str:
    """One shard whose second image is a truncated JPEG."""
    from eupe.assets import encode_jpeg
    from eupe.data import write_shards

    out = tmp_path_factory.mktemp("corrupt")
    good = [encode_jpeg(p.path, 128) for p in photos[:3]]
    samples = [("good0", good[0], "jpg", None), ("broken", good[1][: len(good[1]) // 3], "jpg", None),
               ("good2", good[2], "jpg", None)]
    write_shards(samples, str(out / "bad-%06d.tar"), per_shard=10)
    return str(out / "bad-000000.tar")
