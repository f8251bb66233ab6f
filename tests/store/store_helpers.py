"""Helpers shared by the feature-store tests: run the CLI, compare stores."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys

import numpy as np
import zarr

from eupe.cache_tools.cli import main as cache_main


def run_extract(*args: str) -> int:
    return cache_main(["extract", *args])


def tiny_args(data: str, out: str, *extra: str) -> list[str]:
    """Arguments for a fast CPU extraction with a test-scale teacher."""
    return ["--teacher", "dinov3_hplus", "--test-scale", "--data", data, "--out", out, "--views", "2",
            "--resolution", "64", "--images-per-chunk", "2", "--num-workers", "0", "--codec", "fp16", *extra]


def teacher_arrays(path: str, teacher: str) -> dict[str, np.ndarray]:
    """Every array of a teacher group, by path (for exact comparisons between runs)."""
    group = zarr.open_group(path, mode="r")[f"teachers/{teacher}"]
    out = {}

    def walk(g, prefix):
        for name, arr in g.arrays():
            out[f"{prefix}{name}"] = arr[:]
        for name, sub in g.groups():
            walk(sub, f"{prefix}{name}/")

    walk(group, "")
    return out


def cli_subprocess(args: list[str], **kwargs) -> subprocess.Popen:
    code = "import sys; from eupe.cache_tools.cli import main; sys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "OMP_NUM_THREADS": "1", **kwargs.pop("env", {})}
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env, **kwargs)


def cache_json_rc(args: list[str]) -> tuple[int, dict]:
    """Exit status and parsed JSON output of an eupe-cache command run in-process."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        rc = cache_main(args)
    return rc, json.loads(buffer.getvalue())


def cache_json(args: list[str]) -> dict:
    rc, data = cache_json_rc(args)
    assert rc == 0
    return data
