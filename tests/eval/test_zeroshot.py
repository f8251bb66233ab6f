"""Zero-shot with a tiny randomly initialised PE-Core text tower (real open_clip code, small width)."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("open_clip")

from eupe.eval.tasks.base import EvalContext, EvalModel  # noqa: E402
from eupe.eval.zeroshot import (TextTowerError, encode_classes, load_text_tower, templates,  # noqa: E402
                                text_classifier, topk_accuracy, zero_shot_logits)

TINY = {"embed_dim": 32, "custom_text": True,
        "vision_cfg": {"image_size": 64, "timm_model_name": "vit_pe_core_tiny_patch16_384",
                       "timm_model_pretrained": False, "timm_pool": "map", "timm_proj": None},
        "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}
CLASSES = ["trouser", "bag", "sandal"]


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory):
    path = tmp_path_factory.mktemp("tower") / "PE-Core-tiny-test.json"
    path.write_text(json.dumps(TINY))
    return str(path)


@pytest.fixture(scope="module")
def tower(tiny_config):
    return load_text_tower("random", tiny_config, seed=0)


def test_classifier_matches_open_clip_and_is_cached(tower, tmp_path):
    import open_clip

    class Wrap(torch.nn.Module):  # open_clip's reference builder wants encode_text
        def encode_text(self, tokens, normalize=False):
            out = tower.model(tokens)
            return torch.nn.functional.normalize(out, dim=-1) if normalize else out

    fns = templates("simple")
    reference = open_clip.build_zero_shot_classifier(Wrap(), tower.tokenizer, CLASSES, fns)
    weights, hit = text_classifier(tower, CLASSES, fns, tmp_path)
    assert not hit and tuple(weights.shape) == (32, 3)
    assert torch.allclose(weights, reference, atol=1e-5)
    assert torch.allclose(weights.norm(dim=0), torch.ones(3), atol=1e-5)
    again, hit = text_classifier(tower, CLASSES, fns, tmp_path)
    assert hit and torch.equal(again, weights)
    assert len(list((tmp_path / "zeroshot").glob("*.npz"))) == 1
    _, hit = text_classifier(tower, CLASSES[:2], fns, tmp_path)  # other class names: another entry
    assert not hit and len(list((tmp_path / "zeroshot").glob("*.npz"))) == 2
    other = load_text_tower("random", tower.config, seed=1)  # other weights: another entry
    assert other.fingerprint != tower.fingerprint
    assert not text_classifier(other, CLASSES, fns, tmp_path)[1]


def test_logits_are_normalized_image_times_classifier(tower):
    fns = templates("simple")
    weights = encode_classes(tower, CLASSES, fns)
    images = torch.randn(5, 32, generator=torch.Generator().manual_seed(0)) * 7.0
    logits = zero_shot_logits(images, weights)
    manual = torch.stack([torch.stack([(img / img.norm()) @ weights[:, c] for c in range(3)]) for img in images])
    assert torch.allclose(logits, manual, atol=1e-5)
    # an image equal to a class embedding is classified as that class
    assert zero_shot_logits(weights.T, weights).argmax(dim=1).tolist() == [0, 1, 2]
    labels = torch.tensor([0, 1, 2])
    assert topk_accuracy(zero_shot_logits(weights.T, weights), labels, 1) == 1.0
    assert topk_accuracy(torch.tensor([[0.1, 0.5, 0.2]]), torch.tensor([2]), 1) == 0.0
    assert topk_accuracy(torch.tensor([[0.1, 0.5, 0.2]]), torch.tensor([2]), 2) == 1.0
    with pytest.raises(TextTowerError, match="does not match the text tower"):
        zero_shot_logits(torch.randn(2, 16), weights)


def test_missing_or_bad_text_weights(tmp_path, tiny_config):
    with pytest.raises(TextTowerError, match="--text-weights"):
        load_text_tower(None)
    with pytest.raises(TextTowerError, match="file not found"):
        load_text_tower(tmp_path / "nope.safetensors", tiny_config)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(TextTowerError, match="not a readable"):
        load_text_tower(bad, tiny_config)
    with pytest.raises(TextTowerError, match="unknown open_clip config"):
        load_text_tower("random", "No-Such-Model")


def test_text_weights_file_round_trip(tower, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "open_clip_model.safetensors"
    save_file({f"text.{k}": v.contiguous() for k, v in tower.model.state_dict().items()}, str(path))
    loaded = load_text_tower(path, tower.config, seed=5)  # seed differs: the weights come from the file
    assert loaded.fingerprint == tower.fingerprint


def test_zeroshot_task_without_text_weights_or_clip_space(tiny_config):
    from eupe.eval.tasks.catalog import get_task
    from eupe.models.students import create_student

    encoder = create_student("vit_t", test_scale=True)
    task = get_task("zeroshot")
    no_clip = task.run(EvalModel("s", encoder, None, "no pecore_g head"), EvalContext())
    assert [(f.value, f.reason) for f in no_clip] == [(None, "no pecore_g head")]
    no_text = task.run(EvalModel("s", encoder, lambda p: encoder(p)["summary"]), EvalContext())
    assert no_text[0].value is None and "--text-weights" in no_text[0].reason


@pytest.mark.slow
def test_zeroshot_task_on_fashion_mnist_with_the_tiny_tower(tiny_config, tmp_path, fashion):
    from eupe.eval.tasks.catalog import get_task
    from eupe.models.students import create_student

    encoder = create_student("vit_t", test_scale=True)
    proj = torch.randn(encoder.dim, 32, generator=torch.Generator().manual_seed(0))
    model = EvalModel("s", encoder, lambda p: encoder(p)["summary"] @ proj)
    ctx = EvalContext(quick=True, cache_dir=tmp_path,
                      options={"zeroshot": {"text_weights": "random", "text_model": tiny_config, "limit": 40,
                                            "templates": "simple"}})
    first = get_task("zeroshot").run(model, ctx)
    assert [f.metric for f in first] == ["top1", "top5"]
    assert all(0.0 <= f.value <= 100.0 for f in first) and first[0].value <= first[1].value
    assert first[0].settings["classifier_cached"] is False and "random-init text tower" in first[0].data
    second = get_task("zeroshot").run(model, ctx)
    assert second[0].settings["classifier_cached"] is True
    assert [f.value for f in second] == [f.value for f in first]  # reproducible
