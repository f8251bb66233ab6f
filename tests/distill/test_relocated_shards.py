"""The dataset's identity is its content: shards copied elsewhere, or reached through a symlinked
directory, extend the store and train (and resume) from it; a copy with other content is refused.

The shards are really copied and the originals really moved away; the store is never edited.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from eupe.cache_tools.cli import main as cache_main
from eupe.train.cli import main as train_main

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "train"
PATTERN = "photos-{000000..000002}.tar"


@pytest.fixture(scope="module")
def moved(tmp_path_factory, photo_shards) -> dict:
    """A store extracted from shards in ``orig/``; the shards then live only in ``copy/`` (and ``link/``)."""
    root = tmp_path_factory.mktemp("moved")
    orig = root / "orig"
    shutil.copytree(Path(photo_shards).parent, orig)
    store = root / "f.zarr"
    assert cache_main(_extract_args(orig, store)) == 0
    shutil.copytree(orig, root / "copy")
    orig.rename(root / "gone")  # the recorded paths no longer exist
    (root / "link").symlink_to(root / "copy")
    return {"root": root, "store": store, "copy": root / "copy", "link": root / "link"}


def _extract_args(shards: Path, store: Path, *extra: str) -> list[str]:
    return ["extract", "--teacher", "dinov3_hplus", "--test-scale", "--data", str(shards / PATTERN),
            "--out", str(store), "--views", "2", "--resolution", "64", "--images-per-chunk", "4",
            "--num-workers", "0", "--codec", "fp16", *extra]


def _train(store: Path, out: Path, *overrides: str) -> int:
    return train_main(["--stage", "2", "--config", str(CONFIGS / "tiny_stage2.yaml"), "teachers.0.name=dinov3_hplus",
                       "teachers.0.test_scale=true", f"data.store={store}", f"out={out}", "iterations=6",
                       "checkpoint_every=3", *overrides])


def _totals(run: Path) -> list[float]:
    return [json.loads(line)["total"] for line in (run / "losses.jsonl").read_text().splitlines()]


def test_extract_grows_the_store_from_a_copy_and_through_a_symlink(moved, tmp_path) -> None:
    store = tmp_path / "f.zarr"
    shutil.copytree(moved["store"], store)
    recorded = json.loads((store / "zarr.json").read_text())["attributes"]["dataset"]["shards"]
    assert cache_main(_extract_args(moved["copy"], store, "--views", "3")) == 0
    assert cache_main(_extract_args(moved["link"], store, "--views", "4")) == 0
    assert cache_main(["verify", str(store)]) == 0
    info = json.loads((store / "zarr.json").read_text())["attributes"]["dataset"]
    assert info["shards"] == recorded  # the store is not rewritten: its identity stays its own


@pytest.mark.slow
def test_training_from_a_copy_resumes_through_a_symlink_exactly(moved, tmp_path, capsys) -> None:
    store = moved["store"]
    assert _train(store, tmp_path / "refused") == 2  # the recorded paths are gone: the fix is named
    err = capsys.readouterr().err
    assert "is missing, and 2 more; if the shards moved, set data.shards=PATTERN" in err
    assert not (tmp_path / "refused").exists()
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert _train(store, whole, f"data.shards={moved['copy'] / PATTERN}") == 0
    assert _train(store, split, f"data.shards={moved['link'] / PATTERN}", "max_steps=3", "data.num_workers=1") == 0
    assert _train(store, split, f"data.shards={moved['copy'] / PATTERN}") == 0  # resumed at step 3
    assert "resuming from" in capsys.readouterr().out
    np.testing.assert_allclose(_totals(split), _totals(whole), rtol=1e-5)
    assert len(_totals(whole)) == 6


def test_a_copy_with_other_content_is_refused_naming_the_shard(moved, tmp_path, capsys) -> None:
    other = tmp_path / "other"
    shutil.copytree(moved["copy"], other)
    shutil.copy(other / "photos-000000.tar", other / "photos-000001.tar")  # regenerated under the same name
    assert _train(moved["store"], tmp_path / "run", f"data.shards={other / PATTERN}") == 2
    err = capsys.readouterr().err
    assert f"shard {other / 'photos-000001.tar'} (the store's " in err and "is not the one the store was built" in err
    store = tmp_path / "f.zarr"
    shutil.copytree(moved["store"], store)
    assert cache_main(_extract_args(other, store, "--views", "3")) == 2
    assert "photos-000001.tar" in capsys.readouterr().err
    assert cache_main(_extract_args(other.parent / "nowhere", store, "--views", "3")) == 2  # no shards there
