"""A store nobody can silently break: user mistakes end in one Error: line, transient failures are
retried, concurrent and interrupted runs finish the job. (Kill and damage cases: test_faults.py.)"""

from __future__ import annotations

import io
import signal
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from store_helpers import cache_json, cli_subprocess, run_extract, teacher_arrays, tiny_args

from eupe.assets import encode_jpeg
from eupe.store.layout import FAILED, StoreIntegrityError
from eupe.store.store import FeatureStore
from eupe.store.teacher_group.writer import ChunkResult
from eupe.store.verify import _token_cosine


def _error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("Error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, photo_shards) -> str:
    out = str(tmp_path_factory.mktemp("ref") / "ref.zarr")
    assert run_extract(*tiny_args(photo_shards, out)) == 0
    return out


@pytest.mark.parametrize("extra, words", [
    (["--codec", "bogus"], "unknown codec 'bogus'"),
    (["--teacher", "bogus"], "unknown teacher 'bogus'"),
    (["--resolution", "0"], "outside 1..4096"),
    (["--resolution", "33"], "not a multiple of its patch size"),
    (["--resolution", "32000"], "outside 1..4096"),
    (["--resolution", "64,64"], "lists a value twice"),
    (["--views", "100000"], "--views 100000 is outside"),
])
def test_bad_options_fail_before_anything_is_written(tmp_path, photo_shards, capsys, extra, words):
    out = tmp_path / "never.zarr"
    assert run_extract(*tiny_args(photo_shards, str(out), *extra)) == 2
    assert words in _error(capsys)
    assert not out.exists()


def _tar(path: Path, members: list[tuple[str, bytes]]) -> str:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return str(path)


@pytest.fixture()
def jpeg(photos) -> bytes:
    return encode_jpeg(photos[0].path, 96)


@pytest.mark.parametrize("case, words", [
    ("no-file", "no readable images"),
    ("empty-tar", "no readable images"),
    ("directory", "is a directory"),
    ("duplicate-keys", "duplicate key 'a'"),
])
def test_bad_datasets_are_one_clear_line(tmp_path, capsys, jpeg, case, words):
    data = {
        "no-file": str(tmp_path / "nothing-{000..002}.tar"),
        "empty-tar": _tar(tmp_path / "empty.tar", []),
        "directory": str(tmp_path),
        "duplicate-keys": _tar(tmp_path / "d1.tar", [("a.jpg", jpeg)]) + "::" + _tar(tmp_path / "d2.tar", [("a.jpg", jpeg)]),
    }[case]
    out = tmp_path / "out.zarr"
    assert run_extract(*tiny_args(data, str(out))) == 2
    assert words in _error(capsys)
    assert not out.exists()


def test_samples_without_a_usable_image_are_recorded(tmp_path, jpeg):
    shard = _tar(tmp_path / "mixed.tar", [("ok.jpg", jpeg), ("anim.gif", b"GIF89a"), ("note.txt", b"hi"),
                                          (b"caf\xe9.jpg".decode("utf-8", "surrogateescape"), jpeg)])
    out = str(tmp_path / "m.zarr")
    assert run_extract(*tiny_args(shard, out)) == 0
    skipped = cache_json(["info", "--json", out])["dataset"]["skipped_samples"]
    reasons = {s["key"]: s["reason"] for s in skipped}
    assert "no image member" in reasons["anim"] and "has gif" in reasons["anim"]
    assert "has txt" in reasons["note"]
    assert any("not valid UTF-8" in r for r in reasons.values())
    assert FeatureStore.open(out).num_images == 1


def test_malformed_metadata_is_one_clear_line(reference, tmp_path, capsys):
    import shutil

    out = tmp_path / "broken.zarr"
    shutil.copytree(reference, out)
    (out / "zarr.json").write_text("{not json")
    from eupe.cache_tools.cli import main

    assert main(["info", str(out)]) == 2
    assert "not valid" in _error(capsys)


def test_read_error_failures_are_reported_and_retried(reference, tmp_path, photo_shards, capsys):
    """A transient read failure leaves images FAILED in a done chunk: verify flags it, --retry-failed redoes it."""
    import shutil

    out = tmp_path / "transient.zarr"
    shutil.copytree(reference, out)
    group = FeatureStore.open(out, mode="a").teacher("dinov3_hplus")
    rows = group.store.chunk_rows(2)
    views, status = group.reader.chunk_meta(2)
    zeros = {64: np.zeros((2, 2, 64), np.float32)}
    group.writer.write_chunk(ChunkResult(2, np.full_like(views, np.nan), np.full(2, FAILED, np.uint8),
                                  ["read error: [Errno 5] Input/output error"] * 2, zeros,
                                  {64: np.zeros((2, 2, 16, 64), np.float32)}))
    from eupe.cache_tools.cli import main

    capsys.readouterr()
    assert main(["verify", str(out)]) == 1
    assert "--retry-failed" in capsys.readouterr().out
    assert run_extract(*tiny_args(photo_shards, str(out))) == 0  # a plain re-run skips done chunks
    assert (FeatureStore.open(out).teacher("dinov3_hplus").reader.status()[rows.start:rows.stop] == FAILED).all()
    assert run_extract(*tiny_args(photo_shards, str(out), "--retry-failed")) == 0
    assert "1 chunk(s) with read errors retried" in capsys.readouterr().out
    expected, got = teacher_arrays(reference, "dinov3_hplus"), teacher_arrays(str(out), "dinov3_hplus")
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


def test_a_rank_reports_chunks_still_not_done_store_wide(tmp_path, photo_shards, capsys):
    out = str(tmp_path / "half.zarr")
    assert run_extract(*tiny_args(photo_shards, out, "--rank", "0", "--world-size", "2")) == 0
    assert "3 chunk(s) still not done store-wide" in capsys.readouterr().out
    info = cache_json(["info", "--json", out])["teachers"]["dinov3_hplus"]
    assert info["images_done"] == 6 and info["ok"] == 6 and not info["complete"]  # pending chunks not counted


def test_concurrent_extracts_on_one_fresh_out_finish_the_job(reference, tmp_path, photo_shards):
    out = str(tmp_path / "race.zarr")
    procs = [cli_subprocess(["extract", *tiny_args(photo_shards, out)], stderr=-1) for _ in range(2)]
    codes = [p.wait(timeout=300) for p in procs]
    assert all(c in (0, 2) for c in codes) and 0 in codes, codes  # the loser says why, in one line
    assert run_extract(*tiny_args(photo_shards, out)) == 0
    expected, got = teacher_arrays(reference, "dinov3_hplus"), teacher_arrays(out, "dinov3_hplus")
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


def test_sigterm_ends_extraction_with_a_message_and_resumes(reference, tmp_path, photo_shards):
    out = tmp_path / "term.zarr"
    proc = cli_subprocess(["extract", *tiny_args(photo_shards, str(out), "--batch-size", "1", "--images-per-chunk", "1")],
                          stderr=-1, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any((out / "teachers" / "dinov3_hplus" / "manifest").glob("c/*")):
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "Interrupted (SIGTERM)" in err and "re-run the same command" in err, err
    assert run_extract(*tiny_args(photo_shards, str(out), "--images-per-chunk", "1")) == 0


def test_reading_a_missing_chunk_never_gives_zeros(reference, tmp_path):
    import shutil

    out = tmp_path / "hole.zarr"
    shutil.copytree(reference, out)
    path = next((out / "teachers" / "dinov3_hplus" / "r64" / "patch" / "c" / "4").rglob("*"))
    while path.is_dir():
        path = next(path.iterdir())
    path.unlink()
    group = FeatureStore.open(out).teacher("dinov3_hplus")
    with pytest.raises(StoreIntegrityError, match="missing"):
        group.reader.targets(8, 64, 0)
    with pytest.raises(StoreIntegrityError, match="missing"):
        group.reader.read_parts(slice(0, 12), 64)  # the zarr path (stats, verify) is checked too
    assert group.reader.targets(0, 64, 0)["patch"].any()  # other chunks still read


def test_teacher_check_counts_two_zero_tokens_as_equal():
    zeros = np.zeros((3, 8))
    assert np.all(_token_cosine(zeros, zeros) == 1.0)
    a = np.random.default_rng(0).normal(size=(3, 8))
    assert np.allclose(_token_cosine(a, a), 1.0) and _token_cosine(a, -a).max() < -0.99


def test_stats_record_the_chunks_they_cover(tmp_path, photo_shards):
    from eupe.cache_tools.cli import main
    from eupe.store.stats import load_stats

    out = str(tmp_path / "grow.zarr")
    assert run_extract(*tiny_args(photo_shards, out, "--rank", "0", "--world-size", "2")) == 0
    assert main(["stats", out]) == 0
    assert load_stats(FeatureStore.open(out).teacher("dinov3_hplus"), 64) is not None
    assert run_extract(*tiny_args(photo_shards, out, "--rank", "1", "--world-size", "2")) == 0
    assert load_stats(FeatureStore.open(out).teacher("dinov3_hplus"), 64) is None  # stale: store grew
    group = zarr.open_group(out, mode="r")["teachers/dinov3_hplus/r64/stats"]
    assert "complete" in group.attrs and group["patch_mean"].shape == (64,)


def test_oversized_source_images_are_recorded_not_decoded(tmp_path, jpeg):
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("1", (10000, 10000)).save(buffer, format="PNG")  # ~12 KB on disk, 100 megapixels
    assert len(buffer.getvalue()) < 50_000
    shard = _tar(tmp_path / "bomb.tar", [("ok.jpg", jpeg), ("huge.png", buffer.getvalue())])
    out = str(tmp_path / "bomb.zarr")
    assert run_extract(*tiny_args(shard, out)) == 0  # default limit: 64 megapixels
    failed = {f["key"]: f["reason"] for f in cache_json(["info", "--json", out])["teachers"]["dinov3_hplus"]["failed_inputs"]}
    assert list(failed) == ["huge"] and "100,000,000 pixels" in failed["huge"] and "limit" in failed["huge"]
