"""eupe-demo's plumbing: per-step wall/CPU times, the final table, the OpenMP wait policy."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from eupe.demo.run import Demo, timing_table


def test_step_records_wall_and_cpu_seconds_and_prints_them(tmp_path, capsys):
    demo = Demo(tmp_path, scale=1.0, knn_limit=20)

    def busy() -> int:
        end = time.process_time() + 0.05
        while time.process_time() < end:
            pass
        return 7

    assert demo.step("busy", busy) == 7
    assert demo.step("sleep", lambda: time.sleep(0.05)) is None
    assert demo.timings["busy"] >= 0.05 and demo.cpu["busy"] >= 0.05
    assert demo.timings["sleep"] >= 0.05 and demo.cpu["sleep"] < 0.04  # sleeping costs no CPU
    printed = capsys.readouterr().out
    assert f"== busy: {demo.timings['busy']:.1f} s ({demo.cpu['busy']:.1f} s CPU)" in printed
    table = timing_table(demo).splitlines()
    assert table[0] == "time per step:" and table[1].startswith("busy") and table[2].startswith("sleep")
    assert f"{demo.timings['busy'] + demo.timings['sleep']:7.1f} s" in table[3] and table[3].startswith("total")


def _policy(env: dict[str, str]) -> str:
    """The policy eupe-demo leaves, checking that torch (and its OpenMP runtime) loads only after it is set."""
    code = ("import os, sys, eupe.demo; assert 'torch' not in sys.modules; "
            "import eupe.demo.run; print(os.environ['OMP_WAIT_POLICY'])")
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120, check=True).stdout.strip()


def test_demo_makes_idle_openmp_threads_sleep_unless_told_otherwise():
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    assert _policy(env) == "PASSIVE"
    assert _policy({**env, "OMP_WAIT_POLICY": "ACTIVE"}) == "ACTIVE"
