"""Read throughput of cached targets: local fast path vs zarr's general path, local and on S3.

Extracts one small store (real photos, test-scale random-init teacher, ``--codec`` at ``--resolution``)
twice, into a local directory and into ``s3://`` on a moto S3 server started on 127.0.0.1 (the one
the tests use, in this process), then reads random (image, view) targets as the trainer does
(``FeatureStore.open(url).teacher(t).reader.targets(row, resolution, view)``) and prints ms per sample:

- local, fast path: direct reads of the shard index and one inner chunk per array (summary, patch:
  a view's codec components are packed in one inner chunk);
- local, zarr path: the same store through zarr-python;
- s3 (moto in its own process, on loopback), range reads: the direct reader on object storage
  (each shard index fetched once, then one concurrent batch of range GETs per sample);
- s3, zarr path: zarr-python's general path, decoding through the ``eupe.features`` zarr codec as a
  notebook does (a shard-index range GET plus a chunk GET per array).

Loopback has no network latency: on a real bucket add about one round trip per request (the s3
lines report requests and round trips per sample, counted at zarr's store API). Every sample is checked against its manifest on first use of a chunk.

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
from eupe.store.store import FeatureStore  # noqa: E402

TEACHER = "dinov3_hplus"


def extract(shards: str, out: str, args: argparse.Namespace) -> None:
    argv = ["extract", "--teacher", TEACHER, "--test-scale", "--data", shards, "--out", out, "--views", "4",
            "--resolution", str(args.resolution), "--codec", args.codec, "--num-workers", "0"]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert cache_main(argv) == 0, f"extract into {out} failed"


def read(group, resolution: int, row: int, view: int, zarr_path: bool) -> dict:
    """One sample's targets: the trainer's call, or plain zarr indexing of the float32 target arrays
    (after the same manifest check of the chunk)."""
    if not zarr_path:
        return group.reader.targets(row, resolution, view)
    group.checks.require_chunk(row // group.store.params.images_per_chunk)
    return {kind: array[row, view] for kind, array in group.reader.target_arrays(resolution).items()}


def per_sample_ms(url: str, resolution: int, picks: list[tuple[int, int]], zarr_path: bool) -> tuple[float, float]:
    """(first pass incl. opening and chunk checks, second pass) ms per sample; a fresh store each time."""
    group = FeatureStore.open(url).teacher(TEACHER)
    out = []
    for _ in range(2):
        start = time.perf_counter()
        for row, view in picks:
            read(group, resolution, row, view, zarr_path)
        out.append((time.perf_counter() - start) / len(picks) * 1e3)
    return out[0], out[1]


def count_requests(url: str, resolution: int, picks: list[tuple[int, int]], zarr_path: bool) -> tuple[float, float]:
    """(requests, round trips) per sample to the object store in the second pass, counted at zarr's
    store API: a batch of range requests is several requests but one round trip (they run concurrently)."""
    group = FeatureStore.open(url).teacher(TEACHER)

    def read_all() -> None:
        for row, view in picks:
            read(group, resolution, row, view, zarr_path)

    read_all()
    store = group.group.store
    calls = {"requests": 0, "trips": 0}
    for method in ("get", "exists", "getsize", "get_partial_values"):
        original = getattr(store, method)

        async def counted(*a, _original=original, _method=method, **kw):
            batch = len(list(a[1])) if _method == "get_partial_values" else 1
            calls["requests"] += batch
            calls["trips"] += 1
            return await _original(*a, **kw)

        object.__setattr__(store, method, counted)
    read_all()
    return calls["requests"] / len(picks), calls["trips"] / len(picks)


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
                ("s3 (moto, loopback), range reads", remote, False), ("s3 (moto, loopback), zarr path", remote, True)]
        for name, url, zarr_path in rows:
            first, second = per_sample_ms(url, args.resolution, picks, zarr_path)
            print(f"  {name:34s} {first:7.2f} ms / {second:7.2f} ms")
        for name, zarr_path in (("range reads", False), ("zarr path", True)):
            requests, trips = count_requests(remote, args.resolution, picks, zarr_path)
            print(f"  s3, {name}: {requests:.1f} requests in {trips:.1f} round trips per sample (second pass)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
