"""Typed configuration of an ``eupe-train`` run (YAML values live in configs/train/).

Stage 1 trains the proxy (``proxy``) against several cached teachers; Stages 2 and 3 train a
student (``student``) against the proxy's cache. Stage 3 starts from a Stage-2 run (``init``)
and samples the student's and the teacher's scale independently every iteration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from eupe.models.config import StudentConfig, TeacherConfig
from eupe.models.proxy import ProxyConfig


@dataclass
class DataConfig:
    shards: str = ""  # the webdataset the store was extracted from (same pattern)
    store: str = ""  # the feature store
    num_workers: int = 2
    check_keys: bool = True  # re-index the shards and compare their keys with the store's


@dataclass
class OptimConfig:
    lr: float = 2e-5  # peak learning rate (EUPE: 2e-5 Stage 2, 1e-5 Stage 3)
    weight_decay: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_iters: int = 0
    min_lr_ratio: float = 0.0  # cosine decays to lr * min_lr_ratio
    grad_clip: float = 1.0  # max global grad norm; 0 disables


@dataclass
class TrainConfig:
    stage: int = 2
    student: StudentConfig = field(default_factory=StudentConfig)  # Stages 2-3
    proxy: ProxyConfig = field(default_factory=ProxyConfig)  # the model trained in Stage 1
    teachers: list[TeacherConfig] = field(default_factory=lambda: [TeacherConfig(name="proxy")])
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    view_policy: dict = field(default_factory=dict)  # expected store view policy ({}: accept the store's)
    iterations: int = 390_000
    global_batch: int = 8192
    micro_batch: int = 64  # per process; gradient accumulation fills global_batch
    head_hidden: int = 3072  # 1536 in Stage 1
    student_scales: list[int] = field(default_factory=lambda: [256])
    teacher_scales: list[int] = field(default_factory=list)  # empty: the store's first resolution
    init: Optional[str] = None  # Stage 3: a Stage-2 run directory or student.safetensors
    proxy_test_scale: bool = False  # Stage 1: tiny proxy (tests)
    mixed_precision: str = "bf16"  # bf16 | fp16 | no (CPU runs use "no")
    seed: int = 0
    out: str = "runs/run"
    log_every: int = 10
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    max_steps: Optional[int] = None  # stop early after this many iterations (resumable; tests/trials)

    def teacher_names(self) -> list[str]:
        return [t.name for t in self.teachers]

    def patch_weights(self) -> dict[str, float]:
        return {t.name: t.patch_weight for t in self.teachers}
