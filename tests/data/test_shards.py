"""Random access to webdataset shards: expansion, header-only indexing, reads, failures."""

from __future__ import annotations

import io
import multiprocessing
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from eupe.data.shards import (IMAGE_EXTENSIONS, ShardFailure, ShardIndex, ShardReader, expand_shards, index_shards,
                              read_member, write_shards)


def _encode(seed: int, ext: str, size: int = 24) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size, size + seed % 7, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format={"jpg": "JPEG", "png": "PNG"}[ext])
    return buffer.getvalue()


def _samples(n: int, prefix: str = "img") -> list[tuple[str, bytes, str, int | None]]:
    """Real PNG/JPEG bytes; every third sample has no label."""
    out = []
    for i in range(n):
        ext = "png" if i % 2 else "jpg"
        out.append((f"{prefix}/{i:06d}", _encode(i, ext), ext, None if i % 3 == 2 else i % 4))
    return out


@pytest.fixture()
def dataset(tmp_path: Path) -> tuple[list[str], list[tuple[str, bytes, str, int | None]]]:
    """3 shards x 5 samples."""
    samples = _samples(15)
    shards = write_shards(samples, str(tmp_path / "train-%06d.tar"), per_shard=5)
    return shards, samples


# --------------------------------------------------------------------------- expand_shards


def test_expand_brace_pattern_is_ordered_and_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    got = expand_shards(str(tmp_path / "train-{000008..000011}.tar"))
    assert got == [str(tmp_path / f"train-{i:06d}.tar") for i in (8, 9, 10, 11)]
    monkeypatch.chdir(tmp_path)
    assert expand_shards("d/x-{0..1}.tar::y.tar") == [
        str(tmp_path / "d/x-0.tar"),
        str(tmp_path / "d/x-1.tar"),
        str(tmp_path / "y.tar"),
    ]
    assert expand_shards(["a.tar", "s3://bucket/b-{1..2}.tar"]) == [
        str(tmp_path / "a.tar"),
        "s3://bucket/b-1.tar",
        "s3://bucket/b-2.tar",
    ]


def test_expand_to_nothing_is_an_error() -> None:
    for pattern in ("", [], "::"):
        with pytest.raises(ValueError, match="no shards"):
            expand_shards(pattern)


# --------------------------------------------------------------------------- index and reads


def test_index_rows_labels_and_bytes(dataset) -> None:
    shards, samples = dataset
    assert len(shards) == 3 and all(os.path.exists(s) for s in shards)
    index = index_shards(expand_shards("::".join(shards)))
    assert isinstance(index, ShardIndex) and index.failures == []
    assert len(index) == 15
    assert list(index.keys) == [k for k, _, _, _ in samples]
    assert index.shard.tolist() == [0] * 5 + [1] * 5 + [2] * 5
    assert index.shard.dtype == np.int32 and index.offset.dtype == np.int64
    assert index.size.dtype == np.int64 and index.label.dtype == np.int64
    assert list(index.ext) == [e for _, _, e, _ in samples]
    assert index.label.tolist() == [-1 if lab is None else lab for _, _, _, lab in samples]
    assert index.size.tolist() == [len(b) for _, b, _, _ in samples]
    with ShardReader(index) as reader:
        for i, (_, data, _, _) in enumerate(samples):
            assert read_member(index.shards[index.shard[i]], index.offset[i], index.size[i]) == data
            assert reader.read(i) == data
        assert reader.read(3) == samples[3][1]  # repeated reads reuse the handle


def test_keys_sha256_is_stable_and_tracks_keys(dataset, tmp_path: Path) -> None:
    shards, samples = dataset
    first = index_shards(shards).keys_sha256()
    assert first == index_shards(list(shards)).keys_sha256()
    assert len(first) == 64
    renamed = [("other/000000", *samples[0][1:])] + samples[1:5]
    other = write_shards(renamed, str(tmp_path / "renamed-%06d.tar"), per_shard=5)
    assert index_shards(other + shards[1:]).keys_sha256() != first


def test_index_matches_webdataset_iteration(dataset) -> None:
    shards, _ = dataset
    index = index_shards(shards)
    reader = ShardReader(index)
    seen = list(wds.WebDataset(shards, shardshuffle=False))
    assert [s["__key__"] for s in seen] == list(index.keys)
    for i, sample in enumerate(seen):
        assert sample[str(index.ext[i])] == reader.read(i)
        assert (int(sample["cls"]) if "cls" in sample else -1) == index.label[i]
    reader.close()


def test_large_real_photo_members(tmp_path: Path, photos) -> None:
    samples = [(f"photo/{i:03d}", p.read_bytes(), p.path.suffix[1:], i) for i, p in enumerate(photos[:4])]
    shards = write_shards(samples, str(tmp_path / "photos-%03d.tar"), per_shard=2)
    index = index_shards(shards)
    assert [ShardReader(index).read(i) for i in range(len(index))] == [b for _, b, _, _ in samples]


def test_samples_without_image_are_skipped_and_image_priority(tmp_path: Path) -> None:
    path = str(tmp_path / "mixed.tar")
    png, jpg = _encode(1, "png"), _encode(2, "jpg")
    with wds.TarWriter(path) as sink:
        sink.write({"__key__": "a", "txt": b"caption only", "cls": b"3"})
        sink.write({"__key__": "b", "png": png, "jpg": jpg, "json": b"{}", "cls": b" 7\n"})
        sink.write({"__key__": "c", "JPEG": jpg})
    index = index_shards([path])
    assert list(index.keys) == ["b", "c"]
    assert list(index.ext) == ["jpg", "jpeg"]  # IMAGE_EXTENSIONS order; suffix lower-cased like webdataset
    assert index.label.tolist() == [7, -1]
    assert [ShardReader(index).read(i) for i in range(2)] == [jpg, jpg]


def test_empty_shard_list_gives_empty_index() -> None:
    index = index_shards([])
    assert len(index) == 0 and index.failures == []
    assert index.keys_sha256() == index_shards([]).keys_sha256()


# --------------------------------------------------------------------------- failures


def _truncate(path: str, length: int) -> None:
    with open(path, "r+b") as handle:
        handle.truncate(length)


def test_bad_shards_are_recorded_and_others_indexed(dataset, tmp_path: Path) -> None:
    shards, samples = dataset
    full = index_shards(shards)
    cut_mid_member = shards[1]
    _truncate(cut_mid_member, int(full.offset[7] + full.size[7] // 2))
    # a copy of shard 2 cut exactly after a member's padded data: headers look fine
    boundary = str(tmp_path / "boundary.tar")
    data = Path(shards[2]).read_bytes()
    end = int(full.offset[11] + full.size[11])
    Path(boundary).write_bytes(data[: end + (-end % 512)])
    missing = str(tmp_path / "missing.tar")
    not_tar = tmp_path / "notes.tar"
    not_tar.write_text("this is not a tar archive\n" * 40)

    index = index_shards([shards[0], cut_mid_member, missing, str(not_tar), boundary, shards[2]])
    assert list(index.keys) == [k for k, _, _, _ in samples[:5] + samples[10:]]
    assert index.shard.tolist() == [0] * 5 + [5] * 5
    failed = {f.shard: f.reason for f in index.failures}
    assert list(failed) == [cut_mid_member, missing, str(not_tar), boundary]
    assert all(isinstance(f, ShardFailure) for f in index.failures)
    assert "truncated" in failed[cut_mid_member] and "end of data" in failed[cut_mid_member]
    assert "missing" in failed[missing]
    assert "tar" in failed[str(not_tar)]
    assert "truncated" in failed[boundary]
    reader = ShardReader(index)
    assert [reader.read(i) for i in range(len(index))] == [b for _, b, _, _ in samples[:5] + samples[10:]]


def test_duplicate_keys_across_shards(dataset, tmp_path: Path) -> None:
    shards, samples = dataset
    copy = write_shards(samples[6:7], str(tmp_path / "dup-%06d.tar"), per_shard=5)
    with pytest.raises(ValueError, match="img/000006") as info:
        index_shards(shards + copy)
    assert shards[1] in str(info.value) and copy[0] in str(info.value)


def test_short_read_names_shard(dataset) -> None:
    shards, _ = dataset
    size = os.path.getsize(shards[0])
    with pytest.raises(OSError, match="train-000000.tar"):
        read_member(shards[0], size - 10, 100)


def test_write_shards_validates_samples(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="extension"):
        write_shards([("a", b"x", "txt", None)], str(tmp_path / "v-%d.tar"), per_shard=1)
    with pytest.raises(ValueError, match="must not contain"):
        write_shards([("a.b", b"x", "png", None)], str(tmp_path / "w-%d.tar"), per_shard=1)
    assert set(IMAGE_EXTENSIONS) >= {"jpg", "png"}


# --------------------------------------------------------------------------- URLs and workers


def test_file_url_works_like_local_path(dataset) -> None:
    shards, samples = dataset
    local = index_shards(shards)
    urls = expand_shards([Path(s).as_uri() for s in shards])
    assert urls[0].startswith("file://")
    remote = index_shards(urls, progress=True)
    assert remote.failures == [] and remote.shards == urls
    assert list(remote.keys) == list(local.keys)
    assert remote.offset.tolist() == local.offset.tolist()
    assert read_member(urls[2], remote.offset[12], remote.size[12]) == samples[12][1]
    with ShardReader(remote) as reader:
        assert [reader.read(i) for i in range(len(remote))] == [b for _, b, _, _ in samples]
    failed = index_shards([urls[0] + ".missing"]).failures
    assert len(failed) == 1 and "missing" in failed[0].reason


def test_reader_survives_pickling(dataset) -> None:
    shards, samples = dataset
    reader = ShardReader(index_shards(shards))
    assert reader.read(0) == samples[0][1]  # parent has open handles now
    state = pickle.dumps(reader)
    worker = pickle.loads(state)
    assert [worker.read(i) for i in reversed(range(15))] == [b for _, b, _, _ in reversed(samples)]
    worker.close()
    reader.close()


def _read_all(reader: ShardReader, rows: list[int]) -> list[bytes]:
    return [reader.read(i) for i in rows]


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method")
def test_reader_inherited_across_fork(dataset) -> None:
    shards, samples = dataset
    reader = ShardReader(index_shards(shards))
    reader.read(14)  # handles opened before the fork
    with multiprocessing.get_context("fork").Pool(2) as pool:
        parts = pool.starmap(_read_all, [(reader, list(range(0, 15, 2))), (reader, list(range(1, 15, 2)))])
    assert parts == [[samples[i][1] for i in range(0, 15, 2)], [samples[i][1] for i in range(1, 15, 2)]]
