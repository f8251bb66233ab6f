"""Growing a store's views (issue 9 pt 3): `extract --views K2` on a store made with K adds a view
block holding views K..K2-1, equal to a store made with K2 from the start, old chunks untouched,
resumable after kill -9, and the trainer uses every complete view."""

from __future__ import annotations

import signal

import numpy as np
import pytest

from eupe.store.layout import FAILPOINT_ENV, StoreIntegrityError
from eupe.store.store import FeatureStore

from store_helpers import cli_subprocess, run_extract, teacher_arrays, tiny_args

TEACHER = "dinov3_hplus"


def _args(data: str, out: str, views: int) -> list[str]:
    args = tiny_args(data, out, "--seed", "5")
    args[args.index("--views") + 1] = str(views)
    return args


@pytest.fixture(scope="module")
def stores(tmp_path_factory, photo_shards) -> dict[str, str]:
    root = tmp_path_factory.mktemp("grow")
    grown, fresh = str(root / "grown.zarr"), str(root / "fresh.zarr")
    assert run_extract(*_args(photo_shards, grown, 2)) == 0
    before = teacher_arrays(grown, TEACHER)
    assert run_extract(*_args(photo_shards, grown, 4)) == 0
    assert run_extract(*_args(photo_shards, fresh, 4)) == 0
    return {"grown": grown, "fresh": fresh, "before": before}


def test_a_grown_store_holds_the_views_and_targets_of_a_store_made_with_k2(stores):
    grown = FeatureStore.open(stores["grown"]).teacher(TEACHER)
    fresh = FeatureStore.open(stores["fresh"]).teacher(TEACHER)
    assert [(b.view_start, b.view_stop) for b in grown.blocks] == [(0, 2), (2, 4)]
    assert grown.blocks.total_views == grown.blocks.complete_views() == 4 == fresh.blocks.complete_views()
    assert grown.blocks[1].group.path == f"teachers/{TEACHER}/blocks/2"
    for row in range(grown.store.num_images):
        for view in range(4):
            np.testing.assert_array_equal(grown.blocks.view_params(row, view), fresh.blocks.view_params(row, view))
            a, b = grown.reader.targets(row, 64, view), fresh.reader.targets(row, 64, view)
            # the teacher ran on batches of other sizes: equal to float32 matmul rounding
            np.testing.assert_allclose(a["patch"], b["patch"], rtol=1e-4, atol=1e-4)
            np.testing.assert_allclose(a["summary"], b["summary"], rtol=1e-4, atol=1e-4)


def test_growing_leaves_every_old_file_untouched(stores):
    after = teacher_arrays(stores["grown"], TEACHER)
    for name, value in stores["before"].items():
        np.testing.assert_array_equal(value, after[name], err_msg=name)
    assert "blocks/2/r64/patch" in after


def test_fewer_views_than_the_store_holds_is_refused(stores, photo_shards, capsys):
    assert run_extract(*_args(photo_shards, stores["grown"], 1)) == 2
    assert "--views can only grow a store" in capsys.readouterr().err
    # below what the teacher holds (4) but not below the store's creation count (2): refused too (issue 21)
    assert run_extract(*_args(photo_shards, stores["grown"], 3)) == 2
    assert "already holds 4 views per image" in capsys.readouterr().err
    assert run_extract(*_args(photo_shards, stores["grown"], 4)) == 0  # what it holds: nothing to do
    plain = _args(photo_shards, stores["grown"], 2)
    i = plain.index("--views")
    assert run_extract(*(plain[:i] + plain[i + 2:])) == 0  # no --views: the store's K, never a growth
    assert FeatureStore.open(stores["grown"]).teacher(TEACHER).blocks.total_views == 4


def test_a_damaged_block_chunk_is_refused_like_any_chunk(stores, tmp_path):
    import shutil

    copy = tmp_path / "copy.zarr"
    shutil.copytree(stores["grown"], copy)
    (copy / "teachers" / TEACHER / "blocks" / "2" / "r64" / "patch" / "c" / "1" / "0" / "0" / "0" / "0").unlink()
    group = FeatureStore.open(str(copy)).teacher(TEACHER)
    group.reader.targets(2, 64, 1)  # block 0 and block 2's other chunks still read
    with pytest.raises(StoreIntegrityError, match="blocks/2/r64/patch chunk 1"):
        group.reader.targets(2, 64, 3)


def test_growth_killed_mid_block_resumes_to_the_uninterrupted_result(stores, photo_shards, tmp_path):
    out = str(tmp_path / "killed.zarr")
    assert run_extract(*_args(photo_shards, out, 2)) == 0
    proc = cli_subprocess(["extract", *_args(photo_shards, out, 4)], env={FAILPOINT_ENV: "chunk-done"})
    assert proc.wait(timeout=600) == -signal.SIGKILL
    group = FeatureStore.open(out).teacher(TEACHER)
    assert group.blocks.total_views == 4 and group.blocks.complete_views() == 2  # the block exists, not complete
    assert run_extract(*_args(photo_shards, out, 4)) == 0
    resumed, uninterrupted = teacher_arrays(out, TEACHER), teacher_arrays(stores["grown"], TEACHER)
    assert resumed.keys() == uninterrupted.keys()
    for name in resumed:
        np.testing.assert_array_equal(resumed[name], uninterrupted[name], err_msg=name)
