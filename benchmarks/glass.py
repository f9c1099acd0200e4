"""Benchmark: does glass stay glass in the virtual slide? ``--glass keep`` against ``white``.

Restains slides with a trained checkpoint twice, in the same run: ``--glass keep`` (the
behaviour before glass masking: the generator's output wherever a window ran) and ``--glass
white`` (the default). For each output it measures, against the INPUT's tissue mask
(:func:`histolib.slide.tissue.tissue_mask` of the input read at the output's mpp):

- ``glass mean``: mean ``|255 - value|`` of the output pixels outside the tissue mask;
- ``glass block max``: its maximum over 256 px blocks (blocks at least 25 % glass);
- ``tissue change``: mean ``|white - keep|`` inside the tissue mask shrunk by 4 um (what glass
  masking costs the tissue: a white halo eating into it would show here).

Slides: the demo's held-out synthetic H&E slide and a real Aperio slide
(``tests/data/slides/CMU-1-Small-Region.svs``), both restained by the demo's checkpoint (a
small RoI CycleGAN trained on the demo's synthetic slides). Give ``--demo DIR`` to reuse a
finished ``histolib demo`` folder; otherwise a short demo is run into ``--work``.

    python benchmarks/glass.py --demo histolib-demo
    python benchmarks/glass.py --work /tmp/histolib-glass --demo-minutes 2
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
REAL_SLIDE = ROOT / "tests" / "data" / "slides" / "CMU-1-Small-Region.svs"


def read_level0(path: Path) -> np.ndarray:
    """Level 0 of a pyramidal TIFF as an RGB array."""
    import pyvips

    image = pyvips.Image.new_from_file(str(path), page=0)
    return np.asarray(image.numpy())[..., :3]


def measure(
    slide_path: Path, generator: Any, *, work: Path, mpp: float, batch_size: int
) -> dict[str, Any]:
    """Restain ``slide_path`` in both glass modes and measure each output."""
    from scipy import ndimage

    from histolib_train.transfer.glass import glass_difference, input_tissue
    from histolib_train.transfer.slide import transfer_slide

    outputs, result = {}, {}
    for mode in ("keep", "white"):
        out = work / f"{slide_path.stem}_{mode}.tif"
        start = time.perf_counter()
        transfer_slide(
            slide_path,
            generator,
            out=out,
            mpp=mpp,
            batch_size=batch_size,
            glass=mode,
            overwrite=True,
        )
        outputs[mode] = read_level0(out)
        result[mode] = {"seconds": time.perf_counter() - start, "path": str(out)}
    tissue = input_tissue(slide_path, mpp=mpp, shape=outputs["keep"].shape[:2])
    inner = ndimage.binary_erosion(tissue, iterations=max(1, round(4.0 / mpp)))
    change = np.abs(outputs["white"].astype(np.float32) - outputs["keep"]).mean(axis=2)
    for mode in ("keep", "white"):
        result[mode].update(glass_difference(outputs[mode], tissue))
    result["tissue_change"] = float(change[inner].mean()) if inner.any() else 0.0
    result["size"] = list(outputs["keep"].shape[:2][::-1])
    return result


def ensure_demo(args: argparse.Namespace) -> Path:
    """A finished demo folder: ``--demo`` or a short one run into ``--work``."""
    if args.demo:
        return Path(args.demo)
    from histolib_train.demo.pipeline import run_demo

    folder = Path(args.work) / "demo"
    run_demo(folder, minutes=args.demo_minutes, device=args.device, slide_px=2048)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", default=None, help="a finished histolib demo folder")
    parser.add_argument("--work", default="/tmp/histolib-glass", help="outputs go here")
    parser.add_argument("--demo-minutes", type=float, default=2.0, help="training budget")
    parser.add_argument("--slide", default=str(REAL_SLIDE), help="the real slide")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()

    from histolib_train.transfer.generator import load_transfer_generator

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    demo = ensure_demo(args)
    checkpoint = demo / "run" / "checkpoints" / "latest.pt"
    generator, _ = load_transfer_generator(checkpoint, device=args.device)
    slides = {"demo held-out (synthetic)": demo / "slides" / "he_heldout.tif"}
    slides["real (Aperio CMU-1-Small-Region)"] = Path(args.slide)
    results = {}
    print(f"checkpoint: {checkpoint}")
    header = f"{'slide':36s} {'glass':6s} {'mean':>7s} {'block max':>10s} {'seconds':>8s}"
    print(header)
    for name, path in slides.items():
        res = measure(path, generator, work=work, mpp=0.5, batch_size=args.batch_size)
        results[name] = res
        for mode in ("keep", "white"):
            r = res[mode]
            print(
                f"{name:36s} {mode:6s} {r['mean']:7.2f} {r['block_max']:10.2f} {r['seconds']:8.1f}"
            )
        keep, white = res["keep"], res["white"]
        print(
            f"{'':36s} ratio keep / white: mean {keep['mean'] / max(white['mean'], 1e-6):.1f}x, "
            f"block max {keep['block_max'] / max(white['block_max'], 1e-6):.1f}x; "
            f"tissue change {res['tissue_change']:.2f} grey levels"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"checkpoint": str(checkpoint), **results}, indent=2))


if __name__ == "__main__":
    main()
