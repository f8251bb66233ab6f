"""Read-only media and awkward ``--out`` paths end in one ``Error:`` line with exit status 2.

Read-only is injected for real: as root (chmod does not stop root) a read-only bind mount of the
directory over itself, else chmod; the test is skipped only when neither is possible. Nothing may
be written when a command is refused.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from eupe.cache_tools.cli import main as cache_main
from eupe.train.cli import main as train_main

from store_helpers import run_extract, tiny_args

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "train"


@contextlib.contextmanager
def read_only(path: Path):
    """``path`` (a directory) cannot be written by this process inside the block."""
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in [path, *path.rglob("*")] if p.is_dir()}
        for p in modes:
            p.chmod(0o555)
        try:
            yield
        finally:
            for p, mode in modes.items():
                p.chmod(mode)
        return
    mounted = subprocess.run(["mount", "--bind", str(path), str(path)], capture_output=True).returncode == 0
    if mounted and subprocess.run(["mount", "-o", "remount,bind,ro", str(path)], capture_output=True).returncode:
        subprocess.run(["umount", str(path)], check=True)
        mounted = False
    if not mounted:
        pytest.skip("root without mount privileges: cannot make a directory read-only")
    try:
        yield
    finally:  # lazily when a cached reader still holds a file open there
        if subprocess.run(["umount", str(path)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(path)], check=True)


def _snapshot(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*")}


def _error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    errors = [line for line in err if line.startswith("Error: ")]
    assert len(errors) == 1 and "Traceback" not in "\n".join(err), err
    return errors[0]


@pytest.fixture(scope="module")
def built(tmp_path_factory, photo_shards) -> Path:
    """A complete one-teacher store (no statistics yet)."""
    out = tmp_path_factory.mktemp("built") / "f.zarr"
    assert run_extract(*tiny_args(photo_shards, str(out))) == 0
    return out


@pytest.fixture()
def medium(tmp_path: Path, built: Path) -> Path:
    """A directory holding a copy of the store, to be mounted read-only."""
    shutil.copytree(built, tmp_path / "medium" / "f.zarr")
    return tmp_path / "medium"


def test_stats_on_a_read_only_store(medium: Path, capsys) -> None:
    before = _snapshot(medium)
    with read_only(medium):
        assert cache_main(["stats", str(medium / "f.zarr")]) == 2
    line = _error_line(capsys)
    assert str(medium / "f.zarr") in line and "read-only" in line and "writable" in line
    assert _snapshot(medium) == before


def test_extract_growth_new_teacher_and_new_store_on_read_only_media(medium: Path, photo_shards, capsys) -> None:
    store = str(medium / "f.zarr")
    before = _snapshot(medium)
    with read_only(medium):
        assert run_extract(*tiny_args(photo_shards, store, "--views", "3")) == 2  # growth
        assert "read-only" in _error_line(capsys)
        args = tiny_args(photo_shards, store, "--resolution", "56")
        args[1] = "pelang_g"
        assert run_extract(*args) == 2  # a second teacher
        assert "read-only" in _error_line(capsys)
        assert run_extract(*tiny_args(photo_shards, str(medium / "new.zarr"))) == 2  # a new store
        line = _error_line(capsys)
    assert f"--out {medium / 'new.zarr'} cannot be written (in {medium})" in line
    assert _snapshot(medium) == before


def test_a_deeper_read_only_directory_is_one_error_line_too(medium: Path, capsys) -> None:
    """Only a teacher's resolution group is read-only: the root check passes and the write itself
    fails with EROFS deep in zarr; that operating-system error is still a user error."""
    inner = medium / "f.zarr" / "teachers" / "dinov3_hplus" / "r64"
    with read_only(inner):
        assert cache_main(["stats", str(medium / "f.zarr")]) == 2
    line = _error_line(capsys)
    assert "Read-only file system" in line and str(inner) in line and "writable" in line


def _train(store: Path, out: Path) -> int:
    return train_main(["--stage", "2", "--config", str(CONFIGS / "tiny_stage2.yaml"), "teachers.0.name=dinov3_hplus",
                       "teachers.0.test_scale=true", f"data.store={store}", f"out={out}", "iterations=2"])


def test_training_a_read_only_store_without_statistics(medium: Path, tmp_path: Path, capsys) -> None:
    with read_only(medium):
        assert _train(medium / "f.zarr", tmp_path / "run") == 2
    line = _error_line(capsys)
    assert "normalization statistics of dinov3_hplus r64 are absent" in line and "read-only" in line
    assert f"eupe-cache stats {medium / 'f.zarr'}" in line


def test_training_into_a_read_only_directory(built: Path, tmp_path: Path, capsys) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    with read_only(runs):
        assert _train(built, runs / "run") == 2
    assert f"out= {runs / 'run'} cannot be written (in {runs})" in _error_line(capsys)
    assert not any(runs.iterdir())


def test_out_through_a_symlink_to_an_empty_directory(tmp_path: Path, photo_shards) -> None:
    (tmp_path / "disk").mkdir()
    link = tmp_path / "f.zarr"
    link.symlink_to(tmp_path / "disk")
    assert run_extract(*tiny_args(photo_shards, str(link))) == 0
    assert link.is_symlink() and (tmp_path / "disk" / "zarr.json").is_file()  # built in the link's target
    assert sorted(p.name for p in tmp_path.iterdir()) == ["disk", "f.zarr"]  # no staging left behind
    assert cache_main(["verify", str(link)]) == 0
    assert run_extract(*tiny_args(photo_shards, str(link), "--views", "3")) == 0  # grows through the link


def test_out_dot(tmp_path: Path, photo_shards, built: Path, monkeypatch, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    assert run_extract(*tiny_args(photo_shards, ".")) == 2
    assert "--out . is the working directory" in _error_line(capsys)
    assert not any(empty.iterdir()) and sorted(p.name for p in tmp_path.iterdir()) == ["empty"]
    shutil.copytree(built, tmp_path / "store")
    monkeypatch.chdir(tmp_path / "store")  # inside an existing store, `--out .` is that store
    assert run_extract(*tiny_args(photo_shards, ".")) == 0


def test_resuming_an_unfinished_extraction_on_read_only_media(tmp_path: Path, photo_shards, capsys) -> None:
    medium = tmp_path / "medium"
    store = str(medium / "f.zarr")
    assert run_extract(*tiny_args(photo_shards, store, "--rank", "0", "--world-size", "2")) == 0  # half the chunks
    before = _snapshot(medium)
    with read_only(medium):
        assert run_extract(*tiny_args(photo_shards, store, "--rank", "1", "--world-size", "2")) == 2
    assert f"--out {store} cannot be written: read-only file system" in _error_line(capsys)
    assert _snapshot(medium) == before
    assert run_extract(*tiny_args(photo_shards, store, "--rank", "1", "--world-size", "2")) == 0  # writable again
    assert cache_main(["verify", store]) == 0
