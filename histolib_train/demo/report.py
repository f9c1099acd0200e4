"""``report.html`` of ``histolib demo``: the pictures of every stage and the path of every
artefact, linked relative to the demo folder (so the folder can be moved or zipped)."""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from histolib_train.demo.run import DemoResult


def _img(path: Path, base: Path, caption: str, *, width: int = 360) -> str:
    rel = os.path.relpath(path, base)
    return (
        f'<figure><a href="{html.escape(rel)}"><img src="{html.escape(rel)}" '
        f'width="{width}"></a><figcaption>{html.escape(caption)}</figcaption></figure>'
    )


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
) -> Path:
    """Write ``report.html`` beside the demo's outputs (relative links; atomic)."""
    from histolib.core.atomic import write_text

    base = res.out
    parts: list[str] = [
        "<!doctype html><html><head><meta charset='utf-8'><title>histolib demo</title>",
        "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto}"
        "figure{display:inline-block;margin:6px;vertical-align:top}"
        "figcaption{font-size:small;color:#444}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px}</style></head><body>",
        "<h1>histolib demo</h1>",
        "<p>Synthetic H&amp;E and IHC slides, tiled, turned into cell libraries, exported to "
        "QuPath, used to train a small region-guided CycleGAN, which restained a held-out "
        "H&amp;E slide; DICE and balanced accuracy of its DAB mask against the expert "
        "contours. The model is tiny and trained for minutes: the numbers show the pipeline "
        "working, not the paper's accuracy.</p>",
        "<h2>Tiles: QC pictures</h2>",
    ]
    for manifest in (he_manifest, ihc_manifest):
        for qc in sorted((manifest.parent / "qc").glob("*.png")):
            parts.append(_img(qc, base, f"QC {qc.stem}: tissue, contours, tiles by label"))
    parts.append("<h2>Cell libraries: overlays</h2>")
    for lib in (he_lib, ihc_lib):
        for ov in sorted(lib.with_name(f"{lib.stem}_overlays").glob("*.png"))[:4]:
            parts.append(_img(ov, base, f"{lib.stem}: {ov.stem}", width=256))
    parts.append(f"<h2>Training samples ({train_steps} steps)</h2>")
    samples = sorted(
        (run_dir / "samples").glob("step_*.png"), key=lambda p: int(p.stem.split("_")[-1])
    )
    for sample in samples[-2:]:
        parts.append(
            _img(sample, base, f"{sample.stem}: H&E, virtual IHC, reconstruction", width=560)
        )
    parts.append("<h2>Virtual IHC of the held-out slide</h2>")
    parts.append(_img(virtual_thumb, base, "thumbnail of the pyramidal TIFF", width=480))
    parts.append("<h2>Evaluation (paper Table 1 and Fig. 3 layouts)</h2>")
    table = eval_dir / "table.md"
    if table.is_file():
        parts.append(f"<pre>{html.escape(table.read_text())}</pre>")
    panel = eval_dir / "panel.png"
    if panel.is_file():
        parts.append(_img(panel, base, "H&E, annotation, virtual IHC with DAB outline", width=900))
    parts.append("<h2>Artefacts</h2><table><tr><th>what</th><th>path</th></tr>")
    for label, path in res.artefacts.items():
        rel = os.path.relpath(path, base)
        parts.append(
            f"<tr><td>{html.escape(label)}</td>"
            f"<td><a href='{html.escape(rel)}'>{html.escape(str(path))}</a></td></tr>"
        )
    parts.append("</table><h2>Time per stage</h2><table>")
    for name, sec in res.seconds.items():
        parts.append(f"<tr><td>{html.escape(name)}</td><td>{sec:.1f} s</td></tr>")
    parts.append("</table></body></html>\n")
    write_text(res.report, "\n".join(parts))
    return res.report
