"""benchmarks/gpu.sh: it stops at once without a GPU or with a missing import, each run gets a
fresh folder, and its dry run (CPU, tiny sizes) runs every stage, so that a typo in a stage
fails here rather than on the GPU machine."""

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


def _run(*args: str, timeout: float, shim: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHON"] = sys.executable  # the interpreter running the tests
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("PYTHONPATH", None)
    if shim is not None:
        env["PYTHONPATH"] = str(shim)
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
    assert not list((tmp_path / "bench").glob("*/steps.json"))  # nothing else ran


def _shapely_shim(tmp_path: Path) -> Path:
    """A folder that, first on PYTHONPATH, makes ``import shapely`` fail."""
    shim = tmp_path / "shim"
    (shim / "shapely").mkdir(parents=True)
    (shim / "shapely" / "__init__.py").write_text('raise ImportError("no shapely here")\n')
    return shim


def test_a_missing_import_is_refused_in_one_line_before_any_stage(tmp_path: Path) -> None:
    out, shim = tmp_path / "bench", _shapely_shim(tmp_path)
    for _ in range(2):
        result = _run("--dry-run", "--out", str(out), timeout=300, shim=shim)
        assert result.returncode != 0
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, result.stderr
        assert "missing imports: shapely (shapely: no shapely here)" in errors[0]
        assert "gpu_wheels.sh" in errors[0]
        assert "== steps" not in result.stdout
    runs = sorted(p for p in out.iterdir() if p.is_dir())
    assert len(runs) == 2  # each run had its own folder
    assert not list(out.glob("*/steps.json")) and not list(out.glob("*/check.json"))


def _wheel(folder: Path, package: str, init: str) -> Path:
    """A minimal pure-Python wheel holding ``package/__init__.py``."""
    import base64
    import hashlib
    import zipfile

    folder.mkdir(parents=True, exist_ok=True)
    info = f"{package}-0.0.dist-info"
    files = {
        f"{package}/__init__.py": init,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {package}\nVersion: 0.0\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{name},sha256={digest.decode()},{len(text.encode())}")
    record.append(f"{info}/RECORD,,")
    path = folder / f"{package}-0.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
        zf.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    return path


def test_wheels_are_installed_offline_and_come_first(tmp_path: Path) -> None:
    # a wheel whose shapely fails on import: the check must see the wheel's, not the venv's
    wheels = tmp_path / "wheels"
    _wheel(wheels, "shapely", 'raise ImportError("the carried wheel")\n')
    result = _run(
        "--dry-run", "--out", str(tmp_path / "bench"), "--wheels", str(wheels), timeout=300
    )
    assert result.returncode != 0
    assert "missing imports: shapely (shapely: the carried wheel)" in result.stderr


def test_an_empty_wheel_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "wheels").mkdir()
    result = _run(
        "--dry-run",
        "--out",
        str(tmp_path / "bench"),
        "--wheels",
        str(tmp_path / "wheels"),
        timeout=60,
    )
    assert result.returncode == 1 and "holds no .whl files" in result.stderr


def test_the_check_covers_every_runtime_dependency() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from gpu_bench import REQUIRED_IMPORTS
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["train"]]
    provided = " ".join(REQUIRED_IMPORTS.values()).replace("+", " ").split()
    for requirement in wanted:
        name = requirement.split(">")[0].split("=")[0].split("<")[0].strip().lower()
        assert name in provided, f"{name} is not checked by gpu.sh"


def test_unknown_option_is_refused(tmp_path: Path) -> None:
    result = _run("--fast", timeout=60)
    assert result.returncode == 2 and "unknown option --fast" in result.stderr


@pytest.mark.slow
def test_dry_run_runs_every_step_and_writes_the_json(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    result = _run("--dry-run", "--out", str(out), timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    merged = json.loads((run / "gpu_bench.json").read_text())
    steps = merged["steps"]
    assert list(steps) == [
        "tiny roi fp32",
        "tiny roi tf32",
        "tiny roi bf16",
        "tiny roi bf16+channels_last",
    ]
    assert steps["tiny roi tf32"]["steps_per_s"] is None  # TF32 is n/a on the CPU
    assert steps["tiny roi tf32"]["precision"] == "n/a"
    assert all(steps[k]["steps_per_s"] > 0 for k in steps if k != "tiny roi tf32")
    assert "bf16 autocast" in steps["tiny roi bf16"]["precision"]
    stages = merged["stages"]
    assert [s["stage"] for s in stages] == ["steps", "data", "train", "transfer", "demo"]
    assert all(s["status"] == "ok" for s in stages)
    for stage in ("steps", "data", "train", "transfer", "demo"):  # each sampler stopped and wrote
        busy = merged[f"busy_{stage}"]
        assert busy["source"] in ("none", "nvml", "nvidia-smi")
        assert busy["samples"] >= 0
    assert merged["train"]["steps"] >= 1
    transfer = merged["transfer"]
    assert transfer["slide_px"] == 1024 and transfer["tissue_windows"] > 0
    assert transfer["windows_per_s"] > 0
    assert set(merged["demo"]["scores"]["latest"]) == {"dice", "bac"}
    assert any(t["target"].startswith("1024 px slide") for t in merged["targets"])
    assert "== summary" in result.stdout


def test_train_step_rows_set_tf32_off_for_fp32_and_restore_it(monkeypatch) -> None:
    import torch

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import train_step

    fp32, tf32, _, _ = train_step.precision_settings(train_step.TINY, prefix="tiny roi")
    seen = []
    real = train_step._time_steps

    def spy(*args, **kwargs):
        seen.append((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32))
        return real(*args, **kwargs)

    monkeypatch.setattr(train_step, "_time_steps", spy)
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        cpu = torch.device("cpu")
        result = train_step.time_setting(fp32, device=cpu, steps=1, warmup=0)
        assert seen == [(False, False)]  # fp32 is true float32 while it is timed
        assert result["steps_per_s"] > 0 and result["precision"] == "float32"
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        assert train_step.time_setting(tf32, device=cpu, steps=1, warmup=0)["steps_per_s"] is None
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
