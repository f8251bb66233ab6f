"""Typed configuration of an ``eupe-train`` run (YAML values live in configs/train/).

Stage 1 trains the proxy (``proxy``) against several cached teachers; Stages 2 and 3 train a
student (``student``) against the proxy's cache. Stage 3 starts from a Stage-2 run (``init``)
and samples the student's and the teacher's resolution independently every iteration.

Values marked "paper" come from EUPE (Zhu et al. 2026); values marked "ours" are choices of this
project that the paper does not fix. ``validate`` checks a config before any work or write.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

from eupe.config import ConfigError
from eupe.distill.losses import LossConfig
from eupe.distill.tracking import tracker_problems
from eupe.models.config import StudentConfig, TeacherConfig
from eupe.models.proxy import ProxyConfig


@dataclass
class MixturePart:
    """Some of the store's shards and their share of every global batch (EUPE: e.g. 10% ImageNet-1k)."""

    shards: str = ""  # a pattern naming shards of the store's dataset
    weight: float = 1.0  # relative share (the parts' weights are normalized to sum to 1)


@dataclass
class DataConfig:
    shards: str = ""  # the webdataset the store was extracted from (same pattern)
    store: str = ""  # the feature store
    num_workers: int = 2  # ours
    check_keys: bool = True  # compare the shards with the fingerprints the store recorded (size, head/tail hash)
    allow_incomplete: bool = False  # train on a store whose extraction has not finished (warns)
    read_only: bool = False  # never write to the store (several trainers on one store): stats must exist
    mixture: list[MixturePart] = field(default_factory=list)  # empty: every usable image, uniformly


@dataclass
class OptimConfig:
    lr: float = 2e-5  # paper: peak learning rate (2e-5 Stage 2, 1e-5 Stage 3)
    weight_decay: float = 1e-4  # paper
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # ours (AdamW defaults)
    warmup_iters: int = 0  # ours
    min_lr_ratio: float = 0.0  # ours: cosine decays to lr * min_lr_ratio
    grad_clip: float = 1.0  # ours: max global grad norm; 0 disables


@dataclass
class TrainConfig:
    stage: int = 2
    student: StudentConfig = field(default_factory=StudentConfig)  # Stages 2-3
    proxy: ProxyConfig = field(default_factory=ProxyConfig)  # the model trained in Stage 1 (shape: ours)
    teachers: list[TeacherConfig] = field(default_factory=lambda: [TeacherConfig(name="proxy")])
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    view_policy: dict = field(default_factory=dict)  # expected store view policy ({}: accept the store's)
    iterations: int = 390_000  # paper (Stage 2)
    global_batch: int = 8192  # paper (Stage 2)
    micro_batch: int = 64  # ours: per process; gradient accumulation fills global_batch
    head_hidden: int = 3072  # paper: 1536 in Stage 1, 3072 in Stages 2-3
    student_resolutions: list[int] = field(default_factory=lambda: [256])  # paper: 256 (Stage 3: 256/384/512)
    teacher_resolutions: list[int] = field(default_factory=list)  # empty: the store's first (Stage 3, paper: 256/384/512)
    init: Optional[str] = None  # Stage 3: a Stage-2 run directory or student.safetensors
    proxy_test_scale: bool = False  # Stage 1: tiny proxy (tests)
    mixed_precision: str = "bf16"  # ours: bf16 | fp16 | no (CPU runs use "no")
    online_stats_batches: int = 8  # ours: micro-batches that fix an online-only teacher resolution's statistics
    seed: int = 0  # ours
    out: str = "runs/run"
    log_every: int = 10  # ours
    checkpoint_every: int = 1000  # ours
    keep_checkpoints: int = 2  # ours
    max_steps: Optional[int] = None  # stop early after this many iterations (resumable; tests/trials)
    trackers: list[str] = field(default_factory=lambda: ["tensorboard"])  # tensorboard | mlflow | wandb; [] none
    tracking_project: str = "eupe"  # MLflow experiment / W&B project / TensorBoard folder RUN/tensorboard/<this>
    mlflow_uri: Optional[str] = None  # MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else file store RUN/mlruns)

    def teacher_names(self) -> list[str]:
        return [t.name for t in self.teachers]

    def patch_weights(self) -> dict[str, float]:
        return {t.name: t.patch_weight for t in self.teachers}


def validate(cfg: TrainConfig, world_size: int = 1) -> None:
    """Raise ConfigError naming the first value that cannot work, before anything runs or is written."""
    for problem in _problems(cfg, world_size):
        raise ConfigError(problem)


def _problems(cfg: TrainConfig, world_size: int):
    """Each config value that cannot work, as a sentence (a generator: the first one is enough)."""
    if cfg.stage not in (1, 2, 3):
        yield f"stage must be 1, 2 or 3, got {cfg.stage}"
    if not cfg.teachers:
        yield "teachers is empty: name at least one teacher"
    if cfg.stage == 3 and not cfg.init:
        yield "stage 3 starts from a Stage-2 run: set init=RUN_DIR (or its student.safetensors)"
    for key in ("iterations", "global_batch", "micro_batch", "head_hidden", "log_every", "checkpoint_every",
                "keep_checkpoints", "online_stats_batches"):
        if getattr(cfg, key) <= 0:
            yield f"{key} must be positive, got {getattr(cfg, key)}"
    if cfg.max_steps is not None and cfg.max_steps <= 0:
        yield f"max_steps must be positive (or null), got {cfg.max_steps}"
    if cfg.micro_batch * world_size > cfg.global_batch > 0:
        yield (f"micro_batch {cfg.micro_batch} x {world_size} process(es) is larger than global_batch "
               f"{cfg.global_batch}")
    if cfg.micro_batch > 0 and cfg.global_batch % (cfg.micro_batch * world_size):
        yield (f"global_batch {cfg.global_batch} is not a multiple of micro_batch {cfg.micro_batch} x "
               f"{world_size} process(es)")
    yield from _optim_problems(cfg.optim)
    for i, part in enumerate(cfg.data.mixture):
        if not part.shards or not math.isfinite(part.weight) or part.weight <= 0:
            yield f"data.mixture.{i} needs a shard pattern and a positive weight, got {part.shards!r}, {part.weight}"
    if cfg.data.num_workers < 0:
        yield f"data.num_workers must be 0 or more, got {cfg.data.num_workers}"
    if cfg.mixed_precision not in ("bf16", "fp16", "no"):
        yield f"mixed_precision must be bf16, fp16 or no, got {cfg.mixed_precision!r}"
    yield from _resolution_problems(cfg)
    yield from tracker_problems(cfg.trackers)
    if not cfg.tracking_project.strip():
        yield "tracking_project must be a non-empty name"
    for key, value in vars(cfg.loss).items():
        if not math.isfinite(value) or value < 0 or (key == "smooth_l1_beta" and value == 0):
            yield f"loss.{key} must be a finite number >= 0 (beta > 0), got {value}"


def _optim_problems(o: OptimConfig):
    if not math.isfinite(o.lr) or o.lr <= 0:
        yield f"optim.lr must be a positive number, got {o.lr}"
    if not math.isfinite(o.weight_decay) or o.weight_decay < 0:
        yield f"optim.weight_decay must be >= 0, got {o.weight_decay}"
    if len(o.betas) != 2 or not all(0 <= b < 1 for b in o.betas):
        yield f"optim.betas must be two numbers in [0, 1), got {o.betas}"
    if o.warmup_iters < 0 or not 0 <= o.min_lr_ratio <= 1 or not o.grad_clip >= 0:
        yield (f"optim.warmup_iters >= 0, 0 <= optim.min_lr_ratio <= 1 and optim.grad_clip >= 0 are required, "
               f"got {o.warmup_iters}, {o.min_lr_ratio}, {o.grad_clip}")


def _resolution_problems(cfg: TrainConfig):
    patch = cfg.proxy.patch_size if cfg.stage == 1 else _student_patch(cfg.student.name)
    if not cfg.student_resolutions:
        yield "student_resolutions is empty"
    for resolution in cfg.student_resolutions:
        if resolution <= 0 or resolution % patch:
            who = "the proxy's" if cfg.stage == 1 else f"{cfg.student.name}'s"
            yield f"student_resolutions: {resolution} is not a positive multiple of {who} patch size {patch}"
    for resolution in cfg.teacher_resolutions:
        if resolution <= 0:
            yield f"teacher_resolutions: {resolution} is not a positive resolution"


def _student_patch(name: str) -> int:
    from eupe.models.students import STUDENTS

    return STUDENTS.get(name).patch_size
