"""The direct shard reader returns exactly what zarr returns, and detects corruption."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from eupe.store.fastread import ShardedArrayReader, Unsupported
from eupe.store.layout import StoreIntegrityError
from eupe.store.store import FeatureStore, compressors

from store_helpers import run_extract, tiny_args


@pytest.mark.parametrize("codec", ["fp16", "int8", "compact"])
def test_fast_reads_equal_zarr_reads(tmp_path, photo_shards, codec):
    out = str(tmp_path / "s.zarr")
    assert run_extract(*tiny_args(photo_shards, out, "--codec", codec, "--limit", "5")) == 0
    group = FeatureStore.open(out).teacher("dinov3_hplus")
    arrays = group.target_arrays(64)
    assert group.fast_readers(64) is not None
    for row in range(5):
        for view in range(2):
            fast = group.read_parts(row, 64, view)
            for kind, parts in arrays.items():
                for name, array in parts.items():
                    expected = array[row, view]
                    assert fast[kind][name].dtype == expected.dtype
                    np.testing.assert_array_equal(fast[kind][name], expected)
    np.testing.assert_array_equal(group.targets(3, 64, 1)["patch"], group.targets(3, 64)["patch"][1])


def test_unwritten_chunks_are_refused_and_corruption_raises(tmp_path):
    group = zarr.open_group(str(tmp_path / "a.zarr"), mode="w")
    array = group.create_array("x", shape=(4, 2, 3, 5), dtype="float16", shards=(2, 2, 3, 5),
                               chunks=(1, 1, 3, 5), compressors=compressors(), fill_value=0)
    values = np.arange(2 * 2 * 15, dtype=np.float16).reshape(2, 2, 3, 5)
    array[0:2] = values
    reader = ShardedArrayReader(array)
    np.testing.assert_array_equal(reader.read(1, 1), values[1, 1])
    with pytest.raises(StoreIntegrityError, match="missing"):  # never zeros for a shard never written
        reader.read(3, 0)
    shard = tmp_path / "a.zarr" / "x" / "c" / "0" / "0" / "0" / "0"
    data = bytearray(shard.read_bytes())
    data[10] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum mismatch"):
        ShardedArrayReader(array).read(0, 0)


def test_other_layouts_are_refused():
    group = zarr.open_group(store=zarr.storage.MemoryStore(), mode="w")
    with pytest.raises(Unsupported):
        ShardedArrayReader(group.create_array("m", shape=(2, 2, 3), dtype="int8", chunks=(1, 1, 3)))
