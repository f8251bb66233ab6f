"""docs/cache.md's notebook snippets run as written on a store made by eupe-cache extract."""

from __future__ import annotations

import re
from pathlib import Path

from store_helpers import run_extract

CACHE_DOC = Path(__file__).resolve().parents[2] / "docs" / "cache.md"


def notebook_snippet(index: int = 0) -> str:
    text = CACHE_DOC.read_text()
    section = text[text.index("## Inspecting a cache in a notebook"):]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)[index]


def test_cache_doc_notebook_snippets_run(tmp_path, photo_shards, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run_extract("--teacher", "dinov2s_imgfocus", "--test-scale", "--data", photo_shards,
                       "--out", "features.zarr", "--views", "2", "--limit", "6", "--num-workers", "0") == 0
    namespace: dict = {}
    exec(compile(notebook_snippet(), "docs/cache.md", "exec"), namespace)
    assert namespace["patch"].shape == (2, 16, 16, 64)  # [views, h, w, D] of the test-scale teacher
    assert namespace["keys"][namespace["row"]] in capsys.readouterr().out
    exec(compile(notebook_snippet(1), "docs/cache.md", "exec"), namespace)  # the notebook API and xarray
    assert namespace["s"].patch.shape == (16, 16, 64) and namespace["s"].key == namespace["key"]
    assert "views per image" in repr(namespace["store"])
