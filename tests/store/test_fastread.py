"""The direct shard reader returns exactly what zarr returns, and detects corruption."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import zarr
from store_helpers import run_extract, tiny_args

from eupe.store.codecs.registry import get_codec
from eupe.store.fastread import ShardedArrayReader, Unsupported
from eupe.store.layout import StoreIntegrityError
from eupe.store.store import FeatureStore, compressors
from eupe.store.zarr_codecs import FeatureCodec


@pytest.mark.parametrize("codec", ["fp16", "int8", "compact"])
def test_fast_reads_equal_zarr_reads(tmp_path, photo_shards, codec):
    out = str(tmp_path / "s.zarr")
    assert run_extract(*tiny_args(photo_shards, out, "--codec", codec, "--limit", "5")) == 0
    group = FeatureStore.open(out).teacher("dinov3_hplus")
    arrays = group.reader.target_arrays(64)
    assert set(group.reader.fast_readers(64)) == {"summary", "patch"}
    for row in range(5):
        for view in range(2):
            decoded = group.reader.decode(group.reader.read_parts(row, 64, view), 64)  # the direct reader's components
            for kind, array in arrays.items():
                expected = array[row, view]  # zarr, decoding through the eupe.features codec
                assert decoded[kind].dtype == expected.dtype == np.float32
                np.testing.assert_array_equal(decoded[kind], expected)
    np.testing.assert_array_equal(group.reader.targets(3, 64, 1)["patch"], group.reader.targets(3, 64)["patch"][1])


def _feature_array(path, rows: int, shards: int = 2) -> zarr.Array:
    """A float32 [rows, 2, 3, 1, 5] target array in the store's layout (fp16 codec: exact for fp16 values)."""
    group = zarr.open_group(str(path), mode="w")
    return group.create_array("x", shape=(rows, 2, 3, 1, 5), dtype="float32", shards=(shards, 2, 3, 1, 5),
                              chunks=(1, 1, 3, 1, 5), serializer=FeatureCodec(codec=get_codec("fp16"),
                                                                              view_shape=(3, 1, 5)),
                              compressors=compressors(), fill_value=np.nan)


def _values(reader, row: int, view: int) -> np.ndarray:
    parts = reader.read(row, view)
    assert list(parts) == ["values"]
    return parts["values"].reshape(3, 1, 5)  # [T, D] -> the view's (h, w, D)


def test_unwritten_chunks_are_refused_and_corruption_raises(tmp_path):
    array = _feature_array(tmp_path / "a.zarr", 4)
    values = np.arange(2 * 2 * 15, dtype=np.float32).reshape(2, 2, 3, 1, 5)
    array[0:2] = values  # through zarr: the codec's encode path
    reader = ShardedArrayReader(array)
    np.testing.assert_array_equal(_values(reader, 1, 1), values[1, 1])
    with pytest.raises(StoreIntegrityError, match="missing"):  # never zeros for a shard never written
        reader.read(3, 0)
    assert np.isnan(array[3, 0]).all()  # plain zarr: the NaN fill value, never zeros
    shard = tmp_path / "a.zarr" / "x" / "c" / "0" / "0" / "0" / "0" / "0"
    data = bytearray(shard.read_bytes())
    data[10] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum mismatch"):
        ShardedArrayReader(array).read(0, 0)
    with pytest.raises(ValueError, match="checksum"):  # plain zarr's crc32c codec catches it too
        zarr.open_array(str(tmp_path / "a.zarr" / "x"))[0, 0]


def test_other_layouts_are_refused():
    group = zarr.open_group(store=zarr.storage.MemoryStore(), mode="w")
    with pytest.raises(Unsupported):
        ShardedArrayReader(group.create_array("m", shape=(2, 2, 3), dtype="int8", chunks=(1, 1, 3)))


def _sharded(tmp_path, rows: int = 6) -> tuple[zarr.Array, np.ndarray]:
    array = _feature_array(tmp_path / "b.zarr", rows)
    values = (np.arange(rows * 2 * 15) % 251 - 125).astype(np.float32).reshape(rows, 2, 3, 1, 5)
    array[:] = values
    return array, values


def test_a_shard_is_opened_once_and_its_descriptors_are_bounded(tmp_path):
    from eupe.store.fastread import OpenShards

    array, values = _sharded(tmp_path)
    files = OpenShards(capacity=2)
    reader = ShardedArrayReader(array, files)
    for _ in range(3):
        for row in (0, 1, 2, 3):  # shards 0 and 1, read three times: opened once each
            for view in (0, 1):
                out = reader.read(row, view)["values"]
                np.testing.assert_array_equal(out.reshape(3, 1, 5), values[row, view])
                assert out.flags.writeable  # decompressed into a fresh array, usable by torch.from_numpy
    assert files.opened == 2 and len(files._fds) == 2
    np.testing.assert_array_equal(_values(reader, 5, 1), values[5, 1])  # a third shard evicts the oldest descriptor
    assert files.opened == 3 and len(files._fds) == 2
    np.testing.assert_array_equal(_values(reader, 0, 0), values[0, 0])  # reopened, its index still cached
    assert files.opened == 4
    files.clear()


def test_forget_rereads_a_rewritten_shard(tmp_path):
    array, values = _sharded(tmp_path)
    reader = ShardedArrayReader(array)
    np.testing.assert_array_equal(_values(reader, 0, 0), values[0, 0])
    array[0:2] = -values[0:2]  # zarr writes a new file and renames it over the old one
    # the path's file now, not the open descriptor's: what the integrity checks look at is what is read
    np.testing.assert_array_equal(_values(reader, 0, 0), -values[0, 0])
    reader.forget(0)
    np.testing.assert_array_equal(_values(reader, 0, 0), -values[0, 0])


def test_a_truncated_shard_raises(tmp_path):
    array, _ = _sharded(tmp_path)
    shard = tmp_path / "b.zarr" / "x" / "c" / "1" / "0" / "0" / "0" / "0"
    shard.write_bytes(shard.read_bytes()[:20])  # same file, cut short: its index is gone
    with pytest.raises(ValueError, match="checksum mismatch in shard index"):
        ShardedArrayReader(array).read(2, 0)


def test_a_replaced_shard_file_is_read_anew(tmp_path):
    """A cached descriptor and index serve only the file they were read from: a shard replaced since
    (re-extracted, rewritten by another process) is reopened, not read stale."""
    from eupe.store.fastread import OpenShards

    array, values = _sharded(tmp_path)
    files = OpenShards()
    reader = ShardedArrayReader(array, files)
    np.testing.assert_array_equal(_values(reader, 0, 0), values[0, 0])
    other = _feature_array(tmp_path / "other.zarr", 6)
    other[:] = values + 1000
    shard = reader._shard_path(0)
    replacement = tmp_path / "replacement"
    replacement.write_bytes((Path(other.store.root) / other.path / shard.relative_to(reader.base)).read_bytes())
    os.replace(replacement, shard)  # a new file at the same path, as an atomic rewrite leaves it
    np.testing.assert_array_equal(_values(reader, 0, 0), values[0, 0] + 1000)
    assert files.opened == 2
    shard.unlink()
    with pytest.raises(StoreIntegrityError, match="is missing"):
        reader.read(0, 1)
    files.clear()
