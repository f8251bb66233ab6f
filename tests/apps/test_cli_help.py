"""Every application prints useful help; eupe-cache teachers lists teachers and local weights."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from eupe.cache_tools.cli import main as cache_main
from eupe.evaluation.cli import main as eval_main
from eupe.export.cli import main as export_main
from eupe.train.cli import main as train_main


@pytest.mark.parametrize("main,words", [
    (cache_main, "Teacher-feature cache"), (train_main, "--stage"),
    (export_main, "--format"), (eval_main, "kNN"),
])
def test_help(main, words, capsys):
    assert main(["--help"]) == 0
    assert words in capsys.readouterr().out


def test_teachers_json_lists_all_and_finds_the_offline_weights(capsys):
    assert cache_main(["teachers", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert {"dinov3_hplus", "pecore_g", "pelang_g", "siglip2_g", "pe_spatial_g", "effnet_lite0",
            "dinov2s_imgfocus", "proxy"} <= set(rows)
    assert rows["effnet_lite0"]["weights"].endswith("efficientnet-lite0-57934424.pth")
    assert rows["dinov2s_imgfocus"]["weights"].endswith("vit_s_focus.onnx")
    assert rows["pecore_g"]["summary"] == "attn_pool_proj" and rows["pecore_g"]["patch_size"] == 14
    assert (rows["pecore_g"]["summary_dim"], rows["pecore_g"]["patch_dim"]) == (1280, 1536)


def test_console_script_runs_as_installed():
    out = subprocess.run([sys.executable, "-c", "import sys; from eupe.cache_tools.cli import main; sys.exit(main(['teachers']))"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "effnet_lite0" in out.stdout and "missing" in out.stdout


def test_cache_cli_codec_lists_are_the_registry(capsys):
    from eupe.cache_tools import commands
    from eupe.store.codecs.registry import codec_names

    names = codec_names()
    codec_help = next(p for p in commands.extract.params if p.name == "codec").help
    assert [n for n in codec_help.replace(",", " ").split() if n in names] == names  # every one, in order
    assert cache_main(["extract", "--help"]) == 0
    assert " ".join(codec_help.split()) in " ".join(capsys.readouterr().out.split())
    plan_default = next(p for p in commands.plan.params if p.name == "codecs").default
    assert plan_default == ",".join(names)
    assert cache_main(["plan", "--help"]) == 0
    assert f"[default: {plan_default}]" in " ".join(capsys.readouterr().out.split())
