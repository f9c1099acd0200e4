"""Training data: tiles of one stain with their cell boxes, and the paper's batch sampling.

A :class:`TileSet` holds one domain (H&E or IHC): the tile images (from a tile manifest or a
folder of tiles, :mod:`histolib.tileset.sources`) and, per tile, the boxes of its cells (tile
px, ``x0, y0, x1, y1``, half-open, x = column) with labels 1 = cancer, 0 = normal, from a
cell library joined on ``tile_id``. Images are read when a batch needs them.

:func:`sample_batch` draws one batch the authors' way (``data_generator`` of their
``src/utils.py``): half the tiles from those with cancer boxes, half from those without, with
replacement, among the tiles with at least one box (:func:`split_groups`; every model, unless
empty tiles are asked for); boxes a tile by one of two rules (:func:`sample_boxes`, with
replacement): ``authors`` (their ``sample_bboxes`` with k boxes: k cancer + k/4 normal from a
tile with both, 5k/4 from a tile with cancer boxes only, 3k/4 normal from a tile without
cancer; 64 RoIs a batch of 4 + 4 tiles at k = 8, about half of them cancer) or ``balanced``
(the paper's text: k/2 cancer + k/2 normal from a tile with both, k of its one class
otherwise); horizontal and vertical flips that move the boxes with the image, by one of two
rules (:data:`FLIP_RULES`): ``batch`` (the authors' ``data_augmentation``: the whole batch is
flipped on an axis when ``randn() > 0.5``, p = 0.309 an axis) or ``tile`` (each tile on each
axis with p = 0.5: histolib's reading of the paper's "random flips", its ``paper`` preset);
and the 2-channel class map (each box shrunk by 5 px a side, painted in the channel of its
class). A batch depends only on ``(seed, rank, domain, step)``
(``rank``: the process of a distributed run, 0 alone), so any number of DataLoader workers
gives the same batches and a resumed run sees the batches the
uninterrupted run would have seen.

Tiles of a manifest written with ``--format none`` have no image: they are read from their
slides (:func:`histolib.tileset.pixels.read_tile`, the pixels a PNG of the tile would hold),
each DataLoader worker opening its own handle of a slide on its first read.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from histolib.errors import ConfigError, ImageError, ManifestError
from histolib.tileset.sources import TileRecord, TileSource

CLASS_IDS = {"normal": 0, "cancer": 1}
CANCER = 1
SHRINK_PX = 5
DOMAIN_CODES = {"he": 0, "ihc": 1}
#: How flips are drawn: ``batch`` (the authors': one draw a batch and axis, ``randn() > 0.5``)
#: or ``tile`` (one draw a tile and axis, p = 0.5).
FLIP_RULES = ("batch", "tile")
PURPOSE_TRAIN = 0
PURPOSE_SAMPLES = 1
#: The fields of a batch that cross from a DataLoader worker as shared-memory tensors; the
#: others (boxes, labels, indices: a few hundred bytes each) travel inside the pickled batch
#: as numpy arrays (:func:`for_transport`), cheaper than a shared-memory segment and a file
#: descriptor each.
SHARED_FIELDS = ("image", "class_map")


@dataclass
class TileSet:
    """The tiles of one domain and their cell boxes.

    Attributes
    ----------
    domain
        ``"he"`` or ``"ihc"``.
    source
        The manifest or folder the tiles came from.
    tile_ids, image_paths
        One entry a tile (``image_paths``: None for a tile read from its slide).
    boxes
        Per tile, ``float32 (n, 4)`` boxes ``x0, y0, x1, y1`` in tile px (clipped to the tile).
    labels
        Per tile, ``int64 (n,)``: 1 cancer, 0 normal.
    tile_size
        Side of every tile, px.
    mpp
        Microns per pixel of the tiles (``None`` when unknown, e.g. a folder).
    records
        One :class:`~histolib.tileset.sources.TileRecord` a tile: what is read for it.
    split
        The part of the manifest's ``split`` column the tiles are (``train``); None when every
        tile of the source was taken (a folder, or a manifest without that column).
    """

    domain: str
    source: Path
    tile_ids: list[str]
    image_paths: list[Path | None]
    boxes: list[np.ndarray]
    labels: list[np.ndarray]
    tile_size: int
    mpp: float | None
    has_library: bool = True
    with_cancer: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    without_cancer: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    records: list[TileRecord] = field(default_factory=list)
    split: str | None = None

    def __len__(self) -> int:
        return len(self.tile_ids)

    def n_boxes(self) -> int:
        """Total number of boxes over the tiles."""
        return int(sum(len(b) for b in self.boxes))

    def drawn_ids(self) -> list[str]:
        """The ids of the tiles batches draw from (after :func:`split_groups`), in tile order.

        A manifest's tiles are named by their ``tile_id``, a folder's by their path relative
        to the folder without the suffix."""
        drawn = np.sort(np.concatenate([self.with_cancer, self.without_cancer]))
        if not self.source.is_dir():
            return [self.tile_ids[i] for i in drawn]
        paths = [self.image_paths[i] for i in drawn]
        return [Path(p).relative_to(self.source).with_suffix("").as_posix() for p in paths]  # type: ignore[arg-type]


def _tiles_from_manifest(
    tiles: TileSource, domain: str
) -> tuple[list[str], list[Path | None], int, float]:
    path = tiles.path
    if not tiles.records:
        raise ManifestError("manifest has no tiles", path=path)
    stains = {str(r.stain) for r in tiles.records}
    if domain not in stains:
        raise ConfigError(
            f"manifest holds {'/'.join(sorted(stains))} tiles but was given as the "
            f"{domain.upper()} domain",
            path=path,
        )
    records = tiles.of_stain(domain)
    sizes = sorted({int(r.size) for r in records})  # type: ignore[arg-type]
    if len(sizes) != 1:
        raise ManifestError(f"tiles of several sizes {sizes}; train on one size", path=path)
    mpps = sorted({round(float(r.mpp), 6) for r in records})  # type: ignore[arg-type]
    if len(mpps) != 1:
        raise ManifestError(f"tiles at several resolutions {mpps} um/px", path=path)
    paths = [r.image_path for r in records]
    return [r.tile_id for r in records], paths, sizes[0], mpps[0]  # type: ignore[return-value]


def _tiles_from_folder(tiles: TileSource) -> tuple[list[str], list[Path], int]:
    """The tiles of a folder; their size is the first tile's, which must be square."""
    from histolib.tileset.images import read_rgb

    paths = [r.image_path for r in tiles.records]
    height, width = read_rgb(paths[0]).shape[:2]  # type: ignore[arg-type]
    if width != height:
        raise ImageError(f"tiles must be square, this one is {width}x{height} px", path=paths[0])
    return [r.tile_id for r in tiles.records], paths, width  # type: ignore[return-value]


def load_tiles(
    source: str | Path,
    *,
    domain: str,
    library: str | Path | None,
    mpp: float | None = None,
    part: str | None = "train",
) -> TileSet:
    """Read one domain's tiles and join its cell library.

    Parameters
    ----------
    source
        A tile manifest (``tiles.parquet``) or a folder of square tiles (the rule of
        :mod:`histolib.tileset.folders`: recursive, any image suffix, tile id = file stem; every
        tile the same size).
    domain
        ``"he"`` or ``"ihc"``.
    library
        Cell library (``.parquet`` or ``.geojson``) with ``tile_id`` and ``box_x0..box_y1`` in
        tile px; ``None`` gives tiles without boxes (plain CycleGAN only).
    mpp
        Resolution of folder tiles (a manifest records its own).
    part
        The part of a manifest's ``split`` column to use (``train``; None: every row); a
        manifest without that column is used whole (:func:`histolib.tileset.split.split_rows`).

    Raises
    ------
    InputError, ManifestError, ImageError, ConfigError
        For a missing or malformed input, tiles of mixed sizes, a library that matches no tile.
    """
    from histolib.library.cellio import read_library

    if domain not in DOMAIN_CODES:
        raise ConfigError(f"domain must be he or ihc, not {domain!r}")
    from histolib.tileset.sources import open_tiles

    tiles = open_tiles(source, mpp=mpp, part=part)
    source = tiles.path
    split = None
    if source.is_dir():
        tile_ids, paths, size = _tiles_from_folder(tiles)
        tile_mpp = mpp
    else:
        tile_ids, paths, size, tile_mpp = _tiles_from_manifest(tiles, domain)
        split = part if part is not None and _has_split_column(source) else None
    from histolib.tileset.pixels import check_readable

    by_id = {r.tile_id: r for r in tiles.records}
    records = [by_id[t] for t in tile_ids]
    check_readable(records, source=source)
    boxes: list[np.ndarray] = [np.zeros((0, 4), np.float32) for _ in tile_ids]
    labels: list[np.ndarray] = [np.zeros(0, np.int64) for _ in tile_ids]
    if library is not None:
        lib, _meta = read_library(library)
        index = {t: i for i, t in enumerate(tile_ids)}
        unknown = sorted(set(lib["label"].astype(str)) - set(CLASS_IDS))
        if unknown:
            raise ManifestError(f"unknown cell labels {unknown} (cancer | normal)", path=library)
        matched = lib[lib["tile_id"].astype(str).isin(index)]
        if len(lib) and not len(matched):
            raise ManifestError(
                f"no cell of the library belongs to a tile of {source.name}", path=library
            )
        coords = matched[["box_x0", "box_y0", "box_x1", "box_y1"]].to_numpy(np.float32)
        coords = np.clip(coords, 0, size)
        keep = (coords[:, 2] > coords[:, 0]) & (coords[:, 3] > coords[:, 1])
        cls = matched["label"].astype(str).map(CLASS_IDS).to_numpy(np.int64)
        rows = matched["tile_id"].astype(str).map(index).to_numpy(np.int64)
        coords, cls, rows = coords[keep], cls[keep], rows[keep]
        order = np.argsort(rows, kind="stable")
        coords, cls, rows = coords[order], cls[order], rows[order]
        starts = np.searchsorted(rows, np.arange(len(tile_ids) + 1))
        for i in range(len(tile_ids)):
            boxes[i] = coords[starts[i] : starts[i + 1]]
            labels[i] = cls[starts[i] : starts[i + 1]]
    return TileSet(
        domain=domain,
        source=source,
        tile_ids=tile_ids,
        image_paths=paths,
        boxes=boxes,
        labels=labels,
        tile_size=size,
        mpp=tile_mpp,
        has_library=library is not None,
        records=records,
        split=split,
    )


def _has_split_column(manifest: Path) -> bool:
    """Whether a manifest has the ``split`` column (read from its schema, not its rows)."""
    import pyarrow.parquet as pq

    from histolib.tileset.split import SPLIT_COLUMN

    return SPLIT_COLUMN in pq.read_schema(manifest).names


def split_groups(tiles: TileSet, *, require_boxes: bool) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the tiles with cancer boxes and of those without.

    With ``require_boxes`` (the default of every model, as the authors' ``data_generator``;
    the RoI models always) tiles with no box at all are left out of both. The result is also
    stored on ``tiles`` (``with_cancer``, ``without_cancer``).

    Raises
    ------
    ConfigError
        When no tile can be drawn.
    """
    has_cancer = np.array([bool((lab == CANCER).any()) for lab in tiles.labels], dtype=bool)
    has_boxes = np.array([len(b) > 0 for b in tiles.boxes], dtype=bool)
    eligible = has_boxes if require_boxes else np.ones(len(tiles), dtype=bool)
    with_cancer = np.flatnonzero(eligible & has_cancer)
    without_cancer = np.flatnonzero(eligible & ~has_cancer)
    if not len(with_cancer) and not len(without_cancer):
        raise ConfigError(
            f"no {tiles.domain.upper()} tile has a cell box; training draws the tiles with "
            "cells of the cell library (--include-empty-tiles draws the others too, except "
            "for the RoI models)",
            path=tiles.source,
        )
    tiles.with_cancer, tiles.without_cancer = with_cancer, without_cancer
    return with_cancer, without_cancer


def batch_rng(
    seed: int, domain: str, step: int, *, purpose: int = PURPOSE_TRAIN, rank: int = 0
) -> Any:
    """The numpy Generator of one batch: a function of ``(seed, purpose, domain, step, rank)``.

    Rank 0 (and a run on one process) draws what it always drew; every other rank of a
    distributed run draws its own batches."""
    entropy = [seed, purpose, DOMAIN_CODES[domain], step]
    return np.random.default_rng([*entropy, rank] if rank else entropy)


def sample_boxes(labels: np.ndarray, k: int, rng: Any, *, rule: str = "authors") -> np.ndarray:
    """Indices of the boxes drawn (with replacement) from a tile whose boxes have ``labels``.

    ``rule`` (the ``--roi-sampling`` option):

    - ``authors``: a tile with cancer and normal boxes gives ``k`` cancer + ``k // 4`` normal,
      one with cancer boxes only ``5 * (k // 4)``, one without cancer ``3 * (k // 4)`` normal
      (the authors' ``sample_bboxes``; k = 8: 8 + 2, 10 and 6), cancer indices first;
    - ``balanced``: ``k // 2`` cancer + the rest normal from a tile with both, ``k`` of its one
      class otherwise.

    A tile without boxes gives none.
    """
    cancer = np.flatnonzero(labels == CANCER)
    normal = np.flatnonzero(labels != CANCER)
    if rule not in ("authors", "balanced"):
        raise ConfigError(f"RoI sampling must be authors or balanced, not {rule!r}")
    if not len(labels):
        return np.zeros(0, dtype=np.int64)
    if rule == "authors":
        quarter = k // 4
        if len(cancer) and len(normal):
            counts = (k, quarter)
        else:
            counts = (5 * quarter, 0) if len(cancer) else (0, 3 * quarter)
        parts = [rng.choice(g, n) for g, n in zip((cancer, normal), counts, strict=True) if n]
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
    if len(cancer) and len(normal):
        n_cancer = k // 2
        return np.concatenate(
            [rng.choice(cancer, n_cancer), rng.choice(normal, k - n_cancer)]
        ).astype(np.int64)
    return rng.choice(len(labels), k).astype(np.int64)


def flip_boxes(boxes: np.ndarray, size: int, *, horizontal: bool, vertical: bool) -> np.ndarray:
    """Move ``(n, 4)`` half-open boxes ``x0, y0, x1, y1`` with a flip of a ``size`` px tile."""
    out = boxes.copy()
    if horizontal:
        out[:, 0], out[:, 2] = size - boxes[:, 2], size - boxes[:, 0]
    if vertical:
        out[:, 1], out[:, 3] = size - boxes[:, 3], size - boxes[:, 1]
    return out


def paint_class_map(
    boxes: np.ndarray,
    labels: np.ndarray,
    size: int,
    *,
    shrink: int = SHRINK_PX,
    dtype: Any = np.float32,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """The 2-channel class map ``(2, size, size)`` of one tile (``dtype``, float32 by default;
    painted into ``out`` when given).

    Each box, shrunk by ``shrink`` px a side and clipped to the tile, is set to 1 in the
    channel of its class (0 normal, 1 cancer).
    """
    if out is None:
        class_map = np.zeros((2, size, size), dtype=dtype)
    else:
        class_map = out
        class_map.fill(0)
    for (x0, y0, x1, y1), cls in zip(boxes, labels, strict=True):
        c0, r0 = max(0, round(float(x0)) + shrink), max(0, round(float(y0)) + shrink)
        c1, r1 = min(size, round(float(x1)) - shrink), min(size, round(float(y1)) - shrink)
        if c1 > c0 and r1 > r0:
            class_map[int(cls), r0:r1, c0:c1] = 1.0
    return class_map


def _flip_columns(rgb: np.ndarray) -> None:
    """Mirror an ``(H, W, C)`` array left to right in place (torch's flip: numpy's copy of a
    reversed view of 3-byte pixels is about 15 times slower)."""
    import torch

    pixels = torch.from_numpy(rgb)
    pixels.copy_(pixels.flip(1))


def sample_batch(
    tiles: TileSet,
    *,
    step: int,
    seed: int,
    batch_size: int,
    boxes_per_tile: int,
    flip: bool = True,
    purpose: int = PURPOSE_TRAIN,
    rank: int = 0,
    roi_sampling: str = "authors",
    flip_rule: str = "batch",
) -> dict[str, Any]:
    """Draw the batch of training step ``step`` for one domain (see the module docstring);
    ``rank`` is the process of a distributed run.

    :func:`split_groups` must have been called on ``tiles``; ``roi_sampling`` is the rule of
    :func:`sample_boxes` with ``k = boxes_per_tile``; ``flip_rule`` one of :data:`FLIP_RULES`
    (with ``flip``).

    Returns
    -------
    dict
        ``image`` uint8 ``(B, 3, S, S)``, the pixels, a channels-last view of the tiles as
        read (no transposing copy in the worker); ``class_map`` uint8 ``(B, 2, S, S)``, 0
        or 1 (uint8 crosses from DataLoader workers in a quarter of float32's bytes;
        :func:`to_device` makes them the networks' float32 inputs on the device);
        ``boxes`` float32 ``(K, 5)`` rows ``(batch_index, x0, y0, x1, y1)`` in tile px (the
        layout ``torchvision.ops.roi_align`` takes); ``box_labels`` int64 ``(K,)``;
        ``tile_index`` int64 ``(B,)``; ``flips`` bool ``(B, 2)`` (horizontal, vertical);
        ``label`` int64 ``(B,)``, 1 for a tile drawn from those with cancer boxes, 0 for the
        others (the condition of the conditional CycleGAN). All are torch tensors.
    """
    import torch

    from histolib.tileset.pixels import read_tile

    if flip_rule not in FLIP_RULES:
        raise ConfigError(f"flip rule must be batch or tile, not {flip_rule!r}")
    rng = batch_rng(seed, tiles.domain, step, purpose=purpose, rank=rank)
    pos, neg = tiles.with_cancer, tiles.without_cancer
    n_pos = batch_size // 2 if len(neg) else batch_size
    if not len(pos):
        n_pos = 0
    chosen = np.concatenate(
        [rng.choice(pos, n_pos) if n_pos else np.zeros(0, np.int64)]
        + ([rng.choice(neg, batch_size - n_pos)] if batch_size - n_pos else [])
    ).astype(np.int64)
    size = tiles.tile_size
    images = np.empty((batch_size, size, size, 3), dtype=np.uint8)  # as read: (H, W, C)
    class_maps = np.empty((batch_size, 2, size, size), dtype=np.uint8)
    flips = np.zeros((batch_size, 2), dtype=bool)
    all_boxes: list[np.ndarray] = []
    all_labels: list[np.ndarray] = []
    # The authors flip the whole batch on an axis when randn() > 0.5 (p = 0.309).
    batch_flips = rng.standard_normal(2) > 0.5 if flip and flip_rule == "batch" else None
    for b, tile in enumerate(chosen):
        picks = sample_boxes(tiles.labels[tile], boxes_per_tile, rng, rule=roi_sampling)
        boxes = tiles.boxes[tile][picks]
        labels = tiles.labels[tile][picks]
        rgb = read_tile(tiles.records[tile], expected_size=size)
        if flip:
            flips[b] = rng.random(2) < 0.5 if batch_flips is None else batch_flips
            boxes = flip_boxes(boxes, size, horizontal=flips[b, 0], vertical=flips[b, 1])
        images[b] = rgb[::-1] if flips[b, 1] else rgb
        if flips[b, 0]:
            _flip_columns(images[b])
        paint_class_map(boxes, labels, size, out=class_maps[b])
        all_boxes.append(np.concatenate([np.full((len(boxes), 1), b, np.float32), boxes], axis=1))
        all_labels.append(labels)
    return {
        "image": torch.from_numpy(images).permute(0, 3, 1, 2),
        "class_map": torch.from_numpy(class_maps),
        "boxes": torch.from_numpy(np.concatenate(all_boxes).astype(np.float32).reshape(-1, 5)),
        "box_labels": torch.from_numpy(np.concatenate(all_labels).astype(np.int64)),
        "tile_index": torch.from_numpy(chosen),
        "flips": torch.from_numpy(flips),
        "label": torch.from_numpy((np.arange(batch_size) < n_pos).astype(np.int64)),
    }


def to_device(batch: dict[str, Any], device: Any, *, channels_last: bool = False) -> dict[str, Any]:
    """A :func:`sample_batch` batch as the networks take it, on ``device``.

    Every tensor is copied with ``non_blocking=True`` (asynchronous from the pinned memory a
    CUDA run's DataLoader gives); there, a uint8 ``image`` (of any strides) becomes a
    contiguous float32 tensor in [-1, 1] (``x / 127.5 - 1``, on the CPU bit-identical to
    converting in numpy; the layout change rides on the conversion) and a uint8
    ``class_map`` float32 0/1. A float ``image`` is taken as already in [-1, 1]. With
    ``channels_last`` the 4-D tensors get the channels-last memory format.
    """
    import torch

    out = {}
    for key, value in batch.items():
        if isinstance(value, np.ndarray):  # a small field as it crossed (for_transport)
            value = torch.from_numpy(value)
        value = value.to(device, non_blocking=True)
        if key == "image" and value.dtype == torch.uint8:
            layout = torch.channels_last if channels_last else torch.contiguous_format
            floats = torch.empty(
                value.shape, dtype=torch.float32, device=value.device, memory_format=layout
            )
            value = floats.copy_(value).div_(127.5).sub_(1.0)
        elif key == "class_map":
            value = value.float()
        if channels_last and value.ndim == 4:
            value = value.contiguous(memory_format=torch.channels_last)
        out[key] = value
    return out


@dataclass
class PairedBatches:
    """Map-style dataset whose item ``step`` is ``{"he": batch, "ihc": batch}`` of that step.

    Use with ``torch.utils.data.DataLoader(dataset, batch_size=None, sampler=range(a, b))``;
    ``rank`` is the process of a distributed run (each rank draws its own batches); the other
    fields are :func:`sample_batch`'s.
    """

    he: TileSet
    ihc: TileSet
    _: KW_ONLY
    seed: int
    batch_size: int
    boxes_per_tile: int
    flip: bool = True
    rank: int = 0
    roi_sampling: str = "authors"
    flip_rule: str = "batch"

    def __getitem__(self, step: int) -> dict[str, dict[str, Any]]:
        return {
            name: sample_batch(
                tiles,
                step=int(step),
                seed=self.seed,
                batch_size=self.batch_size,
                boxes_per_tile=self.boxes_per_tile,
                flip=self.flip,
                rank=self.rank,
                roi_sampling=self.roi_sampling,
                flip_rule=self.flip_rule,
            )
            for name, tiles in (("he", self.he), ("ihc", self.ihc))
        }


def for_transport(pair: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The DataLoader's ``collate_fn``: a step's pair as it crosses from a worker, the fields
    of :data:`SHARED_FIELDS` as tensors (shared memory), the rest as numpy views of theirs
    (pickled with the batch); :func:`to_device` takes either."""
    return {
        name: {k: v if k in SHARED_FIELDS else v.numpy() for k, v in batch.items()}
        for name, batch in pair.items()
    }


def make_loader(
    batches: PairedBatches, *, start: int, stop: int, workers: int, pin_memory: bool
) -> Any:
    """A DataLoader over steps ``start..stop-1`` with ``workers`` processes (0 = inline);
    its pairs come as :func:`for_transport` leaves them."""
    from torch.utils.data import DataLoader

    return DataLoader(
        batches,  # type: ignore[arg-type]
        batch_size=None,
        sampler=range(start, stop),
        collate_fn=for_transport,
        num_workers=workers,
        pin_memory=pin_memory,
        prefetch_factor=2 if workers else None,
        persistent_workers=False,
    )
