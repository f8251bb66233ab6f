"""Can a CPU entropy stage read `compact` codes as fast as a peer copies bf16?  Per view, one thread.

The data-path target (issue 10, point 3) asks the CPU's share of reading a sample's targets to be
<= 1x a plain bf16 peer's read, at <= 0.5 B/value on disk.  The peer only copies 2 B/value; our
reader must also undo an entropy stage.  This bench takes the real ``compact`` codes of
dinov2s_imgfocus (views of the bundled photos, 256 tokens x 384 channels) and times, per view on
one thread, the decompression of the ``codes`` component with:

* ``zstd`` at level 1 (as the store writes it) and 3;
* Blosc's bit shuffle on the zigzag-mapped codes (sign to the low bit, so small magnitudes leave
  the high bit planes zero), then zstd (levels 1 and 5) or LZ4: the entropy-light layouts;
* against the peer's read: ``pread`` of the same view's values as bf16 from a file in the page
  cache (2 B/value; ``bench/datapath.py`` times the whole peer format, tar + safetensors).

It prints bytes per value, ms per view and ns per value for each.  Run::

    .venv/bin/python bench/entropy.py [--views 2]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from numcodecs import Blosc, Zstd, blosc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cache import teacher_features  # noqa: E402
from machine import describe  # noqa: E402

from eupe.store.codecs.registry import get_codec  # noqa: E402


def _zigzag(codes: np.ndarray) -> np.ndarray:
    wide = codes.astype(np.int16)
    return ((wide << 1) ^ (wide >> 15)).astype(np.uint8)  # 0, -1, 1, -2, ... -> 0, 1, 2, 3, ...


def _median_ms(fn, repeats: int = 15) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def measure(views: list[np.ndarray], compressor, transform) -> tuple[float, float]:
    """(bytes per value, median decode ms per view) of ``compressor`` over ``transform(codes)``."""
    size, ms = 0, 0.0
    for codes in views:
        data = np.ascontiguousarray(transform(codes))
        blob = compressor.encode(data)
        assert np.array_equal(np.frombuffer(compressor.decode(blob), np.uint8), data.view(np.uint8).ravel())
        size += len(blob)
        ms += _median_ms(lambda: compressor.decode(blob))
    values = sum(v.size for v in views)
    return size / values, ms / len(views)


def pread_ms(views: list[np.ndarray]) -> float:
    """Median ms to ``pread`` one view's values as bf16 (2 B/value) from a file in the page cache."""
    nbytes = views[0].size * 2
    with tempfile.TemporaryFile() as f:
        f.write(np.zeros(len(views) * views[0].size, dtype=np.uint16).tobytes())
        f.flush()
        fd = f.fileno()
        return float(np.mean([_median_ms(lambda: os.pread(fd, nbytes, v * nbytes)) for v in range(len(views))]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--views", type=int, default=2, help="views per bundled photo")
    args = parser.parse_args()
    blosc.set_nthreads(1)
    Blosc.use_threads = False
    raw, _ = teacher_features("dinov2s_imgfocus", args.views, 16)  # [V, 1+T, D]
    parts = get_codec("compact").encode(np.ascontiguousarray(raw[:, 1:]))
    views = list(parts["codes"])  # V x [T, D] int8
    print(f"machine: {describe()}")
    print(f"{len(views)} views of real compact codes, {views[0].shape[0]} tokens x {views[0].shape[1]} channels; "
          "one thread, median per view")
    print("| layout | B/value | decode ms per view | ns per value | vs the peer's pread |\n|---|---|---|---|---|")
    peer_ms = pread_ms(views)
    rows = {
        "zstd 1 (as stored)": (Zstd(level=1), lambda c: c),
        "zstd 3": (Zstd(level=3), lambda c: c),
        "zigzag + bitshuffle + zstd 1": (Blosc("zstd", 1, Blosc.BITSHUFFLE), _zigzag),
        "zigzag + bitshuffle + zstd 5": (Blosc("zstd", 5, Blosc.BITSHUFFLE), _zigzag),
        "zigzag + bitshuffle + lz4": (Blosc("lz4", 5, Blosc.BITSHUFFLE), _zigzag),
    }
    for name, (compressor, transform) in rows.items():
        per_value, ms = measure(views, compressor, transform)
        print(f"| {name} | {per_value:.3f} | {ms:.3f} | {1e6 * ms / views[0].size:.2f} | {ms / peer_ms:.1f}x |")
    print(f"| peer: pread of bf16 values | 2.000 | {peer_ms:.3f} | {1e6 * peer_ms / views[0].size:.2f} | 1.0x |")


if __name__ == "__main__":
    main()
