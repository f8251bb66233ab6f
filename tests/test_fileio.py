"""Files the project writes honour the umask (safetensors, configs, statistics), atomically."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
import torch

from eupe.config import save_resolved
from eupe.distill.config import TrainConfig
from eupe.distill.stats import save_run_stats
from eupe.fileio import apply_umask, atomic_write, current_umask, default_file_mode, write_text_atomic
from eupe.models.students import create_student
from eupe.models.checkpoint import save_student


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture(params=[0o022, 0o027, 0o002])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def test_current_umask_reads_without_changing(umask):
    assert current_umask() == umask and current_umask() == umask
    assert default_file_mode() == 0o666 & ~umask


def test_project_writers_honour_the_umask(tmp_path, umask):
    torch.manual_seed(0)
    student = create_student("vit_t", test_scale=True)
    expected = 0o666 & ~umask  # e.g. 0o644 under umask 022; safetensors alone would give 0o600
    written = [save_student(student, tmp_path / "student.safetensors", test_scale=True),
               save_resolved(TrainConfig(), tmp_path),
               write_text_atomic(tmp_path / "card" / "README.md", "hello\n")]
    save_run_stats(tmp_path / "stats.npz", {"summary_mean": np.zeros(3)})
    written.append(tmp_path / "stats.npz")
    assert {p.name: _mode(p) for p in written} == {p.name: expected for p in written}
    assert (tmp_path / "card" / "README.md").read_text() == "hello\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["card", "stats.npz", "student.safetensors",
                                                                  written[1].name])  # no temporary left


def test_failed_write_leaves_the_old_file(tmp_path):
    path = write_text_atomic(tmp_path / "config.json", "old")

    def broken(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(path, broken)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_apply_umask_fixes_private_files(tmp_path, umask):
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(2)}, str(tmp_path / "model.safetensors"))  # safetensors writes 0o600
    (tmp_path / "sub").mkdir()
    save_file({"a": torch.zeros(2)}, str(tmp_path / "sub" / "optimizer.safetensors"))
    apply_umask(tmp_path)
    assert _mode(tmp_path / "model.safetensors") == _mode(tmp_path / "sub" / "optimizer.safetensors") == 0o666 & ~umask
