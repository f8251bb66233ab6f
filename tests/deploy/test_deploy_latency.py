"""Latency helpers: medians of real timings, and eager vs .pte rows."""

from __future__ import annotations

import time

import pytest
import torch

from eupe.deploy.latency import bench_eager_vs_pte, median_latency_ms


def test_median_latency_of_a_sleep():
    calls = []

    def fn():
        calls.append(1)
        time.sleep(0.004)

    ms = median_latency_ms(fn, repeats=5, warmup=1)
    assert len(calls) == 6 and 4.0 <= ms < 100.0
    with pytest.raises(ValueError):
        median_latency_ms(fn, repeats=0)


def test_bench_eager_vs_pte_rows(tiny_vit, vit_pte):
    rows = bench_eager_vs_pte(tiny_vit, {64: {"fp32": vit_pte}}, repeats=3)
    assert len(rows) == 1
    row = rows[0]
    assert (row["student"], row["resolution"], row["program"]) == ("vit_t", 64, "fp32")
    assert row["eager_ms"] > 0 and row["pte_ms"] > 0
    assert row["speedup"] == pytest.approx(row["eager_ms"] / row["pte_ms"])
    assert row["torch_threads"] == torch.get_num_threads() and row["xnnpack_threads"] >= 1
