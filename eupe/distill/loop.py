"""The training loop shared by Stages 1-3, on Accelerate.

Short by design: a ``Trainer`` opens the store once, checks it, fixes the normalization
statistics and builds (model, loss, targets, data plan); then for each step run the micro-batches
under ``accelerator.accumulate``, clip, step, set the learning rate from a pure function of the
step, log, and checkpoint. A run directory holds the resolved config, the run's record ``run.json``
and frozen statistics ``stats/`` (eupe.distill.rundir: a re-run with another config or store is
refused), ``losses.jsonl`` (one line per step), the trackers' logs (TensorBoard by default, see ``tracking``), ``checkpoints/step_*``
(``save_state`` + a ``step.json`` naming the size and sha256 of every file; resume skips damaged
ones), and at the end ``student.safetensors`` (timm-loadable) and, in Stage 1, ``proxy.safetensors``.
A NaN or infinite loss term stops the run before the step is logged or checkpointed.
"""

from __future__ import annotations

import io
import json
import math
import os
import pickle
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, set_seed

from eupe import config as config_io
from eupe.config import ConfigError
from eupe.distill import tracking
from eupe.distill.config import OptimConfig, TrainConfig
from eupe.distill.data import Batch, DistillDataset, Plan, make_loader, mixture_parts, usable_rows, usable_views
from eupe.distill.heads import HEADS_FILENAME, DistillModel
from eupe.distill.rundir import (RUN_RECORD, STEP_RECORD, NonFiniteLossError, RunError, check_resume,
                                 checkpoint_problem, enospc_hint, file_manifest, frozen_stats_path, previous_record,
                                 read_json, record_resume, store_identity, views_record, write_atomic, write_json)
from eupe.distill.losses import upgrade_record
from eupe.distill.stats import Stats, freeze_store_stats, frozen_run_stats, read_frozen, save_run_stats
from eupe.distill.targets import (TargetDecoder, check_complete, check_store, online_stats, online_teachers,
                                  open_store)
from eupe.fileio import apply_umask
from eupe.models.build import random_backbone
from eupe.models.checkpoint import STUDENT_FILENAME, load_student, resolve_student_file, save_student
from eupe.models.features import Encoder, Features
from eupe.models.proxy import PROXY_ARCH, PROXY_FILENAME, save_proxy
from eupe.models.students import create_student
from eupe.models.teachers import proxy_spec, teacher_spec
from eupe.progress import progress
from eupe.store.layout import StoreMismatchError
from eupe.store.store import FeatureStore

LOSS_LOG = "losses.jsonl"
VIEWS_RECORD = "views.json"  # run directory: stored views per image the run draws from (kept on resume)


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A plain tensor checkpoint (torch.load with weights_only); anything else is refused."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ConfigError(f"{path} is not a plain tensor checkpoint (it holds other pickled Python objects, "
                          "which are never loaded); pass the heads.pt a training run wrote") from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        why = " ".join(str(err).split())[:160]
        raise ConfigError(f"{path} is damaged (truncated or not written completely: {why}); "
                          "re-run the training command of its run directory to write it again, or move it away to "
                          "start with fresh adapter heads") from None


def lr_at(step: int, optim: OptimConfig, iterations: int) -> float:
    """Linear warmup then cosine decay to lr * min_lr_ratio over ``iterations`` (a pure function of the step)."""
    o = optim
    if step < o.warmup_iters:
        return o.lr * (step + 1) / o.warmup_iters
    progress = (step - o.warmup_iters) / max(1, iterations - o.warmup_iters)
    return o.lr * (o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def build_student(cfg: TrainConfig) -> Encoder:
    """Stage 1: the proxy ViT; Stage 2: a registered student; Stage 3: the Stage-2 student."""
    if cfg.stage == 1:
        backbone, _ = random_backbone(PROXY_ARCH, cfg.proxy.timm_kwargs(), seed=None)
        return Encoder(proxy_spec(teacher_spec("proxy"), cfg.proxy), backbone, "training")
    if cfg.stage == 3:
        if not cfg.init:
            raise ConfigError("stage 3 starts from a Stage-2 run: set init=RUN_DIR (or its student.safetensors)")
        student = load_student(cfg.init)
        if student.spec.name != cfg.student.name:
            raise ConfigError(f"init {cfg.init} holds a {student.spec.name!r} student, config says {cfg.student.name!r}")
        return student
    return create_student(cfg.student.name, cfg.student.weights, cfg.student.test_scale)


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases, norms, tokens and other 1-D parameters."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@dataclass
class Checkpoints:
    """``checkpoints/step_*``: each saved under a temporary name and renamed once complete, its files
    recorded in its ``step.json``; resume takes the newest intact one, saying which it skipped and why."""

    root: Path
    keep: int

    def complete(self) -> list[tuple[Path, int]]:
        """(path, step) of every renamed checkpoint with a step record, newest first (files not checked)."""
        found = []
        for path in self.root.glob("step_*"):
            record = read_json(path / STEP_RECORD)
            if record is not None and isinstance(record.get("step"), int):
                found.append((path, record["step"]))
        return sorted(found, key=lambda item: item[1], reverse=True)

    def latest(self) -> tuple[Path, int] | None:
        found = self.complete()
        return found[0] if found else None

    def save(self, accelerator: Accelerator, step: int) -> None:
        """Write the checkpoint of ``step``; a failed write (disk full...) leaves the older ones as they were."""
        path, partial = self.root / f"step_{step:08d}", self.root / f".partial_step_{step:08d}"
        try:
            if accelerator.is_main_process:
                shutil.rmtree(partial, ignore_errors=True)
            accelerator.wait_for_everyone()
            accelerator.save_state(str(partial))
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                write_json(partial / STEP_RECORD, {"step": step, "files": file_manifest(partial)})
                shutil.rmtree(path, ignore_errors=True)
                os.replace(partial, path)
                apply_umask(path)  # Accelerate writes its safetensors 0600
        except OSError as err:
            shutil.rmtree(partial, ignore_errors=True)
            latest = self.latest()
            kept = f"{latest[0]} (step {latest[1]}) stays the resume point" if latest else "no checkpoint is kept"
            raise RunError(f"could not write checkpoint {path} ({err.strerror or err}); nothing of it was kept and "
                           f"{kept}; {enospc_hint(err)}re-run the same command") from None
        if accelerator.is_main_process:
            older = sorted(p for p in self.root.glob("step_*") if p != path)
            for stale in older[: max(len(older) - (self.keep - 1), 0)]:  # keep the newest `keep` in all
                shutil.rmtree(stale, ignore_errors=True)


def read_loss_log(path: Path) -> list[dict]:
    """The whole records of a run's losses.jsonl (a torn line, from a run killed while writing it, is
    dropped), older loss-term names renamed to today's (``upgrade_record``)."""
    records = []
    for line in Path(path).read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(upgrade_record(record))
    return records


class LossLog:
    """One JSON line per step; on resume, lines from the resumed step on are dropped first (and a torn
    line, from a run killed while writing it), the rest rewritten atomically."""

    def __init__(self, path: Path, start: int, enabled: bool) -> None:
        self.path, self.enabled = path, enabled
        if enabled and path.exists():
            kept = [record for record in read_loss_log(path) if record["step"] < start]
            write_atomic(path, "".join(json.dumps(record) + "\n" for record in kept))

    def write(self, record: dict) -> None:
        if self.enabled:
            with open(self.path, "a") as handle:
                handle.write(json.dumps(record) + "\n")


class Trainer:
    """One run: the store (opened once), the model, optimizer, loss, data plan and online teachers."""

    def __init__(self, cfg: TrainConfig, say: Callable[[str], None] = print,
                 decode_on_device: bool | None = None) -> None:
        """``decode_on_device``: cached targets decoded by the step on its device (default: when it is
        not the CPU; on CPU the DataLoader workers decode them, in parallel with the step)."""
        self.cfg, self.out = cfg, Path(cfg.out)
        tracking.check_installed(cfg.trackers)  # a missing tracker package: refused before any work or write
        cpu = not torch.cuda.is_available()  # also makes torchrun on CPU one gloo process group, not N runs
        precision = "no" if cpu else cfg.mixed_precision
        self.store = open_store(cfg)  # a missing store names data.store
        check_store(cfg, self.store)
        check_complete(cfg.data, self.store, cfg.teacher_names(), say)
        self.plan = _plan(cfg, self.store, cpu, say)
        self.init_heads = _init_heads_state(cfg)  # Stage 3: checked before anything is written
        project = ProjectConfiguration(project_dir=str(self.out), logging_dir=str(tracking.logging_dir(self.out)))
        self.accelerator = Accelerator(mixed_precision=precision, gradient_accumulation_steps=self.plan.accumulation,
                                       log_with=list(cfg.trackers) or None, project_config=project, cpu=cpu)
        self.main = self.accelerator.is_main_process
        self.say = say if self.main else (lambda _text: None)
        if precision != cfg.mixed_precision:
            self.say(f"no CUDA device: training in fp32 instead of {cfg.mixed_precision}")
        self.say(reuse_line(self.plan, cfg.iterations))
        set_seed(cfg.seed)
        self.record, self.changes = self._run_record()  # refuses a mismatched re-run before anything is written
        self.teachers = cfg.teacher_names()
        self.stats = self._store_stats()
        self.loss = cfg.loss.build(cfg.patch_weights())
        device = self.accelerator.device
        self.decode_on_device = device.type != "cpu" if decode_on_device is None else decode_on_device
        self.decoder = TargetDecoder(self.stats)
        self.counts = {"cache_hits": 0, "online_fallbacks": 0}

    def _run_record(self) -> tuple[dict, dict]:
        """The run's record (written when the run starts) and the allowed changes of this invocation."""
        config, identity = config_io.to_dict(self.cfg), store_identity(self.store, self.cfg.teacher_names())
        has_checkpoint = Checkpoints(self.out / "checkpoints", self.cfg.keep_checkpoints).latest() is not None
        record = previous_record(self.out, has_checkpoint) if has_checkpoint else None
        if record is not None:
            return record, check_resume(self.out, record, config, identity, config_io.to_dict(TrainConfig()))
        record = {"config": config, "store": identity, "views_per_image": self.plan.views_per_image,
                  "started": _now()}
        if self.main:
            if (self.out / RUN_RECORD).exists():  # an attempt that never reached a checkpoint: nothing to resume
                self.say(f"no checkpoint in {self.out} yet: starting the run afresh with this config")
                shutil.rmtree(self.out / "stats", ignore_errors=True)  # the earlier attempt's frozen statistics
            config_io.save_resolved(self.cfg, self.out)
            write_json(self.out / VIEWS_RECORD, {"views_per_image": self.plan.views_per_image})
            write_json(self.out / RUN_RECORD, record)
        return record, {}

    def _record_resume(self) -> None:
        """Allowed changes (e.g. a longer schedule) are recorded in run.json and config.yaml says what runs now."""
        if self.main and self.changes:
            self.record = record_resume(self.out / RUN_RECORD, self.record, self.start, self.changes, _now())
            config_io.save_resolved(self.cfg, self.out)
            self.say("resuming with changed " + ", ".join(f"{k} ({old!r} -> {new!r})" for k, (old, new) in
                                                         self.changes.items()) + f"; recorded in {RUN_RECORD}")

    def _store_stats(self) -> dict[str, dict[int, Stats]]:
        """Every stored resolution's statistics, frozen in the run directory by the main process when the
        run starts (computed in the store first when absent there) and read back from there on resume."""
        if self.main:
            for name in self.teachers:
                freeze_store_stats(self.store, self.out, name, self.say, read_only=self.cfg.data.read_only)
        self.accelerator.wait_for_everyone()
        return frozen_run_stats(self.store, self.out, self.teachers)

    def setup(self) -> None:
        """Model, optimizer, online teachers (with their resolutions' statistics), checkpoint state."""
        cfg = self.cfg
        dims = {t: (self.store.teacher(t).summary_dim, self.store.teacher(t).dim) for t in self.teachers}
        model = DistillModel(build_student(cfg), dims, cfg.head_hidden)
        if self.init_heads is not None:
            model.heads.load_state_dict(self.init_heads)
            self.say(f"adapter heads initialised from {Path(cfg.init) / HEADS_FILENAME}")
        optimizer = torch.optim.AdamW(param_groups(model, cfg.optim.weight_decay), lr=cfg.optim.lr,
                                      betas=tuple(cfg.optim.betas))
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        self.dataset = DistillDataset(cfg.data.store, self.teachers, self.stats, store=self.store,
                                      decode=not self.decode_on_device)
        self.online = online_teachers(cfg.teachers, cfg.teacher_resolutions, self.store, self.stats,
                                      self.accelerator.device)
        self._online_stats()
        self.checkpoints = Checkpoints(self.out / "checkpoints", cfg.keep_checkpoints)
        self.start = _resume(self.accelerator, self.checkpoints, self.say)
        self._record_resume()
        self.stop = min(cfg.iterations, cfg.max_steps if cfg.max_steps is not None else cfg.iterations)

    def _online_stats(self) -> None:
        """Each online-only teacher resolution gets statistics of its own, fixed by the main process once."""
        samples = self.plan.first_samples(self.cfg.online_stats_batches * self.cfg.micro_batch)
        for name, teacher in self.online.items():
            for resolution in sorted(set(self.cfg.teacher_resolutions) - set(teacher.stats)):
                path = frozen_stats_path(self.out, name, resolution)
                if self.main and not path.is_file():
                    self.say(f"computing normalization statistics for {name} r{resolution} from the online teacher "
                             f"over {len(samples)} views; saved in {path}")
                    save_run_stats(path, online_stats(teacher, self.dataset, samples, resolution, self.cfg.micro_batch,
                                                      self.accelerator.device))
                self.accelerator.wait_for_everyone()
                teacher.stats[resolution] = read_frozen(path)

    def targets(self, batch: Batch, t_resolution: int) -> dict[str, Features]:
        """Cached targets where the batch has them, else the online teacher's at ``t_resolution``."""
        out = {}
        for name in self.teachers:
            if name in batch.targets:  # decoded in the loader
                out[name] = batch.targets[name]
                self.counts["cache_hits"] += len(batch)
            elif name in batch.stored:  # decoded + normalized here, on the step's device
                out[name] = self.decoder(name, batch.stored[name])
                self.counts["cache_hits"] += len(batch)
            else:
                out[name] = self.online[name](batch.inputs[name], t_resolution)
                self.counts["online_fallbacks"] += len(batch)
        return out

    def step(self, step: int, batches: Iterator[Batch]) -> dict:
        """One optimizer step over the plan's micro-batches; returns the step's log record."""
        acc, cfg = self.accelerator, self.cfg
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(step, cfg.optim, cfg.iterations)
        t0, wait, sums = time.perf_counter(), 0.0, {}
        s_resolution, t_resolution = self.plan.resolutions(step)
        for _ in range(self.plan.accumulation):
            t_wait = time.perf_counter()
            batch = next(batches).to(acc.device)
            wait += time.perf_counter() - t_wait
            with acc.accumulate(self.model):
                losses = self.loss(self.model(batch.pixels), self.targets(batch, t_resolution))
                acc.backward(losses["total"])
                if acc.sync_gradients and cfg.optim.grad_clip > 0:
                    acc.clip_grad_norm_(self.model.parameters(), cfg.optim.grad_clip)
                self.optimizer.step()
                self.optimizer.zero_grad()
            for key, value in losses.items():
                sums[key] = sums.get(key, 0.0) + value.detach() / self.plan.accumulation
        elapsed = time.perf_counter() - t0
        return {"step": step, **self._across_ranks(sums), "lr": lr_at(step, cfg.optim, cfg.iterations),
                "images_per_s": cfg.global_batch / elapsed, "data_wait_fraction": wait / elapsed,
                "student_resolution": s_resolution, "teacher_resolution": t_resolution}

    def _across_ranks(self, sums: dict[str, torch.Tensor]) -> dict[str, float]:
        """Loss terms averaged over the ranks (the global batch's), fallback counts summed over them."""
        terms = self.accelerator.reduce(torch.stack(list(sums.values())).float(), reduction="mean")  # [T]
        counts = torch.tensor(list(self.counts.values()), device=self.accelerator.device)
        counts = self.accelerator.reduce(counts, reduction="sum")  # [2]
        return {**dict(zip(sums, terms.tolist())), **dict(zip(self.counts, (int(c) for c in counts.tolist())))}

    def run(self) -> Path:
        """Train from the resumed step to the stop step; write outputs when the schedule is complete."""
        cfg, acc = self.cfg, self.accelerator
        batches = iter(make_loader(self.dataset, self.plan, acc.process_index, self.start, self.stop,
                                   cfg.data.num_workers, pin_memory=acc.device.type == "cuda"))
        tracking.start(acc, cfg.trackers, cfg.tracking_project, cfg.mlflow_uri, self.out,
                       tracking.flatten(config_io.to_dict(cfg)), self.say)
        log = LossLog(self.out / LOSS_LOG, self.start, self.main)
        self.bar = bar = progress(total=self.stop, initial=self.start, desc=f"stage {cfg.stage}", unit="step",
                                  disable=not self.main)
        for step in range(self.start, self.stop):
            record = self.step(step, batches)
            problem = nonfinite_message(record, step, self.checkpoints, cfg.data.store)
            if problem:  # before the step is logged or checkpointed: the last checkpoint stays the resume point
                raise NonFiniteLossError(problem)
            log.write(record)
            if step % cfg.log_every == 0 or step == self.stop - 1:
                acc.log({k: v for k, v in record.items() if k != "step"}, step=step)
            bar.set_postfix(loss=f"{record['total']:.4f}", wait=f"{record['data_wait_fraction']:.0%}")
            bar.update(1)
            if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == self.stop:
                self.checkpoints.save(acc, step + 1)
        bar.close()
        acc.end_training()
        if self.main and self.stop == cfg.iterations:
            _save_outputs(cfg, acc.unwrap_model(self.model), self.out, self.store, self.record.get("resumes", []))
        return self.out


def train(cfg: TrainConfig, say: Callable[[str], None] = print) -> Path:
    """Run (or resume) a training run; returns the run directory."""
    trainer = Trainer(cfg, say)
    trainer.setup()
    try:
        out = trainer.run()
    finally:  # an error line must not land on the progress bar's line
        if getattr(trainer, "bar", None) is not None:
            trainer.bar.close()
    trainer.say(f"run directory: {out}")  # main process only
    return out


def nonfinite_message(record: dict, step: int, checkpoints: Checkpoints, store: str) -> str | None:
    """What to say when a loss term of the step's record is NaN or infinite (None when all are finite).
    The terms are reduced across the ranks, so every rank agrees."""
    terms = {k: v for k, v in record.items() if "/" in k or k == "total"}
    bad = [k for k in terms if not math.isfinite(terms[k])]
    if not bad:
        return None
    named = [k for k in bad if k.split("/")[-1].startswith(("summary", "patch"))] or bad  # the leaf terms first
    latest = checkpoints.latest()
    resume = f"{latest[0]} (step {latest[1]})" if latest else "none: a re-run starts from step 0"
    what = ", ".join(f"{k} = {terms[k]} (teacher {k.split('/')[0]!r}, {k.split('/')[1].split('_')[0]} tokens)"
                     if k.split("/")[-1].startswith(("summary", "patch")) else f"{k} = {terms[k]}" for k in named)
    return (f"step {step}: non-finite loss {what}; training stopped, nothing of this step was saved; resume point: "
            f"{resume}. NaN targets? check with `eupe-cache verify {store} --finite`; a diverging run: lower optim.lr "
            "or use mixed_precision=no; then re-run the same command")


def reuse_line(plan: Plan, iterations: int) -> str:
    """How often a schedule of ``iterations`` steps of the plan reads each stored view, on average."""
    stored = len(plan.rows) * plan.views_per_image
    reuse = iterations * plan.global_batch / stored
    return (f"expected reuse per stored view: {reuse:.1f} reads ({iterations} iterations x {plan.global_batch} "
            f"images / ({len(plan.rows)} usable images x {plan.views_per_image} views))")


def _init_heads_state(cfg: TrainConfig) -> dict[str, torch.Tensor] | None:
    """Stage 3 continues the Stage-2 adapter heads when the init run has them (init must hold a student)."""
    if cfg.stage != 3 or not cfg.init:
        return None
    resolve_student_file(cfg.init)  # FileNotFoundError naming the file, before any write
    heads = Path(cfg.init) / HEADS_FILENAME
    if not heads.is_file():
        return None
    state = load_tensors(heads)
    _check_init_heads(heads, state, cfg.teacher_names(), cfg.head_hidden)
    return state


def _check_init_heads(path: Path, state: dict[str, torch.Tensor], teachers: Sequence[str], head_hidden: int) -> None:
    """The init run's heads must be this run's: the same teachers and head_hidden (ConfigError naming both)."""
    found = sorted({key.split(".")[0] for key in state})
    if found != sorted(teachers):
        raise ConfigError(f"{path} holds adapter heads for teachers {found}, this run trains against "
                          f"{sorted(teachers)}; use the same teachers as the init run")
    hidden = {int(v.shape[0]) for k, v in state.items() if k.endswith(".0.weight") and v.ndim == 2}  # Linear(D, hidden)
    if hidden != {head_hidden}:
        raise ConfigError(f"{path} holds adapter heads of width {sorted(hidden)}, this run has head_hidden="
                          f"{head_hidden}; set head_hidden={min(hidden) if hidden else '?'} (the init run's)")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _plan(cfg: TrainConfig, store: FeatureStore, cpu: bool, say: Callable[[str], None]) -> Plan:
    from accelerate import PartialState

    state = PartialState(cpu=cpu)
    rows = usable_rows(store, cfg.teacher_names(), save=not cfg.data.read_only and state.is_main_process)
    if len(rows) == 0:
        raise StoreMismatchError(f"no usable images in {cfg.data.store} (every image failed or is incomplete)")
    mixture = cfg.data.mixture
    parts = mixture_parts(store, [m.shards for m in mixture], rows) if mixture else ()
    weights = tuple(m.weight / sum(p.weight for p in mixture) for m in mixture)
    recorded = views_record(Path(cfg.out), VIEWS_RECORD)
    views = usable_views(store, cfg.teacher_names(), recorded, say if state.is_main_process else lambda _t: None)
    return Plan(rows=rows, views_per_image=views, seed=cfg.seed, global_batch=cfg.global_batch,
                micro_batch=cfg.micro_batch, world_size=state.num_processes,
                student_resolutions=tuple(cfg.student_resolutions), teacher_resolutions=tuple(cfg.teacher_resolutions),
                parts=parts, weights=weights)


def _resume(accelerator: Accelerator, checkpoints: Checkpoints, say) -> int:
    """Load the newest intact checkpoint (0 when there is none); damaged ones are skipped, saying why."""
    found = checkpoints.complete()
    skipped = []
    for path, step in found:
        problem = checkpoint_problem(path)
        if problem is None:
            try:
                accelerator.load_state(str(path))
            except Exception as err:  # noqa: BLE001 - a checkpoint written before files were recorded
                problem = f"it does not load ({type(err).__name__}: {' '.join(str(err).split())[:200]})"
        if problem is None:
            say(f"resuming from {path} (step {step})")
            return step
        skipped.append(f"{path.name}: {problem}")
        say(f"warning: skipping checkpoint {path}: {problem}")
    if skipped:
        raise RunError(f"no intact checkpoint in {checkpoints.root} ({'; '.join(skipped)}); move the damaged "
                       "ones away to restart this run from step 0, or choose a new out=")
    return 0


def _save_outputs(cfg: TrainConfig, model: DistillModel, out: Path, store: FeatureStore, resumes: list) -> None:
    info = {"stage": cfg.stage, "teachers": {t: store.teacher(t).attrs["weights_sha256"] for t in cfg.teacher_names()},
            "store": str(cfg.data.store), "config": config_io.to_dict(cfg), "resumed_with_changes": resumes}
    student = model.student
    if cfg.stage == 1:
        save_proxy(student.backbone, cfg.proxy, out / PROXY_FILENAME)
    else:
        save_student(student, out / STUDENT_FILENAME, test_scale=cfg.student.test_scale, info=info)
    buffer = io.BytesIO()
    torch.save(model.heads.state_dict(), buffer)
    write_atomic(out / HEADS_FILENAME, buffer.getvalue())
