"""`eupe-cache plan`: per-view costs measured through a real temporary store, estimates consistent with them."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from eupe.cache_tools import commands
from eupe.cache_tools.cli import main
from eupe.store.codecs.haar import grid_shape
from eupe.store.plan import Costs, Run, Shape, ViewCost, estimate, measure_costs, realistic_views


def _plan_json(args: list[str], capsys) -> dict:
    assert main(["plan", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_plan_values_are_consistent_with_the_measured_costs(capsys):
    threads = torch.get_num_threads()
    data = _plan_json(["--teacher", "dinov2s_imgfocus", "--shape", "64x96x48", "--codec", "fp16,int8",
                       "--images", "1000", "--views", "3", "--samples-per-s", "500", "--gpus", "2",
                       "--images-per-chunk", "10", "--image-bytes", "50000", "--stats-views", "100"], capsys)
    assert torch.get_num_threads() == threads  # measured on one thread, restored after
    assert data["run"] == {"images": 1000, "views": 3, "samples_per_s": 500.0, "gpus": 2, "images_per_chunk": 10,
                           "image_bytes": 50000, "stats_views": 100}
    values = {"dinov2s_imgfocus": 256 * 384 + 384, "64x96x48": 64 * 96 + 48}  # DINOv2-S at 224 px, patch 14
    by_codec = {row["codec"]: row for row in data["codecs"]}
    assert set(by_codec) == {"fp16", "int8"}
    for codec, row in by_codec.items():
        teachers = row["teachers"]
        assert set(teachers) == set(values)
        for name, t in teachers.items():
            assert t["store_bytes"] == 1000 * 3 * t["bytes_per_view"]
            assert t["files"] == 100 * t["files_per_chunk"]  # 1000 images in chunks of 10
            assert t["bytes_per_value"] == pytest.approx(t["bytes_per_view"] / values[name])
            assert t["stats_s_one_core"] == pytest.approx(100 * t["stats_ms"] / 1e3)
            assert t["full_stats_h_one_core"] == pytest.approx(3000 * t["stats_ms"] / 3.6e6)
            assert min(t["read_ms"], t["read_decode_ms"], t["encode_ms"], t["stats_ms"]) > 0
        view_bytes = sum(t["bytes_per_view"] for t in teachers.values())
        assert row["bytes_per_view"] == pytest.approx(view_bytes)
        assert row["store_bytes"] == pytest.approx(3000 * view_bytes)
        assert row["read_bytes_per_s_per_gpu"] == pytest.approx(500 * (view_bytes + 50000))
        cpu = data["render_ms"] + sum(t["read_decode_ms"] for t in teachers.values())
        gpu = data["render_ms"] + sum(t["read_ms"] for t in teachers.values())
        assert row["cpu_ms_per_sample"] == pytest.approx({"decode_on_cpu": cpu, "decode_on_gpu": gpu})
        assert row["cores_per_gpu"] == pytest.approx({"decode_on_cpu": cpu / 2, "decode_on_gpu": gpu / 2})
    # views, status, error, summary, patch, manifest: a view's components share one file, whatever the codec
    assert by_codec["fp16"]["teachers"]["64x96x48"]["files_per_chunk"] == 6
    assert by_codec["int8"]["teachers"]["64x96x48"]["files_per_chunk"] == 6
    fp16 = by_codec["fp16"]["teachers"]["dinov2s_imgfocus"]["bytes_per_value"]
    int8 = by_codec["int8"]["teachers"]["dinov2s_imgfocus"]["bytes_per_value"]
    assert 1.6 < fp16 < 2.05 and 0.5 < int8 < 1.0  # real DINOv2-S features: 1.84 and 0.93 (docs/benchmarks.md)
    assert data["render_ms"] > 0 and "256 px" in data["render_source"]


def test_estimate_is_the_arithmetic_of_the_costs():
    shapes = [Shape("a", 4, 2, 2), Shape("b", 9, 3, 1)]
    costs = Costs(shapes=shapes, codecs=["x"],
                  per_view={"a": {"x": ViewCost(100.0, 5.0, 1.0, 2.0, 2.5, 7)},
                            "b": {"x": ViewCost(50.0, 4.0, 0.5, 1.5, 2.0, 6)}},
                  render_ms=3.0, render_source="test")
    [row] = estimate(Run(images=10, views=2, samples_per_s=1000, gpus=4, images_per_chunk=3, image_bytes=1000,
                         stats_views=10), costs)
    assert row["teachers"]["a"]["files"] == 4 * 7 and row["teachers"]["b"]["files"] == 4 * 6  # ceil(10 / 3) chunks
    assert row["teachers"]["a"]["bytes_per_value"] == 100 / 10 and row["teachers"]["b"]["bytes_per_value"] == 50 / 28
    assert row["store_bytes"] == 10 * 2 * 150 and row["read_bytes_per_s_per_gpu"] == 1000 * 1150
    assert row["cpu_ms_per_sample"] == {"decode_on_cpu": 6.5, "decode_on_gpu": 4.5}
    assert row["cores_per_gpu"] == {"decode_on_cpu": 6.5, "decode_on_gpu": 4.5}
    assert row["extract_cpu_ms_per_view"] == 9.0 and row["teachers"]["a"]["stats_s_one_core"] == 10 * 2.5 / 1e3
    assert row["teachers"]["b"]["full_stats_h_one_core"] == 10 * 2 * 2.0 / 3.6e6


def test_realistic_views_are_smooth_and_seeded():
    shape = Shape("s", 256, 64, 32)
    summary, patch = realistic_views(np.random.default_rng(1), 3, shape)
    assert summary.shape == (3, 32) and patch.shape == (3, 256, 64) and patch.dtype == np.float32
    h, w = grid_shape(256)
    g = patch.reshape(3, h, w, 64) - patch.reshape(3, h, w, 64).mean((1, 2), keepdims=True)
    neighbours = (g[:, 1:] * g[:, :-1]).sum() / math.sqrt((g[:, 1:] ** 2).sum() * (g[:, :-1] ** 2).sum())
    assert 0.5 < neighbours < 0.95  # real DINOv2-S patch tokens: 0.74
    again = realistic_views(np.random.default_rng(1), 3, shape)[1]
    other = realistic_views(np.random.default_rng(2), 3, shape)[1]
    assert np.array_equal(patch, again) and not np.array_equal(patch, other)


def test_paper_defaults_measure_in_well_under_a_minute():
    costs = measure_costs([Shape("1024x1536", 1024, 1536, 1536)], ["fp16", "int8", "int6", "int4", "compact", "tiny"])
    assert costs.seconds < 60
    bpv = {c: costs.per_view["1024x1536"][c].bytes_per_view for c in costs.codecs}
    assert bpv["tiny"] < bpv["compact"] < bpv["int8"] < bpv["fp16"] and bpv["int4"] < bpv["int6"] < bpv["int8"]


def test_help_explains_every_option(capsys):
    assert main(["plan", "--help"]) == 0
    text = capsys.readouterr().out
    for param in commands.plan.params:
        assert param.help and param.opts[0] in text, param.name


@pytest.mark.parametrize("args", [["--shape", "10x0"], ["--shape", "abc"], ["--codec", "nope"], ["--teacher", "nope"],
                                  ["--images", "0"], ["--codec", ","], ["--shape", "100000x100000"],
                                  ["--samples-per-s", "0"], ["--shape", "4x4", "--shape", "4x4"]])
def test_bad_input_is_one_error_line(args, capsys):
    assert main(["plan", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("Error") and "Traceback" not in "\n".join(err)
