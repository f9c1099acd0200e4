"""``histolib demo``: the whole pipeline on synthetic slides, with a report.

Stages (each prints what it made): synthesise an H&E slide with expert contours, an unpaired
IHC slide and a held-out H&E slide; tile them; build both cell libraries; export them to QuPath
GeoJSON; train a small RoI CycleGAN for a bounded time; transfer the held-out slide to a virtual
IHC pyramidal TIFF; evaluate DICE and balanced accuracy on held-out tiles; write
``report.html`` with the pictures and the path of every artefact.

Every stage reuses what a previous run finished in the same folder (the underlying commands
are resumable), so an interrupted demo continues where it stopped.
"""

from __future__ import annotations

import html
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Small, fast settings that still show every part of the system on 2 CPU cores.
DEMO_SLIDE_PX = 3072
DEMO_HELDOUT_PX = 2048
DEMO_MPP = 0.5
#: Training tiles are 128 px (4x cheaper a step than 256 on a CPU); the generator is fully
#: convolutional, so transfer and evaluation still run on 256 px windows and tiles.
DEMO_TRAIN_TILE = 128


@dataclass
class DemoResult:
    """Where the demo put its artefacts (``artefacts`` maps a label to a path)."""

    out: Path
    report: Path
    artefacts: dict[str, Path] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def _workers() -> int:
    return max(1, min(os.cpu_count() or 1, 4))


def run_demo(
    out: str | Path,
    *,
    minutes: float = 5.0,
    device: str = "auto",
    seed: int = 0,
    slide_px: int = DEMO_SLIDE_PX,
    heldout_px: int = DEMO_HELDOUT_PX,
    log: Callable[[str], None] = print,
) -> DemoResult:
    """Run the demo pipeline into ``out``.

    Parameters
    ----------
    out
        Output folder (created; a previous demo there is reused where finished).
    minutes
        Time budget of the training stage, in minutes.
    device
        ``auto``, ``cpu`` or ``cuda`` for training, transfer and evaluation.
    seed
        Seed of the synthetic layouts and of training.
    slide_px, heldout_px
        Side of the square training slides and of the held-out slide, in px at 0.5 um/px.
    log
        Where the one-line stage reports go.

    Returns
    -------
    DemoResult
    """
    from histolib.core.atomic import ensure_writable_dir
    from histolib.library.build import build_library
    from histolib.qupath.export import export_qupath
    from histolib.synthetic.slides import make_slide
    from histolib.tiling.run import tile_slides
    from histolib_train.evaluation.evaluate import run_evaluation
    from histolib_train.training.config import resolve_config
    from histolib_train.training.loop import train
    from histolib_train.transfer.slide import load_transfer_generator, transfer_slide

    out = ensure_writable_dir(out)
    res = DemoResult(out=out, report=out / "report.html")
    workers = _workers()

    def stage(name: str) -> Callable[[], None]:
        start = time.perf_counter()

        def done() -> None:
            res.seconds[name] = time.perf_counter() - start

        return done

    # 1. Synthetic slides: training H&E (with contours), unpaired IHC, held-out H&E.
    done = stage("synthesise")
    slides_dir = out / "slides"
    he = make_slide(
        slides_dir,
        name="he_train",
        stain="he",
        width=slide_px,
        height=slide_px,
        mpp=DEMO_MPP,
        seed=seed,
        workers=workers,
    )
    ihc = make_slide(
        slides_dir,
        name="ihc_train",
        stain="ihc",
        width=slide_px,
        height=slide_px,
        mpp=DEMO_MPP,
        seed=seed + 1,
        workers=workers,
    )
    held = make_slide(
        slides_dir,
        name="he_heldout",
        stain="he",
        width=heldout_px,
        height=heldout_px,
        mpp=DEMO_MPP,
        seed=seed + 2,
        workers=workers,
    )
    done()
    for s in (he, ihc, held):
        res.artefacts[f"slide {s.slide_path.stem}"] = s.slide_path
    res.artefacts["expert contours (H&E)"] = he.annotations_path  # type: ignore[assignment]
    log(f"[1/8] synthetic slides: {he.slide_path}, {ihc.slide_path}, {held.slide_path}")

    # 2. Tiles.
    done = stage("tile")
    he_manifest = tile_slides(
        he.slide_path,
        out=out / "tiles_he",
        annotations=he.annotations_path,
        stain="he",
        size=DEMO_TRAIN_TILE,
        workers=workers,
        seed=seed,
        progress=False,
    )
    ihc_manifest = tile_slides(
        ihc.slide_path,
        out=out / "tiles_ihc",
        stain="ihc",
        size=DEMO_TRAIN_TILE,
        workers=workers,
        seed=seed,
        progress=False,
    )
    held_manifest = tile_slides(
        held.slide_path,
        out=out / "tiles_heldout",
        annotations=held.annotations_path,
        stain="he",
        workers=workers,
        seed=seed,
        progress=False,
    )
    done()
    res.artefacts["tile manifest (H&E)"] = he_manifest
    res.artefacts["tile manifest (IHC)"] = ihc_manifest
    res.artefacts["tile manifest (held-out H&E)"] = held_manifest
    log(f"[2/8] tiles: {he_manifest}, {ihc_manifest}, {held_manifest}")

    # 3. Cell libraries.
    done = stage("build-library")
    he_lib = build_library(
        manifest=he_manifest,
        stain="he",
        out=out / "library_he.geojson",
        workers=workers,
        overlays=4,
        seed=seed,
        progress=False,
    )
    ihc_lib = build_library(
        manifest=ihc_manifest,
        stain="ihc",
        out=out / "library_ihc.geojson",
        workers=workers,
        overlays=4,
        seed=seed,
        progress=False,
    )
    done()
    res.artefacts["cell library (H&E)"] = he_lib
    res.artefacts["cell library (IHC)"] = ihc_lib
    log(f"[3/8] cell libraries: {he_lib}, {ihc_lib}")

    # 4. QuPath export.
    done = stage("export qupath")
    qupath_dir = out / "qupath"
    export_qupath(
        [he_manifest, he_lib, ihc_manifest, ihc_lib],
        out=qupath_dir,
        annotations=he.annotations_path,
    )
    done()
    res.artefacts["QuPath GeoJSON folder"] = qupath_dir
    files = sorted(p.name for p in qupath_dir.glob("*.geojson"))
    log(f"[4/8] QuPath GeoJSON: {qupath_dir} ({', '.join(files)})")

    # 5. Training (bounded time).
    done = stage("train")
    run_dir = out / "run"
    cfg = resolve_config(
        {
            "he": str(he_manifest),
            "ihc": str(ihc_manifest),
            "he_library": str(he_lib),
            "ihc_library": str(ihc_lib),
            "out": str(run_dir),
            "model": "roi",
            "n_blocks": 3,
            "ngf": 16,
            "ndf": 16,
            "batch_size": 2,
            "boxes_per_tile": 8,
            "epochs": 2,
            "steps_per_epoch": 400,
            "sample_every": 100,
            "log_every": 10,
            "workers": 0,
            "device": device,
            "seed": seed,
            "max_minutes": minutes,
            "resume": (run_dir / "checkpoints" / "latest.pt").is_file(),
        }
    )
    result = train(cfg, show_progress=True, log=log)
    done()
    checkpoint = run_dir / "checkpoints" / "latest.pt"
    res.artefacts["training run"] = run_dir
    res.artefacts["checkpoint"] = checkpoint
    log(f"[5/8] training: {result.step} steps ({result.stopped}); checkpoint {checkpoint}")

    # 6. Slide-level transfer of the held-out H&E slide.
    done = stage("transfer")
    generator, _ = load_transfer_generator(checkpoint, direction="he2ihc", device=device)
    virtual = out / "virtual_ihc" / "he_heldout_virtual_ihc.tif"
    transferred = transfer_slide(
        held.slide_path,
        generator,
        out=virtual,
        mpp=DEMO_MPP,
        overlap=64,
        batch_size=4,
        overwrite=True,
    )
    done()
    res.artefacts["virtual IHC slide (pyramidal TIFF)"] = transferred.path
    res.artefacts["virtual IHC thumbnail"] = transferred.thumbnail
    log(f"[6/8] virtual IHC slide: {transferred.path}")

    # 7. Evaluation on held-out tiles.
    done = stage("evaluate")
    eval_dir = out / "evaluation"
    res.summary = run_evaluation(
        [str(checkpoint)],
        out=eval_dir,
        manifest=held_manifest,
        n_tiles=40,
        seed=seed,
        device=device,
    )
    done()
    res.artefacts["evaluation folder"] = eval_dir
    log(f"[7/8] evaluation: {eval_dir / 'table.md'}")

    # 8. Report.
    write_report(
        res,
        he_manifest=he_manifest,
        ihc_manifest=ihc_manifest,
        he_lib=he_lib,
        ihc_lib=ihc_lib,
        run_dir=run_dir,
        eval_dir=eval_dir,
        virtual_thumb=transferred.thumbnail,
        train_steps=result.step,
    )
    log(f"[8/8] report: {res.report}")
    return res


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
