"""Per-view CPU cost of the feature codecs on the data path, against a plain bf16 peer format.

For each token count (T=256 and T=1024 by default; D=1536 as the proxy and PE-G produce) and each
codec, on one CPU thread (as a writer thread or a DataLoader worker):

* ``B/value``: stored bytes per feature value (zstd level 3, as the store compresses);
* ``encode+zstd``: numpy encode of one view plus zstd of every component (extraction on CPU),
  and ``encode torch``: the same formulas with torch on CPU (``Codec.encode_torch``), no zstd
  (on a GPU this runs on the teacher's device and only zstd stays on the CPU);
* ``read+unzstd``: one random view's compressed components read from a file with ``os.pread`` and
  decompressed: the CPU work left when the step decodes on the GPU (``Codec.decode_torch``);
* ``read+decode numpy`` / ``read+decode torch``: the same plus the CPU decode to float32.

The peer is one bf16 safetensors blob per sample in an uncompressed tar (as Theia stores
features): seek to the member, read it, ``safetensors`` load, bf16 -> float32 in torch.
Features are synthetic ViT-like tokens (per-channel offsets + a spatially smooth field + noise,
three channels x20), so B/value is indicative only: ``bench/cache.py`` has the real teachers.
Medians of thread CPU time over ``--reads`` random views.  Run::

    .venv/bin/python bench/datapath.py [--tokens 256,1024] [--dim 1536] [--views 48]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one core, as a DataLoader worker (set before numpy loads)

import argparse
import io
import statistics
import sys
import tarfile
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe  # noqa: E402

from eupe.store.codecs import CODECS, get_codec, grid_shape  # noqa: E402


def vit_like(views: int, tokens: int, dim: int, seed: int = 0) -> np.ndarray:
    """Synthetic tokens [views, T, D]: channel offsets + smooth field on the patch grid + noise."""
    rng = np.random.default_rng(seed)
    h, w = grid_shape(tokens)
    offset = rng.normal(0, 1, dim).astype(np.float32)
    coarse = rng.normal(0, 1, (views, (h + 3) // 4, (w + 3) // 4, dim)).astype(np.float32)
    field = coarse.repeat(4, 1).repeat(4, 2)[:, :h, :w]  # [V, h, w, D] blocky, then smoothed
    field = 0.5 * (field + np.roll(field, 1, 1))
    field = 0.5 * (field + np.roll(field, 1, 2))
    x = offset + field + rng.normal(0, 0.4, (views, h, w, dim)).astype(np.float32)
    x[..., [5, dim // 2, dim - 3]] *= 20.0
    return x.reshape(views, tokens, dim)  # [V, h, w, D] -> [V, T, D]


def median_ms(fn: Callable[[int], object], count: int, reads: int, seed: int = 0) -> float:
    """Median CPU milliseconds of this thread for ``fn(i)`` over ``reads`` random indices in ``range(count)``.

    Thread CPU time (``time.thread_time``), not wall time: the cost a core pays, unaffected by other
    processes sharing the machine (cache and memory-bandwidth contention still show).
    """
    rng = np.random.default_rng(seed)
    fn(0)  # warm-up
    times = []
    for i in rng.integers(0, count, reads):
        start = time.thread_time()
        fn(int(i))
        times.append(time.thread_time() - start)
    return 1000 * statistics.median(times)


class CodecBlob:
    """Every view's zstd-compressed components in one file, with an offset table (like a shard)."""

    def __init__(self, path: Path, codec_name: str, x: np.ndarray) -> None:
        from numcodecs import Zstd

        self.codec, self.zstd = get_codec(codec_name), Zstd(level=3)
        parts = self.codec.encode(x)
        self.meta = {k: (v.dtype, v.shape[1:]) for k, v in parts.items()}
        self.index: list[dict[str, tuple[int, int]]] = []
        offset, nbytes = 0, 0
        with open(path, "wb") as f:
            for i in range(len(x)):
                entry = {}
                for name, value in parts.items():
                    blob = self.zstd.encode(np.ascontiguousarray(value[i]))
                    f.write(blob)
                    entry[name] = (offset, len(blob))
                    offset += len(blob)
                self.index.append(entry)
        self.nbytes, self.values = offset, x.size
        self.fd = os.open(path, os.O_RDONLY)

    def read(self, i: int) -> dict[str, np.ndarray]:
        """pread + zstd decompress of view ``i``'s components."""
        out = {}
        for name, (offset, size) in self.index[i].items():
            dtype, shape = self.meta[name]
            raw = self.zstd.decode(os.pread(self.fd, size, offset))
            out[name] = np.frombuffer(raw, dtype=dtype).reshape(shape)
        return out

    def close(self) -> None:
        os.close(self.fd)


class PeerTar:
    """One bf16 safetensors blob per sample in an uncompressed tar; member offsets indexed once."""

    def __init__(self, path: Path, x: np.ndarray) -> None:
        from safetensors.torch import save

        with tarfile.open(path, "w") as tar:
            for i, view in enumerate(x):
                blob = save({"patch": torch.from_numpy(view).to(torch.bfloat16)})
                info = tarfile.TarInfo(f"{i:06d}.features.safetensors")
                info.size = len(blob)
                tar.addfile(info, io.BytesIO(blob))
        with tarfile.open(path) as tar:
            self.members = [(m.offset_data, m.size) for m in tar.getmembers()]
        self.nbytes, self.values = sum(s for _, s in self.members), x.size
        self.fd = os.open(path, os.O_RDONLY)

    def read_decode(self, i: int) -> torch.Tensor:
        from safetensors.torch import load

        offset, size = self.members[i]
        return load(os.pread(self.fd, size, offset))["patch"].float()

    def close(self) -> None:
        os.close(self.fd)


def codec_row(tmp: Path, name: str, x: np.ndarray, reads: int) -> dict:
    codec = get_codec(name)
    blob = CodecBlob(tmp / f"{name}.bin", name, x)
    xt = torch.from_numpy(x)
    row = {"what": name, "bytes_per_value": blob.nbytes / blob.values,
           "encode_ms": median_ms(lambda i: [blob.zstd.encode(np.ascontiguousarray(p))
                                             for p in codec.encode(x[i]).values()], len(x), reads),
           "encode_torch_ms": median_ms(lambda i: codec.encode_torch(xt[i]), len(x), reads),
           "read_ms": median_ms(blob.read, len(x), reads),
           "decode_numpy_ms": median_ms(lambda i: codec.decode(blob.read(i)), len(x), reads),
           "decode_torch_ms": median_ms(lambda i: codec.decode_torch({k: torch.from_numpy(v) for k, v in
                                                                     blob.read(i).items()}), len(x), reads)}
    blob.close()
    return row


def peer_row(tmp: Path, x: np.ndarray, reads: int) -> dict:
    peer = PeerTar(tmp / "peer.tar", x)
    ms = median_ms(peer.read_decode, len(x), reads)
    peer.close()
    return {"what": "peer: bf16 safetensors in tar", "bytes_per_value": peer.nbytes / peer.values,
            "encode_ms": float("nan"), "encode_torch_ms": float("nan"), "read_ms": ms,
            "decode_numpy_ms": ms, "decode_torch_ms": ms}


def print_rows(tokens: int, dim: int, rows: list[dict]) -> None:
    peer = rows[-1]["decode_torch_ms"]
    print(f"\n### T={tokens} tokens, D={dim}: per view, one CPU thread, median CPU ms")
    print("| codec | B/value | encode+zstd numpy ms | encode torch ms (no zstd) | read+unzstd ms (vs peer) | "
          "read+decode numpy ms | read+decode torch ms (vs peer) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['what']} | {r['bytes_per_value']:.3f} | {r['encode_ms']:.2f} | {r['encode_torch_ms']:.2f} | "
              f"{r['read_ms']:.2f} ({r['read_ms'] / peer:.2f}x) | {r['decode_numpy_ms']:.2f} | "
              f"{r['decode_torch_ms']:.2f} ({r['decode_torch_ms'] / peer:.2f}x) |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", default="256,1024", help="comma-separated token counts per view")
    parser.add_argument("--dim", type=int, default=1536)
    parser.add_argument("--views", type=int, default=48, help="distinct views written per format")
    parser.add_argument("--reads", type=int, default=60, help="random reads timed per measurement")
    parser.add_argument("--codecs", default=",".join(CODECS.names()))
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")  # read-only buffers, never written
    print(f"machine: {describe()}")
    for tokens in (int(t) for t in args.tokens.split(",")):
        x = vit_like(args.views, tokens, args.dim)
        with tempfile.TemporaryDirectory() as tmp:
            rows = [codec_row(Path(tmp), c, x, args.reads) for c in args.codecs.split(",")]
            rows.append(peer_row(Path(tmp), x, args.reads))
        print_rows(tokens, args.dim, rows)


if __name__ == "__main__":
    main()
