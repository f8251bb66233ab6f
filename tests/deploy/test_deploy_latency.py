"""Latency helpers: medians of real timings; eager and .pte timings of a real program."""

from __future__ import annotations

import time

import pytest
import torch

from eupe.deploy.exporters import get_exporter
from eupe.deploy.latency import eager_latency_ms, median_latency_ms, pte_latency_ms, xnnpack_threads


def test_median_latency_of_a_sleep():
    calls = []

    def fn():
        calls.append(1)
        time.sleep(0.004)

    ms = median_latency_ms(fn, repeats=5, warmup=1)
    assert len(calls) == 6 and 4.0 <= ms < 100.0
    with pytest.raises(ValueError):
        median_latency_ms(fn, repeats=0)


def test_eager_and_pte_latency_of_the_same_tiny_vit(tiny_vit, vit_pte):
    eager = eager_latency_ms(tiny_vit, 64, repeats=3)
    pte = get_exporter("executorch").latency_ms(vit_pte, 64, repeats=3)
    assert 0 < eager < 10_000 and 0 < pte < 10_000
    assert 0 < pte_latency_ms(vit_pte, 64, repeats=1) < 10_000
    assert get_exporter("safetensors").latency_ms(vit_pte, 64, repeats=3) is None  # timm weights run as eager
    assert xnnpack_threads() >= 1 and torch.get_num_threads() >= 1
