"""Hostile shards: a FIFO given as a shard, a member stored twice, link members inside a tar.

Each test builds the fault for real (os.mkfifo, tarfile) and checks what webdataset itself does
with the same tar, so the index keeps matching webdataset.
"""

from __future__ import annotations

import io
import os
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from eupe.cache_tools.cli import main as cache_main
from eupe.data.shards import DatasetError, index_shards, shard_fingerprint


def _jpeg(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


def _tar(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]]) -> str:
    with tarfile.open(path, "w") as tar:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tar.addfile(member)
            else:
                info = tarfile.TarInfo(member[0])
                info.size = len(member[1])
                tar.addfile(info, io.BytesIO(member[1]))
    return str(path)


def _link(name: str, target: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def _within(seconds: float, call, fifo: Path):
    """Run ``call`` in a thread; if it blocks (opening the FIFO), unblock it and fail."""
    result: dict = {}

    def target():
        try:
            result["value"] = call()
        except BaseException as err:  # noqa: BLE001 - handed to the test
            result["error"] = err

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # releases the blocked reader
        thread.join(5)
        pytest.fail(f"blocked on the FIFO {fifo} for {seconds} s")
    return result


def test_a_fifo_as_a_shard_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "stream.tar"
    os.mkfifo(fifo)
    found = _within(10, lambda: index_shards([str(fifo)]), fifo)
    assert isinstance(found.get("error"), DatasetError)
    assert "FIFO" in str(found["error"]) and str(fifo) in str(found["error"])
    found = _within(10, lambda: shard_fingerprint(str(fifo)), fifo)  # a resume's shard check
    assert isinstance(found.get("error"), DatasetError)


def test_extract_with_a_fifo_as_data_exits_2_without_writing(tmp_path: Path, capsys) -> None:
    fifo = tmp_path / "stream.tar"
    os.mkfifo(fifo)
    out = tmp_path / "f.zarr"
    args = ["extract", "--teacher", "dinov3_hplus", "--test-scale", "--data", str(fifo), "--out", str(out),
            "--num-workers", "0"]
    found = _within(60, lambda: cache_main(args), fifo)
    assert found.get("value") == 2, found
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("Error: shard ") and "not a regular file" in err[-1]
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["stream.tar"]


def test_a_member_stored_twice_is_refused_like_webdataset(tmp_path: Path) -> None:
    shard = _tar(tmp_path / "dup.tar", [("a.jpg", _jpeg(0)), ("a.jpg", _jpeg(1)), ("b.jpg", _jpeg(2))])
    with pytest.raises(ValueError, match="duplicate file name"):  # webdataset refuses this tar too
        list(wds.WebDataset(shard, shardshuffle=False))
    with pytest.raises(DatasetError, match=r"holds the member a\.jpg twice \(sample 'a'\)"):
        index_shards([shard])
    # the same suffix in another case is the same member for webdataset (suffixes are lower-cased)
    shard = _tar(tmp_path / "case.tar", [("a.jpg", _jpeg(0)), ("a.JPG", _jpeg(1))])
    with pytest.raises(DatasetError, match="twice"):
        index_shards([shard])


def test_link_members_are_listed_as_skipped(tmp_path: Path) -> None:
    image = _jpeg(3)
    shard = _tar(tmp_path / "links.tar", [("a.jpg", image), _link("b.jpg", "a.jpg", tarfile.SYMTYPE),
                                          _link("c.jpg", "a.jpg", tarfile.LNKTYPE), ("d.jpg", _jpeg(4))])
    assert [s["__key__"] for s in wds.WebDataset(shard, shardshuffle=False)] == ["a", "d"]  # webdataset skips links
    index = index_shards([shard])
    assert list(index.keys) == ["a", "d"]
    assert [(s["key"], s["shard"]) for s in index.skipped] == [("b", shard), ("c", shard)]
    assert "symlink -> a.jpg" in index.skipped[0]["reason"] and "hardlink -> a.jpg" in index.skipped[1]["reason"]
