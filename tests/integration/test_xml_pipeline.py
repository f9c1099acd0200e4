"""ASAP and ImageScope XML contours through the pipeline: ``tile``, ``build-library``,
``evaluate``, ``info --annotations`` and ``export qupath --annotations``, on a synthetic slide.

The XML files are written here, in both dialects: the synthetic slide's own tumour contours
(points listed out of order, decimal coordinates), and a CAMELYON16-style tumour with a ``_2``
exclusion (or an ImageScope ``NegativeROA`` hole) laid on the 128 px tile grid, so that every
tile's expected label is known exactly.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import shapely
from shapely.geometry import box, shape
from typer.testing import CliRunner

from histolib.synthetic.slides import SyntheticSlide
from histolib.tileset.manifest import read_manifest
from histolib_cli.main import app
from tests.helpers_synth import small_slide
from tests.helpers_tile import write_contours

runner = CliRunner()
SIZE = 128

# CAMELYON16 layout on the tile grid (level-0 px = tile px here: 0.5 um/px slide and tiles).
TUMOUR = box(384, 256, 1152, 1024)  # _0
EXCLUSION = box(640, 512, 896, 768)  # _2: 2 x 2 tiles inside the tumour
SECOND = box(1152, 768, 1408, 1024)  # _1, beside the first tumour
HOLE_TILES = {(x, y) for x in (640, 768) for y in (512, 640)}


# ---------------------------------------------------------------------------------------------
# writers


def _ring(polygon: Any) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in list(polygon.exterior.coords)[:-1]]


def write_asap(path: Path, objects: list[tuple[str, Any]], *, seed: int = 0) -> Path:
    """ASAP XML of ``(group, polygon)`` pairs, points listed shuffled with their ``Order``."""
    rng = random.Random(seed)
    parts = []
    for i, (group, polygon) in enumerate(objects):
        points = list(enumerate(_ring(polygon)))
        rng.shuffle(points)
        coords = "".join(
            f'<Coordinate Order="{order}" X="{x:.4f}" Y="{y:.4f}" />' for order, (x, y) in points
        )
        parts.append(
            f'<Annotation Name="Annotation {i}" Type="Polygon" PartOfGroup="{group}" '
            f'Color="#F4FA58"><Coordinates>{coords}</Coordinates></Annotation>'
        )
    groups = "".join(
        f'<Group Name="{g}" PartOfGroup="None" Color="#FF0000"><Attributes /></Group>'
        for g in dict.fromkeys(group for group, _ in objects)
    )
    path.write_text(
        '<?xml version="1.0"?>\n<ASAP_Annotations><Annotations>'
        + "".join(parts)
        + f"</Annotations><AnnotationGroups>{groups}</AnnotationGroups></ASAP_Annotations>",
        encoding="utf-8",
    )
    return path


def write_imagescope(path: Path, layers: list[tuple[str, list[tuple[Any, bool]]]]) -> Path:
    """Aperio ImageScope XML: layers ``(name, [(polygon, negative), ...])``."""
    xml = ['<?xml version="1.0" encoding="UTF-8"?>\n<Annotations MicronsPerPixel="0.500000">']
    for layer_id, (name, regions) in enumerate(layers, start=1):
        xml.append(
            f'<Annotation Id="{layer_id}" Name="{name}" ReadOnly="0" LineColor="65280" '
            'Visible="1"><Attributes><Attribute Name="Description" Id="0" Value="" />'
            "</Attributes><Regions>"
        )
        for region_id, (polygon, negative) in enumerate(regions, start=1):
            verts = "".join(f'<Vertex X="{x:.3f}" Y="{y:.3f}" Z="0" />' for x, y in _ring(polygon))
            xml.append(
                f'<Region Id="{region_id}" Type="0" NegativeROA="{int(negative)}" Text="">'
                f"<Attributes /><Vertices>{verts}</Vertices></Region>"
            )
        xml.append("</Regions><Plots /></Annotation>")
    xml.append("</Annotations>")
    path.write_text("".join(xml), encoding="utf-8")
    return path


def synthetic_tumours(slide: SyntheticSlide) -> list[Any]:
    """The synthetic slide's tumour polygons, from its GeoJSON."""
    features = json.loads(slide.annotations_path.read_text(encoding="utf-8"))["features"]
    return [shape(f["geometry"]) for f in features]


# ---------------------------------------------------------------------------------------------
# helpers


@pytest.fixture(scope="module")
def slide(tmp_path_factory: pytest.TempPathFactory) -> SyntheticSlide:
    return small_slide(tmp_path_factory.mktemp("xml_slide"), seed=1, name="case_a")


@pytest.fixture(scope="module")
def camelyon_xml(slide: SyntheticSlide) -> Path:
    return write_asap(
        slide.slide_path.parent / "camelyon.xml",
        [("_0", TUMOUR), ("_2", EXCLUSION), ("_1", SECOND)],
        seed=3,
    )


def tile(slide_or_dir: Path, out: Path, *args: object) -> Any:
    """``histolib tile`` with 128 px tiles and one worker; the manifest's frame."""
    result = runner.invoke(
        app,
        ["tile", str(slide_or_dir), "--out", str(out), "--size", str(SIZE), "--workers", "1",
         "--no-progress", *map(str, args)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    gdf, _ = read_manifest(out / "tiles.parquet")
    return gdf


def labels_at(gdf: Any) -> dict[tuple[int, int], str]:
    return {(int(r.x0), int(r.y0)): r.label for r in gdf.itertuples()}


def expected_label(x0: int, y0: int, region: Any) -> str:
    """The label a tile gets from a region: positive from half its area, negative at zero."""
    square = box(x0, y0, x0 + SIZE, y0 + SIZE)
    fraction = square.intersection(region).area / square.area
    if fraction >= 0.5:
        return "positive"
    return "negative" if fraction == 0 else "boundary"


# ---------------------------------------------------------------------------------------------
# tile


@pytest.mark.parametrize("dialect", ["asap", "imagescope"])
def test_xml_labels_tiles_as_the_same_contours_in_geojson(
    tmp_path: Path, slide: SyntheticSlide, dialect: str
) -> None:
    tumours = synthetic_tumours(slide)
    if dialect == "asap":
        xml = write_asap(tmp_path / "contours.xml", [("metastases", t) for t in tumours])
    else:
        xml = write_imagescope(
            tmp_path / "contours.xml", [("Tumor", [(t, False) for t in tumours])]
        )
    from_xml = tile(slide.slide_path, tmp_path / "xml", "--annotations", xml)
    from_geojson = tile(slide.slide_path, tmp_path / "geojson", "--annotations",
                        slide.annotations_path)  # fmt: skip
    assert {"positive", "negative"} <= set(from_xml["label"])
    assert list(from_xml["tile_id"]) == list(from_geojson["tile_id"])
    assert list(from_xml["label"]) == list(from_geojson["label"])
    np.testing.assert_allclose(
        from_xml["annotation_fraction"], from_geojson["annotation_fraction"], atol=1e-9
    )


def test_camelyon16_exclusion_tiles_are_not_positive(
    tmp_path: Path, slide: SyntheticSlide, camelyon_xml: Path
) -> None:
    gdf = tile(slide.slide_path, tmp_path / "c16", "--annotations", camelyon_xml)
    labels = labels_at(gdf)
    assert HOLE_TILES <= set(labels), "the test's exclusion must lie on tissue tiles"
    assert {labels[t] for t in HOLE_TILES} == {"negative"}
    region = TUMOUR.difference(EXCLUSION).union(SECOND)
    assert labels == {xy: expected_label(*xy, region) for xy in labels}
    assert sum(label == "positive" for label in labels.values()) >= 10
    # The same contours without the _2 exclusion: those tiles are tumour.
    plain = write_contours(tmp_path / "plain.geojson", [TUMOUR, SECOND])
    without = labels_at(tile(slide.slide_path, tmp_path / "plain", "--annotations", plain))
    assert {without[t] for t in HOLE_TILES} == {"positive"}
    # The default positive classes (every annotation) are those of CAMELYON16: _0 and _1.
    chosen = tile(slide.slide_path, tmp_path / "classes", "--annotations", camelyon_xml,
                  "--positive-class", "_0", "--positive-class", "_1")  # fmt: skip
    assert labels_at(chosen) == labels
    only_first = labels_at(tile(slide.slide_path, tmp_path / "first", "--annotations",
                                camelyon_xml, "--positive-class", "_0"))  # fmt: skip
    assert only_first == {xy: expected_label(*xy, TUMOUR.difference(EXCLUSION)) for xy in labels}
    assert (tmp_path / "c16" / "qc" / "case_a.png").is_file()


def test_camelyon16_test_set_groups_tumor_and_exclusion(
    tmp_path: Path, slide: SyntheticSlide
) -> None:
    xml = write_asap(tmp_path / "test_001.xml", [("Tumor", TUMOUR), ("Exclusion", EXCLUSION)])
    labels = labels_at(tile(slide.slide_path, tmp_path / "test_set", "--annotations", xml))
    assert {labels[t] for t in HOLE_TILES} == {"negative"}
    assert labels == {xy: expected_label(*xy, TUMOUR.difference(EXCLUSION)) for xy in labels}


def test_imagescope_negative_region_tiles_are_not_positive(
    tmp_path: Path, slide: SyntheticSlide
) -> None:
    xml = write_imagescope(
        tmp_path / "scope.xml", [("Tumor", [(TUMOUR, False), (EXCLUSION, True)])]
    )
    labels = labels_at(tile(slide.slide_path, tmp_path / "scope", "--annotations", xml))
    assert {labels[t] for t in HOLE_TILES} == {"negative"}
    region = TUMOUR.difference(EXCLUSION)
    assert labels == {xy: expected_label(*xy, region) for xy in labels}


def test_positive_class_selects_imagescope_names_and_asap_groups(
    tmp_path: Path, slide: SyntheticSlide
) -> None:
    scope = write_imagescope(
        tmp_path / "scope.xml", [("Tumor", [(TUMOUR, False)]), ("Stroma", [(SECOND, False)])]
    )
    asap = write_asap(tmp_path / "asap.xml", [("metastases", TUMOUR), ("normal", SECOND)])
    expected_tumour = None
    for name, xml, wanted in (("scope", scope, "Tumor"), ("asap", asap, "metastases")):
        every = labels_at(tile(slide.slide_path, tmp_path / f"{name}_all", "--annotations", xml))
        chosen = labels_at(tile(slide.slide_path, tmp_path / f"{name}_one", "--annotations", xml,
                                "--positive-class", wanted))  # fmt: skip
        assert every == {xy: expected_label(*xy, TUMOUR.union(SECOND)) for xy in every}
        assert chosen == {xy: expected_label(*xy, TUMOUR) for xy in chosen}
        assert chosen != every
        expected_tumour = expected_tumour or chosen
        assert chosen == expected_tumour
    _, meta = read_manifest(tmp_path / "asap_one" / "tiles.parquet")
    assert meta["params"]["positive_classes"] == ["metastases"]


def test_folder_of_mixed_xml_and_geojson(tmp_path: Path) -> None:
    slides, contours = tmp_path / "slides", tmp_path / "contours"
    contours.mkdir()
    made = [small_slide(slides, seed=seed, name=f"s{seed}") for seed in (1, 2, 3)]
    for s in made:  # the generator's GeoJSON stays beside the slides, unused
        s.cells_path.unlink()
    write_asap(contours / "s1.xml", [("_0", t) for t in synthetic_tumours(made[0])])
    write_imagescope(
        contours / "s2.xml", [("Tumor", [(t, False) for t in synthetic_tumours(made[1])])]
    )
    write_contours(contours / "s3.geojson", synthetic_tumours(made[2]))
    folder = tile(slides, tmp_path / "mixed", "--annotations", contours)
    _, meta = read_manifest(tmp_path / "mixed" / "tiles.parquet")
    recorded = {
        sid: Path(info["annotation_path"]).name for sid, info in meta["params"]["slides"].items()
    }
    assert recorded == {"s1": "s1.xml", "s2": "s2.xml", "s3": "s3.geojson"}
    for s in made:
        alone = tile(s.slide_path, tmp_path / f"alone_{s.name}", "--annotations",
                     s.annotations_path)  # fmt: skip
        mine = folder[folder["slide_id"] == s.name].sort_values("tile_id")
        assert list(mine["label"]) == list(alone.sort_values("tile_id")["label"])
        assert "positive" in set(mine["label"])


# ---------------------------------------------------------------------------------------------
# build-library, evaluate, info, export qupath


@pytest.fixture(scope="module")
def c16_manifest(
    tmp_path_factory: pytest.TempPathFactory, slide: SyntheticSlide, camelyon_xml: Path
) -> Path:
    out = tmp_path_factory.mktemp("c16_tiles")
    tile(slide.slide_path, out, "--annotations", camelyon_xml)
    return out / "tiles.parquet"


def test_build_library_keeps_cancer_cells_out_of_the_exclusion(
    tmp_path: Path, c16_manifest: Path, camelyon_xml: Path
) -> None:
    import geopandas as gpd

    recorded = tmp_path / "recorded.parquet"
    result = runner.invoke(app, ["build-library", str(c16_manifest), "--stain", "he",
                                 "--out", str(recorded), "--workers", "1"])  # fmt: skip
    assert result.exit_code == 0, result.output
    cells = gpd.read_parquet(recorded)
    cancer = cells[cells["label"] == "cancer"]
    assert len(cancer) > 0
    tumour = TUMOUR.difference(EXCLUSION).union(SECOND)
    assert shapely.contains_xy(tumour.buffer(1e-6), cancer["x"], cancer["y"]).all()
    assert not shapely.contains_xy(EXCLUSION, cancer["x"], cancer["y"]).any()
    # The XML given explicitly (a folder of <slide_id>.xml) gives the same library.
    folder = camelyon_xml.parent / "xml_folder"
    folder.mkdir(exist_ok=True)
    (folder / "case_a.xml").write_bytes(camelyon_xml.read_bytes())
    given = tmp_path / "given.parquet"
    result = runner.invoke(app, ["build-library", str(c16_manifest), "--stain", "he",
                                 "--out", str(given), "--workers", "1",
                                 "--annotations", str(folder)])  # fmt: skip
    assert result.exit_code == 0, result.output
    again = gpd.read_parquet(given)
    assert sorted(zip(again["x"], again["y"], again["label"], strict=True)) == sorted(
        zip(cells["x"], cells["y"], cells["label"], strict=True)
    )


def test_evaluate_scores_against_the_holed_tumour(
    tmp_path: Path, c16_manifest: Path, camelyon_xml: Path
) -> None:
    pytest.importorskip("torch")
    import csv

    from tests.helpers_transfer import tiny_checkpoint

    checkpoint = tiny_checkpoint(tmp_path / "tiny.pt")
    out = tmp_path / "eval"
    result = runner.invoke(
        app,
        ["evaluate", str(checkpoint), "--tiles", str(c16_manifest), "--out", str(out),
         "--annotations", str(camelyon_xml), "--device", "cpu", "--n-tiles", "500"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((out / "tiles.csv").open()))
    assert rows
    region = TUMOUR.difference(EXCLUSION).union(SECOND)
    for row in rows:
        x0, y0 = map(int, re.search(r"_x(\d+)_y(\d+)_s\d+$", row["tile_id"]).groups())
        square = box(x0, y0, x0 + SIZE, y0 + SIZE)
        expected = square.intersection(region).area / square.area
        assert float(row["truth_fraction"]) == pytest.approx(expected, abs=1 / SIZE)
    hole_rows = [r for r in rows if r["tile_id"].endswith(("x640_y512_s128", "x768_y640_s128"))]
    assert hole_rows and all(float(r["truth_fraction"]) == 0 for r in hole_rows)


def test_info_describes_xml_against_the_slide(slide: SyntheticSlide, camelyon_xml: Path) -> None:
    result = runner.invoke(
        app, ["info", str(slide.slide_path), "--annotations", str(camelyon_xml), "--json"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)["annotations"]
    assert summary["count"] == 3 and summary["inside"] is True
    assert summary["by_type"] == {"annotation": 2, "exclusion": 1}
    assert summary["by_class"] == {"_0": 1, "_1": 1, "_2": 1}
    assert any("exclusion" in note for note in summary["notes"])
    table = runner.invoke(app, ["info", str(slide.slide_path), "--annotations", str(camelyon_xml)])
    assert table.exit_code == 0 and "_2" in table.output and "inside the slide" in table.output


def test_export_qupath_turns_xml_into_qupath_geojson(
    tmp_path: Path, slide: SyntheticSlide, c16_manifest: Path, camelyon_xml: Path
) -> None:
    out = tmp_path / "qupath"
    result = runner.invoke(app, ["export", "qupath", str(c16_manifest), "--out", str(out),
                                 "--annotations", str(camelyon_xml)])  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads((out / "case_a.geojson").read_text(encoding="utf-8"))
    contours = [f for f in data["features"] if f["properties"]["objectType"] == "annotation"]
    by_class = {f["properties"]["classification"]["name"]: shape(f["geometry"]) for f in contours}
    assert set(by_class) == {"_0", "_1", "_2"}
    assert all(f["properties"]["classification"].get("color") for f in contours)
    assert by_class["_0"].equals(TUMOUR.difference(EXCLUSION))  # holed
    assert len(by_class["_0"].interiors) == 1
    assert by_class["_2"].equals(EXCLUSION) and by_class["_1"].equals(SECOND)
    assert any(f["properties"]["objectType"] == "tile" for f in data["features"])
    # Used as contours again: the tumour classes give the XML's labels; by default every
    # annotation, the _2 areas included, counts (as the README says).
    xml_labels = labels_at(read_manifest(c16_manifest)[0])
    exported = out / "case_a.geojson"
    again = tile(slide.slide_path, tmp_path / "again", "--annotations", exported,
                 "--positive-class", "_0", "--positive-class", "_1")  # fmt: skip
    assert labels_at(again) == xml_labels
    every = labels_at(tile(slide.slide_path, tmp_path / "every", "--annotations", exported))
    assert {every[t] for t in HOLE_TILES} == {"positive"}
