"""``eupe-cache extract | info | verify | stats``: thin click wrappers over ``eupe.store``."""

from __future__ import annotations

import json

import click

# Heavy libraries (torch, zarr, timm) are imported inside the commands: `--help` stays instant.


def _int_list(_ctx, _param, value: str | None) -> list[int]:
    if not value or value == "native":
        return []
    try:
        return [int(v) for v in value.split(",")]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of integers, e.g. 256,384,512")


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
              "(shards/train-{000000..000099}.tar) or fsspec URL.")
@click.option("--out", required=True, help="Feature store (a directory; created if absent, extended if present).")
@click.option("--views", default=4, show_default=True, type=click.IntRange(1), help="Views per image (K).")
@click.option("--resolution", "resolutions", default="native", show_default=True, callback=_int_list,
              help="Teacher input resolution(s): 'native' or a list such as 256,384,512 (every view at each).")
@click.option("--codec", default="compact", show_default=True,
              help="fp16, int8, int6, int4, compact (0.53 B/value, normalized cosine 0.9992) or tiny "
                   "(0.35, 0.993); see README.")
@click.option("--weights", default=None, help="Local weights file (or proxy run directory) for the teacher.")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1), help="Views per teacher forward.")
@click.option("--num-workers", default=2, show_default=True, type=click.IntRange(0), help="DataLoader workers that read and render images.")
@click.option("--seed", default=None, type=int,
              help="Seed of the view sampling. Default: the existing store's; for a new store, a hash of the "
                   "teacher names, so a proxy's store (Stage 2) draws other views than its teachers' (Stage 1).")
@click.option("--limit", default=None, type=click.IntRange(1), help="Only the first N images (trials).")
@click.option("--images-per-chunk", default=16, show_default=True, type=click.IntRange(1),
              help="Images per store chunk: the unit of writing, resuming and parallel work.")
@click.option("--rank", default=None, type=click.IntRange(0), help="This process's rank (default: $RANK or 0).")
@click.option("--world-size", default=None, type=click.IntRange(1), help="Number of processes (default: $WORLD_SIZE or 1).")
@click.option("--device", default=None, help="torch device (default: cuda:<rank> when available, else cpu).")
@click.option("--max-pixels", default=64_000_000, show_default=True, type=click.IntRange(1),
              help="Source images with more pixels are recorded as failed without being decoded.")
@click.option("--retry-failed", is_flag=True,
              help="Redo chunks holding images that failed with a read error (e.g. a shard was offline).")
@click.option("--test-scale", is_flag=True, hidden=True, help="Tiny random-init teachers (tests).")
def extract(teachers, data, out, views, resolutions, codec, weights, batch_size, num_workers, seed, limit,
            images_per_chunk, rank, world_size, device, max_pixels, retry_failed, test_scale) -> int:
    """Run teachers once over a dataset and write their outputs to a feature store.

    Each image gets K views drawn from (seed, image key, view index); each view is rendered at
    the teacher's resolution(s) by the shared renderer. Kill it at any time: re-running the same
    command finishes only the missing chunks. Several processes (--rank/--world-size, or
    `accelerate launch`) split the chunks between them.
    """
    from tqdm import tqdm

    from eupe.store import ExtractConfig, extract_teacher, load_teachers, open_or_create_store

    rank, world_size = _rank_world(rank, world_size)
    cfg = ExtractConfig(list(teachers), data, out, views, resolutions, codec, weights, batch_size,
                        num_workers, seed, limit, images_per_chunk, rank, world_size, device, test_scale,
                        retry_failed=retry_failed, max_pixels=max_pixels)
    encoders = load_teachers(cfg)  # unknown teacher/codec, missing weights, bad sizes: fail before any work
    store = open_or_create_store(cfg, progress=rank == 0)
    for teacher in encoders:
        with tqdm(desc=f"{teacher.spec.name} [rank {rank}/{world_size}]", unit="img", disable=None) as bar:
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
            "dataset": {k: v for k, v in store.dataset.items() if k != "shard_fingerprints"}, "teachers": {}}
    for name in store.teacher_names():
        group = store.teacher(name)
        status = store.image_status(name, save=True)  # consolidated for the next start when absent or stale
        counts = group.counts(store.progress(name).rows, status)  # the manifest, read once
        info["teachers"][name] = {
            **{k: group.attrs[k] for k in ("weights_sha256", "preprocessing", "resolutions", "grids", "dim", "codec")},
            **counts, "complete": counts["chunks_done"] == counts["chunks"],
            "failed_inputs": [{"key": k, "reason": r} for k, r in store.failures(name)],
        }
    return info


@click.command()
@click.argument("store_path", metavar="STORE")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON.")
def info(store_path: str, as_json: bool) -> int:
    """Show a store's identity, per-teacher counts, completeness, failed inputs and size."""
    from eupe.store import FeatureStore

    data = store_info(FeatureStore.open(store_path))
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        return 0
    ds = data["dataset"]
    click.echo(f"store {data['path']}: {ds['num_images']} images in {len(ds['shards'])} shard(s), "
               f"K={data['views_per_image']} views, seed {data['seed']}")
    for failure in ds["failed_shards"]:
        click.echo(f"  failed shard {failure['shard']}: {failure['reason']}")
    for skipped in ds.get("skipped_samples", []):
        click.echo(f"  skipped sample {skipped['key']} in {skipped['shard']}: {skipped['reason']}")
    for name, t in data["teachers"].items():
        click.echo(f"teacher {name}: weights sha256 {t['weights_sha256'][:16]}..., resolutions {t['resolutions']}, "
                   f"codec {t['codec']['name']}, dim {t['dim']}")
        click.echo(f"  {t['images_done']}/{t['images']} images in done chunks: {t['ok']} ok, {t['failed']} failed; "
                   f"chunks {t['chunks_done']}/{t['chunks']} ({'complete' if t['complete'] else 'INCOMPLETE'}), "
                   f"{_size(t['bytes_written'])}")
        for failure in t["failed_inputs"]:
            click.echo(f"  failed input {failure['key']}: {failure['reason']}")
    return 0


@click.command()
@click.argument("store_path", metavar="STORE")
@click.option("--teacher-check", default=0, show_default=True, type=click.IntRange(0),
              help="Re-run the teacher on N random stored views and compare with the cache.")
@click.option("--weights", default=None, help="Teacher weights for --teacher-check (default: as for extract).")
@click.option("--seed", default=0, show_default=True, help="Seed for choosing the views to re-check.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON.")
@click.option("--test-scale", is_flag=True, hidden=True)
def verify(store_path, teacher_check: int, weights, seed, as_json, test_scale) -> int:
    """Check completeness and chunk checksums; optionally re-run the teacher on N views.

    Every done chunk's files are compared with the sizes and checksums recorded when they were
    written (missing, moved, truncated or altered files are named with their image keys); edited
    attributes fail the store's identity check. Exits 1 when anything is missing, corrupt,
    incomplete, or below the codec's cosine threshold.
    """
    from eupe.store import FeatureStore, verify_images, verify_teacher

    store = FeatureStore.open(store_path)
    result = {"images": verify_images(store), "teachers": {}}
    ok = not result["images"]
    for name in store.teacher_names():
        report = verify_teacher(store, name)
        if teacher_check:
            report.check = _teacher_check(store, name, teacher_check, seed, weights, test_scale)
        result["teachers"][name] = {**report.__dict__, "ok": report.ok}
        ok &= report.ok
    result["ok"] = ok
    click.echo(json.dumps(result, indent=2) if as_json else _verify_text(result))
    return 0 if ok else 1


def _teacher_check(store, name, n, seed, weights, test_scale) -> dict:
    from eupe.store import teacher_check

    return teacher_check(store.teacher(name), n, seed, weights, test_scale)


def _verify_text(result: dict) -> str:
    lines = [f"corrupt chunk {p['array']}[{p['chunk']}]: {p['error']}" for p in result["images"]]
    for name, r in result["teachers"].items():
        lines.append(f"{name}: {'OK' if r['ok'] else 'PROBLEMS'}; {len(r['incomplete'])} incomplete images, "
                     f"{len(r['corrupt'])} corrupt chunks, {r['failed_images']} failed inputs")
        if r.get("read_errors"):
            lines.append(f"  {len(r['read_errors'])} image(s) could not be read (transient?): re-run extract with "
                         f"--retry-failed ({', '.join(r['read_errors'][:5])})")
        lines += [f"  corrupt {p['array']} chunk {p['chunk']} (images {', '.join(p['keys'])}): {p['error']}"
                  for p in r["corrupt"]]
        lines += [f"  statistics r{resolution}: {state}" + (" (run `eupe-cache stats`)" if state != "ok" else "")
                  for resolution, state in r.get("stats", {}).items() if state != "absent"]
        if r["incomplete"]:
            lines.append(f"  incomplete: {', '.join(r['incomplete'][:20])}{' ...' if len(r['incomplete']) > 20 else ''}")
        if r["check"]:
            c = r["check"]
            lines.append("  teacher check: " + (c.get("error") or
                         f"{c['views']} views, token cosine mean {c['mean_cosine']:.5f} min {c['min_cosine']:.5f} "
                         f"(threshold {c['threshold']}) -> {'pass' if c['passed'] else 'FAIL'}; normalized patch "
                         f"cosine {c['norm_cosine']:.5f} (min {c['norm_cosine_min']:.5f}), smooth-L1 floor "
                         f"{c['smooth_l1_floor']:.2e} ({c['normalized_with']})"))
    lines.append("store OK" if result["ok"] else "store has problems")
    return "\n".join(lines)


@click.command()
@click.argument("store_path", metavar="STORE")
@click.option("--teacher", "teachers", multiple=True, help="Teacher(s) to compute (default: all in the store).")
def stats(store_path: str, teachers: tuple[str, ...]) -> int:
    """Compute per-coordinate float64 mean/std of each teacher's outputs and save them in the store.

    The trainer normalizes targets with these frozen statistics (EUPE teacher normalization).
    Statistics record which chunks they cover; after the store grows they are recomputed.
    """
    import numpy as np
    from tqdm import tqdm

    from eupe.store import FeatureStore, compute_stats, save_stats

    store = FeatureStore.open(store_path, mode="a")
    for name in teachers or store.teacher_names():
        group = store.teacher(name)
        for resolution in group.resolutions:
            with tqdm(total=store.num_images, desc=f"stats {name} r{resolution}", unit="img", disable=None) as bar:
                moments = compute_stats(group, resolution, bar.update)
            save_stats(group, resolution, moments)
            click.echo(f"{name} r{resolution}: {moments['patch'].count} patch tokens, {moments['summary'].count} summaries; "
                       f"patch std median {float(np.median(moments['patch'].std)):.4g}")
    return 0
