"""`eupe-train --help` answers in well under a second: no torch/timm/accelerate at import or for help."""

from __future__ import annotations

import subprocess
import sys
import time


def test_help_is_fast_and_imports_no_heavy_library():
    code = ("import sys; from eupe.train.cli import main; rc = main(['--help']); "
            "heavy = sorted(m for m in ('torch', 'timm', 'accelerate', 'zarr') if m in sys.modules); "
            "print('HEAVY', heavy); sys.exit(rc)")
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    elapsed = time.perf_counter() - t0
    assert done.returncode == 0, done.stderr
    assert "Usage: eupe-train" in done.stdout and "--stage" in done.stdout
    assert "HEAVY []" in done.stdout
    assert elapsed < 3.0, f"eupe-train --help took {elapsed:.1f} s"


def test_usage_errors_stay_one_clean_message_without_heavy_imports():
    done = subprocess.run([sys.executable, "-m", "eupe.train.cli"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "Error: Missing option '--stage'." in done.stderr
    assert "Traceback" not in done.stderr
