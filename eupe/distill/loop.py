"""The training loop shared by Stages 1-3, on Accelerate.

Short by design: build (model, targets, data plan), then for each step run the micro-batches
under ``accelerator.accumulate``, clip, step, set the learning rate from a pure function of the
step, log, and checkpoint. A run directory holds the resolved config, ``losses.jsonl`` (one line
per step), TensorBoard logs, ``checkpoints/step_*`` (``save_state`` + step), and at the end
``student.safetensors`` (timm-loadable) and, in Stage 1, ``proxy.safetensors``.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm import tqdm

from eupe import config as config_io
from eupe.distill.config import TrainConfig
from eupe.distill.data import DistillDataset, Plan, make_loader, usable_rows
from eupe.distill.heads import HEADS_FILENAME, DistillModel
from eupe.distill.losses import distill_loss
from eupe.distill.targets import OnlineTeacher, check_store, online_teachers, teacher_stats
from eupe.models import Encoder, create_student, save_proxy, teacher_spec
from eupe.models.build import random_backbone
from eupe.models.checkpoint import STUDENT_FILENAME, load_student, save_student
from eupe.models.proxy import PROXY_ARCH, PROXY_FILENAME
from eupe.models.teachers import proxy_spec
from eupe.store.store import FeatureStore

LOSS_LOG = "losses.jsonl"


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
            raise ValueError("stage 3 starts from a Stage-2 run: set init=RUN_DIR (or its student.safetensors)")
        student = load_student(cfg.init)
        if student.spec.name != cfg.student.name:
            raise ValueError(f"init {cfg.init} holds a {student.spec.name!r} student, config says {cfg.student.name!r}")
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


class LossLog:
    """One JSON line per step; on resume, lines from the resumed step on are dropped first."""

    def __init__(self, path: Path, start: int, enabled: bool) -> None:
        self.path, self.enabled = path, enabled
        if enabled and path.exists():
            kept = [line for line in path.read_text().splitlines() if json.loads(line)["step"] < start]
            path.write_text("".join(line + "\n" for line in kept))

    def write(self, record: dict) -> None:
        if self.enabled:
            with open(self.path, "a") as handle:
                handle.write(json.dumps(record) + "\n")


def _targets(batch: dict, online: dict[str, OnlineTeacher], teachers: list[str], t_res: int, counts: dict) -> dict:
    out = {}
    for name in teachers:
        if f"target/{name}" in batch:
            out[name] = batch[f"target/{name}"]
            counts["cache_hits"] += len(batch["pixels"])
        else:
            out[name] = online[name](batch[f"input/{name}"], t_res)
            counts["online_fallbacks"] += len(batch["pixels"])
    return out


def _to(batch: dict, device: torch.device) -> dict:
    return {k: ({kk: vv.to(device, non_blocking=True) for kk, vv in v.items()} if isinstance(v, dict)
                else v.to(device, non_blocking=True)) for k, v in batch.items()}


def train(cfg: TrainConfig, say=print) -> Path:
    """Run (or resume) a training run; returns the run directory."""
    out = Path(cfg.out)
    precision = cfg.mixed_precision if torch.cuda.is_available() else "no"
    if precision != cfg.mixed_precision:
        say(f"no CUDA device: training in fp32 instead of {cfg.mixed_precision}")
    store = FeatureStore.open(cfg.data.store)
    check_store(cfg, store)
    plan = _plan(cfg, store)
    accelerator = Accelerator(mixed_precision=precision, gradient_accumulation_steps=plan.accumulation,
                              log_with="tensorboard", project_dir=str(out))
    set_seed(cfg.seed)
    if accelerator.is_main_process:
        config_io.save_resolved(cfg, out)
    stats = {t: teacher_stats(cfg.data.store, t, say) for t in cfg.teacher_names()}
    teachers = cfg.teacher_names()
    dims = {t: store.teacher(t).dim for t in teachers}
    model = DistillModel(build_student(cfg), dims, cfg.head_hidden)
    _init_heads(cfg, model, say)
    optimizer = torch.optim.AdamW(param_groups(model, cfg.optim.weight_decay), lr=cfg.optim.lr, betas=tuple(cfg.optim.betas))
    model, optimizer = accelerator.prepare(model, optimizer)
    online = online_teachers(cfg, store, stats, accelerator.device)
    checkpoints = Checkpoints(out / "checkpoints", cfg.keep_checkpoints)
    start = _resume(accelerator, checkpoints, say)
    stop = min(cfg.iterations, cfg.max_steps if cfg.max_steps is not None else cfg.iterations)
    loader = make_loader(DistillDataset(cfg.data.store, teachers, stats), plan, accelerator.process_index,
                         start, stop, cfg.data.num_workers)
    accelerator.init_trackers("tensorboard")
    log = LossLog(out / LOSS_LOG, start, accelerator.is_main_process)
    _run(cfg, accelerator, model, optimizer, iter(loader), plan, online, teachers, checkpoints, log, start, stop)
    accelerator.end_training()
    if accelerator.is_main_process and stop == cfg.iterations:
        _save_outputs(cfg, accelerator.unwrap_model(model), out, store)
    return out


def _init_heads(cfg: TrainConfig, model: DistillModel, say) -> None:
    """Stage 3 continues the Stage-2 adapter heads when the init run has them."""
    if cfg.stage != 3 or not cfg.init or not (Path(cfg.init) / HEADS_FILENAME).is_file():
        return
    model.heads.load_state_dict(torch.load(Path(cfg.init) / HEADS_FILENAME, map_location="cpu", weights_only=True))
    say(f"adapter heads initialised from {Path(cfg.init) / HEADS_FILENAME}")


def _plan(cfg: TrainConfig, store: FeatureStore) -> Plan:
    from accelerate import PartialState

    state = PartialState()
    rows = usable_rows(store, cfg.teacher_names())
    if len(rows) == 0:
        raise ValueError(f"no usable images in {cfg.data.store} (every image failed or is incomplete)")
    return Plan(rows, store.params.views_per_image, cfg.seed, cfg.global_batch, cfg.micro_batch,
                state.num_processes, tuple(cfg.student_scales), tuple(cfg.teacher_scales))


def _resume(accelerator: Accelerator, checkpoints: Checkpoints, say) -> int:
    latest = checkpoints.latest()
    if latest is None:
        return 0
    path, step = latest
    accelerator.load_state(str(path))
    say(f"resuming from {path} (step {step})")
    return step


def _run(cfg, accelerator, model, optimizer, batches, plan, online, teachers, checkpoints, log, start, stop) -> None:
    counts = {"cache_hits": 0, "online_fallbacks": 0}
    bar = tqdm(total=stop, initial=start, desc=f"stage {cfg.stage}", unit="step",
               disable=not accelerator.is_main_process)
    for step in range(start, stop):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        t0, wait, sums = time.perf_counter(), 0.0, {}
        s_res, t_res = plan.scales(step)
        for _ in range(plan.accumulation):
            t_wait = time.perf_counter()
            batch = _to(next(batches), accelerator.device)
            wait += time.perf_counter() - t_wait
            with accelerator.accumulate(model):
                losses = distill_loss(model(batch["pixels"]), _targets(batch, online, teachers, t_res, counts),
                                      cfg.patch_weights())
                accelerator.backward(losses["total"])
                if accelerator.sync_gradients and cfg.optim.grad_clip > 0:
                    accelerator.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
                optimizer.step()
                optimizer.zero_grad()
            for key, value in losses.items():
                sums[key] = sums.get(key, 0.0) + value.item() / plan.accumulation
        elapsed = time.perf_counter() - t0
        record = {"step": step, **sums, "lr": lr_at(step, cfg), "images_per_s": cfg.global_batch / elapsed,
                  "data_wait_fraction": wait / elapsed, "student_res": s_res, "teacher_res": t_res, **counts}
        log.write(record)
        if step % cfg.log_every == 0 or step == stop - 1:
            accelerator.log({k: v for k, v in record.items() if k != "step"}, step=step)
        bar.set_postfix(loss=f"{sums['total']:.4f}", wait=f"{record['data_wait_fraction']:.0%}")
        bar.update(1)
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == stop:
            checkpoints.save(accelerator, step + 1)
    bar.close()


def _save_outputs(cfg: TrainConfig, model: DistillModel, out: Path, store: FeatureStore) -> None:
    info = {"stage": cfg.stage, "teachers": {t: store.teacher(t).attrs["weights_sha256"] for t in cfg.teacher_names()},
            "store": str(cfg.data.store), "config": config_io.to_dict(cfg)}
    student = model.student
    if cfg.stage == 1:
        save_proxy(student.backbone, cfg.proxy, out / PROXY_FILENAME)
    else:
        save_student(student, out / STUDENT_FILENAME, test_scale=cfg.student.test_scale, info=info)
    torch.save(model.heads.state_dict(), out / HEADS_FILENAME)
