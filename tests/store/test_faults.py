"""Every fault-injection case of bench/faults.py, under pytest (issue: a store nobody can silently break).

Kill -9 at each stage then re-run, delete/swap/truncate chunk files, edit attributes, and the
user mistakes that used to delete data or train on zeros: each case asserts the guaranteed outcome.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location("faults", Path(__file__).parents[2] / "bench" / "faults.py")
faults = importlib.util.module_from_spec(_SPEC)
sys.modules["faults"] = faults  # dataclasses look their module up while the class is made
_SPEC.loader.exec_module(faults)


@pytest.fixture(scope="module")
def env(tmp_path_factory, photos, labelled_photos):
    return faults.make_env(tmp_path_factory.mktemp("faults"))


@pytest.mark.slow
@pytest.mark.parametrize("case", list(faults.CASES))
def test_fault_case(env, case):
    outcome, ok = faults.CASES[case](env)
    assert ok, f"{case}: {outcome}"
