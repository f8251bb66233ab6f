"""Fault injection on the feature store: every case, its outcome, and whether it is the guaranteed one.

Kills a real extraction (SIGKILL through $EUPE_FAILPOINT) at store creation, teacher creation,
mid-chunk, right after a chunk's completion record and while statistics are saved; damages a
finished store (deletes, swaps and truncates chunk files, edits attributes); and makes the user
mistakes a newcomer makes (--out on a folder of their own files, changed or missing shards, two
processes with one rank). Each case checks what docs/cache.md promises: nothing of the user's is
deleted, a re-run finishes the job, and damage is refused by `verify` and by every reader --
a missing chunk never decodes as zeros.

    .venv/bin/python bench/faults.py            # prints case -> outcome -> OK/FAIL
    tests/store/test_faults.py runs the same cases under pytest.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

TEACHER = "dinov3_hplus"


@dataclass
class Env:
    """Paths shared by the cases: shards of real photos and a finished reference store."""

    root: Path
    shards: str
    reference: Path

    def fresh(self, name: str) -> Path:
        path = self.root / name
        shutil.rmtree(path, ignore_errors=True)
        return path

    def copy_reference(self, name: str) -> Path:
        path = self.fresh(name)
        shutil.copytree(self.reference, path)
        return path


def extract_args(shards: str, out: Path, *extra: str, codec: str = "fp16") -> list[str]:
    return ["extract", "--teacher", TEACHER, "--test-scale", "--data", shards, "--out", str(out), "--views", "2",
            "--resolution", "64", "--images-per-chunk", "2", "--num-workers", "0", "--codec", codec, *extra]


def cli(args: list[str]) -> tuple[int, str]:
    """Run eupe-cache in this process; returns (exit status, stdout + stderr)."""
    from eupe.cache_tools.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(args)
    return rc, out.getvalue() + err.getvalue()


def killed_at(point: str, args: list[str]) -> int:
    """Run eupe-cache in a subprocess that SIGKILLs itself at a failpoint; returns its exit status."""
    code = "import sys; from eupe.cache_tools.cli import main; sys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "EUPE_FAILPOINT": point, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, timeout=600).returncode


def teacher_arrays(path: Path) -> dict[str, np.ndarray]:
    import zarr

    group = zarr.open_group(str(path), mode="r")[f"teachers/{TEACHER}"]
    out: dict[str, np.ndarray] = {}

    def walk(g, prefix):
        for name, arr in g.arrays():
            out[prefix + name] = arr[:]
        for name, sub in g.groups():
            if name != "claims":
                walk(sub, f"{prefix}{name}/")

    walk(group, "")
    return out


def same_as_reference(env: Env, path: Path) -> bool:
    ref, got = teacher_arrays(env.reference), teacher_arrays(path)
    keys = [k for k in ref if "/stats/" not in k]
    return all(np.array_equal(ref[k], got[k], equal_nan=True) for k in keys)


def chunk_file(store: Path, array: str, chunk: int) -> Path:
    import zarr

    arr = zarr.open_array(str(store / "teachers" / TEACHER / array), mode="r")
    return store / "teachers" / TEACHER / array / arr.metadata.encode_chunk_key((chunk,) + (0,) * (arr.ndim - 1))


def read_refused(store: Path, read: Callable) -> str:
    """'refused: ...' when reading raises StoreError, else 'READ' (and what came back)."""
    from eupe.store.layout import StoreError
    from eupe.store.store import FeatureStore

    try:
        value = read(FeatureStore.open(store).teacher(TEACHER))
    except StoreError as err:
        return f"refused ({str(err).splitlines()[0][:70]}...)"
    return f"READ {np.asarray(value).ravel()[:3]}"


# -- cases: kill -9 at each stage, then re-run the same command -------------------------------------


def kill_case(point: str) -> Callable[[Env], tuple[str, bool]]:
    def case(env: Env) -> tuple[str, bool]:
        out = env.fresh(f"kill-{point}")
        rc = killed_at(point, extract_args(env.shards, out))
        mid_info, _ = cli(["info", str(out)]) if (out / "zarr.json").exists() else (0, "")
        rerun, _ = cli(extract_args(env.shards, out))
        verify, _ = cli(["verify", str(out)])
        same = same_as_reference(env, out)
        left = [p.name for p in (out / "teachers").glob(".*")] if (out / "teachers").is_dir() else []
        outcome = (f"killed rc={rc}; info rc={mid_info}; re-run rc={rerun}; verify rc={verify}; identical={same}; "
                   f"staged copies left={left}")
        return outcome, rc == -9 and mid_info == 0 and rerun == 0 and verify == 0 and same and not left
    return case


def kill_store_creation(env: Env) -> tuple[str, bool]:
    out = env.fresh("kill-store-staged")
    rc = killed_at("store-staged", extract_args(env.shards, out))
    left = out.exists()
    rerun, _ = cli(extract_args(env.shards, out))
    verify, _ = cli(["verify", str(out)])
    stale = [p.name for p in out.parent.glob(".kill-store-staged.eupe-staging-*")]
    return (f"killed rc={rc}; store left behind={left}; re-run rc={rerun}; verify rc={verify}; staging left={stale}",
            rc == -9 and not left and rerun == 0 and verify == 0 and same_as_reference(env, out) and not stale)


def kill_stats(env: Env) -> tuple[str, bool]:
    out = env.copy_reference("kill-stats")
    rc = killed_at("stats-arrays", ["stats", str(out)])
    verify_rc, text = cli(["verify", str(out)])
    from eupe.store.stats import load_stats
    from eupe.store.store import FeatureStore

    partial_used = load_stats(FeatureStore.open(out).teacher(TEACHER), 64) is not None
    again, _ = cli(["stats", str(out)])
    final, _ = cli(["verify", str(out)])
    ok = rc == -9 and verify_rc == 1 and "partial or altered" in text and not partial_used and again == 0 and final == 0
    return f"killed rc={rc}; verify rc={verify_rc} (partial stats reported); partial used={partial_used}; " \
           f"stats re-run rc={again}; verify rc={final}", ok


# -- cases: damage a finished store ------------------------------------------------------------------


def damage_case(name: str, damage: Callable[[Path], None], read: Callable) -> Callable[[Env], tuple[str, bool]]:
    def case(env: Env) -> tuple[str, bool]:
        out = env.copy_reference(f"damage-{name}")
        damage(out)
        rc, text = cli(["verify", str(out)])
        refused = read_refused(out, read)
        ok = rc in (1, 2) and ("corrupt" in text or "Error:" in text or "incomplete" in text) and refused.startswith("refused")
        return f"verify rc={rc}; reader {refused}", ok
    return case


def _delete(array: str, chunk: int) -> Callable[[Path], None]:
    return lambda store: chunk_file(store, array, chunk).unlink()


def _swap(array: str, a: int, b: int) -> Callable[[Path], None]:
    def damage(store: Path) -> None:
        pa, pb = chunk_file(store, array, a), chunk_file(store, array, b)
        tmp = pa.with_suffix(".swap")
        pa.rename(tmp), pb.rename(pa), tmp.rename(pb)
    return damage


def _truncate(array: str, chunk: int) -> Callable[[Path], None]:
    def damage(store: Path) -> None:
        path = chunk_file(store, array, chunk)
        path.write_bytes(path.read_bytes()[:-7])
    return damage


def _edit(where: str, key: str, value) -> Callable[[Path], None]:
    def damage(store: Path) -> None:
        path = store / where / "zarr.json"
        meta = json.loads(path.read_text())
        node = meta["attributes"]
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
        path.write_text(json.dumps(meta))
    return damage


def edit_codec_step(env: Env) -> tuple[str, bool]:
    out = env.fresh("damage-codec-step")
    cli(extract_args(env.shards, out, "--limit", "4", codec="compact"))
    _edit(f"teachers/{TEACHER}", "codec.alpha", 0.5)(out)
    rc, text = cli(["verify", str(out)])
    refused = read_refused(out, lambda g: g.reader.targets(0, 64, 0)["patch"])
    return f"verify rc={rc}; reader {refused}", rc in (1, 2) and refused.startswith("refused")


PATCH = "r64/patch"


# -- cases: user mistakes -----------------------------------------------------------------------------


def out_is_a_user_folder(env: Env) -> tuple[str, bool]:
    out = env.fresh("user-folder")
    out.mkdir()
    (out / "thesis.tex").write_text("months of work")
    rc, text = cli(extract_args(env.shards, out))
    kept = (out / "thesis.tex").read_text() == "months of work" and len(list(out.iterdir())) == 1
    return f"rc={rc}; files kept={kept}; {_error_line(text)}", rc == 2 and kept


def out_is_the_shard_folder(env: Env) -> tuple[str, bool]:
    folder = Path(env.shards.split("{")[0]).parent
    before = sorted(p.name for p in folder.iterdir())
    rc, text = cli(extract_args(env.shards, folder))
    kept = sorted(p.name for p in folder.iterdir()) == before
    return f"rc={rc}; shards kept={kept}; {_error_line(text)}", rc == 2 and kept


def _with_shards_copy(env: Env, name: str) -> tuple[Path, str]:
    src = Path(env.shards.split("{")[0]).parent
    dst = env.fresh(name)
    shutil.copytree(src, dst)
    return dst, str(dst / Path(env.shards).name)


def shard_changed_on_resume(env: Env) -> tuple[str, bool]:
    folder, shards = _with_shards_copy(env, "changed-shards")
    out = folder / "store.zarr"
    killed_at("chunk-done", extract_args(shards, out))
    first = sorted(folder.glob("*.tar"))[1]
    first.write_bytes(first.read_bytes()[::-1][: first.stat().st_size])  # regenerated: same path, same size
    rc, text = cli(extract_args(shards, out))
    return f"rc={rc}; {_error_line(text)}", rc == 2 and "changed" in text


def shard_missing_on_resume(env: Env) -> tuple[str, bool]:
    folder, shards = _with_shards_copy(env, "missing-shards")
    out = folder / "store.zarr"
    killed_at("chunk-done", extract_args(shards, out))
    sorted(folder.glob("*.tar"))[2].unlink()
    rc, text = cli(extract_args(shards, out))
    return f"rc={rc}; {_error_line(text)}", rc == 2 and "missing" in text


def _claim(out: Path, rank: int, world: int) -> None:
    """The claim file a live extraction of (rank, world) holds (this process stands in for it)."""
    claims = out / "teachers" / TEACHER / "claims"
    claims.mkdir(parents=True, exist_ok=True)
    (claims / f"rank-{rank}.json").write_text(json.dumps(
        {"rank": rank, "world_size": world, "host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}))


def same_rank_twice(env: Env) -> tuple[str, bool]:
    out = env.fresh("same-rank")
    cli(extract_args(env.shards, out, "--limit", "4", "--rank", "0", "--world-size", "2"))
    _claim(out, 1, 2)
    rc, text = cli(extract_args(env.shards, out, "--limit", "4", "--rank", "1", "--world-size", "2"))
    return f"rc={rc}; {_error_line(text)}", rc == 2 and "already extracting" in text


def ranks_disagree_on_world_size(env: Env) -> tuple[str, bool]:
    out = env.fresh("world-size")
    cli(extract_args(env.shards, out, "--limit", "4", "--rank", "0", "--world-size", "2"))
    _claim(out, 1, 3)
    rc, text = cli(extract_args(env.shards, out, "--limit", "4", "--rank", "0", "--world-size", "2"))
    return f"rc={rc}; {_error_line(text)}", rc == 2 and "world-size" in text


def kill_view_block_creation(env: Env) -> tuple[str, bool]:
    """Growing a store's views (--views 3 on a 2-view store), killed while the view block is built."""
    from eupe.store.store import FeatureStore

    out = env.fresh("kill-block-staged")
    first, _ = cli(extract_args(env.shards, out))
    rc = killed_at("block-staged", extract_args(env.shards, out, "--views", "3"))
    views_after_kill = FeatureStore.open(out).teacher(TEACHER).blocks.total_views
    rerun, _ = cli(extract_args(env.shards, out, "--views", "3"))
    verify, _ = cli(["verify", str(out)])
    group = FeatureStore.open(out).teacher(TEACHER)
    grown = group.blocks.total_views == group.blocks.complete_views() == 3
    same = same_as_reference(env, out)  # the first two views are untouched
    left = [p.name for p in (out / "teachers" / TEACHER / "blocks").glob(".*")]  # the killed run's staged copy
    outcome = (f"killed rc={rc}; views after kill={views_after_kill}; re-run rc={rerun}; verify rc={verify}; "
               f"3 complete views={grown}; old views identical={same}; staged copies left={left}")
    return (outcome, first == 0 and rc == -9 and views_after_kill == 2 and rerun == 0 and verify == 0 and grown
            and same and not left)


def _error_line(text: str) -> str:
    line = next((ln for ln in text.splitlines() if ln.startswith("Error:")), "no Error: line")
    return line[:90]


CASES: dict[str, Callable[[Env], tuple[str, bool]]] = {
    "kill -9 during store creation": kill_store_creation,
    "kill -9 during teacher-group creation": kill_case("teacher-staged"),
    "kill -9 mid-chunk (data written, not recorded)": kill_case("chunk-data"),
    "kill -9 right after a chunk's completion record": kill_case("chunk-done"),
    "kill -9 while statistics are saved": kill_stats,
    "kill -9 while a view block is added (--views 2 -> 3)": kill_view_block_creation,
    "delete a patch chunk file": damage_case("delete", _delete(PATCH, 1), lambda g: g.reader.targets(2, 64, 0)["patch"]),
    "swap two patch chunk files": damage_case("swap", _swap(PATCH, 1, 2), lambda g: g.reader.targets(2, 64, 0)["patch"]),
    "truncate a patch chunk file": damage_case("truncate", _truncate(PATCH, 3), lambda g: g.reader.targets(6, 64, 1)["patch"]),
    "delete a status chunk": damage_case("status", _delete("status", 2), lambda g: g.reader.status()),
    "delete a views chunk": damage_case("views", _delete("views", 0), lambda g: g.reader.views(0)),
    "delete a manifest row (completion record)": damage_case("manifest", _delete("manifest", 4),
                                                             lambda g: g.reader.targets(8, 64, 0)["patch"]),
    "edit root attribute views_per_image": damage_case("views-per-image", _edit(".", "views_per_image", 1),
                                                       lambda g: g.reader.targets(0, 64, 0)),
    "edit teacher attribute grids": damage_case("grids", _edit(f"teachers/{TEACHER}", "grids", [[2, 8]]),
                                                lambda g: g.reader.targets(0, 64, 0)),
    "edit the codec's step (compact alpha)": edit_codec_step,
    "--out is a folder of the user's files": out_is_a_user_folder,
    "--out is the shard folder": out_is_the_shard_folder,
    "shard regenerated between runs": shard_changed_on_resume,
    "shard missing on resume": shard_missing_on_resume,
    "second process with the same --rank": same_rank_twice,
    "ranks with different --world-size": ranks_disagree_on_world_size,
}


def make_env(root: Path) -> Env:
    from eupe.assets import bundled_photos, imagenet_photos, write_photo_shards

    shard_dir = root / "shards"
    shard_dir.mkdir(parents=True)
    write_photo_shards(shard_dir, (bundled_photos() + imagenet_photos())[:12], per_shard=4, max_side=160)
    shards = str(shard_dir / "photos-{000000..000002}.tar")
    reference = root / "reference.zarr"
    rc, text = cli(extract_args(shards, reference))
    assert rc == 0, text
    return Env(root, shards, reference)


def main() -> int:
    sys.path.insert(0, str(Path(__file__).parent))
    from machine import describe  # noqa: E402

    print(f"# feature-store fault injection on {describe()}")
    with tempfile.TemporaryDirectory() as tmp:
        env = make_env(Path(tmp))
        failures = 0
        print(f"{'case':<48} {'result':<6} outcome")
        for name, case in CASES.items():
            try:
                outcome, ok = case(env)
            except Exception as err:  # noqa: BLE001 - a crash is a failed case, reported in the table
                outcome, ok = f"CRASHED {type(err).__name__}: {err}", False
            failures += not ok
            print(f"{name:<48} {'OK' if ok else 'FAIL':<6} {outcome}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
