"""Training data: tile sets, the paper's batch sampling, flips that move boxes, class maps."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from histolib.errors import ConfigError, ImageError, InputError, ManifestError  # noqa: E402
from histolib.tileset.images import read_rgb  # noqa: E402
from histolib_train.training.batches import (  # noqa: E402
    PairedBatches,
    flip_boxes,
    load_tiles,
    make_loader,
    paint_class_map,
    sample_batch,
    sample_boxes,
    split_groups,
    to_device,
)
from tests.helpers_train import TILE, make_tiny_domain  # noqa: E402

pytestmark = pytest.mark.torch


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("tiny")
    return make_tiny_domain(root, stain="he", n_mixed=3, n_normal=2, n_empty=1, seed=5)


def test_load_tiles_joins_the_library_on_tile_id(tiny) -> None:
    tiles = load_tiles(tiny.manifest, domain="he", library=tiny.library)
    assert len(tiles) == tiny.n_tiles == 6
    assert tiles.tile_size == TILE and tiles.mpp == 0.5
    counts = {t: len(b) for t, b in zip(tiles.tile_ids, tiles.boxes, strict=True)}
    expected = {"mixed": 4, "normal": 3, "empty": 0}
    assert counts == {t: expected[k] for t, k in tiny.kinds.items()}
    for tid, labels in zip(tiles.tile_ids, tiles.labels, strict=True):
        if tiny.kinds[tid] == "mixed":
            assert sorted(labels.tolist()) == [0, 0, 1, 1]
    assert all(((b >= 0) & (b <= TILE)).all() for b in tiles.boxes)


def test_png_folder_and_geojson_library(tmp_path: Path) -> None:
    dom = make_tiny_domain(tmp_path, stain="ihc", library_format="geojson")
    tiles = load_tiles(dom.folder, domain="ihc", library=dom.library, mpp=0.25)
    assert len(tiles) == dom.n_tiles and tiles.mpp == 0.25
    assert tiles.n_boxes() == 3 * 4 + 2 * 3


def test_groups_skip_empty_tiles_for_the_roi_model(tiny) -> None:
    tiles = load_tiles(tiny.manifest, domain="he", library=tiny.library)
    pos, neg = split_groups(tiles, require_boxes=True)
    kinds = [tiny.kinds[t] for t in tiles.tile_ids]
    assert {kinds[i] for i in pos} == {"mixed"} and len(pos) == 3
    assert {kinds[i] for i in neg} == {"normal"} and len(neg) == 2
    _pos, neg_all = split_groups(tiles, require_boxes=False)
    assert {kinds[i] for i in neg_all} == {"normal", "empty"}


def test_sampling_balance_over_many_batches(tiny) -> None:
    tiles = load_tiles(tiny.manifest, domain="he", library=tiny.library)
    pos, neg = split_groups(tiles, require_boxes=True)
    tile_counts: Counter[int] = Counter()
    for step in range(300):
        batch = sample_batch(
            tiles, step=step, seed=0, batch_size=8, boxes_per_tile=8, roi_sampling="balanced"
        )
        chosen = batch["tile_index"].numpy()
        # Half the tiles with cancer boxes, half without, every batch.
        assert np.isin(chosen[:4], pos).all() and np.isin(chosen[4:], neg).all()
        assert batch["boxes"].shape == (64, 5)
        labels = batch["box_labels"].numpy().reshape(8, 8)
        # Mixed tiles: k/2 cancer and k/2 normal boxes; normal-only tiles: k normal boxes.
        assert (labels[:4].sum(axis=1) == 4).all()
        assert (labels[4:] == 0).all()
        assert (batch["boxes"][:, 0].numpy() == np.repeat(np.arange(8), 8)).all()
        tile_counts.update(chosen.tolist())
    # With replacement and uniform within each group: 1200 draws over 3 and 2 tiles.
    assert set(tile_counts) == set(pos.tolist()) | set(neg.tolist())
    for i in pos:
        assert abs(tile_counts[i] - 1200 / 3) < 100
    for i in neg:
        assert abs(tile_counts[i] - 1200 / 2) < 100


def test_batches_are_a_function_of_seed_and_step(tiny) -> None:
    tiles = load_tiles(tiny.manifest, domain="he", library=tiny.library)
    split_groups(tiles, require_boxes=True)
    a = sample_batch(tiles, step=7, seed=1, batch_size=4, boxes_per_tile=4)
    b = sample_batch(tiles, step=7, seed=1, batch_size=4, boxes_per_tile=4)
    c = sample_batch(tiles, step=8, seed=1, batch_size=4, boxes_per_tile=4)
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["boxes"], b["boxes"])
    assert not (torch.equal(a["boxes"], c["boxes"]) and torch.equal(a["image"], c["image"]))


def test_loader_with_workers_gives_the_same_batches(tiny) -> None:
    he = load_tiles(tiny.manifest, domain="he", library=tiny.library)
    split_groups(he, require_boxes=True)
    batches = PairedBatches(he, he, seed=2, batch_size=4, boxes_per_tile=2)
    inline = list(make_loader(batches, start=3, stop=6, workers=0, pin_memory=False))
    pooled = list(make_loader(batches, start=3, stop=6, workers=2, pin_memory=False))
    assert len(inline) == len(pooled) == 3
    for x, y in zip(inline, pooled, strict=True):
        assert torch.equal(x["he"]["image"], y["he"]["image"])
        assert np.array_equal(x["ihc"]["boxes"], y["ihc"]["boxes"])
        # Small fields cross as numpy arrays inside the pickled batch, the pixels as tensors.
        assert isinstance(y["he"]["boxes"], np.ndarray) and torch.is_tensor(y["he"]["image"])
        on_device = to_device(y["he"], "cpu")
        assert on_device["boxes"].dtype == torch.float32 and on_device["label"].dtype == torch.int64


def _marked_domain(root: Path) -> Path:
    """One 64 px tile, black, with a white 16 px square exactly where its one box is."""
    import geopandas as gpd
    from PIL import Image
    from shapely.geometry import box

    from histolib.library.cellio import write_library

    folder = root / "marked"
    folder.mkdir()
    img = np.zeros((TILE, TILE, 3), np.uint8)
    img[8:24, 40:56] = 255  # rows 8..23 (y), columns 40..55 (x)
    Image.fromarray(img).save(folder / "t0.png")
    cell = {
        "tile_id": "t0",
        "slide_id": "t0",
        "label": "cancer",
        "x": 48.0,
        "y": 16.0,
        "tile_x": 48.0,
        "tile_y": 16.0,
        "box_x0": 40,
        "box_y0": 8,
        "box_x1": 56,
        "box_y1": 24,
        "sigma": 1.0,
        "pass": "he_cancer",
        "tile_x0": 0,
        "tile_y0": 0,
        "downsample": 1.0,
        "geometry": box(40, 8, 56, 24),
    }
    write_library(gpd.GeoDataFrame([cell], geometry="geometry"), root / "lib.parquet", params={})
    return folder


def test_flips_move_the_boxes_with_the_image(tmp_path: Path) -> None:
    folder = _marked_domain(tmp_path)
    tiles = load_tiles(folder, domain="he", library=tmp_path / "lib.parquet")
    split_groups(tiles, require_boxes=True)
    seen = set()
    for step in range(40):
        raw = sample_batch(
            tiles, step=step, seed=0, batch_size=2, boxes_per_tile=1, roi_sampling="balanced"
        )
        batch = to_device(raw, "cpu")
        for b in range(2):
            x0, y0, x1, y1 = (int(v) for v in batch["boxes"][b, 1:])
            image = batch["image"][b]
            inside = image[:, y0:y1, x0:x1]
            assert (x1 - x0, y1 - y0) == (16, 16)
            assert torch.all(inside == 1.0), "the box no longer covers the white square"
            assert float(image.sum()) == pytest.approx(3 * 16 * 16 - 3 * (TILE * TILE - 256))
            cmap = batch["class_map"][b]
            assert torch.all(cmap[1, y0 + 5 : y1 - 5, x0 + 5 : x1 - 5] == 1)
            assert float(cmap[1].sum()) == 6 * 6 and float(cmap[0].sum()) == 0
            seen.add(tuple(batch["flips"][b].tolist()))
    assert seen == {(False, False), (True, False), (False, True), (True, True)}


def test_flip_boxes_is_an_involution() -> None:
    boxes = np.array([[0, 10, 20, 30], [40, 0, 64, 12]], np.float32)
    h = flip_boxes(boxes, 64, horizontal=True, vertical=False)
    assert h.tolist() == [[44, 10, 64, 30], [0, 0, 24, 12]]
    v = flip_boxes(boxes, 64, horizontal=False, vertical=True)
    assert v.tolist() == [[0, 34, 20, 54], [40, 52, 64, 64]]
    both = flip_boxes(h, 64, horizontal=True, vertical=True)
    assert flip_boxes(both, 64, horizontal=False, vertical=True).tolist() == boxes.tolist()


def test_class_map_shrinks_boxes_by_5_px_per_side() -> None:
    boxes = np.array([[10, 20, 30, 40], [0, 0, 12, 12], [50, 50, 58, 58]], np.float32)
    cmap = paint_class_map(boxes, np.array([1, 0, 0]), 64)
    expected_cancer = np.zeros((64, 64), np.float32)
    expected_cancer[25:35, 15:25] = 1
    assert (cmap[1] == expected_cancer).all()
    expected_normal = np.zeros((64, 64), np.float32)
    expected_normal[5:7, 5:7] = 1  # the 8 px box shrinks to nothing
    assert (cmap[0] == expected_normal).all()


def test_bad_inputs_name_the_file(tmp_path: Path, tiny) -> None:
    with pytest.raises(ManifestError, match="no such tile manifest"):
        load_tiles(tmp_path / "nope.parquet", domain="he", library=None)
    with pytest.raises(ConfigError, match="given as the IHC domain"):
        load_tiles(tiny.manifest, domain="ihc", library=None)
    other = make_tiny_domain(tmp_path, stain="ihc", seed=9)
    with pytest.raises(ManifestError, match="no cell of the library"):
        load_tiles(tiny.manifest, domain="he", library=other.library)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match=r"no image tiles \(\.png, \.jpg"):
        load_tiles(empty, domain="he", library=None)


def test_a_tile_of_the_wrong_size_is_an_image_error(tmp_path: Path) -> None:
    from PIL import Image

    dom = make_tiny_domain(tmp_path, stain="he", n_mixed=1, n_normal=1, n_empty=0)
    tiles = load_tiles(dom.manifest, domain="he", library=dom.library)
    split_groups(tiles, require_boxes=True)
    Image.new("RGB", (32, 32)).save(tiles.image_paths[1])
    with pytest.raises(ImageError, match="expected 64x64") as info:
        for step in range(20):
            sample_batch(tiles, step=step, seed=0, batch_size=2, boxes_per_tile=2)
    assert str(tiles.image_paths[1]) in str(info.value)


def test_grayscale_or_16_bit_tiles_are_image_errors(tmp_path: Path) -> None:
    from PIL import Image

    folder = tmp_path / "gray"
    folder.mkdir()
    Image.fromarray(np.zeros((TILE, TILE), np.uint16)).save(folder / "a.png")
    with pytest.raises(ImageError, match=r"a\.png: expected an 8-bit RGB image, .*\(mode I;16\)"):
        load_tiles(folder, domain="he", library=None)
    dom = make_tiny_domain(tmp_path, stain="he", n_mixed=1, n_normal=1, n_empty=0)
    tiles = load_tiles(dom.manifest, domain="he", library=dom.library)
    Image.new("L", (TILE, TILE)).save(tiles.image_paths[0])
    with pytest.raises(ImageError, match=r"\(mode L\)"):
        read_rgb(tiles.image_paths[0], expected_size=TILE)


def test_transparent_pixels_of_a_tile_are_white(tmp_path: Path) -> None:
    from PIL import Image

    rgba = np.zeros((TILE, TILE, 4), np.uint8)
    rgba[: TILE // 2] = (10, 20, 30, 255)
    Image.fromarray(rgba).save(tmp_path / "t.png")
    rgb = read_rgb(tmp_path / "t.png", expected_size=TILE)
    assert (rgb[: TILE // 2] == (10, 20, 30)).all() and (rgb[TILE // 2 :] == 255).all()


#: RoIs a tile gives at k = 8, (cancer, normal), by tile kind: the two rules of --roi-sampling.
ROI_RULES = {
    "authors": {"mixed": (8, 2), "cancer": (10, 0), "normal": (0, 6)},
    "balanced": {"mixed": (4, 4), "cancer": (8, 0), "normal": (0, 8)},
}


@pytest.mark.parametrize("rule", ["authors", "balanced"])
def test_roi_class_mix_of_each_sampler_over_2000_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rule: str
) -> None:
    """Mixed, cancer-only and cancer-free tiles: every tile of 2,000 batches of 4 + 4 tiles
    gets the RoIs of its rule, 64 a batch, drawn from its own boxes with their labels."""
    import histolib.tileset.images as images_module

    dom = make_tiny_domain(tmp_path, stain="he", n_mixed=3, n_normal=3, n_empty=1, n_cancer=2)
    tiles = load_tiles(dom.manifest, domain="he", library=dom.library)
    pos, neg = split_groups(tiles, require_boxes=True)
    kinds = [dom.kinds[t] for t in tiles.tile_ids]
    assert sorted(kinds[i] for i in pos) == ["cancer"] * 2 + ["mixed"] * 3
    assert [kinds[i] for i in neg] == ["normal"] * 3
    blank = np.zeros((TILE, TILE, 3), np.uint8)  # the images are not what is tested here
    monkeypatch.setattr(images_module, "read_rgb", lambda path, expected_size=None: blank)
    drawn: Counter[str] = Counter()
    n_cancer = 0
    for step in range(2000):
        batch = sample_batch(
            tiles, step=step, seed=11, batch_size=8, boxes_per_tile=8, flip=False, roi_sampling=rule
        )
        owner = batch["boxes"][:, 0].long().numpy()
        boxes, labels = batch["boxes"][:, 1:].numpy(), batch["box_labels"].numpy()
        assert len(labels) == 64
        for b, tile in enumerate(batch["tile_index"].tolist()):
            mine = labels[owner == b]
            kind = kinds[tile]
            assert (int((mine == 1).sum()), int((mine == 0).sum())) == ROI_RULES[rule][kind]
            own = {
                (*map(float, box), int(lab))
                for box, lab in zip(tiles.boxes[tile], tiles.labels[tile], strict=True)
            }
            for box, lab in zip(boxes[owner == b], mine, strict=True):
                assert (*map(float, box), int(lab)) in own
            drawn[kind] += 1
        n_cancer += int((labels == 1).sum())
    # Cancer share of the RoIs against its expectation from the tile kinds drawn.
    per_tile = {kind: counts[0] for kind, counts in ROI_RULES[rule].items()}
    expected = sum(per_tile[k] * n for k, n in drawn.items()) / (2000 * 64)
    assert n_cancer / (2000 * 64) == pytest.approx(expected, abs=1e-12)
    share_mixed = drawn["mixed"] / (drawn["mixed"] + drawn["cancer"])
    assert share_mixed == pytest.approx(3 / 5, abs=0.03)  # uniform over the 5 cancer tiles
    # authors: 4 x (3/5 x 8 + 2/5 x 10) / 64 = 0.55 of the RoIs cancer; balanced: 0.35.
    assert n_cancer / (2000 * 64) == pytest.approx(0.55 if rule == "authors" else 0.35, abs=0.01)


def test_authors_rule_needs_four_boxes_for_the_roi_models() -> None:
    from histolib_train.training.config import resolve_config

    with pytest.raises(ConfigError, match="boxes_per_tile"):
        resolve_config({"model": "roi", "boxes_per_tile": 3})
    assert resolve_config({"model": "roi", "boxes_per_tile": 3, "roi_sampling": "balanced"})
    assert resolve_config({"model": "cyclegan", "boxes_per_tile": 1})


@pytest.mark.parametrize("rule", ["batch", "tile"])
def test_flip_rules_draw_whole_batches_or_tiles(
    tiny, monkeypatch: pytest.MonkeyPatch, rule: str
) -> None:
    """batch (the authors' ``randn() > 0.5`` once a batch and axis, p = 0.309) against tile
    (each tile and axis, p = 0.5), over 1,000 batches of 4 tiles."""
    from scipy.stats import binomtest, norm

    import histolib.tileset.images as images_module

    p_randn = float(norm.sf(0.5))  # P(randn() > 0.5) = 0.3085
    p_flip, p_other = (p_randn, 0.5) if rule == "batch" else (0.5, p_randn)
    tiles = load_tiles(tiny.manifest, domain="he", library=tiny.library)
    split_groups(tiles, require_boxes=True)
    blank = np.zeros((TILE, TILE, 3), np.uint8)
    monkeypatch.setattr(images_module, "read_rgb", lambda path, expected_size=None: blank)
    flips = np.stack(
        [
            sample_batch(tiles, step=s, seed=4, batch_size=4, boxes_per_tile=4, flip_rule=rule)[
                "flips"
            ].numpy()
            for s in range(1000)
        ]
    )  # (batches, tiles, axes)
    uniform = (flips == flips[:, :1]).all(axis=(1, 2))
    assert uniform.all() if rule == "batch" else not uniform.all()
    draws = flips[:, 0] if rule == "batch" else flips.reshape(-1, 2)
    for axis in (0, 1):
        hits = int(draws[:, axis].sum())
        assert binomtest(hits, len(draws), p_flip).pvalue > 1e-3
        assert binomtest(hits, len(draws), p_other).pvalue < 1e-6


def test_presets_choose_the_flip_rule() -> None:
    from histolib_train.training.config import resolve_config

    assert resolve_config({}).flip_rule == "batch"
    assert resolve_config({"preset": "paper"}).flip_rule == "tile"
    with pytest.raises(ConfigError, match="flip rule"):
        sample_batch(None, step=0, seed=0, batch_size=2, boxes_per_tile=4, flip_rule="axis")  # type: ignore[arg-type]


@pytest.mark.parametrize("rule", ["authors", "balanced"])
@pytest.mark.parametrize(
    "labels", [[1, 1, 1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1], [0, 0, 0, 0]], ids=str
)
def test_boxes_are_drawn_uniformly_within_a_tile(rule: str, labels: list[int]) -> None:
    """Chi-square: over 4,000 draws of k = 8, every box of a class is drawn as often as the
    others of its class (a mixed, a cancer-only and a normal-only tile)."""
    from scipy.stats import chisquare

    labels_array = np.array(labels, dtype=np.int64)
    rng = np.random.default_rng(12)
    counts = np.zeros(len(labels), dtype=np.int64)
    for _ in range(4000):
        np.add.at(counts, sample_boxes(labels_array, 8, rng, rule=rule), 1)
    for cls in (0, 1):
        own = counts[labels_array == cls]
        if len(own) > 1:
            assert own.sum() > 1000
            assert chisquare(own).pvalue > 1e-3, (cls, own)


def test_uint8_batches_normalise_bit_identically_to_the_float_path(tiny) -> None:
    """Every uint8 value, through to_device on the CPU, equals numpy's x / 127.5 - 1 in
    float32 (the earlier float path); the class map becomes the same 0/1 float map."""
    tiles = load_tiles(tiny.manifest, domain="he", library=tiny.library)
    split_groups(tiles, require_boxes=True)
    raw = sample_batch(tiles, step=3, seed=2, batch_size=4, boxes_per_tile=4)
    assert raw["image"].dtype == torch.uint8 and raw["class_map"].dtype == torch.uint8
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(4, 3, 64, 67), dtype=np.uint8)
    pixels.reshape(-1)[:256] = np.arange(256)  # every value, at every alignment below
    for offset in range(8):
        image = torch.from_numpy(pixels.reshape(-1)[offset:].copy())
        got = to_device({"image": image}, "cpu")["image"]
        old = image.numpy().astype(np.float32) / 127.5 - 1.0
        assert got.dtype == torch.float32 and np.array_equal(got.numpy(), old)
    batch = to_device(raw, torch.device("cpu"), channels_last=True)
    old = raw["image"].numpy().astype(np.float32) / 127.5 - 1.0
    assert np.array_equal(batch["image"].numpy(), old)
    assert batch["image"].is_contiguous(memory_format=torch.channels_last)
    for b in range(4):
        owner = raw["boxes"][:, 0] == b
        boxes, labels = raw["boxes"][owner, 1:].numpy(), raw["box_labels"][owner].numpy()
        expected = paint_class_map(boxes, labels, TILE)
        assert np.array_equal(batch["class_map"][b].numpy(), expected)
    assert torch.equal(batch["boxes"], raw["boxes"]) and torch.equal(batch["label"], raw["label"])
