"""``histolib info``: what a slide holds, and what an annotation file holds for it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from histolib_cli.common import cli_errors, out_console, warn


def slide_info(
    slide_path: Path, *, slide_mpp: float | None = None, annotations: Path | None = None
) -> dict[str, Any]:
    """Collect the facts ``histolib info`` shows, as a JSON-ready dict.

    A slide without mpp is described with mpp None ("unknown"); an mpp outside the plausible
    range of microscopy is shown with ``mpp_plausible`` False (other commands refuse it)."""
    from histolib.slide.mpp import is_plausible
    from histolib.slide.reader import open_slide

    with open_slide(slide_path, mpp=slide_mpp, require_mpp=False) as slide:
        info: dict[str, Any] = slide.metadata()
        dimensions = slide.dimensions
    info["mpp_plausible"] = None if info["mpp"] is None else is_plausible(info["mpp"])
    if annotations is not None:
        from histolib.annotations.reading import read_annotations_report
        from histolib.annotations.regions import summarize

        items, notes = read_annotations_report(annotations)
        summary = summarize(items, slide_dimensions=dimensions)
        summary["path"] = str(annotations)
        summary["notes"] = notes
        info["annotations"] = summary
    return info


def _fmt(value: Any, spec: str = "g") -> str:
    return "unknown" if value is None else format(value, spec)


def _print(info: dict[str, Any]) -> None:
    from rich.table import Table

    console = out_console()
    overview = Table(title=f"slide {info['slide_id']}", show_header=False, title_justify="left")
    overview.add_column(style="bold")
    overview.add_column()
    w, h = info["dimensions"]
    overview.add_row("path", info["path"])
    overview.add_row("vendor", info["vendor"])
    overview.add_row("size", f"{w} x {h} px (level 0)")
    mpp = info.get("mpp")
    source = info.get("mpp_source")
    overview.add_row(
        "mpp",
        f"{_fmt(mpp, '.4g')} um/px" + (f" (from {source})" if source else "")
        if mpp is not None
        else "unknown",
    )
    if mpp:
        overview.add_row("extent", f"{w * mpp / 1000:.2f} x {h * mpp / 1000:.2f} mm")
    if info.get("mpp_plausible") is False:
        from histolib.slide.mpp import MAX_MPP, MIN_MPP

        warn(
            f"{info['path']}: mpp {mpp:.4g} um/px is outside the plausible range of microscopy "
            f"({MIN_MPP:g}..{MAX_MPP:g} um/px); other commands refuse it: give the true value "
            "with --slide-mpp"
        )
    elif mpp is None:
        warn(f"{info['path']}: the slide records no mpp; other commands need --slide-mpp")
    objective = info.get("objective_power")
    overview.add_row("objective", "unknown" if objective is None else f"{_fmt(objective)}x")
    overview.add_row("associated images", ", ".join(info["associated_images"]) or "none")
    console.print(overview)

    levels = Table(title="levels", title_justify="left")
    for col in ("level", "width", "height", "downsample", "mpp"):
        levels.add_column(col, justify="right")
    for i, ((lw, lh), ds) in enumerate(
        zip(info["level_dimensions"], info["level_downsamples"], strict=True)
    ):
        levels.add_row(
            str(i), str(lw), str(lh), f"{ds:.4g}", _fmt(mpp * ds if mpp else None, ".4g")
        )
    console.print(levels)

    ann = info.get("annotations")
    if ann is None:
        return
    table = Table(title=f"annotations {ann['path']}", title_justify="left")
    table.add_column("object type")
    table.add_column("class")
    table.add_column("count", justify="right")
    for row in ann["by_type_and_class"]:
        table.add_row(row["type"], row["class"], str(row["count"]))
    console.print(table)
    geometry = ", ".join(f"{n} {kind}" for kind, n in ann["by_geometry"].items()) or "none"
    console.print(f"objects: {ann['count']} ({geometry})")
    if ann["bounds"] is not None:
        from histolib.annotations.regions import format_px

        x0, y0, x1, y1 = (format_px(v, decimals=1) for v in ann["bounds"])
        console.print(f"bounds: x {x0} .. {x1}, y {y0} .. {y1} (level-0 px)")
    if ann["count"]:
        if ann["inside"]:
            console.print("[green]inside the slide[/]")
        else:
            console.print(
                f"[bold red]{ann['outside']} object(s) lie outside the slide[/] "
                f"({w} x {h} px): contours of another slide or another resolution?"
            )
    for note in ann["notes"]:
        warn(f"{ann['path']}: {note}")


def info_command(
    slide: Path = typer.Argument(..., help="A slide (any OpenSlide format, or a plain image)."),
    slide_mpp: float | None = typer.Option(
        None, "--slide-mpp", help="Level-0 um/px; overrides or supplies the slide's mpp."
    ),
    annotations: Path | None = typer.Option(
        None,
        "--annotations",
        help="A contour file (QuPath GeoJSON, ASAP or ImageScope XML) to describe against the "
        "slide.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Show a slide's vendor, size, levels, mpp, objective and associated images.

    With --annotations, also what the contour file holds: counts by object type and class,
    bounds, and whether it lies inside the slide.
    """
    with cli_errors():
        info = slide_info(slide, slide_mpp=slide_mpp, annotations=annotations)
        if as_json:
            typer.echo(json.dumps(info, indent=2))
        else:
            _print(info)


def register(app: typer.Typer) -> None:
    """Add ``histolib info``."""
    app.command("info")(info_command)
