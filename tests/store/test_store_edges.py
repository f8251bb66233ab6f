"""Smaller edges of a store: --views below what a teacher holds, a backup copy of a teacher group,
a store whose every image failed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from store_helpers import cache_json, cache_json_rc, run_extract, teacher_arrays, tiny_args

from eupe.cache_tools.cli import main as cache_main
from eupe.store.store import FeatureStore


@pytest.fixture(scope="module")
def grown(tmp_path_factory, photo_shards) -> Path:
    """A one-teacher store created with 2 views, grown to 3."""
    out = tmp_path_factory.mktemp("grown") / "f.zarr"
    assert run_extract(*tiny_args(photo_shards, str(out))) == 0
    assert run_extract(*tiny_args(photo_shards, str(out), "--views", "3")) == 0
    return out


def test_views_below_what_the_teacher_holds_is_refused(grown: Path, photo_shards, capsys) -> None:
    before = teacher_arrays(str(grown), "dinov3_hplus")
    # 2 is the store's creation count (root attributes) but the teacher holds 3 views now
    assert run_extract(*tiny_args(photo_shards, str(grown))) == 2  # tiny_args passes --views 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"Error: --views 2: teacher dinov3_hplus already holds 3 views per image in {grown}; --views "
                       "can only grow a store: pass --views 3 or more, or leave --views out to resume with what it holds")
    assert run_extract(*tiny_args(photo_shards, str(grown), "--views", "1")) == 2
    args = tiny_args(photo_shards, str(grown))
    del args[args.index("--views"):args.index("--views") + 2]
    assert run_extract(*args) == 0  # no --views: resumes with what it holds
    assert run_extract(*tiny_args(photo_shards, str(grown), "--views", "3")) == 0
    after = teacher_arrays(str(grown), "dinov3_hplus")
    assert sorted(after) == sorted(before)
    assert all((after[k] == before[k]).all() for k in before if "claims" not in k)


def test_a_backup_copy_of_a_teacher_group_is_not_a_teacher(grown: Path, tmp_path: Path, capsys) -> None:
    store = tmp_path / "f.zarr"
    shutil.copytree(grown, store)
    shutil.copytree(store / "teachers" / "dinov3_hplus", store / "teachers" / "dinov3_hplus.bak")
    assert FeatureStore.open(store).teacher_names() == ["dinov3_hplus"]
    info = cache_json(["info", str(store), "--json"])
    assert list(info["teachers"]) == ["dinov3_hplus"]
    assert info["ignored_groups"] == [{"group": "teachers/dinov3_hplus.bak",
                                       "reason": "a copy of teacher dinov3_hplus's group"}]
    assert cache_main(["info", str(store)]) == 0
    assert ("ignored teachers/dinov3_hplus.bak: a copy of teacher dinov3_hplus's group, not a teacher of this store"
            in capsys.readouterr().out)
    rc, report = cache_json_rc(["verify", str(store), "--json"])
    assert rc == 0 and list(report["teachers"]) == ["dinov3_hplus"]


def _broken_shard(directory: Path, photos, count: int, good: int = 0) -> str:
    from eupe.assets import encode_jpeg
    from eupe.data.shards import write_shards

    samples = []
    for i, photo in enumerate(photos[:count]):
        data = encode_jpeg(photo.path, 96)
        samples.append((f"img{i}", data if i < good else data[: len(data) // 3], "jpg", None))
    write_shards(samples, str(directory / "s-%06d.tar"), per_shard=count)
    return str(directory / "s-000000.tar")


def test_a_store_whose_every_image_failed_fails_verify(tmp_path: Path, photos, capsys) -> None:
    shard = _broken_shard(tmp_path, photos, 3)
    store = str(tmp_path / "f.zarr")
    assert run_extract(*tiny_args(shard, store)) == 0
    rc, report = cache_json_rc(["verify", store, "--json"])
    assert rc == 1 and not report["ok"]
    assert report["teachers"]["dinov3_hplus"]["no_usable_images"] is True
    assert report["teachers"]["dinov3_hplus"]["failed_images"] == 3
    assert cache_main(["verify", store]) == 1
    assert "every image failed: dinov3_hplus has no targets to train on" in capsys.readouterr().out
    # one good image among them: usable, so verify passes (the failures are listed by info)
    partial = tmp_path / "partial"
    partial.mkdir()
    shard = _broken_shard(partial, photos, 3, good=1)
    assert run_extract(*tiny_args(shard, str(partial / "f.zarr"))) == 0
    rc, report = cache_json_rc(["verify", str(partial / "f.zarr"), "--json"])
    assert rc == 0 and report["teachers"]["dinov3_hplus"]["failed_images"] == 2
