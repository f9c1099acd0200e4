"""Seconds per training step of the region-guided CycleGAN.

Times :meth:`histolib_train.training.trainer.CycleGANTrainer.train_step` on synthetic batches
(random
tiles, 48 px boxes balanced cancer/normal, class maps painted as in training), so that data
loading is left out.

- CUDA: the paper configuration (roi, batch 8, 256 px, 6 blocks, ngf/ndf 64) in fp32 with
  TF32 off (``torch.backends.cuda.matmul.allow_tf32`` and ``torch.backends.cudnn.allow_tf32``
  False: true float32, which cuDNN would otherwise not run on Ampere and newer), TF32 (both
  True), bf16 autocast (:mod:`histolib_train.precision`; TF32 off) and bf16 + channels_last,
  side by side; prints each one's speed-up over fp32. Add ``--with-cyclegan`` for the
  baseline's cost. ``--precision-rows`` gives the same four rows on the CPU at the tiny size,
  where the TF32 row is n/a (TF32 is a CUDA setting).
- CPU: the tiny test configuration (ngf/ndf 8, 2 blocks, 64 px, batch 4) for the roi model
  and the CycleGAN baseline (ratio = cost of the RoI discriminators), then ``--cpu-paper-steps``
  steps (default 1) of the paper configuration.

Usage: ``python benchmarks/train_step.py [--device auto|cpu|cuda] [--steps 5] [--warmup 2]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import dataclass

import numpy as np
import torch

from histolib_train.device import resolve_device
from histolib_train.training.batches import paint_class_map
from histolib_train.training.config import resolve_config
from histolib_train.training.trainer import CycleGANTrainer


@dataclass
class Setting:
    name: str
    model: str
    size: int
    batch: int
    n_blocks: int
    ngf: int
    ndf: int
    boxes: int
    amp: bool = False
    channels_last: bool = False
    amp_dtype: str = "auto"
    tf32: bool = False


PAPER = {"size": 256, "batch": 8, "n_blocks": 6, "ngf": 64, "ndf": 64, "boxes": 8}
TINY = {"size": 64, "batch": 4, "n_blocks": 2, "ngf": 8, "ndf": 8, "boxes": 4}


def synthetic_batch(
    rng: np.random.Generator, *, batch: int, size: int, boxes: int
) -> dict[str, torch.Tensor]:
    """A batch shaped like :func:`histolib_train.training.batches.sample_batch` output."""
    side = min(48, size // 2)
    images = rng.uniform(-1, 1, size=(batch, 3, size, size)).astype(np.float32)
    class_maps = np.empty((batch, 2, size, size), np.float32)
    rows, labels = [], []
    for b in range(batch):
        x0 = rng.integers(0, size - side, boxes)
        y0 = rng.integers(0, size - side, boxes)
        tile_boxes = np.stack([x0, y0, x0 + side, y0 + side], axis=1).astype(np.float32)
        tile_labels = (np.arange(boxes) < boxes // 2).astype(np.int64)
        class_maps[b] = paint_class_map(tile_boxes, tile_labels, size)
        rows.append(np.concatenate([np.full((boxes, 1), b, np.float32), tile_boxes], axis=1))
        labels.append(tile_labels)
    return {
        "image": torch.from_numpy(images),
        "class_map": torch.from_numpy(class_maps),
        "boxes": torch.from_numpy(np.concatenate(rows)),
        "box_labels": torch.from_numpy(np.concatenate(labels)),
    }


def time_setting(
    setting: Setting, *, device: torch.device, steps: int, warmup: int
) -> dict[str, float]:
    """Median and mean seconds a step (after ``warmup`` untimed steps).

    TF32 is set as ``setting.tf32`` says for matmuls and cuDNN alike (after the trainer is
    built, so the setting is the row's whatever the trainer chose) and restored after; on
    another device than CUDA a TF32 row is not run and its rate is None (n/a).
    """
    cuda = device.type == "cuda"
    if setting.tf32 and not cuda:
        return {"median_s": None, "mean_s": None, "steps_per_s": None, "precision": "n/a"}
    cfg = resolve_config(
        {
            "model": setting.model,
            "batch_size": setting.batch,
            "n_blocks": setting.n_blocks,
            "ngf": setting.ngf,
            "ndf": setting.ndf,
            "boxes_per_tile": setting.boxes,
            "amp": setting.amp,
            "amp_dtype": setting.amp_dtype,
            "epochs": 1,
            "steps_per_epoch": warmup + steps,
        }
    )
    trainer = CycleGANTrainer(
        cfg,
        device=device,
        total_steps=warmup + steps,
        amp=setting.amp,
        amp_dtype=setting.amp_dtype,
        channels_last=setting.channels_last,
    )
    rng = np.random.default_rng(0)
    he = synthetic_batch(rng, batch=setting.batch, size=setting.size, boxes=setting.boxes)
    ihc = synthetic_batch(rng, batch=setting.batch, size=setting.size, boxes=setting.boxes)
    # global switches that only CUDA reads: set for every row (the CPU runs this too)
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = setting.tf32
    torch.backends.cudnn.allow_tf32 = setting.tf32
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    try:
        times = _time_steps(trainer, he, ihc, cuda=cuda, steps=steps, warmup=warmup)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    precision = trainer.precision.describe()
    if cuda:
        precision += ", TF32 on" if setting.tf32 else ", TF32 off"
    result = {
        "median_s": statistics.median(times),
        "mean_s": statistics.fmean(times),
        "steps_per_s": 1.0 / statistics.median(times),
        "precision": precision,
    }
    if cuda:
        result["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
    del trainer
    if cuda:
        torch.cuda.empty_cache()
    return result


def _time_steps(
    trainer: CycleGANTrainer,
    he: dict[str, torch.Tensor],
    ihc: dict[str, torch.Tensor],
    *,
    cuda: bool,
    steps: int,
    warmup: int,
) -> list[float]:
    """Seconds of each of ``steps`` training steps after ``warmup`` untimed ones."""
    times = []
    for i in range(warmup + steps):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        losses = trainer.train_step(he, ihc)
        float(losses["loss_G"])  # waits for the step, as training does for its progress bar
        if cuda:
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def precision_settings(sizes: dict[str, int], *, prefix: str) -> list[Setting]:
    """The roi model at ``sizes`` in fp32 (TF32 off), TF32, bf16 and bf16 + channels_last.

    bf16 is asked for explicitly (``amp_dtype="bf16"``), and each row reports the precision the
    trainer actually ran (``precision``), so a row is never labelled with what it did not do.
    """
    return [
        Setting(f"{prefix} fp32", "roi", **sizes),
        Setting(f"{prefix} tf32", "roi", **sizes, tf32=True),
        Setting(f"{prefix} bf16", "roi", **sizes, amp=True, amp_dtype="bf16"),
        Setting(
            f"{prefix} bf16+channels_last",
            "roi",
            **sizes,
            amp=True,
            amp_dtype="bf16",
            channels_last=True,
        ),
    ]


def run_settings(
    settings: list[tuple[Setting, int, int]], *, device: torch.device
) -> dict[str, dict]:
    """Time each ``(setting, steps, warmup)``; print each and its speed-up over the first."""
    results: dict[str, dict] = {}
    for setting, steps, warmup in settings:
        res = time_setting(setting, device=device, steps=steps, warmup=warmup)
        results[setting.name] = {**setting.__dict__, **res, "steps": steps}
        if res["median_s"] is None:
            print(f"{setting.name:36s} n/a on {device.type} (TF32 is a CUDA setting)")
            continue
        extra = f", peak {res['peak_mem_gib']:.1f} GiB" if "peak_mem_gib" in res else ""
        print(
            f"{setting.name:36s} batch {setting.batch} x {setting.size}px: "
            f"{res['median_s']:.4f} s/step, {res['steps_per_s']:.2f} steps/s "
            f"(median of {steps}; {res['precision']}){extra}",
            flush=True,
        )
    names = list(results)
    base = results[names[0]]["median_s"]
    for other in names[1:]:
        median = results[other]["median_s"]
        speedup = base / median if median else None
        results[other]["speedup_vs_first"] = speedup
        if speedup is not None:
            print(f"speed-up {other} over {names[0]}: {speedup:.2f}x")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--steps", type=int, default=5, help="timed steps a setting")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument(
        "--cpu-paper-steps",
        type=int,
        default=1,
        help="timed steps of the paper configuration on the CPU (0 = skip)",
    )
    parser.add_argument("--with-cyclegan", action="store_true", help="also time the baseline")
    parser.add_argument(
        "--precision-rows",
        action="store_true",
        help="CPU: the four precision rows at the tiny size (TF32 n/a) instead of the defaults",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    settings: list[tuple[Setting, int, int]] = []
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        for setting in precision_settings(PAPER, prefix="paper roi"):
            settings.append((setting, args.steps, args.warmup))
        if args.with_cyclegan:
            settings.append(
                (Setting("paper cyclegan fp32", "cyclegan", **PAPER), args.steps, args.warmup)
            )
    elif args.precision_rows:
        for setting in precision_settings(TINY, prefix="tiny roi"):
            settings.append((setting, args.steps, args.warmup))
    else:
        settings.append((Setting("tiny roi", "roi", **TINY), args.steps, args.warmup))
        settings.append((Setting("tiny cyclegan", "cyclegan", **TINY), args.steps, args.warmup))
        if args.cpu_paper_steps > 0:
            settings.append((Setting("paper roi fp32", "roi", **PAPER), args.cpu_paper_steps, 1))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {name}; torch {torch.__version__}; CPU threads {torch.get_num_threads()}")
    results = run_settings(settings, device=device)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"device": name, "results": results}, fh, indent=2)


if __name__ == "__main__":
    main()
