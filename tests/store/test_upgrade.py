"""`eupe-cache upgrade`: a format-2 store becomes a format-3 one, verified, and resumable after kill -9.

``data/format2.zarr`` was written by the format-2 code (commit 2105420): 6 images, chunks of 2,
views 0..1 plus a grown view block 2..2, ``compact`` codec at 32 px, statistics computed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from store_helpers import cache_json, cache_main

from eupe.store.codecs.registry import codec_from_dict
from eupe.store.layout import FAILPOINT_ENV
from eupe.store.stats import load_stats
from eupe.store.store import FeatureStore

LEGACY = Path(__file__).parent / "data" / "format2.zarr"
TEACHER = "dinov3_hplus"


def _tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return digest.hexdigest()


def _legacy_targets(store: Path) -> dict[str, np.ndarray]:
    """Every (image, view) of the old store, decoded from its component arrays with plain zarr + Codec."""
    root = zarr.open_group(str(store), mode="r")
    teacher = root[f"teachers/{TEACHER}"]
    codec = codec_from_dict(teacher.attrs["codec"])
    out = {}
    for prefix in ("", "blocks/2/"):
        r32 = teacher[f"{prefix}r32"]
        summary = codec.decode_vector({n: a[:] for n, a in r32["summary"].arrays()})
        patch = codec.decode({n: a[:] for n, a in r32["patch"].arrays()})
        out[f"{prefix}summary"], out[f"{prefix}patch"] = summary, patch.reshape(*patch.shape[:-2], 2, 2, -1)
    return {kind: np.concatenate([out[kind], out[f"blocks/2/{kind}"]], axis=1) for kind in ("summary", "patch")}


def _check_upgraded(new: str, want: dict[str, np.ndarray]) -> None:
    group = FeatureStore.open(new).teacher(TEACHER)
    assert group.blocks.total_views == group.blocks.complete_views() == 3
    for row in range(6):
        for view in range(3):
            got = group.reader.targets(row, 32, view)
            for kind in ("summary", "patch"):
                assert np.array_equal(got[kind], want[kind][row, view]), (row, view, kind)
    plain = zarr.open_array(f"{new}/teachers/{TEACHER}/blocks/2/r32/patch", mode="r")[:, 0]  # view 2, plain zarr
    assert np.array_equal(plain, want["patch"][:, 2])
    assert load_stats(group, 32) is not None  # the statistics are current in the new store
    assert cache_json(["verify", "--json", new])["ok"]


@pytest.fixture()
def legacy(tmp_path) -> Path:
    copy = tmp_path / "old.zarr"
    shutil.copytree(LEGACY, copy)
    return copy


def test_upgrade_converts_verifies_and_leaves_the_old_store_unchanged(legacy, tmp_path):
    before, want = _tree_digest(legacy), _legacy_targets(legacy)
    new = str(tmp_path / "new.zarr")
    result = cache_json(["upgrade", str(legacy), "--out", new, "--json"])
    assert result["teachers"][TEACHER] == {"chunks_converted": 6, "chunks_verified": 6, "stats": [32]}
    _check_upgraded(new, want)
    old_stats = load_stats(FeatureStore.open(legacy, legacy=True).teacher(TEACHER), 32)
    new_stats = load_stats(FeatureStore.open(new).teacher(TEACHER), 32)
    for name in old_stats:
        np.testing.assert_array_equal(new_stats[name], old_stats[name])
    assert _tree_digest(legacy) == before
    again = cache_json(["upgrade", str(legacy), "--out", new, "--json"])  # nothing left to do; checked again
    assert again["teachers"][TEACHER] == {"chunks_converted": 0, "chunks_verified": 6, "stats": [32]}


@pytest.mark.slow
@pytest.mark.parametrize("point", ["chunk-data", "chunk-done", "teacher-staged", "store-staged"])
def test_upgrade_killed_mid_way_completes_when_run_again(legacy, tmp_path, point):
    want, new = _legacy_targets(legacy), str(tmp_path / "new.zarr")
    argv = [sys.executable, "-m", "eupe.cache_tools.cli", "upgrade", str(legacy), "--out", new]
    killed = subprocess.run(argv, env={**os.environ, FAILPOINT_ENV: point}, capture_output=True, cwd=tmp_path)
    assert killed.returncode == -signal.SIGKILL
    assert subprocess.run(argv, capture_output=True, cwd=tmp_path).returncode == 0
    _check_upgraded(new, want)


def test_upgrade_refuses_a_damaged_old_chunk_naming_it(legacy, tmp_path, capsys):
    shard = legacy / "teachers" / TEACHER / "r32" / "patch" / "codes" / "c" / "1" / "0" / "0" / "0"
    data = bytearray(shard.read_bytes())
    data[5] ^= 0xFF
    shard.write_bytes(bytes(data))
    capsys.readouterr()
    assert cache_main(["upgrade", str(legacy), "--out", str(tmp_path / "new.zarr")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "r32/patch/codes chunk 1" in err[0] and "damaged" in err[0], err
