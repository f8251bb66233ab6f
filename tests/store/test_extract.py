"""eupe-cache extract/info/verify/stats end to end on real webdataset shards of real photos."""

from __future__ import annotations

import signal
import time

import numpy as np
import pytest
import torch
import zarr
from store_helpers import cache_json, cache_json_rc, cli_subprocess, run_extract, teacher_arrays, tiny_args

from eupe.data.shards import ShardReader
from eupe.models.teachers import create_teacher
from eupe.store.stats import load_stats
from eupe.store.store import FAILED, OK, FeatureStore
from eupe.views.renderer import render
from eupe.views.source import open_image
from eupe.views.spec import ViewSpec


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory, photo_shards) -> str:
    out = str(tmp_path_factory.mktemp("store") / "feat.zarr")
    assert run_extract(*tiny_args(photo_shards, out)) == 0
    return out


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def test_store_layout_is_plain_zarr(tiny_store):
    root = zarr.open_group(tiny_store, mode="r")
    assert root.attrs["format"] == "eupe-feature-store" and root.attrs["views_per_image"] == 2
    assert root["images/keys"].shape == (12,) and root["images/keys"][0] != ""
    group = root["teachers/dinov3_hplus"]
    assert group.attrs["resolutions"] == [64] and group.attrs["grids"] == [[4, 4]]
    assert group["views"].shape == (12, 2, len(root.attrs["view_fields"]))
    assert group["r64/patch"].shape == (12, 2, 4, 4, 64) and group["r64/patch"].dtype == np.float32  # decoded
    assert group["r64/summary"].shape == (12, 2, 64)
    store = FeatureStore.open(tiny_store).teacher("dinov3_hplus")
    np.testing.assert_array_equal(group["r64/patch"][5, 1], store.reader.targets(5, 64, 1)["patch"])
    assert (group["manifest"][:, 0, 0] > 0).all() and (group["status"][:] == OK).all()


def test_a_numpy_integer_row_reads_like_an_int(tiny_store):
    """Rows from numpy (``np.flatnonzero``, a plan's permutation) index the store like Python ints."""
    group = FeatureStore.open(tiny_store).teacher("dinov3_hplus")
    for view in (1, slice(None)):
        want, got = group.reader.targets(5, 64, view), group.reader.targets(np.int64(5), 64, view)
        for kind in ("summary", "patch"):
            np.testing.assert_array_equal(got[kind], want[kind])


def test_cached_targets_equal_the_online_teacher_on_the_replayed_view(tiny_store):
    store = FeatureStore.open(tiny_store)
    group = store.teacher("dinov3_hplus")
    teacher = create_teacher("dinov3_hplus", test_scale=True)
    reader = ShardReader(store.shard_index())
    for row in (0, 5, 11):
        image = open_image(reader.read(row))
        for k in range(2):
            view = ViewSpec.from_array(group.reader.views(row)[k])
            with torch.no_grad():
                fresh = teacher(render(image, view, 64)[None])
            cached = group.reader.targets(row, 64, k)
            assert _cosine(cached["patch"], fresh["patch"][0].numpy()).min() >= 0.999
            assert _cosine(cached["summary"], fresh["summary"][0].numpy()) >= 0.999
            np.testing.assert_allclose(cached["patch"], fresh["patch"][0].numpy(), atol=2e-2, rtol=2e-2)
    # the K views of an image are different crops, not copies
    assert not np.allclose(group.reader.targets(0, 64, 0)["patch"], group.reader.targets(0, 64, 1)["patch"])


def test_rerunning_a_complete_extraction_does_no_work(tiny_store, photo_shards, capsys):
    before = teacher_arrays(tiny_store, "dinov3_hplus")
    assert run_extract(*tiny_args(photo_shards, tiny_store)) == 0
    assert "dinov3_hplus: 0 images" in capsys.readouterr().out
    after = teacher_arrays(tiny_store, "dinov3_hplus")
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_a_store_built_differently_is_refused_naming_the_difference(tiny_store, photo_shards, capsys):
    assert run_extract(*tiny_args(photo_shards, tiny_store, "--views", "1")) == 2
    assert "--views can only grow a store (pass --views 2 or more)" in capsys.readouterr().err
    assert run_extract(*tiny_args(photo_shards, tiny_store, "--codec", "int8")) == 2
    assert "codec" in capsys.readouterr().err


def test_unknown_teacher_and_missing_weights_fail_before_any_work(tmp_path, photo_shards, capsys):
    out = tmp_path / "never.zarr"
    assert run_extract("--teacher", "nope", "--data", photo_shards, "--out", str(out)) == 2
    assert "valid names" in capsys.readouterr().err
    assert run_extract("--teacher", "dinov3_hplus", "--weights", str(tmp_path / "w.safetensors"),
                       "--data", photo_shards, "--out", str(out)) == 2
    assert "w.safetensors does not exist" in capsys.readouterr().err
    assert not out.exists()


def test_second_teacher_shares_the_store_without_touching_the_first(tmp_path, photo_shards):
    out = str(tmp_path / "two.zarr")
    assert run_extract(*tiny_args(photo_shards, out)) == 0
    first = teacher_arrays(out, "dinov3_hplus")
    args = tiny_args(photo_shards, out)
    args[args.index("dinov3_hplus")] = "pelang_g"
    args[args.index("64")] = "56"  # patch 14
    assert run_extract(*args) == 0
    store = FeatureStore.open(out)
    assert store.teacher_names() == ["dinov3_hplus", "pelang_g"]
    second = store.teacher("pelang_g")
    assert second.grids[56] == (4, 4)
    np.testing.assert_array_equal(second.group["views"][:], first["views"])  # same views for both
    after = teacher_arrays(out, "dinov3_hplus")
    assert all(np.array_equal(first[k], after[k]) for k in first)


def test_multiple_resolutions_store_each_view_at_each(tmp_path, photo_shards):
    out = str(tmp_path / "multi.zarr")
    assert run_extract(*tiny_args(photo_shards, out, "--resolution", "32,64", "--limit", "4")) == 0
    group = FeatureStore.open(out).teacher("dinov3_hplus")
    assert group.resolutions == [32, 64] and group.grids == {32: (2, 2), 64: (4, 4)}
    assert FeatureStore.open(out).num_images == 4
    small, large = group.reader.targets(1, 32, 0), group.reader.targets(1, 64, 0)
    assert small["patch"].shape == (2, 2, 64) and large["patch"].shape == (4, 4, 64)


def test_corrupt_image_is_recorded_and_the_rest_complete(tmp_path, corrupt_shard, capsys):
    out = str(tmp_path / "c.zarr")
    assert run_extract(*tiny_args(corrupt_shard, out)) == 0
    group = FeatureStore.open(out).teacher("dinov3_hplus")
    assert group.reader.status().tolist() == [OK, FAILED, OK]
    assert group.chunks.done_flags().all()
    [(key, reason)] = group.reader.failures()
    assert key == "broken" and reason
    from eupe.cache_tools.cli import main

    assert main(["info", out]) == 0
    assert "failed input broken" in capsys.readouterr().out


def test_unreadable_shard_is_recorded_and_others_proceed(tmp_path, photo_shards, capsys):
    from eupe.data.shards import expand_shards

    shards = expand_shards(photo_shards)
    broken = tmp_path / "broken.tar"
    broken.write_bytes(open(shards[1], "rb").read()[:3000])
    data = "::".join([shards[0], str(broken), shards[2]])
    out = str(tmp_path / "s.zarr")
    assert run_extract(*tiny_args(data, out)) == 0
    assert cache_json(["info", "--json", out])["dataset"]["num_images"] == 8
    failed = cache_json(["info", "--json", out])["dataset"]["failed_shards"]
    assert [f["shard"] for f in failed] == [str(broken)] and "truncated" in failed[0]["reason"]


def test_info_json_reports_identity_counts_and_size(tiny_store):
    info = cache_json(["info", "--json", tiny_store])
    teacher = info["teachers"]["dinov3_hplus"]
    assert teacher["weights_sha256"] == create_teacher("dinov3_hplus", test_scale=True).fingerprint
    assert teacher["preprocessing"]["mean"] == [0.485, 0.456, 0.406]
    assert teacher["codec"]["name"] == "fp16" and teacher["complete"] and teacher["ok"] == 12
    assert info["dataset"]["num_images"] == 12 and len(info["dataset"]["keys_sha256"]) == 64
    assert teacher["images_done"] == 12 and teacher["bytes_written"] > 12 * 2 * 17 * 64  # fp16 ~2 B/value


def test_verify_passes_then_detects_a_corrupted_chunk(tmp_path, photo_shards):
    out = str(tmp_path / "v.zarr")
    assert run_extract(*tiny_args(photo_shards, out)) == 0
    report = cache_json_rc(["verify", "--json", "--teacher-check", "4", "--test-scale", out])
    assert report[0] == 0 and report[1]["ok"]
    check = report[1]["teachers"]["dinov3_hplus"]["check"]
    assert check["views"] == 4 and check["mean_cosine"] >= 0.9999
    # where the loss looks: normalized-space fidelity and the smooth-L1 floor are reported too (fp16 here)
    assert check["norm_cosine"] >= 0.999 and 0 <= check["smooth_l1_floor"] < 1e-4
    chunk = tmp_path / "v.zarr" / "teachers" / "dinov3_hplus" / "r64" / "patch" / "c" / "3" / "0" / "0" / "0" / "0"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    rc, report = cache_json_rc(["verify", "--json", out])
    assert rc == 1 and not report["ok"]
    [problem] = report["teachers"]["dinov3_hplus"]["corrupt"]
    keys = FeatureStore.open(out).keys
    assert problem["chunk"] == 3 and problem["keys"] == [str(keys[6]), str(keys[7])]


def test_verify_reports_incomplete_images(tmp_path, photo_shards):
    out = str(tmp_path / "inc.zarr")
    assert run_extract(*tiny_args(photo_shards, out)) == 0
    FeatureStore.open(out, mode="a").teacher("dinov3_hplus").writer.reset_chunk(1)
    rc, report = cache_json_rc(["verify", "--json", out])
    keys = FeatureStore.open(out).keys
    assert rc == 1 and report["teachers"]["dinov3_hplus"]["incomplete"] == [str(keys[2]), str(keys[3])]


def test_stats_are_float64_moments_of_the_decoded_targets(tiny_store):
    from eupe.cache_tools.cli import main

    assert main(["stats", tiny_store]) == 0
    group = FeatureStore.open(tiny_store).teacher("dinov3_hplus")
    stats = load_stats(group, 64)
    patches = np.concatenate([group.reader.targets(r, 64)["patch"].reshape(-1, 64) for r in range(12)]).astype(np.float64)
    summaries = np.concatenate([group.reader.targets(r, 64)["summary"] for r in range(12)]).astype(np.float64)
    np.testing.assert_allclose(stats["patch_mean"], patches.mean(0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(stats["patch_std"], patches.std(0, ddof=1), rtol=1e-9)
    np.testing.assert_allclose(stats["summary_mean"], summaries.mean(0), rtol=1e-9, atol=1e-12)
    assert stats["patch_mean"].dtype == np.float64 and stats["patch_mean"].shape == (64,)


def test_killed_extraction_resumes_to_identical_arrays(tmp_path, photo_shards):
    reference = str(tmp_path / "ref.zarr")
    assert run_extract(*tiny_args(photo_shards, reference, "--images-per-chunk", "1")) == 0
    out = str(tmp_path / "killed.zarr")
    args = ["extract", *tiny_args(photo_shards, out, "--images-per-chunk", "1", "--batch-size", "1")]
    proc = cli_subprocess(args)
    done_path = tmp_path / "killed.zarr" / "teachers" / "dinov3_hplus" / "manifest" / "c"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (done_path.exists() and any(done_path.iterdir())):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = zarr.open_group(out, mode="r")["teachers/dinov3_hplus/manifest"][:, 0, 0] > 0
    assert 1 <= done.sum() < 12, "the run should have been killed part-way"
    assert run_extract(*tiny_args(photo_shards, out, "--images-per-chunk", "1")) == 0
    expected, resumed = teacher_arrays(reference, "dinov3_hplus"), teacher_arrays(out, "dinov3_hplus")
    assert expected.keys() == resumed.keys()
    for name in expected:
        np.testing.assert_array_equal(resumed[name], expected[name], err_msg=name)


def test_two_processes_equal_one(tmp_path, photo_shards):
    single = str(tmp_path / "one.zarr")
    assert run_extract(*tiny_args(photo_shards, single)) == 0
    out = str(tmp_path / "two.zarr")
    procs = [cli_subprocess(["extract", *tiny_args(photo_shards, out, "--rank", str(r), "--world-size", "2")])
             for r in (1, 0)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    expected, parallel = teacher_arrays(single, "dinov3_hplus"), teacher_arrays(out, "dinov3_hplus")
    for name in expected:
        np.testing.assert_array_equal(parallel[name], expected[name], err_msg=name)


@pytest.mark.parametrize("codec", ["int8", "int6", "int4", "compact", "tiny"])
def test_every_codec_round_trips_through_the_store(tmp_path, photo_shards, tiny_store, codec):
    """Targets read back from a store of each codec agree with the fp16 store within the codec's bound."""
    from eupe.store.codecs.registry import get_codec

    out = str(tmp_path / f"{codec}.zarr")
    assert run_extract(*tiny_args(photo_shards, out, "--limit", "4", "--codec", codec)) == 0
    lossy, reference = FeatureStore.open(out).teacher("dinov3_hplus"), FeatureStore.open(tiny_store).teacher("dinov3_hplus")
    np.testing.assert_array_equal(lossy.group["views"][:], reference.group["views"][:4])
    bound = get_codec(codec).min_cosine
    for row in range(4):
        got, want = lossy.reader.targets(row, 64), reference.reader.targets(row, 64)
        assert got["patch"].shape == want["patch"].shape == (2, 4, 4, 64)
        assert _cosine(got["patch"], want["patch"]).mean() >= bound - 1e-4
        assert _cosine(got["summary"], want["summary"]).mean() >= bound - 1e-4
        one = lossy.reader.targets(row, 64, 1)  # a single view decodes like the slice of all views
        np.testing.assert_allclose(one["patch"], got["patch"][1], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(one["summary"], got["summary"][1], rtol=1e-6, atol=1e-6)


def test_launcher_ranks_divide_the_work(tmp_path, photo_shards):
    """Under torchrun (what `accelerate launch --multi_gpu` uses) ranks come from the launcher."""
    import subprocess
    import sys

    single = str(tmp_path / "one.zarr")
    assert run_extract(*tiny_args(photo_shards, single)) == 0
    out = str(tmp_path / "launched.zarr")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "eupe.cache_tools.cli",
           "extract", *tiny_args(photo_shards, out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("dinov3_hplus:")]
    assert sorted(int(line.split()[1]) for line in lines) == [6, 6]  # 12 images, 6 chunks of 2, split 3 + 3
    expected, launched = teacher_arrays(single, "dinov3_hplus"), teacher_arrays(out, "dinov3_hplus")
    for name in expected:
        np.testing.assert_array_equal(launched[name], expected[name], err_msg=name)


def test_summary_and_patch_widths_may_differ(tmp_path, photo_shards):
    """PE-core's summary is its projected embedding (narrower or wider than its patch tokens)."""
    out = str(tmp_path / "pe.zarr")
    args = ["--teacher", "pecore_g", "--test-scale", "--data", photo_shards, "--out", out, "--views", "2",
            "--resolution", "56", "--images-per-chunk", "4", "--num-workers", "0", "--codec", "int8", "--limit", "4"]
    assert run_extract(*args) == 0
    group = FeatureStore.open(out).teacher("pecore_g")
    teacher = create_teacher("pecore_g", test_scale=True)
    assert (group.summary_dim, group.dim) == (teacher.summary_dim, teacher.dim) and group.summary_dim != group.dim
    image = open_image(ShardReader(FeatureStore.open(out).shard_index()).read(1))
    with torch.no_grad():
        fresh = teacher(render(image, ViewSpec.from_array(group.reader.views(1)[0]), 56)[None])
    cached = group.reader.targets(1, 56, 0)
    assert _cosine(cached["summary"], fresh["summary"][0].numpy()) >= 0.999
    assert _cosine(cached["patch"], fresh["patch"][0].numpy()).min() >= 0.99


def test_default_view_seed_differs_between_a_proxy_store_and_its_teachers_store(tmp_path, photo_shards):
    """Stage 2's store must not replay the views Stage 1 trained the proxy on (issue: how often a view repeats)."""
    from eupe.store.extract import derived_seed

    first, second = str(tmp_path / "stage1.zarr"), str(tmp_path / "stage2.zarr")
    assert run_extract(*tiny_args(photo_shards, first, "--limit", "4")) == 0
    pelang = [a if a != "dinov3_hplus" else "pelang_g" for a in tiny_args(photo_shards, second, "--limit", "4")]
    assert run_extract(*[a if a != "64" else "56" for a in pelang]) == 0
    one, two = FeatureStore.open(first), FeatureStore.open(second)
    assert one.params.seed == derived_seed(["dinov3_hplus"]) != two.params.seed == derived_seed(["pelang_g"])
    assert not np.allclose(one.teacher("dinov3_hplus").reader.views(0), two.teacher("pelang_g").reader.views(0))
    # a later teacher added to an existing store takes that store's seed (no --seed needed)
    added = [a if a != "dinov3_hplus" else "pelang_g" for a in tiny_args(photo_shards, first, "--limit", "4")]
    assert run_extract(*[a if a != "64" else "56" for a in added]) == 0
    store = FeatureStore.open(first)
    np.testing.assert_array_equal(store.teacher("pelang_g").reader.views(0), store.teacher("dinov3_hplus").reader.views(0))


def test_a_rerun_without_chunk_size_or_seed_takes_the_stores(tiny_store, photo_shards, capsys):
    """A plain re-run of a store made with --images-per-chunk 2 resumes it (the default, 256, is a new store's)."""
    args = tiny_args(photo_shards, tiny_store)
    i = args.index("--images-per-chunk")
    assert run_extract(*(args[:i] + args[i + 2:])) == 0
    assert "dinov3_hplus: 0 images" in capsys.readouterr().out
