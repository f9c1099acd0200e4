"""Write the study's experiment grid: the paper's grid (examples/paper_grid.yaml) on its data.

    python examples/camelyon16/study_grid.py STUDY_DIR [--tiny] > STUDY_DIR/grid.yaml

Takes ``examples/paper_grid.yaml`` as it is (models, axes, preset, batch size, the 500
held-out tiles) and points its paths at the study folder that ``run_study.sh`` fills:
``STUDY_DIR/he/tiles.parquet``, ``STUDY_DIR/ihc/tiles.parquet``, ``STUDY_DIR/library_he.parquet``
and ``STUDY_DIR/library_ihc.parquet``; the contours are the ones the H&E manifest records (the
CAMELYON16 XML). ``--tiny`` keeps the code path and shrinks the work for a CPU check: two
models (roi and the 8x8 CycleGAN), lambda_cyc {10, 30}, one residual block, width 8,
1 epoch of 2 steps, 8 held-out tiles.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

PAPER_GRID = Path(__file__).resolve().parents[1] / "paper_grid.yaml"

#: What --tiny changes (everything else is the paper's grid).
TINY_TRAINING = {
    "epochs": 1,
    "steps_per_epoch": 2,
    "batch_size": 2,
    "n_blocks": 1,
    "ngf": 8,
    "ndf": 8,
    "checkpoint_every": 1,
    "workers": 0,
    "device": "cpu",
}
TINY_GRID = {
    "axes": {"lambda_cyc": [10, 30]},
    "models": {"roi": {}, "cyclegan8": {"model": "cyclegan", "patch": 8}},
}


def study_grid(study: Path, *, tiny: bool = False) -> dict[str, Any]:
    """The paper's grid with its paths in ``study`` (absolute), shrunk when ``tiny``."""
    import yaml

    grid = yaml.safe_load(PAPER_GRID.read_text(encoding="utf-8"))
    study = study.resolve()
    grid.update(
        he=str(study / "he" / "tiles.parquet"),
        ihc=str(study / "ihc" / "tiles.parquet"),
        he_library=str(study / "library_he.parquet"),
        ihc_library=str(study / "library_ihc.parquet"),
    )
    evaluation = dict(grid["evaluation"])
    evaluation["tiles"] = str(study / "he" / "tiles.parquet")
    evaluation.pop("annotations", None)  # the manifest records each slide's XML
    grid["evaluation"] = evaluation
    if tiny:
        grid.update(TINY_TRAINING)
        grid["evaluation"]["n_tiles"] = 8
        grid["evaluation"]["device"] = "cpu"
        grid["grid"] = TINY_GRID
    return grid


def main() -> None:
    import yaml

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", type=Path, help="The study folder of run_study.sh.")
    parser.add_argument("--tiny", action="store_true", help="A CPU-sized grid (same code path).")
    args = parser.parse_args()
    grid = study_grid(args.study, tiny=args.tiny)
    sys.stdout.write(f"# The paper's grid ({PAPER_GRID.name}) on {args.study.resolve()}\n")
    yaml.safe_dump(grid, sys.stdout, sort_keys=False)


if __name__ == "__main__":
    main()
