"""``histolib evaluate``: the paper's DICE / BAC evaluation of virtual IHC DAB masks."""

from __future__ import annotations

import warnings
from pathlib import Path

import typer

from histolib.core.lock import output_lock
from histolib_cli.common import cli_errors, is_tty, out_console, warn
from histolib_cli.options import seed_option

#: What evaluate writes in --out.
WRITES = ("tiles.csv", "summary.json", "table.md", "*.png", "report.html", "cache/*", ".*")


def evaluate(
    checkpoints: list[str] = typer.Argument(
        ...,
        help="Checkpoints (.pt or run folders), optionally named NAME=PATH.",
        metavar="CHECKPOINT...",
    ),
    tiles: Path | None = typer.Option(
        None, "--tiles", help="Tile manifest (tiles.parquet) of held-out H&E tiles."
    ),
    images: Path | None = typer.Option(None, "--images", help="Folder of H&E tiles."),
    masks: Path | None = typer.Option(
        None, "--masks", help="Folder of expert masks (same file names; > 0 = tumour)."
    ),
    out: Path = typer.Option(..., "--out", help="Output folder."),
    annotations: Path | None = typer.Option(
        None,
        "--annotations",
        help="Contours (GeoJSON or XML) file or folder for a manifest (default: the manifest's).",
    ),
    positive_class: list[str] | None = typer.Option(
        None, "--positive-class", help="Annotation class meaning tumour (repeatable)."
    ),
    label: list[str] | None = typer.Option(
        None,
        "--label",
        help="Only manifest tiles with this label (repeatable; default: positive and negative; "
        "'all': every label).",
    ),
    split: str = typer.Option(
        "test",
        "--split",
        help="Part of the manifest's split column to draw from: test, train or all (a "
        "manifest without the column is used whole, with a warning).",
    ),
    n_tiles: int = typer.Option(500, "--n-tiles", help="Tiles drawn at random (the paper: 500)."),
    balance: bool = typer.Option(
        True,
        "--balance/--no-balance",
        help="Draw the tiles equally from each label (folders: tumour and tumour-free masks), "
        "where each has enough; else uniformly.",
    ),
    seed: int = seed_option("Seed of the tile draw."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    amp: bool = typer.Option(
        False,
        "--amp/--no-amp",
        help="Mixed precision (default: float32); bf16 or fp16 as the GPU allows.",
    ),
    batch_size: int = typer.Option(8, "--batch-size", help="Tiles per generator call."),
    real_ihc: Path | None = typer.Option(
        None, "--real-ihc", help="Real IHC tiles (manifest or folder): mask-statistics row."
    ),
    direction: str = typer.Option("he2ihc", "--direction", help="Generator to evaluate."),
    ihc_truth: Path | None = typer.Option(
        None,
        "--ihc-truth",
        help="Registered real IHC of the same tiles (manifest or folder; paired by tile id or "
        "file name): adds PSNR, SSIM and the DICE of the DAB masks against it.",
    ),
    allow_train_overlap: bool = typer.Option(
        False,
        "--allow-train-overlap",
        help="Score tiles a run trained on (refused by default, naming how many).",
    ),
    groups: list[str] | None = typer.Option(
        None,
        "--groups",
        help="Groups of tiles reported and drawn: all, tumour, border (repeatable; default: "
        "all three).",
    ),
) -> None:
    """Score virtual IHC against expert masks: DICE and balanced accuracy per tile.

    Draws --n-tiles held-out H&E tiles (a manifest: its test part, positive and negative tiles,
    half each; seeded). Each is restained by every checkpoint (float32 unless --amp); its DAB
    mask (histolib.stain.dab_mask, as on real IHC tiles) is compared with the tile's annotation
    mask. Writes tiles.csv, summary.json, table.md (paper Table 1 layout), panel.png (paper
    Fig. 3 layout), distribution.png (DICE and BAC per tile, box plots per model) and
    report.html. Empty masks: DICE 1 when both are empty (`dice`) and 0 (`dice_empty0`,
    scikit-learn's F1), side by side; 0 when one is; BAC uses the defined terms only. Every mean
    has a 95 % bootstrap interval (slides resampled with >= 5 slides, else tiles); every pair of
    checkpoints is compared on the same tiles (mean difference, interval, Wilcoxon p). Border
    tiles: some tumour, less than half the tile. A run that recorded its training tiles is
    refused tiles it trained on unless --allow-train-overlap. See docs/evaluation.md.
    """
    reads = dict(inputs=[*(c.split("=", 1)[-1] for c in checkpoints), tiles, annotations])
    reads.update(scanned=[images, masks, real_ihc], writes=WRITES)
    with cli_errors(), output_lock(out, command="evaluate", **reads):
        from histolib_train.evaluation.evaluator import run_evaluation
        from histolib_train.evaluation.tiles import DEFAULT_LABELS

        labels = list(label) if label else list(DEFAULT_LABELS)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            summary = run_evaluation(
                checkpoints,
                out=out,
                manifest=tiles,
                images=images,
                masks=masks,
                annotations=annotations,
                positive_classes=positive_class or None,
                labels=None if "all" in labels else labels,
                split=split.lower(),
                n_tiles=n_tiles,
                seed=seed,
                balance=balance,
                device=device,
                amp=amp,
                batch_size=batch_size,
                real_ihc=real_ihc,
                direction=direction,
                progress=is_tty(),
                ihc_truth=ihc_truth,
                allow_train_overlap=allow_train_overlap,
                groups=[g.lower() for g in groups] if groups else None,
            )
        for item in caught:  # histolib's warnings as one line each, others as Python shows them
            if item.category.__module__.startswith("histolib"):
                warn(str(item.message))
            else:
                warnings.showwarning(item.message, item.category, item.filename, item.lineno)
        console = out_console()
        console.print((out / "table.md").read_text(encoding="utf-8"), markup=False)
        console.print(
            f"{summary['n_tiles']} tiles; wrote {out / 'tiles.csv'}, summary.json, table.md, "
            "panel.png, distribution.png, report.html",
            markup=False,
        )


def register(app: typer.Typer) -> None:
    """Add ``histolib evaluate`` to ``app``."""
    app.command("evaluate")(evaluate)
