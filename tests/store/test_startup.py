"""Start-up reads: a teacher's manifest read once per open, image statuses consolidated once.

``FeatureStore.image_status`` reads the statuses from the record extraction (or a trainer) stored,
in one file, only while that record covers exactly the store's current done set and its values
are intact; otherwise it checks and reads every done chunk's status file, as before. Real stores
extracted by the CLI from real photo shards (one truncated JPEG gives a FAILED image).
"""

from __future__ import annotations

import os
import shutil
import sys

import numpy as np
import pytest
import zarr

from eupe.distill.stats import ensure_store_stats, stored_stats
from eupe.distill.targets import missing_images
from eupe.store.layout import FAILED, OK, PENDING
from eupe.store.store import FeatureStore

from store_helpers import cache_json, run_extract, tiny_args

TEACHER = "dinov3_hplus"


class _Opens:
    """Files opened under a directory while ``active`` (audit event ``open``; hooks cannot be removed)."""

    root, active, count = "", False, 0

    @classmethod
    def hook(cls, event: str, args: tuple) -> None:
        if cls.active and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
            cls.count += os.path.abspath(os.fsdecode(args[0])).startswith(cls.root)

    @classmethod
    def during(cls, root: str, work):
        cls.root, cls.count, cls.active = os.path.abspath(root), 0, True
        try:
            result = work()
        finally:
            cls.active = False
        return result, cls.count


sys.addaudithook(_Opens.hook)


@pytest.fixture(scope="module")
def data(photo_shards, corrupt_shard) -> str:
    return f"{photo_shards}::{corrupt_shard}"


@pytest.fixture(scope="module")
def extracted(tmp_path_factory, data) -> str:
    out = str(tmp_path_factory.mktemp("startup") / "store.zarr")
    assert run_extract(*tiny_args(data, out)) == 0
    return out


@pytest.fixture
def store_path(extracted, tmp_path) -> str:
    """A private copy of the extracted store (tests change it)."""
    return shutil.copytree(extracted, tmp_path / "store.zarr")


def _without_record(path):
    shutil.rmtree(path / "startup")  # as a store extracted before the record existed
    return path


def test_a_finished_extraction_stores_the_record_and_info_only_reads(store_path):
    fresh = FeatureStore.open(store_path)
    fresh.image_status(TEACHER)
    assert fresh.progress(TEACHER).consolidated  # written at the end of the extraction
    _without_record(store_path)
    cache_json(["info", str(store_path), "--json"])
    assert not (store_path / "startup").exists()  # a read command writes nothing


def _reference(path) -> np.ndarray:
    """Statuses read the slow way: every done chunk's status file checked against its manifest."""
    return FeatureStore.open(path).teacher(TEACHER).reader.status()


def test_a_saved_record_is_read_in_one_file_by_a_fresh_open(store_path):
    _without_record(store_path)
    reference = _reference(store_path)
    assert (reference == FAILED).sum() == 1 and (reference == OK).sum() == len(reference) - 1
    cold = FeatureStore.open(store_path)
    cold.teacher(TEACHER)  # opening the group reads its arrays' metadata: not counted
    slow, slow_opens = _Opens.during(store_path, lambda: cold.image_status(TEACHER))
    assert not FeatureStore.open(store_path).progress(TEACHER).consolidated  # nothing stored it yet
    FeatureStore.open(store_path).image_status(TEACHER, save=True)  # what a trainer's main process does
    info = cache_json(["info", str(store_path), "--json"])["teachers"][TEACHER]
    assert (info["ok"], info["failed"]) == ((reference == OK).sum(), 1)
    store = FeatureStore.open(store_path)
    store.teacher(TEACHER)
    fast, fast_opens = _Opens.during(store_path, lambda: store.image_status(TEACHER))
    assert store.progress(TEACHER).consolidated
    np.testing.assert_array_equal(fast, reference)
    np.testing.assert_array_equal(slow, reference)
    chunks = store.num_chunks
    assert fast_opens <= chunks + 6, fast_opens  # the manifest's files (one per chunk) and the record's few
    expected = store.teacher(TEACHER).reader.failures(reference)
    assert [key for key, _ in expected] == ["broken"]
    assert store.failures(TEACHER) == cold.failures(TEACHER) == expected
    assert info["failed_inputs"] == [{"key": "broken", "reason": expected[0][1]}]
    assert slow_opens >= 3 * chunks  # the manifest, then per chunk its row, its status file checked and read
    np.testing.assert_array_equal(store.usable_rows([TEACHER]), np.flatnonzero(reference == OK))


def test_a_record_of_another_done_set_is_not_used(store_path, data):
    FeatureStore.open(store_path, mode="a").teacher(TEACHER).writer.reset_chunk(1)  # chunk 1 is no longer done
    store = FeatureStore.open(store_path)
    status = store.image_status(TEACHER)
    assert not store.progress(TEACHER).consolidated
    np.testing.assert_array_equal(status, _reference(store_path))
    rows = store.chunk_rows(1)
    assert (status[rows.start:rows.stop] == PENDING).all() and (status[: rows.start] != PENDING).all()
    assert missing_images(store, [TEACHER]) == {TEACHER: len(rows)}
    assert run_extract(*tiny_args(data, str(store_path))) == 0  # extracts chunk 1 again
    np.testing.assert_array_equal(FeatureStore.open(store_path).image_status(TEACHER), _reference(store_path))


def test_an_edited_or_damaged_record_is_not_used(store_path):
    reference = _reference(store_path)
    record = zarr.open_group(str(store_path), mode="r+")[f"startup/{TEACHER}/status"]
    edited = reference.copy()
    edited[0] = FAILED  # attributes kept: the values digest no longer matches
    record[:] = edited
    store = FeatureStore.open(store_path)
    np.testing.assert_array_equal(store.image_status(TEACHER), reference)
    assert not store.progress(TEACHER).consolidated
    store.image_status(TEACHER, save=True)  # rewritten; an edited failure reason is not used either
    zarr.open_group(str(store_path), mode="r+")[f"startup/{TEACHER}/error"][0] = "edited"
    edited_reason = FeatureStore.open(store_path)
    assert edited_reason.failures(TEACHER) == edited_reason.teacher(TEACHER).reader.failures(reference)
    assert not edited_reason.progress(TEACHER).consolidated
    store = FeatureStore.open(store_path)
    store.image_status(TEACHER, save=True)  # rewritten, then a flipped byte in its status file
    (chunk_file,) = [p for p in (store_path / "startup" / TEACHER / "status").rglob("*")
                     if p.is_file() and p.name != "zarr.json"]
    data = bytearray(chunk_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk_file.write_bytes(bytes(data))
    again = FeatureStore.open(store_path)
    np.testing.assert_array_equal(again.image_status(TEACHER), reference)
    assert not again.progress(TEACHER).consolidated


def test_reading_without_save_writes_nothing(store_path):
    store = FeatureStore.open(_without_record(store_path))
    np.testing.assert_array_equal(store.usable_rows([TEACHER]), np.flatnonzero(_reference(store_path) == OK))
    assert not (store_path / "startup").exists()


def test_ensure_store_stats_returns_what_stored_stats_reads(store_path):
    store = FeatureStore.open(store_path)
    computed = ensure_store_stats(store, TEACHER, say=lambda _t: None)  # absent: computed and saved
    loaded = ensure_store_stats(FeatureStore.open(store_path), TEACHER, read_only=True)  # present: loaded
    stored = stored_stats(FeatureStore.open(store_path), TEACHER)
    assert set(computed) == set(stored) == {64}
    for name, value in stored[64].items():
        assert value.dtype == computed[64][name].dtype == loaded[64][name].dtype
        np.testing.assert_array_equal(computed[64][name].numpy(), value.numpy())
        np.testing.assert_array_equal(loaded[64][name].numpy(), value.numpy())


def test_a_keyless_shard_index_reads_the_same_bytes(extracted):
    from eupe.data.shards import ShardReader

    store = FeatureStore.open(extracted)
    full, keyless = store.shard_index(), store.shard_index(keys=False)
    assert keyless.keys is None and len(keyless) == len(full) == store.num_images
    with ShardReader(full) as a, ShardReader(keyless) as b:
        for row in range(len(full)):
            assert a.read(row) == b.read(row) and len(a.read(row)) == int(full.size[row]) > 0
    assert keyless.head(3).keys is None and len(keyless.head(3)) == 3
    with pytest.raises(ValueError, match="without its keys"):
        keyless.keys_sha256()
