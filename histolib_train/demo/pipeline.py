"""``histolib demo``: the whole pipeline on synthetic slides, with a report.

Stages (each prints what it made): synthesise an H&E slide with expert contours, an unpaired
IHC slide and a held-out H&E slide; tile them; build both cell libraries; export them to QuPath
GeoJSON; train a small RoI CycleGAN for a bounded time; transfer the held-out slide to a virtual
IHC pyramidal TIFF; evaluate DICE and balanced accuracy on held-out tiles; export the
held-out slide and its virtual IHC as a side-by-side viewer (``histolib view --export``); write
``report.html`` with the pictures and the path of every artefact.

Every stage reuses what a previous run finished in the same folder (the underlying commands
are resumable), so an interrupted demo continues where it stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
#: At most this many worker processes (the demo's slides are small).
DEMO_MAX_WORKERS = 4


@dataclass
class DemoResult:
    """Where the demo put its artefacts (``artefacts`` maps a label to a path)."""

    out: Path
    report: Path
    artefacts: dict[str, Path] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class _Demo:
    """What every stage needs: the folder, the settings and the result being filled in."""

    out: Path
    seed: int
    device: str
    workers: int
    log: Callable[[str], None]
    res: DemoResult

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the stage ``name`` (recorded when it finishes)."""
        start = time.perf_counter()
        yield
        self.res.seconds[name] = time.perf_counter() - start


@dataclass
class _Domain:
    """One slide's way through the pipeline: slide, tile manifest, cell library."""

    slide: Any
    manifest: Path | None = None
    library: Path | None = None


def _synthesise(demo: _Demo, *, slide_px: int, heldout_px: int) -> dict[str, _Domain]:
    """1. Synthetic slides: training H&E (with contours), unpaired IHC, held-out H&E."""
    from histolib.synthetic.slides import make_slide

    specs = {
        "he": ("he_train", "he", slide_px, 0),
        "ihc": ("ihc_train", "ihc", slide_px, 1),
        "held": ("he_heldout", "he", heldout_px, 2),
    }
    domains = {}
    with demo.stage("synthesise"):
        for key, (name, stain, side, offset) in specs.items():
            slide = make_slide(
                demo.out / "slides",
                name=name,
                stain=stain,
                width=side,
                height=side,
                mpp=DEMO_MPP,
                seed=demo.seed + offset,
                workers=demo.workers,
            )
            domains[key] = _Domain(slide)
    for domain in domains.values():
        path = domain.slide.slide_path
        demo.res.artefacts[f"slide {path.stem}"] = path
    demo.res.artefacts["expert contours (H&E)"] = domains["he"].slide.annotations_path
    paths = ", ".join(str(d.slide.slide_path) for d in domains.values())
    demo.log(f"[1/9] synthetic slides: {paths}")
    return domains


def _tile(demo: _Demo, domains: dict[str, _Domain]) -> None:
    """2. Tiles: small training tiles of both stains, full-size held-out tiles."""
    from histolib.tiling.options import TilingOptions
    from histolib.tiling.tiler import tile_slides

    he, held = domains["he"].slide, domains["held"].slide
    train, seed = DEMO_TRAIN_TILE, demo.seed
    specs: dict[str, tuple[str, str, TilingOptions, Path | None]] = {
        "he": ("tiles_he", "H&E", TilingOptions(size=train, seed=seed), he.annotations_path),
        "ihc": ("tiles_ihc", "IHC", TilingOptions(stain="ihc", size=train, seed=seed), None),
        "held": (
            "tiles_heldout",
            "held-out H&E",
            TilingOptions(seed=seed),
            held.annotations_path,
        ),
    }
    with demo.stage("tile"):
        for key, (folder, _, options, annotations) in specs.items():
            domains[key].manifest = tile_slides(
                domains[key].slide.slide_path,
                out=demo.out / folder,
                options=options,
                annotations=annotations,
                workers=demo.workers,
                progress=False,
            )
    for key, (_, label, _, _) in specs.items():
        demo.res.artefacts[f"tile manifest ({label})"] = domains[key].manifest
    manifests = ", ".join(str(domains[k].manifest) for k in specs)
    demo.log(f"[2/9] tiles: {manifests}")


def _libraries(demo: _Demo, domains: dict[str, _Domain]) -> None:
    """3. Cell libraries of the training tiles."""
    from histolib.library.build import build_library

    with demo.stage("build-library"):
        for key in ("he", "ihc"):
            domains[key].library = build_library(
                manifest=domains[key].manifest,
                stain=key,
                out=demo.out / f"library_{key}.geojson",
                workers=demo.workers,
                overlays=4,
                seed=demo.seed,
                progress=False,
            )
    he_lib, ihc_lib = domains["he"].library, domains["ihc"].library
    demo.res.artefacts["cell library (H&E)"] = he_lib
    demo.res.artefacts["cell library (IHC)"] = ihc_lib
    demo.log(f"[3/9] cell libraries: {he_lib}, {ihc_lib}")


def _export(demo: _Demo, domains: dict[str, _Domain]) -> None:
    """4. QuPath GeoJSON of the tiles, cells and expert contours."""
    from histolib.qupath.export import export_qupath

    he, ihc = domains["he"], domains["ihc"]
    qupath_dir = demo.out / "qupath"
    with demo.stage("export qupath"):
        export_qupath(
            [he.manifest, he.library, ihc.manifest, ihc.library],
            out=qupath_dir,
            annotations=he.slide.annotations_path,
        )
    demo.res.artefacts["QuPath GeoJSON folder"] = qupath_dir
    files = sorted(p.name for p in qupath_dir.glob("*.geojson"))
    demo.log(f"[4/9] QuPath GeoJSON: {qupath_dir} ({', '.join(files)})")


def _train(demo: _Demo, domains: dict[str, _Domain], *, minutes: float) -> tuple[Path, int]:
    """5. A small RoI CycleGAN for at most ``minutes``; returns its checkpoint and steps."""
    from histolib_train.training.config import resolve_config
    from histolib_train.training.loop import train

    run_dir = demo.out / "run"
    checkpoint = run_dir / "checkpoints" / "latest.pt"
    cfg = resolve_config(
        {
            "he": str(domains["he"].manifest),
            "ihc": str(domains["ihc"].manifest),
            "he_library": str(domains["he"].library),
            "ihc_library": str(domains["ihc"].library),
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
            "device": demo.device,
            "seed": demo.seed,
            "max_minutes": minutes,
            "resume": checkpoint.is_file(),
        }
    )
    with demo.stage("train"):
        result = train(cfg, show_progress=True, log=demo.log)
    demo.res.artefacts["training run"] = run_dir
    demo.res.artefacts["checkpoint"] = checkpoint
    demo.log(f"[5/9] training: {result.step} steps ({result.stopped}); checkpoint {checkpoint}")
    return checkpoint, result.step


def _transfer(demo: _Demo, held: _Domain, checkpoint: Path) -> Path:
    """6. The held-out H&E slide restained to a virtual IHC slide; returns its thumbnail."""
    from histolib_train.transfer.generator import load_transfer_generator
    from histolib_train.transfer.slide import transfer_slide

    virtual = demo.out / "virtual_ihc" / "he_heldout_virtual_ihc.tif"
    with demo.stage("transfer"):
        generator, _ = load_transfer_generator(checkpoint, direction="he2ihc", device=demo.device)
        transferred = transfer_slide(
            held.slide.slide_path,
            generator,
            out=virtual,
            mpp=DEMO_MPP,
            overlap=64,
            batch_size=4,
            overwrite=True,
        )
    demo.res.artefacts["virtual IHC slide (pyramidal TIFF)"] = transferred.path
    demo.res.artefacts["virtual IHC thumbnail"] = transferred.thumbnail
    demo.log(f"[6/9] virtual IHC slide: {transferred.path}")
    return transferred.thumbnail


def _evaluate(demo: _Demo, held: _Domain, checkpoint: Path) -> Path:
    """7. DICE and balanced accuracy on held-out tiles; returns the evaluation folder."""
    from histolib_train.evaluation.evaluator import run_evaluation
    from histolib_train.evaluation.options import EvaluateOptions

    eval_dir = demo.out / "evaluation"
    with demo.stage("evaluate"):
        demo.res.summary = run_evaluation(
            [str(checkpoint)],
            out=eval_dir,
            manifest=held.manifest,
            options=EvaluateOptions(  # a slide held out whole: any tile, any label, uniformly
                split="all",
                labels=("all",),
                balance=False,
                n_tiles=40,
                seed=demo.seed,
                device=demo.device,
            ),
        )
    demo.res.artefacts["evaluation folder"] = eval_dir
    demo.log(f"[7/9] evaluation: {eval_dir / 'table.md'}")
    return eval_dir


def _view(demo: _Demo, held: _Domain, virtual: Path, eval_dir: Path) -> Path:
    """8. The held-out slide and its virtual IHC side by side, as a static folder (``histolib
    view --export``); returns its page."""
    from histolib.view import ViewOptions, export

    with demo.stage("view"):
        options = ViewOptions(
            slide=held.slide.slide_path,
            virtual=virtual,
            annotations=held.slide.annotations_path,
            tiles=held.manifest,
            evaluation=eval_dir,
            title="held-out H&E and its virtual IHC",
        )
        page = export(demo.out / "view", options)
    demo.res.artefacts["side-by-side viewer (histolib view --export)"] = page
    demo.log(f"[8/9] side-by-side viewer: {page}")
    return page


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
    from histolib.core.parallel import default_workers
    from histolib_train.demo.report import write_report

    out = ensure_writable_dir(out)
    res = DemoResult(out=out, report=out / "report.html")
    demo = _Demo(out, seed, device, default_workers(cap=DEMO_MAX_WORKERS), log, res)
    domains = _synthesise(demo, slide_px=slide_px, heldout_px=heldout_px)
    _tile(demo, domains)
    _libraries(demo, domains)
    _export(demo, domains)
    checkpoint, steps = _train(demo, domains, minutes=minutes)
    thumbnail = _transfer(demo, domains["held"], checkpoint)
    eval_dir = _evaluate(demo, domains["held"], checkpoint)
    virtual = res.artefacts["virtual IHC slide (pyramidal TIFF)"]
    view_page = _view(demo, domains["held"], virtual, eval_dir)
    he, ihc = domains["he"], domains["ihc"]
    write_report(
        res,
        he_manifest=he.manifest,
        ihc_manifest=ihc.manifest,
        he_lib=he.library,
        ihc_lib=ihc.library,
        run_dir=out / "run",
        eval_dir=eval_dir,
        virtual_thumb=thumbnail,
        train_steps=steps,
        view_page=view_page,
    )
    log(f"[9/9] report: {res.report}")
    return res
