"""Per-sample CPU cost of the cached-targets data path, against a plain bf16 peer format.

For each token count (T=256 and T=1024 by default; D=1536 as the proxy and PE-G produce) and each
codec (fp16, int8, compact by default), a real feature store is written with the store's own code
(``FeatureStore.create`` over real photo shards, ``TeacherGroup.writer.write_chunk``: sharded zarr arrays,
zstd level 3 + crc32c, chunk manifests) holding synthetic ViT-like tokens (per-channel offsets + a
spatially smooth field + noise, three channels x20; B/value is indicative only, ``bench/cache.py``
has the real teachers). Then, on one CPU thread, median thread CPU ms per random (image, view):

* ``targets``: ``TeacherGroup.reader.read_parts(row, resolution, view)`` -- the fast reader's one
  ``pread`` per array (a view's components are packed in one inner chunk), crc32c, zstd into a
  fresh buffer, the components as views of it, for the patch tokens and the summary
  token: everything the DataLoader does for a teacher when the step decodes on its device;
* ``pread+crc only``: the same reads without zstd (what the CPU would keep if the GPU also ran
  the zstd stage, e.g. with nvCOMP: every inner chunk is one standard zstd frame);
* ``+ decode numpy`` / ``+ decode torch``: the same plus the CPU decode to float32
  (``TeacherGroup.reader.decode`` / ``Codec.decode_torch``), for reference (what a CPU-only run pays);
* the peer: one bf16 safetensors blob per sample (patch tokens only) in an uncompressed tar, as
  Theia stores features: ``pread`` of the member + ``safetensors`` load (``read``), and the same
  plus bf16 -> float32 (``read+f32``).

``samples/s (1 | 2 workers)``: a DataLoader over 16-sample batches of random (image, view) that
yields the stacked components (ours) or the stacked bf16 tensors (peer): wall time after the first
batch, so it includes worker-to-main transfers; the machine's other load shows here (the CPU ms
columns are per-thread CPU time and are not affected by it). The store's chunk checks run once per
chunk and process before timing, as in a trainer's steady state.

``why``: where the targets time goes, per codec: zstd decompression of the largest component as
stored (level 3) and re-compressed at level 1, its size, the fixed cost of one tiny component
(numcodecs creates a zstd context per call), and a plain copy of the same bytes (what a format
without an entropy stage would cost). Run::

    .venv/bin/python bench/datapath.py [--tokens 256,1024] [--dim 1536] [--codecs fp16,int8,compact]
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
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe  # noqa: E402

from eupe.assets import bundled_photos, encode_jpeg, write_photo_shards  # noqa: E402
from eupe.data.shards import index_shards  # noqa: E402
from eupe.store.codecs.haar import grid_shape  # noqa: E402
from eupe.store.codecs.registry import get_codec  # noqa: E402
from eupe.store.store import FeatureStore, StoreParams  # noqa: E402
from eupe.store.teacher_group.identity import TeacherIdentity  # noqa: E402
from eupe.store.teacher_group.writer import ChunkResult  # noqa: E402
from eupe.views.policy import ViewPolicy, sample_views  # noqa: E402
from eupe.views.renderer import render  # noqa: E402
from eupe.views.source import open_image  # noqa: E402
from eupe.views.spec import VIEW_DIM  # noqa: E402

IMAGES, VIEWS, PER_CHUNK, RESOLUTION, BATCH = 8, 6, 4, 224, 16


def vit_like(views: int, tokens: int, dim: int, seed: int = 0) -> np.ndarray:
    """Synthetic tokens [views, T, D]: channel offsets + smooth field on the patch grid + noise."""
    rng = np.random.default_rng(seed)
    h, w = grid_shape(tokens)
    offset = np.random.default_rng(0).normal(0, 1, dim).astype(np.float32)  # one teacher: same offsets
    coarse = rng.normal(0, 1, (views, (h + 3) // 4, (w + 3) // 4, dim)).astype(np.float32)
    field = coarse.repeat(4, 1).repeat(4, 2)[:, :h, :w]  # [V, h, w, D] blocky, then smoothed
    field = 0.5 * (field + np.roll(field, 1, 1))
    field = 0.5 * (field + np.roll(field, 1, 2))
    x = offset + field + rng.normal(0, 0.4, (views, h, w, dim)).astype(np.float32)
    x[..., [5, dim // 2, dim - 3]] *= 20.0
    return x.reshape(views, tokens, dim)  # [V, h, w, D] -> [V, T, D]


def median_ms(fn: Callable[[int, int], object], reads: int, seed: int = 0) -> float:
    """Median CPU ms of this thread for ``fn(row, view)`` over ``reads`` random (row, view) picks.

    Thread CPU time (``time.thread_time``), not wall time: the cost a core pays, unaffected by other
    processes sharing the machine (cache and memory-bandwidth contention still show).
    """
    picks = np.random.default_rng(seed).integers(0, (IMAGES, VIEWS), (reads, 2))
    fn(0, 0)  # warm-up
    times = []
    for row, view in picks:
        start = time.thread_time()
        fn(int(row), int(view))
        times.append(time.thread_time() - start)
    return 1000 * statistics.median(times)


def write_store(tmp: Path, shards: list[str], codec: str, tokens: int, dim: int, peer: "PeerTar | None"):
    """A real store of one synthetic teacher at one resolution (T tokens); every view also goes to ``peer``."""
    params = StoreParams(VIEWS, 0, ViewPolicy(), PER_CHUNK)
    store = FeatureStore.create(tmp / f"{codec}-{tokens}.zarr", index_shards(shards), params, limit=None)
    c = get_codec(codec)
    identity = TeacherIdentity(name="bench", fingerprint="0" * 64, preprocessing={}, resolutions=(RESOLUTION,),
                               grids=(grid_shape(tokens),), dim=dim, summary_dim=dim, codec=c.to_dict())
    group = store.open_or_create_teacher(identity, c)
    for chunk in range(store.num_chunks):
        n = len(store.chunk_rows(chunk))
        x = vit_like(n * VIEWS, tokens, dim, seed=chunk + 1).reshape(n, VIEWS, tokens, dim)  # [C, K, T, D]
        group.writer.write_chunk(ChunkResult(chunk, np.zeros((n, VIEWS, VIEW_DIM)), np.ones(n, np.uint8), [""] * n,
                                      {RESOLUTION: x.mean(axis=2)}, {RESOLUTION: x}))
        if peer is not None:
            peer.add(x.reshape(n * VIEWS, tokens, dim))
    group = FeatureStore.open(store.where).teacher("bench")
    for row in range(IMAGES):  # chunk checks and shard indexes: once per chunk and process
        group.reader.read_parts(row, RESOLUTION, 0)
    return group


def stored_bytes_per_value(group) -> float:
    root = Path(group.store.where) / group.group.path / f"r{RESOLUTION}"
    nbytes = sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and p.name != "zarr.json")
    h, w = group.grids[RESOLUTION]
    return nbytes / (IMAGES * VIEWS * (h * w + 1) * group.dim)


class PeerTar:
    """One bf16 safetensors blob per sample in an uncompressed tar; member offsets indexed once."""

    def __init__(self, path: Path) -> None:
        self.path, self.tar = path, tarfile.open(path, "w")
        self.count, self.members, self.fd = 0, [], -1

    def add(self, views: np.ndarray) -> None:
        from safetensors.torch import save

        for view in views:
            blob = save({"patch": torch.from_numpy(view).to(torch.bfloat16)})
            info = tarfile.TarInfo(f"{self.count:06d}.features.safetensors")
            info.size = len(blob)
            self.tar.addfile(info, io.BytesIO(blob))
            self.count += 1

    def finish(self) -> None:
        self.tar.close()
        with tarfile.open(self.path) as tar:
            self.members = [(m.offset_data, m.size) for m in tar.getmembers()]
        self.fd = os.open(self.path, os.O_RDONLY)

    def read(self, row: int, view: int) -> torch.Tensor:
        """The sample's bf16 [T, D] tensor: pread + safetensors load."""
        from safetensors.torch import load

        offset, size = self.members[row * VIEWS + view]
        return load(os.pread(self.fd, size, offset))["patch"]

    def bytes_per_value(self, tokens: int, dim: int) -> float:
        return sum(s for _, s in self.members) / (len(self.members) * tokens * dim)


class Loadable(Dataset):
    """Batches of random (row, view) through ``read(row, view) -> {name: array}``, stacked."""

    def __init__(self, read: Callable[[int, int], dict]) -> None:
        self.read = read

    def __len__(self) -> int:
        return IMAGES * VIEWS

    def __getitems__(self, samples: list[tuple[int, int]]) -> dict[str, torch.Tensor]:
        items = [self.read(row, view) for row, view in samples]
        return {k: torch.stack([torch.as_tensor(i[k]) for i in items]) for k in items[0]}  # [B, *suffix]


def samples_per_s(read: Callable[[int, int], dict], workers: int, batches: int) -> float:
    rng = np.random.default_rng(1)
    sampler = [[tuple(int(v) for v in p) for p in rng.integers(0, (IMAGES, VIEWS), (BATCH, 2))]
               for _ in range(batches + 1)]
    loader = DataLoader(Loadable(read), batch_sampler=sampler, num_workers=workers, collate_fn=lambda b: b,
                        prefetch_factor=4)
    it = iter(loader)
    next(it)  # workers started
    start = time.perf_counter()
    for _ in it:
        pass
    return batches * BATCH / (time.perf_counter() - start)


def codec_row(group, batches: int, reads: int) -> dict:
    codec = group.codec

    def parts(row: int, view: int) -> dict:
        return group.reader.read_parts(row, RESOLUTION, view)

    def blobs(row: int, view: int) -> list:  # what stays on the CPU if zstd itself ran on the GPU
        return [r.read_blob(row, view) for r in group.reader.fast_readers(RESOLUTION).values()]  # one per array

    def flat(row: int, view: int) -> dict:
        return {f"{kind}/{n}": a for kind, named in parts(row, view).items() for n, a in named.items()}

    def torch_decode(row: int, view: int) -> None:
        p = parts(row, view)
        codec.decode_vector_torch({n: torch.from_numpy(a) for n, a in p["summary"].items()})
        codec.decode_torch({n: torch.from_numpy(a) for n, a in p["patch"].items()})

    return {"what": codec.name, "bytes_per_value": stored_bytes_per_value(group),
            "components": sum(len(v) for v in parts(0, 0).values()),
            "targets_ms": median_ms(parts, reads), "blob_ms": median_ms(blobs, reads),
            "numpy_ms": median_ms(lambda r, v: group.reader.decode(parts(r, v), RESOLUTION), reads),
            "torch_ms": median_ms(torch_decode, reads),
            "rate": [samples_per_s(flat, w, batches) for w in (1, 2)]}


def peer_row(peer: PeerTar, tokens: int, dim: int, batches: int, reads: int) -> dict:
    return {"what": "peer: bf16 safetensors in tar", "bytes_per_value": peer.bytes_per_value(tokens, dim),
            "components": 1, "targets_ms": median_ms(peer.read, reads), "blob_ms": float("nan"),
            "numpy_ms": median_ms(lambda r, v: peer.read(r, v).float(), reads), "torch_ms": float("nan"),
            "rate": [samples_per_s(lambda r, v: {"patch": peer.read(r, v)}, w, batches) for w in (1, 2)]}


def why_row(group) -> dict:
    """Break the targets time down: zstd of the largest component (level 3, level 1 as new stores write it),
    fixed costs."""
    from numcodecs import Zstd

    parts = [a for named in group.reader.read_parts(0, RESOLUTION, 0).values() for a in named.values()]
    big, small = max(parts, key=lambda a: a.nbytes), min(parts, key=lambda a: a.nbytes)
    out, row = np.empty_like(big), {"what": group.codec.name, "big": big.nbytes}
    for level in (3, 1):
        zstd = Zstd(level=level)
        blob = zstd.encode(big)
        row[level] = (len(blob) / big.size, median_ms(lambda r, v: zstd.decode(blob, out=out), 60))
    zstd = Zstd(level=1)
    tiny = zstd.encode(small)
    row["tiny_ms"] = median_ms(lambda r, v: zstd.decode(tiny), 60)
    row["copy_ms"] = median_ms(lambda r, v: np.copyto(out, big), 60)
    return row


def print_why(rows: list[dict]) -> None:
    print("\nwhy: | codec | largest component | its zstd decode at L3 | at L1 (as stored) | "
          "one tiny component | plain copy of it |")
    for r in rows:
        print(f"why: | {r['what']} | {r['big'] / 1024:.0f} KiB | {r[3][1]:.3f} ms ({r[3][0]:.3f} B/value) | "
              f"{r[1][1]:.3f} ms ({r[1][0]:.3f} B/value) | {r['tiny_ms']:.3f} ms | {r['copy_ms']:.3f} ms |")


def print_rows(tokens: int, dim: int, rows: list[dict]) -> None:
    peer = rows[-1]
    print(f"\n### T={tokens} tokens, D={dim}: per sample (one teacher, patch + summary), one CPU thread, median CPU ms")
    print("| codec | B/value on disk | components | targets: read+unzstd ms (vs peer read / read+f32) | "
          "pread+crc only ms | + decode numpy ms | + decode torch CPU ms | samples/s 1 / 2 workers |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        vs = "" if r is peer else f" ({r['targets_ms'] / peer['targets_ms']:.2f}x / {r['targets_ms'] / peer['numpy_ms']:.2f}x)"
        decode = f"{r['numpy_ms']:.3f}" + (" (read+f32)" if r is peer else "")
        print(f"| {r['what']} | {r['bytes_per_value']:.3f} | {r['components']} | {r['targets_ms']:.3f}{vs} | {r['blob_ms']:.3f} | {decode} | "
              f"{r['torch_ms']:.3f} | {r['rate'][0]:.0f} / {r['rate'][1]:.0f} |")


def image_rows(group, reads: int, max_side: int = 500) -> list[tuple[str, float]]:
    """The student's side of a sample, median CPU ms: the trainer's image path (``open_image`` +
    ``render`` of a policy view), PIL decode + resize of the same JPEG to the same size, and the
    stored view's parameters (``blocks.view_params``, read per chunk and kept)."""
    from PIL import Image

    photos = [encode_jpeg(p.path, max_side) for p in bundled_photos()[:IMAGES]]
    views = [sample_views(ViewPolicy(), 0, str(i), *Image.open(io.BytesIO(b)).size[::-1], VIEWS)
             for i, b in enumerate(photos)]

    def pil(row: int, view: int) -> object:
        return Image.open(io.BytesIO(photos[row])).convert("RGB").resize((RESOLUTION, RESOLUTION), Image.BILINEAR)

    return [(f"trainer's image path (JPEG {max_side} px -> render {RESOLUTION})",
             median_ms(lambda r, v: render(open_image(photos[r]), views[r][v], RESOLUTION), reads)),
            (f"same JPEG, PIL decode + resize {RESOLUTION}", median_ms(pil, reads)),
            ("view parameters lookup (store)", median_ms(lambda r, v: group.blocks.view_params(r, v), reads))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", default="256,1024", help="comma-separated token counts per view")
    parser.add_argument("--dim", type=int, default=1536)
    parser.add_argument("--reads", type=int, default=120, help="random reads timed per measurement")
    parser.add_argument("--batches", type=int, default=30, help="DataLoader batches of 16 timed per rate")
    parser.add_argument("--codecs", default="fp16,int8,compact")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"machine: {describe()}")
    with tempfile.TemporaryDirectory() as tmp:
        shards = write_photo_shards(Path(tmp) / "shards", bundled_photos()[:IMAGES], per_shard=IMAGES, max_side=64)
        for tokens in (int(t) for t in args.tokens.split(",")):
            peer = PeerTar(Path(tmp) / f"peer-{tokens}.tar")
            groups = [write_store(Path(tmp), shards, c, tokens, args.dim, peer if i == 0 else None)
                      for i, c in enumerate(args.codecs.split(","))]
            peer.finish()
            if tokens == int(args.tokens.split(",")[0]):
                print("\n### the image side of a sample, one CPU thread, median CPU ms")
                for what, ms in image_rows(groups[0], args.reads):
                    print(f"| {what} | {ms:.3f} |")
            rows = [codec_row(g, args.batches, args.reads) for g in groups]
            rows.append(peer_row(peer, tokens, args.dim, args.batches, args.reads))
            print_rows(tokens, args.dim, rows)
            print_why([why_row(g) for g in groups])
            os.close(peer.fd)


if __name__ == "__main__":
    main()
