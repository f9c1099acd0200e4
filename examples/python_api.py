# %% [markdown]
# # histolib from Python: one slide through the pipeline
#
#     python examples/python_api.py [SLIDE] [--annotations FILE] [--ihc SLIDE]
#                                   [--checkpoint RUN_OR_PT] [--out DIR] [--steps N]
#                                   [--device auto|cpu|cuda] [--side PX]
#
# Every `histolib` command is a function you can call from a notebook. This file walks one
# H&E slide through them: open it, tile it with its expert contours, build its cell library,
# export it for QuPath, and restain it into a virtual IHC slide. It is a `# %%` cell script:
# open it in VS Code, PyCharm or Jupyter (jupytext) and run it cell by cell, or run it whole.
#
# - SLIDE: any slide OpenSlide reads, with `--annotations` its tumour contours (QuPath
#   GeoJSON, ASAP or ImageScope XML). Without SLIDE, a synthetic H&E slide and its contours
#   are made in OUT/slides (`--side` px square at 0.5 um/px).
# - The virtual IHC needs a model: `--checkpoint` (a `histolib train` run folder or a .pt
#   file), else a small demonstration model is trained here for `--steps` steps on the slide's
#   tiles and an IHC slide (`--ihc`, else a synthetic one). A real model comes from
#   `histolib train` with the authors' preset (the default), hours on a GPU.
#
# Pictures: OUT/qc.png (the tiling QC), OUT/library_overlay.png (cells of one tile),
# OUT/virtual_ihc.png (the virtual IHC thumbnail) and OUT/figure.png (the three side by side),
# written with Pillow; shown with matplotlib when it is installed (it is not a dependency).

# %%
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import geopandas
from PIL import Image

from histolib.library import build_library, tile_cells
from histolib.library.overlays import draw_overlay
from histolib.qupath import export_qupath
from histolib.slide import open_slide
from histolib.synthetic import make_slide
from histolib.tileset.contours import tile_mask
from histolib.tileset.images import read_rgb
from histolib.tileset.manifest import read_manifest
from histolib.tiling import TilingOptions, tile_slides
from histolib_train.transfer.generator import load_transfer_generator
from histolib_train.transfer.slide import transfer_slide

parser = argparse.ArgumentParser(description="histolib from Python on one slide.")
parser.add_argument("slide", nargs="?", type=Path, help="An H&E slide (default: synthetic).")
parser.add_argument("--annotations", type=Path, help="The slide's tumour contours.")
parser.add_argument("--ihc", type=Path, help="An IHC slide for the demonstration model.")
parser.add_argument("--checkpoint", type=Path, help="A trained run folder or .pt file.")
parser.add_argument("--out", type=Path, default=Path("histolib-python-api"), help="Output folder.")
parser.add_argument("--steps", type=int, default=50, help="Steps of the demonstration model.")
parser.add_argument("--device", default="auto", help="auto, cpu or cuda.")
parser.add_argument("--side", type=int, default=2048, help="Side of the synthetic slides (px).")
# In a notebook (Jupyter, the VS Code interactive window) the defaults apply.
args = parser.parse_args([] if "ipykernel" in sys.modules else sys.argv[1:])
if args.slide is not None and args.annotations is None:
    parser.error(
        "an H&E slide needs --annotations: its cell library keeps cancer cells inside them"
    )
out: Path = args.out
out.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## 1. A slide and its contours
# `make_slide` renders a synthetic H&E slide (pyramidal TIFF) and its tumour contours (QuPath
# GeoJSON); `open_slide` opens any slide and reads regions at a resolution in microns per px.

# %%

if args.slide is None:
    synthetic = make_slide(
        out / "slides", name="case1", stain="he", width=args.side, height=args.side
    )
    slide_path, contours = synthetic.slide_path, synthetic.annotations_path
else:
    slide_path, contours = args.slide, args.annotations

with open_slide(slide_path) as slide:
    print(f"{slide_path}: {slide.dimensions[0]} x {slide.dimensions[1]} px, {slide.mpp} um/px")
    rgb = slide.read_region(0, 0, size=256, mpp=0.5)  # (256, 256, 3) uint8 at 20x
    print(f"a 256 px region at 0.5 um/px: {rgb.shape} {rgb.dtype}")

# %% [markdown]
# ## 2. Tiles
# `tile_slides` is `histolib tile`: tissue detection, a 256 px grid at 0.5 um/px, labels from
# the contours (positive / negative / boundary), a GeoParquet manifest and a QC picture.

# %%

manifest = tile_slides(
    slide_path,
    out=out / "tiles_he",
    options=TilingOptions(stain="he"),
    annotations=contours,
    workers=1,
    progress=False,
)
tiles, meta = read_manifest(manifest)
print(f"{manifest}: {len(tiles)} tiles, {tiles['label'].value_counts().to_dict()}")
slide_id = tiles["slide_id"].iloc[0]
qc_picture = manifest.parent / "qc" / f"{slide_id}.png"

# %% [markdown]
# ## 3. The cell library
# `build_library` is `histolib build-library`: cancer cells inside the contours, normal cells
# in clusters of healthy nuclei, as 48 x 48 boxes, for every tile of the manifest. One tile at
# a time: `tile_cells` on the tile's pixels and its tumour mask (the contours rasterised by
# `tile_mask`), and `draw_overlay` for the QC picture (red cancer, blue normal, the excluded
# region shaded, the tumour outlined).

# %%
library = build_library(
    manifest=manifest, stain="he", out=out / "library_he.parquet", workers=1, progress=False
)
cells = geopandas.read_parquet(library)
print(f"{library}: {len(cells)} cells, {cells['label'].value_counts().to_dict()}")

# The tile with the most cancer cells (else the first tile), cell by cell.
cancer = cells[cells["label"] == "cancer"]["tile_id"].value_counts()
tile = tiles.set_index("tile_id").loc[cancer.index[0] if len(cancer) else tiles["tile_id"].iloc[0]]
rgb = read_rgb(manifest.parent / tile["path"])
mask = tile_mask(
    contours, None, x0=tile["x0"], y0=tile["y0"], downsample=tile["downsample"], shape=rgb.shape[:2]
)
one_tile = tile_cells(rgb, stain="he", mask=mask, details=True)
print(f"{tile.name}: {one_tile.n_cancer} cancer, {one_tile.n_normal} normal cells")
overlay_picture = draw_overlay(rgb, one_tile, path=out / "library_overlay.png")

# %% [markdown]
# ## 4. QuPath
# `export_qupath` is `histolib export qupath`: one GeoJSON per slide with the tiles, the cells
# and the contours; in QuPath, File > Import objects from file.

# %%
export_qupath([manifest, library], out=out / "qupath", annotations=contours)
print(f"QuPath GeoJSON: {sorted(p.name for p in (out / 'qupath').glob('*.geojson'))}")

# %% [markdown]
# ## 5. Virtual IHC
# With a checkpoint, its H&E -> IHC generator restains the slide. Otherwise a small model is
# trained here first (`histolib train` with a tiny network and few steps: a demonstration of
# the API, not a useful stain transfer).


# %%
def demonstration_model() -> Path:
    """Tile an IHC slide, build its library and train a small RoI CycleGAN; its checkpoint."""
    from histolib_train.training.config import resolve_config
    from histolib_train.training.loop import train

    ihc_slide = args.ihc
    if ihc_slide is None:
        ihc_slide = make_slide(
            out / "slides", name="ihc1", stain="ihc", width=args.side, height=args.side, seed=1
        ).slide_path
    ihc_manifest = tile_slides(
        ihc_slide,
        out=out / "tiles_ihc",
        options=TilingOptions(stain="ihc"),
        workers=1,
        progress=False,
    )
    ihc_library = build_library(
        manifest=ihc_manifest,
        stain="ihc",
        out=out / "library_ihc.parquet",
        workers=1,
        progress=False,
    )
    run = out / "run"
    config = resolve_config(
        {
            "he": str(manifest),
            "ihc": str(ihc_manifest),
            "he_library": str(library),
            "ihc_library": str(ihc_library),
            "out": str(run),
            "n_blocks": 3,
            "ngf": 16,
            "ndf": 16,
            "batch_size": 2,
            "epochs": 1,
            "steps_per_epoch": args.steps,
            "workers": 0,
            "device": args.device,
            "sample_every": args.steps,
            "resume": (run / "checkpoints" / "latest.pt").is_file(),
        }
    )
    result = train(config)
    print(f"trained {result.step} steps: {run}")
    return run


checkpoint = args.checkpoint or demonstration_model()
generator, _ = load_transfer_generator(checkpoint, direction="he2ihc", device=args.device)
virtual = transfer_slide(
    slide_path, generator, out=out / "virtual_ihc.tif", mpp=0.5, overwrite=True, workers=1
)
print(f"virtual IHC slide: {virtual.path} (thumbnail {virtual.thumbnail})")

# %% [markdown]
# ## 6. The pictures
# Saved as PNG with Pillow; shown with matplotlib when it is installed.

# %%
pictures = {
    "qc.png": qc_picture,
    "library_overlay.png": overlay_picture,
    "virtual_ihc.png": virtual.thumbnail,
}
images = {}
for name, source in pictures.items():
    image = Image.open(source).convert("RGB")
    image.save(out / name)
    images[name] = image
height = 512
scaled = [
    im.resize((max(1, round(im.width * height / im.height)), height)) for im in images.values()
]
figure = Image.new("RGB", (sum(im.width for im in scaled), height), "white")
x = 0
for im in scaled:
    figure.paste(im, (x, 0))
    x += im.width
figure.save(out / "figure.png")
print(f"pictures: {', '.join(str(out / name) for name in [*pictures, 'figure.png'])}")

try:
    import matplotlib.pyplot as plt
except ImportError:
    plt = None
if plt is not None:
    fig, axes = plt.subplots(1, 3, figsize=(15, 5))
    titles = ("tiles (QC)", "cell library overlay", "virtual IHC")
    for ax, image, title in zip(axes, images.values(), titles, strict=True):
        ax.imshow(image)
        ax.set_title(title)
        ax.axis("off")
    plt.tight_layout()
    plt.show()
