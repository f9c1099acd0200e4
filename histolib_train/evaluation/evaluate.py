"""The paper's evaluation (Boyd et al. 2022, section 5.1): virtual IHC DAB mask vs annotation.

For each held-out H&E tile with an expert tumour mask, every generator synthesises IHC; the DAB
mask of the virtual IHC is derived exactly as for real IHC tiles
(``histolib.stain.dab_mask(histolib.stain.separate(rgb).d)``, the function the cell-library
builder uses) and compared pixel by pixel with the expert mask: DICE and balanced accuracy,
with the empty-mask convention of :mod:`histolib.metrics`. Results are reported as mean +- std
over tiles, over all tiles and over the tumour tiles (non-empty annotation) alone.

The core, :func:`evaluate_generators`, takes any callable ``(N, H, W, 3) uint8 -> same`` per
model name, so a "perfect" or a blank generator can be scored like a checkpoint.

Outputs in ``out``: ``tiles.csv`` (one row per checkpoint and tile), ``summary.json``,
``table.md`` (the layout of the paper's Table 1) and ``panel.png`` (the layout of its Fig. 3).
Per-checkpoint results are cached in ``out/cache`` so that a re-run with the same checkpoint
file and tiles does not run that model again.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from histolib.core.atomic import ensure_writable_dir, write_text
from histolib.errors import ConfigError, ImageError, InputError, ManifestError
from histolib.metrics import mean_std, score_masks

GeneratorFn = Callable[[np.ndarray], np.ndarray]

#: The paper's Table 1 figures for the proposed model (DESIGN.md section 6): the target.
PAPER_TARGET = {
    "GR (private)": {"dice": (0.536, 0.360), "bac": (0.634, 0.221)},
    "CAMELYON16": {"dice": (0.533, None), "bac": (0.615, None)},
}
CONVENTION = (
    "DICE = 2|P&T|/(|P|+|T|), 1 when both masks are empty, 0 when exactly one is. "
    "BAC = mean of the defined terms among sensitivity TP/(TP+FN) and specificity "
    "TN/(TN+FP): an empty annotation leaves specificity alone."
)
CSV_COLUMNS = (
    "checkpoint",
    "tile_id",
    "slide_id",
    "dice",
    "bac",
    "sensitivity",
    "specificity",
    "tp",
    "fp",
    "fn",
    "tn",
    "pred_fraction",
    "truth_fraction",
)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
OUTLINE_COLOUR = (0, 200, 0)


@dataclass
class EvalTile:
    """One H&E tile and its expert tumour mask (True = tumour)."""

    tile_id: str
    rgb: np.ndarray
    mask: np.ndarray
    slide_id: str = ""


# --------------------------------------------------------------------------------------------
# Masks


def virtual_dab_mask(rgb: np.ndarray) -> np.ndarray:
    """The DAB mask of an (virtual or real) IHC tile: ``dab_mask(separate(rgb).d)``."""
    from histolib.stain import dab_mask, separate

    return dab_mask(separate(rgb, channels="d").d)


def _read_image(path: Path) -> np.ndarray:
    from histolib.tiles.images import read_rgb

    return read_rgb(path)


def _read_mask(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("L")) > 0
    except (UnidentifiedImageError, OSError) as exc:
        raise ImageError(f"cannot read mask ({exc})", path=path) from exc


def _choose(n_total: int, n_tiles: int | None, seed: int) -> list[int]:
    """Sorted indices of a seeded random subset of ``n_tiles`` (all when fewer)."""
    if n_tiles is None or n_tiles >= n_total:
        return list(range(n_total))
    if n_tiles < 1:
        raise ConfigError(f"--n-tiles must be >= 1, got {n_tiles}")
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(n_total, size=n_tiles, replace=False))


# --------------------------------------------------------------------------------------------
# Tile sources


def load_folder_tiles(
    images: str | Path, masks: str | Path, *, n_tiles: int | None = 500, seed: int = 0
) -> list[EvalTile]:
    """H&E tiles of a folder with their masks (same file stem in ``masks``; > 0 = tumour).

    Raises
    ------
    InputError
        When a folder is missing or empty, or an image has no mask.
    ImageError
        When a mask's size differs from its image's.
    """
    images, masks = Path(images), Path(masks)
    for folder in (images, masks):
        if not folder.is_dir():
            raise InputError("no such folder", path=folder)
    files = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError("folder holds no image tiles", path=images)
    by_stem: dict[str, Path] = {}
    for p in masks.iterdir():
        if p.suffix.lower() in IMAGE_SUFFIXES:
            by_stem.setdefault(p.stem, p)
            if p.stem.endswith("_mask"):
                by_stem.setdefault(p.stem[: -len("_mask")], p)
    missing = [p.name for p in files if p.stem not in by_stem]
    if missing:
        raise InputError(
            f"{len(missing)} tile(s) have no mask of the same name in {masks} "
            f"(first: {missing[0]})",
            path=images,
        )
    tiles = []
    for index in _choose(len(files), n_tiles, seed):
        path = files[index]
        rgb = _read_image(path)
        mask = _read_mask(by_stem[path.stem])
        if mask.shape != rgb.shape[:2]:
            raise ImageError(
                f"mask is {mask.shape[1]}x{mask.shape[0]} but its tile is "
                f"{rgb.shape[1]}x{rgb.shape[0]}",
                path=by_stem[path.stem],
            )
        tiles.append(EvalTile(path.stem, rgb, mask, slide_id=path.stem))
    return tiles


def load_manifest_tiles(
    manifest: str | Path,
    *,
    annotations: str | Path | None = None,
    positive_classes: Sequence[str] | None = None,
    labels: Sequence[str] | None = None,
    n_tiles: int | None = 500,
    seed: int = 0,
) -> list[EvalTile]:
    """H&E tiles of a tile manifest with masks rasterised from their slides' contours.

    Parameters
    ----------
    manifest
        ``tiles.parquet`` from ``histolib tile``; its H&E rows are used.
    annotations
        QuPath GeoJSON file or folder (``<slide_id>.geojson``); default: the one recorded in
        the manifest's parameters.
    positive_classes
        Annotation classes that mean tumour; default: the manifest's, else every annotation.
    labels
        Keep only rows with these labels (e.g. ``positive negative``); default all.
    n_tiles, seed
        Seeded random subset size.

    Raises
    ------
    ManifestError
        When the manifest has no H&E tiles or no annotation source is known.
    """
    from histolib.annotations.reading import rasterize, read_annotations, tumour_region
    from histolib.tiles.manifest import (
        read_manifest,
        recorded_annotations,
        slide_annotation_file,
        tile_image_path,
    )

    manifest = Path(manifest)
    gdf, meta = read_manifest(manifest)
    params = meta.get("params", {}) if isinstance(meta, dict) else {}
    rows = gdf[gdf["stain"] == "he"]
    if labels and not rows.empty:
        present = sorted(set(rows["label"].astype(str)))
        rows = rows[rows["label"].isin(list(labels))]
        if rows.empty:
            raise ManifestError(
                f"no H&E tile has the label {' or '.join(labels)} (labels here: "
                f"{', '.join(present)})",
                path=manifest,
            )
    if rows.empty:
        raise ManifestError("manifest has no H&E tiles to evaluate", path=manifest)
    source = annotations if annotations else recorded_annotations(meta)
    if source is None:
        raise ManifestError(
            "no annotations recorded in the manifest: give --annotations FILE_OR_DIR",
            path=manifest,
        )
    if positive_classes is None and isinstance(params, dict):
        positive_classes = params.get("positive_classes") or None
    regions: dict[str, Any] = {}
    tiles: list[EvalTile] = []
    skipped = 0
    rows = rows.reset_index(drop=True)
    for index in _choose(len(rows), n_tiles, seed):
        row = rows.iloc[index]
        slide_id = str(row["slide_id"])
        if slide_id not in regions:
            found = slide_annotation_file(source, slide_id, base=manifest.resolve().parent)
            regions[slide_id] = (
                None
                if found is None
                else (tumour_region(read_annotations(found), classes=positive_classes),)
            )
        if regions[slide_id] is None:
            skipped += 1
            continue
        size = int(row["size_px"])
        if str(row["path"]):
            rgb = _read_image(tile_image_path(manifest, row))
        else:
            from histolib.slide.reader import open_slide

            slide_mpp = float(row["mpp"]) / float(row["downsample"])
            with open_slide(row["slide_path"], mpp=slide_mpp) as slide:
                rgb = slide.read_region(
                    float(row["x0"]), float(row["y0"]), size=size, mpp=float(row["mpp"])
                )
        mask = rasterize(
            regions[slide_id][0],
            x0=float(row["x0"]),
            y0=float(row["y0"]),
            downsample=float(row["downsample"]),
            shape=rgb.shape[:2],
        )
        tiles.append(EvalTile(str(row["tile_id"]), np.asarray(rgb), mask, slide_id=slide_id))
    if not tiles:
        raise ManifestError(
            f"none of the selected tiles' slides has an annotation file in {source}",
            path=manifest,
        )
    return tiles


def load_real_ihc(source: str | Path, *, n_tiles: int | None = 500, seed: int = 0) -> list[Any]:
    """Real IHC tiles ``(tile_id, rgb)`` from a manifest (its IHC rows) or a folder of images."""
    from histolib.tiles.manifest import read_manifest, tile_image_path

    source = Path(source)
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise InputError("folder holds no image tiles", path=source)
        return [(files[i].stem, _read_image(files[i])) for i in _choose(len(files), n_tiles, seed)]
    gdf, _ = read_manifest(source)
    rows = gdf[(gdf["stain"] == "ihc") & (gdf["path"].astype(str) != "")].reset_index(drop=True)
    if rows.empty:
        raise ManifestError("manifest has no written IHC tiles", path=source)
    return [
        (str(rows.iloc[i]["tile_id"]), _read_image(tile_image_path(source, rows.iloc[i])))
        for i in _choose(len(rows), n_tiles, seed)
    ]


# --------------------------------------------------------------------------------------------
# Scoring


def score_generator(
    generator: GeneratorFn,
    tiles: Sequence[EvalTile],
    *,
    batch_size: int = 8,
    on_batch: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
    """Per-tile scores of one generator: DICE, BAC, sensitivity, specificity, counts.

    Tiles are grouped into batches of equal shape for the generator.
    """
    rows: list[dict[str, Any]] = []
    start = 0
    while start < len(tiles):
        shape = tiles[start].rgb.shape
        end = start
        while end < len(tiles) and end - start < batch_size and tiles[end].rgb.shape == shape:
            end += 1
        chunk = tiles[start:end]
        fakes = np.asarray(generator(np.stack([t.rgb for t in chunk])))
        for tile, fake in zip(chunk, fakes, strict=True):
            scores = score_masks(virtual_dab_mask(fake), tile.mask)
            rows.append({"tile_id": tile.tile_id, "slide_id": tile.slide_id, **scores.as_dict()})
        if on_batch is not None:
            on_batch(len(chunk))
        start = end
    return rows


def summarise(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean +- std of DICE, BAC and the positive fractions, over all and over tumour tiles."""
    tumour = [r for r in rows if r["tp"] + r["fn"] > 0]

    def stats(subset: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {"n_tiles": len(subset)}
        for key in ("dice", "bac", "sensitivity", "specificity", "pred_fraction"):
            mean, std, n = mean_std(r[key] for r in subset)
            out[key] = {"mean": mean, "std": std, "n": n}
        return out

    return {
        "all": stats(rows),
        "tumour_tiles": stats(tumour),
        "empty_annotation_tiles": len(rows) - len(tumour),
        "empty_prediction_tiles": sum(1 for r in rows if r["tp"] + r["fp"] == 0),
    }


def real_ihc_statistics(tiles: Sequence[Any]) -> dict[str, Any]:
    """DAB-mask statistics of real IHC tiles (no annotation exists for them)."""
    from histolib.stain import dab_mask_details, separate

    fractions, zeroed = [], 0
    for _, rgb in tiles:
        details = dab_mask_details(separate(rgb, channels="d").d)
        fractions.append(float(details.mask.mean()))
        zeroed += int(details.zeroed)
    mean, std, n = mean_std(fractions)
    return {
        "n_tiles": n,
        "pred_fraction": {"mean": mean, "std": std, "n": n},
        "empty_prediction_tiles": sum(1 for f in fractions if f == 0),
        "emptied_by_no_stain_rule": zeroed,
    }


# --------------------------------------------------------------------------------------------
# Reports


def _fmt(stat: Mapping[str, Any]) -> str:
    mean, std = stat["mean"], stat["std"]
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    return f"{mean:.3f} ± {std:.3f}"


def table_markdown(summary: Mapping[str, Any]) -> str:
    """The paper's Table 1 layout: one row per checkpoint, mean +- std of DICE and BAC."""
    lines = [
        f"Virtual IHC DAB mask vs expert annotation, {summary['n_tiles']} H&E tiles "
        f"(mean ± std over tiles).",
        "",
        "| model | DICE | BAC | DICE (tumour tiles) | BAC (tumour tiles) | DAB fraction |",
        "|---|---|---|---|---|---|",
    ]
    for name, result in summary["checkpoints"].items():
        a, t = result["all"], result["tumour_tiles"]
        lines.append(
            f"| {name} | {_fmt(a['dice'])} | {_fmt(a['bac'])} | {_fmt(t['dice'])} | "
            f"{_fmt(t['bac'])} | {_fmt(a['pred_fraction'])} |"
        )
    real = summary.get("real_ihc")
    if real:
        lines.append(
            f"| real IHC ({real['n_tiles']} tiles, mask statistics only) | – | – | – | – | "
            f"{_fmt(real['pred_fraction'])} |"
        )
    lines += [
        "",
        f"Convention: {CONVENTION}",
        "",
        "Paper target (Boyd et al. 2022, Table 1, proposed model): DICE 0.536 ± 0.360, "
        "BAC 0.634 ± 0.221 on its private GR data; DICE 0.533, BAC 0.615 on CAMELYON16.",
        "",
    ]
    return "\n".join(lines)


def _outline(rgb: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    from skimage.segmentation import find_boundaries

    out = rgb.copy()
    out[find_boundaries(mask, mode="thick")] = colour
    return out


def write_panel(
    path: Path,
    tiles: Sequence[EvalTile],
    fakes: Mapping[str, Sequence[np.ndarray]],
) -> Path:
    """Paper Fig. 3 layout: a row per tile; H&E, annotation, then one virtual IHC per model.

    The DAB mask of each virtual IHC is outlined in green.
    """
    from PIL import Image, ImageDraw

    from histolib.core.atomic import atomic_path

    side = max(max(t.rgb.shape[:2]) for t in tiles) if tiles else 256
    gap, header = 4, 24
    cell = side + gap
    names = ["H&E", "annotation", *fakes]
    canvas = Image.new("RGB", (cell * len(names), header + cell * len(tiles)), "white")
    draw = ImageDraw.Draw(canvas)
    for col, name in enumerate(names):
        draw.text((col * cell + 4, 6), str(name)[: max(8, side // 7)], fill=(0, 0, 0))
    for row, tile in enumerate(tiles):
        mask_rgb = np.repeat((tile.mask * 255).astype(np.uint8)[..., None], 3, axis=2)
        columns = [tile.rgb, mask_rgb]
        for name in fakes:
            fake = np.asarray(fakes[name][row])
            columns.append(_outline(fake, virtual_dab_mask(fake), OUTLINE_COLOUR))
        for col, image in enumerate(columns):
            canvas.paste(Image.fromarray(image), (col * cell, header + row * cell))
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")
    return path


def _write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(CSV_COLUMNS), extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    write_text(path, buffer.getvalue())


def _panel_tiles(tiles: Sequence[EvalTile], count: int) -> list[int]:
    """Indices of up to ``count`` tiles for the panel: tumour boundaries first, then the rest."""
    fractions = [float(t.mask.mean()) for t in tiles]
    boundary = [i for i, f in enumerate(fractions) if 0.05 < f < 0.95]
    tumour = [i for i, f in enumerate(fractions) if f >= 0.95]
    other = [i for i, f in enumerate(fractions) if f <= 0.05]
    return sorted((boundary + tumour + other)[:count])


def _cache_key(name: str, fingerprint: str, tiles: Sequence[EvalTile]) -> str:
    digest = hashlib.sha256(fingerprint.encode())
    for tile in tiles:
        digest.update(tile.tile_id.encode() + b"\0")
        digest.update(hashlib.sha1(tile.mask.tobytes()).digest())
    return f"{name}:{digest.hexdigest()[:24]}"


def evaluate_generators(
    generators: Mapping[str, GeneratorFn],
    tiles: Sequence[EvalTile],
    *,
    out: str | Path,
    batch_size: int = 8,
    real_ihc: Sequence[Any] | None = None,
    panel_count: int = 4,
    fingerprints: Mapping[str, str] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Score each generator on ``tiles`` and write the reports into ``out``.

    Parameters
    ----------
    generators
        Model name -> callable ``(N, H, W, 3) uint8 -> same`` (a checkpoint's generator or any
        stand-in).
    tiles
        H&E tiles with their expert masks.
    out
        Output folder: ``tiles.csv``, ``summary.json``, ``table.md``, ``panel.png``.
    batch_size
        Tiles per generator call.
    real_ihc
        Optional ``(tile_id, rgb)`` real IHC tiles: their DAB-mask statistics as a sanity row.
    panel_count
        Tiles (rows) in ``panel.png``.
    fingerprints
        Model name -> a string identifying the model (e.g. checkpoint path, size, mtime): when
        given, that model's per-tile results are cached in ``out/cache`` and reused by a
        re-run over the same tiles.
    progress
        Show a Rich progress bar.

    Returns
    -------
    dict
        The summary written to ``summary.json``.
    """
    from histolib.core.progress import make_progress

    if not tiles:
        raise InputError("no tiles to evaluate")
    if not generators:
        raise ConfigError("no model to evaluate")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
    out = ensure_writable_dir(out)
    cache_dir = out / "cache"
    all_rows: list[dict[str, Any]] = []
    summary: dict[str, Any] = {
        "n_tiles": len(tiles),
        "convention": CONVENTION,
        "mask": "histolib.stain.dab_mask(histolib.stain.separate(rgb).d), default parameters",
        "paper_target": {
            k: {m: {"mean": v[0], "std": v[1]} for m, v in d.items()}
            for k, d in PAPER_TARGET.items()
        },
        "checkpoints": {},
    }
    panel_index = _panel_tiles(tiles, panel_count)
    panel_batch = np.stack([tiles[i].rgb for i in panel_index]) if panel_index else None
    panel_fakes: dict[str, Any] = {}
    with make_progress(disable=not progress) as bar:
        for name, generator in generators.items():
            key = None
            rows = None
            if fingerprints and name in fingerprints:
                key = _cache_key(name, fingerprints[name], tiles)
                cache_file = cache_dir / (hashlib.sha1(name.encode()).hexdigest()[:16] + ".json")
                if cache_file.is_file():
                    try:
                        cached = json.loads(cache_file.read_text())
                    except (OSError, ValueError):
                        cached = {}
                    if cached.get("key") == key:
                        rows = cached["rows"]
            if rows is None:
                task = bar.add_task(f"evaluate {name}", total=len(tiles))
                rows = score_generator(
                    generator,
                    tiles,
                    batch_size=batch_size,
                    on_batch=lambda n, task=task: bar.advance(task, n),
                )
                if key is not None:
                    cache_dir.mkdir(exist_ok=True)
                    write_text(cache_file, json.dumps({"key": key, "rows": rows}))
            for row in rows:
                row["checkpoint"] = name
            all_rows.extend(rows)
            summary["checkpoints"][name] = summarise(rows)
            if panel_batch is not None:
                panel_fakes[name] = list(np.asarray(generator(panel_batch)))
    if real_ihc:
        summary["real_ihc"] = real_ihc_statistics(real_ihc)
    _write_csv(out / "tiles.csv", all_rows)
    write_text(out / "summary.json", json.dumps(_json_ready(summary), indent=2) + "\n")
    write_text(out / "table.md", table_markdown(summary))
    if panel_index:
        write_panel(out / "panel.png", [tiles[i] for i in panel_index], panel_fakes)
    return summary


def _json_ready(value: Any) -> Any:
    """NaN -> None (JSON has no NaN), recursively."""
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


# --------------------------------------------------------------------------------------------
# Checkpoints


def checkpoint_labels(checkpoints: Sequence[str]) -> list[tuple[str, Path]]:
    """``NAME=PATH`` or ``PATH`` arguments -> unique ``(name, path)`` pairs.

    A bare path is named by the shortest trailing part of its path that is unique among the
    checkpoints (``runs/a/checkpoints/latest.pt`` and ``runs/b/...`` -> ``a/...``).
    """
    pairs: list[tuple[str | None, Path]] = []
    for spec in checkpoints:
        name, sep, rest = str(spec).partition("=")
        if sep and name and not Path(spec).exists():
            pairs.append((name, Path(rest)))
        else:
            pairs.append((None, Path(spec)))
    paths = [p.resolve() for _, p in pairs]
    labels: list[str] = []
    for (name, _), path in zip(pairs, paths, strict=True):
        if name:
            labels.append(name)
            continue
        parts = path.with_suffix("").parts if path.suffix == ".pt" else path.parts
        for depth in range(1, len(parts) + 1):
            label = "/".join(parts[-depth:])
            clash = [
                q
                for q in paths
                if q != path
                and "/".join((q.with_suffix("").parts if q.suffix == ".pt" else q.parts)[-depth:])
                == label
            ]
            if not clash:
                break
        labels.append(label)
    if len(set(labels)) != len(labels):
        raise ConfigError(f"two checkpoints have the same name: {labels}")
    return list(zip(labels, [p for _, p in pairs], strict=True))


def run_evaluation(
    checkpoints: Sequence[str],
    *,
    out: str | Path,
    manifest: str | Path | None = None,
    images: str | Path | None = None,
    masks: str | Path | None = None,
    annotations: str | Path | None = None,
    positive_classes: Sequence[str] | None = None,
    labels: Sequence[str] | None = None,
    n_tiles: int | None = 500,
    seed: int = 0,
    device: str = "auto",
    batch_size: int = 8,
    real_ihc: str | Path | None = None,
    direction: str = "he2ihc",
    progress: bool = False,
) -> dict[str, Any]:
    """Evaluate checkpoints (files or run folders) on a manifest or an images/masks folder pair.

    Raises
    ------
    ConfigError
        For a missing or contradictory tile source.
    CheckpointError
        For a corrupt checkpoint or one of another kind.
    """
    from histolib_train.checkpoint import resolve_checkpoint_path
    from histolib_train.transfer.generator import load_transfer_generator

    if (manifest is None) == (images is None):
        raise ConfigError("give either --tiles MANIFEST or --images DIR with --masks DIR")
    if images is not None and masks is None:
        raise ConfigError("--images needs --masks DIR (the expert masks, same file names)")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
    named = checkpoint_labels(checkpoints)
    generators: dict[str, GeneratorFn] = {}
    fingerprints: dict[str, str] = {}
    for name, path in named:
        resolved = resolve_checkpoint_path(path)
        generator, _ = load_transfer_generator(resolved, direction=direction, device=device)
        generators[name] = generator
        stat = resolved.stat()
        fingerprints[name] = f"{resolved.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{direction}"
    if manifest is not None:
        tiles = load_manifest_tiles(
            manifest,
            annotations=annotations,
            positive_classes=positive_classes,
            labels=labels,
            n_tiles=n_tiles,
            seed=seed,
        )
    else:
        tiles = load_folder_tiles(images, masks, n_tiles=n_tiles, seed=seed)  # type: ignore[arg-type]
    real = load_real_ihc(real_ihc, n_tiles=n_tiles, seed=seed) if real_ihc else None
    summary = evaluate_generators(
        generators,
        tiles,
        out=out,
        batch_size=batch_size,
        real_ihc=real,
        fingerprints=fingerprints,
        progress=progress,
    )
    summary["checkpoint_paths"] = {name: str(path) for name, path in named}
    write_text(Path(out) / "summary.json", json.dumps(_json_ready(summary), indent=2) + "\n")
    return summary
