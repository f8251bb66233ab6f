"""``eupe-cache extract | info | verify | stats | plan``: thin click wrappers over ``eupe.store``."""

from __future__ import annotations

import json

import click

from eupe.cli_support import quiet_option
from eupe.store.codecs.registry import MEASURED, codec_names, get_codec  # numpy only: no torch or zarr

# Heavy libraries (torch, zarr, timm) are imported inside the commands: `--help` stays instant.


def _int_list(_ctx, _param, value: str | None) -> list[int]:
    if not value or value == "native":
        return []
    try:
        return [int(v) for v in value.split(",")]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of integers, e.g. 256,384,512")


def _codec_help() -> str:
    """``extract --codec``'s help: every registered codec in order, with the figures the registry measured."""
    items, labelled = [], False
    for name in codec_names():
        if name in MEASURED:
            size, cosine = MEASURED[name]
            items.append(f"{name} ({size}, {cosine})" if labelled else
                         f"{name} ({size} B/value, normalized cosine {cosine})")
            labelled = True
        else:
            items.append(name)
    return f"{', '.join(items[:-1])} or {items[-1]}; see docs/cache.md."


def _threshold(name: str) -> str:
    """The registered codec's verify threshold (its minimum mean cosine), as --help quotes it."""
    return f"{get_codec(name).min_cosine:.4f}"


def _rank_world(rank: int | None, world: int | None) -> tuple[int, int]:
    """--rank/--world-size, else the launcher's (`accelerate launch`, torchrun, MPI) via Accelerate."""
    if rank is not None or world is not None:
        if (rank or 0) >= (world or 1):
            raise click.BadParameter(f"--rank {rank} must be smaller than --world-size {world}")
        return rank or 0, world or 1
    import torch
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())
    return state.process_index, state.num_processes


@click.command()
@click.option("--teacher", "teachers", multiple=True, required=True,
              help="Teacher name (repeatable); see `eupe-cache teachers`.")
@click.option("--data", required=True, help="Webdataset tar shards: a path, brace pattern "
              "(shards/train-{000000..000099}.tar) or fsspec URL. Resuming or growing a store, a copy of its "
              "shards elsewhere serves (compared by content).")
@click.option("--out", required=True, help="Feature store (a directory; created if absent, extended if present).")
@click.option("--views", default=None, type=click.IntRange(1),
              help="Views per image, K [default: the existing store's, else 4]. More than an existing store "
                   "holds adds the missing views (a view block); fewer is refused.")
@click.option("--resolution", "resolutions", default="native", show_default=True, callback=_int_list,
              help="Teacher input resolution(s): 'native' or a list such as 256,384,512 (every view at each).")
@click.option("--codec", default="compact", show_default=True, help=_codec_help())
@click.option("--weights", default=None, help="Local weights file (or proxy run directory) for the teacher.")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1), help="Views per teacher forward.")
@click.option("--num-workers", default=2, show_default=True, type=click.IntRange(0), help="DataLoader workers that read and render images.")
@click.option("--seed", default=None, type=int,
              help="Seed of the view sampling. Default: the existing store's; for a new store, a hash of the "
                   "teacher names, so a proxy's store (Stage 2) draws other views than its teachers' (Stage 1).")
@click.option("--limit", default=None, type=click.IntRange(1), help="Only the first N images (trials).")
@click.option("--images-per-chunk", default=None, type=click.IntRange(1),
              help="Images per store chunk [default: the existing store's, else 256]: the unit of writing, "
                   "resuming and parallel work (one file per "
                   "array and chunk: 1.28M images make ~5k chunks). Host memory per chunk in flight: "
                   "images x views x tokens x dim x codec bytes (compact, int8 codes: 2, 1 B/value).")
@click.option("--writers", default=None, type=click.IntRange(1),
              help="Writer threads (zstd, write, fsync); at most this many chunks wait or are being written "
                   "while the teacher fills the next. Default: a quarter of the CPU cores, 2..4.")
@click.option("--rank", default=None, type=click.IntRange(0), help="This process's rank (default: $RANK or 0).")
@click.option("--world-size", default=None, type=click.IntRange(1), help="Number of processes (default: $WORLD_SIZE or 1).")
@click.option("--device", default=None, help="torch device (default: cuda:<rank> when available, else cpu).")
@click.option("--max-pixels", default=64_000_000, show_default=True, type=click.IntRange(1),
              help="Source images with more pixels are recorded as failed without being decoded.")
@click.option("--retry-failed", is_flag=True,
              help="Redo chunks holding images that failed with a read error (e.g. a shard was offline).")
@click.option("--test-scale", is_flag=True, hidden=True, help="Tiny random-init teachers (tests).")
@quiet_option
def extract(teachers, data, out, views, resolutions, codec, weights, batch_size, num_workers, seed, limit,
            images_per_chunk, writers, rank, world_size, device, max_pixels, retry_failed, test_scale) -> int:
    """Run teachers once over a dataset and write their outputs to a feature store.

    Each image gets K views drawn from (seed, image key, view index); each view is rendered at
    the teacher's resolution(s) by the shared renderer. Kill it at any time: re-running the same
    command finishes only the missing chunks. Several processes (--rank/--world-size, or
    `accelerate launch`) split the chunks between them.
    """
    from eupe.progress import progress
    from eupe.store.extract import ExtractConfig, extract_teacher, load_teachers, open_or_create_store

    rank, world_size = _rank_world(rank, world_size)
    cfg = ExtractConfig(teachers=list(teachers), data=data, out=out, views=views, resolutions=resolutions,
                        codec=codec, weights=weights, batch_size=batch_size, num_workers=num_workers, seed=seed,
                        limit=limit, images_per_chunk=images_per_chunk, rank=rank, world_size=world_size,
                        device=device, test_scale=test_scale, retry_failed=retry_failed, max_pixels=max_pixels,
                        writers=writers)
    encoders = load_teachers(cfg)  # unknown teacher/codec, missing weights, bad sizes: fail before any work
    store = open_or_create_store(cfg, progress=rank == 0)
    for teacher in encoders:
        with progress(desc=f"{teacher.spec.name} [rank {rank}/{world_size}]", unit="img") as bar:
            summary = extract_teacher(cfg, store, teacher, progress=bar)
        click.echo(summary.line())
    return 0


def _size(nbytes: int | None) -> str:
    return "n/a (remote)" if nbytes is None else f"{nbytes / 1e6:.1f} MB"


def store_info(store) -> dict:
    """Identity, counts of done chunks only, failures and sizes (from manifests: no tree walk)."""
    info = {"path": store.where, "views_per_image": store.params.views_per_image,
            "seed": store.params.seed, "view_policy": store.params.policy.to_dict(),
            "images_per_chunk": store.params.images_per_chunk,
            "dataset": {k: v for k, v in store.dataset.items() if k != "shard_fingerprints"}, "teachers": {},
            "ignored_groups": [{"group": f"teachers/{n}", "reason": r} for n, r in store.ignored_groups()]}
    for name in store.teacher_names():
        group = store.teacher(name)
        status = store.image_status(name)  # the consolidated record when it is current (extract writes it)
        rows = store.progress(name).rows  # the manifest, read once
        counts = group.chunks.counts(rows, status)
        blocks = [_block_info(block, rows if block is group else None) for block in group.blocks]
        info["teachers"][name] = {
            **{k: group.attrs[k] for k in ("weights_sha256", "preprocessing", "resolutions", "grids", "dim", "codec")},
            **counts, "bytes_written": sum(b["bytes_written"] for b in blocks),
            "complete": all(b["chunks_done"] == b["chunks"] for b in blocks),
            "views_per_image": group.blocks.total_views, "view_blocks": blocks,
            "failed_inputs": [{"key": k, "reason": r} for k, r in store.failures(name)],
        }
    return info


def _block_info(block, rows=None) -> dict:
    """One view block's views, done chunks and bytes (``rows``: its manifest, read when not given)."""
    return {"views": [block.view_start, block.view_stop], **block.chunks.chunk_counts(rows)}


@click.command()
@click.argument("store_path", metavar="STORE")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON.")
def info(store_path: str, as_json: bool) -> int:
    """Show a store's identity, per-teacher counts, completeness, failed inputs and size."""
    from eupe.store.store import FeatureStore

    data = store_info(FeatureStore.open(store_path))
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        return 0
    ds = data["dataset"]
    click.echo(f"store {data['path']}: {ds['num_images']} images in {len(ds['shards'])} shard(s), "
               f"created with K={data['views_per_image']} views per image, seed {data['seed']}")
    for failure in ds["failed_shards"]:
        click.echo(f"  failed shard {failure['shard']}: {failure['reason']}")
    for skipped in ds.get("skipped_samples", []):
        click.echo(f"  skipped sample {skipped['key']} in {skipped['shard']}: {skipped['reason']}")
    for ignored in data["ignored_groups"]:
        click.echo(f"  ignored {ignored['group']}: {ignored['reason']}, not a teacher of this store")
    for name, t in data["teachers"].items():
        click.echo(f"teacher {name}: weights sha256 {t['weights_sha256'][:16]}..., resolutions {t['resolutions']}, "
                   f"codec {t['codec']['name']}, dim {t['dim']}, {t['views_per_image']} views per image")
        click.echo(f"  {t['images_done']}/{t['images']} images in done chunks: {t['ok']} ok, {t['failed']} failed; "
                   f"chunks {t['chunks_done']}/{t['chunks']} ({'complete' if t['complete'] else 'INCOMPLETE'}), "
                   f"{_size(t['bytes_written'])}")
        if len(t["view_blocks"]) > 1:
            click.echo("  " + "; ".join(f"views {b['views'][0]}..{b['views'][1] - 1}: chunks {b['chunks_done']}/"
                                        f"{b['chunks']}" for b in t["view_blocks"]))
        for failure in t["failed_inputs"]:
            click.echo(f"  failed input {failure['key']}: {failure['reason']}")
    return 0


@click.command()
@click.argument("store_path", metavar="STORE")
@click.option("--teacher-check", default=0, show_default=True, type=click.IntRange(0),
              help="Re-run the teacher on N random stored views and compare with the cache: passes when the mean "
                   "cosine over every summary and patch token, cached (decoded) vs re-run, is at least the "
                   f"codec's threshold ({_threshold('fp16')} for fp16, {_threshold('compact')} for compact).")
@click.option("--weights", default=None, help="Teacher weights for --teacher-check (default: as for extract).")
@click.option("--seed", default=0, show_default=True, help="Seed for choosing the views to re-check.")
@click.option("--finite", is_flag=True,
              help="Also decode every stored target and list images holding NaN or infinite values (reads it all).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON.")
@click.option("--test-scale", is_flag=True, hidden=True)
@quiet_option
def verify(store_path, teacher_check: int, weights, seed, finite: bool, as_json, test_scale) -> int:
    """Check completeness and chunk checksums; optionally re-run the teacher on N views.

    Every done chunk's files are compared with the sizes and checksums recorded when they were
    written (missing, moved, truncated or altered files are named with their image keys); edited
    attributes fail the store's identity check. Exits 1 when anything is missing, corrupt,
    incomplete, or below the codec's cosine threshold.
    """
    from eupe.progress import progress
    from eupe.store.store import FeatureStore
    from eupe.store.verify import verify_images, verify_teacher

    store = FeatureStore.open(store_path)
    result = {"images": verify_images(store), "teachers": {}}
    ok = not result["images"]
    for name in store.teacher_names():
        with progress(desc=f"verify {name}", unit="chunk") as bar:
            report = verify_teacher(store, name, finite=finite, progress=bar)
        if teacher_check:
            with progress(total=teacher_check, desc=f"teacher check {name}", unit="view") as bar:
                report.check = _teacher_check(store, name, teacher_check, seed, weights, test_scale, bar)
        result["teachers"][name] = {**report.__dict__, "ok": report.ok}
        ok &= report.ok
    result["ok"] = ok
    click.echo(json.dumps(result, indent=2) if as_json else _verify_text(result))
    return 0 if ok else 1


def _teacher_check(store, name, n, seed, weights, test_scale, bar) -> dict:
    from eupe.store.verify import teacher_check

    return teacher_check(store.teacher(name), n, seed, weights, test_scale, progress=bar)


def _verify_text(result: dict) -> str:
    from eupe.store.stats import describe_method

    lines = [f"corrupt chunk {p['array']}[{p['chunk']}]: {p['error']}" for p in result["images"]]
    for name, r in result["teachers"].items():
        lines.append(f"{name}: {'OK' if r['ok'] else 'PROBLEMS'}; {len(r['incomplete'])} incomplete images, "
                     f"{len(r['corrupt'])} corrupt chunks, {r['failed_images']} failed inputs")
        if r.get("no_usable_images"):
            lines.append(f"  every image failed: {name} has no targets to train on (see the failed inputs in "
                         "`eupe-cache info`)")
        if r.get("read_errors"):
            lines.append(f"  {len(r['read_errors'])} image(s) could not be read (transient?): re-run extract with "
                         f"--retry-failed ({', '.join(r['read_errors'][:5])})")
        lines += [f"  corrupt {p['array']} chunk {p['chunk']} (images {', '.join(p['keys'])}): {p['error']}"
                  for p in r["corrupt"]]
        lines += [f"  statistics r{resolution}: {state}"
                  + (f" ({describe_method(r['stats_method'].get(resolution))})" if state == "ok" else
                     " (run `eupe-cache stats`)")
                  for resolution, state in r.get("stats", {}).items() if state != "absent"]
        lines += [f"  non-finite {', '.join(p['kinds'])} targets r{p['resolution']} in chunk {p['chunk']} (images "
                  f"{', '.join(p['keys'])}): re-extract them into a new store" for p in r.get("nonfinite", [])]
        if r["incomplete"]:
            lines.append(f"  incomplete: {', '.join(r['incomplete'][:20])}{' ...' if len(r['incomplete']) > 20 else ''}")
        if r["check"]:
            c = r["check"]
            lines.append("  teacher check: " + (c.get("error") or
                         f"{c['views']} views, token cosine mean {c['mean_cosine']:.5f} min {c['min_cosine']:.5f} "
                         f"(threshold {c['threshold']}) -> {'pass' if c['passed'] else 'FAIL'}; normalized patch "
                         f"cosine {c['norm_cosine']:.5f} (min {c['norm_cosine_min']:.5f}), smooth-L1 floor "
                         f"{c['smooth_l1_floor']:.2e} ({c['normalized_with']})"))
            if c.get("rule"):
                lines.append(f"  pass rule: {c['rule']}")
    lines.append("store OK" if result["ok"] else "store has problems")
    return "\n".join(lines)


@click.command()
@click.argument("store_path", metavar="STORE")
@click.option("--teacher", "teachers", multiple=True, help="Teacher(s) to compute (default: all in the store).")
@click.option("--sample", default=8192, show_default=True, type=click.IntRange(1),
              help="Estimate from this many (image, view) pairs drawn uniformly without replacement among the "
                   "usable views (all of them when the store has fewer).")
@click.option("--full", is_flag=True, help="A full pass over every usable view instead of a sample.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the sample.")
@click.option("--workers", default=None, type=click.IntRange(1),
              help="Threads reading and decoding chunks in parallel (default: CPU cores, at most 8).")
@click.pass_context
@quiet_option
def stats(ctx: click.Context, store_path: str, teachers: tuple[str, ...], sample: int, full: bool, seed: int, workers: int | None) -> int:
    """Compute per-coordinate float64 mean/std of each teacher's outputs and save them in the store.

    The trainer normalizes targets with these frozen statistics (EUPE teacher normalization).
    By default they are estimated from a seeded sample of 8192 views (seconds at paper scale; the
    error against a full pass is in docs/cache.md); --full reads every view. The store records how
    they were computed and which chunks they cover; after the store grows they are recomputed.
    """
    if full and ctx.get_parameter_source("sample") == click.core.ParameterSource.COMMANDLINE:
        raise click.UsageError("--full reads every view; give either --full or --sample N, not both")
    import numpy as np

    from eupe.paths import require_writable
    from eupe.progress import progress
    from eupe.store.stats import compute_stats, describe_method, save_stats
    from eupe.store.store import FeatureStore

    store = FeatureStore.open(store_path, mode="a")
    require_writable(store_path, "the store", "`eupe-cache stats` saves the statistics inside the store: run it "
                     "where the store is writable (e.g. before copying it to read-only media)")
    for name in teachers or store.teacher_names():
        group = store.teacher(name)
        for resolution in group.resolutions:
            with progress(desc=f"stats {name} r{resolution}", unit="view") as bar:
                def advance(n: int, total: int, bar=bar) -> None:
                    bar.total = total
                    bar.update(n)
                moments = compute_stats(group, resolution, advance, None if full else sample, seed, workers)
            save_stats(group, resolution, moments)
            click.echo(f"{name} r{resolution}: {describe_method(moments['patch'].method)}; "
                       f"{moments['patch'].count} patch tokens, {moments['summary'].count} summaries; "
                       f"patch std median {float(np.median(moments['patch'].std)):.4g}")
    return 0


def _shapes(_ctx, _param, value: tuple[str, ...]) -> list[tuple[int, int, int]]:
    out = []
    for text in value:
        try:
            numbers = [int(v) for v in text.lower().split("x")]
        except ValueError:
            numbers = []
        if len(numbers) not in (2, 3) or min(numbers) < 1:
            raise click.BadParameter(f"{text!r} is not TOKENSxDIM or TOKENSxDIMxSUMMARY_DIM of positive integers, "
                                     "e.g. 1024x1536")
        out.append((numbers[0], numbers[1], numbers[2] if len(numbers) == 3 else numbers[1]))
    return out


@click.command()
@click.option("--teacher", "teachers", multiple=True,
              help="Registered teacher (repeatable): its tokens and widths at its native resolution.")
@click.option("--shape", "shapes", multiple=True, callback=_shapes,
              help="A teacher given by shape (repeatable): TOKENSxDIM[xSUMMARY_DIM] per view, e.g. 1024x1536 "
                   "(PE-G at 448 px). Default when no --teacher: 1024x1536.")
@click.option("--codec", "codecs", default=",".join(codec_names()), show_default=True,
              help="Comma-separated codecs to measure (see `eupe-cache extract --help`).")
@click.option("--images", default=1_281_167, show_default=True, type=click.IntRange(1), help="Images (N).")
@click.option("--views", default=4, show_default=True, type=click.IntRange(1), help="Views per image (K).")
@click.option("--samples-per-s", default=3000.0, show_default=True, type=click.FloatRange(0, min_open=True),
              help="Samples one GPU's student consumes per second (ViT-B on an H100: ~3000).")
@click.option("--gpus", default=8, show_default=True, type=click.IntRange(1), help="GPUs training at once.")
@click.option("--images-per-chunk", default=None, type=click.IntRange(1),
              help="Images per store chunk, as for extract (default: extract's).")
@click.option("--student-resolution", default=256, show_default=True, type=click.IntRange(16, 4096),
              help="Resolution of the student's rendered view (the timed image path).")
@click.option("--image-bytes", default=110_000, show_default=True, type=click.IntRange(0),
              help="Mean JPEG size read per sample (ImageNet-1k train: ~110 kB).")
@click.option("--stats-views", default=8192, show_default=True, type=click.IntRange(1),
              help="Views `eupe-cache stats` samples (for its time estimate).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON (measured costs and estimates).")
def plan(teachers, shapes, codecs, images, views, samples_per_s, gpus, images_per_chunk, student_resolution,
         image_bytes, stats_views, as_json) -> int:
    """Plan a paper-scale cache: bytes per view, store size, files, read bandwidth and CPU cores per GPU.

    Per-view costs are measured here first (a few seconds): realistic feature views of each
    teacher shape are written with each codec into a temporary real store, then reading one
    (image, view), reading + decoding it, and rendering a student view from a JPEG are timed on
    one CPU thread. The estimates are those costs times the run's numbers. Reads are timed hot in
    the page cache: the store must also deliver the printed bandwidth.

    \b
    Columns, per teacher and codec: B/value and MB/view stored (summary + patch tokens);
    store TB for N x K views; files per teacher for the chunk size; read ms of one view's stored
    components (decode on the GPU) and +decode (read + decode on the CPU); encode ms per view at
    extraction; stats s to sample --stats-views views on one core, full h for a full pass (hours).
    The "all" line sums the
    teachers: store size, read bandwidth per GPU (targets + JPEG), CPU ms per sample (image path
    + targets) and the CPU cores per GPU that makes at --samples-per-s.
    """
    from eupe.store.layout import DEFAULT_IMAGES_PER_CHUNK
    from eupe.store.plan import Run, Shape, estimate, measure_costs

    chosen = [_teacher_shape(name) for name in teachers]
    chosen += [Shape(f"{t}x{d}" + (f"x{s}" if s != d else ""), t, d, s) for t, d, s in shapes]
    chosen = chosen or [Shape("1024x1536", 1024, 1536, 1536)]  # PE-G at 448 px, the paper's widest teacher
    run = Run(images=images, views=views, samples_per_s=samples_per_s, gpus=gpus,
              images_per_chunk=images_per_chunk or DEFAULT_IMAGES_PER_CHUNK, image_bytes=image_bytes,
              stats_views=stats_views)
    costs = measure_costs(chosen, [c.strip() for c in codecs.split(",") if c.strip()], student_resolution)
    rows = estimate(run, costs)
    if as_json:
        from dataclasses import asdict

        click.echo(json.dumps({"run": asdict(run), "render_ms": costs.render_ms, "render_source": costs.render_source,
                               "measure_seconds": costs.seconds, "codecs": rows}, indent=2))
        return 0
    click.echo(_plan_text(run, costs, rows))
    return 0


def _teacher_shape(name: str):
    from eupe.models.teachers import teacher_spec
    from eupe.store.plan import Shape

    spec = teacher_spec(name)
    return Shape(name, (spec.resolution // spec.patch_size) ** 2, spec.patch_dim, spec.summary_dim)


def _plan_text(run, costs, rows: list[dict]) -> str:
    import os
    import platform

    lines = [f"measured in {costs.seconds:.1f} s on {platform.machine()} with {os.cpu_count()} cores (one thread; "
             f"reads hot in page cache); student image path {costs.render_ms:.1f} ms ({costs.render_source})",
             f"run: {run.images} images x {run.views} views, {run.samples_per_s:g} samples/s per GPU x {run.gpus} "
             f"GPUs, chunks of {run.images_per_chunk} images, {run.image_bytes / 1e3:.0f} kB JPEG per sample",
             f"{'codec':<8} {'teacher':<20} {'B/value':>7} {'MB/view':>8} {'store TB':>9} {'files':>9} "
             f"{'read ms':>8} {'+decode':>8} {'encode ms':>9} {'stats s':>8} {'full h':>7}"]
    for row in rows:
        for shape in costs.shapes:
            t = row["teachers"][shape.name]
            lines.append(f"{row['codec']:<8} {shape.name:<20} {t['bytes_per_value']:>7.3f} "
                         f"{t['bytes_per_view'] / 1e6:>8.3f} {t['store_bytes'] / 1e12:>9.2f} {t['files']:>9} "
                         f"{t['read_ms']:>8.2f} {t['read_decode_ms']:>8.2f} {t['encode_ms']:>9.1f} "
                         f"{t['stats_s_one_core']:>8.1f} {t['full_stats_h_one_core']:>7.1f}")
        cpu, gpu, bandwidth = row["cpu_ms_per_sample"], row["cores_per_gpu"], row["read_bytes_per_s_per_gpu"]
        lines.append(f"{'':<8} all: store {row['store_bytes'] / 1e12:.2f} TB; read {bandwidth / 1e9:.2f} "
                     f"GB/s per GPU ({bandwidth * run.gpus / 1e9:.1f} for {run.gpus}); CPU "
                     f"{cpu['decode_on_cpu']:.1f} ms/sample -> {gpu['decode_on_cpu']:.1f} cores per GPU decoding on "
                     f"the CPU, {cpu['decode_on_gpu']:.1f} ms -> {gpu['decode_on_gpu']:.1f} decoding on the GPU")
    return "\n".join(lines)


@click.command()
@click.argument("store_path", metavar="STORE")
@click.option("--out", required=True, help="Where to write the converted store (a new directory; re-run the same "
              "command to finish an interrupted upgrade).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON.")
def upgrade(store_path: str, out: str, as_json: bool) -> int:
    """Convert a store of an older format into today's (plain zarr then reads its features).

    STORE is left as it is. Every complete chunk is checked against STORE's manifest, converted,
    and verified (the new store's decoded targets equal the old ones bit for bit); current
    normalization statistics are carried over. Resumable: killed at any point, the same command
    finishes the work.
    """
    from eupe.store.upgrade import upgrade_store

    result = upgrade_store(store_path, out, progress=(lambda _: None) if as_json else click.echo)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return 0
    for name, t in result["teachers"].items():
        click.echo(f"teacher {name}: {t['chunks_converted']} chunks converted now, {t['chunks_verified']} verified "
                   f"bit for bit; statistics carried over at {t['stats'] or 'no resolution'}")
    click.echo(f"upgraded store written to {out} (format {result['version']}); {store_path} is unchanged")
    return 0
