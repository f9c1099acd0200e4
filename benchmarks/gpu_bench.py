"""The steps of ``benchmarks/gpu.sh``: each measures one thing and writes ``WORK/<step>.json``.

Steps (``python benchmarks/gpu_bench.py STEP --work DIR [--dry-run]``):

- ``check``: fail fast, with a clear message, when no CUDA GPU is visible;
- ``steps``: paper-size training steps per second (roi, batch 8, 256 px, 6 blocks) in fp32,
  fp32 + channels_last, AMP (bf16 from compute capability 8.0) and AMP + channels_last;
- ``data``: synthetic H&E (with contours) and IHC slides, 256 px tiles, both cell libraries;
- ``train``: ``histolib train`` at the paper's size with ``--amp`` for ``--minutes`` (2), and
  its metrics (steps, steps/s, last losses);
- ``transfer``: a 20,000 x 20,000 px synthetic slide restained with the trained checkpoint by
  the code ``histolib transfer`` runs: seconds, windows/s, peak GPU memory, the GPU busy
  fraction (NVML samples every 0.1 s, when available) and the share of the wall time spent in
  the generator;
- ``demo``: ``histolib demo --device cuda``;
- ``report``: every figure in one JSON and a table with the issue's targets.

``--dry-run`` runs every step on the CPU at tiny sizes (seconds), so that a typo fails CI.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import threading
import time
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


def step_check(args: argparse.Namespace) -> None:
    import torch

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
        settings = precision_settings(TINY, prefix="tiny roi", amp_dtype="bf16")
        timed = [(s, 1, 0) for s in settings]
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
            data / "slides", name=f"{stain}_bench", stain=stain, width=side, height=side,
            seed=seed, workers=workers,
        )
        extra = {"annotations": slide.annotations_path} if stain == "he" else {}
        manifest = tile_slides(
            slide.slide_path, out=data / f"tiles_{stain}",
            options=TilingOptions(stain=stain, size=tile), workers=workers, progress=False,
            **extra,
        )
        library = build_library(
            manifest=manifest, stain=stain, out=data / f"library_{stain}.parquet",
            workers=workers, progress=False,
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
        "train", "--he", data["he"]["manifest"], "--ihc", data["ihc"]["manifest"],
        "--he-library", data["he"]["library"], "--ihc-library", data["ihc"]["library"],
        "--out", str(run), "--model", "roi", *sizes, "--epochs", "20",
        "--steps-per-epoch", "200", "--max-minutes", str(minutes), "--device",
        _device(args), "--workers", str(min(4, default_workers())), "--sample-every", "100000",
        "--log-every", "1" if args.dry_run else "10",
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


class _Busy:
    """Samples the GPU's utilisation in a thread: NVML through torch every 0.1 s, else
    ``nvidia-smi`` every 0.25 s, else nothing (the report then has the generator's share)."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self.source = "none"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import torch

        for source, read, every in (
            ("nvml", torch.cuda.utilization, 0.1),
            ("nvidia-smi", _nvidia_smi_utilization, 0.25),
        ):
            try:
                read()
            except Exception:  # this source is missing here: try the next
                continue
            self.source = source
            while not self._stop.wait(every):
                try:
                    self.samples.append(float(read()))
                except Exception:  # the source went away: keep what was sampled
                    return
            return

    def __enter__(self) -> _Busy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def step_transfer(args: argparse.Namespace) -> None:
    import torch

    from histolib.core.parallel import default_workers
    from histolib.synthetic.slides import make_slide
    from histolib_train.transfer.generator import load_transfer_generator
    from histolib_train.transfer.slide import transfer_slide

    side = 1024 if args.dry_run else 20000
    slide = make_slide(
        args.work / "transfer", name=f"slide_{side}", width=side, height=side, seed=7,
        workers=default_workers(),
    )
    cuda = not args.dry_run
    generator, _ = load_transfer_generator(args.work / "run", device=_device(args))
    if cuda:
        generator(np_batch(8))  # CUDA context and kernels: not the slide's time
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    with _Busy() if cuda else _NoBusy() as busy:
        result = transfer_slide(
            slide.slide_path, generator, out=args.work / "transfer" / "virtual.tif",
            mpp=0.5, batch_size=args.batch_size, overwrite=True,
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
    if busy.samples:
        out["gpu_busy_fraction"] = sum(s > 0 for s in busy.samples) / len(busy.samples)
        out["gpu_utilization_mean"] = sum(busy.samples) / len(busy.samples) / 100
        out["gpu_busy_source"] = busy.source
    _write(args.work, "transfer", out)


class _NoBusy:
    """No sampling (the CPU dry run)."""

    def __init__(self) -> None:
        self.samples: list[float] = []

    def __enter__(self) -> _NoBusy:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


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
    best = [v for k, v in steps.items() if k.endswith("+channels_last") and "fp32" not in k]
    if best and "speedup_vs_first" in best[0]:
        speed = best[0]["speedup_vs_first"]
        rows.append(("AMP + channels_last >= 2x fp32 steps/s", f"{speed:.2f}x", speed >= 2))
    transfer = parts.get("transfer", {})
    if transfer:
        sec = transfer["seconds"]
        rows.append((f"{transfer['slide_px']} px slide < 30 s", f"{sec:.1f} s", sec < 30))
        if "gpu_busy_fraction" in transfer:
            busy = transfer["gpu_busy_fraction"]
            rows.append(("GPU busy >= 80 % of the transfer", f"{busy:.0%}", busy >= 0.8))
    return rows


def step_report(args: argparse.Namespace) -> None:
    parts = {}
    for step in ("check", "steps", "data", "train", "transfer", "demo"):
        path = args.work / f"{step}.json"
        parts[step] = json.loads(path.read_text()) if path.is_file() else {"missing": True}
    parts["targets"] = [
        {"target": what, "measured": value, "met": met} for what, value, met in _targets(parts)
    ]
    out = Path(args.json) if args.json else args.work / "gpu_bench.json"
    out.write_text(json.dumps(parts, indent=2, default=str))
    print(f"\n== summary ({parts['check'].get('device', '?')}) -> {out}")
    for name, res in parts["steps"].items():
        if isinstance(res, dict) and "steps_per_s" in res:
            print(f"  {name:36s} {res['steps_per_s']:7.2f} steps/s")
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
    "report": step_report,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=sorted(STEPS))
    parser.add_argument("--work", type=Path, default=Path("gpu-bench"), help="outputs here")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes")
    parser.add_argument("--minutes", type=float, default=2.0, help="training budget")
    parser.add_argument("--batch-size", type=int, default=32, help="transfer windows a call")
    parser.add_argument("--json", default=None, help="report: where the merged JSON goes")
    args = parser.parse_args()
    STEPS[args.step](args)


if __name__ == "__main__":
    main()
