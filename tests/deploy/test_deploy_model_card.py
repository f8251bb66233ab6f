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
