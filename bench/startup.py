"""Start-up cost of a large store: `eupe-cache info` and the trainer up to its first step.

Builds once (cached under ``--root``, default /tmp/eupe-startup-bench) a real store of ``--images``
images: real webdataset tars of tiny JPEGs re-encoded from the bundled photos, the real store
creation code (``index_shards`` + ``FeatureStore.create``), and one test-scale teacher whose chunks
are written through the real ``TeacherGroup.writer.write_chunk`` (real views drawn by the view policy,
small random features, one image in 1000 recorded as failed), then ``eupe-cache stats`` once.
Then, each piece in a fresh Python process (warm page cache), it times the store work and counts
the files it opens (an audit hook on ``open``): under the store, and tar shards. Pieces:

* ``open``: ``FeatureStore.open``;
* ``info``: ``store_info`` (what ``eupe-cache info`` does after its imports; the first run on a
  store, or after it grew, consolidates the statuses that later runs read in one file);
* ``check``: ``check_store`` + ``check_complete`` (the trainer's identity and completeness checks);
* ``plan``: the trainer's data plan (``_plan``: usable rows through ``eupe.distill.data.usable_rows``);
* ``usable``: usable rows through ``FeatureStore.usable_rows`` (the consolidated statuses);
* ``stats``: reading the stored normalization statistics (``ensure_store_stats`` + ``stored_stats``);
* ``worker``: what each DataLoader worker does before its first sample (``DistillDataset._open``)
  and its first sample;
* ``trainer``: ``Trainer(cfg)`` + ``setup()`` + the first optimizer step (no workers);

and, as whole subprocesses (imports included), ``eupe-cache info STORE`` and ``eupe-train`` with
``max_steps=1``, next to the time of importing torch/timm/accelerate/zarr alone. Run::

    OMP_NUM_THREADS=1 .venv/bin/python bench/startup.py [--images 50000] [--images-per-chunk 16]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

TEACHER = "dinov3_hplus"  # test scale: width 64, patch 16
FAILED_EVERY = 1000  # one image in 1000 recorded as failed (a real store has some: info lists them)
PIECES = ("open", "info", "check", "plan", "usable", "stats", "worker", "trainer")
CONFIG = """# written by bench/startup.py: a one-teacher tiny Stage 1 over the bench store
stage: 1
proxy: {{embed_dim: 64, depth: 2, num_heads: 2, mlp_ratio: 2.0, patch_size: 16, num_reg_tokens: 4, resolution: 64}}
teachers:
  - {{name: {teacher}, test_scale: true}}
iterations: 1000
global_batch: 8
micro_batch: 8
head_hidden: 64
student_resolutions: [64]
mixed_precision: "no"
checkpoint_every: 100000
data: {{num_workers: 0, store: {store}, shards: "{shards}"}}
"""


# -- building the store (once) --------------------------------------------------------------------


def _jpegs(max_side: int) -> list[tuple[bytes, int, int]]:
    """(JPEG bytes, height, width) of every bundled photo, re-encoded small."""
    import io

    from PIL import Image

    from eupe.assets import bundled_photos, encode_jpeg

    out = []
    for photo in bundled_photos():
        data = encode_jpeg(photo.path, max_side, quality=80)
        with Image.open(io.BytesIO(data)) as image:
            out.append((data, image.height, image.width))
    return out


def _write_tars(root: Path, n: int, per_shard: int) -> tuple[str, list[tuple[int, int]]]:
    """Real webdataset shards of n tiny JPEGs; returns the brace pattern and each image's (h, w)."""
    from eupe.data.shards import write_shards

    jpegs = _jpegs(48)
    (root / "shards").mkdir(parents=True, exist_ok=True)
    samples = ((f"img{i:08d}", jpegs[i % len(jpegs)][0], "jpg", i % 10) for i in range(n))
    written = write_shards(samples, str(root / "shards" / "train-%06d.tar"), per_shard)
    pattern = str(root / "shards" / f"train-{{000000..{len(written) - 1:06d}}}.tar")
    return pattern, [jpegs[i % len(jpegs)][1:] for i in range(n)]


def _fill_teacher(store, sizes: list[tuple[int, int]], resolution: int) -> None:
    """Every chunk written through the real TeacherGroup.writer.write_chunk: real views, random features."""
    import numpy as np

    from eupe.models.teachers import create_teacher
    from eupe.store.codecs.registry import get_codec
    from eupe.store.layout import FAILED, OK
    from eupe.store.extract import teacher_identity
    from eupe.store.teacher_group.writer import ChunkResult
    from eupe.views.policy import sample_views
    from eupe.views.spec import views_to_array

    codec = get_codec("fp16")
    teacher = create_teacher(TEACHER, None, test_scale=True)
    group = store.open_or_create_teacher(teacher_identity(teacher, [resolution], codec), codec)
    k, params, rng = store.params.views_per_image, store.params, np.random.default_rng(0)
    h, w = group.grids[resolution]
    for chunk in group.chunks.pending_chunks():
        rows = store.chunk_rows(chunk)
        views = np.stack([views_to_array(sample_views(params.policy, params.seed, str(store.keys[r]), *sizes[r], k))
                          for r in rows])
        c, failed = len(rows), np.array([r % FAILED_EVERY == FAILED_EVERY - 1 for r in rows])
        views[failed] = np.nan  # as extraction leaves a failed image's views
        group.writer.write_chunk(ChunkResult(
            chunk, views, np.where(failed, FAILED, OK).astype(np.uint8),
            ["bench: simulated decode failure" if f else "" for f in failed],
            {resolution: rng.normal(size=(c, k, group.summary_dim)).astype(np.float32)},
            {resolution: rng.normal(size=(c, k, h * w, group.dim)).astype(np.float32)}))
        if chunk % 500 == 0:
            print(f"  chunk {chunk}/{store.num_chunks}", flush=True)


def build(root: Path, n: int, per_shard: int, images_per_chunk: int, views: int, resolution: int) -> dict:
    """The cached bench store (built when absent or built with other parameters)."""
    wanted = {"images": n, "per_shard": per_shard, "images_per_chunk": images_per_chunk, "views": views,
              "resolution": resolution, "teacher": TEACHER, "failed_every": FAILED_EVERY}
    marker = root / "built.json"
    if marker.is_file() and json.loads(marker.read_text()).get("params") == wanted:
        return json.loads(marker.read_text())
    from eupe.data.shards import expand_shards, index_shards
    from eupe.store.stats import compute_stats, save_stats
    from eupe.store.store import FeatureStore, StoreParams
    from eupe.views.policy import ViewPolicy

    shutil.rmtree(root, ignore_errors=True)
    t0 = time.perf_counter()
    pattern, sizes = _write_tars(root, n, per_shard)
    print(f"building the bench store under {root}: {n} images written as tars in {time.perf_counter() - t0:.1f} s",
          flush=True)
    index = index_shards(expand_shards(pattern))
    store = FeatureStore.create(root / "store.zarr", index, StoreParams(views, 0, ViewPolicy(), images_per_chunk), None)
    _fill_teacher(store, sizes, resolution)
    group = store.writable().teacher(TEACHER)
    save_stats(group, resolution, compute_stats(group, resolution))
    (root / "train.yaml").write_text(CONFIG.format(teacher=TEACHER, store=root / "store.zarr", shards=pattern))
    built = {"params": wanted, "store": str(root / "store.zarr"), "shards": pattern,
             "config": str(root / "train.yaml"), "build_s": round(time.perf_counter() - t0, 1)}
    marker.write_text(json.dumps(built))
    print(f"built in {built['build_s']} s", flush=True)
    return built


# -- one piece, in a fresh process ----------------------------------------------------------------


class OpenCounter:
    """Counts files opened (audit event ``open``) under the store and tar shards while enabled."""

    def __init__(self, store: str, shards_dir: str) -> None:
        self.store, self.shards = os.path.abspath(store), os.path.abspath(shards_dir)
        self.enabled, self.store_opens, self.shard_opens = False, 0, 0
        sys.addaudithook(self)

    def __call__(self, event: str, args: tuple) -> None:
        if event != "open" or not self.enabled or not isinstance(args[0], (str, bytes, os.PathLike)):
            return
        path = os.path.abspath(os.fsdecode(args[0]))
        if path.startswith(self.store):
            self.store_opens += 1
        elif path.startswith(self.shards):
            self.shard_opens += 1


def _config(built: dict):
    from eupe.train.cli import load_config

    cfg, _ = load_config(built["config"], [f"out={Path(built['store']).parent / 'run'}"])
    return cfg


def _piece(name: str, built: dict):
    """A zero-argument callable doing the piece's work (everything it needs imported first)."""
    from eupe.cache_tools.commands import store_info
    from eupe.distill.data import DistillDataset, make_loader
    from eupe.distill.loop import Trainer, _plan
    from eupe.distill.stats import ensure_store_stats
    from eupe.distill.targets import check_complete, check_store
    from eupe.store.store import FeatureStore

    cfg, path = _config(built), built["store"]
    shutil.rmtree(cfg.out, ignore_errors=True)
    opened = lambda: FeatureStore.open(path)  # noqa: E731

    def stats():  # the main process: ensure_store_stats returns what it read (other ranks: stored_stats)
        return ensure_store_stats(opened(), TEACHER, read_only=True)

    def worker(frozen=stats() if name == "worker" else None):  # statistics come from the main process
        dataset = DistillDataset(path, [TEACHER], {TEACHER: frozen})
        return dataset.__getitems__([(7, 0, 64, 0)])

    def trainer():
        run = Trainer(cfg, say=lambda _t: None)
        run.setup()
        batches = iter(make_loader(run.dataset, run.plan, 0, 0, 1, 0))
        return run.step(0, batches)

    return {"open": opened, "info": lambda: store_info(opened()),
            "check": lambda: (check_store(cfg, s := opened()), check_complete(cfg.data, s, cfg.teacher_names(), print)),
            "plan": lambda: _plan(cfg, opened(), True, lambda _text: None),
            "usable": lambda: opened().usable_rows([TEACHER]),
            "stats": stats, "worker": worker, "trainer": trainer}[name]


def run_piece(name: str, built: dict) -> dict:
    counter = OpenCounter(built["store"], str(Path(built["shards"]).parent))
    work = _piece(name, built)
    counter.enabled = True
    t0 = time.perf_counter()
    work()
    seconds = time.perf_counter() - t0
    counter.enabled = False
    return {"piece": name, "seconds": seconds, "store_opens": counter.store_opens, "shard_opens": counter.shard_opens}


# -- the report -----------------------------------------------------------------------------------


def _subprocess_s(args: list[str]) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return time.perf_counter() - t0


def report(built: dict, args: argparse.Namespace) -> None:
    from machine import describe

    from eupe.store.store import FeatureStore

    store = FeatureStore.open(built["store"])
    print(f"machine: {describe()}")
    print(f"store: {store.num_images} images, {len(store.dataset['shards'])} shards, {store.num_chunks} chunks of "
          f"{store.params.images_per_chunk} images, K={store.params.views_per_image}, teacher {TEACHER} "
          f"(test scale), built in {built['build_s']} s ({built['store']})")
    print(f"{'piece':<10}{'seconds':>10}{'store files opened':>20}{'tar opens':>11}")
    for name in args.pieces:
        out = subprocess.run([sys.executable, __file__, "--root", str(args.root), "--piece", name],
                             capture_output=True, text=True)
        if out.returncode:
            raise RuntimeError(f"piece {name} failed:\n{out.stderr[-3000:]}")
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{name:<10}{r['seconds']:>10.2f}{r['store_opens']:>20}{r['shard_opens']:>11}", flush=True)
    bin_dir = Path(sys.executable).parent
    imports = _subprocess_s([sys.executable, "-c", "import torch, timm, accelerate, zarr"])
    info = _subprocess_s([str(bin_dir / "eupe-cache"), "info", built["store"]])
    print(f"whole commands (imports included; `import torch, timm, accelerate, zarr` alone: {imports:.2f} s):")
    print(f"  eupe-cache info STORE: {info:.2f} s")
    if "trainer" in args.pieces:
        out = Path(built["store"]).parent / "run-cli"
        shutil.rmtree(out, ignore_errors=True)
        train = _subprocess_s([str(bin_dir / "eupe-train"), "--stage", "1", "--config", built["config"],
                               f"out={out}", "max_steps=1", "data.num_workers=2"])
        print(f"  eupe-train --stage 1 max_steps=1 data.num_workers=2 (one step and its checkpoint): {train:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=Path("/tmp/eupe-startup-bench"))
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--per-shard", type=int, default=1000)
    parser.add_argument("--images-per-chunk", type=int, default=None, help="default: the store's default")
    parser.add_argument("--views", type=int, default=2)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--pieces", nargs="+", default=["open", "info", *PIECES[1:]], choices=PIECES,
                        help="pieces in order (info twice by default: the second reads the consolidated statuses)")
    parser.add_argument("--piece", choices=PIECES, help=argparse.SUPPRESS)  # internal: one piece, JSON out
    args = parser.parse_args()
    if args.piece:
        print(json.dumps(run_piece(args.piece, json.loads((args.root / "built.json").read_text()))))
        return
    from eupe.store.store import StoreParams

    per_chunk = args.images_per_chunk or StoreParams.__dataclass_fields__["images_per_chunk"].default
    report(build(args.root, args.images, args.per_shard, per_chunk, args.views, args.resolution), args)


if __name__ == "__main__":
    main()
