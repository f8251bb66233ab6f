"""Fixtures for feature-store tests: real webdataset shards of the bundled photos, run helpers."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def corrupt_shard(tmp_path_factory, photos) -> str:
    """One shard whose second image is a truncated JPEG."""
    from eupe.assets import encode_jpeg
    from eupe.data.shards import write_shards

    out = tmp_path_factory.mktemp("corrupt")
    good = [encode_jpeg(p.path, 128) for p in photos[:3]]
    samples = [("good0", good[0], "jpg", None), ("broken", good[1][: len(good[1]) // 3], "jpg", None),
               ("good2", good[2], "jpg", None)]
    write_shards(samples, str(out / "bad-%06d.tar"), per_shard=10)
    return str(out / "bad-000000.tar")
