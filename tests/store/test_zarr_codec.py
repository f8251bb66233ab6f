"""Plain zarr reads a store's targets as features (the eupe.features codec), and what it cannot check."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from store_helpers import cache_main, run_extract, tiny_args

from eupe.store.codecs.registry import CODECS
from eupe.store.layout import StoreIntegrityError
from eupe.store.store import FeatureStore

TEACHER = "dinov3_hplus"
PLAIN_READ = r"""
import json, sys
import numpy as np
import zarr  # the only import: no eupe module is loaded until zarr meets the codec
assert not [m for m in sys.modules if m.startswith("eupe")]
out = {}
for store in json.loads(sys.argv[1]):
    for kind in ("summary", "patch"):
        a = zarr.open_array(f"{store}/teachers/dinov3_hplus/r64/{kind}", mode="r")
        out[f"{store}|{kind}"] = np.stack([a[i, v] for i in range(a.shape[0]) for v in range(a.shape[1])])
np.savez(sys.argv[2], **out)
"""


@pytest.fixture(scope="module")
def cli_store(tmp_path_factory, photo_shards) -> str:
    """12 images, 2 views, fp16, chunks of 2 images."""
    out = str(tmp_path_factory.mktemp("codec") / "s.zarr")
    assert run_extract(*tiny_args(photo_shards, out)) == 0
    return out


@pytest.mark.slow
def test_plain_zarr_decodes_every_codec_bit_for_bit_as_the_feature_store(tmp_path, photo_shards):
    stores = {}
    for name in CODECS.names():
        stores[name] = str(tmp_path / f"{name}.zarr")
        assert run_extract(*tiny_args(photo_shards, stores[name], "--codec", name, "--limit", "4")) == 0
    result = tmp_path / "plain.npz"
    subprocess.run([sys.executable, "-c", PLAIN_READ, json.dumps(list(stores.values())), str(result)], check=True,
                   cwd=tmp_path)
    plain = np.load(result)
    for name, path in stores.items():
        group = FeatureStore.open(path).teacher(TEACHER)
        for kind in ("summary", "patch"):
            want = np.stack([group.reader.targets(i, 64, v)[kind] for i in range(4) for v in range(2)])
            got = plain[f"{path}|{kind}"]
            assert got.dtype == np.float32 and got.shape == want.shape, (name, kind)
            assert want.any() and np.array_equal(got, want), (name, kind)  # bit for bit
    assert zarr.open_array(f"{stores['compact']}/teachers/{TEACHER}/r64/patch").shape == (4, 2, 4, 4, 64)


def _site_without_eupe(tmp_path: Path) -> Path:
    """A directory of links to every installed distribution except this package: a real environment in
    which zarr is installed and eupe is not."""
    site = Path(zarr.__file__).parents[1]
    farm = tmp_path / "site"
    farm.mkdir()
    for entry in site.iterdir():
        if entry.name.startswith(("eupe", "__editable__")) or entry.suffix == ".pth":
            continue
        (farm / entry.name).symlink_to(entry)
    return farm


def test_without_the_package_zarr_names_the_codec_and_the_store_names_the_package(tmp_path, cli_store):
    farm = _site_without_eupe(tmp_path)
    script = ("import sys; sys.path.insert(0, sys.argv[1]); import zarr\n"
              "g = zarr.open_group(sys.argv[2], mode='r')\n"
              "print(g['teachers/dinov3_hplus/r64'].attrs['decoding'])\n"
              "zarr.open_array(sys.argv[2] + '/teachers/dinov3_hplus/r64/patch', mode='r')")
    done = subprocess.run([sys.executable, "-S", "-c", script, str(farm), cli_store], capture_output=True, text=True,
                          cwd=tmp_path, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert done.returncode == 1
    assert "pip install eupe" in done.stdout and "'eupe.features'" in done.stdout
    assert done.stderr.strip().splitlines()[-1] == "zarr.errors.UnknownCodecError: Unknown codec: 'eupe.features'"


def _shard(store: str, chunk: int) -> Path:
    return Path(store) / "teachers" / TEACHER / "r64" / "patch" / "c" / str(chunk) / "0" / "0" / "0" / "0"


def test_a_tampered_chunk_is_caught_by_plain_zarr_and_the_project_a_swapped_one_only_by_the_project(
        tmp_path, cli_store):
    store = str(tmp_path / "t.zarr")
    shutil.copytree(cli_store, store)
    data = bytearray(_shard(store, 1).read_bytes())
    data[40] ^= 0xFF  # inside image 2's first view
    _shard(store, 1).write_bytes(bytes(data))
    patch = zarr.open_array(f"{store}/teachers/{TEACHER}/r64/patch", mode="r")
    with pytest.raises(ValueError, match="checksum"):  # zarr's crc32c codec
        patch[2, 0]
    group = FeatureStore.open(store).teacher(TEACHER)
    with pytest.raises(StoreIntegrityError, match=r"checksum mismatch in chunk \(2, 0\)"):  # the direct reader
        group.reader.targets(2, 64, 0)
    # what plain zarr cannot check: a self-consistent file in the wrong place (the store's manifest)
    shutil.copyfile(_shard(store, 3), _shard(store, 2))
    np.testing.assert_array_equal(patch[4], patch[6])  # zarr reads image 6's targets as image 4's
    with pytest.raises(StoreIntegrityError, match="chunk 2"):
        FeatureStore.open(store).teacher(TEACHER).reader.targets(4, 64, 0)


def _set_version(store: str, version: int) -> None:
    meta = json.loads((Path(store) / "zarr.json").read_text())
    meta["attributes"]["version"] = version
    (Path(store) / "zarr.json").write_text(json.dumps(meta))


def test_store_format_versions_end_in_one_error_line_naming_the_fix(tmp_path, cli_store, capsys):
    legacy = Path(__file__).parent / "data" / "format2.zarr"
    newer = str(tmp_path / "newer.zarr")
    shutil.copytree(cli_store, newer)
    _set_version(newer, 4)
    for store, wanted in ((str(legacy), f"eupe-cache upgrade {legacy} --out NEW_STORE"),
                          (newer, "newer eupe (store format 4; this eupe reads format 3): upgrade eupe")):
        capsys.readouterr()
        assert cache_main(["info", store]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("Error: ") and wanted in err[0], err
