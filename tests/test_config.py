"""Strict YAML merge over dataclass schemas, overrides, resolved-config output, shipped configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from eupe import config
from eupe.models.config import StudentConfig, TeacherConfig
from eupe.models.proxy import ProxyConfig
from eupe.models.students import list_students
from eupe.models.teachers import list_teachers

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_yaml_values_and_overrides_apply(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("name: effnet_lite0\nresolutions: [224, 448]\n")
    cfg = config.load(TeacherConfig, path, ["patch_weight=0.5", "weights=/w.pth"])
    assert (cfg.name, list(cfg.resolutions), cfg.patch_weight, cfg.weights) == ("effnet_lite0", [224, 448], 0.5, "/w.pth")


@pytest.mark.parametrize("text,overrides,match", [
    ("nmae: vit_t\n", [], r"unknown key\(s\) \['nmae'\] in StudentConfig; valid keys: \['name', 'resolution'"),
    ("", ["resolution=big"], "resolution"),
    ("", ["color=red"], "color"),
    ("", ["resolution"], "key=value"),
    ("- a\n- b\n", [], "mapping"),
])
def test_bad_configs_are_errors_naming_the_problem(tmp_path, text, overrides, match):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(config.ConfigError, match=match) as err:
        config.load(StudentConfig, path, overrides)
    if text:
        assert str(path) in str(err.value)


def test_resolved_config_is_written_and_reloads(tmp_path):
    cfg = config.build(StudentConfig, {"name": "convnext_t"}, ["resolution=384"])
    written = config.save_resolved(cfg, tmp_path / "run")
    assert written.name == "config.yaml"
    assert yaml.safe_load(written.read_text())["resolution"] == 384
    assert config.load(StudentConfig, written) == cfg


@pytest.mark.parametrize("path", sorted((CONFIGS / "teachers").glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_teacher_configs_load_and_name_registered_teachers(path):
    cfg = config.load(TeacherConfig, path)
    assert cfg.name == path.stem and cfg.name in list_teachers()


@pytest.mark.parametrize("path", sorted((CONFIGS / "students").glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_student_configs_load_and_name_registered_students(path):
    cfg = config.load(StudentConfig, path)
    assert cfg.name == path.stem and cfg.name in list_students()


def test_shipped_configs_cover_the_paper():
    assert {p.stem for p in (CONFIGS / "students").glob("*.yaml")} == set(list_students())
    assert {"dinov3_hplus", "pecore_g", "pelang_g"} <= {p.stem for p in (CONFIGS / "teachers").glob("*.yaml")}
    assert config.load(ProxyConfig, CONFIGS / "proxy.yaml") == ProxyConfig()


def test_overrides_reach_list_items_and_still_reject_unknown_keys():
    from eupe.distill.config import TrainConfig

    cfg = config.build(TrainConfig, {"teachers": [{"name": "proxy"}, {"name": "pecore_g"}]},
                       ["teachers.1.patch_weight=0.5", "teachers.0.weights=/runs/s1", "student_resolutions=[256, 384]",
                        "optim.lr=1e-3", "data.shards=shards/train-{000000..000009}.tar", "mixed_precision=no",
                        "data.check_keys=false"])
    assert cfg.mixed_precision == "no" and cfg.data.check_keys is False
    assert cfg.teachers[1].patch_weight == 0.5 and cfg.teachers[0].weights == "/runs/s1"
    assert cfg.student_resolutions == [256, 384] and cfg.optim.lr == 1e-3
    assert cfg.data.shards == "shards/train-{000000..000009}.tar"
    with pytest.raises(config.ConfigError, match="lrr"):
        config.build(TrainConfig, {}, ["optim.lrr=1"])


@pytest.mark.parametrize("path", sorted((CONFIGS / "train").glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_train_configs_load_and_follow_the_recipe(path):
    from eupe.distill.config import TrainConfig

    cfg = config.load(TrainConfig, path)
    assert cfg.stage == int(path.stem.split("stage")[1][0])
    if path.stem.startswith("tiny"):
        return
    assert cfg.global_batch % cfg.micro_batch == 0 and cfg.optim.weight_decay == 1e-4
    if cfg.stage == 1:
        assert cfg.teacher_names() == ["pecore_g", "pelang_g", "dinov3_hplus"] and cfg.head_hidden == 1536
        assert cfg.proxy == ProxyConfig()
    elif cfg.stage == 2:
        assert (cfg.iterations, cfg.global_batch, cfg.optim.lr, cfg.student_resolutions) == (390_000, 8192, 2e-5, [256])
        assert cfg.head_hidden == 3072 and cfg.student.name in list_students()
    else:
        assert (cfg.iterations, cfg.global_batch, cfg.optim.lr) == (100_000, 4096, 1e-5)
        assert cfg.student_resolutions == cfg.teacher_resolutions == [256, 384, 512] and cfg.init.endswith(cfg.student.name)


def test_every_student_has_stage2_and_stage3_configs():
    names = {p.stem for p in (CONFIGS / "train").glob("*.yaml")}
    assert {f"stage{s}_{n}" for s in (2, 3) for n in list_students()} | {"stage1_proxy"} <= names
