"""Fixtures: tiny (test-scale) students, their trained-style student files and .pte programs."""

from __future__ import annotations

import pytest
from deploy_helpers import INFO, tiny_student

from eupe.deploy.executorch_export import export_pte
from eupe.models.checkpoint import save_student


@pytest.fixture(scope="session")
def tiny_vit():
    return tiny_student("vit_t")


@pytest.fixture(scope="session")
def student_file(tmp_path_factory, tiny_vit):
    """A student file as ``eupe-train`` writes it (test-scale ViT-T, with a training record)."""
    return save_student(tiny_vit, tmp_path_factory.mktemp("run") / "student.safetensors", test_scale=True, info=INFO)


@pytest.fixture(scope="session")
def vit_pte(tmp_path_factory, tiny_vit):
    """The fp32 .pte of the tiny ViT-T at 64 px."""
    return export_pte(tiny_vit, 64, tmp_path_factory.mktemp("pte") / "vit_t_64.pte")
