"""benchmarks/gpu.sh: it stops at once without a GPU, and its dry run (CPU, tiny sizes) runs
every step, so that a typo in a step fails here rather than on the GPU machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu.sh"


def _run(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    # The script calls `python`: the interpreter running the tests.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])]
    )
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )


def test_without_a_gpu_it_stops_at_once_with_a_clear_message(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present: the script would run")
    result = _run("--out", str(tmp_path / "bench"), timeout=120)
    assert result.returncode != 0
    assert "needs a CUDA GPU" in result.stderr
    assert "--dry-run" in result.stderr
    assert not (tmp_path / "bench" / "steps.json").exists()  # nothing else ran


def test_unknown_option_is_refused(tmp_path: Path) -> None:
    result = _run("--fast", timeout=60)
    assert result.returncode == 2 and "unknown option --fast" in result.stderr


@pytest.mark.slow
def test_dry_run_runs_every_step_and_writes_the_json(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    result = _run("--dry-run", "--out", str(out), timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    merged = json.loads((out / "gpu_bench.json").read_text())
    steps = merged["steps"]
    assert set(steps) == {
        "tiny roi fp32",
        "tiny roi fp32+channels_last",
        "tiny roi bf16",
        "tiny roi bf16+channels_last",
    }
    assert all(s["steps_per_s"] > 0 for s in steps.values())
    assert "bf16 autocast" in steps["tiny roi bf16"]["precision"]
    assert merged["train"]["steps"] >= 1
    transfer = merged["transfer"]
    assert transfer["slide_px"] == 1024 and transfer["tissue_windows"] > 0
    assert transfer["windows_per_s"] > 0
    assert set(merged["demo"]["scores"]["latest"]) == {"dice", "bac"}
    assert any(t["target"].startswith("1024 px slide") for t in merged["targets"])
    assert "== summary" in result.stdout
