"""Helpers for the transfer and evaluation tests: textured slides, tiny checkpoints, generators."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

TINY_CONFIG = {"n_blocks": 1, "ngf": 8, "upsample": "nearest", "mpp": 0.5, "tile_size": 64}


def texture_patch(size: int = 40, *, seed: int = 0) -> np.ndarray:
    """A smooth, tissue-coloured RGB patch that tiles seamlessly (periodic noise)."""
    rng = np.random.default_rng(seed)
    spectrum = rng.normal(size=(size, size, 3)) + 1j * rng.normal(size=(size, size, 3))
    freq = np.fft.fftfreq(size)
    radius = np.hypot(freq[:, None], freq[None, :])[..., None]
    spectrum *= np.exp(-((radius / 0.08) ** 2))  # keep low frequencies only: smooth texture
    noise = np.real(np.fft.ifft2(spectrum, axes=(0, 1)))
    noise = (noise - noise.mean()) / (noise.std() + 1e-9)
    base = np.array([215.0, 150.0, 190.0])  # pinkish H&E-like colour
    return np.clip(base + 20.0 * noise, 0, 255).astype(np.uint8)


def write_pyramid(path: Path, rgb: np.ndarray, *, mpp: float = 0.5) -> Path:
    """Save an RGB array as a pyramidal tiled TIFF with its mpp (OpenSlide reads it)."""
    import pyvips

    from histolib.slide.pyramid import save_pyramidal_tiff

    image = pyvips.Image.new_from_array(np.ascontiguousarray(rgb), interpretation="srgb")
    save_pyramidal_tiff(image, path, mpp=mpp)
    return path


def textured_slide(
    path: Path,
    *,
    width: int = 640,
    height: int = 480,
    mpp: float = 0.5,
    background: tuple[int, int, int, int] | None = None,
    period: int = 40,
) -> Path:
    """A slide made of one texture repeated every ``period`` px.

    ``background=(x0, y0, x1, y1)`` leaves a white (glass) box.
    """
    patch = texture_patch(period)
    reps = (height // patch.shape[0] + 1, width // patch.shape[1] + 1, 1)
    rgb = np.tile(patch, reps)[:height, :width].copy()
    if background is not None:
        x0, y0, x1, y1 = background
        rgb[y0:y1, x0:x1] = 255
    return write_pyramid(path, rgb, mpp=mpp)


def tiny_checkpoint(path: Path, *, model: str = "roi", seed: int = 0, **config: Any) -> Path:
    """Write a checkpoint in the histolib layout holding two tiny random generators."""
    import torch

    from histolib_train.models.networks import ResnetGenerator

    cfg = {**TINY_CONFIG, **config}
    torch.manual_seed(seed)
    nets = {
        name: ResnetGenerator(
            n_blocks=cfg["n_blocks"], ngf=cfg["ngf"], upsample=cfg["upsample"]
        ).state_dict()
        for name in ("G_he2ihc", "G_ihc2he")
    }
    state = {
        "format": "histolib-cyclegan",
        "format_version": 1,
        "model": model,
        "config": cfg,
        "step": 1,
        "epoch": 1,
        "nets": nets,
        "optimizers": {},
        "schedulers": {},
        "scaler": {},
        "rng": {"torch": torch.get_rng_state()},
    }
    torch.save(state, path)
    return path


def tinted_generator(seed: int = 0):
    """A generator stand-in with hard per-window differences: each window gets its own tint.

    The worst case for seams (like instance-norm statistics that differ from window to
    window); identity otherwise.
    """
    rng = np.random.default_rng(seed)

    def generate(batch: np.ndarray) -> np.ndarray:
        tint = rng.uniform(-25, 25, size=(batch.shape[0], 1, 1, 3))
        return np.clip(batch.astype(np.float32) + tint, 0, 255).astype(np.uint8)

    return generate


def identity_generator(batch: np.ndarray) -> np.ndarray:
    """Returns its input: a transfer with it reproduces the slide."""
    return np.asarray(batch).copy()


def border_and_interior_differences(
    rgb: np.ndarray, *, starts: list[int], tile_size: int
) -> tuple[float, float]:
    """Mean absolute horizontal neighbour difference across window edges and elsewhere.

    Window edges are the columns where a window starts or ends (``start`` and ``start +
    tile_size``): the pair (edge - 1, edge). Returns ``(across_borders, within_windows)``.
    """
    image = rgb.astype(np.float32)
    diffs = np.abs(image[:, 1:] - image[:, :-1]).mean(axis=(0, 2))  # diffs[c] = |c+1 - c|
    edges = {s for s in starts if s > 0} | {s + tile_size for s in starts}
    border_cols = sorted(e - 1 for e in edges if 0 < e < rgb.shape[1])
    mask = np.zeros(diffs.shape[0], bool)
    mask[border_cols] = True
    return float(diffs[mask].mean()), float(diffs[~mask].mean())


# --------------------------------------------------------------------------------------------
# Evaluation: synthetic tiles whose truth is known


def true_ihc(layout: Any, x0: int, y0: int, size: int) -> np.ndarray:
    """The IHC of a synthetic region as a cytokeratin stain shows a tumour: DAB over all of it.

    ``histolib.synthetic.slides.render_region(..., stain="ihc")`` puts DAB only in the cytoplasm of
    cancer cells (a few per cent of a tumour's area), which the authors' mask rule (mean DAB
    image > 0.85: no stain) empties; the stand-in adds DAB optical density over the true
    tumour region of the layout, so that its DAB mask is the truth up to the mask's
    smoothing and closing.
    """
    from skimage.color import hed2rgb, rgb2hed

    from histolib.synthetic import render_region, tumour_mask

    ihc = render_region(layout, x0, y0, size, size, stain="ihc")
    hed = rgb2hed(ihc)
    hed[..., 2] += 0.12 * tumour_mask(layout, x0, y0, size, size)
    return (np.clip(hed2rgb(hed), 0, 1) * 255).round().astype(np.uint8)


def synthetic_eval_tiles(
    root: Path, *, size: int = 128, seed: int = 5, extent: int = 1024, max_empty: int = 6
) -> tuple[Any, list[Any], dict[bytes, np.ndarray], Path]:
    """Tiles of a synthetic layout, masks rasterised from its GeoJSON via
    histolib.annotations.reading.

    Keeps tumour-free tiles and tiles at least 40 % tumour (below that the authors' no-stain
    rule empties even a perfect DAB mask), at most ``max_empty`` of the former. Returns
    ``(layout, tiles, truth, geojson)`` where ``truth`` maps each H&E tile's bytes to its
    true IHC (for a lookup "perfect generator").
    """
    from histolib.annotations import rasterize, read_annotations, tumour_region
    from histolib.synthetic import make_layout, render_region, tissue_mask
    from histolib.synthetic.slides import write_tumour_geojson
    from histolib_train.evaluation.tiles import EvalTile

    layout = make_layout(extent, extent, seed=seed)
    geojson = write_tumour_geojson(layout, root / "slide.geojson")
    region = tumour_region(read_annotations(geojson), classes=["Tumor"])
    tiles, truth = [], {}
    n_empty = 0
    for y0 in range(0, extent - size + 1, size):
        for x0 in range(0, extent - size + 1, size):
            mask = rasterize(region, x0=x0, y0=y0, downsample=1.0, shape=(size, size))
            fraction = float(mask.mean())
            if 0 < fraction < 0.4:
                continue
            if tissue_mask(layout, x0, y0, size, size).mean() < 0.5:  # mostly glass
                continue
            if fraction == 0 and n_empty >= max_empty:
                continue
            n_empty += fraction == 0
            he = render_region(layout, x0, y0, size, size, stain="he")
            tiles.append(EvalTile(f"slide_x{x0}_y{y0}_s{size}", he, mask, slide_id="slide"))
            truth[he.tobytes()] = true_ihc(layout, x0, y0, size)
    return layout, tiles, truth, geojson


def lookup_generator(truth: dict[bytes, np.ndarray]):
    """A "perfect generator": returns the true IHC of each H&E tile it is given."""

    def generate(batch: np.ndarray) -> np.ndarray:
        return np.stack([truth[np.ascontiguousarray(tile).tobytes()] for tile in batch])

    return generate


def blank_generator(batch: np.ndarray) -> np.ndarray:
    """A generator that paints nothing: white tiles (no DAB anywhere)."""
    return np.full_like(batch, 255)


def write_eval_folders(root: Path, tiles: list[Any]) -> tuple[Path, Path]:
    """Write tiles and masks as PNG folders (same names) for ``--images/--masks``."""
    from PIL import Image

    images, masks = root / "images", root / "masks"
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    for tile in tiles:
        Image.fromarray(tile.rgb).save(images / f"{tile.tile_id}.png")
        Image.fromarray((tile.mask * 255).astype(np.uint8)).save(masks / f"{tile.tile_id}.png")
    return images, masks


def write_eval_manifest(root: Path, tiles: list[Any], *, annotations: Path) -> Path:
    """A tile manifest (histolib.tileset.manifest format) of ``tiles`` whose slide contours are in
    ``annotations``; tile images are written under ``root/tiles``."""
    import geopandas as gpd
    import shapely
    from PIL import Image

    from histolib.tileset.manifest import write_manifest

    (root / "tiles").mkdir(parents=True, exist_ok=True)
    records = []
    for tile in tiles:
        parts = tile.tile_id.split("_")
        x0, y0, size = int(parts[-3][1:]), int(parts[-2][1:]), int(parts[-1][1:])
        rel = f"tiles/{tile.tile_id}.png"
        Image.fromarray(tile.rgb).save(root / rel)
        records.append(
            {
                "tile_id": tile.tile_id,
                "slide_id": tile.slide_id,
                "slide_path": str(root / "slide.tif"),
                "x0": x0,
                "y0": y0,
                "size_px": size,
                "mpp": 0.5,
                "downsample": 1.0,
                "stain": "he",
                "label": "positive" if tile.mask.any() else "negative",
                "tissue_fraction": 1.0,
                "annotation_fraction": float(tile.mask.mean()),
                "path": rel,
                "geometry": shapely.box(x0, y0, x0 + size, y0 + size),
            }
        )
    gdf = gpd.GeoDataFrame(records, geometry="geometry")
    path = root / "tiles.parquet"
    write_manifest(gdf, path, params={"annotations": str(annotations), "positive_classes": None})
    return path
