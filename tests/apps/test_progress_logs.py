"""Progress in logs: the real commands, stdout and stderr to a file, print plain periodic lines.

Every long command (extract, verify, stats, train, eval, export), run through its ``main(argv)``
with stdout and stderr redirected to a file (not a terminal), writes ``desc: done/total unit
(pct%), rate, elapsed, ETA`` lines every ``EUPE_PROGRESS_INTERVAL`` seconds (0 here: at every
update) and never a carriage return; ``--quiet`` and ``TQDM_DISABLE=1`` leave only the results.
The helper itself is tested on a string stream.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import re
import shutil
from pathlib import Path

import pytest

from eupe.progress import INTERVAL_ENV, LineProgress, progress, set_quiet

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "train"
APPS = {"cache": "eupe.cache_tools.cli", "train": "eupe.train.cli", "eval": "eupe.evaluation.cli",
        "export": "eupe.export.cli"}


def _run(app: str, args: list[str], log: Path, **env: str) -> str:
    """Run an application's ``main(argv)`` with stdout and stderr going to the file ``log``; the file's text.

    ``EUPE_PROGRESS_INTERVAL=0`` (a line at every update) and ``TQDM_DISABLE`` unset unless ``env`` says."""
    environment = {INTERVAL_ENV: "0", "TQDM_DISABLE": env.pop("TQDM_DISABLE", ""), **env}
    saved = {k: os.environ.get(k) for k in environment}
    os.environ.update(environment)
    try:
        with open(log, "w") as handle, contextlib.redirect_stdout(handle), contextlib.redirect_stderr(handle):
            rc = importlib.import_module(APPS[app]).main(args)
    finally:
        for key, value in saved.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)
    text = log.read_text()
    assert rc == 0, text
    return text


def _lines(text: str, desc: str, unit: str) -> list[tuple[int, int]]:
    """(done, total) of each progress line of ``desc``; the line's rate, elapsed and ETA are checked."""
    pattern = re.compile(rf"^{re.escape(desc)}: (\d+)/(\d+) {unit} \(\d+%\), [0-9.e+-]+ {unit}/s, "
                         rf"elapsed \d\d:\d\d(, ETA \d\d:\d\d)?(, .*)?$")
    return [(int(m[1]), int(m[2])) for m in map(pattern.match, text.splitlines()) if m]


def _periodic(text: str, desc: str, unit: str, at_least: int = 2) -> list[tuple[int, int]]:
    assert "\r" not in text
    found = _lines(text, desc, unit)
    assert len(found) >= at_least, text
    assert [done for done, _ in found] == sorted(done for done, _ in found)  # counts only grow
    assert found[-1][0] == found[-1][1], found  # the last line says done/total
    return found


@pytest.fixture(scope="module")
def work(tmp_path_factory, photo_shards, labelled_photos) -> Path:
    root = tmp_path_factory.mktemp("progress")
    for photo in labelled_photos[:8]:
        folder = root / "folder" / f"{photo.label:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(photo.path, folder / f"{photo.key}{photo.path.suffix}")
    return root


@pytest.mark.slow
def test_store_commands_write_periodic_lines_and_no_carriage_return(work, photo_shards):
    store = str(work / "store.zarr")
    text = _run("cache", ["extract", "--data", photo_shards, "--out", store, "--views", "2", "--limit", "8",
                          "--images-per-chunk", "4", "--num-workers", "0", "--teacher", "dinov3_hplus",
                          "--test-scale", "--resolution", "64"], work / "extract.log")
    assert _periodic(text, "dinov3_hplus [rank 0/1]", "img")[-1] == (8, 8)
    assert _periodic(text, "indexing shards", "shard")[-1] == (3, 3)
    text = _run("cache", ["verify", store, "--teacher-check", "2", "--test-scale"], work / "verify.log")
    assert _periodic(text, "verify dinov3_hplus", "chunk")[-1] == (2, 2)
    assert _periodic(text, "teacher check dinov3_hplus", "view")[-1] == (2, 2)
    assert "pass rule: pass when the mean cosine, over every summary and patch token of the 2 views" in text
    text = _run("cache", ["stats", store], work / "stats.log")
    assert _periodic(text, "stats dinov3_hplus r64", "view")[-1] == (16, 16)
    quiet = _run("cache", ["verify", store, "--quiet"], work / "verify-quiet.log")
    assert "store OK" in quiet and not _lines(quiet, "verify dinov3_hplus", "chunk") and "\r" not in quiet
    disabled = _run("cache", ["verify", store], work / "verify-disabled.log", TQDM_DISABLE="1")
    assert not _lines(disabled, "verify dinov3_hplus", "chunk") and "store OK" in disabled

    run = work / "run"
    args = ["--stage", "1", "--config", str(CONFIGS / "tiny_stage1.yaml"), f"data.store={store}", f"out={run}",
            "teachers=[{name: dinov3_hplus, test_scale: true}]", "iterations=4", "trackers=[]"]
    text = _run("train", args, work / "train.log")
    steps = _periodic(text, "stage 1", "step", at_least=4)
    assert steps[-1] == (4, 4) and "loss=" in text
    quiet = _run("train", [*args, f"out={work / 'run-quiet'}", "--quiet"], work / "train-quiet.log")
    assert not _lines(quiet, "stage 1", "step") and "run directory:" in quiet and "\r" not in quiet


@pytest.mark.slow
def test_eval_and_export_write_periodic_lines(work, tmp_path):
    from eupe.models.checkpoint import save_student
    from eupe.models.students import create_student

    run = tmp_path / "student"
    run.mkdir()
    save_student(create_student("vit_t", test_scale=True), run / "student.safetensors", test_scale=True)
    text = _run("eval", ["knn", "--model", str(run), "--data", str(work / "folder"), "--k", "1",
                         "--resolution", "64", "--batch-size", "2"], work / "knn.log")
    assert len(_periodic(text, "vit_t train", "img")) >= 2 and "top-1" in text
    text = _run("export", ["--checkpoint", str(run), "--format", "safetensors", "--resolution", "64",
                           "--out", str(tmp_path / "export")], work / "export.log")
    assert _periodic(text, "export safetensors", "artifact", at_least=1) == [(1, 1)]


def test_plain_lines_every_interval_and_a_last_one():
    stream = io.StringIO()
    bar = LineProgress(10, "work", "img", 0, stream)
    bar.interval = 3600.0  # no periodic line within the test: only the last one
    for _ in range(10):
        bar.update(1)
    bar.set_postfix(loss="0.5")
    bar.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("work: 10/10 img (100%), ") and lines[0].endswith("loss=0.5")
    stream = io.StringIO()
    with LineProgress(None, "", "view", 0, stream) as bar:
        bar.interval = 0.0
        bar.reset(total=4)
        bar.update(3)
        bar.update(1)
    assert [line.split(",")[0] for line in stream.getvalue().splitlines()] == ["3/4 view (75%)", "4/4 view (100%)"]
    assert "ETA" in stream.getvalue().splitlines()[0] and "\r" not in stream.getvalue()


def test_quiet_and_tqdm_disable_print_nothing(monkeypatch):
    monkeypatch.setenv(INTERVAL_ENV, "0")
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    stream = io.StringIO()
    with progress(total=2, desc="a", file=stream) as bar:
        bar.update(2)
    assert stream.getvalue().startswith("a: 2/2 it (100%)")
    monkeypatch.setenv("TQDM_DISABLE", "1")
    stream = io.StringIO()
    with progress(total=2, desc="b", file=stream) as bar:
        bar.update(2)
    monkeypatch.delenv("TQDM_DISABLE")
    set_quiet(True)
    try:
        with progress(total=2, desc="c", file=stream) as bar:
            bar.update(2)
    finally:
        set_quiet(False)
    assert stream.getvalue() == ""


@pytest.mark.parametrize("app,command", [("cache", ["extract"]), ("cache", ["verify"]), ("cache", ["stats"]),
                                         ("train", []), ("eval", ["knn"]), ("eval", ["agreement"]), ("export", [])])
def test_every_long_command_offers_quiet(app, command, capsys):
    assert importlib.import_module(APPS[app]).main([*command, "--help"]) == 0
    assert "-q, --quiet" in capsys.readouterr().out
