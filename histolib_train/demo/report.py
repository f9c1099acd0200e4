"""``report.html`` of ``histolib demo``: the pictures of every stage, each with a legend, the
evaluation table as an HTML table and the path of every artefact, linked relative to the demo
folder (so the folder can be moved or zipped).

The legends take their colours from the modules that draw the pictures
(:mod:`histolib.tiling.qc`, :mod:`histolib.library.overlays`,
:mod:`histolib_train.training.samples`, :mod:`histolib_train.evaluation.report`), so they
cannot drift apart.
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from histolib_train.demo.pipeline import DemoResult

Legend = list[tuple[str, tuple[int, int, int], str]]


def _img(path: Path, base: Path, caption: str, *, width: int, legend: Legend = ()) -> str:
    """A figure: the picture at ``width`` px (never wider than the page), linked to itself."""
    from histolib_train.evaluation.report import legend_html

    rel = html.escape(os.path.relpath(path, base))
    return (
        f'<figure><a href="{rel}"><img src="{rel}" width="{width}" '
        f'alt="{html.escape(path.name)}"></a><figcaption>'
        f"{legend_html(legend) if legend else ''}{html.escape(caption)}</figcaption></figure>"
    )


def qc_legend() -> Legend:
    """Colours of the tiling QC pictures."""
    from histolib.tiling.qc import CONTOUR_COLOR, LABEL_COLORS, MASK_COLOR

    items: Legend = [
        ("tissue mask outline", MASK_COLOR, "line"),
        ("glass outside the mask (greyed)", (175, 175, 175), "fill"),
        ("expert tumour contours", CONTOUR_COLOR, "line"),
    ]
    items += [(f"{label} tile", colour, "box") for label, colour in LABEL_COLORS.items()]
    return items


def overlay_legend(stain: str) -> Legend:
    """Colours of the cell-library overlays of ``stain``."""
    from histolib.library.overlays import (
        CANCER_COLOUR,
        NORMAL_COLOUR,
        SHADE_COLOUR,
        TUMOUR_COLOUR,
    )

    shade = tuple(int(v) for v in SHADE_COLOUR)
    items: Legend = [("cancer cell box", CANCER_COLOUR, "box")]
    items.append(("normal cell box", NORMAL_COLOUR, "box"))
    if stain == "he":
        items.append(("excluded region: healthy-cell clusters, grown (shaded)", shade, "fill"))
        items.append(("expert tumour annotation (outline)", TUMOUR_COLOUR, "line"))
    else:
        items.append(("DAB mask (shaded)", shade, "fill"))
    return items


def sample_legend() -> Legend:
    """Colours of the boxes in the training sample sheets."""
    from histolib_train.training.samples import BOX_COLOURS

    return [
        ("cancer cell box", BOX_COLOURS[1], "box"),
        ("normal cell box", BOX_COLOURS[0], "box"),
    ]


def _stages(
    base: Path,
    *,
    manifests: tuple[Path, Path],
    libraries: tuple[Path, Path],
    run_dir: Path,
    virtual_thumb: Path,
    train_steps: int,
) -> list[str]:
    """The picture sections: QC, library overlays, training samples, virtual slide."""
    from histolib.library.build import overlays_dir

    parts = ["<h2>Tiles: QC pictures</h2>"]
    for manifest in manifests:
        for qc in sorted((manifest.parent / "qc").glob("*.png")):
            caption = f"QC of {qc.stem}: thumbnail, tissue mask, contours, tiles by label."
            parts.append(_img(qc, base, caption, width=1024, legend=qc_legend()))
    parts.append("<h2>Cell libraries: overlays</h2>")
    for lib, stain in zip(libraries, ("he", "ihc"), strict=True):
        overlays = sorted(overlays_dir(lib).glob("*.png"))[:4]
        if overlays:
            parts.append(f"<h3>{html.escape(lib.name)}</h3>")
            parts.append(
                "<p>"
                + html.escape(f"{lib.stem} ({stain.upper()}):")
                + "</p>"
                + _legend_only(overlay_legend(stain))
            )
        for ov in overlays:
            parts.append(_img(ov, base, ov.stem, width=256))
    parts.append(f"<h2>Training samples ({train_steps} steps)</h2>")
    samples = sorted(
        (run_dir / "samples").glob("step_*.png"), key=lambda p: int(p.stem.split("_")[-1])
    )
    for sample in samples[-2:]:
        caption = (
            f"{sample.stem}: H&E rows then IHC rows; columns: real tile, translation, "
            "reconstruction; the cell boxes sampled for the RoI discriminators."
        )
        parts.append(_img(sample, base, caption, width=560, legend=sample_legend()))
    parts.append("<h2>Virtual IHC of the held-out slide</h2>")
    parts.append(
        _img(
            virtual_thumb,
            base,
            "Thumbnail of the pyramidal TIFF: the generator's output on tissue, white glass.",
            width=640,
        )
    )
    return parts


def _legend_only(items: Legend) -> str:
    from histolib_train.evaluation.report import legend_html

    return legend_html(items)


def _tables(res: DemoResult, base: Path) -> list[str]:
    """The artefacts and the time per stage."""
    parts = ["<h2>Artefacts</h2><table><thead><tr><th>what</th><th>path</th></tr></thead><tbody>"]
    for label, path in res.artefacts.items():
        rel = html.escape(os.path.relpath(path, base))
        parts.append(
            f"<tr><td>{html.escape(label)}</td>"
            f'<td><a href="{rel}">{html.escape(str(path))}</a></td></tr>'
        )
    parts.append("</tbody></table><h2>Time per stage</h2><table><tbody>")
    for name, sec in res.seconds.items():
        parts.append(f'<tr><td>{html.escape(name)}</td><td class="num">{sec:.1f} s</td></tr>')
    parts.append("</tbody></table>")
    return parts


def write_report(
    res: DemoResult,
    *,
    he_manifest: Path,
    ihc_manifest: Path,
    he_lib: Path,
    ihc_lib: Path,
    run_dir: Path,
    eval_dir: Path,
    virtual_thumb: Path,
    train_steps: int,
    view_page: Path | None = None,
) -> Path:
    """Write ``report.html`` beside the demo's outputs (relative links; atomic); ``view_page``:
    the side-by-side viewer's page (``histolib view --export``), linked under the thumbnail."""
    from histolib.core.atomic import write_text
    from histolib_train.evaluation.report import (
        PAGE_STYLE,
        evaluation_figures_html,
        table_html,
    )

    base = res.out
    parts: list[str] = [
        "<!doctype html><html><head><meta charset='utf-8'><title>histolib demo</title>",
        f"<style>{PAGE_STYLE}</style></head><body>",
        "<h1>histolib demo</h1>",
        "<p>Synthetic H&amp;E and IHC slides, tiled, turned into cell libraries, exported to "
        "QuPath, used to train a small region-guided CycleGAN, which restained a held-out "
        "H&amp;E slide; DICE and balanced accuracy of its DAB mask against the expert "
        "contours. The model is tiny and trained for minutes: the numbers show the pipeline "
        "working, not the paper's accuracy.</p>",
    ]
    parts += _stages(
        base,
        manifests=(he_manifest, ihc_manifest),
        libraries=(he_lib, ihc_lib),
        run_dir=run_dir,
        virtual_thumb=virtual_thumb,
        train_steps=train_steps,
    )
    if view_page is not None:
        rel = html.escape(os.path.relpath(view_page, base))
        parts.append(
            f'<p><a href="{rel}">Open the held-out slide and its virtual IHC side by side</a>: '
            "both pan and zoom together, with the expert contours, the tiles and the per-tile "
            "DICE as overlays that toggle (a static page, <code>histolib view --export</code>; "
            "no server needed).</p>"
        )
    parts.append("<h2>Evaluation (paper Table 1 and Fig. 3 layouts)</h2>")
    if res.summary.get("checkpoints"):
        parts.append(table_html(res.summary))
    parts.append(evaluation_figures_html(eval_dir, base))
    parts += _tables(res, base)
    parts.append("</body></html>\n")
    write_text(res.report, "\n".join(parts))
    return res.report
