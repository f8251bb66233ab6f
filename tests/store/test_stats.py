"""Normalization statistics from a seeded sample of views or a full pass, on real extracted stores."""

from __future__ import annotations

import numpy as np
import pytest
from store_helpers import run_extract, tiny_args

from eupe.cache_tools.cli import main
from eupe.store.layout import OK, StoreError
from eupe.store.stats import compute_stats, describe_method, load_stats, sample_pairs, save_stats, stats_method
from eupe.store.store import FeatureStore

TEACHER = "dinov3_hplus"


@pytest.fixture(scope="module")
def store(tmp_path_factory, photo_shards) -> str:
    out = str(tmp_path_factory.mktemp("stats") / "feat.zarr")  # 12 images x 2 views, chunks of 2 images
    assert run_extract(*tiny_args(photo_shards, out)) == 0
    return out


def _numpy_stats(group, pairs) -> dict[str, np.ndarray]:
    """Reference: float64 numpy moments over exactly these (row, view) pairs, read one by one."""
    views = [group.reader.targets(int(r), 64, int(k)) for r, k in pairs]
    patch = np.concatenate([v["patch"].reshape(-1, group.dim) for v in views]).astype(np.float64)
    summary = np.stack([v["summary"] for v in views]).astype(np.float64)
    return {"patch_mean": patch.mean(0), "patch_std": patch.std(0, ddof=1),
            "summary_mean": summary.mean(0), "summary_std": summary.std(0, ddof=1)}


def _as_values(moments) -> dict[str, np.ndarray]:
    return {f"{kind}_{what}": getattr(m, what) for kind, m in moments.items() for what in ("mean", "std")}


def _assert_close(got: dict, want: dict) -> None:
    for key, value in want.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-9, atol=1e-12, err_msg=key)


def test_sampled_stats_equal_numpy_over_exactly_the_sampled_views(store):
    group = FeatureStore.open(store).teacher(TEACHER)
    pairs = sample_pairs(group, 7, seed=3)
    assert pairs.shape == (7, 2) and len({tuple(p) for p in pairs}) == 7  # distinct (row, view) pairs
    want = _numpy_stats(group, pairs)
    moments = compute_stats(group, 64, sample=7, seed=3, workers=1)
    _assert_close(_as_values(moments), want)
    assert moments["patch"].count == 7 * 16 and moments["summary"].count == 7
    assert moments["patch"].method == {"full": False, "views": 7, "population": 24, "seed": 3}
    everything = _numpy_stats(group, sample_pairs(group, None))
    assert not np.allclose(want["patch_std"], everything["patch_std"], rtol=1e-3)  # a sample, not the whole


def test_threads_give_the_same_values_bit_for_bit(store, monkeypatch):
    import eupe.store.stats as stats

    group = FeatureStore.open(store).teacher(TEACHER)
    monkeypatch.setattr(stats, "_BLOCK", 2)  # 6 chunks -> 3 blocks of work, so threads really split it
    one = _as_values(compute_stats(group, 64, sample=None, workers=1))
    three = _as_values(compute_stats(group, 64, sample=None, workers=3))
    assert all(np.array_equal(one[k], three[k]) for k in one)
    _assert_close(one, _numpy_stats(group, sample_pairs(group, None)))


def test_full_pass_equals_numpy_over_every_view_and_is_recorded(store, capsys):
    assert main(["stats", "--full", "--workers", "2", store]) == 0
    assert "full pass over 24 views" in capsys.readouterr().out
    group = FeatureStore.open(store).teacher(TEACHER)
    pairs = [(r, k) for r in range(12) for k in range(2)]
    _assert_close(load_stats(group, 64), _numpy_stats(group, pairs))
    assert stats_method(group, 64) == {"full": True, "views": 24, "population": 24, "seed": None}


def test_cli_sample_is_recorded_and_reproducible(store, capsys):
    assert main(["stats", "--sample", "5", "--seed", "2", store]) == 0
    assert "sample of 5 of 24 views (seed 2)" in capsys.readouterr().out
    group = FeatureStore.open(store).teacher(TEACHER)
    first = load_stats(group, 64)
    assert stats_method(group, 64) == {"full": False, "views": 5, "population": 24, "seed": 2}
    _assert_close(first, _numpy_stats(group, sample_pairs(group, 5, seed=2)))
    assert main(["stats", "--sample", "5", "--seed", "2", store]) == 0
    second = load_stats(FeatureStore.open(store).teacher(TEACHER), 64)
    assert all(np.array_equal(first[k], second[k]) for k in first)  # same seed, same values bit for bit
    assert main(["stats", "--sample", "5", "--seed", "4", store]) == 0
    other = load_stats(FeatureStore.open(store).teacher(TEACHER), 64)
    assert not np.array_equal(first["patch_mean"], other["patch_mean"])


def test_a_sample_larger_than_the_store_is_a_full_pass(store):
    group = FeatureStore.open(store).teacher(TEACHER)
    assert sample_pairs(group, 1000).tolist() == [[r, k] for r in range(12) for k in range(2)]
    assert compute_stats(group, 64, sample=1000)["patch"].method["full"] is True


def test_sample_is_uniform_over_pairs(store):
    group = FeatureStore.open(store).teacher(TEACHER)
    status = group.reader.status()
    counts = np.zeros((12, 2))
    for seed in range(2400):
        for row, view in sample_pairs(group, 5, seed, status):
            counts[row, view] += 1
    expected = 2400 * 5 / 24  # 500 draws per pair
    assert np.abs(counts - expected).max() < 0.15 * expected, counts  # ~3 sigma is 0.12


def test_failed_images_and_unfinished_chunks_are_never_sampled(tmp_path, corrupt_shard, photo_shards):
    out = str(tmp_path / "c.zarr")
    assert run_extract(*tiny_args(corrupt_shard, out)) == 0
    group = FeatureStore.open(out).teacher(TEACHER)
    assert sorted({int(r) for r, _ in sample_pairs(group, None)}) == [0, 2]  # row 1 failed to decode
    half = str(tmp_path / "half.zarr")
    assert run_extract(*tiny_args(photo_shards, half, "--rank", "1", "--world-size", "2")) == 0
    group = FeatureStore.open(half).teacher(TEACHER)
    rows = {int(r) for r, _ in sample_pairs(group, 10, seed=1)}
    assert rows and all((r // 2) % 2 == 1 for r in rows)  # only chunks rank 1 wrote
    assert (group.reader.status()[sorted(rows)] == OK).all()


def test_an_empty_store_is_refused_with_one_line(tmp_path, photo_shards, capsys):
    out = str(tmp_path / "none.zarr")
    assert run_extract(*tiny_args(photo_shards, out, "--rank", "1", "--world-size", "2")) == 0
    group = FeatureStore.open(out, mode="a").teacher(TEACHER)
    for chunk in range(group.chunks.num_chunks):
        group.writer.reset_chunk(chunk)
    with pytest.raises(StoreError, match="no usable views"):
        compute_stats(group, 64)
    capsys.readouterr()  # the extraction's own output (its progress line, in a non-terminal)
    assert main(["stats", out]) == 2
    assert capsys.readouterr().err.count("\n") == 1


@pytest.mark.parametrize("args", [["--sample", "0"], ["--full", "--sample", "5"], ["--workers", "0"]])
def test_bad_options_end_in_one_error_line(store, args, capsys):
    assert main(["stats", *args, store]) == 2
    err = capsys.readouterr().err
    assert "Error" in err and "Traceback" not in err


def test_record_of_older_stores_reads_as_full_pass(store):
    group = FeatureStore.open(store, mode="a").teacher(TEACHER)
    moments = compute_stats(group, 64, sample=None)
    moments["patch"].method = {}
    save_stats(group, 64, moments)
    assert stats_method(group, 64) == {} and load_stats(group, 64) is not None
    assert describe_method({}).startswith("full pass") and describe_method(None) == "absent"


def test_cli_defaults_are_the_library_defaults():
    from eupe.cache_tools import commands
    from eupe.store.stats import DEFAULT_SAMPLE, DEFAULT_SEED

    stats = {p.name: p.default for p in commands.stats.params}
    plan = {p.name: p.default for p in commands.plan.params}
    assert stats["sample"] == plan["stats_views"] == DEFAULT_SAMPLE and stats["seed"] == DEFAULT_SEED
