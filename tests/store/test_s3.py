"""Feature stores on object storage: the same CLI, the same guarantees, against a real S3 server.

A moto server on 127.0.0.1 (``s3_server.local_s3``) is the endpoint; s3fs and zarr reach it over
HTTP exactly as they would reach AWS, configured by ``AWS_ENDPOINT_URL`` like a user's setup.
Covered: extract -> info -> verify -> stats -> targets equal a local store's bit for bit; a deleted
or altered chunk object fails ``verify`` and every read; killed extractions (creation, teacher
creation, mid-chunk, after a chunk) resume to the identical store; two ranks running at once.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

pytest.importorskip("moto.server", reason="pip install -e '.[test]' (moto[server]) for the S3 tests")
pytest.importorskip("s3fs", reason="pip install -e '.[test]' (s3fs) for the S3 tests")

from s3_server import local_s3  # noqa: E402
from store_helpers import (cache_json, cache_json_rc, cli_subprocess, run_extract, teacher_arrays,  # noqa: E402
                           tiny_args)

from eupe.store.fastread import RemoteShardReader, ShardedArrayReader  # noqa: E402
from eupe.store.layout import FAILPOINT_ENV, StoreIntegrityError, StoreMismatchError  # noqa: E402
from eupe.store.manifest import chunk_key  # noqa: E402
from eupe.store.stats import load_stats  # noqa: E402
from eupe.store.store import FeatureStore  # noqa: E402

TEACHER = "dinov3_hplus"
BUCKET = "eupe-test"


@pytest.fixture(scope="module")
def s3():
    with local_s3(BUCKET) as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def local_ref(tmp_path_factory, photo_shards) -> str:
    out = str(tmp_path_factory.mktemp("s3ref") / "ref.zarr")
    assert run_extract(*tiny_args(photo_shards, out)) == 0
    return out


@pytest.fixture(scope="module")
def remote(s3, photo_shards) -> str:
    url = f"s3://{BUCKET}/ref.zarr"
    assert run_extract(*tiny_args(photo_shards, url)) == 0
    return url


def _fs():
    import s3fs

    return s3fs.S3FileSystem()


def _same_arrays(expected: str, got: str) -> None:
    want, have = (({k: v for k, v in teacher_arrays(p, TEACHER).items() if "/stats/" not in k}) for p in (expected, got))
    assert sorted(have) == sorted(want)
    for name in want:
        np.testing.assert_array_equal(have[name], want[name], err_msg=name)


def test_round_trip_equals_the_local_store_bit_for_bit(remote, local_ref):
    _same_arrays(local_ref, remote)  # data, views, status and manifests (checksums) alike
    info = cache_json(["info", "--json", remote])["teachers"][TEACHER]
    assert info["complete"] and info["ok"] == 12 and info["chunks_done"] == 6
    report = cache_json(["verify", "--json", remote])
    assert report["ok"] and report["teachers"][TEACHER]["corrupt"] == []
    local, there = FeatureStore.open(local_ref).teacher(TEACHER), FeatureStore.open(remote).teacher(TEACHER)
    assert isinstance(there.reader.fast_readers(64)["patch"], RemoteShardReader)  # range requests
    assert isinstance(local.reader.fast_readers(64)["patch"], ShardedArrayReader)  # pread
    for row in (0, 5, 11):
        for view in (0, 1):
            a, b = local.reader.targets(row, 64, view), there.reader.targets(row, 64, view)
            batch = there.reader.decode(there.reader.read_parts(row, 64, slice(view, view + 1)), 64)  # the batch path
            assert b["patch"].shape == (4, 4, 64) and b["patch"].any()
            for kind, array in there.reader.target_arrays(64).items():
                np.testing.assert_array_equal(b[kind], a[kind])
                np.testing.assert_array_equal(b[kind], batch[kind][0])
                np.testing.assert_array_equal(b[kind], array[row, view])  # plain zarr over S3 decodes alike
    from eupe.cache_tools.cli import main

    assert main(["stats", remote]) == 0 and main(["stats", local_ref]) == 0
    got = load_stats(FeatureStore.open(remote).teacher(TEACHER), 64)
    want = load_stats(FeatureStore.open(local_ref).teacher(TEACHER), 64)
    assert got is not None and want is not None
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def _object(url: str, array: str, chunk: int) -> str:
    group = FeatureStore.open(url).teacher(TEACHER)
    return f"{url[len('s3://'):]}/{chunk_key(group.array(array), chunk)}"


def test_deleted_or_altered_chunk_objects_fail_verify_and_reads(remote):
    fs = _fs()
    url = f"s3://{BUCKET}/damaged.zarr"
    fs.copy(remote[len("s3://"):], url[len("s3://"):], recursive=True)
    assert cache_json(["verify", "--json", url])["ok"]
    fs.rm(_object(url, "r64/patch", 4))  # images 8, 9
    summary = _object(url, "r64/summary", 1)  # images 2, 3
    data = bytearray(fs.cat_file(summary))
    data[len(data) // 2] ^= 0xFF
    fs.pipe_file(summary, bytes(data))
    rc, report = cache_json_rc(["verify", "--json", url])
    corrupt = {(p["array"], p["chunk"]): p["error"] for p in report["teachers"][TEACHER]["corrupt"]}
    assert rc == 1 and not report["ok"]
    assert corrupt == {(f"teachers/{TEACHER}/r64/patch", 4): "file is missing",
                       (f"teachers/{TEACHER}/r64/summary", 1):
                           "checksum differs from the one recorded when it was written (moved, swapped or altered)"}
    group = FeatureStore.open(url).teacher(TEACHER)
    with pytest.raises(StoreIntegrityError, match="missing"):
        group.reader.targets(8, 64, 0)  # never zeros
    refused = []
    for row, view in ((2, 0), (2, 1), (3, 0), (3, 1)):  # the altered byte lies in one view's inner chunk
        try:
            group.reader.targets(row, 64, view)
        except ValueError as err:  # zarr's crc32c codec: "Stored and computed checksum do not match"
            refused.append(str(err))
    assert len(refused) == 1 and "checksum" in refused[0], refused
    with pytest.raises(StoreIntegrityError, match="missing"):
        group.reader.read_parts(slice(0, 12), 64)  # the whole-chunk path of stats
    assert group.reader.targets(0, 64, 0)["patch"].any()  # undamaged chunks still read


def _killed(photo_shards: str, url: str, point: str) -> None:
    os.environ[FAILPOINT_ENV] = point
    try:
        proc = cli_subprocess(["extract", *tiny_args(photo_shards, url)], stderr=-1, text=True)
    finally:
        del os.environ[FAILPOINT_ENV]
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == -9, (point, err[-2000:])


@pytest.mark.parametrize("points", [
    ("teacher-fingerprint", "chunk-done"),
    pytest.param(("store-fingerprint", "chunk-data"), marks=pytest.mark.slow),
])
def test_killed_extractions_resume_to_the_identical_store(s3, photo_shards, local_ref, points):
    """SIGKILL at creation (before a fingerprint, the last write) and at a chunk, then a plain re-run."""
    url = f"s3://{BUCKET}/killed-{points[0]}.zarr"
    creation, chunk = points
    _killed(photo_shards, url, creation)
    if creation == "store-fingerprint":
        with pytest.raises(StoreIntegrityError, match="creation was interrupted"):
            FeatureStore.open(url)
    else:
        with pytest.raises(StoreIntegrityError, match="no identity fingerprint"):
            FeatureStore.open(url).teacher(TEACHER)
    _killed(photo_shards, url, chunk)
    done = FeatureStore.open(url).teacher(TEACHER).chunks.counts()["chunks_done"]
    # chunk-data kills before any completion record; chunk-done after the first one (a second writer
    # thread may have recorded its chunk just before), never after all 6
    assert (done == 0) if chunk == "chunk-data" else (1 <= done < 6)
    assert run_extract(*tiny_args(photo_shards, url)) == 0
    _same_arrays(local_ref, url)
    assert cache_json(["verify", "--json", url])["ok"]


def test_two_ranks_at_once_fill_one_store(s3, photo_shards, local_ref):
    """Rank 1 starts first and waits for rank 0 to create the store and the teacher group."""
    url = f"s3://{BUCKET}/ranks.zarr"
    procs = [cli_subprocess(["extract", *tiny_args(photo_shards, url, "--rank", str(r), "--world-size", "2")],
                            stderr=-1, text=True) for r in (1, 0)]
    results = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in results]
    _same_arrays(local_ref, url)


def test_a_creation_starting_between_the_two_looks_is_waited_for_not_refused(s3, monkeypatch):
    """A rank looks for the store, finds no root group, lists the prefix: if another rank's creation
    wrote its root group in between, the prefix is not empty but holds a store being created -- it
    must be seen as such (absent, to wait for), never refused as foreign objects."""
    import zarr

    from eupe.store import store as store_module

    url = f"s3://{BUCKET}/race.zarr"
    listing = store_module._remote_prefix_empty

    def creation_begins_first(where: str) -> bool:  # rank 0 writes its first object before this rank lists
        zarr.open_group(where, mode="w", attributes={"format": store_module.STORE_FORMAT, "creating": True})
        return listing(where)
    monkeypatch.setattr(store_module, "_remote_prefix_empty", creation_begins_first)
    assert not FeatureStore.exists(url)  # being created: wait for it
    monkeypatch.setattr(store_module, "_remote_prefix_empty", listing)
    _fs().pipe(f"{BUCKET}/foreign.zarr/notes.txt", b"a user's file")
    with pytest.raises(StoreMismatchError, match="already holds objects and is not an eupe feature store"):
        FeatureStore.exists(f"s3://{BUCKET}/foreign.zarr")
    assert _fs().cat(f"{BUCKET}/foreign.zarr/notes.txt") == b"a user's file"


def test_a_rank_without_rank0_stops_with_one_line(s3, photo_shards, capsys, monkeypatch):
    monkeypatch.setenv("EUPE_REMOTE_WAIT_S", "1")
    url = f"s3://{BUCKET}/alone.zarr"
    assert run_extract(*tiny_args(photo_shards, url, "--rank", "1", "--world-size", "2")) == 2
    err = capsys.readouterr().err
    assert "Error: waited 1 s for rank 0 to create the store" in err and "Traceback" not in err
    assert not _fs().exists(url[len("s3://"):])  # nothing was written


class _Targets(torch.utils.data.Dataset):
    """Reads through a store opened in the parent process, as the trainer's dataset does."""

    def __init__(self, url: str) -> None:
        self.group = FeatureStore.open(url).teacher(TEACHER)
        self.group.reader.targets(0, 64, 0)  # the parent's client is in use before the fork

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> np.ndarray:
        return self.group.reader.targets(i * 3, 64, i % 2)["patch"]


def test_dataloader_workers_forked_from_an_open_remote_store_read_it(remote):
    """A forked worker gets a fresh S3 client (the parent's is bound to the parent's event loop)."""
    dataset = _Targets(remote)
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=1, multiprocessing_context="fork",
                                         timeout=60)
    got = list(loader)
    for i, patch in enumerate(got):
        np.testing.assert_array_equal(patch.numpy(), dataset[i])


def test_a_prefix_holding_other_objects_is_never_written(s3, photo_shards, capsys):
    fs = _fs()
    fs.pipe_file(f"{BUCKET}/mine/notes.txt", b"my own data")
    assert run_extract(*tiny_args(photo_shards, f"s3://{BUCKET}/mine")) == 2
    err = capsys.readouterr().err
    assert "Error: --out s3://eupe-test/mine already holds objects" in err and "Traceback" not in err
    assert fs.ls(f"{BUCKET}/mine", detail=False) == [f"{BUCKET}/mine/notes.txt"]
    assert fs.cat_file(f"{BUCKET}/mine/notes.txt") == b"my own data"


def test_two_ranks_grow_a_remote_store_like_a_local_one(s3, photo_shards, tmp_path):
    """--views 2 -> 3 on object storage: rank 0 adds the view block, rank 1 waits for it."""
    local, url = str(tmp_path / "grown.zarr"), f"s3://{BUCKET}/grown.zarr"
    for out in (local, url):
        assert run_extract(*tiny_args(photo_shards, out)) == 0
    assert run_extract(*tiny_args(photo_shards, local, "--views", "3")) == 0
    procs = [cli_subprocess(["extract", *tiny_args(photo_shards, url, "--views", "3", "--rank", str(r),
                                                   "--world-size", "2")], stderr=-1, text=True) for r in (1, 0)]
    results = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in results]
    _same_arrays(local, url)
    group = FeatureStore.open(url).teacher(TEACHER)
    assert group.blocks.complete_views() == 3 and group.blocks[1].group.path == f"teachers/{TEACHER}/blocks/2"
    assert cache_json(["verify", "--json", url])["ok"]


@pytest.mark.slow  # three extractions against the S3 server
def test_a_consolidated_remote_store_grows_and_its_consolidated_copy_follows(s3, photo_shards):
    """Issue 21 item 4 on object storage: the store ignores consolidated metadata and refreshes it."""
    import warnings

    import zarr

    from eupe.store.consolidated import open_group

    url = f"s3://{BUCKET}/consolidated.zarr"
    assert run_extract(*tiny_args(photo_shards, url, "--limit", "4")) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(open_group(url, mode="r+", storage_options={"use_listings_cache": False}).store)
    grow = tiny_args(photo_shards, url, "--limit", "4")
    grow[grow.index("--views") + 1] = "3"
    assert run_extract(*grow) == 0 and run_extract(*grow) == 0
    assert FeatureStore.open(url).teacher(TEACHER).views_per_image == 3
    listed = zarr.open_group(url, mode="r").metadata.consolidated_metadata.flattened_metadata
    assert f"teachers/{TEACHER}/blocks/2/views" in listed
