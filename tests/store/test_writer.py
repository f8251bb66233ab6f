"""Extraction's write path: encode per forward batch where the teacher ran, a pool of writer threads,
failed writes.

The reference for "the same bytes as before" is a store written the way extraction wrote before
encoding moved next to the teacher: ``run_teacher`` -> float32 [C, K, ...] chunk arrays ->
``TeacherGroup.writer.write_chunk`` encoding them with numpy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from store_helpers import run_extract, teacher_arrays, tiny_args

from eupe.models.features import run_teacher
from eupe.store import manifest
from eupe.store.codecs.metrics import token_cosine
from eupe.store.codecs.registry import get_codec
from eupe.store.extract import ChunkImages, ExtractConfig, load_teachers, open_or_create_store, teacher_identity
from eupe.store.layout import OK
from eupe.store.teacher_group.group import TeacherGroup
from eupe.store.teacher_group.writer import ChunkResult

TEACHER = "dinov3_hplus"


def _empty_group(data: str, out: str, codec: str) -> tuple[TeacherGroup, object]:
    """A new store and teacher group with nothing extracted, as ``tiny_args`` would create them."""
    cfg = ExtractConfig(teachers=[TEACHER], data=data, out=out, views=2, resolutions=[64], codec=codec, num_workers=0,
                        images_per_chunk=2, test_scale=True)
    teacher = load_teachers(cfg)[0]
    store = open_or_create_store(cfg, progress=False)
    return store.open_or_create_teacher(teacher_identity(teacher, [64], get_codec(codec)), get_codec(codec)), teacher


def numpy_path_store(data: str, out: str, codec: str) -> None:
    """Every chunk written through float32 chunk arrays and numpy ``Codec.encode`` (the former path)."""
    group, teacher = _empty_group(data, out, codec)
    images, k = ChunkImages(group, list(range(group.chunks.num_chunks)), [64]), 2  # chunks of 2 images: one piece each
    for j in range(len(images)):
        batch = images[j]
        c, ok = len(batch.status), batch.status == OK
        summary = np.zeros((c, k, group.summary_dim), np.float32)
        patch = np.zeros((c, k, 16, group.dim), np.float32)
        if ok.any():
            s, p = run_teacher(teacher, batch.pixels[64], 32, torch.device("cpu"))
            summary[ok], patch[ok] = s.reshape(-1, k, group.summary_dim), p.reshape(-1, k, 16, group.dim)
        group.writer.write_chunk(ChunkResult(batch.chunk, batch.views, batch.status, batch.errors, {64: summary}, {64: patch}))


def chunk_files(out: str) -> dict[str, bytes]:
    root = Path(out) / "teachers" / TEACHER
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and "claims" not in p.parts}


@pytest.fixture(scope="module")
def cli_store(tmp_path_factory, photo_shards) -> str:
    out = str(tmp_path_factory.mktemp("writer") / "cli.zarr")
    assert run_extract(*tiny_args(photo_shards, out)) == 0
    return out


@pytest.mark.parametrize("codec", ["fp16", "int8", "int4", "compact"])
def test_store_is_byte_identical_to_the_whole_chunk_numpy_path(tmp_path, photo_shards, codec):
    """On a CPU teacher each forward batch is encoded with numpy: the bytes of every file are unchanged."""
    new, old = str(tmp_path / "new.zarr"), str(tmp_path / "old.zarr")
    assert run_extract(*tiny_args(photo_shards, new, "--codec", codec)) == 0
    numpy_path_store(photo_shards, old, codec)
    new_files, old_files = chunk_files(new), chunk_files(old)
    assert new_files.keys() == old_files.keys() and len(new_files) > 20
    assert [name for name in new_files if new_files[name] != old_files[name]] == []


def test_failed_images_leave_zero_components_identical_to_the_numpy_path(tmp_path, corrupt_shard):
    new, old = str(tmp_path / "new.zarr"), str(tmp_path / "old.zarr")
    assert run_extract(*tiny_args(corrupt_shard, new, "--codec", "int8")) == 0
    numpy_path_store(corrupt_shard, old, "int8")
    assert chunk_files(new) == chunk_files(old)
    patch = zarr.open_group(new, mode="r")[f"teachers/{TEACHER}/r64/patch"][:]  # decoded by plain zarr
    assert not patch[1].any() and patch[0].any() and patch[2].any()  # image 1 is the truncated JPEG


def _features(device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Real-looking tokens: the test-scale teacher's outputs on random pixels, summary [6, D], patch [6, 16, D]."""
    from eupe.models.teachers import create_teacher

    torch.manual_seed(0)
    s, p = run_teacher(create_teacher(TEACHER, None, True), torch.rand(6, 3, 64, 64), 6, torch.device("cpu"))
    return torch.from_numpy(s).to(device), torch.from_numpy(p).to(device)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device"))])
@pytest.mark.parametrize("codec", ["fp16", "int8", "compact"])
def test_encoding_on_the_device_gives_host_components_like_numpy(codec, device):
    """The GPU path (``encode_torch``, then only components cross to the host): fp16/int8 bit for bit;
    compact's codes may move across a rounding edge where torch sums a view's tokens in another order."""
    from eupe.store.extract import encode_batch

    codec_, (s, p) = get_codec(codec), _features(device)
    (ds, dp), (hs, hp) = encode_batch(codec_, s, p, on_device=True), encode_batch(codec_, s, p, on_device=False)
    assert all(isinstance(v, np.ndarray) for v in [*ds.values(), *dp.values()])
    assert {n: v.dtype for n, v in dp.items()} == {n: v.dtype for n, v in hp.items()}
    for name in hs:
        np.testing.assert_array_equal(ds[name], hs[name], err_msg=name)  # summary: fp16 values in every codec
    if codec != "compact":
        for name in hp:
            np.testing.assert_array_equal(dp[name], hp[name], err_msg=name)
    else:
        assert (dp["codes"] != hp["codes"]).mean() < 1e-3
    assert token_cosine(codec_.decode(hp), codec_.decode(dp)).min() > 0.9999
    assert token_cosine(p.cpu().numpy(), codec_.decode(dp)).mean() > codec_.min_cosine


def test_writer_pool_sizes_give_identical_stores(tmp_path, photo_shards, cli_store):
    """One chunk per image, so up to 3 chunks are written at once; bytes never depend on the pool."""
    one, three = str(tmp_path / "one.zarr"), str(tmp_path / "three.zarr")
    assert run_extract(*tiny_args(photo_shards, one, "--images-per-chunk", "1", "--writers", "1")) == 0
    assert run_extract(*tiny_args(photo_shards, three, "--images-per-chunk", "1", "--writers", "3")) == 0
    assert chunk_files(one) == chunk_files(three)
    reference, pooled = teacher_arrays(cli_store, TEACHER), teacher_arrays(three, TEACHER)
    for name in ("views", "status", "r64/patch", "r64/summary"):
        np.testing.assert_array_equal(pooled[name], reference[name], err_msg=name)


def test_a_failed_write_stops_the_run_naming_the_chunk_and_a_rerun_completes(tmp_path, photo_shards, cli_store,
                                                                             capsys):
    out = str(tmp_path / "fail.zarr")
    group, _ = _empty_group(photo_shards, out, "fp16")
    blocker = manifest.local_path(group.array("r64/patch"), 1)
    blocker.mkdir(parents=True)  # a directory where chunk 1's file must go: a real write error
    (blocker / "occupied").write_bytes(b"x")
    capsys.readouterr()
    assert run_extract(*tiny_args(photo_shards, out, "--writers", "2")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("Error: writing chunk 1 (images 2..3) failed")
    done = zarr.open_group(out, mode="r")[f"teachers/{TEACHER}/manifest"][:, 0, 0] > 0
    assert not done[1] and done[0]  # chunk 1 not marked done; the chunk before it was written
    (blocker / "occupied").unlink()
    blocker.rmdir()
    assert run_extract(*tiny_args(photo_shards, out, "--writers", "2")) == 0
    assert chunk_files(out) == chunk_files(cli_store)


def test_writers_must_be_positive(tmp_path, photo_shards, capsys):
    assert run_extract(*tiny_args(photo_shards, str(tmp_path / "w.zarr"), "--writers", "0")) == 2
    assert "--writers" in capsys.readouterr().err


def test_a_failed_write_is_raised_at_once_even_behind_a_slow_one():
    """The run stops on the first failed chunk, not after every older write has finished."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from eupe.store.extract import ExtractSummary, _drain
    from eupe.store.layout import StoreWriteError

    release = threading.Event()

    def fail() -> int:
        raise StoreWriteError("writing chunk 7 (images 14..15) failed: disk full")

    with ThreadPoolExecutor(2) as pool:
        slow, failed = pool.submit(release.wait, 30), pool.submit(fail)
        assert isinstance(failed.exception(timeout=30), StoreWriteError)
        with pytest.raises(StoreWriteError, match="chunk 7"):
            _drain([slow, failed], keep=1, summary=ExtractSummary("t"))
        assert not slow.done()  # raised without waiting for the older write
        release.set()
    summary = ExtractSummary("t")
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(lambda n=n: n) for n in (10, 20, 30)]
        left = _drain(futures, keep=1, summary=summary)
    assert len(left) <= 1 and summary.bytes_written + sum(f.result() for f in left) == 60


def test_a_chunk_rendered_in_pieces_equals_one_rendered_whole(tmp_path, photo_shards):
    """DataLoader items are pieces of about one teacher batch (here 1 image), never a whole chunk of
    pixels; the chunk assembled from them holds the same views, statuses and targets."""
    from eupe.store.store import FeatureStore

    pieces, whole = str(tmp_path / "pieces.zarr"), str(tmp_path / "whole.zarr")
    base = ["--images-per-chunk", "6"]
    assert run_extract(*tiny_args(photo_shards, pieces, *base, "--batch-size", "2")) == 0
    assert run_extract(*tiny_args(photo_shards, whole, *base, "--batch-size", "64")) == 0
    a, b = FeatureStore.open(pieces).teacher(TEACHER), FeatureStore.open(whole).teacher(TEACHER)
    np.testing.assert_array_equal(a.array("views")[:], b.array("views")[:])
    np.testing.assert_array_equal(a.reader.status(), b.reader.status())
    for row in range(a.store.num_images):
        np.testing.assert_allclose(a.reader.targets(row, 64)["patch"], b.reader.targets(row, 64)["patch"], rtol=1e-4, atol=1e-4)
