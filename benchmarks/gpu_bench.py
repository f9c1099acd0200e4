"""The steps of ``benchmarks/gpu.sh``: each measures one thing and writes ``WORK/<step>.json``.

Steps (``python benchmarks/gpu_bench.py STEP --work DIR [--dry-run]``):

- ``check``: fail in one line, before any stage runs, when an import the stages need is
  missing (the wheels of ``benchmarks/gpu_wheels.sh`` not installed), when torch is older than
  2.3, or when no CUDA GPU is visible (unless ``--dry-run``);
- ``steps``: paper-size training steps per second (roi, batch 8, 256 px, 6 blocks) in fp32
  (TF32 off), TF32, bf16 and bf16 + channels_last (on the CPU the TF32 row is n/a);
- ``data``: synthetic H&E (with contours) and IHC slides, 256 px tiles, both cell libraries;
- ``train``: ``histolib train`` at the paper's size with ``--amp`` for ``--minutes`` (1.5), and
  its metrics (steps, steps/s, last losses);
- ``transfer``: a 20,000 x 20,000 px synthetic slide restained with the trained checkpoint by
  the code ``histolib transfer`` runs: seconds, windows/s, peak GPU memory and the share of
  the wall time spent in the generator;
- ``demo``: ``histolib demo --device cuda``;
- ``busy``: samples the GPU's utilisation (NVML through ``pynvml``, else ``nvidia-smi``) until
  SIGTERM and writes ``busy_<stage>.json`` (mean utilisation and sample count); ``gpu.sh``
  runs one beside each stage;
- ``report``: every figure in one JSON and a table with the issue's targets.

``--dry-run`` runs every step on the CPU at tiny sizes (seconds), so that a typo fails CI.
"""

from __future__ import annotations

import argparse
import csv
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PAPER_TILE = 256


def _write(work: Path, step: str, data: dict[str, Any]) -> None:
    work.mkdir(parents=True, exist_ok=True)
    (work / f"{step}.json").write_text(json.dumps(data, indent=2, default=str))
    print(json.dumps({step: data}, indent=2, default=str), flush=True)


def _histolib(*args: str) -> float:
    """Run the ``histolib`` CLI (this interpreter's); returns the seconds it took."""
    start = time.perf_counter()
    command = [sys.executable, "-m", "histolib_cli.main", *args]
    print("$ histolib " + " ".join(args), flush=True)
    subprocess.run(command, check=True)
    return time.perf_counter() - start


def _device(args: argparse.Namespace) -> str:
    return "cpu" if args.dry_run else "cuda"


#: What the stages import, by import name, with the distribution that provides it: the
#: dependencies of pyproject.toml, pyproj (geopandas'), and the train extra (torch,
#: torchvision: the image's own, never carried as wheels).
REQUIRED_IMPORTS = {
    "openslide": "openslide-python + openslide-bin",
    "pyvips": "pyvips + pyvips-binary + cffi",
    "numpy": "numpy",
    "scipy": "scipy",
    "skimage": "scikit-image",
    "shapely": "shapely",
    "geopandas": "geopandas",
    "pyproj": "pyproj",
    "pyarrow": "pyarrow",
    "networkx": "networkx",
    "typer": "typer",
    "rich": "rich",
    "yaml": "pyyaml",
    "PIL": "pillow",
    "defusedxml": "defusedxml",
    "torch": "torch",
    "torchvision": "torchvision",
    "histolib": "this repository",
    "histolib_train": "this repository",
    "histolib_cli.main": "this repository",
}


def missing_imports() -> list[str]:
    """``name (distribution)`` of each :data:`REQUIRED_IMPORTS` entry that fails to import."""
    import importlib

    missing = []
    for name, dist in REQUIRED_IMPORTS.items():
        try:
            importlib.import_module(name)
        except Exception as exc:  # ImportError, or OSError from a missing shared library
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            missing.append(f"{name} ({dist}: {reason})")
    return missing


def step_check(args: argparse.Namespace) -> None:
    missing = missing_imports()
    if missing:
        sys.exit(
            "error: benchmarks/gpu.sh: missing imports: "
            + "; ".join(missing)
            + " (fetch the wheels with benchmarks/gpu_wheels.sh, run gpu.sh --wheels .whl)"
        )
    import torch

    version = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2])
    if version < (2, 3):
        sys.exit(f"error: benchmarks/gpu.sh needs torch >= 2.3; this image has {torch.__version__}")
    if args.dry_run:
        _write(args.work, "check", {"device": "cpu (dry run)", "torch": torch.__version__})
        return
    if not torch.cuda.is_available():
        sys.exit(
            "error: benchmarks/gpu.sh needs a CUDA GPU and torch built with CUDA; "
            f"torch {torch.__version__} sees none (use --dry-run to check the script on a CPU)"
        )
    props = torch.cuda.get_device_properties(0)
    _write(
        args.work,
        "check",
        {
            "device": props.name,
            "capability": f"{props.major}.{props.minor}",
            "memory_gib": round(props.total_memory / 2**30, 1),
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
        },
    )


def step_steps(args: argparse.Namespace) -> None:
    import torch

    sys.path.insert(0, str(HERE))
    from train_step import PAPER, TINY, precision_settings, run_settings

    if args.dry_run:
        timed = [(s, 1, 0) for s in precision_settings(TINY, prefix="tiny roi")]
    else:
        torch.backends.cudnn.benchmark = True
        timed = [(s, 10, 3) for s in precision_settings(PAPER, prefix="paper roi")]
    results = run_settings(timed, device=torch.device(_device(args)))
    _write(args.work, "steps", results)


def step_data(args: argparse.Namespace) -> None:
    from histolib.core.parallel import default_workers
    from histolib.library.build import build_library
    from histolib.synthetic.slides import make_slide
    from histolib.tiling.options import TilingOptions
    from histolib.tiling.tiler import tile_slides

    side, tile = (1024, 128) if args.dry_run else (6144, PAPER_TILE)
    workers = default_workers()
    data, start = args.work / "data", time.perf_counter()
    out: dict[str, Any] = {}
    for stain, seed in (("he", 0), ("ihc", 1)):
        slide = make_slide(
            data / "slides",
            name=f"{stain}_bench",
            stain=stain,
            width=side,
            height=side,
            seed=seed,
            workers=workers,
        )
        extra = {"annotations": slide.annotations_path} if stain == "he" else {}
        manifest = tile_slides(
            slide.slide_path,
            out=data / f"tiles_{stain}",
            options=TilingOptions(stain=stain, size=tile),
            workers=workers,
            progress=False,
            **extra,
        )
        library = build_library(
            manifest=manifest,
            stain=stain,
            out=data / f"library_{stain}.parquet",
            workers=workers,
            progress=False,
        )
        out[stain] = {"manifest": str(manifest), "library": str(library)}
    out["seconds"] = time.perf_counter() - start
    _write(args.work, "data", out)


def _read_metrics(run: Path) -> dict[str, Any]:
    """Steps done (the checkpoint's), training seconds and the last logged losses."""
    from histolib_train.checkpoint import load_checkpoint

    steps = int(load_checkpoint(run)["step"])
    with (run / "metrics.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    out: dict[str, Any] = {"steps": steps}
    if rows:
        last = rows[-1]
        out["last_logged"] = {k: float(v) for k, v in last.items() if v and k != "epoch"}
        elapsed = float(last.get("elapsed_s") or 0)
        if elapsed > 0:
            out["steps_per_s"] = int(last["step"]) / elapsed
    return out


def step_train(args: argparse.Namespace) -> None:
    from histolib.core.parallel import default_workers

    data = json.loads((args.work / "data.json").read_text())
    run = args.work / "run"
    sizes = (
        ["--n-blocks", "1", "--ngf", "8", "--ndf", "8", "--batch-size", "2"]
        if args.dry_run
        else ["--n-blocks", "6", "--ngf", "64", "--ndf", "64", "--batch-size", "8", "--amp"]
    )
    minutes = 0.05 if args.dry_run else args.minutes
    seconds = _histolib(
        "train",
        "--he",
        data["he"]["manifest"],
        "--ihc",
        data["ihc"]["manifest"],
        "--he-library",
        data["he"]["library"],
        "--ihc-library",
        data["ihc"]["library"],
        "--out",
        str(run),
        "--model",
        "roi",
        *sizes,
        "--epochs",
        "20",
        "--steps-per-epoch",
        "200",
        "--max-minutes",
        str(minutes),
        "--device",
        _device(args),
        "--workers",
        str(min(4, default_workers())),
        "--sample-every",
        "100000",
        "--log-every",
        "1" if args.dry_run else "10",
    )
    metrics = _read_metrics(run)
    metrics.update(seconds=seconds, minutes=minutes, run=str(run))
    metrics.setdefault("steps_per_s", metrics["steps"] / (minutes * 60))
    _write(args.work, "train", metrics)


def _nvidia_smi_utilization() -> float:
    out = subprocess.run(
        ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-i", "0"],
        capture_output=True,
        text=True,
        timeout=5,
        check=True,
    )
    return float(out.stdout.strip().splitlines()[0])


def utilisation_reader() -> tuple[str, Callable[[], float], float] | None:
    """``(source, read, every_s)`` for GPU 0's utilisation in percent: NVML through
    ``pynvml`` (every 0.1 s), else ``nvidia-smi`` (every 0.25 s); None when neither answers."""
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)

        def read() -> float:
            return float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)

        read()
        return "nvml", read, 0.1
    except Exception:  # no pynvml, no driver, no GPU: try nvidia-smi
        pass
    try:
        _nvidia_smi_utilization()
    except Exception:  # no nvidia-smi either
        return None
    return "nvidia-smi", _nvidia_smi_utilization, 0.25


def busy_summary(source: str, samples: list[float], every: float) -> dict[str, Any]:
    """The GPU busy figure of a stage: the mean utilisation (percent) and the sample count."""
    return {
        "source": source,
        "samples": len(samples),
        "every_s": every,
        "mean_utilization_pct": sum(samples) / len(samples) if samples else None,
    }


def step_busy(args: argparse.Namespace) -> None:
    """Sample until SIGTERM, then write ``busy_<stage>.json``."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    reader = utilisation_reader()
    samples: list[float] = []
    if reader is None:
        while not stop.wait(0.5):
            pass
        summary = busy_summary("none", samples, 0.0)
    else:
        source, read, every = reader
        while not stop.wait(every):
            try:
                samples.append(read())
            except Exception:  # the source went away: keep what was sampled
                break
        while not stop.wait(0.5):
            pass
        summary = busy_summary(source, samples, every)
    _write(args.work, f"busy_{args.stage}", summary)


def step_transfer(args: argparse.Namespace) -> None:
    import torch

    from histolib.core.parallel import default_workers
    from histolib.synthetic.slides import make_slide
    from histolib_train.transfer.generator import load_transfer_generator
    from histolib_train.transfer.slide import transfer_slide

    side = 1024 if args.dry_run else 20000
    slide = make_slide(
        args.work / "transfer",
        name=f"slide_{side}",
        width=side,
        height=side,
        seed=7,
        workers=default_workers(),
    )
    cuda = not args.dry_run
    generator, _ = load_transfer_generator(args.work / "run", device=_device(args))
    if cuda:
        generator(np_batch(8))  # CUDA context and kernels: not the slide's time
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    result = transfer_slide(
        slide.slide_path,
        generator,
        out=args.work / "transfer" / "virtual.tif",
        mpp=0.5,
        batch_size=args.batch_size,
        overwrite=True,
    )
    t = result.timings
    out = {
        "slide_px": side,
        "seconds": t["wall"],
        "windows": result.windows,
        "tissue_windows": result.tissue_windows,
        "windows_per_s": result.tissue_windows / t["wall"],
        "timings": t,
        "generator_share": t["inference"] / t["wall"],
        "batch_size": args.batch_size,
    }
    if cuda:
        out["peak_gpu_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
    _write(args.work, "transfer", out)


def np_batch(n: int) -> Any:
    import numpy as np

    return np.full((n, 256, 256, 3), 200, np.uint8)


def step_demo(args: argparse.Namespace) -> None:
    folder = args.work / "demo"
    options = ["--minutes", "0.1", "--slide-size", "768"] if args.dry_run else ["--minutes", "1"]
    seconds = _histolib("demo", "--out", str(folder), "--device", _device(args), *options)
    summary = json.loads((folder / "evaluation" / "summary.json").read_text())
    scores = {
        name: {m: r["all"][m]["mean"] for m in ("dice", "bac")}
        for name, r in summary["checkpoints"].items()
    }
    _write(args.work, "demo", {"seconds": seconds, "scores": scores, "report": str(folder)})


def _targets(parts: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """The issue's targets: (what, measured, met)."""
    rows: list[tuple[str, str, bool | None]] = []
    steps = parts.get("steps", {})
    best = [v for k, v in steps.items() if k.endswith("bf16+channels_last")]
    if best and best[0].get("speedup_vs_first") is not None:
        speed = best[0]["speedup_vs_first"]
        rows.append(
            ("bf16 + channels_last >= 2x fp32 (TF32 off) steps/s", f"{speed:.2f}x", speed >= 2)
        )
    transfer = parts.get("transfer", {})
    if "seconds" in transfer:
        sec = transfer["seconds"]
        rows.append((f"{transfer['slide_px']} px slide < 30 s", f"{sec:.1f} s", sec < 30))
    busy = parts.get("busy_transfer", {}).get("mean_utilization_pct")
    if busy is not None:
        rows.append(("GPU busy >= 80 % of the transfer stage", f"{busy:.0f} %", busy >= 80))
    return rows


def _stage_times(work: Path) -> list[dict[str, Any]]:
    """gpu.sh's ``stages.tsv`` (stage, limit s, seconds, status) with each stage's slack."""
    path = work / "stages.tsv"
    rows = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        stage, limit, seconds, status = line.split("\t")
        rows.append(
            {
                "stage": stage,
                "limit": int(limit),
                "seconds": int(seconds),
                "status": status,
                "slack": 1 - int(seconds) / int(limit),
            }
        )
    return rows


def step_report(args: argparse.Namespace) -> None:
    parts = {}
    names = ("check", "steps", "data", "train", "transfer", "demo")
    for step in (*names, *(f"busy_{n}" for n in names[1:])):
        path = args.work / f"{step}.json"
        parts[step] = json.loads(path.read_text()) if path.is_file() else {"missing": True}
    parts["targets"] = [
        {"target": what, "measured": value, "met": met} for what, value, met in _targets(parts)
    ]
    out = Path(args.json) if args.json else args.work / "gpu_bench.json"
    parts["stages"] = _stage_times(args.work)
    out.write_text(json.dumps(parts, indent=2, default=str))
    print(f"\n== summary ({parts['check'].get('device', '?')}) -> {out}")
    parts["stages"] = _stage_times(args.work)
    for name, res in parts["steps"].items():
        if isinstance(res, dict) and "precision" in res:
            rate = res.get("steps_per_s")
            shown = f"{rate:7.2f} steps/s" if rate is not None else "    n/a"
            print(f"  {name:36s} {shown}  ({res['precision']})")
    for row in parts["stages"]:
        busy = parts.get(f"busy_{row['stage']}", {})
        mean = busy.get("mean_utilization_pct")
        gpu = (
            f"GPU busy {mean:.0f} % ({busy['samples']} samples, {busy['source']})"
            if mean is not None
            else "GPU busy: no samples"
        )
        print(
            f"  stage {row['stage']:9s} {row['seconds']:4d} s of {row['limit']:4d} s "
            f"(slack {row['slack']:.0%}) {row['status']:7s} {gpu}"
        )
    for step in ("train", "transfer", "demo"):
        res = parts[step]
        if "missing" in res:
            print(f"  {step}: MISSING (the step failed or did not run)")
    if "steps" in parts["train"]:
        train = parts["train"]
        print(f"  histolib train: {train['steps']} steps in {train['minutes']} min")
    if "seconds" in parts["transfer"]:
        t = parts["transfer"]
        print(
            f"  transfer {t['slide_px']} px: {t['seconds']:.1f} s, {t['windows_per_s']:.1f} "
            f"windows/s, generator {t['generator_share']:.0%} of the time"
        )
    for row in parts["targets"]:
        print(f"  target {row['target']}: {row['measured']} ({'met' if row['met'] else 'NOT met'})")


STEPS = {
    "check": step_check,
    "steps": step_steps,
    "data": step_data,
    "train": step_train,
    "transfer": step_transfer,
    "demo": step_demo,
    "busy": step_busy,
    "report": step_report,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=sorted(STEPS))
    parser.add_argument("--work", type=Path, default=Path("gpu-bench"), help="outputs here")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes")
    parser.add_argument("--minutes", type=float, default=1.5, help="training budget")
    parser.add_argument("--stage", default="stage", help="busy: the stage it samples beside")
    parser.add_argument("--batch-size", type=int, default=32, help="transfer windows a call")
    parser.add_argument("--json", default=None, help="report: where the merged JSON goes")
    args = parser.parse_args()
    STEPS[args.step](args)


if __name__ == "__main__":
    main()
