"""The training loop shared by Stages 1-3, on Accelerate.

Short by design: a ``Trainer`` opens the store once, checks it, fixes the normalization
statistics and builds (model, loss, targets, data plan); then for each step run the micro-batches
under ``accelerator.accumulate``, clip, step, set the learning rate from a pure function of the
step, log, and checkpoint. A run directory holds the resolved config, ``losses.jsonl`` (one line
per step), the trackers' logs (TensorBoard by default, see ``tracking``), ``checkpoints/step_*``
(``save_state`` + step), and at the end ``student.safetensors`` (timm-loadable) and, in Stage 1,
``proxy.safetensors``.
"""

from __future__ import annotations

import json
import math
import pickle
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, set_seed

from eupe import config as config_io
from eupe.config import ConfigError
from eupe.distill import tracking
from eupe.distill.config import TrainConfig
from eupe.distill.data import (Batch, DistillDataset, Plan, TargetDecoder, make_loader, mixture_parts, usable_rows,
                               usable_views)
from eupe.distill.heads import HEADS_FILENAME, DistillModel
from eupe.distill.losses import upgrade_record
from eupe.distill.targets import (Stats, check_complete, check_store, ensure_store_stats, load_run_stats,
                                  online_stats, online_teachers, open_store, save_run_stats, stored_stats)
from eupe.models import Encoder, create_student, save_proxy, teacher_spec
from eupe.models.build import random_backbone
from eupe.models.checkpoint import STUDENT_FILENAME, load_student, resolve_student_file, save_student
from eupe.models.features import Features
from eupe.models.proxy import PROXY_ARCH, PROXY_FILENAME
from eupe.models.teachers import proxy_spec
from eupe.progress import progress
from eupe.store import FeatureStore, StoreMismatchError

LOSS_LOG = "losses.jsonl"
RUN_STATS = "stats"  # run directory: statistics of teacher resolutions the store lacks
VIEWS_RECORD = "views.json"  # run directory: stored views per image the run draws from (kept on resume)


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A plain tensor checkpoint (torch.load with weights_only); anything else is refused."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ConfigError(f"{path} is not a plain tensor checkpoint (it holds other pickled Python objects, "
                          "which are never loaded); pass the heads.pt a training run wrote") from None


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup then cosine decay to lr * min_lr_ratio (a pure function of the step)."""
    o = cfg.optim
    if step < o.warmup_iters:
        return o.lr * (step + 1) / o.warmup_iters
    progress = (step - o.warmup_iters) / max(1, cfg.iterations - o.warmup_iters)
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
    root: Path
    keep: int

    def latest(self) -> tuple[Path, int] | None:
        found = sorted((int(p.name.split("_")[1]), p) for p in self.root.glob("step_*") if (p / "step.json").exists())
        return (found[-1][1], found[-1][0]) if found else None

    def save(self, accelerator: Accelerator, step: int) -> None:
        path = self.root / f"step_{step:08d}"
        accelerator.save_state(str(path))
        if accelerator.is_main_process:
            (path / "step.json").write_text(json.dumps({"step": step}))  # written last: marks it complete
            older = sorted(p for p in self.root.glob("step_*") if p != path)
            for stale in older[: max(len(older) - (self.keep - 1), 0)]:  # keep the newest `keep` in all
                shutil.rmtree(stale, ignore_errors=True)


def read_loss_log(path: Path) -> list[dict]:
    """The records of a run's losses.jsonl, older loss-term names renamed to today's (``upgrade_record``)."""
    return [upgrade_record(json.loads(line)) for line in Path(path).read_text().splitlines() if line.strip()]


class LossLog:
    """One JSON line per step; on resume, lines from the resumed step on are dropped first."""

    def __init__(self, path: Path, start: int, enabled: bool) -> None:
        self.path, self.enabled = path, enabled
        if enabled and path.exists():
            kept = [record for record in read_loss_log(path) if record["step"] < start]
            path.write_text("".join(json.dumps(record) + "\n" for record in kept))

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
        check_complete(cfg, self.store, say)
        self.plan = _plan(cfg, self.store, cpu, say)
        self.init_heads = _init_heads_state(cfg)  # Stage 3: checked before anything is written
        project = ProjectConfiguration(project_dir=str(self.out), logging_dir=str(tracking.logging_dir(self.out)))
        self.accelerator = Accelerator(mixed_precision=precision, gradient_accumulation_steps=self.plan.accumulation,
                                       log_with=list(cfg.trackers) or None, project_config=project, cpu=cpu)
        self.main = self.accelerator.is_main_process
        self.say = say if self.main else (lambda _text: None)
        if precision != cfg.mixed_precision:
            self.say(f"no CUDA device: training in fp32 instead of {cfg.mixed_precision}")
        self.say(reuse_line(cfg, self.plan))
        set_seed(cfg.seed)
        if self.main:
            config_io.save_resolved(cfg, self.out)
            (self.out / VIEWS_RECORD).write_text(json.dumps({"views_per_image": self.plan.views_per_image}))
        self.teachers = cfg.teacher_names()
        self.stats = self._store_stats()
        self.loss = cfg.loss.build(cfg.patch_weights())
        device = self.accelerator.device
        self.decode_on_device = device.type != "cpu" if decode_on_device is None else decode_on_device
        self.decoder = TargetDecoder(self.stats)
        self.counts = {"cache_hits": 0, "online_fallbacks": 0}

    def _store_stats(self) -> dict[str, dict[int, Stats]]:
        """Stored resolutions' statistics: computed once by the main process when absent, the others wait."""
        found = {}
        if self.main:
            found = {name: ensure_store_stats(self.store, name, self.say, read_only=self.cfg.data.read_only)
                     for name in self.teachers}
        self.accelerator.wait_for_everyone()
        return found or {name: stored_stats(self.store, name) for name in self.teachers}

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
        self.online = online_teachers(cfg, self.store, self.stats, self.accelerator.device)
        self._online_stats()
        self.checkpoints = Checkpoints(self.out / "checkpoints", cfg.keep_checkpoints)
        self.start = _resume(self.accelerator, self.checkpoints, self.say)
        self.stop = min(cfg.iterations, cfg.max_steps if cfg.max_steps is not None else cfg.iterations)

    def _online_stats(self) -> None:
        """Each online-only teacher resolution gets statistics of its own, fixed by the main process once."""
        samples = self.plan.first_samples(self.cfg.online_stats_batches * self.cfg.micro_batch)
        for name, teacher in self.online.items():
            for resolution in sorted(set(self.cfg.teacher_resolutions) - set(teacher.stats)):
                path = self.out / RUN_STATS / f"{name}_r{resolution}.npz"
                if self.main and not path.is_file():
                    self.say(f"computing normalization statistics for {name} r{resolution} from the online teacher "
                             f"over {len(samples)} views; saved in {path}")
                    save_run_stats(path, online_stats(teacher, self.dataset, samples, resolution, self.cfg.micro_batch,
                                                      self.accelerator.device))
                self.accelerator.wait_for_everyone()
                teacher.stats[resolution] = load_run_stats(path)

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
            group["lr"] = lr_at(step, cfg)
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
        return {"step": step, **self._across_ranks(sums), "lr": lr_at(step, cfg),
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
        bar = progress(total=self.stop, initial=self.start, desc=f"stage {cfg.stage}", unit="step",
                       disable=not self.main)
        for step in range(self.start, self.stop):
            record = self.step(step, batches)
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
            _save_outputs(cfg, acc.unwrap_model(self.model), self.out, self.store)
        return self.out


def train(cfg: TrainConfig, say: Callable[[str], None] = print) -> Path:
    """Run (or resume) a training run; returns the run directory."""
    trainer = Trainer(cfg, say)
    trainer.setup()
    out = trainer.run()
    trainer.say(f"run directory: {out}")  # main process only
    return out


def reuse_line(cfg: TrainConfig, plan: Plan) -> str:
    """How often the schedule reads each stored view, on average."""
    stored = len(plan.rows) * plan.views_per_image
    reuse = cfg.iterations * cfg.global_batch / stored
    return (f"expected reuse per stored view: {reuse:.1f} reads ({cfg.iterations} iterations x {cfg.global_batch} "
            f"images / ({len(plan.rows)} usable images x {plan.views_per_image} views))")


def _init_heads_state(cfg: TrainConfig) -> dict[str, torch.Tensor] | None:
    """Stage 3 continues the Stage-2 adapter heads when the init run has them (init must hold a student)."""
    if cfg.stage != 3 or not cfg.init:
        return None
    resolve_student_file(cfg.init)  # FileNotFoundError naming the file, before any write
    heads = Path(cfg.init) / HEADS_FILENAME
    return load_tensors(heads) if heads.is_file() else None


def _plan(cfg: TrainConfig, store: FeatureStore, cpu: bool, say: Callable[[str], None]) -> Plan:
    from accelerate import PartialState

    state = PartialState(cpu=cpu)
    rows = usable_rows(store, cfg.teacher_names(), save=not cfg.data.read_only and state.is_main_process)
    if len(rows) == 0:
        raise StoreMismatchError(f"no usable images in {cfg.data.store} (every image failed or is incomplete)")
    mixture = cfg.data.mixture
    parts = mixture_parts(store, [m.shards for m in mixture], rows) if mixture else ()
    weights = tuple(m.weight / sum(p.weight for p in mixture) for m in mixture)
    record = Path(cfg.out) / VIEWS_RECORD
    recorded = json.loads(record.read_text())["views_per_image"] if record.is_file() else None
    views = usable_views(store, cfg.teacher_names(), recorded, say if state.is_main_process else lambda _t: None)
    return Plan(rows, views, cfg.seed, cfg.global_batch, cfg.micro_batch,
                state.num_processes, tuple(cfg.student_resolutions), tuple(cfg.teacher_resolutions), parts, weights)


def _resume(accelerator: Accelerator, checkpoints: Checkpoints, say) -> int:
    latest = checkpoints.latest()
    if latest is None:
        return 0
    path, step = latest
    accelerator.load_state(str(path))
    say(f"resuming from {path} (step {step})")
    return step


def _save_outputs(cfg: TrainConfig, model: DistillModel, out: Path, store: FeatureStore) -> None:
    info = {"stage": cfg.stage, "teachers": {t: store.teacher(t).attrs["weights_sha256"] for t in cfg.teacher_names()},
            "store": str(cfg.data.store), "config": config_io.to_dict(cfg)}
    student = model.student
    if cfg.stage == 1:
        save_proxy(student.backbone, cfg.proxy, out / PROXY_FILENAME)
    else:
        save_student(student, out / STUDENT_FILENAME, test_scale=cfg.student.test_scale, info=info)
    torch.save(model.heads.state_dict(), out / HEADS_FILENAME)
