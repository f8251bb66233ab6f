"""A training run nobody can silently corrupt (issue 21 items 1, 2, 3, 5).

Each test injects one fault into a real run (statistics recomputed between checkpoint and resume,
NaN targets with re-signed checksums, a mismatched re-run, truncated or torn run-directory files, a
full disk) and asserts the outcome: the uninterrupted run's losses exactly, or one ``Error:`` line
with exit 2 naming the file and the fix. Stage-2 runs of a test-scale ViT-T against a cached
test-scale teacher, 12 photos (no Stage 1 needed).
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
TEACHER = "dinov3_hplus"


def _losses(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "losses.jsonl").read_text().splitlines()]


def _totals(run: Path) -> list[float]:
    return [r["total"] for r in _losses(run)]


def _args(store: str, shards: str, run: Path, *overrides: str) -> list[str]:
    return ["--stage", "2", "--config", str(CONFIGS / "tiny_stage2.yaml"), f"out={run}", f"data.store={store}",
            f"data.shards={shards}", "teachers=[{name: " + TEACHER + ", test_scale: true}]", "iterations=8",
            "checkpoint_every=2", "keep_checkpoints=3", *overrides]


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("Error: "), err
    return err[0]


@pytest.fixture(scope="module")
def base(tmp_path_factory, photo_shards):
    """A cached test-scale teacher and the uninterrupted reference run of 8 steps."""
    root = tmp_path_factory.mktemp("runsafety")
    store = str(root / "teacher.zarr")
    assert cache_main(["extract", "--data", photo_shards, "--out", store, "--views", "2", "--limit", "12",
                       "--images-per-chunk", "4", "--num-workers", "0", "--teacher", TEACHER, "--test-scale",
                       "--resolution", "64", "--codec", "fp16"]) == 0
    reference = root / "reference"
    assert train_main(_args(store, photo_shards, reference)) == 0
    return {"root": root, "store": store, "shards": photo_shards, "reference": _totals(reference)}


def _store_copy(base, tmp_path: Path) -> str:
    store = tmp_path / "store.zarr"
    shutil.copytree(base["store"], store)
    return str(store)


# --- item 1: the statistics a run starts with are frozen in its directory -----------------------

def test_recomputed_store_statistics_do_not_change_a_resumed_run(base, tmp_path, capsys):
    store, run = _store_copy(base, tmp_path), tmp_path / "run"
    assert train_main(_args(store, base["shards"], run, "max_steps=4")) == 0
    assert (run / "stats" / f"{TEACHER}_r64.npz").is_file()
    assert cache_main(["stats", store, "--sample", "5", "--seed", "7"]) == 0  # other statistics in the store
    capsys.readouterr()
    assert train_main(_args(store, base["shards"], run)) == 0
    out = capsys.readouterr().out
    assert (f"warning: the store's normalization statistics of {TEACHER} r64 differ from the ones this run "
            "started with") in out
    np.testing.assert_allclose(_totals(run), base["reference"], rtol=1e-6)
    fresh = tmp_path / "fresh"  # a new run does adopt the store's new statistics
    assert train_main(_args(store, base["shards"], fresh, "max_steps=2")) == 0
    assert not np.allclose(_totals(fresh), base["reference"][:2], rtol=1e-3)
