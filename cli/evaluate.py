"""``histolib evaluate``: the paper's DICE / BAC evaluation of virtual IHC DAB masks."""

from __future__ import annotations

import warnings
from pathlib import Path

import typer

from histolib.core.lock import output_lock
from histolib_cli.common import cli_errors, is_tty, out_console, warn
from histolib_cli.options import field_option, options_from
from histolib_train.evaluation.options import EvaluateOptions

#: What evaluate writes in --out.
WRITES = ("tiles.csv", "summary.json", "table.md", "*.png", "report.html", "cache/*", ".*")
E = EvaluateOptions


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
    positive_classes: list[str] | None = field_option(E, "positive_classes"),
    labels: list[str] = field_option(E, "labels"),
    split: str = field_option(E, "split"),
    n_tiles: int = field_option(E, "n_tiles"),
    balance: bool = field_option(E, "balance"),
    seed: int = field_option(E, "seed"),
    device: str = field_option(E, "device"),
    amp: bool = field_option(E, "amp"),
    batch_size: int = field_option(E, "batch_size"),
    real_ihc: Path | None = typer.Option(
        None, "--real-ihc", help="Real IHC tiles (manifest or folder): mask-statistics row."
    ),
    direction: str = field_option(E, "direction"),
    ihc_truth: Path | None = typer.Option(
        None,
        "--ihc-truth",
        help="Registered real IHC of the same tiles (manifest or folder; paired by tile id or "
        "file name): adds PSNR, SSIM and the DICE of the DAB masks against it.",
    ),
    allow_train_overlap: bool = field_option(E, "allow_train_overlap"),
    groups: list[str] | None = field_option(E, "groups"),
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
    with cli_errors():
        options = options_from(EvaluateOptions, locals())
    reads = dict(inputs=[*(c.split("=", 1)[-1] for c in checkpoints), tiles, annotations])
    reads.update(scanned=[images, masks, real_ihc], writes=WRITES)
    with cli_errors(), output_lock(out, command="evaluate", **reads):
        from histolib_train.evaluation.evaluator import run_evaluation

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            summary = run_evaluation(
                checkpoints,
                out=out,
                manifest=tiles,
                images=images,
                masks=masks,
                annotations=annotations,
                real_ihc=real_ihc,
                ihc_truth=ihc_truth,
                options=options,
                progress=is_tty(),
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
