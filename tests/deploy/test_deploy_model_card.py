"""Model cards: training facts from the student file's info, Markdown + JSON, updates merge."""

from __future__ import annotations

import json

from deploy_helpers import INFO

from eupe.deploy.model_card import build_card, training_facts, write_model_card

STUDENT = {"name": "vit_t", "timm_name": "vit_tiny_patch16_dinov3_qkvb", "weights_sha256": "abc", "description": "d"}


def test_training_facts_from_info():
    facts = training_facts(INFO)
    assert facts["stage"] == 2 and facts["teachers"] == ["proxy"]
    assert facts["data"]["store"] == "cache/photos" and facts["metrics"] == {"knn_top1": 0.42}
    assert facts["stages"] == [{"stage": 2, "config": INFO["config"]}]
    assert training_facts({})["teachers"] == [] and training_facts({})["stages"] == []


def test_card_written_and_updated(tmp_path):
    first = build_card(STUDENT, INFO, [{"artifact": "model.safetensors", "format": "safetensors"}],
                       [{"artifact": "model.safetensors", "passed": True}], [], "machine A")
    md, js = write_model_card(tmp_path, first)
    second = build_card(STUDENT, INFO, [{"artifact": "model_64.pte", "format": "executorch", "resolution": 64}],
                        [{"artifact": "model_64.pte", "resolution": 64, "passed": True}],
                        [{"program": "fp32", "resolution": 64, "pte_ms": 1.5}], "machine B")
    write_model_card(tmp_path, second)
    card = json.loads(js.read_text())
    assert [a["artifact"] for a in card["artifacts"]] == ["model.safetensors", "model_64.pte"]
    assert len(card["parity"]) == 2 and card["latency"][0]["pte_ms"] == 1.5 and card["machine"] == "machine B"
    text = md.read_text()
    assert "\n# vit_t\n" in text and "`vit_t` student (`vit_tiny_patch16_dinov3_qkvb`)" in text and "- teachers: proxy" in text
    assert '"knn_top1": 0.42' in text and "| model_64.pte | executorch | 64 |" in text


def test_tolerant_readers_skip_torn_and_foreign_lines(tmp_path):
    from eupe.deploy.model_card import evaluations, final_losses, read_jsonl

    (tmp_path / "losses.jsonl").write_text('{"step": 4, "total": 1.0, "a/loss": 0.25, "b/loss": 0.75, "lr": 0.1}\n'
                                           '[1, 2]\n{"step": 3, "total": 9.0}\n{"step": 5, "tot')
    assert final_losses(tmp_path) == {"step": 4, "total": 1.0, "teachers": {"a": {"loss": 0.25}, "b": {"loss": 0.75}}}
    assert final_losses(tmp_path / "missing") == {} and read_jsonl(tmp_path / "missing.jsonl") == []
    good = {"task": "knn", "metric": "top1@20", "value": 71.2, "data": "d", "command": "eupe-eval knn --model run",
            "fingerprint": "abc"}
    (tmp_path / "evaluations.jsonl").write_text("\n".join([json.dumps(good), '{"metric": "no task"}', "not json",
                                                           json.dumps({**good, "fingerprint": "zzz", "value": None})]))
    rows = evaluations(tmp_path, "abcdef")
    assert [(r["value"], r["this_weights"]) for r in rows] == [(71.2, True), (None, False)]
    assert rows[0]["command"] == "eupe-eval knn --model run" and rows[0]["reason"] is None


def test_the_card_holds_no_absolute_path(tmp_path, monkeypatch):
    from eupe.deploy.model_card import relative_paths

    monkeypatch.chdir(tmp_path)
    value = {"store": str(tmp_path / "cache" / "x.zarr"), "shards": ["/elsewhere/data/photos-{0..3}.tar", "rel/a.tar"],
             "remote": "s3://bucket/x.zarr", "n": 3}
    assert relative_paths(value) == {"store": "cache/x.zarr", "shards": ["photos-{0..3}.tar", "rel/a.tar"],
                                     "remote": "s3://bucket/x.zarr", "n": 3}
