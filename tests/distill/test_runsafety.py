"""A training run nobody can silently corrupt (issue 21 items 1, 2, 3, 5).

Each test injects one fault into a real run (statistics recomputed between checkpoint and resume,
NaN targets with re-signed checksums, a mismatched re-run, truncated or torn run-directory files, a
full disk) and asserts the outcome: the uninterrupted run's losses exactly, or one ``Error:`` line
with exit 2 naming the file and the fix. Stage-2 runs of a test-scale ViT-T against a cached
test-scale teacher, 12 photos (no Stage 1 needed).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from eupe.cache_tools.cli import main as cache_main
from eupe.train.cli import main as train_main

pytestmark = pytest.mark.slow  # each test trains (seconds each on 2 cores)

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "train"
TEACHER = "dinov3_hplus"


def _losses(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "losses.jsonl").read_text().splitlines()]


def _totals(run: Path) -> list[float]:
    return [r["total"] for r in _losses(run)]


def _args(store: str, shards: str, run: Path, *overrides: str) -> list[str]:
    return ["--stage", "2", "--config", str(CONFIGS / "tiny_stage2.yaml"), f"out={run}", f"data.store={store}",
            f"data.shards={shards}", "teachers=[{name: " + TEACHER + ", test_scale: true}]", "iterations=8",
            "checkpoint_every=2", "keep_checkpoints=3", *overrides]


def _error_line(capsys) -> str:
    """The one line of stderr besides progress lines (which must not share the error's line)."""
    err = [line for line in capsys.readouterr().err.strip().splitlines()
           if not re.match(r"[^:]+: \d+/\d+ \S+ \(\d+%\)", line)]
    assert len(err) == 1 and err[0].startswith("Error: "), err
    return err[0]


@pytest.fixture(scope="module")
def base(tmp_path_factory, photo_shards):
    """A cached test-scale teacher and the uninterrupted reference run of 8 steps."""
    root = tmp_path_factory.mktemp("runsafety")
    store = str(root / "teacher.zarr")
    assert cache_main(["extract", "--data", photo_shards, "--out", store, "--views", "2", "--limit", "12",
                       "--images-per-chunk", "4", "--num-workers", "0", "--teacher", TEACHER, "--test-scale",
                       "--resolution", "64", "--codec", "fp16"]) == 0
    reference = root / "reference"
    assert train_main(_args(store, photo_shards, reference)) == 0
    return {"root": root, "store": store, "shards": photo_shards, "reference": _totals(reference)}


def _store_copy(base, tmp_path: Path) -> str:
    store = tmp_path / "store.zarr"
    shutil.copytree(base["store"], store)
    return str(store)


# --- item 1: the statistics a run starts with are frozen in its directory -----------------------

def test_recomputed_store_statistics_do_not_change_a_resumed_run(base, tmp_path, capsys):
    store, run = _store_copy(base, tmp_path), tmp_path / "run"
    assert train_main(_args(store, base["shards"], run, "max_steps=4")) == 0
    assert (run / "stats" / f"{TEACHER}_r64.npz").is_file()
    assert cache_main(["stats", store, "--sample", "5", "--seed", "7"]) == 0  # other statistics in the store
    capsys.readouterr()
    assert train_main(_args(store, base["shards"], run)) == 0
    out = capsys.readouterr().out
    assert (f"warning: the store's normalization statistics of {TEACHER} r64 differ from the ones this run "
            "started with") in out
    np.testing.assert_allclose(_totals(run), base["reference"], rtol=1e-6)
    fresh = tmp_path / "fresh"  # a new run does adopt the store's new statistics
    assert train_main(_args(store, base["shards"], fresh, "max_steps=2")) == 0
    assert not np.allclose(_totals(fresh), base["reference"][:2], rtol=1e-3)


# --- item 2: non-finite values stop everything that would spread them ----------------------------

def _inject_nan(store_path: str, chunk: int) -> None:
    """NaN in every summary of one chunk's images, the chunk's checksums recomputed (they are not signatures).

    The codec refuses to encode NaN, so the NaN goes into the stored components (fp16 values) and the
    shard is written back as the store writes it."""
    from eupe.store import manifest
    from eupe.store.fastread import write_shard
    from eupe.store.layout import MANIFEST
    from eupe.store.store import FeatureStore

    group = FeatureStore.open(store_path, mode="a").teacher(TEACHER)
    name = group.reader.target_names(64)["summary"][0]
    rows = group.store.chunk_rows(chunk)
    parts = group.reader.read_parts(slice(rows.start, rows.stop), 64)["summary"]  # {component: [C, K, ...]}
    assert all(p.dtype == np.float16 for p in parts.values())  # fp16: NaN is a stored value
    for values in parts.values():
        values[..., 0] = np.nan
    write_shard(group.array(name), chunk, parts)
    signed = np.asarray(group.array(MANIFEST)[chunk])
    signed[group.array_names.index(name)] = manifest.record(group.array(name), name, chunk, group.fingerprint)
    group.array(MANIFEST)[chunk] = signed


def test_nan_targets_stop_training_stats_and_are_found_by_verify(base, tmp_path, capsys):
    store, run = _store_copy(base, tmp_path), tmp_path / "run"
    assert train_main(_args(store, base["shards"], run, "max_steps=2")) == 0  # statistics frozen while finite
    _inject_nan(store, chunk=1)
    assert cache_main(["verify", store]) == 0  # the checksums were re-signed: the bytes look fine
    capsys.readouterr()
    assert train_main(_args(store, base["shards"], run)) == 2
    line = _error_line(capsys)
    assert f"non-finite loss {TEACHER}/summary_cos_loss = nan (teacher '{TEACHER}', summary tokens)" in line
    step = int(line.split("Error: step ")[1].split(":")[0])
    assert 2 <= step < 8 and f"resume point: {run / 'checkpoints'}" in line and "verify" in line and "--finite" in line
    assert [r["step"] for r in _losses(run)] == list(range(step))  # the NaN step is not logged
    np.testing.assert_allclose(_totals(run), base["reference"][:step], rtol=1e-6)
    kept = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert kept[-1] == f"step_{step - step % 2:08d}" and not (run / "student.safetensors").exists()

    capsys.readouterr()
    assert cache_main(["stats", store]) == 2
    line = _error_line(capsys)
    assert f"{store}/teachers/{TEACHER} r64: 1 of " in line and "summary statistics coordinates are NaN" in line
    assert f"eupe-cache verify {store} --finite" in line
    assert cache_main(["verify", store, "--finite"]) == 1
    out = capsys.readouterr().out
    assert "non-finite summary targets r64 in chunk 1 (images " in out and "chunk 0" not in out
    from eupe.store.store import FeatureStore
    from eupe.store.verify import verify_teacher

    report = verify_teacher(FeatureStore.open(store), TEACHER, finite=True)
    assert [(p["chunk"], p["kinds"], len(p["keys"])) for p in report.nonfinite] == [(1, ["summary"], 4)]


def test_export_names_nan_weights_as_the_cause(base, tmp_path, capsys):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from eupe.export.cli import main as export_main

    good = base["root"] / "reference" / "student.safetensors"
    tensors = load_file(str(good))
    with safe_open(str(good), framework="pt") as handle:
        meta = handle.metadata()
    name = sorted(tensors)[3]
    tensors[name][0] = float("nan")
    bad = tmp_path / "student.safetensors"
    save_file(tensors, str(bad), metadata=meta)
    assert export_main(["--checkpoint", str(bad), "--out", str(tmp_path / "export"), "--resolution", "64"]) == 2
    line = _error_line(capsys)
    assert f"{bad}: 1 of {len(tensors)} weight tensors hold NaN or infinite values ({name})" in line
    assert "diverged" in line and not (tmp_path / "export").exists()


# --- item 3: a re-run resumes only what it started -----------------------------------------------

def test_a_resume_with_another_config_or_store_is_refused_and_allowed_changes_are_recorded(base, tmp_path, capsys):
    run = tmp_path / "run"
    assert train_main(_args(base["store"], base["shards"], run, "max_steps=2")) == 0
    config = (run / "config.yaml").read_bytes()
    capsys.readouterr()
    assert train_main(_args(base["store"], base["shards"], run, "optim.lr=5.0e-4", "seed=3")) == 2
    line = _error_line(capsys)
    assert f"{run} holds a run started with another config or store" in line
    assert "optim.lr: 0.001 when the run started, 0.0005 now" in line and "seed: 0 when the run started, 3 now" in line
    assert "new out=" in line and (run / "config.yaml").read_bytes() == config
    other = str(tmp_path / "other.zarr")  # the same images and teacher, another store (other chunking)
    assert cache_main(["extract", "--data", base["shards"], "--out", other, "--views", "2", "--limit", "12",
                       "--images-per-chunk", "6", "--num-workers", "0", "--teacher", TEACHER, "--test-scale",
                       "--resolution", "64", "--codec", "fp16"]) == 0
    capsys.readouterr()
    assert train_main(_args(other, base["shards"], run)) == 2
    assert "the feature store is another one (identity" in _error_line(capsys)
    assert (run / "config.yaml").read_bytes() == config and not (run / "checkpoints" / "step_00000004").exists()

    moved = _store_copy(base, tmp_path)  # the same store elsewhere, and a longer schedule: allowed, recorded
    assert train_main(_args(moved, base["shards"], run, "iterations=10")) == 0
    out = capsys.readouterr().out
    assert "resuming with changed data.store" in out and "iterations (8 -> 10)" in out
    record = json.loads((run / "run.json").read_text())
    assert record["config"]["iterations"] == 8 and record["config"]["data"]["store"] == base["store"]
    assert record["resumes"][0]["step"] == 2
    assert record["resumes"][0]["changed"]["iterations"] == {"from": 8, "to": 10}
    assert "iterations: 10" in (run / "config.yaml").read_text()
    from eupe.models.checkpoint import read_student_metadata

    info = read_student_metadata(run / "student.safetensors")["info"]
    assert info["resumed_with_changes"][0]["changed"]["data.store"] == {"from": base["store"], "to": moved}
    assert [r["step"] for r in _losses(run)] == list(range(10))
    np.testing.assert_allclose(_totals(run)[:2], base["reference"][:2], rtol=1e-6)


# --- item 5: damaged run directories -------------------------------------------------------------

def _stopped_run(base, tmp_path: Path, steps: int) -> Path:
    run = tmp_path / "run"
    assert train_main(_args(base["store"], base["shards"], run, f"max_steps={steps}")) == 0
    return run


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_a_truncated_newest_checkpoint_is_skipped_saying_why(base, tmp_path, capsys):
    run = _stopped_run(base, tmp_path, 6)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [f"step_0000000{i}" for i in (2, 4, 6)]
    damaged = run / "checkpoints" / "step_00000006" / "model.safetensors"
    size = damaged.stat().st_size
    _truncate(damaged)
    capsys.readouterr()
    assert train_main(_args(base["store"], base["shards"], run)) == 0
    out = capsys.readouterr().out
    assert (f"warning: skipping checkpoint {run / 'checkpoints' / 'step_00000006'}: model.safetensors has "
            f"{size // 2} bytes, {size} were written (truncated?)") in out
    assert f"resuming from {run / 'checkpoints' / 'step_00000004'} (step 4)" in out
    np.testing.assert_allclose(_totals(run), base["reference"], rtol=1e-6)


def test_every_checkpoint_damaged_is_one_error_line(base, tmp_path, capsys):
    run = _stopped_run(base, tmp_path, 2)
    (run / "checkpoints" / "step_00000002" / "optimizer.bin").write_bytes(b"")
    capsys.readouterr()
    assert train_main(_args(base["store"], base["shards"], run)) == 2
    line = _error_line(capsys)
    assert f"no intact checkpoint in {run / 'checkpoints'} (step_00000002: optimizer.bin has 0 bytes" in line
    assert "move the damaged ones away" in line


def test_a_torn_loss_log_and_an_empty_views_record_do_not_block_resume(base, tmp_path, capsys):
    store = _store_copy(base, tmp_path)
    run = tmp_path / "run"
    assert train_main(_args(store, base["shards"], run, "max_steps=4")) == 0
    with open(run / "losses.jsonl", "a") as handle:
        handle.write('{"step": 4, "tot')  # killed while writing a line
    (run / "views.json").write_text("")  # emptied: run.json still says 2 views per image
    assert cache_main(["extract", "--data", base["shards"], "--out", store, "--views", "4", "--limit", "12",
                       "--images-per-chunk", "4", "--num-workers", "0", "--teacher", TEACHER, "--test-scale",
                       "--resolution", "64", "--codec", "fp16"]) == 0  # the store grows to 4 views meanwhile
    capsys.readouterr()
    assert train_main(_args(store, base["shards"], run)) == 0
    assert "resuming with the 2 views per image this run started with; the store now holds 4" in capsys.readouterr().out
    assert [r["step"] for r in _losses(run)] == list(range(8))
    np.testing.assert_allclose(_totals(run), base["reference"], rtol=1e-6)


def test_a_torn_run_record_falls_back_to_config_yaml_and_damaged_frozen_stats_are_named(base, tmp_path, capsys):
    run = _stopped_run(base, tmp_path, 4)
    (run / "run.json").write_text('{"config": {"stage": 2, "stu')  # torn: config.yaml still says what the run is
    capsys.readouterr()
    assert train_main(_args(base["store"], base["shards"], run, "optim.lr=5.0e-4")) == 2
    assert "optim.lr: 0.001 when the run started, 0.0005 now" in _error_line(capsys)
    stats = run / "stats" / f"{TEACHER}_r64.npz"
    frozen = stats.read_bytes()
    _truncate(stats)
    assert train_main(_args(base["store"], base["shards"], run)) == 2
    line = _error_line(capsys)
    assert f"{stats} (statistics this run started with) is unreadable" in line and "delete it" in line
    stats.write_bytes(frozen)
    assert train_main(_args(base["store"], base["shards"], run)) == 0
    np.testing.assert_allclose(_totals(run), base["reference"], rtol=1e-6)


def test_disk_full_while_checkpointing_keeps_the_last_checkpoint(base, tmp_path, capsys, monkeypatch):
    import errno

    from accelerate import Accelerator

    run, real = tmp_path / "run", Accelerator.save_state

    def full_at_step_4(self, output_dir=None, **kwargs):
        if "step_00000004" not in str(output_dir):
            return real(self, output_dir, **kwargs)
        Path(output_dir).mkdir(parents=True)
        (Path(output_dir) / "model.safetensors").write_bytes(b"\0" * 100)  # part written, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Accelerator, "save_state", full_at_step_4)
    capsys.readouterr()
    assert train_main(_args(base["store"], base["shards"], run)) == 2
    line = _error_line(capsys)
    assert f"could not write checkpoint {run / 'checkpoints' / 'step_00000004'} (No space left on device)" in line
    assert f"{run / 'checkpoints' / 'step_00000002'} (step 2) stays the resume point; free some space" in line
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_00000002"]  # no partial directory
    monkeypatch.setattr(Accelerator, "save_state", real)
    assert train_main(_args(base["store"], base["shards"], run)) == 0
    np.testing.assert_allclose(_totals(run), base["reference"], rtol=1e-6)


def test_a_resume_with_another_head_hidden_is_refused(base, tmp_path, capsys):
    run = _stopped_run(base, tmp_path, 2)
    capsys.readouterr()
    assert train_main(_args(base["store"], base["shards"], run, "head_hidden=32")) == 2
    assert "head_hidden: 64 when the run started, 32 now" in _error_line(capsys)


def _stage3(base, tmp_path: Path, init: Path, *overrides: str) -> list[str]:
    return ["--stage", "3", "--config", str(CONFIGS / "tiny_stage3.yaml"), f"out={tmp_path / 's3'}",
            f"init={init}", f"data.store={base['store']}", f"data.shards={base['shards']}",
            "teachers=[{name: " + TEACHER + ", test_scale: true}]", "teacher_resolutions=[64]", *overrides]


def test_a_damaged_or_mismatched_stage3_init_is_one_error_line(base, tmp_path, capsys):
    init = tmp_path / "init"
    shutil.copytree(base["root"] / "reference", init)
    _truncate(init / "heads.pt")
    assert train_main(_stage3(base, tmp_path, init)) == 2
    line = _error_line(capsys)
    assert f"{init / 'heads.pt'} is damaged (truncated or not written completely" in line
    assert "move it away to start with fresh adapter heads" in line and not (tmp_path / "s3").exists()
    shutil.copy(base["root"] / "reference" / "heads.pt", init / "heads.pt")
    assert train_main(_stage3(base, tmp_path, init, "head_hidden=32")) == 2
    line = _error_line(capsys)
    assert f"{init / 'heads.pt'} holds adapter heads of width [64], this run has head_hidden=32" in line
    assert "set head_hidden=64" in line and not (tmp_path / "s3").exists()
    assert train_main(_stage3(base, tmp_path, init, "max_steps=1")) == 0  # the intact init still works


def test_export_from_a_truncated_student_file_is_one_error_line(base, tmp_path, capsys):
    from eupe.export.cli import main as export_main

    student = tmp_path / "student.safetensors"
    shutil.copy(base["root"] / "reference" / "student.safetensors", student)
    _truncate(student, 0.3)
    assert export_main(["--checkpoint", str(student), "--out", str(tmp_path / "export"), "--resolution", "64"]) == 2
    line = _error_line(capsys)
    assert f"{student} is damaged (truncated or not a safetensors file" in line and "re-run the training" in line


def test_config_comparison_names_differences_and_tolerates_keys_added_since():
    from eupe.distill.rundir import RunError, check_resume, config_changes, flatten

    recorded = {"optim": {"lr": 1e-3}, "teachers": [{"name": "a", "weights": "/x"}], "iterations": 8}
    now = {"optim": {"lr": 1e-3}, "teachers": [{"name": "a", "weights": "/y"}], "iterations": 9, "new_key": 0}
    assert flatten(now)["teachers.0.weights"] == "/y"
    assert config_changes(recorded, now, {"new_key": 0}) == {"iterations": (8, 9), "teachers.0.weights": ("/x", "/y")}
    assert "new_key" in config_changes(recorded, {**now, "new_key": 1}, {"new_key": 0})
    store = {"fingerprint": "f" * 64, "teachers": {"a": "w" * 64}}
    allowed = check_resume(Path("run"), {"config": recorded, "store": store}, now, store, {"new_key": 0})
    assert allowed == {"iterations": (8, 9), "teachers.0.weights": ("/x", "/y")}
    with pytest.raises(RunError, match=r"teachers.0.name: 'a' when the run started, 'b' now"):
        check_resume(Path("run"), {"config": recorded, "store": store},
                     {**now, "teachers": [{"name": "b", "weights": "/x"}]}, store, {"new_key": 0})


def test_an_attempt_that_never_reached_a_checkpoint_restarts_afresh_with_the_new_config(base, tmp_path, capsys):
    run = tmp_path / "run"
    assert train_main(_args(base["store"], base["shards"], run, "max_steps=1", "optim.lr=5.0e-4")) == 0
    shutil.rmtree(run / "checkpoints")  # as if killed before its first checkpoint
    capsys.readouterr()
    assert train_main(_args(base["store"], base["shards"], run)) == 0
    assert f"no checkpoint in {run} yet: starting the run afresh with this config" in capsys.readouterr().out
    assert json.loads((run / "run.json").read_text())["config"]["optim"]["lr"] == 0.001
    np.testing.assert_allclose(_totals(run), base["reference"], rtol=1e-6)
