"""Experiment trackers of a training run, through Accelerate's own ``log_with`` / ``init_trackers``.

The config's ``trackers`` list picks them (``tensorboard`` by default; ``mlflow``, ``wandb``; an
empty list logs to ``losses.jsonl`` only). A tracker whose package is missing is refused before
anything is written, naming the extra to install (Accelerate itself would silently drop it). The
resolved config is logged as hyperparameters, flattened to ``dotted.keys`` with scalar values (what
TensorBoard's hparams and MLflow's params accept). MLflow writes to ``mlflow_uri``, else
``$MLFLOW_TRACKING_URI``, else a local file store ``RUN/mlruns``; a resumed run continues the same
MLflow run (its id is kept in ``RUN/trackers.json``).
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any, Callable

from eupe.config import ConfigError

# the user's own MLflow server, read before MLflow is imported (mlflow.set_tracking_uri writes this variable)
USER_MLFLOW_URI = os.environ.get("MLFLOW_TRACKING_URI")
TRACKERS_RECORD = "trackers.json"  # run directory: ids of tracker runs, so a resumed run continues them
TENSORBOARD_DIR = "tensorboard"  # run directory: TensorBoard event files, under <project>/

# tracker name -> (importable module, how to install it)
KNOWN: dict[str, tuple[str, str]] = {
    "tensorboard": ("tensorboard", "pip install tensorboard (a dependency of eupe: reinstall eupe)"),
    "mlflow": ("mlflow", "pip install 'eupe[mlflow]'"),
    "wandb": ("wandb", "pip install 'eupe[wandb]'"),
}


def tracker_problems(trackers: list[str]):
    """Each unknown or duplicated tracker name, as a sentence (no package is imported)."""
    for name in trackers:
        if name not in KNOWN:
            yield f"trackers: unknown tracker {name!r}; choose from {sorted(KNOWN)} (or [] for none)"
    if len(set(trackers)) != len(trackers):
        yield f"trackers: {trackers} names a tracker twice"


def check_installed(trackers: list[str]) -> None:
    """ConfigError naming the extra to install for the first tracker whose package is missing."""
    for name in trackers:
        module, install = KNOWN[name]
        if importlib.util.find_spec(module) is None:
            raise ConfigError(f"trackers: {name!r} needs the {module} package, which is not installed: "
                              f"{install} (or remove {name} from trackers)")


def flatten(values: Any, prefix: str = "") -> dict[str, int | float | str | bool]:
    """Nested dicts/lists -> {"a.b.0": scalar}; None becomes "null", an empty list or dict "[]" / "{}"."""
    if isinstance(values, dict) or isinstance(values, list):
        items = values.items() if isinstance(values, dict) else enumerate(values)
        if not values:
            return {prefix: "{}" if isinstance(values, dict) else "[]"} if prefix else {}
        out: dict[str, int | float | str | bool] = {}
        for key, value in items:
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if values is None:
        return {prefix: "null"}
    return {prefix: values if isinstance(values, (int, float, str, bool)) else str(values)}


def logging_dir(out: Path) -> Path:
    """Where Accelerate's directory-based trackers (TensorBoard) write: RUN/tensorboard/<project>/."""
    return out / TENSORBOARD_DIR


def start(accelerator, trackers: list[str], project: str, mlflow_uri: str | None, out: Path,
          hyperparameters: dict, say: Callable[[str], None]) -> None:
    """``init_trackers`` on the main process, logging ``hyperparameters``; records the trackers' run ids."""
    if not trackers or not accelerator.is_main_process:
        return
    record_path = out / TRACKERS_RECORD
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    init_kwargs: dict[str, dict] = {}
    if "mlflow" in trackers:
        _set_mlflow_uri(mlflow_uri, out)
        init_kwargs["mlflow"] = {"run_name": out.name}
        previous = record.get("mlflow", {})
        if previous.get("run_id") and previous.get("tracking_uri") == _mlflow().get_tracking_uri():
            init_kwargs["mlflow"]["run_id"] = record["mlflow"]["run_id"]
    resumed = "run_id" in init_kwargs.get("mlflow", {})
    accelerator.init_trackers(project, config=None if resumed else hyperparameters, init_kwargs=init_kwargs)
    if resumed:  # MLflow refuses to change a logged param: keep its first values, log the new keys
        _log_resumed(accelerator, hyperparameters, say)
    if "mlflow" in trackers:
        run = accelerator.get_tracker("mlflow", unwrap=True)
        record["mlflow"] = {"run_id": run.info.run_id, "experiment_id": run.info.experiment_id,
                            "tracking_uri": _mlflow().get_tracking_uri()}
        _write_json(record_path, record)


def _log_resumed(accelerator, hyperparameters: dict, say: Callable[[str], None]) -> None:
    for tracker in accelerator.trackers:
        if tracker.name != "mlflow":
            tracker.store_init_configuration(hyperparameters)
            continue
        logged = _mlflow().get_run(tracker.tracker.info.run_id).data.params
        changed = sorted(k for k, v in hyperparameters.items() if k in logged and logged[k] != str(v))
        new = {k: v for k, v in hyperparameters.items() if k not in logged}
        if new:
            tracker.store_init_configuration(new)
        if changed:
            say(f"mlflow: the resumed run keeps its first values of {', '.join(changed)} (MLflow params are "
                "write-once); the run directory's config.yaml holds the current ones")


def _set_mlflow_uri(uri: str | None, out: Path) -> None:
    uri = uri or USER_MLFLOW_URI or (out.resolve() / "mlruns").as_uri()
    if "://" not in uri or uri.startswith("file:"):
        # a local file store needs no server or database; MLflow >= 3.7 asks for this explicit opt-in
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    _mlflow().set_tracking_uri(uri)


def _mlflow():
    import mlflow

    return mlflow


def _write_json(path: Path, value: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(value, indent=1))
    tmp.replace(path)
