"""eupe-train's trackers: the config picks them, Accelerate runs them, values are read back.

A tiny real Stage-1 run logs to TensorBoard and to MLflow's local file store; the tests read the
event files and the MLflow store back (metrics per step equal losses.jsonl, the flattened config
is there as hyperparameters) and check that a resumed run continues the same MLflow run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eupe.cache_tools.cli import main as cache_main
from eupe.distill.tracking import TRACKERS_RECORD, flatten
from eupe.train.cli import main as train_main

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "train"
ONE_TEACHER = "teachers=[{name: dinov3_hplus, test_scale: true}]"


@pytest.fixture(scope="module")
def store(tmp_path_factory, photo_shards) -> str:
    out = str(tmp_path_factory.mktemp("trackers") / "teachers.zarr")
    assert cache_main(["extract", "--data", photo_shards, "--out", out, "--views", "2", "--limit", "8",
                       "--images-per-chunk", "4", "--num-workers", "0", "--teacher", "dinov3_hplus",
                       "--test-scale", "--resolution", "64"]) == 0
    return out


def _train(store: str, run: Path, *overrides: str) -> int:
    return train_main(["--stage", "1", "--config", str(CONFIGS / "tiny_stage1.yaml"), f"data.store={store}",
                       f"out={run}", ONE_TEACHER, "iterations=6", "log_every=2", "checkpoint_every=3", *overrides])


def _losses(run: Path) -> dict[int, dict]:
    return {r["step"]: r for r in map(json.loads, (run / "losses.jsonl").read_text().splitlines())}


def _mlflow_run(run: Path):
    from mlflow.tracking import MlflowClient

    record = json.loads((run / TRACKERS_RECORD).read_text())["mlflow"]
    client = MlflowClient(record["tracking_uri"])
    runs = client.search_runs([record["experiment_id"]])
    return client, record["run_id"], runs


def _tensorboard_scalars(run: Path, tag: str) -> dict[int, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard" / "eupe"))
    events.Reload()
    return {e.step: e.value for e in events.Scalars(tag)}


def _tensorboard_hparams(run: Path) -> dict:
    """The hparams TensorBoard's HPARAMS tab shows: plugin data of the run's event files, read raw."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams import plugin_data_pb2

    found = {}
    for path in (run / "tensorboard").rglob("events.out.tfevents.*"):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name != "hparams":
                    continue
                data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
                for key, v in data.session_start_info.hparams.items():
                    found[key] = getattr(v, v.WhichOneof("kind"))
    return found


@pytest.mark.slow
def test_tensorboard_and_mlflow_hold_the_logged_losses_and_the_config(store, tmp_path):
    run = tmp_path / "run"
    assert _train(store, run, "trackers=[tensorboard, mlflow]") == 0
    losses = _losses(run)
    logged_steps = [0, 2, 4, 5]  # every log_every=2 steps and the last one
    client, run_id, runs = _mlflow_run(run)
    assert [r.info.run_id for r in runs] == [run_id] and runs[0].info.run_name == "run"
    params = client.get_run(run_id).data.params
    assert params["optim.lr"] == "0.001" and params["teachers.0.name"] == "dinov3_hplus"
    assert params["stage"] == "1" and params["max_steps"] == "null" and params["trackers.1"] == "mlflow"
    for key in ("total", "dinov3_hplus/summary_cos_loss", "lr"):
        history = {m.step: m.value for m in client.get_metric_history(run_id, key)}
        assert sorted(history) == logged_steps, key
        assert history == pytest.approx({s: losses[s][key] for s in logged_steps}, rel=1e-6), key
    board = _tensorboard_scalars(run, "total")
    assert board == pytest.approx({s: losses[s]["total"] for s in logged_steps}, rel=1e-6)
    hparams = _tensorboard_hparams(run)
    assert hparams["optim.lr"] == pytest.approx(1e-3) and hparams["teachers.0.name"] == "dinov3_hplus"
    assert hparams["iterations"] == 6


@pytest.mark.slow
def test_a_resumed_run_continues_the_same_mlflow_run(store, tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(store, run, "trackers=[mlflow]", "max_steps=3") == 0
    first = json.loads((run / TRACKERS_RECORD).read_text())["mlflow"]["run_id"]
    assert _train(store, run, "trackers=[mlflow]") == 0
    client, run_id, runs = _mlflow_run(run)
    assert run_id == first and len(runs) == 1
    history = {m.step: m.value for m in client.get_metric_history(run_id, "total")}
    assert history == pytest.approx({s: _losses(run)[s]["total"] for s in (0, 2, 4, 5)}, rel=1e-6)
    assert client.get_run(run_id).data.params["max_steps"] == "3"  # MLflow params are write-once
    assert "keeps its first values of max_steps" in capsys.readouterr().out
    assert not (run / "tensorboard").exists()  # only the trackers the config names


def test_a_missing_tracker_package_names_the_extra_and_writes_nothing(store, tmp_path, capsys):
    pytest.importorskip("mlflow")
    if __import__("importlib").util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed here")
    run = tmp_path / "run"
    assert _train(store, run, "trackers=[tensorboard, wandb]") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["Error: trackers: 'wandb' needs the wandb package, which is not installed: "
                   "pip install 'eupe[wandb]' (or remove wandb from trackers)"]
    assert not run.exists()


def test_an_unknown_tracker_is_refused_naming_the_choices(store, tmp_path, capsys):
    assert _train(store, tmp_path / "run", "trackers=[tensorbord]") == 2
    assert ("Error: trackers: unknown tracker 'tensorbord'; choose from ['mlflow', 'tensorboard', 'wandb'] "
            "(or [] for none)") in capsys.readouterr().err


def test_flatten_gives_dotted_scalar_keys():
    nested = {"a": {"b": 1, "c": [2.5, {"d": None}]}, "e": [], "f": {}, "g": True, "h": "x"}
    assert flatten(nested) == {"a.b": 1, "a.c.0": 2.5, "a.c.1.d": "null", "e": "[]", "f": "{}", "g": True, "h": "x"}
