"""eupe-train end to end on CPU with test-scale models over real photo shards.

Stage 1 (two cached teachers -> tiny proxy) -> cache the proxy -> Stage 2 -> Stage 3 with the
online fallback; resume reproduces the loss trajectory; mismatched stores are refused; the
exported student loads into timm by name.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from eupe.cache_tools.cli import main as cache_main
from eupe.distill.data import DistillDataset
from eupe.distill.stats import teacher_stats
from eupe.distill.targets import OnlineTeacher
from eupe.models.checkpoint import load_student
from eupe.models.teachers import create_teacher
from eupe.store.store import FeatureStore
from eupe.train.cli import main as train_main

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "train"


def _extract(data: str, out: str, *args: str) -> None:
    assert cache_main(["extract", "--data", data, "--out", out, "--views", "2", "--limit", "12",
                       "--images-per-chunk", "4", "--num-workers", "0", *args]) == 0


def _losses(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "losses.jsonl").read_text().splitlines()]


def _decreased(run: Path) -> bool:
    totals = [r["total"] for r in _losses(run)]
    third = len(totals) // 3
    return np.mean(totals[-third:]) < 0.85 * np.mean(totals[:third])


def _train(stage: int, config: str, *overrides: str) -> None:
    assert train_main(["--stage", str(stage), "--config", str(CONFIGS / config), *overrides]) == 0


@pytest.fixture(scope="module")
def chain(tmp_path_factory, photo_shards):
    """Runs the whole recipe once; the tests below inspect its outputs."""
    root = tmp_path_factory.mktemp("chain")
    teachers_store, proxy_store = str(root / "teachers.zarr"), str(root / "proxy.zarr")
    _extract(photo_shards, teachers_store, "--teacher", "dinov3_hplus", "--test-scale", "--resolution", "64")
    _extract(photo_shards, teachers_store, "--teacher", "pelang_g", "--test-scale", "--resolution", "56")
    common = [f"data.shards={photo_shards}"]
    _train(1, "tiny_stage1.yaml", f"data.store={teachers_store}", f"out={root / 'stage1'}", *common)
    _extract(photo_shards, proxy_store, "--teacher", "proxy", "--weights", str(root / "stage1"), "--codec", "fp16")
    proxy = [f"data.store={proxy_store}", f"teachers.0.weights={root / 'stage1'}", *common]
    _train(2, "tiny_stage2.yaml", f"out={root / 'stage2'}", *proxy)
    _train(3, "tiny_stage3.yaml", f"out={root / 'stage3'}", f"init={root / 'stage2'}", *proxy)
    return {"root": root, "proxy_store": proxy_store, "common": common, "proxy": proxy}


def test_every_stage_trains_and_its_loss_decreases(chain):
    root = chain["root"]
    for stage in ("stage1", "stage2", "stage3"):
        assert _decreased(root / stage), stage
    assert (root / "stage1" / "proxy.safetensors").is_file()
    assert (root / "stage2" / "student.safetensors").is_file() and (root / "stage2" / "config.yaml").is_file()
    assert any((root / "stage2" / "tensorboard").rglob("events.out.tfevents.*"))
    first = _losses(root / "stage1")[0]
    assert {"dinov3_hplus/summary_cos_loss", "pelang_g/patch_cos_loss", "pelang_g/patch_smooth_l1", "total", "lr",
            "images_per_s", "data_wait_fraction"} <= set(first)


def test_stage3_mixes_cache_hits_and_online_fallbacks(chain):
    log = _losses(chain["root"] / "stage3")
    resolutions = {(r["student_resolution"], r["teacher_resolution"]) for r in log}
    assert {r[0] for r in resolutions} == {64, 96, 128} and {r[1] for r in resolutions} == {64, 96}
    assert log[-1]["cache_hits"] > 0 and log[-1]["online_fallbacks"] > 0
    online_steps = [r for r in log if r["teacher_resolution"] == 96]
    assert all(r["online_fallbacks"] > 0 for r in online_steps)


def test_cached_and_online_targets_agree_on_the_same_view(chain):
    store = FeatureStore.open(chain["proxy_store"])
    stats = {"proxy": teacher_stats(chain["proxy_store"], "proxy")}
    dataset = DistillDataset(chain["proxy_store"], ["proxy"], stats)
    cached = dataset.__getitems__([(row, k, 64, 64) for row, k in ((0, 0), (5, 1), (11, 1))]).targets["proxy"]
    missing = dataset.__getitems__([(row, k, 64, 96) for row, k in ((0, 0), (5, 1), (11, 1))])
    teacher = OnlineTeacher(create_teacher("proxy", weights=chain["root"] / "stage1"), stats["proxy"])
    assert store.teacher("proxy").resolutions == [64] and set(missing.inputs) == {"proxy"} and not missing.targets
    from eupe.views.renderer import render
    from eupe.views.source import open_image
    from eupe.views.spec import ViewSpec
    from eupe.data.shards import ShardReader

    reader = ShardReader(store.shard_index())
    pixels = torch.stack([render(open_image(reader.read(row)), ViewSpec.from_array(store.teacher("proxy").reader.views(row)[k]), 64)
                          for row, k in ((0, 0), (5, 1), (11, 1))])
    online = teacher(pixels, 64)
    for kind in ("summary", "patch"):
        cos = torch.nn.functional.cosine_similarity(online[kind], cached[kind], dim=-1)
        assert cos.min() >= 0.999, kind
    assert teacher.samples == 3


def test_stop_and_resume_reproduces_the_uninterrupted_trajectory(chain, tmp_path):
    run = tmp_path / "resumed"
    args = [f"out={run}", *chain["proxy"]]
    _train(2, "tiny_stage2.yaml", "max_steps=10", *args)
    assert len(_losses(run)) == 10 and not (run / "student.safetensors").exists()
    _train(2, "tiny_stage2.yaml", *args)
    resumed, reference = _losses(run), _losses(chain["root"] / "stage2")
    assert [r["step"] for r in resumed] == list(range(30))
    np.testing.assert_allclose([r["total"] for r in resumed], [r["total"] for r in reference], rtol=1e-5)


def test_a_mismatched_store_is_refused_naming_the_difference(chain, tmp_path, capsys):
    other_teacher = ["--stage", "2", "--config", str(CONFIGS / "tiny_stage2.yaml"), f"out={tmp_path / 'x'}",
                     f"data.store={chain['proxy_store']}", *chain["common"], "teachers.0.name=dinov3_hplus"]
    assert train_main(other_teacher) == 2
    assert "teacher 'dinov3_hplus' is not in the store (it has proxy)" in capsys.readouterr().err
    other_policy = ["--stage", "2", "--config", str(CONFIGS / "tiny_stage2.yaml"), f"out={tmp_path / 'y'}",
                    *chain["proxy"], "view_policy={flip_p: 0.0}"]
    assert train_main(other_policy) == 2
    assert "view policy differs" in capsys.readouterr().err
    wrong_weights = ["--stage", "2", "--config", str(CONFIGS / "tiny_stage2.yaml"), f"out={tmp_path / 'z'}",
                     f"data.store={chain['proxy_store']}", *chain["common"],
                     f"teachers.0.weights={chain['root'] / 'stage2' / 'heads.pt'}"]
    assert train_main(wrong_weights) != 0
    fewer_images = ["--stage", "2", "--config", str(CONFIGS / "tiny_stage2.yaml"), f"out={tmp_path / 'w'}",
                    *chain["proxy"], f"data.shards={chain['common'][0].split('=', 1)[1].replace('000002', '000001')}"]
    assert train_main(fewer_images) == 2
    assert "dataset shards differ" in capsys.readouterr().err


def test_exported_student_loads_into_timm_by_name(chain):
    path = chain["root"] / "stage2" / "student.safetensors"
    student = load_student(path)
    model = timm.create_model("vit_tiny_patch16_dinov3_qkvb", pretrained=True, num_classes=0,
                              pretrained_cfg_overlay={"file": str(path)}, embed_dim=64, depth=2, num_heads=2)
    pixels = torch.rand(2, 3, 64, 64)
    x = (pixels - student.mean) / student.std
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(x), student.backbone.forward_features(x))
        trained = student(pixels)["patch"]
    from eupe.models.students import create_student

    torch.manual_seed(0)
    fresh = create_student("vit_t", test_scale=True)
    with torch.no_grad():
        assert not torch.allclose(fresh(pixels)["patch"], trained)  # the weights were actually trained


def test_trained_student_agrees_with_its_teacher_better_than_at_init(chain, photos):
    from eupe.distill.agreement import load_distill_model, teacher_agreement
    from eupe.distill.heads import DistillModel
    from eupe.models.students import create_student
    from eupe.views.source import decode_image

    teacher = create_teacher("proxy", weights=chain["root"] / "stage1")
    stats = teacher_stats(chain["proxy_store"], "proxy")
    images = [(p.key, decode_image(p.read_bytes())) for p in photos[-3:]]
    trained = load_distill_model(chain["root"] / "stage2")
    torch.manual_seed(0)
    initial = DistillModel(create_student("vit_t", test_scale=True), {"proxy": teacher.dim}, 64).eval()
    after = teacher_agreement(trained, "proxy", teacher, stats, images, views=2, student_resolution=64)
    before = teacher_agreement(initial, "proxy", teacher, stats, images, views=2, student_resolution=64)
    assert after["views"] == 6
    assert after["patch_cos"] > before["patch_cos"] + 0.1


def test_eval_agreement_command(chain, photo_shards, capsys):
    from eupe.evaluation.cli import main

    args = ["agreement", "--run", str(chain["root"] / "stage2"), "--teacher", "proxy", "--weights",
            str(chain["root"] / "stage1"), "--store", chain["proxy_store"], "--data", photo_shards,
            "--views", "2", "--limit", "3", "--json"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["views"] == 6 and 0.2 < result["patch_cos"] <= 1.0


# --- store checks, statistics, logging (issues 8 and 9) -----------------------------------------

class Evil:
    """Not a tensor: a checkpoint holding it must be refused, not unpickled."""


def test_an_incomplete_store_is_refused_unless_allowed(chain, photo_shards, tmp_path, capsys):
    half = str(tmp_path / "half.zarr")  # rank 0 of 2: chunks 0 and 2 of 3 done, 4 of 12 images missing
    _extract(photo_shards, half, "--teacher", "proxy", "--weights", str(chain["root"] / "stage1"), "--codec", "fp16",
             "--rank", "0", "--world-size", "2")
    capsys.readouterr()
    args = ["--stage", "2", "--config", str(CONFIGS / "tiny_stage2.yaml"), f"data.store={half}", *chain["common"],
            f"teachers.0.weights={chain['root'] / 'stage1'}"]
    assert train_main([*args, f"out={tmp_path / 'refused'}"]) == 2
    err = capsys.readouterr().err
    assert "is incomplete (4 of 12 images of 'proxy' not extracted yet)" in err and "data.allow_incomplete=true" in err
    assert not (tmp_path / "refused").exists()
    assert train_main([*args, f"out={tmp_path / 'allowed'}", "data.allow_incomplete=true", "max_steps=2"]) == 0
    out = capsys.readouterr().out
    assert "warning: training on an incomplete store: 4 of 12 images of 'proxy' not extracted yet" in out
    # 30 iterations x 8 images / (8 usable images x 2 views)
    assert "expected reuse per stored view: 15.0 reads (30 iterations x 8 images / (8 usable images x 2 views))" in out
    assert {r["step"] for r in _losses(tmp_path / "allowed")} == {0, 1}


def test_a_teacher_resolution_is_normalized_alike_cached_or_online(chain):
    """Statistics the trainer computes online for a resolution agree with the store's for the same views."""
    from eupe.distill.stats import stored_stats
    from eupe.distill.targets import online_stats

    store = FeatureStore.open(chain["proxy_store"])
    stats = {"proxy": stored_stats(store, "proxy")}
    dataset = DistillDataset(chain["proxy_store"], ["proxy"], stats, store=store)
    teacher = OnlineTeacher(create_teacher("proxy", weights=chain["root"] / "stage1"), dict(stats["proxy"]))
    samples = [(row, k) for row in range(store.num_images) for k in range(store.params.views_per_image)]
    online = online_stats(teacher, dataset, samples, 64, 8, torch.device("cpu"))
    for key, cached in stats["proxy"][64].items():
        scale = stats["proxy"][64][key.replace("_mean", "_std")]
        assert torch.allclose(torch.from_numpy(online[key]).float(), cached, atol=2e-3 * float(scale.mean()),
                              rtol=2e-3), key
    saved = np.load(chain["root"] / "stage3" / "stats" / "proxy_r96.npz")
    assert not np.allclose(saved["patch_mean"], stats["proxy"][64]["patch_mean"].numpy(), atol=1e-3)  # its own
    with pytest.raises(KeyError, match="no normalization statistics for teacher resolution 128"):
        teacher(torch.rand(1, 3, 128, 128), 128)  # never borrowed from the nearest stored resolution


def test_online_resolution_statistics_are_saved_once_and_reloaded_on_resume(chain, tmp_path, capsys):
    run = tmp_path / "stage3"
    args = [f"out={run}", f"init={chain['root'] / 'stage2'}", *chain["proxy"]]
    _train(3, "tiny_stage3.yaml", "max_steps=12", *args)
    assert "computing normalization statistics for proxy r96 from the online teacher" in capsys.readouterr().out
    saved = (run / "stats" / "proxy_r96.npz").read_bytes()
    _train(3, "tiny_stage3.yaml", *args)
    assert "computing normalization statistics" not in capsys.readouterr().out
    assert (run / "stats" / "proxy_r96.npz").read_bytes() == saved
    np.testing.assert_allclose([r["total"] for r in _losses(run)],
                               [r["total"] for r in _losses(chain["root"] / "stage3")], rtol=1e-5)


def test_an_unsafe_init_checkpoint_is_refused(chain, tmp_path, capsys):
    import shutil

    init = tmp_path / "init"
    shutil.copytree(chain["root"] / "stage2", init)
    torch.save({"summary.0.weight": Evil()}, init / "heads.pt")
    assert train_main(["--stage", "3", "--config", str(CONFIGS / "tiny_stage3.yaml"), f"out={tmp_path / 'r'}",
                       f"init={init}", *chain["proxy"]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{init / 'heads.pt'} is not a plain tensor checkpoint" in err[0]
    assert "weights_only" not in err[0] and not (tmp_path / "r").exists()
    assert train_main(["--stage", "3", "--config", str(CONFIGS / "tiny_stage3.yaml"), f"out={tmp_path / 'm'}",
                       f"init={tmp_path / 'missing'}", *chain["proxy"]]) == 2
    assert "student weights" in capsys.readouterr().err and not (tmp_path / "m").exists()


def test_the_loss_config_reaches_the_training_loop(chain, tmp_path):
    run = tmp_path / "summary_only"
    _train(2, "tiny_stage2.yaml", f"out={run}", "max_steps=2", "loss.patch_weight=0", "loss.summary_weight=2",
           *chain["proxy"])
    for record in _losses(run):
        assert record["total"] == pytest.approx(2 * record["proxy/summary_cos_loss"], rel=1e-6)
        assert record["proxy/patch_cos_loss"] > 0


def test_only_the_main_process_logs_under_torchrun(chain, photo_shards, tmp_path):
    import subprocess
    import sys

    fresh = str(tmp_path / "fresh.zarr")  # no statistics yet: rank 0 computes them once, rank 1 waits
    _extract(photo_shards, fresh, "--teacher", "proxy", "--weights", str(chain["root"] / "stage1"), "--codec", "fp16")
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "eupe.train.cli",
           "--stage", "2", "--config", str(CONFIGS / "tiny_stage2.yaml"), f"out={run}", f"data.store={fresh}",
           f"teachers.0.weights={chain['root'] / 'stage1'}", *chain["common"], "max_steps=6"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**__import__("os").environ,
                                                                                  "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("run directory:") == 1 and done.stdout.count("expected reuse") == 1
    assert done.stdout.count("computing normalization statistics for proxy r64") == 1
    assert [r["step"] for r in _losses(run)] == list(range(6))  # one row per step, not one per rank
    reference = _losses(chain["root"] / "stage2")[:6]  # 2 ranks x 4 = 1 rank x 2 micro-batches of 4
    np.testing.assert_allclose([r["total"] for r in _losses(run)], [r["total"] for r in reference], rtol=1e-4)


def test_mixture_through_the_trainer_resumes_exactly(chain, tmp_path, photo_shards):
    pattern = photo_shards.replace("{000000..000002}", "000000")
    rest = photo_shards.replace("{000000..000002}", "{000001..000002}")
    mix = ["data.mixture=[{shards: '" + pattern + "', weight: 3}, {shards: '" + rest + "', weight: 1}]"]
    run, whole = tmp_path / "resumed", tmp_path / "whole"
    _train(2, "tiny_stage2.yaml", f"out={whole}", "iterations=12", *mix, *chain["proxy"])
    _train(2, "tiny_stage2.yaml", f"out={run}", "iterations=12", "max_steps=6", "checkpoint_every=3", *mix,
           *chain["proxy"])
    _train(2, "tiny_stage2.yaml", f"out={run}", "iterations=12", "checkpoint_every=3", *mix, *chain["proxy"])
    np.testing.assert_allclose([r["total"] for r in _losses(run)], [r["total"] for r in _losses(whole)], rtol=1e-5)
    uniform = tmp_path / "uniform"
    _train(2, "tiny_stage2.yaml", f"out={uniform}", "iterations=12", *chain["proxy"])
    assert [r["total"] for r in _losses(uniform)] != [r["total"] for r in _losses(whole)]


def test_a_mixture_part_outside_the_store_is_refused(chain, tmp_path, capsys):
    other = str(tmp_path / "elsewhere-000000.tar")
    args = ["--stage", "2", "--config", str(CONFIGS / "tiny_stage2.yaml"), f"out={tmp_path / 'r'}", *chain["proxy"],
            "data.mixture=[{shards: '" + other + "', weight: 1}]"]
    assert train_main(args) == 2
    err = capsys.readouterr().err
    assert f"data.mixture.0.shards: {other} is not one of the store's 3 shards" in err
    assert train_main([*args[:-1], "data.mixture=[{shards: x, weight: -1}]"]) == 2
    assert "data.mixture.0 needs a shard pattern and a positive weight" in capsys.readouterr().err


def _tree(path: str) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in Path(path).rglob("*") if p.is_file()}


def test_several_students_read_one_store_concurrently_without_writing(chain, tmp_path):
    """The point of caching the proxy once: N trainers share its store read-only (data.read_only=true)."""
    import os
    import subprocess
    import sys

    before = _tree(chain["proxy_store"])
    code = "import sys; from eupe.train.cli import main; sys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", code, "--stage", "2", "--config", str(CONFIGS / "tiny_stage2.yaml"),
                               f"out={tmp_path / f'student{i}'}", f"seed={i}", "data.read_only=true", "max_steps=3",
                               *chain["proxy"]], env=env, stderr=subprocess.PIPE, text=True) for i in range(2)]
    errors = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    assert all(len(_losses(tmp_path / f"student{i}")) == 3 for i in range(2))
    assert _tree(chain["proxy_store"]) == before  # not one byte written, not one file touched


def test_a_read_only_trainer_refuses_to_compute_missing_statistics(chain, tmp_path, capsys):
    import shutil

    store = tmp_path / "nostats.zarr"
    shutil.copytree(chain["proxy_store"], store)
    for stats in store.rglob("stats"):
        shutil.rmtree(stats)
    overrides = [o for o in chain["proxy"] if not o.startswith("data.store=")]
    assert train_main(["--stage", "2", "--config", str(CONFIGS / "tiny_stage2.yaml"), f"out={tmp_path / 'x'}",
                       f"data.store={store}", "data.read_only=true", *overrides]) == 2
    assert "eupe-cache stats" in capsys.readouterr().err


def test_the_trainer_draws_from_every_complete_view_block(chain, photo_shards, tmp_path, capsys):
    """Issue 9 pt 3: a grown store's new views are used once their block is complete, and a resumed run
    keeps the number of views it started with."""
    import shutil

    store = str(tmp_path / "grown.zarr")
    shutil.copytree(chain["proxy_store"], store)
    grow = ["--teacher", "proxy", "--weights", str(chain["root"] / "stage1"), "--codec", "fp16", "--views", "4"]
    assert cache_main(["extract", "--data", photo_shards, "--out", store, "--limit", "12", "--images-per-chunk", "4",
                       "--num-workers", "0", *grow, "--rank", "0", "--world-size", "2"]) == 0
    args = ["--stage", "2", "--config", str(CONFIGS / "tiny_stage2.yaml"), f"data.store={store}", *chain["common"],
            f"teachers.0.weights={chain['root'] / 'stage1'}", f"out={tmp_path / 'run'}"]
    capsys.readouterr()
    assert train_main([*args, "max_steps=1"]) == 0
    out = capsys.readouterr().out
    assert "not used until their extraction finishes: proxy views 2..3" in out
    assert "(12 usable images x 2 views))" in out
    assert cache_main(["extract", "--data", photo_shards, "--out", store, "--limit", "12", "--images-per-chunk", "4",
                       "--num-workers", "0", *grow, "--rank", "1", "--world-size", "2"]) == 0
    capsys.readouterr()
    assert train_main([*args, "max_steps=2"]) == 0  # resumes step 1 with the 2 views it started with
    assert "resuming with the 2 views per image this run started with; the store now holds 4" in capsys.readouterr().out
    assert train_main([*args[:-1], f"out={tmp_path / 'new'}", "max_steps=1"]) == 0
    assert "(12 usable images x 4 views))" in capsys.readouterr().out


@pytest.mark.slow  # the ConvNeXt case trains 6 Stage-2 steps
@pytest.mark.parametrize("student", ["vit_t", "convnext_t"])
def test_trained_student_exports_as_a_timm_folder_with_its_summary_and_losses(chain, tmp_path, student):
    """A really trained ViT / ConvNeXt student: eupe-export's folder loads with timm's local-dir alone,
    its pooled output is the distilled summary, and the card has the run's last losses per teacher."""
    from eupe.export.cli import main as export_main

    run = chain["root"] / "stage2"
    if student != "vit_t":  # a few Stage-2 steps of a ConvNeXt student on the same proxy store
        run = tmp_path / "stage2_convnext"
        _train(2, "tiny_stage2.yaml", f"out={run}", "student.name=convnext_t", "iterations=6", "checkpoint_every=6",
               *chain["proxy"])
    out = tmp_path / "export"
    assert export_main(["--checkpoint", str(run), "--resolution", "64", "--out", str(out)]) == 0
    model = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    trained = load_student(run)
    pixels = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        pooled, summary = model((pixels - trained.mean) / trained.std), trained(pixels)["summary"]
    assert torch.nn.functional.cosine_similarity(pooled, summary).min() >= 0.9999
    last = _losses(run)[-1]
    card = json.loads((out / "model_card.json").read_text())
    assert card["final_losses"]["step"] == last["step"] and card["final_losses"]["total"] == last["total"]
    assert card["final_losses"]["teachers"]["proxy"]["loss"] == last["proxy/loss"]
