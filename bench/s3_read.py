"""Read throughput of cached targets: local fast path vs zarr's general path, local and on S3.

Extracts one small store (real photos, test-scale random-init teacher, ``--codec`` at ``--resolution``)
twice, into a local directory and into ``s3://`` on a moto S3 server started on 127.0.0.1 (the one
the tests use, in this process), then reads random (image, view) targets as the trainer does
(``FeatureStore.open(url).teacher(t).targets(row, resolution, view)``) and prints ms per sample:

- local, fast path: direct reads of the shard index and one inner chunk per component;
- local, zarr path: the same store through zarr-python (what object stores use);
- s3 (moto in its own process, on loopback), zarr path: shard-index range GETs plus chunk GETs.

Loopback has no network latency: on a real bucket add about one round trip per request (the s3
line reports requests per sample, counted at zarr's store API). Every sample is checked against its manifest on first use of a chunk.

    .venv/bin/python bench/s3_read.py [--samples 200] [--resolution 256] [--codec int8]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "tests" / "store"))
from machine import describe  # noqa: E402
from s3_server import local_s3  # noqa: E402

from eupe.assets import bundled_photos, imagenet_photos, write_photo_shards  # noqa: E402
from eupe.cache_tools.cli import main as cache_main  # noqa: E402
from eupe.store import FeatureStore  # noqa: E402

TEACHER = "dinov3_hplus"


def extract(shards: str, out: str, args: argparse.Namespace) -> None:
    argv = ["extract", "--teacher", TEACHER, "--test-scale", "--data", shards, "--out", out, "--views", "4",
            "--resolution", str(args.resolution), "--codec", args.codec, "--num-workers", "0"]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert cache_main(argv) == 0, f"extract into {out} failed"


def per_sample_ms(url: str, resolution: int, picks: list[tuple[int, int]], zarr_path: bool) -> tuple[float, float]:
    """(first pass incl. opening and chunk checks, second pass) ms per sample; a fresh store each time."""
    group = FeatureStore.open(url).teacher(TEACHER)
    out = []
    for _ in range(2):
        start = time.perf_counter()
        for row, view in picks:
            sel = slice(view, view + 1) if zarr_path else view  # a slice of views takes zarr's path
            group.targets(row, resolution, sel)
        out.append((time.perf_counter() - start) / len(picks) * 1e3)
    return out[0], out[1]


def count_gets(url: str, resolution: int, picks: list[tuple[int, int]]) -> float:
    """Requests to the object store per sample (second pass), counted at zarr's store API."""
    group = FeatureStore.open(url).teacher(TEACHER)
    for row, view in picks:
        group.targets(row, resolution, view)
    store = group.group.store
    calls = {"n": 0}
    for method in ("get", "exists", "getsize"):
        original = getattr(store, method)

        async def counted(*a, _original=original, **kw):
            calls["n"] += 1
            return await _original(*a, **kw)

        object.__setattr__(store, method, counted)
    for row, view in picks:
        group.targets(row, resolution, view)
    return calls["n"] / len(picks)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--codec", default="int8")
    args = parser.parse_args()
    print(f"machine: {describe()}")
    with tempfile.TemporaryDirectory() as tmp, local_s3("bench", own_process=True):
        write_photo_shards(Path(tmp), (bundled_photos() + imagenet_photos())[:24], per_shard=8, max_side=320)
        shards = f"{tmp}/photos-{{000000..000002}}.tar"
        local, remote = f"{tmp}/local.zarr", "s3://bench/store.zarr"
        extract(shards, local, args)
        extract(shards, remote, args)
        group = FeatureStore.open(local).teacher(TEACHER)
        rng = np.random.default_rng(0)
        n, k = group.store.num_images, group.store.params.views_per_image
        picks = [(int(rng.integers(n)), int(rng.integers(k))) for _ in range(args.samples)]
        h, w = group.grids[args.resolution]
        print(f"store: {n} images x {k} views, T={h * w} tokens, D={group.dim}, codec {args.codec}; "
              f"{args.samples} random (image, view) reads, ms per sample (first pass / second pass)")
        rows = [("local, fast path", local, False), ("local, zarr path", local, True),
                ("s3 (moto, loopback), zarr path", remote, False)]
        for name, url, zarr_path in rows:
            first, second = per_sample_ms(url, args.resolution, picks, zarr_path)
            print(f"  {name:32s} {first:7.2f} ms / {second:7.2f} ms")
        gets = count_gets(remote, args.resolution, picks)
        print(f"  s3: {gets:.1f} requests per sample in the second pass (each costs one network round trip on a real bucket)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
