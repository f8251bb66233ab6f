"""examples/inspect_store.ipynb runs headless, every cell, on a small store (issue 19 item 4)."""

from __future__ import annotations

from pathlib import Path

import pytest

from store_helpers import run_extract, tiny_args

NOTEBOOK = Path(__file__).resolve().parents[2] / "examples" / "inspect_store.ipynb"


@pytest.mark.slow  # starts a kernel that imports torch (about 20-30 s on 2 busy cores)
def test_inspect_store_notebook_runs_every_cell(tmp_path, photo_shards, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("xarray")
    store = str(tmp_path / "s.zarr")
    assert run_extract(*tiny_args(photo_shards, store, "--limit", "4")) == 0
    monkeypatch.setenv("EUPE_STORE", store)
    monkeypatch.setenv("EUPE_TEST_SCALE", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()  # CellExecutionError if a cell fails
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "\n".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", "")) for o in outputs)
    assert "FeatureStore" in text and "2 views per image" in text and "per-token cosine mean 1.0" in text
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 1  # the views and their PCA maps
